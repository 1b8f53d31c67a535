// SPDX-License-Identifier: Apache-2.0
// RMSNorm and fused residual-add + RMSNorm: validation and launch on the
// row-wise engine (kernels in norm_kernels.cu).
#include "hpc_ops/norm.h"

#include <cmath>

#include "norm/norm_args.h"
#include "norm/norm_kernels.h"
#include "rowwise/rowwise_host.h"

namespace hpc_ops {
namespace {

using detail::Checker;
using rowwise::Prologue;

constexpr std::initializer_list<Fp8Scaling> kNormScalings = {
    Fp8Scaling::kNone, Fp8Scaling::kPerTensorStatic, Fp8Scaling::kPerToken,
    Fp8Scaling::kPerGroup128};

// Checks x, weight and eps.
void check_norm_args(const Checker& check, const Tensor& x, const Tensor& weight, float eps) {
  rowwise::check_row_tensor(check, x, "x", {DType::kBFloat16}, 2, "[rows, hidden]");
  check.dim_multiple_of(x, "x", 1, 8, "the hidden size");
  check.dim_at_most(x, "x", 1, rowwise::kMaxCols, "a row is held in registers");
  check.aligned(x, "x", 16);
  const int64_t hidden = x.shape[1];
  check.dtype(weight, "weight", {DType::kBFloat16});
  check.ndim(weight, "weight", 1, "[hidden]");
  check.dim(weight, "weight", 0, hidden, "the hidden size, x.shape[1]");
  check.contiguous(weight, "weight");
  check.aligned(weight, "weight", 16);
  if (!std::isfinite(eps) || eps < 0.0f) check.invalid("eps = ", eps, ", expected a finite value >= 0");
}

// out's dtype (bf16, or fp8 with quantization) and the scale, then out's layout.
void check_norm_out(const Checker& check, const Tensor& x, const Tensor& out,
                    const Fp8Output& quant, rowwise::RowwiseParams& p) {
  rowwise::set_epilogue(check, quant, kNormScalings, out, 0, x.shape[0], x.shape[1], p);
  rowwise::check_row_layout(check, out, "out", 2, "[rows, hidden]");
  check.same_shape(out, "out", x, "x");
  check.aligned(out, "out", rowwise::vector_bytes(out));
}

rowwise::RowwiseParams base_params(const Tensor& x, const Tensor& weight, float eps,
                                   const Tensor& out) {
  rowwise::RowwiseParams p;
  p.rows_per_batch = x.shape[0];
  p.cols = static_cast<int32_t>(x.shape[1]);
  p.in = rowwise::row_view(x);
  p.out = rowwise::row_view(out);
  p.weight = weight.data;
  p.eps = eps;
  return p;
}

}  // namespace

void rms_norm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out,
              const Fp8Output& quant, cudaStream_t stream) {
  const Checker check("rms_norm");
  check_norm_args(check, x, weight, eps);
  rowwise::RowwiseParams p = base_params(x, weight, eps, out);
  check_norm_out(check, x, out, quant, p);
  rowwise::check_devices(check, x, {{&weight, "weight"}, {&out, "out"}}, quant);
  rowwise::launch(check, rowwise::norm_kernel_table(), Prologue::kRmsNorm, x.dtype, p, stream,
                  x.device.index);
}

rowwise::RowwiseParams add_norm_params(const Checker& check, const Tensor& x,
                                       const Tensor& residual, const Tensor& weight, float eps,
                                       const Tensor& out, const Tensor& residual_out,
                                       const Fp8Output& quant) {
  check_norm_args(check, x, weight, eps);
  rowwise::check_row_tensor(check, residual, "residual", {DType::kBFloat16}, 2, "[rows, hidden]");
  check.same_shape(residual, "residual", x, "x");
  check.aligned(residual, "residual", 16);
  rowwise::check_row_tensor(check, residual_out, "residual_out", {DType::kBFloat16}, 2,
                            "[rows, hidden]");
  check.same_shape(residual_out, "residual_out", x, "x");
  check.aligned(residual_out, "residual_out", 16);
  rowwise::RowwiseParams p = base_params(x, weight, eps, out);
  p.residual = rowwise::row_view(residual);
  p.residual_out = rowwise::row_view(residual_out);
  check_norm_out(check, x, out, quant, p);
  rowwise::check_devices(check, x,
                         {{&residual, "residual"}, {&weight, "weight"}, {&out, "out"},
                          {&residual_out, "residual_out"}},
                         quant);
  return p;
}

void fused_add_rms_norm(const Tensor& x, const Tensor& residual, const Tensor& weight, float eps,
                        const Tensor& out, const Tensor& residual_out, const Fp8Output& quant,
                        cudaStream_t stream) {
  const Checker check("fused_add_rms_norm");
  rowwise::RowwiseParams p = add_norm_params(check, x, residual, weight, eps, out, residual_out,
                                             quant);
  rowwise::launch(check, rowwise::norm_kernel_table(), Prologue::kAddRmsNorm, x.dtype, p, stream,
                  x.device.index);
}

}  // namespace hpc_ops
