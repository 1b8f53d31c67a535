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
// refills it. The row's target (request, cache slot, position) and output
// addresses travel with the stage. The producer looks up 32 rows at once, one
// per lane, so the lookup's dependent loads (cu_seqlens -> kv_lens -> page
// table) are paid once per 32 rows, far ahead of their use. On BF16 caches
// the v heads leave the stage for the cache slot by the copy engine too.
//
// NOTE: why a second kernel. The per-row kernel (rope_kernel.cuh) holds a
// row's loads in registers and pays the lookup chain once per CTA: 78% of the
// ceiling on Llama-70B 1x16K and 68% with QK norm (docs/perf/rope.md v6).
// Here 60-100 KB per CTA are in flight whatever the compute costs.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <type_traits>

#include "common/bulk_copy.cuh"
#include "common/named_barrier.cuh"
#include "common/pdl.cuh"
#include "common/vec.cuh"
#include "rope/rope_config.h"
#include "rope/rope_params.h"
#include "rope/rope_row.cuh"

namespace hpc_ops::rope {

// Issues the copy of row position `position` of the cos/sin cache into its
// place in `stage`.
__device__ __forceinline__ void copy_cos_sin(const RopeParams& p, int position,
                                             unsigned char* stage, uint64_t* full) {
  const int elem = p.cos_sin_f32 ? 4 : 2;
  const auto* src = static_cast<const unsigned char*>(p.cos_sin) +
                    (int64_t{position} * p.cos_sin_stride) * elem;
  device::bulk_copy_g2s(stage + p.cos_sin_offset, src, p.cos_sin_bytes, full);
}

// Issues the copies of one row into `stage` when some tensor's heads are not
// contiguous (the producer warp; every lane calls it after the barrier is
// armed): one copy per head of such a tensor, one per tensor otherwise.
template <int kD>
__device__ __forceinline__ void copy_row_by_heads(const RopeParams& p, int row, const RowTarget& t,
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
  if (lane == 31 && t.position_ok) copy_cos_sin(p, t.position, stage, full);
}

// Copies the row's v heads from `stage` (after its q and k heads) into the
// row's cache slot by the copy engine (BF16 caches; every lane of the
// producer warp calls it, and each closes its bulk async-group after): one
// copy when the slot's heads are contiguous (NHD), else one per head.
template <int kD>
__device__ __forceinline__ void copy_v_to_cache(const RopeParams& p, const RowDestinations& dest,
                                                const unsigned char* stage) {
  constexpr uint32_t kHeadBytes = kD * 2;
  const int hkv = p.num_kv_heads;
  const unsigned char* v_heads = stage + (p.num_q_heads + hkv) * kHeadBytes;
  auto* slot = reinterpret_cast<Bf16*>(dest.v_slot);
  const int lane = threadIdx.x % 32;
  if (p.v_cache_strides[2] == kD) {
    if (lane == 0) device::bulk_copy_s2g(slot, v_heads, hkv * kHeadBytes);
  } else {
    for (int j = lane; j < hkv; j += 32) {
      device::bulk_copy_s2g(slot + j * p.v_cache_strides[2], v_heads + j * kHeadBytes, kHeadBytes);
    }
  }
}

// What the producer leaves for the consumers with each stage: where the row
// goes, found one row per producer lane, far ahead of its use.
struct StagedRow {
  RowTarget target;
  RowDestinations dest;
};

// The consumers' side of rope_stream_kernel: the eight consumer warps take
// the CTA's rows from the ring in order. kCosSinF32: the cos/sin table's
// element type (RowCosSin's NOTE).
template <int kD, bool kFp8, bool kPhased, bool kCosSinF32>
__device__ __forceinline__ void consume_rows(const RopeParams& p, const unsigned char* stages_smem,
                                             uint64_t* full, uint64_t* empty,
                                             const StagedRow* staged,
                                             const NormWeights<kD>& norm_weights) {
  constexpr int kLanes = kD / 16;
  constexpr int kGroups = kStreamConsumerThreads / kLanes;
  static_assert((kGroups & (kGroups - 1)) == 0, "the head deal reduces modulo G with a mask");
  const int stages = p.stages;
  const int warp = threadIdx.x / 32;
  auto stage_of = [&](int s) { return stages_smem + s * p.stage_bytes; };
  // Each row's heads, as pairs (or single heads, below), are dealt
  // round-robin to the lane groups, continuing from where the previous row's
  // deal stopped, so every group gets the same share of the CTA's rows to
  // within one pair; a warp goes on while any of its groups has a pair
  // (RowWriter::write_heads is warp-wide).
  // NOTE: dealt from group 0 on every row, 72 heads over 32 groups (Qwen3)
  // gave warps 0-1 three heads and warps 2-7 two, and ncu put 16% of the
  // warps' stall samples on the full-barrier wait (Llama-70B), where the
  // lighter warps idled: Qwen3 1x16K 187 -> 173 us.
  // BF16 caches: v heads are copied from the stage into the cache by the copy
  // engine (the producer issues it), so the consumers skip them.
  const int lane = threadIdx.x % kLanes;
  const int group = threadIdx.x / kLanes;
  constexpr int kWarpGroups = 32 / kLanes;
  const int warp_first_group = warp * kWarpGroups;
  constexpr bool v_by_copy_engine = !kFp8;
  const int consumer_heads = p.num_q_heads + (v_by_copy_engine ? 1 : 2) * p.num_kv_heads;
  const int row_pairs = (consumer_heads + 1) / 2;  // (the run without phases)
  const LaneChunks chunks = lane_chunks<kLanes>(lane, p.rotary_dim, p.interleaved);
  const KernelConstants constants = KernelConstants::read<kFp8>(p);
  // kPhased: a row's heads in phases by kind (q, then k on BF16 caches or
  // k-v pairs on FP8 ones; each step's code holds one kind: no per-head kind
  // branches, no norm or rotation for a v head); the host picks it where the
  // kinds' code differs most, with QK norm or dynamic FP8 scales
  // (stream_heads_in_phases, rope_kernels.cu). Otherwise all of a row's
  // heads are dealt as one run.
  int deal_start = 0;  // the group that takes the first pair of this row
  int s = 0;
  uint32_t phase = 0;  // of full[s]
  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    device::mbarrier_wait(&full[s], phase);
    const RowTarget target = staged[s].target;
    const RowDestinations dest = staged[s].dest;
    const unsigned char* stage = stage_of(s);
    const RowWriter<kD, kFp8, kCosSinF32> writer(p, target, dest, chunks, constants,
                                                 stage + p.cos_sin_offset, norm_weights, lane);
    const Bf16* row_heads = reinterpret_cast<const Bf16*>(stage);
    // NOTE: two heads per step (one in the phased k steps on BF16 caches),
    // both chunks of both read first, so four shared loads are in flight per
    // thread, and written together (RowWriter::write_heads); plain loads (not
    // lds_128's volatile asm), which the compiler may hoist above the
    // previous step's stores. The stage cannot change under them: the
    // mbarrier wait and arrive are compiler barriers.
    auto load = [&](int h, int off) {
      return device::Packed8<Bf16>{*reinterpret_cast<const uint4*>(row_heads + h * kD + off)};
    };
    if constexpr (kPhased) {
      // A run of `heads` heads of one kind from heads_begin (k-v pairs: k
      // heads from heads_begin, each with its v head), dealt on from where
      // the previous run stopped.
      int deal = deal_start;
      auto write_kind = [&](auto kind, int heads_begin, int heads) {
        constexpr HeadKind kKind = decltype(kind)::value;
        constexpr bool kPairKV = kKind == HeadKind::kKV;
        constexpr int kN = kKind == HeadKind::kQ || kPairKV ? 2 : 1;
        // What is dealt, one per lane group and step: q heads as pairs (i,
        // i + ceil(heads / 2)), as the run without phases (no empty second
        // heads below 64 q heads); k-v pairs (i, i + heads); single heads.
        const int dealt = kKind == HeadKind::kQ ? (heads + 1) / 2 : heads;
        const int end = kPairKV ? 2 * heads : heads;  // of i + j * dealt
        const int first = (group - deal) & (kGroups - 1);
        const int warp_first = (warp_first_group - deal) & (kGroups - 1);
        const int warp_min_first = warp_first + kWarpGroups > kGroups ? 0 : warp_first;
        for (int i0 = 0; warp_min_first + i0 < dealt; i0 += kGroups) {
          int h[kN];
          bool active[kN];
          device::Packed8<Bf16> a[kN], b[kN];
          const int i = first + i0;
#pragma unroll
          for (int j = 0; j < kN; ++j) {
            active[j] = i < dealt && i + j * dealt < end;
            h[j] = heads_begin + i + j * dealt;
            a[j] = b[j] = device::Packed8<Bf16>{};
            if (!target.padding && active[j]) {
              a[j] = load(h[j], chunks.off0);
              b[j] = load(h[j], chunks.off1);
            }
          }
          writer.template write_heads<kN, kKind>(h, active, a, b);
        }
        deal = (deal + dealt) & (kGroups - 1);
      };
      write_kind(std::integral_constant<HeadKind, HeadKind::kQ>{}, 0, p.num_q_heads);
      if constexpr (v_by_copy_engine) {
        write_kind(std::integral_constant<HeadKind, HeadKind::kK>{}, p.num_q_heads, p.num_kv_heads);
      } else {
        // NOTE: k and v heads as pairs, one step for both. Dealt as a run of
        // k heads, then one of v heads (one per step each), two of the eight
        // warps took an extra step per Qwen3 row instead of one: pairs took
        // 1x16K with dynamic scales from 137.5 to 131.9 us and per-tensor
        // from 167.0 to 165.9 (docs/perf/rope.md v13).
        write_kind(std::integral_constant<HeadKind, HeadKind::kKV>{}, p.num_q_heads,
                   p.num_kv_heads);
      }
      deal_start = deal;
    } else {
      // All of the row's heads as one run of pairs (i, i + P), P = ceil(H /
      // 2) of the H heads, one pair per lane group and step.
      // NOTE: kept as its own loop for now: with v13b's pairs it is what a
      // write_kind run of HeadKind::kAny would be, and written that way the
      // consumers compile to within a few instructions of this (the producer
      // then spills 18 bytes instead of 12); not yet measured on the GPU.
      const int first = (group - deal_start) & (kGroups - 1);  // this group's first pair
      // The warp's smallest first pair: its groups' first pairs are consecutive
      // modulo G, so 0 when they wrap.
      const int warp_first = (warp_first_group - deal_start) & (kGroups - 1);
      const int warp_min_first = warp_first + kWarpGroups > kGroups ? 0 : warp_first;
      for (int i0 = 0; warp_min_first + i0 < row_pairs; i0 += kGroups) {
        const int i = first + i0;
        const int h[2] = {i, i + row_pairs};
        bool active[2];
        device::Packed8<Bf16> a[2], b[2];
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          active[j] = i < row_pairs && h[j] < consumer_heads;
          a[j] = b[j] = device::Packed8<Bf16>{};
          if (!target.padding && active[j]) {
            a[j] = load(h[j], chunks.off0);
            b[j] = load(h[j], chunks.off1);
          }
        }
        // NOTE: pairs (h, h + G), G = 32 lane groups, left second heads
        // empty: Llama-8B's 40 heads took one step in each of the 8 warps per
        // row, 24 of 32 groups half empty; as 20 pairs 5 warps take a step,
        // and 1x16K went from 114.7 to 112.0 us, 1x2K from 17.6 to 16.6
        // (docs/perf/rope.md v13b). (A single-head path beside the pair
        // spilled 40-140 bytes at the 96-register bound.)
        writer.template write_heads<2>(h, active, a, b);
      }
    }
    if constexpr (!kPhased) deal_start = (deal_start + row_pairs) & (kGroups - 1);
    // Every consumer thread arrives (not one per warp): each one's reads of
    // the stage are then ordered before the refill by the barrier itself.
    device::mbarrier_arrive(&empty[s]);
    if (++s == stages) {
      s = 0;
      phase ^= 1;
    }
  }
}

template <int kD, bool kFp8, bool kPhased>
__global__ void __launch_bounds__(kStreamThreads, kStreamMinCtas)
    rope_stream_kernel(const __grid_constant__ RopeParams p) {
  constexpr int kConsumerWarps = kStreamConsumerThreads / 32;
  // Shared memory: per stage two barriers and the row's StagedRow (static),
  // and the stage itself (dynamic): the row's heads, q then k then v, D bf16
  // each, then cos | sin; and the QK-norm weights (static).
  extern __shared__ __align__(128) unsigned char stages_smem[];
  __shared__ uint64_t full[kStreamMaxStages];
  __shared__ uint64_t empty[kStreamMaxStages];
  __shared__ __align__(16) unsigned char staged_bytes[kStreamMaxStages * sizeof(StagedRow)];
  __shared__ __align__(16) NormWeights<kD> norm_weights;
  static_assert(kStreamMaxStages * (16 + sizeof(StagedRow)) + sizeof(NormWeights<kD>) <=
                    kStreamStaticSharedBytes,
                "the streaming kernel's static shared memory within its budget");
  static_assert(kStreamMaxStages <= 32, "a producer lane per early row's stage");
  auto* staged = reinterpret_cast<StagedRow*>(staged_bytes);  // (no constructor runs)
  const int stages = p.stages;
  const int warp = threadIdx.x / 32;
  // The barriers' setup touches shared memory only, so it may precede the
  // wait for earlier kernels (common/pdl.cuh).
  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) {
      device::mbarrier_init(&full[s], 1);
      device::mbarrier_init(&empty[s], kStreamConsumerThreads);
    }
    device::fence_barrier_init();
  }
  device::pdl_enter();
  __syncthreads();
  auto stage_of = [&](int s) { return stages_smem + s * p.stage_bytes; };
  const int row_bytes = (p.num_q_heads + 2 * p.num_kv_heads) * kD * 2;
  // NOTE: the ring position (stage, phase) advances by one per row instead of
  // k % stages and k / stages: the division by the runtime stage count cost
  // ~35 instructions per row in every warp.

  if (warp == kConsumerWarps) {
    // ---- producer: 32 rows looked up at once, one per lane (row, target,
    // destinations and sources), then copied one by one. When each of q, k
    // and v has its heads contiguous (views of a packed qkv), the lane that
    // looked a row up also issues its copies: one for the whole row when q, k
    // and v lie end to end, else one per tensor, and one for cos/sin.
    // NOTE: the producer's instructions land on one of the SM's four
    // schedulers. With every lane sharing each row's copies (shuffles,
    // branches per tensor, 64-bit addresses) it issued ~200 instructions a
    // row, a quarter of that scheduler's work, so the consumer warps it
    // shares a scheduler with fell behind and the others waited on them
    // (ncu, Llama-8B 1x16K: 12% of stall samples on the full-barrier wait).
    const int lane = threadIdx.x % 32;
    const int hq = p.num_q_heads;
    const int hkv = p.num_kv_heads;
    const auto* q = static_cast<const Bf16*>(p.q);
    const auto* k = static_cast<const Bf16*>(p.k);
    const auto* v = static_cast<const Bf16*>(p.v);
    const bool whole = p.q_strides[1] == kD && p.k_strides[1] == kD && p.v_strides[1] == kD;
    const bool packed = whole && p.k_strides[0] == p.q_strides[0] &&
                        p.v_strides[0] == p.q_strides[0] && k == q + hq * kD &&
                        v == k + hkv * kD;
    // The heads of one row into `stage` (whole: one copy per tensor, or one
    // for the row when packed).
    auto copy_heads = [&](unsigned char* stage, const Bf16* q_src, const Bf16* k_src,
                          const Bf16* v_src, uint64_t* bar) {
      constexpr uint32_t kHeadBytes = kD * 2;
      if (packed) {
        device::bulk_copy_g2s(stage, q_src, row_bytes, bar);
      } else {
        device::bulk_copy_g2s(stage, q_src, hq * kHeadBytes, bar);
        device::bulk_copy_g2s(stage + hq * kHeadBytes, k_src, hkv * kHeadBytes, bar);
        device::bulk_copy_g2s(stage + (hq + hkv) * kHeadBytes, v_src, hkv * kHeadBytes, bar);
      }
    };
    // The CTA's first rows (one per stage) have their heads copied before any
    // lookup when each tensor's heads are contiguous (`whole`): the sources
    // follow from the row index alone, and the lookup is a chain of dependent
    // loads (cu_seqlens, kv_lens, the page table). Their barriers expect those
    // bytes now; the arrival, with the cos/sin bytes, follows the lookup.
    // NOTE: a call's start (the lookup, then the first loads) was ~6 us of
    // Qwen3 1x16K's 170 us (the intercept of 1x16K and 4x2K). Copying first
    // (and the norm weights staged by the consumers alone, below) took it to
    // 166.8 us, 4x2K from 88.0 to 85.8 (docs/perf/rope.md v13).
    const int cta_rows = static_cast<int>((p.rows - blockIdx.x + gridDim.x - 1) / gridDim.x);
    const int early_rows = whole ? (cta_rows < stages ? cta_rows : stages) : 0;
    int s = 0;
    // The parity of empty[s] to wait for: the phase of the row `stages` back
    // (row k waits for k / stages - 1; nothing to wait for on the first round).
    uint32_t phase = 1;
    // BF16 caches: the producer also has each row's v heads copied from the
    // stage into the cache slot: row n's right after it has issued row n +
    // stages - 1 (once row n's full barrier has completed, which with 3 or
    // more stages it has long done), and read before row n + stages refills
    // the stage.
    // NOTE: a consumer warp issued the copy and held its arrival on the
    // stage's empty barrier back one row until the copy had read the stage:
    // every stage was released a row late, the ring one stage shallower.
    // From the producer: -0.4 to -2.4% on every BF16 case (Llama-8B 1x16K
    // 110.9 -> 109.8 us; docs/perf/rope.md v13c).
    int rows_issued = 0;
    int v_rows = 0;         // rows whose v heads went out
    int v_s = 0;            // the stage of the next one,
    uint32_t v_phase = 0;   // and the parity of its full barrier
    auto copy_next_v = [&] {
      device::mbarrier_wait(&full[v_s], v_phase);
      const StagedRow& r = staged[v_s];
      if (!r.target.padding && r.target.write) copy_v_to_cache<kD>(p, r.dest, stage_of(v_s));
      device::bulk_commit_group();
      ++v_rows;
      if (++v_s == stages) {
        v_s = 0;
        v_phase ^= 1;
      }
    };
    for (int k0 = 0;; k0 += 32) {
      const int64_t first = blockIdx.x + int64_t{k0} * gridDim.x;
      if (first >= p.rows) break;
      const int64_t mine = first + int64_t{lane} * gridDim.x;
      const int64_t src_row = mine < p.rows ? mine : 0;  // (no pointer past the tensors)
      const Bf16* q_src = q + src_row * p.q_strides[0];
      const Bf16* k_src = k + src_row * p.k_strides[0];
      const Bf16* v_src = v + src_row * p.v_strides[0];
      if (k0 == 0 && lane < early_rows) {  // (stage `lane`)
        device::mbarrier_expect_tx(&full[lane], row_bytes);
        copy_heads(stage_of(lane), q_src, k_src, v_src, &full[lane]);
      }
      StagedRow looked_up;
      if (mine < p.rows) {
        looked_up.target = locate_row_by_thread(p, static_cast<int>(mine));
        looked_up.dest = row_destinations<kFp8>(p, static_cast<int>(mine), looked_up.target);
      }
      for (int j = 0; j < 32; ++j) {
        const int64_t row = first + int64_t{j} * gridDim.x;
        if (row >= p.rows) break;
        if (k0 + j >= stages) {
          device::mbarrier_wait(&empty[s], phase);
          if constexpr (!kFp8) {  // (the v copy of the row `stages` back)
            device::bulk_wait_group_read<0>();
            __syncwarp();
          }
        }
        unsigned char* stage = stage_of(s);
        if (lane == j) {
          const RowTarget& t = looked_up.target;
          const bool early = k0 + j < early_rows;  // heads already on their way
          staged[s] = looked_up;
          // Padding rows read nothing (but the heads of an early one): their
          // q out is zero. (This lane's arrival releases its StagedRow write
          // to the consumers.)
          const uint32_t bytes =
              t.padding ? 0u : (early ? 0u : row_bytes) + (t.position_ok ? p.cos_sin_bytes : 0);
          if (bytes == 0) {
            device::mbarrier_arrive(&full[s]);
          } else {
            device::mbarrier_arrive_expect_tx(&full[s], bytes);
          }
          if (whole && !t.padding) {
            if (!early) copy_heads(stage, q_src, k_src, v_src, &full[s]);
            if (t.position_ok) copy_cos_sin(p, t.position, stage, &full[s]);
          }
        }
        if (!whole) {  // heads one by one, shared by the lanes
          RowTarget t;
          t.padding = __shfl_sync(0xffffffffu, looked_up.target.padding, j);
          t.position_ok = __shfl_sync(0xffffffffu, looked_up.target.position_ok, j);
          t.position = __shfl_sync(0xffffffffu, looked_up.target.position, j);
          __syncwarp();
          if (!t.padding) copy_row_by_heads<kD>(p, static_cast<int>(row), t, stage, &full[s]);
        }
        ++rows_issued;
        if constexpr (!kFp8) {
          if (rows_issued >= stages) copy_next_v();
        }
        if (++s == stages) {
          s = 0;
          phase ^= 1;
        }
      }
    }
    if constexpr (!kFp8) {
      // The v heads of the last rows, then the copy engine's cache writes
      // done before the kernel ends.
      while (v_rows < rows_issued) copy_next_v();
      device::bulk_wait_group<0>();
    }
    return;
  }

  // ---- consumers (consume_rows), compiled once per cos/sin element type,
  // after staging the norm weights among themselves: the producer's first
  // copies need not wait for those loads.
  {
    NormWeightsInFlight<kD, kStreamConsumerThreads> weights;
    weights.load(p, threadIdx.x);
    weights.store(p, threadIdx.x, norm_weights);
  }
  device::named_barrier_sync(1, kStreamConsumerThreads);
  if (p.cos_sin_f32) {
    consume_rows<kD, kFp8, kPhased, true>(p, stages_smem, full, empty, staged, norm_weights);
  } else {
    consume_rows<kD, kFp8, kPhased, false>(p, stages_smem, full, empty, staged, norm_weights);
  }
}

}  // namespace hpc_ops::rope
