// SPDX-License-Identifier: Apache-2.0
// Instantiation table of the normalization family: RMSNorm and fused
// add + RMSNorm on bf16 input: 5 register-tile variants and the bulk-copy
// kernel each, and the looped kernel for RMSNorm (13 kernels).
#include "norm/norm_kernels.h"
#include "rowwise/kernel_table.cuh"

namespace hpc_ops::rowwise {

namespace {
const auto kNormKernels =
    concat_tables(vec_variants<Prologue::kRmsNorm, __nv_bfloat16>(DType::kBFloat16),
                  vec_variants<Prologue::kAddRmsNorm, __nv_bfloat16>(DType::kBFloat16),
                  bulk_variant<Prologue::kRmsNorm, __nv_bfloat16>(DType::kBFloat16),
                  bulk_variant<Prologue::kAddRmsNorm, __nv_bfloat16>(DType::kBFloat16),
                  looped_variant<Prologue::kRmsNorm, __nv_bfloat16>(DType::kBFloat16));
}  // namespace

KernelTable norm_kernel_table() {
  return {kNormKernels.data(), static_cast<int>(kNormKernels.size())};
}

}  // namespace hpc_ops::rowwise
