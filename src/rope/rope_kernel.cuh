// SPDX-License-Identifier: Apache-2.0
// The RoPE + QK-norm + paged KV-write kernel (see include/hpc_ops/rope.h).
//
// Geometry: CTA (row, chunk) takes heads [chunk * heads_per_cta, ...) of one
// row, counting q heads, then k heads, then v heads. A head of D elements is
// owned by a lane group of D / 8 lanes, 8 contiguous elements (16 bytes) per
// lane; a group takes heads group, group + G, ... (G groups per CTA), at most
// kRopeHeadsPerGroup, all their loads issued first. Per-head
// reductions (the norm's sum of squares, FP8 maxima) and the NeoX partner
// exchange are shuffles inside the group (masked to its lanes: the two groups
// of a warp may be on different heads, even different kinds).
//
// Per row, once: which request owns it (counted over cu_seqlens by the whole
// CTA), its cache slot and rotation position, and the row's cos/sin values
// (staged in shared memory, read per head).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include "common/fp8_scale.cuh"
#include "common/pdl.cuh"
#include "common/reduce.cuh"
#include "common/vec.cuh"
#include "rope/rope_config.h"
#include "rope/rope_params.h"

namespace hpc_ops::rope {

using Bf16 = __nv_bfloat16;
using Fp8 = __nv_fp8_e4m3;

// Where one row goes.
struct RowTarget {
  bool padding = true;       // past cu_seqlens[B]: q out zero, nothing else
  bool position_ok = false;  // rotation position inside the cos/sin cache
  bool write = false;        // a valid cache slot
  int32_t position = 0;
  int64_t page = 0;
  int32_t slot = 0;
};

// Which request owns `row`: the number of b in 1..B with cu_seqlens[b] <= row
// (cu_seqlens is non-decreasing from 0), counted by the whole CTA at once.
// NOTE: one coalesced pass and one barrier instead of a binary search, whose
// log2(B) dependent loads made a B = 256 decode step 15.7 us (compile 10.0).
// Every thread of the CTA must call it.
__device__ __forceinline__ int owning_request(const RopeParams& p, int row, int* warp_counts) {
  int count = 0;
  for (int b = 1 + static_cast<int>(threadIdx.x); b <= p.batch; b += kRopeThreads) {
    count += __ldg(p.cu_seqlens + b) <= row ? 1 : 0;
  }
  count = __reduce_add_sync(0xffffffffu, count);
  if (threadIdx.x % 32 == 0) warp_counts[threadIdx.x / 32] = count;
  __syncthreads();
  int total = 0;
#pragma unroll
  for (int w = 0; w < kRopeThreads / 32; ++w) total += warp_counts[w];
  return total;
}

__device__ __forceinline__ RowTarget locate_row(const RopeParams& p, int row, int* warp_counts) {
  RowTarget t;
  const int b = owning_request(p, row, warp_counts);
  if (b >= p.batch) return t;
  t.padding = false;
  const int start = __ldg(p.cu_seqlens + b);
  const int rows_of_b = __ldg(p.cu_seqlens + b + 1) - start;
  const int64_t cache_pos = int64_t{__ldg(p.kv_lens + b)} - rows_of_b + (row - start);
  int64_t position = cache_pos;
  if (p.positions != nullptr) {
    position = p.positions_i64 ? __ldg(static_cast<const long long*>(p.positions) + row)
                               : __ldg(static_cast<const int32_t*>(p.positions) + row);
  }
  t.position_ok = position >= 0 && position < p.max_position;
  t.position = t.position_ok ? static_cast<int32_t>(position) : 0;
  if (!t.position_ok || cache_pos < 0 || cache_pos >= int64_t{p.max_pages} * p.page_size) return t;
  const int page_index = static_cast<int>(cache_pos / p.page_size);
  const int32_t page = __ldg(p.page_table + b * p.page_table_stride + page_index);
  t.write = page >= 0 && page < p.num_pages;
  t.page = page;
  t.slot = static_cast<int32_t>(cache_pos - int64_t{page_index} * p.page_size);
  return t;
}

// 16 bytes of floats from shared memory (re-read, never hoisted: see lds_128).
__device__ __forceinline__ float4 lds_f4(uint32_t address) {
  const uint4 v = device::lds_128(address);
  return make_float4(__uint_as_float(v.x), __uint_as_float(v.y), __uint_as_float(v.z),
                     __uint_as_float(v.w));
}

// 8 consecutive values of a float32 or bf16 array (16-byte aligned) as floats.
__device__ __forceinline__ void load8_floats(const void* base, bool f32, int64_t index,
                                             float (&out)[8]) {
  if (f32) {
    const auto* p = reinterpret_cast<const float4*>(static_cast<const float*>(base) + index);
    const float4 a = __ldg(p);
    const float4 b = __ldg(p + 1);
    out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w;
    out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
  } else {
    device::Packed8<Bf16> v;
    v.raw = __ldg(reinterpret_cast<const uint4*>(static_cast<const Bf16*>(base) + index));
    device::unpack(v, out);
  }
}

// Stores 8 values of one head: bf16, or e4m3 with a static inverse scale or
// a dynamic per-head scale (written by the group's first lane to *scale_out).
template <int kLanes, bool kMayBeFp8>
__device__ __forceinline__ void store_head(void* dst, bool fp8, const float (&y)[8],
                                           float static_inv_scale, float* scale_out,
                                           unsigned mask, int lane) {
  if (!kMayBeFp8 || !fp8) {
    device::store_packed(static_cast<Bf16*>(dst), device::pack_bf16(y));
    return;
  }
  float inv_scale = static_inv_scale;
  if (scale_out != nullptr) {
    float amax = 0.0f;
    device::AbsMaxOp op;
#pragma unroll
    for (int e = 0; e < 8; ++e) amax = op(amax, fabsf(y[e]));
    const float scale = device::dynamic_scale(device::warp_allreduce<kLanes>(amax, op, mask));
    if (lane == 0) *scale_out = scale;
    inv_scale = __frcp_rn(scale);
  }
  device::store8_fp8(static_cast<Fp8*>(dst), y, inv_scale);
}

// kFp8: an FP8 cache (then q_out may be FP8 too); a template parameter so the
// BF16 kernel carries no FP8 code.
template <int kD, bool kFp8>
__global__ void __launch_bounds__(kRopeThreads, kRopeMinCtas)
    rope_kv_write_kernel(const __grid_constant__ RopeParams p) {
  constexpr int kLanes = kD / 8;
  constexpr int kGroups = kRopeThreads / kLanes;
  __shared__ int warp_counts[kRopeThreads / 32];
  __shared__ __align__(16) float cos_sin_row[256];  // rotary_dim <= head_dim <= 256
  device::pdl_enter();  // first: earlier kernels may still run (common/pdl.cuh)
  const int row = blockIdx.x;
  const int lane = threadIdx.x % kLanes;
  const int group = threadIdx.x / kLanes;
  const int lane_in_warp = threadIdx.x % 32;
  const unsigned mask =
      kLanes == 32 ? 0xffffffffu : ((1u << kLanes) - 1u) << (lane_in_warp & ~(kLanes - 1));
  const int hq = p.num_q_heads;
  const int hkv = p.num_kv_heads;
  const int h_begin = blockIdx.y * p.heads_per_cta;
  const int h_end = min(hq + 2 * hkv, h_begin + p.heads_per_cta);

  // ---- 1. This group's heads (at most kRopeHeadsPerGroup: the host keeps
  // heads_per_cta <= kGroups * kRopeHeadsPerGroup), loaded before the row is
  // located: every row of q, k, v exists, padding included, and the loads
  // then overlap the lookup's dependent loads.
  // NOTE: row bases once, a head offset per head: ncu counted ~230
  // instructions per head and lane group when every address was rebuilt.
  const Bf16* q_row = static_cast<const Bf16*>(p.q) + row * p.q_strides[0] + 8 * lane;
  const Bf16* k_row = static_cast<const Bf16*>(p.k) + row * p.k_strides[0] + 8 * lane;
  const Bf16* v_row = static_cast<const Bf16*>(p.v) + row * p.v_strides[0] + 8 * lane;
  device::Packed8<Bf16> in[kRopeHeadsPerGroup];
#pragma unroll
  for (int u = 0; u < kRopeHeadsPerGroup; ++u) {
    const int h = h_begin + group + u * kGroups;
    const Bf16* src = h < hq         ? q_row + h * p.q_strides[1]
                      : h < hq + hkv ? k_row + (h - hq) * p.k_strides[1]
                                     : v_row + (h - hq - hkv) * p.v_strides[1];
    in[u] = h < h_end ? device::load_packed(src) : device::zero_packed<Bf16>();
  }

  // ---- 2. Where the row goes, and this lane's cos/sin. NeoX pairs element e
  // of lane l (< half_lanes) with element e of lane l + half_lanes, frequency
  // (l % half_lanes) * 8 + e; interleaved pairs elements 2k, 2k+1 of one
  // lane, frequency 4 l + k.
  const RowTarget target = locate_row(p, row, warp_counts);
  const int half = p.rotary_dim / 2;
  const int rot_lanes = p.rotary_dim / 8;
  const int half_lanes = half / 8;
  const bool rotated = lane < rot_lanes;
  // The row's cos/sin, staged in shared memory and re-read per head.
  // NOTE: held in registers (16 per lane) they kept the kernel at 80
  // registers, 3 CTAs per SM (ncu: 35.6% occupancy, 51% of DRAM bandwidth).
  if (target.position_ok) {
    const int64_t base = int64_t{target.position} * p.cos_sin_stride;
    for (int i = threadIdx.x; i < p.rotary_dim; i += kRopeThreads) {
      cos_sin_row[i] = p.cos_sin_f32 ? __ldg(static_cast<const float*>(p.cos_sin) + base + i)
                                     : __bfloat162float(static_cast<const Bf16*>(p.cos_sin)[base + i]);
    }
  }
  __syncthreads();
  // This lane's 8 cos and 8 sin (volatile shared loads: re-read for every
  // head, not hoisted into registers across heads).
  auto cos_sin = [&](float (&cs)[8], float (&sn)[8]) {
    const uint32_t row_base = static_cast<uint32_t>(__cvta_generic_to_shared(cos_sin_row));
    if (p.interleaved) {
      const float4 c = lds_f4(row_base + 16 * lane);
      const float4 s4 = lds_f4(row_base + 4 * half + 16 * lane);
      const float cv[4] = {c.x, c.y, c.z, c.w};
      const float sv[4] = {s4.x, s4.y, s4.z, s4.w};
#pragma unroll
      for (int e = 0; e < 8; ++e) cs[e] = cv[e / 2], sn[e] = sv[e / 2];
    } else {
      const uint32_t freq0 = 4 * 8 * (lane % half_lanes);
      const float4 c0 = lds_f4(row_base + freq0), c1 = lds_f4(row_base + freq0 + 16);
      const float4 s0 = lds_f4(row_base + 4 * half + freq0);
      const float4 s1 = lds_f4(row_base + 4 * half + freq0 + 16);
      cs[0] = c0.x, cs[1] = c0.y, cs[2] = c0.z, cs[3] = c0.w;
      cs[4] = c1.x, cs[5] = c1.y, cs[6] = c1.z, cs[7] = c1.w;
      sn[0] = s0.x, sn[1] = s0.y, sn[2] = s0.z, sn[3] = s0.w;
      sn[4] = s1.x, sn[5] = s1.y, sn[6] = s1.z, sn[7] = s1.w;
    }
  };
  const int neox_partner = lane < half_lanes ? lane + half_lanes : lane - half_lanes;
  const bool norm = p.q_norm_weight != nullptr;

  // x * rsqrt(mean(x^2) + eps) * w over the head.
  auto rms_norm = [&](float (&x)[8], const void* weight) {
    float ss = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; ++e) ss += x[e] * x[e];
    ss = device::warp_allreduce<kLanes>(ss, device::SumOp{}, mask);
    const float inv_rms = rsqrtf(ss * (1.0f / kD) + p.eps);
    float w[8];
    load8_floats(weight, p.norm_weight_f32, 8 * lane, w);
#pragma unroll
    for (int e = 0; e < 8; ++e) x[e] = (x[e] * inv_rms) * w[e];
  };

  auto rotate = [&](float (&x)[8]) {
    if (p.interleaved) {
      if (!rotated) return;
      float cs[8], sn[8];
      cos_sin(cs, sn);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const float a = x[2 * k];
        const float b = x[2 * k + 1];
        x[2 * k] = a * cs[2 * k] - b * sn[2 * k];
        x[2 * k + 1] = b * cs[2 * k] + a * sn[2 * k];
      }
      return;
    }
    float other[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) other[e] = __shfl_sync(mask, x[e], neox_partner, kLanes);
    if (!rotated) return;
    float cs[8], sn[8];
    cos_sin(cs, sn);
    const float sign = lane < half_lanes ? -1.0f : 1.0f;
#pragma unroll
    for (int e = 0; e < 8; ++e) x[e] = x[e] * cs[e] + sign * other[e] * sn[e];
  };

  // q, then k: norm and rotation in the configured order.
  auto transform = [&](float (&x)[8], const void* weight) {
    if (norm && !p.rope_then_norm) rms_norm(x, weight);
    rotate(x);
    if (norm && p.rope_then_norm) rms_norm(x, weight);
  };

  // ---- 3. Each head: q -> q_out; k, v -> the cache slot.
  const bool q_fp8 = kFp8 && p.q_fp8;
  const int64_t q_out_row = row * p.q_out_strides[0] + 8 * lane;
  float* q_scale_row = p.q_scale_out == nullptr ? nullptr : p.q_scale_out + row * p.q_scale_strides[0];
  const float q_inv_scale = q_fp8 && p.q_scale != nullptr ? 1.0f / *p.q_scale : 1.0f;
  const float k_inv_scale = kFp8 && p.k_scale != nullptr ? 1.0f / *p.k_scale : 1.0f;
  const int64_t k_slot =
      target.page * p.k_cache_strides[0] + target.slot * p.k_cache_strides[1] + 8 * lane;
  const int64_t v_slot =
      target.page * p.v_cache_strides[0] + target.slot * p.v_cache_strides[1] + 8 * lane;
  constexpr int kCacheBytes = kFp8 ? 1 : 2;
#pragma unroll
  for (int u = 0; u < kRopeHeadsPerGroup; ++u) {
    const int h = h_begin + group + u * kGroups;
    if (h >= h_end) break;
    float x[8];
    device::unpack(in[u], x);
    if (h < hq) {
      if (target.padding) {
#pragma unroll
        for (int e = 0; e < 8; ++e) x[e] = 0.0f;
      } else {
        transform(x, p.q_norm_weight);
        if (!target.position_ok) {
#pragma unroll
          for (int e = 0; e < 8; ++e) x[e] = __int_as_float(0x7fffffff);
        }
      }
      void* dst = static_cast<char*>(p.q_out) + (q_out_row + h * p.q_out_strides[1]) * (q_fp8 ? 1 : 2);
      store_head<kLanes, kFp8>(dst, q_fp8, x, q_inv_scale,
                               q_scale_row == nullptr ? nullptr : q_scale_row + h * p.q_scale_strides[1],
                               mask, lane);
      continue;
    }
    if (!target.write) continue;
    if (h < hq + hkv) {  // k: static per-tensor scale, or per (token, head) into k_scale_out
      const int head = h - hq;
      transform(x, p.k_norm_weight);
      float* scale_out = p.k_scale_out == nullptr
                             ? nullptr
                             : p.k_scale_out + target.page * p.k_scale_strides[0] +
                                   target.slot * p.k_scale_strides[1] + head * p.k_scale_strides[2];
      void* dst = static_cast<char*>(p.k_cache) + (k_slot + head * p.k_cache_strides[2]) * kCacheBytes;
      store_head<kLanes, kFp8>(dst, kFp8, x, k_inv_scale, scale_out, mask, lane);
    } else {  // v as is: per-tensor or per-head static scale
      const int head = h - hq - hkv;
      const float inv_scale = kFp8 ? 1.0f / p.v_scale[head * p.v_scale_stride] : 1.0f;
      void* dst = static_cast<char*>(p.v_cache) + (v_slot + head * p.v_cache_strides[2]) * kCacheBytes;
      store_head<kLanes, kFp8>(dst, kFp8, x, inv_scale, nullptr, mask, lane);
    }
  }
}

}  // namespace hpc_ops::rope
