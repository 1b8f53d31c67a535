// SPDX-License-Identifier: Apache-2.0
// The per-row RoPE + QK-norm + paged KV-write kernel (see include/hpc_ops/rope.h),
// for decode steps and small prefill chunks (rope_config.h picks it).
//
// Geometry: CTA (row, chunk) takes heads [chunk * heads_per_cta, ...) of one
// row, counting q heads, then k heads, then v heads. A lane group of D / 16
// lanes owns a head (rope_row.cuh); a group takes heads group, group + G, ...
// (G groups per CTA), at most kRopeHeadsPerGroup, all their loads issued
// before the row is located.
//
// Per row, once: which request owns it (counted over cu_seqlens by the whole
// CTA), its cache slot and rotation position, and the row's cos/sin values
// (staged in shared memory as float32, read per head), with the QK-norm
// weights (float32 too).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "common/pdl.cuh"
#include "common/vec.cuh"
#include "rope/rope_config.h"
#include "rope/rope_params.h"
#include "rope/rope_row.cuh"

namespace hpc_ops::rope {

template <int kD, bool kFp8>
__global__ void __launch_bounds__(kRopeThreads, kRopeMinCtas)
    rope_kv_write_kernel(const __grid_constant__ RopeParams p) {
  constexpr int kLanes = kD / 16;
  constexpr int kGroups = kRopeThreads / kLanes;
  __shared__ int warp_counts[kRopeThreads / 32];
  __shared__ __align__(16) uint32_t cos_sin_row[256];  // rotary_dim <= 256 float32 values
  __shared__ __align__(16) NormWeights<kD> norm_weights;
  device::pdl_enter();  // first: earlier kernels may still run (common/pdl.cuh)
  const int row = blockIdx.x;
  const int lane = threadIdx.x % kLanes;
  const int group = threadIdx.x / kLanes;
  const int hq = p.num_q_heads;
  const int hkv = p.num_kv_heads;
  const int h_begin = blockIdx.y * p.heads_per_cta;
  const int h_end = min(hq + 2 * hkv, h_begin + p.heads_per_cta);
  const LaneChunks chunks = lane_chunks<kLanes>(lane, p.rotary_dim, p.interleaved);

  // ---- 1. This group's heads (at most kRopeHeadsPerGroup: the host keeps
  // heads_per_cta <= kGroups * kRopeHeadsPerGroup), loaded before the row is
  // located: every row of q, k, v exists, padding included, and the loads
  // then overlap the lookup's dependent loads.
  // NOTE: row bases once, a head offset per head: ncu counted ~230
  // instructions per head and lane group when every address was rebuilt.
  const Bf16* q_row = static_cast<const Bf16*>(p.q) + row * p.q_strides[0];
  const Bf16* k_row = static_cast<const Bf16*>(p.k) + row * p.k_strides[0];
  const Bf16* v_row = static_cast<const Bf16*>(p.v) + row * p.v_strides[0];
  device::Packed8<Bf16> in0[kRopeHeadsPerGroup], in1[kRopeHeadsPerGroup];
#pragma unroll
  for (int u = 0; u < kRopeHeadsPerGroup; ++u) {
    const int h = h_begin + group + u * kGroups;
    const Bf16* src = h < hq         ? q_row + h * p.q_strides[1]
                      : h < hq + hkv ? k_row + (h - hq) * p.k_strides[1]
                                     : v_row + (h - hq - hkv) * p.v_strides[1];
    in0[u] = h < h_end ? device::load_packed(src + chunks.off0) : device::zero_packed<Bf16>();
    in1[u] = h < h_end ? device::load_packed(src + chunks.off1) : device::zero_packed<Bf16>();
  }
  NormWeightsInFlight<kD, kRopeThreads> weights;
  weights.load(p, threadIdx.x);

  // ---- 2. Where the row goes, and the row's cos/sin.
  // NOTE: held in registers (16 per lane) they kept v4 at 80 registers,
  // 3 CTAs per SM (ncu: 35.6% occupancy, 51% of DRAM bandwidth).
  const RowTarget target = locate_row_by_cta<kRopeThreads>(p, row, warp_counts);
  // The row as float32 (a float32 table copied in 4-byte words, a bf16 one
  // converted), and the norm weights.
  // NOTE: one writer for both tables: compiled once per table type (as the
  // streaming kernel's consumers are), the FP8 instantiations spilled.
  if (target.position_ok) {
    const int64_t first = int64_t{target.position} * p.cos_sin_stride;
    if (p.cos_sin_f32) {
      const auto* src = reinterpret_cast<const uint32_t*>(static_cast<const float*>(p.cos_sin) + first);
      for (int i = threadIdx.x; i < p.rotary_dim; i += kRopeThreads) cos_sin_row[i] = __ldg(src + i);
    } else {
      const Bf16* src = static_cast<const Bf16*>(p.cos_sin) + first;
      for (int i = threadIdx.x; i < p.rotary_dim; i += kRopeThreads) {
        cos_sin_row[i] = __float_as_uint(__bfloat162float(__ldg(src + i)));
      }
    }
  }
  weights.store(p, threadIdx.x, norm_weights);
  __syncthreads();

  // ---- 3. Each head: q -> q_out; k, v -> the cache slot. A warp goes on
  // while any of its groups has a head (RowWriter::write is warp-wide).
  const KernelConstants constants = KernelConstants::read<kFp8>(p);
  const RowWriter<kD, kFp8, true> writer(p, target, row_destinations<kFp8>(p, row, target),
                                         chunks, constants, cos_sin_row, norm_weights, lane);
  const int warp_first_group = static_cast<int>(threadIdx.x / 32) * (32 / kLanes);
  // The group's first two heads together (RowWriter::write_heads: their
  // reduction chains overlap), then the third.
  // NOTE: against one head at a time, decode B=1 and B=16 ran 2.3-5.2%
  // faster (Qwen3 BF16 B=1 2.83 -> 2.69 us; docs/perf/rope.md v12a).
  static_assert(kRopeHeadsPerGroup == 3, "two heads together, then one");
  auto warp_has = [&](int u) { return h_begin + warp_first_group + u * kGroups < h_end; };
  const int h0 = h_begin + group, h1 = h0 + kGroups, h2 = h1 + kGroups;
  if (warp_has(1)) {
    const int h[2] = {h0, h1};
    const bool active[2] = {h0 < h_end, h1 < h_end};
    const device::Packed8<Bf16> a[2] = {in0[0], in0[1]}, b[2] = {in1[0], in1[1]};
    writer.template write_heads<2>(h, active, a, b);
  } else if (warp_has(0)) {
    writer.write(h0, h0 < h_end, in0[0], in1[0]);
  }
  if (warp_has(2)) writer.write(h2, h2 < h_end, in0[2], in1[2]);
}

}  // namespace hpc_ops::rope
