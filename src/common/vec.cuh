// SPDX-License-Identifier: Apache-2.0
// Vectorized global-memory access for memory-bound kernels: 8 elements per
// access, converted to/from float32 registers. 8 bf16/fp16 = one 16-byte load
// (ld.global.v4.b32); 8 fp32 = two; 8 fp8 = one 8-byte store.
// NOTE: 16-byte accesses per thread are what lets a row kernel reach ~90% of
// HBM bandwidth on Hopper; 4-byte accesses top out near half of it.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

namespace hpc_ops::device {

constexpr int kVecElems = 8;  // elements moved per vector access

// Loads 8 consecutive elements at p (16-byte aligned for 2-byte types, 32 for fp32).
__device__ __forceinline__ void load8(const __nv_bfloat16* p, float (&v)[8]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const auto* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(h[i]);
    v[2 * i] = f.x;
    v[2 * i + 1] = f.y;
  }
}

__device__ __forceinline__ void load8(const __half* p, float (&v)[8]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const auto* h = reinterpret_cast<const __half2*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __half22float2(h[i]);
    v[2 * i] = f.x;
    v[2 * i + 1] = f.y;
  }
}

__device__ __forceinline__ void load8(const float* p, float (&v)[8]) {
  const float4 a = *reinterpret_cast<const float4*>(p);
  const float4 b = *reinterpret_cast<const float4*>(p + 4);
  v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
  v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}

// Read-only path (ld.global.nc) for data that no thread of the kernel writes,
// such as RMSNorm weights shared by every row.
__device__ __forceinline__ void load8_readonly(const __nv_bfloat16* p, float (&v)[8]) {
  const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p));
  const auto* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(h[i]);
    v[2 * i] = f.x;
    v[2 * i + 1] = f.y;
  }
}

// Rounds 8 floats to bf16 (round-to-nearest-even) and stores them as one 16-byte vector.
__device__ __forceinline__ void store8(__nv_bfloat16* p, const float (&v)[8]) {
  uint4 raw;
  auto* h = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) h[i] = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
  *reinterpret_cast<uint4*>(p) = raw;
}

// Rounds in place to bf16 precision (what store8 would write).
__device__ __forceinline__ void round_to_bf16(float (&v)[8]) {
#pragma unroll
  for (int i = 0; i < 8; ++i) v[i] = __bfloat162float(__float2bfloat16_rn(v[i]));
}

// Multiplies by inv_scale, converts to e4m3 with saturation to +-448
// (cvt.rn.satfinite.e4m3x2.f32) and stores 8 bytes.
__device__ __forceinline__ void store8_fp8(__nv_fp8_e4m3* p, const float (&v)[8], float inv_scale) {
  uint2 raw;
  auto* pairs = reinterpret_cast<__nv_fp8x2_storage_t*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    pairs[i] = __nv_cvt_float2_to_fp8x2(make_float2(v[2 * i] * inv_scale, v[2 * i + 1] * inv_scale),
                                        __NV_SATFINITE, __NV_E4M3);
  }
  *reinterpret_cast<uint2*>(p) = raw;
}

}  // namespace hpc_ops::device
