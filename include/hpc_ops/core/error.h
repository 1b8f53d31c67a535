// SPDX-License-Identifier: Apache-2.0
// hpc_ops::Error: the one exception type of the library. Every message names
// the operator, the argument, what was expected and what was found, e.g.
//   "hpc_ops.rms_norm: x.shape[1] = 7, expected a multiple of 8 (the hidden size)".
// The Python binding maps kInvalidArgument/kUnsupported to ValueError and
// kCuda/kInternal to RuntimeError.
#pragma once

#include <stdexcept>
#include <string>

namespace hpc_ops {

enum class ErrorKind {
  kInvalidArgument,  // the caller passed something that is never valid
  kUnsupported,      // valid in general, but this build/operator does not support it
  kCuda,             // a CUDA API call or kernel launch failed
  kInternal,         // a bug in hpc_ops
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const noexcept { return kind_; }

 private:
  ErrorKind kind_;
};

}  // namespace hpc_ops
