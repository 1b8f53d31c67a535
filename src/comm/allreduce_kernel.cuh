// SPDX-License-Identifier: Apache-2.0
// The peer-memory all-reduce kernels: one-shot and two-shot, synchronized
// through the data itself (comm.h). Each writes the bf16 sum of every rank's
// x into this rank's staging buffer; the norm kernel reads it from there.
//
// A thread owns 16-byte vectors v = first, first + stride, ... in every phase.
// Pushes are plain 16-byte stores into the peers' memory (NVLink); a wait is a
// volatile 16-byte load of local memory repeated until none of its 8 elements
// is the sentinel; a consumed vector gets the sentinel back right away.
// Why no separate flags: a push and its flag would cross NVLink in order only
// with a fence between them (a system-scope fence per call and CTA); the data
// as its own flag needs none, and the reader sees each vector as it lands.
//
// Every CTA of every rank must be resident at once (a CTA may wait for a
// vector that any CTA of another rank pushes): the host caps the grid at one
// CTA per multiprocessor (kAllReduceThreads threads, far under the SM's limit).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "comm/allreduce_config.h"
#include "comm/allreduce_params.h"
#include "common/pdl.cuh"
#include "common/vec.cuh"

namespace hpc_ops::comm {

// Two bf16 -0.0: the value of an element no rank has written yet.
constexpr uint32_t kSentinelPair = 0x80008000u;
// What a vector reads as after a timeout: bf16 NaN in every element.
constexpr uint32_t kNanPair = 0x7fc07fc0u;

__device__ __forceinline__ uint4 load_volatile(const void* p) {
  uint4 v;
  asm volatile("ld.volatile.global.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(__cvta_generic_to_global(p))
               : "memory");
  return v;
}

__device__ __forceinline__ void store_vector(void* p, uint4 v) {
  asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(__cvta_generic_to_global(p)),
               "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
               : "memory");
}

__device__ __forceinline__ bool has_sentinel(uint4 v) {
  return (__vcmpeq2(v.x, kSentinelPair) | __vcmpeq2(v.y, kSentinelPair) |
          __vcmpeq2(v.z, kSentinelPair) | __vcmpeq2(v.w, kSentinelPair)) != 0;
}

// -0.0 -> +0.0 in each element (the sum is unchanged), so data never reads as the sentinel.
__device__ __forceinline__ uint4 without_sentinel(uint4 v) {
  v.x &= ~__vcmpeq2(v.x, kSentinelPair);
  v.y &= ~__vcmpeq2(v.y, kSentinelPair);
  v.z &= ~__vcmpeq2(v.z, kSentinelPair);
  v.w &= ~__vcmpeq2(v.w, kSentinelPair);
  return v;
}

__device__ __forceinline__ uint4 sentinel_vector() {
  return make_uint4(kSentinelPair, kSentinelPair, kSentinelPair, kSentinelPair);
}

__device__ __forceinline__ uint64_t global_timer_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// The vector at `addr` (local memory) once a peer has written all of it.
// With a timeout, gives up after p.timeout_ns (or at once when another thread
// already has), records the first failure in the control words and returns
// NaN. from_rank < 0: the two-shot owner of vector `vec`.
__device__ __noinline__ uint4 wait_slow(const AllReduceParams& p, const void* addr, int from_rank,
                                        int64_t vec) {
  volatile uint32_t* error = p.control + kErrorWord;
  const uint64_t start = p.timeout_ns != 0 ? global_timer_ns() : 0;
  while (true) {
    const uint4 v = load_volatile(addr);
    if (!has_sentinel(v)) return v;
    if (p.timeout_ns != 0 && (*error != 0 || global_timer_ns() - start > p.timeout_ns)) {
      if (atomicCAS(p.control + kErrorWord, 0u, 1u) == 0u) {
        if (from_rank < 0) from_rank = static_cast<int>(p.chunk_div.div(static_cast<uint32_t>(vec)));
        p.control[kErrorPeerWord] = static_cast<uint32_t>(from_rank);
        p.control[kErrorVectorWord] = static_cast<uint32_t>(vec);
      }
      return make_uint4(kNanPair, kNanPair, kNanPair, kNanPair);
    }
  }
}

__device__ __forceinline__ uint4 load_x(const AllReduceParams& p, int64_t v) {
  uint32_t row, col;
  p.vecs_per_row.divmod(static_cast<uint32_t>(v), row, col);
  const auto* x = static_cast<const __nv_bfloat16*>(p.x) + row * p.x_row_stride + col * kVecElems;
  return without_sentinel(*reinterpret_cast<const uint4*>(x));
}

__device__ __forceinline__ void accumulate(float (&acc)[8], uint4 v) {
  float f[8];
  device::unpack(device::Packed8<__nv_bfloat16>{v}, f);
#pragma unroll
  for (int e = 0; e < 8; ++e) acc[e] += f[e];
}

// What a call's kernel works with: which of the two buffers this call uses
// (byte offset from any rank's base), the epoch that chose it, this rank's
// slot in it, and the thread's grid-stride walk over the vectors.
struct CallState {
  uint32_t epoch;
  int64_t buffer, my_slot, first, stride;
};

// Waits for the previous kernel, then reads the epoch.
__device__ __forceinline__ CallState enter_call(const AllReduceParams& p) {
  device::pdl_wait_for_previous();
  // Lets the norm kernel become resident while the data moves; off for ranks
  // sharing one GPU, where its CTAs could take the SMs another rank's
  // all-reduce still needs.
  if (p.allow_next) device::pdl_allow_next();
  CallState call;
  call.epoch = *reinterpret_cast<volatile uint32_t*>(p.control + kEpochWord);
  call.buffer = p.buffers_offset + static_cast<int64_t>(call.epoch & 1u) * p.buffer_bytes;
  call.my_slot = call.buffer + p.rank * p.slot_bytes;
  call.first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  call.stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  return call;
}

// The last CTA to finish advances the epoch, so the next call (which waits
// for this grid's completion) uses the other buffer. Two suffice: a peer
// writes into this rank's buffer b again only in call i + 2, which it starts
// after receiving this rank's pushes of call i + 1, which this rank makes
// only after its call i, and with it every read and reset of buffer b, is
// complete.
__device__ __forceinline__ void finish_call(const AllReduceParams& p, uint32_t epoch) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    if (atomicAdd(p.control + kArrivalWord, 1u) == gridDim.x - 1) {
      p.control[kArrivalWord] = 0;
      *reinterpret_cast<volatile uint32_t*>(p.control + kEpochWord) = epoch + 1;
    }
  }
}

// This thread's vectors v = first, first + stride, ... below p.vecs, kUnroll
// at a time: load(v) for all of them (their loads in flight together), then
// use(v, loaded value) for each.
// NOTE: one vector per loop step left a thread one round trip per vector:
// one rank on one GPU, 512 x 7168 one-shot, the call took 20.25 us (the norm
// alone 6.3); with 4 per step and every rank's slot loaded at once
// (sum_ranks) 17.70 us (docs/perf/allreduce.md).
constexpr int kUnroll = 4;

template <class Load, class Use>
__device__ __forceinline__ void for_each_vector(const AllReduceParams& p, int64_t first,
                                                int64_t stride, Load load, Use use) {
  for (int64_t base = first; base < p.vecs; base += kUnroll * stride) {
    uint4 value[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t v = base + u * stride;
      if (v < p.vecs) value[u] = load(v);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t v = base + u * stride;
      if (v < p.vecs) use(v, value[u]);
    }
  }
}

// The float32 sum in rank order of the vectors at slot(r) for every rank r
// (own(): this rank's, when it is not in a slot), each slot reset to the
// sentinel once read. Every rank's load is issued before the first is
// checked, so a vector costs one round trip however many ranks there are.
template <class Slot, class Own>
__device__ __forceinline__ device::Packed8<__nv_bfloat16> sum_ranks(const AllReduceParams& p,
                                                                    int64_t vec, Slot slot,
                                                                    Own own) {
  uint4 value[kMaxTpWorld];
#pragma unroll
  for (int r = 0; r < kMaxTpWorld; ++r) {
    if (r < p.world) value[r] = slot(r) == nullptr ? own() : load_volatile(slot(r));
  }
  float acc[8] = {};
#pragma unroll
  for (int r = 0; r < kMaxTpWorld; ++r) {
    if (r >= p.world) continue;
    uint8_t* at = slot(r);
    if (at != nullptr) {
      if (has_sentinel(value[r])) value[r] = wait_slow(p, at, r, vec);
      store_vector(at, sentinel_vector());
    }
    accumulate(acc, value[r]);
  }
  return device::pack_bf16(acc);
}

// One-shot: push x to every peer's slot for this rank, then sum every rank's
// copy in rank order (this rank's from x) into the staging buffer.
__global__ void __launch_bounds__(kAllReduceThreads) one_shot_kernel(
    const __grid_constant__ AllReduceParams p) {
  const CallState call = enter_call(p);
  const int64_t buffer = call.buffer, first = call.first, stride = call.stride;
  const auto x_vector = [&](int64_t v) { return load_x(p, v); };
  for_each_vector(p, first, stride, x_vector, [&](int64_t v, uint4 value) {
    for (int r = 0; r < p.world; ++r) {
      if (r != p.rank) store_vector(p.peer_base[r] + call.my_slot + v * 16, value);
    }
  });
  uint8_t* local = p.peer_base[p.rank] + buffer;
  for (int64_t v = first; v < p.vecs; v += stride) {
    const auto sum = sum_ranks(
        p, v,
        [&](int r) -> uint8_t* { return r == p.rank ? nullptr : local + r * p.slot_bytes + v * 16; },
        [&] { return load_x(p, v); });
    device::store_packed(static_cast<__nv_bfloat16*>(p.sum) + v * kVecElems, sum);
  }
  finish_call(p, call.epoch);
}

// Two-shot: vector v belongs to rank v / chunk_vecs. (1) push each vector of
// x to its owner's slot for this rank; (2) sum this rank's chunk over the
// slots in rank order and push the bf16 sum into every rank's gather region;
// (3) wait for the whole gather region and copy it to the staging buffer.
__global__ void __launch_bounds__(kAllReduceThreads) two_shot_kernel(
    const __grid_constant__ AllReduceParams p) {
  const CallState call = enter_call(p);
  const int64_t buffer = call.buffer, first = call.first, stride = call.stride;
  const auto x_vector = [&](int64_t v) { return load_x(p, v); };
  for_each_vector(p, first, stride, x_vector, [&](int64_t v, uint4 value) {
    uint32_t owner, in_chunk;
    p.chunk_div.divmod(static_cast<uint32_t>(v), owner, in_chunk);
    store_vector(p.peer_base[owner] + call.my_slot + int64_t{in_chunk} * 16, value);
  });
  uint8_t* local = p.peer_base[p.rank] + buffer;
  const int64_t chunk_begin = p.rank * p.chunk_vecs;
  const int64_t chunk_end = min(chunk_begin + p.chunk_vecs, p.vecs);
  for (int64_t v = chunk_begin + first; v < chunk_end; v += stride) {
    const auto sum = sum_ranks(
        p, v,
        [&](int r) -> uint8_t* { return local + r * p.slot_bytes + (v - chunk_begin) * 16; },
        [] { return uint4{}; });
    const uint4 bits = without_sentinel(sum.raw);
    for (int r = 0; r < p.world; ++r) {
      store_vector(p.peer_base[r] + buffer + p.gather_offset + v * 16, bits);
    }
  }
  uint8_t* gathered = local + p.gather_offset;
  for_each_vector(
      p, first, stride, [&](int64_t v) { return load_volatile(gathered + v * 16); },
      [&](int64_t v, uint4 sum) {
        if (has_sentinel(sum)) sum = wait_slow(p, gathered + v * 16, -1, v);
        store_vector(gathered + v * 16, sentinel_vector());
        store_vector(static_cast<__nv_bfloat16*>(p.sum) + v * kVecElems, sum);
      });
  finish_call(p, call.epoch);
}

// Set-up: the sentinel in each of the `vecs` 16-byte vectors at `begin`.
__global__ void fill_sentinel_kernel(uint4* begin, int64_t vecs) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < vecs;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    begin[i] = sentinel_vector();
  }
}

}  // namespace hpc_ops::comm
