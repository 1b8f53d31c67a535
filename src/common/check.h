// SPDX-License-Identifier: Apache-2.0
// Argument validation used by every operator before any launch. A Checker is
// bound to one operator name; each helper throws hpc_ops::Error with a message
// naming the operator, the argument, the expectation and the actual value:
//   "hpc_ops.rms_norm: x must be bfloat16, got float16"
//   "hpc_ops.rms_norm: weight.shape[0] = 4096, expected 5120 (the hidden size, x.shape[1])"
// Everything here is O(ndim) host work: no device access, no synchronization.
#pragma once

#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <string>
#include <type_traits>

#include "hpc_ops/core/error.h"
#include "hpc_ops/core/tensor.h"

namespace hpc_ops::detail {

// An optional tensor argument was given (a default Tensor{} has no data).
inline bool has(const Tensor& t) { return t.data != nullptr; }

// Whether an optional tensor was passed: an empty tensor (0 elements) may
// have no data pointer, but it has dims.
bool given(const Tensor& t);
std::string shape_string(const Tensor& t);    // "[4, 4096]"
std::string device_string(const Device& d);   // "cuda:0" / "cpu"

// Text of one message part. NOTE: plain std::string building, no iostreams:
// an ostringstream in the error path crashed inside the Python module on a
// machine whose loaded C++ runtime did not match the one it was built with.
inline std::string to_text(const std::string& s) { return s; }
inline std::string to_text(const char* s) { return s; }
inline std::string to_text(char c) { return std::string(1, c); }
inline std::string to_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}
template <class T, class = std::enable_if_t<std::is_integral_v<T>>>
std::string to_text(T v) {
  return std::to_string(v);
}

class Checker {
 public:
  explicit Checker(const char* op) : op_(op) {}
  const char* op() const { return op_; }

  // Throws Error(kind, "hpc_ops.<op>: " + concatenation of parts).
  template <class... Parts>
  [[noreturn]] void fail(ErrorKind kind, const Parts&... parts) const {
    std::string message = std::string("hpc_ops.") + op_ + ": ";
    ((message += to_text(parts)), ...);
    throw Error(kind, message);
  }
  template <class... Parts>
  [[noreturn]] void invalid(const Parts&... parts) const {
    fail(ErrorKind::kInvalidArgument, parts...);
  }
  template <class... Parts>
  [[noreturn]] void unsupported(const Parts&... parts) const {
    fail(ErrorKind::kUnsupported, parts...);
  }

  void dtype(const Tensor& t, const char* name, std::initializer_list<DType> allowed) const;
  // layout documents the dims, e.g. "[rows, hidden]".
  void ndim(const Tensor& t, const char* name, int expected, const char* layout) const;
  // what explains where the expectation comes from, e.g. "the hidden size, x.shape[1]".
  void dim(const Tensor& t, const char* name, int d, int64_t expected, const char* what) const;
  void dim_multiple_of(const Tensor& t, const char* name, int d, int64_t multiple,
                       const char* what) const;
  void dim_at_most(const Tensor& t, const char* name, int d, int64_t limit,
                   const char* why) const;
  void same_shape(const Tensor& t, const char* name, const Tensor& ref,
                  const char* ref_name) const;
  void last_dim_contiguous(const Tensor& t, const char* name) const;
  void contiguous(const Tensor& t, const char* name) const;
  // The data pointer and every stride but the last are multiples of `bytes`
  // (dims of size 1 are exempt), so rows can be read with `bytes`-wide vectors.
  void aligned(const Tensor& t, const char* name, int bytes) const;
  void non_negative_strides(const Tensor& t, const char* name) const;
  void on_cuda(const Tensor& t, const char* name) const;
  void same_device(const Tensor& t, const char* name, const Tensor& ref,
                   const char* ref_name) const;

 private:
  const char* op_;
};

}  // namespace hpc_ops::detail
