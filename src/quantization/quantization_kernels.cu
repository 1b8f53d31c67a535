// SPDX-License-Identifier: Apache-2.0
// Instantiation table of the quantization family: the identity prologue on
// bf16, fp16 and fp32 input: the streaming kernel (static, per-group, amax
// pass), the bulk-copy kernel (large problems) and 5 row-resident variants
// for per-token scales (21 kernels).
#include "quantization/quantization_kernels.h"
#include "rowwise/kernel_table.cuh"

namespace hpc_ops::rowwise {

namespace {
const auto kQuantizationKernels =
    concat_tables(vec_variants<Prologue::kIdentity, __nv_bfloat16>(DType::kBFloat16),
                  vec_variants<Prologue::kIdentity, __half>(DType::kFloat16),
                  vec_variants<Prologue::kIdentity, float>(DType::kFloat32),
                  stream_variant<Prologue::kIdentity, __nv_bfloat16>(DType::kBFloat16),
                  stream_variant<Prologue::kIdentity, __half>(DType::kFloat16),
                  stream_variant<Prologue::kIdentity, float>(DType::kFloat32),
                  bulk_variant<Prologue::kIdentity, __nv_bfloat16>(DType::kBFloat16),
                  bulk_variant<Prologue::kIdentity, __half>(DType::kFloat16),
                  bulk_variant<Prologue::kIdentity, float>(DType::kFloat32));
}  // namespace

KernelTable quantization_kernel_table() {
  return {kQuantizationKernels.data(), static_cast<int>(kQuantizationKernels.size())};
}

}  // namespace hpc_ops::rowwise
