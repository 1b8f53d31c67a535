// SPDX-License-Identifier: Apache-2.0
// Standalone FP8 quantization: validation and launch on the row-wise engine
// (kernels in quantization_kernels.cu). Per-tensor dynamic scaling is two
// passes: zero the scale, atomically max the amax into it, then quantize with it.
#include "hpc_ops/quantization.h"

#include "common/cuda_check.h"
#include "quantization/quantization_kernels.h"
#include "rowwise/rowwise_host.h"

namespace hpc_ops {

void quantize_fp8(const Tensor& x, const Tensor& out, const Fp8Output& quant,
                  cudaStream_t stream) {
  using detail::Checker;
  using rowwise::Prologue;
  const Checker check("quantize_fp8");
  rowwise::check_row_tensor(check, x, "x", {DType::kBFloat16, DType::kFloat16, DType::kFloat32},
                            2, "[rows, cols]");
  check.dim_multiple_of(x, "x", 1, 8, "cols");
  check.dim_at_most(x, "x", 1, rowwise::kMaxCols, "a row is held in registers; reshape to more rows");
  check.aligned(x, "x", 16);
  rowwise::RowwiseParams p;
  p.rows_per_batch = x.shape[0];
  p.cols = static_cast<int32_t>(x.shape[1]);
  p.in = rowwise::row_view(x);
  p.out = rowwise::row_view(out);
  rowwise::set_epilogue(check, quant,
                        {Fp8Scaling::kPerTensorStatic, Fp8Scaling::kPerTensorDynamic,
                         Fp8Scaling::kPerToken, Fp8Scaling::kPerGroup128},
                        out, 0, x.shape[0], x.shape[1], p);
  rowwise::check_row_layout(check, out, "out", 2, "[rows, cols]");
  check.same_shape(out, "out", x, "x");
  check.aligned(out, "out", 8);
  rowwise::check_devices(check, x, {{&out, "out"}}, quant);
  const rowwise::KernelTable table = rowwise::quantization_kernel_table();
  if (quant.scaling != Fp8Scaling::kPerTensorDynamic) {
    rowwise::launch(check, table, Prologue::kIdentity, x.dtype, p, stream, x.device.index);
    return;
  }
  {
    detail::DeviceGuard guard(x.device.index, check.op());
    // An empty tensor keeps scale = 0; otherwise the amax pass raises it.
    HPC_OPS_CUDA_CHECK(check.op(), cudaMemsetAsync(p.scale_out, 0, sizeof(float), stream));
  }
  rowwise::launch(check, table, Prologue::kIdentity, x.dtype, p, stream, x.device.index);
  p.epilogue = rowwise::Epilogue::kFp8Static;
  p.static_scale = p.scale_out;
  p.scale_out = nullptr;
  rowwise::launch(check, table, Prologue::kIdentity, x.dtype, p, stream, x.device.index);
}

}  // namespace hpc_ops
