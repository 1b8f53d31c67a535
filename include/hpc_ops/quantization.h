// SPDX-License-Identifier: Apache-2.0
// FP8 (float8_e4m3fn) quantization: the output description shared by every
// operator that can emit FP8 (RMSNorm, activations), and the standalone
// quantize_fp8 operator.
//
// Scales are float32 *dequantization* multipliers: real = fp8 * scale.
// Dynamic scales are max(amax, kMinAmax) / 448 over the row, 1x128 group or tensor.
#pragma once

#include <cuda_runtime_api.h>

#include <optional>

#include "hpc_ops/core/tensor.h"

namespace hpc_ops {

enum class Fp8Scaling : int32_t {
  kNone = 0,              // no quantization: the output is bfloat16
  kPerTensorStatic = 1,   // scale: input, float32 [1]
  kPerTensorDynamic = 2,  // scale: output, float32 [1] (quantize_fp8 only)
  kPerToken = 3,          // scale: output, float32 [rows, 1]
  kPerGroup128 = 4,       // scale: output, float32 [rows, ceil(cols / 128)], any strides
};

const char* fp8_scaling_name(Fp8Scaling s);

// Floor on the absolute maximum used by dynamic scales, so an all-zero row
// gets a finite, non-zero scale.
constexpr float kMinAmax = 1e-10f;

struct Fp8Output {
  Fp8Scaling scaling = Fp8Scaling::kNone;
  // kPerTensorStatic: the scale to apply (read on the device, so CUDA graphs
  // can change it between replays). Dynamic modes: where the scales are written.
  // For batched (masked) operators the per-token/per-group scale has a leading
  // batch dimension: [E, max_rows, groups].
  std::optional<Tensor> scale;
};

// Quantizes x [rows, cols] (bfloat16, float16 or float32, cols a multiple of 8,
// row stride free, last dim contiguous) into out [rows, cols] float8_e4m3fn.
// kPerTensorDynamic launches two kernels (absolute maximum, then quantize)
// after zeroing the scale; every other mode launches one.
void quantize_fp8(const Tensor& x, const Tensor& out, const Fp8Output& quant,
                  cudaStream_t stream);

}  // namespace hpc_ops
