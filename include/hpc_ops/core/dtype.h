// SPDX-License-Identifier: Apache-2.0
// Element types understood by hpc_ops. The numeric values are part of the ABI
// between the Python package and the C++ library: never renumber, only append.
#pragma once

#include <cstdint>

namespace hpc_ops {

enum class DType : int32_t {
  kFloat32 = 0,
  kFloat16 = 1,
  kBFloat16 = 2,
  kFloat8E4M3 = 3,  // float8_e4m3fn: finite-only, max 448
  kInt32 = 4,
  kInt64 = 5,
  kUInt8 = 6,
  kInt8 = 7,
  kFloat64 = 8,
  kUnknown = 255,  // a framework dtype hpc_ops has no code for (complex, bool, ...)
};

// Bytes per element.
constexpr int dtype_size(DType t) {
  switch (t) {
    case DType::kFloat64:
    case DType::kInt64:
      return 8;
    case DType::kFloat32:
    case DType::kInt32:
      return 4;
    case DType::kFloat16:
    case DType::kBFloat16:
      return 2;
    case DType::kFloat8E4M3:
    case DType::kUInt8:
    case DType::kInt8:
      return 1;
    case DType::kUnknown:
      return 1;
  }
  return 0;
}

// Name as PyTorch spells it, for error messages ("bfloat16", "float8_e4m3fn").
const char* dtype_name(DType t);

// Largest finite float8_e4m3fn value; dynamic FP8 scales map the absolute
// maximum of a row, group or tensor onto it.
constexpr float kFp8E4M3Max = 448.0f;

}  // namespace hpc_ops
