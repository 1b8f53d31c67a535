// SPDX-License-Identifier: Apache-2.0
// Kernel launches with programmatic dependent launch (PDL) allowed, and
// optionally a cluster shape, through cudaLaunchKernelEx.
//
// With PDL the GPU schedules a kernel while the previous kernel of the stream
// finishes, so its launch and CTA start overlap that kernel's tail instead of
// following it (CUDA graphs keep the edge). Every kernel launched here calls
// device::pdl_enter() (common/pdl.cuh) before touching global memory, so the
// results are the same as with plain stream order.
// NOTE: measured on the H200 in docs/perf/norm.md (v9); HPC_OPS_PDL=0 turns
// the attribute off for comparisons.
#pragma once

#include <atomic>

#include <cuda_runtime.h>

#include <cstddef>

namespace hpc_ops::detail {

// True unless the environment sets HPC_OPS_PDL=0 (read once per process).
bool pdl_enabled();

struct LaunchShape {
  dim3 grid;
  dim3 block;
  size_t smem_bytes = 0;
  unsigned cluster_x = 0;  // CTAs per cluster along x; 0: no cluster attribute
};

// *value = what compute(value) (returning cudaError_t) finds for the current
// device, computed once per device for this call site and then remembered.
// A race may compute it twice: the queries cached here are idempotent. The
// flag is published with release order after the value, so a reader that
// sees it set also sees the value.
template <class T, class Compute>
cudaError_t cached_per_device(T* value, Compute&& compute) {
  constexpr int kMaxDevices = 64;
  static T values[kMaxDevices] = {};
  static std::atomic<bool> known[kMaxDevices] = {};
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  const bool cacheable = device >= 0 && device < kMaxDevices;
  if (cacheable && known[device].load(std::memory_order_acquire)) {
    *value = values[device];
    return cudaSuccess;
  }
  err = compute(value);
  if (err == cudaSuccess && cacheable) {
    values[device] = *value;
    known[device].store(true, std::memory_order_release);
  }
  return err;
}

// Runs set_up() (a kernel's attribute opt-ins, returning cudaError_t) once
// per device for this call site, so launches do not repeat the driver calls.
template <class SetUp>
cudaError_t once_per_device(SetUp&& set_up) {
  bool done = false;
  return cached_per_device(&done, [&](bool* d) {
    *d = true;
    return set_up();
  });
}

// Launches kernel(args...) on `stream`; returns the launch's error code.
template <class... Params, class... Args>
cudaError_t launch_kernel(void (*kernel)(Params...), const LaunchShape& shape,
                          cudaStream_t stream, const Args&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = shape.grid;
  config.blockDim = shape.block;
  config.dynamicSmemBytes = shape.smem_bytes;
  config.stream = stream;
  cudaLaunchAttribute attributes[2];
  unsigned count = 0;
  if (pdl_enabled()) {
    attributes[count].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attributes[count].val.programmaticStreamSerializationAllowed = 1;
    ++count;
  }
  if (shape.cluster_x > 0) {
    attributes[count].id = cudaLaunchAttributeClusterDimension;
    attributes[count].val.clusterDim.x = shape.cluster_x;
    attributes[count].val.clusterDim.y = 1;
    attributes[count].val.clusterDim.z = 1;
    ++count;
  }
  config.attrs = attributes;
  config.numAttrs = count;
  return cudaLaunchKernelEx(&config, kernel, args...);
}

// launch_kernel for a kernel that takes more than the default 48 KB of dynamic
// shared memory: it is first opted into kOptInBytes, once per device (the
// kernel and the opt-in are template arguments, so each pair has its own
// once-per-device flag); shape.smem_bytes may be any amount up to that.
template <auto kKernel, int kOptInBytes, class... Args>
cudaError_t launch_with_smem_opt_in(const LaunchShape& shape, cudaStream_t stream,
                                    const Args&... args) {
  const cudaError_t err = once_per_device([] {
    return cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                kOptInBytes);
  });
  if (err != cudaSuccess) return err;
  return launch_kernel(kKernel, shape, stream, args...);
}

}  // namespace hpc_ops::detail
