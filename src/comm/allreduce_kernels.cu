// SPDX-License-Identifier: Apache-2.0
// The all-reduce kernels' one instantiation each, and their launchers.
#include "comm/allreduce_kernel.cuh"
#include "comm/allreduce_kernels.h"
#include "common/launch.h"

namespace hpc_ops::comm {

cudaError_t launch_allreduce(AllReducePath path, const AllReduceParams& params, int ctas,
                             cudaStream_t stream) {
  detail::LaunchShape shape;
  shape.grid = dim3(static_cast<unsigned>(ctas));
  shape.block = dim3(kAllReduceThreads);
  switch (path) {
    case AllReducePath::kOneShot: return detail::launch_kernel(one_shot_kernel, shape, stream, params);
    case AllReducePath::kTwoShot: return detail::launch_kernel(two_shot_kernel, shape, stream, params);
    default: return cudaErrorInvalidValue;  // kNccl has no kernel here
  }
}

cudaError_t launch_fill_sentinel(void* begin, int64_t bytes, cudaStream_t stream) {
  const int64_t vecs = bytes / 16;
  const int blocks = static_cast<int>(std::min<int64_t>((vecs + 255) / 256, 1024));
  fill_sentinel_kernel<<<std::max(blocks, 1), 256, 0, stream>>>(static_cast<uint4*>(begin), vecs);
  return cudaGetLastError();
}

}  // namespace hpc_ops::comm
