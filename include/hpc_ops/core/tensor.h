// SPDX-License-Identifier: Apache-2.0
// hpc_ops::Tensor: a non-owning view of device (or host) memory. It carries
// what validation needs (dtype, shape, strides in elements, device) and never
// allocates or frees. Framework tensors (torch, DLPack arrays) are turned into
// these views by the caller; nothing in the C++ core depends on a framework.
#pragma once

#include <cstdint>
#include <initializer_list>

#include "hpc_ops/core/dtype.h"

namespace hpc_ops {

enum class DeviceType : int32_t { kCPU = 0, kCUDA = 1 };

struct Device {
  DeviceType type = DeviceType::kCUDA;
  int index = 0;
};

struct Tensor {
  static constexpr int kMaxDims = 6;

  void* data = nullptr;
  DType dtype = DType::kFloat32;
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};  // in elements, not bytes
  Device device;

  int64_t size(int dim) const { return shape[dim < 0 ? dim + ndim : dim]; }
  int64_t stride(int dim) const { return strides[dim < 0 ? dim + ndim : dim]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
};

// A contiguous (row-major) view of `data` with the given shape, on CUDA device `device_index`.
Tensor make_tensor(void* data, DType dtype, std::initializer_list<int64_t> shape,
                   int device_index = 0);

// Same, with explicit strides (in elements).
Tensor make_tensor(void* data, DType dtype, std::initializer_list<int64_t> shape,
                   std::initializer_list<int64_t> strides, int device_index = 0);

}  // namespace hpc_ops
