// SPDX-License-Identifier: Apache-2.0
// What both RoPE + KV-write kernels (rope_kernel.cuh, rope_stream_kernel.cuh)
// do for one row: find where it goes (RowTarget), and for each of its heads
// normalize, rotate and store (RowWriter).
//
// A head of D elements is owned by a lane group of D / 16 lanes; each lane
// holds two 8-element chunks (16 bytes each) chosen so that both members of
// every rotation pair it touches are its own (LaneChunks), so the rotation
// needs no shuffle. Per-head reductions (the norm's sum of squares, FP8
// maxima) are full-warp shuffles within each group that every lane runs (see
// RowWriter), so the groups of a warp may be on heads of different kinds.
// NOTE: with 8 elements per lane (v5) ncu counted ~230 instructions per head
// and 16-lane group, the NeoX partner costing 8 shuffles; two chunks per lane
// took Llama-70B 1x16K from 235 to 203 us (docs/perf/rope.md v6).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include "common/bulk_copy.cuh"  // shared_address
#include "common/fp8_scale.cuh"
#include "common/reduce.cuh"
#include "common/vec.cuh"
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

// The target of `row`, owned by request b (< batch).
__device__ __forceinline__ RowTarget target_in_request(const RopeParams& p, int row, int b) {
  RowTarget t;
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

// The target of `row`, found by the whole CTA (kThreads threads): the owning
// request is the number of b in 1..B with cu_seqlens[b] <= row (cu_seqlens
// is non-decreasing from 0). Every thread of the CTA must call it.
// NOTE: one coalesced pass and one barrier instead of a binary search, whose
// log2(B) dependent loads made a B = 256 decode step 15.7 us (compile 10.0).
template <int kThreads>
__device__ __forceinline__ RowTarget locate_row_by_cta(const RopeParams& p, int row,
                                                       int* warp_counts) {
  int count = 0;
  for (int b = 1 + static_cast<int>(threadIdx.x); b <= p.batch; b += kThreads) {
    count += __ldg(p.cu_seqlens + b) <= row ? 1 : 0;
  }
  count = __reduce_add_sync(0xffffffffu, count);
  if (threadIdx.x % 32 == 0) warp_counts[threadIdx.x / 32] = count;
  __syncthreads();
  int b = 0;
#pragma unroll
  for (int w = 0; w < kThreads / 32; ++w) b += warp_counts[w];
  return b < p.batch ? target_in_request(p, row, b) : RowTarget{};
}

// The target of `row`, found by one thread (a binary search of cu_seqlens):
// for the streaming kernel, whose producer looks up 32 rows at once, one per
// lane, far ahead of their use.
__device__ __forceinline__ RowTarget locate_row_by_thread(const RopeParams& p, int row) {
  if (row >= __ldg(p.cu_seqlens + p.batch)) return RowTarget{};
  int lo = 0, hi = p.batch;  // cu_seqlens[lo] <= row < cu_seqlens[hi]
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (__ldg(p.cu_seqlens + mid) <= row) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return target_in_request(p, row, lo);
}

// Where one row's outputs start (bytes): its q_out row, its k and v cache
// slots (valid when target.write) and its q scales (nullptr without them).
struct RowDestinations {
  char* q_out = nullptr;
  char* k_slot = nullptr;
  char* v_slot = nullptr;
  float* q_scale = nullptr;
};

template <bool kFp8>
__device__ __forceinline__ RowDestinations row_destinations(const RopeParams& p, int row,
                                                            const RowTarget& t) {
  constexpr int kCacheBytes = kFp8 ? 1 : 2;
  RowDestinations d;
  d.q_out = static_cast<char*>(p.q_out) + row * p.q_out_strides[0] * (kFp8 && p.q_fp8 ? 1 : 2);
  d.q_scale = p.q_scale_out == nullptr ? nullptr : p.q_scale_out + row * p.q_scale_strides[0];
  d.k_slot = static_cast<char*>(p.k_cache) +
             (t.page * p.k_cache_strides[0] + t.slot * p.k_cache_strides[1]) * kCacheBytes;
  d.v_slot = static_cast<char*>(p.v_cache) +
             (t.page * p.v_cache_strides[0] + t.slot * p.v_cache_strides[1]) * kCacheBytes;
  return d;
}

// This lane's two chunks of a head (element offsets) and whether each is
// rotated. NeoX pairs element i with i + R/2 (i < R/2): lanes l < R/16 take
// chunks l and l + R/16, frequencies 8 l .. 8 l + 7 for both; the other lanes
// take two adjacent chunks of the unrotated tail. Interleaved pairs elements
// 2k and 2k + 1: lane l takes chunks l and l + D/16, each rotated when inside R.
struct LaneChunks {
  int off0, off1;
  bool rot0, rot1;
};

template <int kLanes>
__device__ __forceinline__ LaneChunks lane_chunks(int lane, int rotary_dim, bool interleaved) {
  LaneChunks c;
  if (interleaved) {
    c.off0 = 8 * lane;
    c.off1 = 8 * (lane + kLanes);
    c.rot0 = c.off0 < rotary_dim;
    c.rot1 = c.off1 < rotary_dim;
  } else {
    const int pair_lanes = rotary_dim / 16;
    c.rot0 = c.rot1 = lane < pair_lanes;
    c.off0 = c.rot0 ? 8 * lane : rotary_dim + 16 * (lane - pair_lanes);
    c.off1 = c.rot0 ? c.off0 + rotary_dim / 2 : c.off0 + 8;
  }
  return c;
}

// Reads 4 cos/sin values of shared memory (float32 or bf16) as floats.
template <bool kF32>
__device__ __forceinline__ void read4_shared(uint32_t address, float* v) {
  if (kF32) {
    const uint4 r = device::lds_128(address);
    v[0] = __uint_as_float(r.x), v[1] = __uint_as_float(r.y);
    v[2] = __uint_as_float(r.z), v[3] = __uint_as_float(r.w);
  } else {
    const uint2 r = device::lds_64(address);
    const float2 a = device::bf16x2_to_float2(r.x), b = device::bf16x2_to_float2(r.y);
    v[0] = a.x, v[1] = a.y, v[2] = b.x, v[3] = b.y;
  }
}

// One row's cos/sin in shared memory: the R/2 cosines, then the R/2 sines,
// as float32 (kF32) or bf16, read per head (volatile shared loads: never
// hoisted into registers across heads).
// NOTE: held in registers for the row (16 per lane) they cost the streaming
// kernel 5-15% (FP8 instantiations spilled at its 96-register bound).
// NOTE: the element type is a template parameter: as a runtime flag the
// compiler predicated both reads and the bf16 unpack into every head step
// (ncu, v9: ~24 of ~237 instructions a 4-head step at Llama-70B).
template <bool kF32>
struct RowCosSin {
  static constexpr int kElemBytes = kF32 ? 4 : 2;
  uint32_t cos = 0;  // shared-space addresses
  uint32_t sin = 0;

  __device__ __forceinline__ RowCosSin(const void* row, int rotary_dim) {
    cos = device::shared_address(row);
    sin = cos + kElemBytes * (rotary_dim / 2);
  }

  // Frequencies freq .. freq + 3.
  __device__ __forceinline__ void get4(int freq, float* c, float* s) const {
    read4_shared<kF32>(cos + kElemBytes * freq, c);
    read4_shared<kF32>(sin + kElemBytes * freq, s);
  }
};

// The QK-norm weights as float32 in shared memory, q's then k's (2 x kD):
// each CTA stages them once (NormWeightsInFlight), and every head reads
// them there.
// NOTE: read from global memory per head, with their dtype a runtime flag,
// the compiler issued the loads of both dtypes (predicated) after each
// head's reduction, and ncu put 3% of Qwen3's stall samples on them (v9).
template <int kD>
struct NormWeights {
  float w[2 * kD];
};

// This thread's share of the norm weights (entries thread, thread + kThreads,
// ... of the 2 x kD) on their way from global to shared memory: loaded into
// registers first (load), stored once the caller's other loads are issued
// (store), so their latency overlaps the row lookup.
template <int kD, int kThreads>
struct NormWeightsInFlight {
  static constexpr int kPerThread = (2 * kD + kThreads - 1) / kThreads;
  float v[kPerThread];

  // Every one of the kThreads threads calls it (no-op for a call without QK
  // norm).
  __device__ __forceinline__ void load(const RopeParams& p, int thread) {
    if (p.q_norm_weight == nullptr) return;
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) {
      const int i = thread + j * kThreads;
      if (i >= 2 * kD) break;
      const void* src = i < kD ? p.q_norm_weight : p.k_norm_weight;
      const int e = i % kD;
      v[j] = p.norm_weight_f32 ? __ldg(static_cast<const float*>(src) + e)
                               : __bfloat162float(__ldg(static_cast<const Bf16*>(src) + e));
    }
  }

  // The caller synchronizes before any read of `weights`.
  __device__ __forceinline__ void store(const RopeParams& p, int thread,
                                        NormWeights<kD>& weights) const {
    if (p.q_norm_weight == nullptr) return;
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) {
      const int i = thread + j * kThreads;
      if (i >= 2 * kD) break;
      weights.w[i] = v[j];
    }
  }
};

// 8 consecutive floats of shared memory (16-byte aligned).
__device__ __forceinline__ void lds8_floats(uint32_t address, float (&out)[8]) {
  const uint4 a = device::lds_128(address);
  const uint4 b = device::lds_128(address + 16);
  out[0] = __uint_as_float(a.x), out[1] = __uint_as_float(a.y);
  out[2] = __uint_as_float(a.z), out[3] = __uint_as_float(a.w);
  out[4] = __uint_as_float(b.x), out[5] = __uint_as_float(b.y);
  out[6] = __uint_as_float(b.z), out[7] = __uint_as_float(b.w);
}

// Per-kernel values every row uses (static FP8 scales), read once per thread.
struct KernelConstants {
  device::Fp8Divisor q;
  device::Fp8Divisor k;

  template <bool kFp8>
  __device__ __forceinline__ static KernelConstants read(const RopeParams& p) {
    KernelConstants c;
    if (kFp8) {
      if (p.q_fp8 && p.q_scale != nullptr) c.q = device::fp8_divisor(__ldg(p.q_scale));
      if (p.k_scale != nullptr) c.k = device::fp8_divisor(__ldg(p.k_scale));
    }
    return c;
  }
};

// Which heads a RowWriter::write_heads call holds: any kind (decided per
// head), only q or only k heads, or k-v pairs (two heads: a k head and the v
// head of the same index); the kinds' code alone is compiled in.
enum class HeadKind { kAny, kQ, kK, kKV };

// Writes the heads of one row: q heads (h < Hq) normalized, rotated and
// stored to q_out; k heads normalized, rotated and stored to the cache slot;
// v heads stored as they are. kFp8: an FP8 cache (then q_out may be FP8 too);
// a template parameter so the BF16 kernels carry no FP8 code.
//
// write() and write_heads() must be called by every lane of a warp together
// (`active` false for a lane group without a head this step): the per-head
// reductions (the norm's sum of squares, the FP8 maximum) are full-warp
// shuffles within each group, run whether or not the group's head needs them
// (a v head, an inactive group), so groups of one warp may hold heads of
// different kinds.
// NOTE: masked shuffles (a group's own lanes) made the compiler emit a
// divergent slow path around each, and each head's branches on its kind
// split warps at q/k/v boundaries.
template <int kD, bool kFp8, bool kCosSinF32>
struct RowWriter {
  static constexpr int kLanes = kD / 16;

  const RopeParams& p;  // the kernel's __grid_constant__ parameters
  RowTarget target;
  LaneChunks chunks;
  KernelConstants constants;
  RowCosSin<kCosSinF32> cos_sin;
  uint32_t norm_weights;  // shared-space address of the NormWeights<kD>
  int lane;
  RowDestinations dest;

  __device__ __forceinline__ RowWriter(const RopeParams& params, const RowTarget& t,
                                       const RowDestinations& d, const LaneChunks& c,
                                       const KernelConstants& k, const void* cos_sin_row,
                                       const NormWeights<kD>& weights, int lane_in_group)
      : p(params),
        target(t),
        chunks(c),
        constants(k),
        cos_sin(cos_sin_row, params.rotary_dim),
        norm_weights(device::shared_address(&weights)),
        lane(lane_in_group),
        dest(d) {}

  // Head h of the row (0 <= h < Hq + 2 Hkv when active), this lane's chunks a and b.
  __device__ __forceinline__ void write(int h, bool active, const device::Packed8<Bf16>& a,
                                        const device::Packed8<Bf16>& b) const {
    const int heads[1] = {h};
    const bool actives[1] = {active};
    const device::Packed8<Bf16> as[1] = {a}, bs[1] = {b};
    write_heads<1>(heads, actives, as, bs);
  }

  // kN heads at once (h[j], active[j], chunks a[j] and b[j]): each head's
  // arithmetic as write's, interleaved, so their dependency chains (the
  // reductions' shuffles, the shared loads) overlap; the cos/sin values are
  // read once for all of them.
  // NOTE: one head at a time, ncu put 32% of the streaming kernel's stall
  // samples on such chains (Qwen3 BF16 1x16K: short_sb, with 0.9 eligible
  // warps of 4.5 per scheduler, issue slots 45% busy); two at a time took
  // Qwen3 1x16K with dynamic FP8 scales from 173.5 to 161.2 us and BF16
  // from 175.2 to 172.9 (docs/perf/rope.md v11).
  // kKind: what the caller knows of the heads' kinds (h[j] is still the
  // head's index in the row).
  template <int kN, HeadKind kKind = HeadKind::kAny>
  __device__ __forceinline__ void write_heads(const int (&h)[kN], const bool (&active)[kN],
                                              const device::Packed8<Bf16> (&a)[kN],
                                              const device::Packed8<Bf16> (&b)[kN]) const {
    const int hq = p.num_q_heads;
    const int hkv = p.num_kv_heads;
    constexpr bool kAny = kKind == HeadKind::kAny;
    constexpr bool kPairKV = kKind == HeadKind::kKV;
    static_assert(!kPairKV || kN == 2, "a k-v pair is two heads");
    // The heads that may be q or k heads (normalized, rotated, dynamically
    // scaled): the first kQK (a k-v pair's v head is the second).
    constexpr int kQK = kPairKV ? 1 : kN;
    bool is_q[kN], is_k[kN], is_qk[kN];
#pragma unroll
    for (int j = 0; j < kN; ++j) {
      is_q[j] = kKind == HeadKind::kQ || (kAny && h[j] < hq);
      is_k[j] = kKind == HeadKind::kK || (kPairKV && j == 0) ||
                (kAny && !is_q[j] && h[j] < hq + hkv);
      is_qk[j] = is_q[j] || is_k[j];
    }
    // A row without a rotation position writes only its q: zero for a
    // padding row, NaN for a position outside the cos/sin cache (target.write
    // is false: no cache slot). The branch is the same for the whole CTA.
    // NOTE: as a select on each head's values the compiler issued 17
    // instructions a head step for it (ncu, v9).
    if (!target.position_ok) {
      const float fill = target.padding ? 0.0f : __int_as_float(0x7fffffff);
      float y[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) y[e] = fill;
#pragma unroll
      for (int j = 0; j < kN; ++j) {
        if (is_q[j]) store_q(h[j], y, y, fabsf(fill), active[j]);
      }
      return;
    }
    float x0[kN][8], x1[kN][8];
#pragma unroll
    for (int j = 0; j < kN; ++j) {
      device::unpack(a[j], x0[j]);
      device::unpack(b[j], x1[j]);
    }

    // Norm and rotation of q and k heads (the norm's sums run on every lane).
    const bool norm = p.q_norm_weight != nullptr;
    if (norm && !p.rope_then_norm) rms_norm<kN, kQK>(x0, x1, is_q, is_qk);
    rotate<kN>(x0, x1, is_qk);
    if (norm && p.rope_then_norm) rms_norm<kN, kQK>(x0, x1, is_q, is_qk);
    // Each head's max |x| for a dynamic per-(token, head) scale, on every
    // lane whenever one of the call's head kinds has one.
    float head_amax[kN];
#pragma unroll
    for (int j = 0; j < kN; ++j) head_amax[j] = 0.0f;
    bool dynamic = false;
    if constexpr (kKind == HeadKind::kQ) {
      dynamic = p.q_scale_out != nullptr;
    } else if constexpr (kKind == HeadKind::kK || kPairKV) {
      dynamic = p.k_scale_out != nullptr;
    } else if constexpr (kAny) {
      dynamic = p.q_scale_out != nullptr || p.k_scale_out != nullptr;
    }
    if (kFp8 && dynamic) {
      float amax[kQK];
#pragma unroll
      for (int j = 0; j < kQK; ++j) amax[j] = abs_max16(x0[j], x1[j]);
      device::warp_allreduce_n<kLanes>(amax, device::AbsMaxOp{});
#pragma unroll
      for (int j = 0; j < kQK; ++j) head_amax[j] = amax[j];
    }

#pragma unroll
    for (int j = 0; j < kN; ++j) {
      if (is_q[j]) {
        store_q(h[j], x0[j], x1[j], head_amax[j], active[j]);
      } else if (is_k[j]) {  // k: static per-tensor scale, or per (token, head) into k_scale_out
        const int head = h[j] - hq;
        float* scale_out = p.k_scale_out == nullptr
                               ? nullptr
                               : p.k_scale_out + target.page * p.k_scale_strides[0] +
                                     target.slot * p.k_scale_strides[1] + head * p.k_scale_strides[2];
        char* dst = dest.k_slot + head * p.k_cache_strides[2] * (kFp8 ? 1 : 2);
        store(dst, kFp8, x0[j], x1[j], constants.k, scale_out, head_amax[j],
              active[j] && target.write);
      } else {  // v as is: per-tensor or per-head static scale
        const int head = h[j] - hq - hkv;
        const bool write = active[j] && target.write;
        const device::Fp8Divisor divisor =
            kFp8 && write ? device::fp8_divisor(__ldg(p.v_scale + head * p.v_scale_stride))
                          : device::Fp8Divisor{};
        char* dst = dest.v_slot + head * p.v_cache_strides[2] * (kFp8 ? 1 : 2);
        store(dst, kFp8, x0[j], x1[j], divisor, nullptr, head_amax[j], write);
      }
    }
  }

 private:
  // Stores q head h (bf16, or e4m3 with its static or dynamic scale).
  __device__ __forceinline__ void store_q(int h, const float (&y0)[8], const float (&y1)[8],
                                          float head_amax, bool active) const {
    const bool q_fp8 = kFp8 && p.q_fp8;
    char* dst = dest.q_out + h * p.q_out_strides[1] * (q_fp8 ? 1 : 2);
    float* scale_out = dest.q_scale == nullptr ? nullptr : dest.q_scale + h * p.q_scale_strides[1];
    store(dst, q_fp8, y0, y1, constants.q, scale_out, head_amax, active);
  }

  // Stores this lane's two chunks of one head (when `write`): bf16, or e4m3
  // with a static scale or, when scale_out is given, the dynamic scale of
  // head_amax (written by the group's first lane to *scale_out): a
  // normalized head multiplied by 1 / scale, others divided by it correctly
  // rounded.
  __device__ __forceinline__ void store(char* dst, bool fp8, const float (&y0)[8],
                                        const float (&y1)[8], device::Fp8Divisor static_divisor,
                                        float* scale_out, float head_amax, bool write) const {
    if (!write) return;
    if (!kFp8 || !fp8) {
      // (plain stores, not store_packed's asm: its memory clobber kept the
      // compiler from moving the next head's loads above them)
      *reinterpret_cast<uint4*>(reinterpret_cast<Bf16*>(dst) + chunks.off0) = device::pack_bf16(y0).raw;
      *reinterpret_cast<uint4*>(reinterpret_cast<Bf16*>(dst) + chunks.off1) = device::pack_bf16(y1).raw;
      return;
    }
    auto* out = reinterpret_cast<Fp8*>(dst);
    if (scale_out != nullptr) {
      const float scale = device::dynamic_scale(head_amax);
      if (lane == 0) *scale_out = scale;
      const device::Fp8Divisor divisor = device::fp8_divisor(scale);
      if (p.q_norm_weight != nullptr) {
        // A normalized head (q and k heads are, whenever norm weights are
        // given): x * (1 / scale), not the correctly rounded quotient.
        // NOTE: the two refining FMAs an element were 32 of ~370
        // instructions a head step (Qwen3 with dynamic scales).
        device::store8_fp8_times(out + chunks.off0, y0, divisor.inv);
        device::store8_fp8_times(out + chunks.off1, y1, divisor.inv);
      } else {
        // The head's own scale covers its values: the division needs no
        // range guard (divide_rn_covered).
        device::store8_fp8<true>(out + chunks.off0, y0, divisor);
        device::store8_fp8<true>(out + chunks.off1, y1, divisor);
      }
      return;
    }
    device::store8_fp8(out + chunks.off0, y0, static_divisor);
    device::store8_fp8(out + chunks.off1, y1, static_divisor);
  }

  // x * rsqrt(mean(x^2) + eps) * w over each head j < kHeads where apply[j]
  // (the sums run on every lane), with the q or k weights (is_q[j]) of
  // NormWeights.
  template <int kN, int kHeads = kN>
  __device__ __forceinline__ void rms_norm(float (&x0)[kN][8], float (&x1)[kN][8],
                                           const bool (&is_q)[kN], const bool (&apply)[kN]) const {
    float ss[kHeads];
#pragma unroll
    for (int j = 0; j < kHeads; ++j) ss[j] = sum_squares16(x0[j], x1[j]);
    device::warp_allreduce_n<kLanes>(ss, device::SumOp{});
#pragma unroll
    for (int j = 0; j < kHeads; ++j) {
      if (!apply[j]) continue;
      const float inv_rms = rsqrtf(ss[j] * (1.0f / kD) + p.eps);
      const uint32_t weight = norm_weights + (is_q[j] ? 0 : kD * 4);
      float w[8];
      lds8_floats(weight + 4 * chunks.off0, w);
#pragma unroll
      for (int e = 0; e < 8; ++e) x0[j][e] = (x0[j][e] * inv_rms) * w[e];
      lds8_floats(weight + 4 * chunks.off1, w);
#pragma unroll
      for (int e = 0; e < 8; ++e) x1[j][e] = (x1[j][e] * inv_rms) * w[e];
    }
  }

  // The lane's parts of the per-head reductions, as trees: each head's
  // shuffles wait on them, and a warp holds too few heads at once to hide a
  // serial chain.
  // NOTE: as serial chains (16 dependent max, 8 dependent adds) ncu put 23%
  // of the stall samples of Qwen3 FP8 with dynamic scales on fixed-latency
  // dependencies ("wait") and 20% on the shuffles after them, with the issue
  // slots 62% busy; with the trees and the guard-free division together it
  // went from 180.3 to 174.1 us at 1x16K (docs/perf/rope.md v10).
  __device__ __forceinline__ static float sum_squares16(const float (&x0)[8], const float (&x1)[8]) {
    float acc[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      acc[j] = x0[j] * x0[j];
      acc[j] = fmaf(x0[j + 4], x0[j + 4], acc[j]);
      acc[j] = fmaf(x1[j], x1[j], acc[j]);
      acc[j] = fmaf(x1[j + 4], x1[j + 4], acc[j]);
    }
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
  }

  __device__ __forceinline__ static float abs_max16(const float (&x0)[8], const float (&x1)[8]) {
    const device::AbsMaxOp op;
    float m[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) m[e] = op(fabsf(x0[e]), fabsf(x1[e]));
#pragma unroll
    for (int width = 4; width > 0; width /= 2) {
#pragma unroll
      for (int e = 0; e < width; ++e) m[e] = op(m[e], m[e + width]);
    }
    return m[0];
  }

  // Rotates each head j where apply[j]; the cos/sin values are read once.
  template <int kN>
  __device__ __forceinline__ void rotate(float (&x0)[kN][8], float (&x1)[kN][8],
                                         const bool (&apply)[kN]) const {
    if constexpr (kN == 1) {
      if (!apply[0]) return;  // (a v head: no cos/sin reads)
    }
    float c[4], s[4];
    if (p.interleaved) {  // adjacent pairs, frequencies off / 2 .. off / 2 + 3 per chunk
      if (chunks.rot0) {
        cos_sin.get4(chunks.off0 / 2, c, s);
#pragma unroll
        for (int j = 0; j < kN; ++j) {
          if (apply[j]) rotate_adjacent(x0[j], c, s);
        }
      }
      if (chunks.rot1) {
        cos_sin.get4(chunks.off1 / 2, c, s);
#pragma unroll
        for (int j = 0; j < kN; ++j) {
          if (apply[j]) rotate_adjacent(x1[j], c, s);
        }
      }
      return;
    }
    if (!chunks.rot0) return;
    // x0[e] pairs with x1[e], frequency off0 + e; four at a time.
#pragma unroll
    for (int quad = 0; quad < 2; ++quad) {
      cos_sin.get4(chunks.off0 + 4 * quad, c, s);
#pragma unroll
      for (int j = 0; j < kN; ++j) {
        if (!apply[j]) continue;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const int e = 4 * quad + k;
          const float a = x0[j][e], b = x1[j][e];
          x0[j][e] = a * c[k] - b * s[k];
          x1[j][e] = b * c[k] + a * s[k];
        }
      }
    }
  }

  __device__ __forceinline__ static void rotate_adjacent(float (&x)[8], const float (&c)[4],
                                                         const float (&s)[4]) {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float a = x[2 * k], b = x[2 * k + 1];
      x[2 * k] = a * c[k] - b * s[k];
      x[2 * k + 1] = b * c[k] + a * s[k];
    }
  }
};

}  // namespace hpc_ops::rope
