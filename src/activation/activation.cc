// SPDX-License-Identifier: Apache-2.0
// Gated activations (SiLU / GELU-tanh and mul), plain and masked per-expert:
// validation and launch on the row-wise engine (kernels in activation_kernels.cu).
#include "hpc_ops/activation.h"

#include "activation/activation_kernels.h"
#include "rowwise/rowwise_host.h"

namespace hpc_ops {
namespace {

using detail::Checker;
using rowwise::Prologue;

constexpr std::initializer_list<Fp8Scaling> kActScalings = {
    Fp8Scaling::kNone, Fp8Scaling::kPerTensorStatic, Fp8Scaling::kPerToken,
    Fp8Scaling::kPerGroup128};

Prologue prologue_of(const Checker& check, Activation act) {
  switch (act) {
    case Activation::kSilu: return Prologue::kSiluMul;
    case Activation::kGeluTanh: return Prologue::kGeluTanhMul;
  }
  check.invalid("unknown activation ", static_cast<int>(act), "; supported: silu, gelu_tanh");
}

// x [.., 2C] with `ndim` dims; returns C.
int64_t check_act_input(const Checker& check, const Tensor& x, int ndim, const char* x_layout) {
  rowwise::check_row_tensor(check, x, "x", {DType::kBFloat16}, ndim, x_layout);
  check.dim_multiple_of(x, "x", ndim - 1, 16, "2 * C, with C a multiple of 8");
  check.aligned(x, "x", 16);
  const int64_t c = x.shape[ndim - 1] / 2;
  if (c > rowwise::kMaxCols) {
    check.unsupported("C = x.shape[", ndim - 1, "] / 2 = ", c, ", supported up to ",
                      rowwise::kMaxCols, " (a row is held in registers)");
  }
  return c;
}

// out [.., C]: layout after set_epilogue has checked its dtype.
void check_act_out(const Checker& check, const Tensor& x, const Tensor& out, int ndim,
                   const char* out_layout) {
  const int64_t c = x.shape[ndim - 1] / 2;
  rowwise::check_row_layout(check, out, "out", ndim, out_layout);
  for (int d = 0; d + 1 < ndim; ++d) check.dim(out, "out", d, x.shape[d], "as x");
  check.dim(out, "out", ndim - 1, c, "C = x.shape[-1] / 2");
  check.aligned(out, "out", rowwise::vector_bytes(out));
}

}  // namespace

void act_and_mul(Activation act, const Tensor& x, const Tensor& out, const Fp8Output& quant,
                 cudaStream_t stream) {
  const Checker check(act == Activation::kGeluTanh ? "gelu_tanh_and_mul" : "silu_and_mul");
  const Prologue prologue = prologue_of(check, act);
  const int64_t c = check_act_input(check, x, 2, "[rows, 2*C]");
  rowwise::RowwiseParams p;
  p.rows_per_batch = x.shape[0];
  p.cols = static_cast<int32_t>(c);
  p.in = rowwise::row_view(x);
  p.out = rowwise::row_view(out);
  rowwise::set_epilogue(check, quant, kActScalings, out, 0, x.shape[0], c, p);
  check_act_out(check, x, out, 2, "[rows, C]");
  rowwise::check_devices(check, x, {{&out, "out"}}, quant);
  rowwise::launch(check, rowwise::activation_kernel_table(), prologue, x.dtype, p, stream,
                  x.device.index);
}

void act_and_mul_masked(Activation act, const Tensor& x, const Tensor& row_counts,
                        const Tensor& out, const Fp8Output& quant, cudaStream_t stream) {
  const Checker check(act == Activation::kGeluTanh ? "gelu_tanh_and_mul_masked"
                                                   : "silu_and_mul_masked");
  const Prologue prologue = prologue_of(check, act);
  const int64_t c = check_act_input(check, x, 3, "[E, max_rows, 2*C]");
  check.dtype(row_counts, "row_counts", {DType::kInt32});
  check.ndim(row_counts, "row_counts", 1, "[E]");
  check.dim(row_counts, "row_counts", 0, x.shape[0], "the number of experts E, x.shape[0]");
  check.contiguous(row_counts, "row_counts");
  rowwise::RowwiseParams p;
  p.num_batches = x.shape[0];
  p.rows_per_batch = x.shape[1];
  p.cols = static_cast<int32_t>(c);
  p.batch_row_counts = static_cast<const int32_t*>(row_counts.data);
  p.in = rowwise::row_view(x);
  p.out = rowwise::row_view(out);
  rowwise::set_epilogue(check, quant, kActScalings, out, x.shape[0], x.shape[1], c, p);
  check_act_out(check, x, out, 3, "[E, max_rows, C]");
  rowwise::check_devices(check, x, {{&row_counts, "row_counts"}, {&out, "out"}}, quant);
  rowwise::launch(check, rowwise::activation_kernel_table(), prologue, x.dtype, p, stream,
                  x.device.index);
}

}  // namespace hpc_ops
