// SPDX-License-Identifier: Apache-2.0
// Instantiation table of the activation family: SiLU-and-mul and
// GELU(tanh)-and-mul on bf16 input: the streaming kernel (bf16, static and
// per-group FP8), the bulk-copy kernel (large problems) and 5 row-resident
// variants for per-token FP8 (14 kernels).
// The masked per-expert variants run the same kernels with row counts set.
#include "activation/activation_kernels.h"
#include "rowwise/kernel_table.cuh"

namespace hpc_ops::rowwise {

namespace {
const auto kActivationKernels =
    concat_tables(vec_variants<Prologue::kSiluMul, __nv_bfloat16>(DType::kBFloat16),
                  vec_variants<Prologue::kGeluTanhMul, __nv_bfloat16>(DType::kBFloat16),
                  stream_variant<Prologue::kSiluMul, __nv_bfloat16>(DType::kBFloat16),
                  stream_variant<Prologue::kGeluTanhMul, __nv_bfloat16>(DType::kBFloat16),
                  bulk_variant<Prologue::kSiluMul, __nv_bfloat16>(DType::kBFloat16),
                  bulk_variant<Prologue::kGeluTanhMul, __nv_bfloat16>(DType::kBFloat16));
}  // namespace

KernelTable activation_kernel_table() {
  return {kActivationKernels.data(), static_cast<int>(kActivationKernels.size())};
}

}  // namespace hpc_ops::rowwise
