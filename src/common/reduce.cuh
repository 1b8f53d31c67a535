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

// Max of absolute values; fmaxf drops NaN, so NaN is propagated explicitly:
// a NaN input must give a NaN scale, never a silently finite one.
struct AbsMaxOp {
  static constexpr float kIdentity = 0.0f;
  __device__ __forceinline__ float operator()(float a, float b) const {
    return (a != a || b != b) ? __int_as_float(0x7fffffff) : fmaxf(a, b);
  }
};

// All-reduce over `kLanes` consecutive lanes (kLanes a power of two <= 32).
template <int kLanes = 32, class Op>
__device__ __forceinline__ float warp_allreduce(float v, Op op) {
#pragma unroll
  for (int offset = kLanes / 2; offset > 0; offset /= 2) {
    v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
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

}  // namespace hpc_ops::device
