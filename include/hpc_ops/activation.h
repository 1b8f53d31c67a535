// SPDX-License-Identifier: Apache-2.0
// Gated activations for MLP / MoE layers: out = act(gate) * up, where the input
// row holds [gate (C) | up (C)].
//
//   silu(g)      = g / (1 + exp(-g))
//   gelu_tanh(g) = 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3)))
//
// Math in float32, one rounding at the output (bfloat16, or float8_e4m3fn with
// per-tensor static, per-token or per-1x128-group scales).
#pragma once

#include <cuda_runtime_api.h>

#include "hpc_ops/core/tensor.h"
#include "hpc_ops/quantization.h"

namespace hpc_ops {

enum class Activation : int32_t { kSilu = 0, kGeluTanh = 1 };

// x [rows, 2C] bfloat16 (C a multiple of 8), out [rows, C].
void act_and_mul(Activation act, const Tensor& x, const Tensor& out, const Fp8Output& quant,
                 cudaStream_t stream);

// Masked (padded per-expert) variant: x [E, max_rows, 2C], row_counts int32 [E]
// on the device, out [E, max_rows, C]. Rows m >= row_counts[e] are neither
// computed nor written (their output and scales keep whatever they held).
// Counts above max_rows are clamped to max_rows.
void act_and_mul_masked(Activation act, const Tensor& x, const Tensor& row_counts,
                        const Tensor& out, const Fp8Output& quant, cudaStream_t stream);

}  // namespace hpc_ops
