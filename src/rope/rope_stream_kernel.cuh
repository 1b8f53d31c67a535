// SPDX-License-Identifier: Apache-2.0
// The streaming RoPE + QK-norm + paged KV-write kernel, for prefill chunks
// (rope_config.h picks it): a persistent grid whose CTAs take rows
// blockIdx.x, blockIdx.x + gridDim.x, ...; a producer warp has the copy
// engine (cp.async.bulk, common/bulk_copy.cuh) bring each row's q, k, v heads
// and its cos/sin row into a shared-memory stage, `stages` rows ahead of the
// eight consumer warps that normalize, rotate and store them (rope_row.cuh).
//
// Per stage: a `full` barrier (the producer's arrival plus the copies' bytes)
// and an `empty` barrier (one arrival per consumer thread) before the producer
// refills it. The row's target (request, cache slot, position) travels with
// the stage. The producer looks up 32 rows at once, one per lane, so the
// lookup's dependent loads (cu_seqlens -> kv_lens -> page table) are paid once
// per 32 rows, far ahead of their use.
//
// NOTE: why a second kernel. The per-row kernel (rope_kernel.cuh) holds a
// row's loads in registers and pays the lookup chain once per CTA: 78% of the
// ceiling on Llama-70B 1x16K and 68% with QK norm (docs/perf/rope.md v6).
// Here 60-100 KB per CTA are in flight whatever the compute costs.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "common/bulk_copy.cuh"
#include "common/pdl.cuh"
#include "common/vec.cuh"
#include "rope/rope_config.h"
#include "rope/rope_params.h"
#include "rope/rope_row.cuh"

namespace hpc_ops::rope {

// Issues the copies of one row into `stage` (the producer warp; every lane
// calls it, the target already in shared memory and the barrier armed).
// Heads of one tensor that are contiguous (stride D: views of a packed qkv)
// move as one copy; otherwise one copy per head.
template <int kD>
__device__ __forceinline__ void copy_row(const RopeParams& p, int row, const RowTarget& t,
                                         unsigned char* stage, uint64_t* full) {
  constexpr uint32_t kHeadBytes = kD * 2;
  const int hq = p.num_q_heads;
  const int hkv = p.num_kv_heads;
  const bool q_whole = p.q_strides[1] == kD;
  const bool k_whole = p.k_strides[1] == kD;
  const bool v_whole = p.v_strides[1] == kD;
  const int q_copies = q_whole ? 1 : hq;
  const int k_copies = k_whole ? 1 : hkv;
  const int v_copies = v_whole ? 1 : hkv;
  const int lane = threadIdx.x % 32;
  for (int i = lane; i < q_copies + k_copies + v_copies; i += 32) {
    const Bf16* src;
    int head;  // of the row, q heads first
    uint32_t bytes;
    if (i < q_copies) {
      head = i;
      src = static_cast<const Bf16*>(p.q) + row * p.q_strides[0] + i * p.q_strides[1];
      bytes = q_whole ? hq * kHeadBytes : kHeadBytes;
    } else if (i < q_copies + k_copies) {
      const int j = i - q_copies;
      head = hq + j;
      src = static_cast<const Bf16*>(p.k) + row * p.k_strides[0] + j * p.k_strides[1];
      bytes = k_whole ? hkv * kHeadBytes : kHeadBytes;
    } else {
      const int j = i - q_copies - k_copies;
      head = hq + hkv + j;
      src = static_cast<const Bf16*>(p.v) + row * p.v_strides[0] + j * p.v_strides[1];
      bytes = v_whole ? hkv * kHeadBytes : kHeadBytes;
    }
    device::bulk_copy_g2s(stage + head * kHeadBytes, src, bytes, full);
  }
  if (lane == 31 && t.position_ok) {
    const int elem = p.cos_sin_f32 ? 4 : 2;
    const auto* src = static_cast<const unsigned char*>(p.cos_sin) +
                      (int64_t{t.position} * p.cos_sin_stride) * elem;
    device::bulk_copy_g2s(stage + p.cos_sin_offset, src, p.cos_sin_bytes, full);
  }
}

template <int kD, bool kFp8>
__global__ void __launch_bounds__(kStreamThreads, kStreamMinCtas)
    rope_stream_kernel(const __grid_constant__ RopeParams p) {
  constexpr int kLanes = kD / 16;
  constexpr int kGroups = kStreamConsumerThreads / kLanes;
  constexpr int kConsumerWarps = kStreamConsumerThreads / 32;
  // Shared memory: per stage two barriers and the row's target (static), and
  // the stage itself (dynamic): the row's heads, q then k then v, D bf16
  // each, then cos | sin.
  extern __shared__ __align__(128) unsigned char stages_smem[];
  __shared__ uint64_t full[kStreamMaxStages];
  __shared__ uint64_t empty[kStreamMaxStages];
  __shared__ __align__(8) unsigned char target_bytes[kStreamMaxStages * sizeof(RowTarget)];
  auto* targets = reinterpret_cast<RowTarget*>(target_bytes);  // (no constructor runs)
  device::pdl_enter();  // first: earlier kernels may still run (common/pdl.cuh)

  const int stages = p.stages;
  const int warp = threadIdx.x / 32;
  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) {
      device::mbarrier_init(&full[s], 1);
      device::mbarrier_init(&empty[s], kStreamConsumerThreads);
    }
    device::fence_barrier_init();
  }
  __syncthreads();
  auto stage_of = [&](int s) { return stages_smem + s * p.stage_bytes; };
  const int row_bytes = (p.num_q_heads + 2 * p.num_kv_heads) * kD * 2;

  if (warp == kConsumerWarps) {
    // ---- producer: 32 rows looked up at once, then copied one by one.
    const int lane = threadIdx.x % 32;
    for (int k0 = 0;; k0 += 32) {
      const int64_t first = blockIdx.x + int64_t{k0} * gridDim.x;
      if (first >= p.rows) break;
      const int64_t mine = first + int64_t{lane} * gridDim.x;
      const RowTarget looked_up =
          mine < p.rows ? locate_row_by_thread(p, static_cast<int>(mine)) : RowTarget{};
      for (int j = 0; j < 32; ++j) {
        const int k = k0 + j;
        const int64_t row = blockIdx.x + int64_t{k} * gridDim.x;
        if (row >= p.rows) break;
        const int s = k % stages;
        if (k >= stages) device::mbarrier_wait(&empty[s], ((k / stages) - 1) & 1);
        RowTarget t;
        t.padding = __shfl_sync(0xffffffffu, looked_up.padding, j);
        t.position_ok = __shfl_sync(0xffffffffu, looked_up.position_ok, j);
        t.write = __shfl_sync(0xffffffffu, looked_up.write, j);
        t.position = __shfl_sync(0xffffffffu, looked_up.position, j);
        t.page = __shfl_sync(0xffffffffu, looked_up.page, j);
        t.slot = __shfl_sync(0xffffffffu, looked_up.slot, j);
        if (lane == 0) {
          targets[s] = t;
          // Padding rows read nothing: their q out is zero.
          const uint32_t bytes = t.padding ? 0u : row_bytes + (t.position_ok ? p.cos_sin_bytes : 0);
          if (bytes == 0) {
            device::mbarrier_arrive(&full[s]);
          } else {
            device::mbarrier_arrive_expect_tx(&full[s], bytes);
          }
        }
        __syncwarp();
        if (!t.padding) copy_row<kD>(p, static_cast<int>(row), t, stage_of(s), &full[s]);
      }
    }
    return;
  }

  // ---- consumers: every row of this CTA, heads group, group + G, ...; a
  // warp goes on while any of its groups has a head (RowWriter::write is
  // warp-wide).
  const int lane = threadIdx.x % kLanes;
  const int group = threadIdx.x / kLanes;
  const int warp_first_group = warp * (32 / kLanes);
  const int heads = p.num_q_heads + 2 * p.num_kv_heads;
  const LaneChunks chunks = lane_chunks<kLanes>(lane, p.rotary_dim, p.interleaved);
  const KernelConstants constants = KernelConstants::read<kFp8>(p);
  for (int k = 0;; ++k) {
    const int64_t row = blockIdx.x + int64_t{k} * gridDim.x;
    if (row >= p.rows) break;
    const int s = k % stages;
    device::mbarrier_wait(&full[s], (k / stages) & 1);
    const RowTarget target = targets[s];
    unsigned char* stage = stage_of(s);
    const RowWriter<kD, kFp8> writer(p, static_cast<int>(row), target, chunks, constants,
                                     stage + p.cos_sin_offset, p.cos_sin_f32, lane);
    const Bf16* row_heads = reinterpret_cast<const Bf16*>(stage);
    // NOTE: two heads per step, both chunks of both read first, so four
    // shared loads are in flight per thread; plain loads (not lds_128's
    // volatile asm), which the compiler may hoist above the previous step's
    // stores. The stage cannot change under them: the mbarrier wait and
    // arrive are compiler barriers.
    auto load = [&](int h, int off) {
      return device::Packed8<Bf16>{*reinterpret_cast<const uint4*>(row_heads + h * kD + off)};
    };
    for (int h0 = 0; h0 + warp_first_group < heads; h0 += 2 * kGroups) {
      const int h = h0 + group;
      const int h2 = h + kGroups;
      device::Packed8<Bf16> a0{}, a1{}, b0{}, b1{};
      if (!target.padding && h < heads) {
        a0 = load(h, chunks.off0);
        a1 = load(h, chunks.off1);
      }
      if (!target.padding && h2 < heads) {
        b0 = load(h2, chunks.off0);
        b1 = load(h2, chunks.off1);
      }
      writer.write(h, h < heads, a0, a1);
      if (h0 + kGroups + warp_first_group < heads) writer.write(h2, h2 < heads, b0, b1);
    }
    // Every consumer thread arrives (not one per warp): each one's reads of
    // the stage are then ordered before the refill by the barrier itself.
    device::mbarrier_arrive(&empty[s]);
  }
}

}  // namespace hpc_ops::rope
