// SPDX-License-Identifier: Apache-2.0
// Reductions by thread scope: warp_allreduce_* (one warp, shuffles) and
// row_allreduce (the warps of one row of a CTA that may hold several rows,
// through shared memory). Fixed reduction order, so results are deterministic.
#pragma once

#include <cuda_runtime.h>

namespace hpc_ops::device {

struct SumOp {
  static constexpr float kIdentity = 0.0f;
  __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};

// Max of (already absolute) values that keeps NaN: a NaN input must give a NaN
// scale, never a silently finite one. fmaxf drops NaN; max.NaN (sm_80+) keeps
// it in one instruction (the explicit NaN test cost 3 more per element).
struct AbsMaxOp {
  static constexpr float kIdentity = 0.0f;
  __device__ __forceinline__ float operator()(float a, float b) const {
    float r;
    asm("max.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
  }
};

// All-reduce over `kLanes` consecutive lanes (kLanes a power of two <= 32,
// groups aligned to kLanes). `mask` names the lanes taking part: the whole
// warp by default, or just this thread's group when the groups of a warp may
// be on different paths (it must cover the group).
template <int kLanes = 32, class Op>
__device__ __forceinline__ float warp_allreduce(float v, Op op, unsigned mask = 0xffffffffu) {
#pragma unroll
  for (int offset = kLanes / 2; offset > 0; offset /= 2) {
    v = op(v, __shfl_xor_sync(mask, v, offset));
  }
  return v;
}

// kN such all-reduces over the whole warp at once (v[j] each), their
// shuffles of each round issued together so the chains overlap.
template <int kLanes, int kN, class Op>
__device__ __forceinline__ void warp_allreduce_n(float (&v)[kN], Op op) {
#pragma unroll
  for (int offset = kLanes / 2; offset > 0; offset /= 2) {
    float other[kN];
#pragma unroll
    for (int j = 0; j < kN; ++j) other[j] = __shfl_xor_sync(0xffffffffu, v[j], offset);
#pragma unroll
    for (int j = 0; j < kN; ++j) v[j] = op(v[j], other[j]);
  }
}

// All-reduce over the `warps_per_row` warps that hold one row. `scratch` is a
// shared array of >= (warps of the CTA) floats. Every thread of the CTA must
// call it (it contains __syncthreads), including threads of inactive rows.
template <class Op>
__device__ __forceinline__ float row_allreduce(float v, Op op, float* scratch, int warps_per_row,
                                               int row_in_cta, int warp_in_row) {
  v = warp_allreduce(v, op);
  if (warps_per_row == 1) return v;
  const int lane = threadIdx.x % 32;
  float* row_scratch = scratch + row_in_cta * warps_per_row;
  if (lane == 0) row_scratch[warp_in_row] = v;
  __syncthreads();
  float t = lane < warps_per_row ? row_scratch[lane] : Op::kIdentity;
  t = warp_allreduce(t, op);
  __syncthreads();  // scratch may be reused by the next reduction
  return t;
}

// Two all-reductions at once (e.g. a sum and a maximum) over the warps of one
// row: one round through shared memory instead of two. `scratch` holds >= 2 x
// (warps of the CTA) floats. Every thread of the CTA must call it.
template <class OpA, class OpB>
__device__ __forceinline__ void row_allreduce_pair(float& a, float& b, OpA op_a, OpB op_b,
                                                   float* scratch, int warps_per_row,
                                                   int row_in_cta, int warp_in_row) {
  a = warp_allreduce(a, op_a);
  b = warp_allreduce(b, op_b);
  if (warps_per_row == 1) return;
  const int lane = threadIdx.x % 32;
  float* row_scratch = scratch + 2 * row_in_cta * warps_per_row;
  if (lane == 0) {
    row_scratch[warp_in_row] = a;
    row_scratch[warps_per_row + warp_in_row] = b;
  }
  __syncthreads();
  a = lane < warps_per_row ? row_scratch[lane] : OpA::kIdentity;
  b = lane < warps_per_row ? row_scratch[warps_per_row + lane] : OpB::kIdentity;
  a = warp_allreduce(a, op_a);
  b = warp_allreduce(b, op_b);
  __syncthreads();  // scratch may be reused by the next reduction
}

}  // namespace hpc_ops::device
