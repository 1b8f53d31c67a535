// SPDX-License-Identifier: Apache-2.0
// RMSNorm and fused residual-add + RMSNorm, with optional FP8 output.
//
//   y = x * rsqrt(mean(x^2) + eps) * weight          (float32 math, one rounding at the output)
//
// x [rows, hidden] bfloat16, hidden a multiple of 8 (<= 65536), any number of
// rows (0 is a no-op), row stride may exceed hidden, last dim contiguous,
// 16-byte aligned rows. weight [hidden] bfloat16. out [rows, hidden] bfloat16,
// or float8_e4m3fn when quant.scaling != kNone (per-tensor static, per-token,
// or per-1x128-group; see quantization.h).
#pragma once

#include <cuda_runtime_api.h>

#include "hpc_ops/core/tensor.h"
#include "hpc_ops/quantization.h"

namespace hpc_ops {

void rms_norm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out,
              const Fp8Output& quant, cudaStream_t stream);

// residual_out = x + residual (rounded to bfloat16), then
// out = rms_norm(residual_out). residual_out may be residual itself (in place)
// and a bfloat16 out may be x itself.
void fused_add_rms_norm(const Tensor& x, const Tensor& residual, const Tensor& weight, float eps,
                        const Tensor& out, const Tensor& residual_out, const Fp8Output& quant,
                        cudaStream_t stream);

}  // namespace hpc_ops
