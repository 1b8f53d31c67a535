// SPDX-License-Identifier: Apache-2.0
// Named CTA barriers (bar.sync with an id and a thread count): a barrier among
// some of a CTA's warps, such as the consumers of a warp-specialized kernel,
// that the other warps never wait on. Id 0 is __syncthreads' own.
#pragma once

#include <cuda_runtime.h>

namespace hpc_ops::device {

// Blocks until `threads` threads (a multiple of 32: whole warps) have arrived
// at barrier `id` (1..15); orders their shared-memory accesses as
// __syncthreads does.
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

}  // namespace hpc_ops::device
