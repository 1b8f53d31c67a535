// SPDX-License-Identifier: Apache-2.0
// Vectorized global-memory access for memory-bound kernels. Eight elements
// move per access and stay *packed* in registers (Packed8<T>) until used:
// 8 bf16/fp16 = one 16-byte load (ld.global.v4.b32) held in 4 registers;
// 8 fp32 = two loads held in 8; 8 fp8 = one 8-byte store.
// NOTE: 16-byte accesses per thread are what lets a row kernel reach ~90% of
// HBM bandwidth on Hopper. Keeping loaded data packed halves the registers a
// row needs compared with float32 copies (v1 of the row kernel held floats and
// its 8-vector variants ran at 2 CTAs per SM, 37% of bandwidth).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "common/fp8_scale.cuh"

namespace hpc_ops::device {

constexpr int kVecElems = 8;  // elements moved per vector access

template <class T>
struct Packed8 {  // 8 x 2-byte elements
  uint4 raw;
};
template <>
struct Packed8<float> {
  float4 lo, hi;
};

__device__ __forceinline__ Packed8<__nv_bfloat16> load_packed(const __nv_bfloat16* p) {
  return {*reinterpret_cast<const uint4*>(p)};
}
__device__ __forceinline__ Packed8<__half> load_packed(const __half* p) {
  return {*reinterpret_cast<const uint4*>(p)};
}
__device__ __forceinline__ Packed8<float> load_packed(const float* p) {
  return {*reinterpret_cast<const float4*>(p), *reinterpret_cast<const float4*>(p + 4)};
}
// 16 bytes from shared memory at a shared-space address (volatile: never
// hoisted out of a loop or merged with another load of the same address).
__device__ __forceinline__ uint4 lds_128(uint32_t address) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(address));
  return v;
}
// 8 bytes from shared memory at a shared-space address (volatile, as lds_128).
__device__ __forceinline__ uint2 lds_64(uint32_t address) {
  uint2 v;
  asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "r"(address));
  return v;
}
// 16 bytes to shared memory at a shared-space address.
__device__ __forceinline__ void sts_128(uint32_t address, uint4 v) {
  asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};" ::"r"(address), "r"(v.x), "r"(v.y), "r"(v.z),
               "r"(v.w)
               : "memory");
}

// L2 eviction policies for loads with a cache hint (createpolicy.fractional
// over the whole access).
__device__ __forceinline__ uint64_t l2_evict_last_policy() {
  uint64_t policy;
  asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(policy));
  return policy;
}
__device__ __forceinline__ uint64_t l2_evict_first_policy() {
  uint64_t policy;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
  return policy;
}

// 16 bytes from global memory with an L2 eviction policy.
__device__ __forceinline__ uint4 load_16_hinted(const void* p, uint64_t policy) {
  uint4 v;
  asm volatile("ld.global.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(__cvta_generic_to_global(p)), "l"(policy));
  return v;
}

template <class T>
__device__ __forceinline__ Packed8<T> zero_packed() {
  Packed8<T> z;
  if constexpr (sizeof(Packed8<T>) == 16) {
    z.raw = make_uint4(0, 0, 0, 0);
  } else {
    z.lo = z.hi = make_float4(0.f, 0.f, 0.f, 0.f);
  }
  return z;
}

// One vector from shared memory as 16-byte loads (ld.shared.v4). Written out
// because a plain struct copy let nvcc split it into four 4-byte loads.
// Volatile: it must stay after the barrier wait that makes the data valid.
template <class T>
__device__ __forceinline__ Packed8<T> load_shared(const Packed8<T>* p) {
  const auto address = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  Packed8<T> v;
  if constexpr (sizeof(Packed8<T>) == 16) {
    asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.raw.x), "=r"(v.raw.y), "=r"(v.raw.z), "=r"(v.raw.w)
                 : "r"(address));
  } else {
    asm volatile("ld.shared.v4.f32 {%0, %1, %2, %3}, [%4];"
                 : "=f"(v.lo.x), "=f"(v.lo.y), "=f"(v.lo.z), "=f"(v.lo.w)
                 : "r"(address));
    asm volatile("ld.shared.v4.f32 {%0, %1, %2, %3}, [%4 + 16];"
                 : "=f"(v.hi.x), "=f"(v.hi.y), "=f"(v.hi.z), "=f"(v.hi.w)
                 : "r"(address));
  }
  return v;
}

// Stores one 16-byte vector to shared memory (st.shared.v4).
__device__ __forceinline__ void store_shared(Packed8<__nv_bfloat16>* p,
                                             const Packed8<__nv_bfloat16>& v) {
  sts_128(static_cast<uint32_t>(__cvta_generic_to_shared(p)), v.raw);
}

// A bf16x2 word (low element first) as two floats. bf16 is the top half of a
// float32: a shift for the low element, a mask for the high one.
// NOTE: __bfloat1622float2 compiled to three instructions per pair (the high
// half extracted, then shifted back); ncu counted them in the RoPE kernels'
// per-head code.
__device__ __forceinline__ float2 bf16x2_to_float2(uint32_t word) {
  return make_float2(__uint_as_float(word << 16), __uint_as_float(word & 0xffff0000u));
}

__device__ __forceinline__ void unpack(const Packed8<__nv_bfloat16>& p, float (&v)[8]) {
  const uint32_t words[4] = {p.raw.x, p.raw.y, p.raw.z, p.raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = bf16x2_to_float2(words[i]);
    v[2 * i] = f.x;
    v[2 * i + 1] = f.y;
  }
}
__device__ __forceinline__ void unpack(const Packed8<__half>& p, float (&v)[8]) {
  const auto* h = reinterpret_cast<const __half2*>(&p.raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __half22float2(h[i]);
    v[2 * i] = f.x;
    v[2 * i + 1] = f.y;
  }
}
__device__ __forceinline__ void unpack(const Packed8<float>& p, float (&v)[8]) {
  v[0] = p.lo.x; v[1] = p.lo.y; v[2] = p.lo.z; v[3] = p.lo.w;
  v[4] = p.hi.x; v[5] = p.hi.y; v[6] = p.hi.z; v[7] = p.hi.w;
}

// An empty asm that "modifies" the packed registers: values computed from them
// before this point cannot be reused after it, so the compiler recomputes
// instead of keeping 8 floats per vector alive (registers, hence occupancy).
template <class T>
__device__ __forceinline__ void recompute_barrier(Packed8<T>& p) {
  if constexpr (sizeof(Packed8<T>) == 16) {
    asm volatile("" : "+r"(p.raw.x), "+r"(p.raw.y), "+r"(p.raw.z), "+r"(p.raw.w));
  } else {
    asm volatile("" : "+f"(p.lo.x), "+f"(p.lo.y), "+f"(p.lo.z), "+f"(p.lo.w), "+f"(p.hi.x),
                 "+f"(p.hi.y), "+f"(p.hi.z), "+f"(p.hi.w));
  }
}

// Rounds 8 floats to bf16 (round-to-nearest-even) into packed form.
__device__ __forceinline__ Packed8<__nv_bfloat16> pack_bf16(const float (&v)[8]) {
  Packed8<__nv_bfloat16> p;
  auto* h = reinterpret_cast<__nv_bfloat162*>(&p.raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) h[i] = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
  return p;
}

// One 16-byte store (st.global.v4), written out for the same reason as load_shared.
__device__ __forceinline__ void store_packed(__nv_bfloat16* p, const Packed8<__nv_bfloat16>& v) {
  asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(__cvta_generic_to_global(p)),
               "r"(v.raw.x), "r"(v.raw.y), "r"(v.raw.z), "r"(v.raw.w)
               : "memory");
}

// Converts map(v[i]) to e4m3 with saturation to +-448
// (cvt.rn.satfinite.e4m3x2.f32) and stores the 8 bytes.
template <class Map>
__device__ __forceinline__ void store8_fp8_mapped(__nv_fp8_e4m3* p, const float (&v)[8], Map map) {
  uint2 raw;
  auto* pairs = reinterpret_cast<__nv_fp8x2_storage_t*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    pairs[i] = __nv_cvt_float2_to_fp8x2(make_float2(map(v[2 * i]), map(v[2 * i + 1])),
                                        __NV_SATFINITE, __NV_E4M3);
  }
  *reinterpret_cast<uint2*>(p) = raw;
}

// Divides by the scale (divide_rn, common/fp8_scale.cuh; divide_rn_covered
// when kCovered: a dynamic scale of a maximum over these values), converts to
// e4m3 with saturation and stores 8 bytes.
template <bool kCovered = false>
__device__ __forceinline__ void store8_fp8(__nv_fp8_e4m3* p, const float (&v)[8], Fp8Divisor d) {
  store8_fp8_mapped(p, v, [&](float x) { return kCovered ? divide_rn_covered(x, d) : divide_rn(x, d); });
}

// Multiplies by `factor` (a scale's reciprocal), converts to e4m3 with
// saturation and stores 8 bytes: for values that come out of float32
// arithmetic (a normalized head), where x * (1 / scale) is within an ulp of
// the correctly rounded x / scale and e4m3 rounding midpoints are no likelier
// than any other value (Fp8Divisor's NOTE is about exact bf16 inputs).
__device__ __forceinline__ void store8_fp8_times(__nv_fp8_e4m3* p, const float (&v)[8], float factor) {
  store8_fp8_mapped(p, v, [=](float x) { return x * factor; });
}

}  // namespace hpc_ops::device
