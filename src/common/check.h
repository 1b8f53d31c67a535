// SPDX-License-Identifier: Apache-2.0
// Argument validation used by every operator before any launch. A Checker is
// bound to one operator name; each helper throws hpc_ops::Error with a message
// naming the operator, the argument, the expectation and the actual value:
//   "hpc_ops.rms_norm: x must be bfloat16, got float16"
//   "hpc_ops.rms_norm: weight.shape[0] = 4096, expected 5120 (the hidden size, x.shape[1])"
// Everything here is O(ndim) host work: no device access, no synchronization.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <sstream>
#include <string>

#include "hpc_ops/core/error.h"
#include "hpc_ops/core/tensor.h"

namespace hpc_ops::detail {

std::string shape_string(const Tensor& t);    // "[4, 4096]"
std::string device_string(const Device& d);   // "cuda:0" / "cpu"

class Checker {
 public:
  explicit Checker(const char* op) : op_(op) {}
  const char* op() const { return op_; }

  // Throws Error(kind, "hpc_ops.<op>: " + concatenation of parts).
  template <class... Parts>
  [[noreturn]] void fail(ErrorKind kind, const Parts&... parts) const {
    std::ostringstream os;
    os << "hpc_ops." << op_ << ": ";
    (os << ... << parts);
    throw Error(kind, os.str());
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
