// SPDX-License-Identifier: Apache-2.0
// Host side shared by the operators built on the row-wise engine: turning
// tensors into RowViews, validating and wiring the FP8 output, the kernel
// registry lookup and the checked launch. Never includes kernel code.
#pragma once

#include <cuda_runtime_api.h>

#include <initializer_list>
#include <utility>

#include "common/check.h"
#include "hpc_ops/quantization.h"
#include "rowwise/rowwise_config.h"
#include "rowwise/rowwise_params.h"

namespace hpc_ops::rowwise {

// vecs_per_thread values that name the streaming kernel (stream_kernel.cuh),
// the bulk-copy kernel (bulk_kernel.cuh) and the looped kernel.
constexpr int kStreamingKernel = 0;
constexpr int kBulkKernel = -1;
constexpr int kLoopedKernel = -2;  // looped_kernel.cuh

// Both geometries; each kernel reads its own.
struct LaunchConfig {
  RowwiseConfig row;
  BulkConfig bulk;
  int looped_threads = 0;  // CTA size of the looped kernel
};

// Identity of one compiled kernel.
struct KernelKey {
  Prologue prologue;
  DType in_dtype;
  int vecs_per_thread;
};

using Launcher = cudaError_t (*)(const RowwiseParams&, const LaunchConfig&, cudaStream_t);

struct KernelEntry {
  KernelKey key;
  Launcher launch;
};

// The instantiation table of one family: a pointer and a count.
struct KernelTable {
  const KernelEntry* entries;
  int size;
};

// Structure of a row tensor: dtype, rank (`layout` names the dims, e.g.
// "[rows, hidden]"), non-negative strides, contiguous last dim. Callers check
// sizes next, then alignment (so a bad size is reported as such, not as the
// misaligned stride it implies).
void check_row_tensor(const detail::Checker& check, const Tensor& t, const char* name,
                      std::initializer_list<DType> dtypes, int ndim, const char* layout);
// The same without the dtype (outputs: set_epilogue checks theirs, as it
// depends on the quantization).
void check_row_layout(const detail::Checker& check, const Tensor& t, const char* name, int ndim,
                      const char* layout);

// Vector width of a row tensor's accesses: 16 bytes, 8 for fp8 outputs.
inline int vector_bytes(const Tensor& t) { return t.dtype == DType::kFloat8E4M3 ? 8 : 16; }

// 2-D [rows, cols] -> one batch; 3-D [batches, rows, cols] -> batch stride = stride(0).
RowView row_view(const Tensor& t);

// Validates the dtype of `out` (bf16 when quant.scaling == kNone, else
// float8_e4m3fn) and quant.scale for a problem of `batches` x `rows` x `cols`
// (batches == 0 means 2-D tensors; the caller checks out's shape), then fills
// the epilogue fields of p. `allowed` lists the scalings the operator supports.
void set_epilogue(const detail::Checker& check, const Fp8Output& quant,
                  std::initializer_list<Fp8Scaling> allowed, const Tensor& out, int64_t batches, int64_t rows, int64_t cols,
                  RowwiseParams& p);

// x on a CUDA device, and every other tensor (and quant.scale) on the same one.
// Checked last, so every other error is reported the same way for host tensors.
void check_devices(const detail::Checker& check, const Tensor& x,
                   std::initializer_list<std::pair<const Tensor*, const char*>> others,
                   const Fp8Output& quant);

// Chooses the kernel and its geometry, finds it in `table`, launches on
// `stream` and checks the launch. p.num_batches/rows_per_batch/cols must be set.
// Rows needing a statistic (RMSNorm, per-token scales) run on the register
// kernel, or on the bulk-copy kernel when wider than 16384 columns; large
// plain RMSNorm problems (bf16 or static FP8 out) on the looped kernel; the
// other outputs on the streaming kernel.
void launch(const detail::Checker& check, const KernelTable& table, Prologue prologue,
            DType in_dtype, RowwiseParams& p, cudaStream_t stream, int device);

}  // namespace hpc_ops::rowwise
