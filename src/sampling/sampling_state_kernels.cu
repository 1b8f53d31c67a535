// SPDX-License-Identifier: Apache-2.0
// Small kernels around the sampler: the seen-mask / token-count updates after
// a step, and the last step of speculative verification.
#include "common/cuda_check.h"
#include "common/launch.h"
#include "common/pdl.cuh"
#include "sampling/sampling_kernels.h"

namespace hpc_ops::sampling {
namespace {

constexpr int kStateThreads = 256;

// Marks token t in a row of the seen bitmask.
struct SetSeenBit {
  __device__ void operator()(int32_t* row, int32_t t) const {
    atomicOr(reinterpret_cast<uint32_t*>(row) + (t >> 5), 1u << (t & 31));
  }
};

// Counts token t in a row of the counts.
struct CountToken {
  __device__ void operator()(int32_t* row, int32_t t) const { atomicAdd(row + t, 1); }
};

// One thread per (row, j) of tokens [rows, per_row]; entries < 0 skipped.
template <class Update>
__global__ void update_state_kernel(int32_t* state, int64_t state_stride, const int32_t* tokens,
                                    int64_t row_stride, int64_t col_stride, int rows,
                                    int per_row) {
  device::pdl_enter();  // first: earlier kernels may still run (common/pdl.cuh)
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(rows) * per_row) return;
  const int64_t r = i / per_row, c = i - r * per_row;
  const int32_t t = tokens[r * row_stride + c * col_stride];
  if (t >= 0) Update{}(state + r * state_stride, t);
}

__global__ void spec_finalize_kernel(int32_t* accepted, int32_t* tokens, const int32_t* drafts,
                                     int64_t drafts_stride, int batch, int k) {
  device::pdl_enter();  // first: earlier kernels may still run (common/pdl.cuh)
  const int b = blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= batch) return;
  const uint32_t bits = static_cast<uint32_t>(accepted[b]);
  const int n = min(k, __ffs(~bits) - 1);  // leading run of accepted positions
  int32_t* row = tokens + static_cast<int64_t>(b) * (k + 1);
  for (int j = 0; j <= k; ++j) {
    if (j < n) {
      row[j] = drafts[static_cast<int64_t>(b) * drafts_stride + j];
    } else if (j > n) {
      row[j] = -1;
    }  // j == n: the recovered / bonus token the sampler wrote there
  }
  accepted[b] = n;
}

detail::LaunchShape shape_for(int64_t n) {
  detail::LaunchShape shape;
  shape.grid = dim3(static_cast<unsigned>((n + kStateThreads - 1) / kStateThreads));
  shape.block = dim3(kStateThreads);
  return shape;
}

}  // namespace

void launch_spec_finalize(int32_t* accepted, int32_t* tokens, const int32_t* drafts,
                          int64_t drafts_stride, int batch, int k, const char* op,
                          cudaStream_t stream) {
  if (batch == 0) return;
  HPC_OPS_CUDA_CHECK(op, detail::launch_kernel(spec_finalize_kernel, shape_for(batch), stream,
                                                accepted, tokens, drafts, drafts_stride, batch, k));
}

void launch_state_update(StateUpdate kind, int32_t* state, int64_t state_stride,
                         const int32_t* tokens, int64_t token_row_stride,
                         int64_t token_col_stride, int rows, int per_row, const char* op,
                         cudaStream_t stream) {
  const int64_t n = static_cast<int64_t>(rows) * per_row;
  if (n == 0) return;
  auto kernel = kind == StateUpdate::kSeenMask ? update_state_kernel<SetSeenBit>
                                               : update_state_kernel<CountToken>;
  HPC_OPS_CUDA_CHECK(op, detail::launch_kernel(kernel, shape_for(n), stream, state, state_stride,
                                                tokens, token_row_stride, token_col_stride, rows,
                                                per_row));
}

}  // namespace hpc_ops::sampling
