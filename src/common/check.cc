// SPDX-License-Identifier: Apache-2.0
// Validation helpers (see check.h) and make_tensor of the public core header.
#include "common/check.h"

#include <cstdio>

namespace hpc_ops {

namespace {
Tensor make_view(void* data, DType dtype, std::initializer_list<int64_t> shape, int device_index) {
  if (shape.size() > static_cast<size_t>(Tensor::kMaxDims)) {
    throw Error(ErrorKind::kInvalidArgument, "hpc_ops.make_tensor: at most 6 dims are supported");
  }
  Tensor t;
  t.data = data;
  t.dtype = dtype;
  t.ndim = static_cast<int>(shape.size());
  int i = 0;
  for (int64_t s : shape) t.shape[i++] = s;
  t.device = Device{DeviceType::kCUDA, device_index};
  return t;
}
}  // namespace

Tensor make_tensor(void* data, DType dtype, std::initializer_list<int64_t> shape,
                   int device_index) {
  Tensor t = make_view(data, dtype, shape, device_index);
  int64_t stride = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    t.strides[d] = stride;
    stride *= t.shape[d];
  }
  return t;
}

Tensor make_tensor(void* data, DType dtype, std::initializer_list<int64_t> shape,
                   std::initializer_list<int64_t> strides, int device_index) {
  if (strides.size() != shape.size()) {
    throw Error(ErrorKind::kInvalidArgument,
                "hpc_ops.make_tensor: shape and strides must have the same length");
  }
  Tensor t = make_view(data, dtype, shape, device_index);
  int i = 0;
  for (int64_t s : strides) t.strides[i++] = s;
  return t;
}

}  // namespace hpc_ops

namespace hpc_ops::detail {

bool given(const Tensor& t) { return t.data != nullptr || t.ndim > 0; }

std::string shape_string(const Tensor& t) {
  std::string s = "[";
  for (int i = 0; i < t.ndim; ++i) {
    if (i) s += ", ";
    s += std::to_string(t.shape[i]);
  }
  return s + "]";
}

std::string device_string(const Device& d) {
  if (d.type == DeviceType::kCPU) return "cpu";
  return "cuda:" + std::to_string(d.index);
}

void Checker::dtype(const Tensor& t, const char* name, std::initializer_list<DType> allowed) const {
  for (DType a : allowed) {
    if (t.dtype == a) return;
  }
  std::string list;
  for (DType a : allowed) {
    if (!list.empty()) list += ", ";
    list += dtype_name(a);
  }
  if (allowed.size() == 1) invalid(name, " must be ", list, ", got ", dtype_name(t.dtype));
  invalid(name, " must be one of {", list, "}, got ", dtype_name(t.dtype));
}

void Checker::ndim(const Tensor& t, const char* name, int expected, const char* layout) const {
  if (t.ndim != expected) {
    invalid(name, " must be ", expected, "-D ", layout, ", got ", t.ndim, "-D with shape ",
            shape_string(t));
  }
}

void Checker::dim(const Tensor& t, const char* name, int d, int64_t expected,
                  const char* what) const {
  if (t.shape[d] != expected) {
    invalid(name, ".shape[", d, "] = ", t.shape[d], ", expected ", expected, " (", what, ")");
  }
}

void Checker::dim_multiple_of(const Tensor& t, const char* name, int d, int64_t multiple,
                              const char* what) const {
  if (t.shape[d] % multiple != 0) {
    unsupported(name, ".shape[", d, "] = ", t.shape[d], ", expected a multiple of ", multiple,
                " (", what, ")");
  }
}

void Checker::dim_at_most(const Tensor& t, const char* name, int d, int64_t limit,
                          const char* why) const {
  if (t.shape[d] > limit) {
    unsupported(name, ".shape[", d, "] = ", t.shape[d], ", supported up to ", limit, " (", why,
                ")");
  }
}

void Checker::same_shape(const Tensor& t, const char* name, const Tensor& ref,
                         const char* ref_name) const {
  bool same = t.ndim == ref.ndim;
  for (int i = 0; same && i < t.ndim; ++i) same = t.shape[i] == ref.shape[i];
  if (!same) {
    invalid(name, " has shape ", shape_string(t), ", expected ", shape_string(ref), " (the shape of ",
            ref_name, ")");
  }
}

void Checker::last_dim_contiguous(const Tensor& t, const char* name) const {
  if (t.ndim > 0 && t.shape[t.ndim - 1] > 1 && t.strides[t.ndim - 1] != 1) {
    unsupported(name, ".stride(", t.ndim - 1, ") = ", t.strides[t.ndim - 1],
                ", expected 1 (the last dim must be contiguous)");
  }
}

void Checker::contiguous(const Tensor& t, const char* name) const {
  int64_t expected = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    if (t.shape[d] > 1 && t.strides[d] != expected) {
      unsupported(name, " must be contiguous: stride(", d, ") = ", t.strides[d], ", expected ",
                  expected);
    }
    expected *= t.shape[d];
  }
}

void Checker::aligned(const Tensor& t, const char* name, int bytes) const {
  const auto address = reinterpret_cast<uintptr_t>(t.data);
  if (address % bytes != 0) {
    char hex[32];
    std::snprintf(hex, sizeof(hex), "0x%llx", static_cast<unsigned long long>(address));
    unsupported(name, ".data_ptr() = ", hex, " is not ", bytes,
                "-byte aligned (rows are read and written with ", bytes,
                "-byte vectors; slice at a multiple of ", bytes / dtype_size(t.dtype),
                " elements or copy)");
  }
  for (int d = 0; d + 1 < t.ndim; ++d) {
    const int64_t stride_bytes = t.strides[d] * dtype_size(t.dtype);
    if (t.shape[d] > 1 && stride_bytes % bytes != 0) {
      unsupported(name, ".stride(", d, ") = ", t.strides[d], " elements (", stride_bytes,
                  " bytes), expected a multiple of ", bytes, " bytes");
    }
  }
}

void Checker::non_negative_strides(const Tensor& t, const char* name) const {
  for (int d = 0; d < t.ndim; ++d) {
    if (t.strides[d] < 0) {
      unsupported(name, ".stride(", d, ") = ", t.strides[d], ", expected >= 0");
    }
  }
}

void Checker::on_cuda(const Tensor& t, const char* name) const {
  if (t.device.type != DeviceType::kCUDA) {
    invalid(name, " must be on a CUDA device, got ", device_string(t.device));
  }
}

void Checker::same_device(const Tensor& t, const char* name, const Tensor& ref,
                          const char* ref_name) const {
  on_cuda(t, name);
  if (t.device.index != ref.device.index) {
    invalid(name, " is on ", device_string(t.device), " but ", ref_name, " is on ",
            device_string(ref.device), " (all tensors must be on one device)");
  }
}

}  // namespace hpc_ops::detail
