// SPDX-License-Identifier: Apache-2.0
// Names of the public enums, as error messages and the Python package spell them.
#include "hpc_ops/core/dtype.h"
#include "hpc_ops/quantization.h"

namespace hpc_ops {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kFloat32: return "float32";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
    case DType::kFloat8E4M3: return "float8_e4m3fn";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
    case DType::kUInt8: return "uint8";
    case DType::kInt8: return "int8";
    case DType::kFloat64: return "float64";
    case DType::kUnknown: return "a dtype hpc_ops does not handle";
  }
  return "unknown dtype";
}

const char* fp8_scaling_name(Fp8Scaling s) {
  switch (s) {
    case Fp8Scaling::kNone: return "none";
    case Fp8Scaling::kPerTensorStatic: return "per_tensor (static)";
    case Fp8Scaling::kPerTensorDynamic: return "per_tensor (dynamic)";
    case Fp8Scaling::kPerToken: return "per_token";
    case Fp8Scaling::kPerGroup128: return "per_group (1x128)";
  }
  return "unknown";
}

}  // namespace hpc_ops
