// SPDX-License-Identifier: Apache-2.0
// Checked CUDA runtime calls: a failure becomes hpc_ops::Error(kCuda) carrying
// the operator, the failed expression, the CUDA error name and its text.
// Also a device guard so a launch targets the device its tensors live on.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "hpc_ops/core/error.h"

namespace hpc_ops::detail {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* op, const char* expr) {
  throw Error(ErrorKind::kCuda, std::string("hpc_ops.") + op + ": CUDA error " +
                                    cudaGetErrorName(err) + " (" + cudaGetErrorString(err) +
                                    ") from " + expr);
}

// Makes `device` current for the scope and restores the previous device.
// Costs one cudaGetDevice when the device is already current.
class DeviceGuard {
 public:
  DeviceGuard(int device, const char* op) {
    cudaError_t err = cudaGetDevice(&previous_);
    if (err != cudaSuccess) throw_cuda_error(err, op, "cudaGetDevice");
    if (previous_ != device) {
      err = cudaSetDevice(device);
      if (err != cudaSuccess) throw_cuda_error(err, op, "cudaSetDevice");
      switched_ = true;
    }
  }
  ~DeviceGuard() {
    if (switched_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  bool switched_ = false;
};

}  // namespace hpc_ops::detail

// op: the operator name (a const char*) in scope at the call site.
#define HPC_OPS_CUDA_CHECK(op, expr)                                        \
  do {                                                                      \
    const cudaError_t hpc_ops_err_ = (expr);                                \
    if (hpc_ops_err_ != cudaSuccess) {                                      \
      ::hpc_ops::detail::throw_cuda_error(hpc_ops_err_, (op), #expr);       \
    }                                                                       \
  } while (0)
