// SPDX-License-Identifier: Apache-2.0
// The validation of fused add + RMSNorm, shared with the operators that end
// in it (the fused all-reduce of the comm family). Defined in norm.cc.
#pragma once

#include "common/check.h"
#include "hpc_ops/quantization.h"
#include "rowwise/rowwise_params.h"

namespace hpc_ops {

// Checks x, residual, weight, eps, out (bf16, or FP8 per quant),
// residual_out and their devices (every argument's error names `check`'s
// operator), and returns the row-wise parameters of the add + RMSNorm of x.
rowwise::RowwiseParams add_norm_params(const detail::Checker& check, const Tensor& x,
                                       const Tensor& residual, const Tensor& weight, float eps,
                                       const Tensor& out, const Tensor& residual_out,
                                       const Fp8Output& quant);

}  // namespace hpc_ops
