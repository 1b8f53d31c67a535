// SPDX-License-Identifier: Apache-2.0
// The fused sampling kernel. One thread-block cluster of C CTAs per row
// (request x position); CTA r owns the vocabulary slice [r * slice, ...).
//
//   load    read the logits once (allowed mask, penalties, temperature
//           applied on the fly) into shared memory; per-thread max and
//           first argmax; cluster reduction (DSMEM);
//   top-k   radix select of the k-th smallest key K = (m - s) * 2^27 (8-bit
//           digits, MSB first: digit 0 bins the distance to the max in 1/8
//           steps, so the histogram atomics spread; early exit when the
//           chosen bucket is exactly what is needed);
//   top-p   the same descent on 2^-40 fixed-point masses exp(s - m) of the
//           top-k survivors (integer atomics: order-independent sums, so the
//           threshold is deterministic);
//   list    once a first digit bounds the candidates (<= 2048 over the
//           cluster), they are compacted and later passes walk the list;
//   race    argmin over survivors of E / w, E = -log(u), u from Philox by
//           token id (the mirror's argmax of log w - log E); tokens more
//           than 20 below the max are skipped (they cannot beat the max
//           token: the race term spans < 19.45), and so are tokens whose
//           bound (1 - u) e^(m - s) already loses;
//   logprob only when asked: Z = sum of 2^-40 fixed-point exp(s - m), an
//           integer sum, so like every result above it does not depend on
//           how the row is split (the split may follow the batch size).
// Every pass after the load runs from shared memory (slices larger than the
// shared budget re-read the tail of the slice from global memory).
#pragma once

#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <cstring>

#include "common/pdl.cuh"
#include "common/philox.cuh"
#include "common/vec.cuh"
#include "sampling/sampling_params.h"

namespace hpc_ops::sampling {

namespace cg = cooperative_groups;

constexpr int kWarps = kThreads / 32;  // the most warps of a CTA (slots of the reductions)
constexpr uint32_t kOutOfRange = 0xFFFFFFFFu;  // key of tokens >= 32 below the max (and -inf)
constexpr uint32_t kEveryKey = kOutOfRange - 1;  // threshold keeping every in-range token
constexpr float kKeyScale = 134217728.0f;      // 2^27: 32 units of (m - s) span the 32-bit key
constexpr uint32_t kRaceKeyLimit = 20u << 27;  // (m - s) <= 20: tokens that can still win the race
constexpr float kMassScale = 1099511627776.0f;  // 2^40 fixed point of exp(s - m) in (0, 1]
constexpr uint32_t kRaceStreamSample = 0u;
constexpr uint32_t kAcceptStream = 0xFFFFFFFFu;

struct Stats {      // max, first index of the max
  float m;
  int32_t idx;
};

struct Winner {     // race result: smallest race key E / w, its token, its s
  float key;
  int32_t idx;
  float s;
};

__device__ __forceinline__ Winner no_winner() { return {INFINITY, INT_MAX, 0.0f}; }

// Capacity of the candidate list. 2048 covers top-k up to ~2000 plus the
// tokens tied into its bucket; larger sets keep walking the whole slice.
constexpr int kListCapacity = 2048;

struct SharedState {
  uint32_t count[2][kBins];               // this CTA's histograms (double-buffered)
  unsigned long long mass[2][kBins];
  uint32_t total_count[kBins];            // cluster sums of the current round
  unsigned long long total_mass[kBins];
  Stats warp_stats[kWarps];
  Winner warp_winner[kWarps];
  unsigned long long warp_mass[kWarps];
  Stats cta_stats;                        // read by the other CTAs of the cluster
  Winner cta_winner[2];                   // two reductions may follow each other
  unsigned long long cta_mass;
  unsigned long long row_mass;
  float draft_e;                          // exp(s - m) of the draft token if this CTA owns it
  int32_t draft_survives;
  // broadcast to the CTA
  Stats row_stats;
  Winner row_winner;
  uint32_t digit, found, bucket_count, count_below;
  unsigned long long mass_above;
  // Candidates (slice index, s) once a first round has bounded them: every
  // later pass walks this list instead of the slice.
  uint32_t list_count;
  int32_t list_index[kListCapacity];
  float list_s[kListCapacity];
};

// The vocabulary cache (float4) follows the state, 16-byte aligned.
constexpr int kSharedStateBytes = (sizeof(SharedState) + 15) / 16 * 16;

__device__ __forceinline__ Stats combine(Stats a, Stats b) {
  const float m = fmaxf(a.m, b.m);
  if (m == -INFINITY) return {-INFINITY, INT_MAX};
  const int32_t idx = a.m > b.m ? a.idx : b.m > a.m ? b.idx : min(a.idx, b.idx);
  return {m, idx};
}

__device__ __forceinline__ Winner better(Winner a, Winner b) {
  if (a.key < b.key) return a;
  if (b.key < a.key) return b;
  return a.idx <= b.idx ? a : b;
}

// __shfl_xor_sync of a small struct of 32-bit words.
template <class T>
__device__ __forceinline__ T shfl_xor(T v, int offset) {
  static_assert(sizeof(T) % 4 == 0, "a struct of 32-bit words");
  uint32_t w[sizeof(T) / 4];
  memcpy(w, &v, sizeof(T));
#pragma unroll
  for (int i = 0; i < static_cast<int>(sizeof(T) / 4); ++i) w[i] = __shfl_xor_sync(0xffffffffu, w[i], offset);
  memcpy(&v, w, sizeof(T));
  return v;
}

__device__ __forceinline__ unsigned long long plus(unsigned long long a, unsigned long long b) {
  return a + b;
}

__device__ __forceinline__ float read_param(const FloatParam& p, int b) {
  return p.ptr ? p.ptr[b] : p.value;
}

__device__ __forceinline__ uint64_t read_seed(const SeedParam& p, int b) {
  return p.ptr ? static_cast<uint64_t>(p.ptr[b]) : p.value;
}

__device__ __forceinline__ float load_logit(const float* p) { return __ldg(p); }
__device__ __forceinline__ float load_logit(const __nv_bfloat16* p) {
  return __bfloat162float(__ldg(p));
}

__device__ __forceinline__ uint32_t key_of(float s, float m) {
  const float d = m - s;  // >= 0; NaN-free: s is -inf or finite, m finite here
  return d < 32.0f ? __float2uint_rz(d * kKeyScale) : kOutOfRange;
}

__device__ __forceinline__ unsigned long long mass_of(float s, float m) {
  return __float2ull_rn(expf(s - m) * kMassScale);
}

// The inputs of one row, resolved from the flat row index. Tokens are
// handled four at a time (one 16-byte load of fp32 logits, one Philox call
// for four uniforms), token ids slice-relative.
template <typename T>
struct RowView {
  const T* logits;
  const uint32_t* seen;
  const uint32_t* allowed;
  const int32_t* counts;
  float inv_temperature;  // 1 for greedy rows
  bool greedy;
  bool vector_loads;      // the slice start is aligned for 4-token loads
  float rep, presence, frequency;
  bool use_seen, use_counts;

  __device__ __forceinline__ void load4(int t, float (&l)[4]) const {
    if constexpr (sizeof(T) == 4) {
      const float4 x = __ldg(reinterpret_cast<const float4*>(logits + t));
      l[0] = x.x, l[1] = x.y, l[2] = x.z, l[3] = x.w;
    } else {
      const uint2 x = __ldg(reinterpret_cast<const uint2*>(logits + t));
      const float2 a = device::bf16x2_to_float2(x.x), b = device::bf16x2_to_float2(x.y);
      l[0] = a.x, l[1] = a.y, l[2] = b.x, l[3] = b.y;
    }
  }

  // Steps 1-5 for tokens t .. t+3 (t a multiple of 4): the scaled penalized
  // logits s; tokens at or past n give -inf.
  __device__ __forceinline__ float4 group(int t, int n) const {
    float l[4];
    if (vector_loads && t + 3 < n) {
      load4(t, l);
    } else {
#pragma unroll
      for (int q = 0; q < 4; ++q) l[q] = t + q < n ? load_logit(logits + t + q) : -INFINITY;
    }
    const uint32_t shift = t & 31;
    const uint32_t ok = allowed != nullptr ? __ldg(allowed + (t >> 5)) >> shift : 0xFu;
    const uint32_t was_seen = use_seen ? __ldg(seen + (t >> 5)) >> shift : 0u;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      if (!((ok >> q) & 1u)) l[q] = -INFINITY;
      if ((was_seen >> q) & 1u) {
        l[q] = l[q] > 0.0f ? l[q] / rep : l[q] * rep;
        l[q] -= presence;
      }
      if (use_counts && t + q < n) l[q] -= frequency * static_cast<float>(__ldg(counts + t + q));
      if (!greedy) l[q] *= inv_temperature;
    }
    return make_float4(l[0], l[1], l[2], l[3]);
  }
  // The same, out of line: the passes after the load call it only for slices
  // larger than the shared-memory cache (inlining it into every pass cost
  // instruction-cache misses).
  __device__ __noinline__ float4 group_slow(int t, int n) const { return group(t, n); }
};

__device__ __forceinline__ float at(const float4& v, int q) {
  return q == 0 ? v.x : q == 1 ? v.y : q == 2 ? v.z : v.w;
}

// Block-wide histogram round helpers --------------------------------------------------------

// Sums this round's histograms of every CTA of the cluster (rank order) into
// total_*; call after the cluster barrier that published them.
__device__ __forceinline__ void gather_histograms(cg::cluster_group& cluster, SharedState& sh,
                                                  int buf, bool with_mass) {
  const int t = threadIdx.x;
  if (t < kBins) {
    uint32_t c = 0;
    unsigned long long m = 0;
    const unsigned ranks = cluster.num_blocks();
    // Unrolled by 4: four remote loads in flight (a rolled loop waited out
    // one DSMEM round trip per rank; unrolling by 16 spilled registers).
#pragma unroll 4
    for (unsigned r = 0; r < kMaxClusterSize; ++r) {
      if (r < ranks) {
        SharedState* remote = cluster.map_shared_rank(&sh, r);
        c += remote->count[buf][t];
        if (with_mass) m += remote->mass[buf][t];
      }
    }
    sh.total_count[t] = c;
    sh.total_mass[t] = m;
  }
}

// Warp 0: smallest digit whose inclusive count prefix reaches need (found =
// 0 if none): the digit, its count and the count below it.
__device__ __forceinline__ void choose_by_count(SharedState& sh, uint32_t need) {
  const int lane = threadIdx.x & 31;
  uint32_t c[8];
  uint32_t sum = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    c[j] = sh.total_count[lane * 8 + j];
    sum += c[j];
  }
  uint32_t incl = sum;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const uint32_t v = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += v;
  }
  uint32_t below = incl - sum;
  int hit = -1;
  uint32_t hit_below = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    if (hit < 0 && below + c[j] >= need) {
      hit = j;
      hit_below = below;
    }
    below += c[j];
  }
  const unsigned ballot = __ballot_sync(0xffffffffu, hit >= 0);
  if (ballot == 0) {
    if (lane == 0) sh.found = 0;
    return;
  }
  if (lane == __ffs(ballot) - 1) {
    sh.found = 1;
    sh.digit = lane * 8 + hit;
    sh.bucket_count = c[hit];
    sh.count_below = hit_below;
  }
}

// Warp 0: largest non-empty digit whose first element has (mass above) <
// limit. Writes the digit, its count, the mass and the count below it
// (found = 1 always: digit 0's first token at round 0 is the max token).
__device__ __forceinline__ void choose_by_mass(SharedState& sh, unsigned long long base,
                                               unsigned long long limit) {
  const int lane = threadIdx.x & 31;
  unsigned long long m[8];
  uint32_t c[8];
  unsigned long long sum = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    m[j] = sh.total_mass[lane * 8 + j];
    c[j] = sh.total_count[lane * 8 + j];
    sum += m[j];
  }
  unsigned long long incl = sum;
  uint32_t count_sum = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) count_sum += c[j];
  uint32_t count_incl = count_sum;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const unsigned long long v = __shfl_up_sync(0xffffffffu, incl, o);
    const uint32_t cv = __shfl_up_sync(0xffffffffu, count_incl, o);
    if (lane >= o) {
      incl += v;
      count_incl += cv;
    }
  }
  unsigned long long above = base + incl - sum;
  uint32_t below = count_incl - count_sum;
  int hit = -1;
  unsigned long long hit_above = 0;
  uint32_t hit_below = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    if (c[j] > 0 && above < limit) {
      hit = j;
      hit_above = above;
      hit_below = below;
    }
    above += m[j];
    below += c[j];
  }
  const unsigned ballot = __ballot_sync(0xffffffffu, hit >= 0);
  const int last = ballot ? 31 - __clz(ballot) : 0;
  if (ballot == 0) {
    if (lane == 0) sh.found = 0;
    return;
  }
  if (lane == last) {
    sh.found = 1;
    sh.digit = lane * 8 + hit;
    sh.bucket_count = c[hit];
    sh.mass_above = hit_above;
    sh.count_below = hit_below;
  }
}

// op-reduction of every thread's v over the cluster (op associative and
// commutative); every thread of every CTA gets the same bits: warps, then the
// CTA's warps in warp 0, then lane r of warp 0 reads rank r (DSMEM) and one
// fixed shuffle tree combines the ranks. cta_slot must not be written again
// before the next cluster barrier (alternate slots for back-to-back calls).
template <class T, class Op>
__device__ __forceinline__ T cluster_allreduce(cg::cluster_group& cluster, T v, Op op, T identity,
                                               T* warp_slots, T* cta_slot, T* result_slot) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, shfl_xor(v, o));
  if (lane == 0) warp_slots[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T x = lane < static_cast<int>(blockDim.x >> 5) ? warp_slots[lane] : identity;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x = op(x, shfl_xor(x, o));
    if (lane == 0) *cta_slot = x;
  }
  cluster.sync();
  if (warp == 0) {
    T all = static_cast<unsigned>(lane) < cluster.num_blocks()
                ? *cluster.map_shared_rank(cta_slot, static_cast<unsigned>(lane))
                : identity;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) all = op(all, shfl_xor(all, o));
    if (lane == 0) *result_slot = all;
  }
  __syncthreads();
  return *result_slot;
}

// The race winner of the cluster (slot: 0 or 1, see cluster_allreduce).
__device__ __forceinline__ Winner cluster_argmax(cg::cluster_group& cluster, SharedState& sh,
                                                 Winner w, int slot) {
  return cluster_allreduce(cluster, w, better, no_winner(), sh.warp_winner, &sh.cta_winner[slot],
                           &sh.row_winner);
}

// kCtaThreads: 1024 (one CTA per SM) or 512 (two per SM, so one CTA's
// barriers and cluster waits overlap the other's passes; large batches).
template <typename T, int kCtaThreads>
__global__ void __launch_bounds__(kCtaThreads, kThreads / kCtaThreads)
    sampling_kernel(const __grid_constant__ SamplingParams p) {
  static_assert(kCtaThreads <= kThreads && kCtaThreads >= kBins, "a CTA has 256..1024 threads");
  extern __shared__ __align__(16) unsigned char smem_raw[];
  SharedState& sh = *reinterpret_cast<SharedState*>(smem_raw);
  float4* cache = reinterpret_cast<float4*>(smem_raw + kSharedStateBytes);
  device::pdl_enter();  // first: earlier kernels may still run (common/pdl.cuh)

  cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank());
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int row = blockIdx.y;
  const int b = row / p.positions;
  const int pos = row - b * p.positions;
  const int begin = rank * p.slice;
  const int n = max(0, min(p.vocab - begin, p.slice));
  const int groups = (n + 3) / 4;
  const int cached_groups = p.cached / 4;

  // ---- the row's inputs ---------------------------------------------------------------------
  const int64_t rq = b, ps = pos;
  auto row_base = [&](const RowInput& in, int64_t elem_bytes) -> const unsigned char* {
    return in.ptr ? static_cast<const unsigned char*>(in.ptr) +
                        (rq * in.request_stride + ps * in.position_stride) * elem_bytes
                  : nullptr;
  };
  RowView<T> v;
  v.logits = reinterpret_cast<const T*>(row_base(p.logits, sizeof(T))) + begin;
  v.vector_loads = (reinterpret_cast<uintptr_t>(v.logits) % (4 * sizeof(T))) == 0;
  // slices start at multiples of 32 tokens: the mask bases move by whole words
  v.seen = p.seen_mask.ptr ? reinterpret_cast<const uint32_t*>(row_base(p.seen_mask, 4)) + begin / 32
                           : nullptr;
  v.allowed = p.allowed_mask.ptr
                  ? reinterpret_cast<const uint32_t*>(row_base(p.allowed_mask, 4)) + begin / 32
                  : nullptr;
  v.counts = p.token_counts.ptr
                 ? reinterpret_cast<const int32_t*>(row_base(p.token_counts, 4)) + begin
                 : nullptr;
  const float temperature = read_param(p.temperature, b);
  v.greedy = p.mode == Mode::kSpecGreedy || !(temperature > 0.0f);
  v.inv_temperature = v.greedy ? 1.0f : 1.0f / temperature;
  v.rep = read_param(p.repetition, b);
  v.presence = read_param(p.presence, b);
  v.frequency = read_param(p.frequency, b);
  v.use_seen = p.use_seen;
  v.use_counts = p.use_counts;

  // s of tokens 4g .. 4g+3 of the slice: from shared memory, or recomputed
  // for the part of a slice beyond the shared budget.
  auto group_at = [&](int g) -> float4 {
    return g < cached_groups ? cache[g] : v.group_slow(4 * g, n);
  };

  // ---- load: steps 1-5, statistics of step 6 ----------------------------------------------
  Stats st{-INFINITY, INT_MAX};
  {
    constexpr int kUnroll = 2;  // two 16-byte loads in flight per thread (32 KB per SM)
    for (int g0 = tid; g0 < groups; g0 += kUnroll * kCtaThreads) {
      float4 x[kUnroll];
#pragma unroll
      for (int j = 0; j < kUnroll; ++j) {
        const int g = g0 + j * kCtaThreads;
        x[j] = g < groups ? v.group(4 * g, n) : make_float4(-INFINITY, -INFINITY, -INFINITY, -INFINITY);
      }
#pragma unroll
      for (int j = 0; j < kUnroll; ++j) {
        const int g = g0 + j * kCtaThreads;
        if (g < groups && g < cached_groups) cache[g] = x[j];
        const float gm = fmaxf(fmaxf(x[j].x, x[j].y), fmaxf(x[j].z, x[j].w));
        if (gm > st.m) {
          const int q = x[j].x == gm ? 0 : x[j].y == gm ? 1 : x[j].z == gm ? 2 : 3;
          st.m = gm;
          st.idx = begin + 4 * g + q;
        }
      }
    }
  }
  const Stats row_stats = cluster_allreduce(cluster, st, combine, Stats{-INFINITY, INT_MAX},
                                            sh.warp_stats, &sh.cta_stats, &sh.row_stats);
  const float m = row_stats.m;
  const bool empty = m == -INFINITY;

  const int k_positions = p.positions - 1;
  const bool spec = p.mode != Mode::kSample;
  const bool recover = p.mode == Mode::kSpecSampled && pos < k_positions;  // a draft to judge
  const int top_k = p.top_k.ptr ? p.top_k.ptr[b] : p.top_k.value;
  const float top_p = read_param(p.top_p, b);
  const float min_p = read_param(p.min_p, b);
  const uint64_t seed = read_seed(p.seeds, b), offset = read_seed(p.offsets, b);
  const uint32_t stream = spec ? static_cast<uint32_t>(1 + pos) : kRaceStreamSample;

  const int32_t draft = spec && pos < k_positions ? p.drafts[rq * p.drafts_stride + pos] : -1;
  // Draft ids outside [0, V) are the caller's error: rejected, never read out of bounds.
  const bool draft_valid = draft >= 0 && draft < p.vocab;
  const float* draft_probs =
      recover ? reinterpret_cast<const float*>(row_base(p.draft_probs, 4)) : nullptr;

  Winner result{INFINITY, -1, 0.0f};
  bool accept = false;
  int buf = 0;

  if (empty) {
    // nothing to choose: token -1, never accepted
  } else if (v.greedy) {
    result = {0.0f, row_stats.idx, m};
    accept = draft == row_stats.idx;
    if (recover && accept) {
      // Q is one-hot at the argmax: accepted iff a * P[d] < 1.
      const float a = device::uniform_from_word(device::philox_word(seed, offset, kAcceptStream, pos));
      accept = a * __ldg(draft_probs + draft) < 1.0f;
    }
  } else {
    // ---- thresholds (step 7) -------------------------------------------------------------
    uint32_t threshold = kEveryKey;  // keep keys <= threshold (every in-range token)

    // Every token of the slice, or of the candidate list once one is built:
    // f(s, slice index).
    bool use_list = false;
    auto for_each_token = [&](auto f) {
      if (use_list) {
        const int count = static_cast<int>(sh.list_count);
        for (int j = tid; j < count; j += kCtaThreads) f(sh.list_s[j], sh.list_index[j]);
      } else {
        for (int g = tid; g < groups; g += kCtaThreads) {
          const float4 x = group_at(g);
#pragma unroll
          for (int q = 0; q < 4; ++q) f(at(x, q), 4 * g + q);
        }
      }
    };
    // Narrows every later pass to the tokens with keys <= limit (cluster
    // total `total`, known from a histogram) when they fit the list.
    auto compact = [&](uint32_t limit, uint32_t total) {
      if (use_list || total > static_cast<uint32_t>(kListCapacity)) return;
      if (tid == 0) sh.list_count = 0;
      __syncthreads();
      for_each_token([&](float s, int i) {
        if (key_of(s, m) <= limit) {
          const uint32_t j = atomicAdd(&sh.list_count, 1u);
          sh.list_index[j] = i;
          sh.list_s[j] = s;
        }
      });
      __syncthreads();
      use_list = true;
    };

    // One histogram round over the keys K with (K & pmask) == prefix and
    // K <= limit, digit (K >> shift) & 255; published to the cluster and summed.
    auto histogram_round = [&](uint32_t prefix, uint32_t pmask, uint32_t limit, int shift,
                               bool with_mass) {
      if (tid < kBins) {
        sh.count[buf][tid] = 0;
        sh.mass[buf][tid] = 0;
      }
      __syncthreads();
      for_each_token([&](float s, int) {
        const uint32_t key = key_of(s, m);
        if (key <= limit && (key & pmask) == prefix) {
          const uint32_t digit = (key >> shift) & 0xFFu;
          atomicAdd(&sh.count[buf][digit], 1u);
          if (with_mass) atomicAdd(&sh.mass[buf][digit], mass_of(s, m));
        }
      });
      cluster.sync();
      gather_histograms(cluster, sh, buf, with_mass);
      __syncthreads();
      buf ^= 1;
    };

    if (top_k > 0 && top_k < p.vocab) {
      uint32_t prefix = 0, pmask = 0, need = static_cast<uint32_t>(top_k);
      for (int shift = 24; shift >= 0; shift -= 8) {
        histogram_round(prefix, pmask, kEveryKey, shift, false);
        if (warp == 0) choose_by_count(sh, need);
        __syncthreads();
        if (!sh.found) break;  // fewer than k in range: every in-range token survives
        const uint32_t below = sh.count_below, digit = sh.digit, bucket = sh.bucket_count;
        if (shift == 24) compact((digit << 24) | 0xFFFFFFu, below + bucket);
        need -= below;
        prefix |= digit << shift;
        pmask |= 0xFFu << shift;
        if (shift == 0 || bucket == need) {
          threshold = prefix | ((1u << shift) - 1u);  // the whole bucket survives
          break;
        }
      }
    }
    if (top_p < 1.0f) {
      uint32_t prefix = 0, pmask = 0, p_threshold = threshold;
      unsigned long long above = 0, limit = 0;
      for (int shift = 24; shift >= 0; shift -= 8) {
        histogram_round(prefix, pmask, threshold, shift, true);
        if (shift == 24 && warp == 0) {
          // Z_k, the mass of the top-k survivors: top-p keeps A < top_p * Z_k
          // (only warp 0, which chooses the digits, needs it).
          unsigned long long zk = 0;
#pragma unroll
          for (int j = 0; j < 8; ++j) zk += sh.total_mass[lane * 8 + j];
#pragma unroll
          for (int o = 16; o > 0; o >>= 1) zk += __shfl_xor_sync(0xffffffffu, zk, o);
          limit = static_cast<unsigned long long>(
              ceil(static_cast<double>(top_p) * static_cast<double>(zk)));
        }
        if (warp == 0) choose_by_mass(sh, above, limit);
        __syncthreads();
        if (!sh.found) break;  // cannot happen: the max token has nothing above it
        const uint32_t digit = sh.digit, bucket = sh.bucket_count;
        above = sh.mass_above;
        if (shift == 24) compact(min(threshold, (digit << 24) | 0xFFFFFFu), sh.count_below + bucket);
        prefix |= digit << shift;
        pmask |= 0xFFu << shift;
        if (shift == 0 || bucket == 1) {
          p_threshold = prefix | ((1u << shift) - 1u);
          break;
        }
      }
      threshold = min(threshold, p_threshold);
    }
    // min-p: exp(s - m) >= min_p (max(p) is the token at s = m).
    auto survives = [&](float s, uint32_t key) {
      return key <= threshold && (min_p <= 0.0f || __expf(s - m) >= min_p);
    };

    // ---- race (step 8): argmin over survivors of E_t / w_t, E_t = -log(u_t) --------------
    // (= argmax of log w_t - log(-log u_t), the mirror's race).
    auto exponential = [&](uint32_t word) { return -logf(device::uniform_from_word(word)); };
    // Over q, w = exp(s - m) (any positive scaling of q races the same); the
    // max token (key E, w = 1) always survives, so every thread starts from it
    // and skips a token when a lower bound of its key, (1 - u) e^(m - s)
    // (-log u >= 1 - u), already loses: the logarithms then run for a few
    // percent of the tokens. Tokens more than 20 below the max never win.
    auto race_q = [&]() {
      const uint32_t limit = min(threshold, kRaceKeyLimit);
      Winner w{exponential(device::philox_word(seed, offset, stream, row_stats.idx)), row_stats.idx, m};
      auto consider = [&](float s, int t, uint32_t word) {
        const float d = m - s;
        const float one_minus_u = static_cast<float>((1u << 24) - 2u * (word >> 9) - 1u) * 0x1p-24f;
        if (one_minus_u * __expf(d) > w.key * 1.01f) return;  // 1 %: margin over __expf's error
        w = better(w, {exponential(word) * expf(d), t, s});
      };
      if (use_list) {
        const int count = static_cast<int>(sh.list_count);
        for (int j = tid; j < count; j += kCtaThreads) {
          const float s = sh.list_s[j];
          const uint32_t key = key_of(s, m);
          if (key <= limit && survives(s, key)) {
            const int t = begin + sh.list_index[j];
            consider(s, t, device::philox_word(seed, offset, stream, t));
          }
        }
        return w;
      }
      for (int g = tid; g < groups; g += kCtaThreads) {
        const float4 x = group_at(g);
        uint32_t keys[4];
        bool any = false;
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          keys[q] = key_of(at(x, q), m);
          any |= keys[q] <= limit;
        }
        if (!any) continue;
        const int t0 = begin + 4 * g;  // a multiple of 4: one Philox block gives its 4 words
        const uint4 words = device::philox_block(seed, offset, stream, static_cast<uint32_t>(t0) >> 2);
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const float s = at(x, q);
          if (keys[q] <= limit && survives(s, keys[q])) consider(s, t0 + q, device::word_of(words, q));
        }
      }
      return w;
    };

    Winner all;
    if (recover) {
      // Z of the survivors (fixed point), q_d, then the race over max(0, Q - P).
      if (tid == 0) {
        sh.draft_e = 0.0f;
        sh.draft_survives = 0;
      }
      __syncthreads();
      unsigned long long part = 0;
      for_each_token([&](float s, int i) {
        const uint32_t key = key_of(s, m);
        if (key != kOutOfRange && survives(s, key)) {
          part += mass_of(s, m);
          if (begin + i == draft) {
            sh.draft_e = expf(s - m);
            sh.draft_survives = 1;
          }
        }
      });
      const unsigned long long zs = cluster_allreduce(cluster, part, plus, 0ull, sh.warp_mass,
                                                      &sh.cta_mass, &sh.row_mass);
      const float inv_z = static_cast<float>(static_cast<double>(kMassScale) / static_cast<double>(zs));
      if (rank == 0 && tid == 0 && draft_valid) {  // a * P[d] < Q[d]
        const SharedState* o = cluster.map_shared_rank(&sh, draft / p.slice);
        const float q = o->draft_survives ? o->draft_e * inv_z : 0.0f;
        const float a = device::uniform_from_word(device::philox_word(seed, offset, kAcceptStream, pos));
        accept = a * __ldg(draft_probs + draft) < q;
      }
      // The race over R = max(0, q - P): key E / R (R is no scaled q, so no shortcut).
      Winner w = no_winner();
      for_each_token([&](float s, int i) {
        const uint32_t key = key_of(s, m);
        if (key != kOutOfRange && survives(s, key)) {
          const int t = begin + i;
          const float r = expf(s - m) * inv_z - __ldg(draft_probs + t);
          if (r > 0.0f) {
            w = better(w, {exponential(device::philox_word(seed, offset, stream, t)) / r, t, s});
          }
        }
      });
      all = cluster_argmax(cluster, sh, w, 0);
      // max(0, Q - P) all zero (rounding): race over Q. Cluster-uniform branch.
      if (all.key == INFINITY) all = cluster_argmax(cluster, sh, race_q(), 1);
    } else {
      all = cluster_argmax(cluster, sh, race_q(), 0);
    }
    if (all.key < INFINITY) result = all;
  }

  // ---- log Z for the logprob (cluster-uniform branch) -------------------------------------
  // Z = sum over the row of exp(s - m) in 2^-40 fixed point (<= V * 2^40 <
  // 2^64): integer partial sums, so Z has the same bits for any split.
  float log_z = 0.0f;
  if (p.logprobs_out != nullptr && !empty) {
    unsigned long long part = 0;
    for (int g = tid; g < groups; g += kCtaThreads) {
      const float4 x = group_at(g);
#pragma unroll
      for (int q = 0; q < 4; ++q) part += mass_of(at(x, q), m);
    }
    const unsigned long long zs =
        cluster_allreduce(cluster, part, plus, 0ull, sh.warp_mass, &sh.cta_mass, &sh.row_mass);
    log_z = static_cast<float>(log(static_cast<double>(zs) / static_cast<double>(kMassScale)));
  }

  // ---- outputs (rank 0, thread 0) ----------------------------------------------------------
  if (rank == 0 && tid == 0) {
    if (p.mode == Mode::kSample) {
      p.tokens_out[b] = result.idx;
      if (p.logprobs_out != nullptr) {
        p.logprobs_out[b] = result.idx >= 0 ? (result.s - m) - log_z : __int_as_float(0x7fc00000);
      }
    } else {
      p.tokens_out[rq * p.positions + pos] = result.idx;
      if (pos < k_positions && accept) atomicOr(p.accept_bits + b, 1u << pos);
    }
  }
  cluster.sync();  // no CTA leaves while another may still read its shared memory
}

}  // namespace hpc_ops::sampling
