// SPDX-License-Identifier: Apache-2.0
// Programmatic dependent launch (PDL), device side. A kernel launched with
// the programmatic-serialization attribute (detail::launch_kernel) may be
// scheduled while the previous kernel in the stream still runs: it must call
// pdl_wait_for_previous() before its first global-memory access, and it lets
// the next kernel start early with pdl_allow_next(). Without the attribute
// both are no-ops. What is allowed before the wait: work on shared memory and
// registers alone (e.g. setting up mbarriers), and an L2 prefetch
// (device::prefetch_l2_bulk, common/bulk_copy.cuh) of data such as a layer's weight: it moves
// nothing into the SM, so loads after the wait still see every earlier write.
#pragma once

namespace hpc_ops::device {

// Blocks until every earlier grid of the stream has completed and its memory
// operations are visible to this grid.
__device__ __forceinline__ void pdl_wait_for_previous() {
  asm volatile("griddepcontrol.wait;" ::: "memory");
}

// The next grid may be scheduled once every CTA of this grid has called this
// (or exited); it still waits for this grid's completion before reading.
__device__ __forceinline__ void pdl_allow_next() {
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}

// The prologue of every kernel launched through detail::launch_kernel:
// wait for the previous grid, then let the next one be scheduled. Calling
// pdl_allow_next at the start costs nothing in a multi-wave grid: the next
// grid is scheduled only once the last wave's CTAs have started, so its CTAs
// take the SM slots this grid's tail leaves free.
__device__ __forceinline__ void pdl_enter() {
  pdl_wait_for_previous();
  pdl_allow_next();
}

}  // namespace hpc_ops::device
