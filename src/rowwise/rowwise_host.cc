// SPDX-License-Identifier: Apache-2.0
// Host side of the row-wise engine: FP8 output validation, kernel lookup and
// the checked launch (see rowwise_host.h).
#include "rowwise/rowwise_host.h"

#include <string>

#include "common/cuda_check.h"
#include "common/device_info.h"
#include "common/env.h"

namespace hpc_ops::rowwise {
namespace {

std::string scaling_list(std::initializer_list<Fp8Scaling> allowed) {
  std::string s;
  for (Fp8Scaling a : allowed) {
    if (!s.empty()) s += ", ";
    s += fp8_scaling_name(a);
  }
  return s;
}

// Tuning switches (common/env.h), read once per process.
using detail::env_int;
// HPC_OPS_ROWWISE_VECS=N forces N vectors per thread.
int forced_vecs() {
  static const int forced = env_int("HPC_OPS_ROWWISE_VECS", 0);
  return forced;
}
// HPC_OPS_ROWWISE_PERSISTENT=0 launches one CTA per row tile.
bool persistent_grid() {
  static const bool persistent = env_int("HPC_OPS_ROWWISE_PERSISTENT", 1) != 0;
  return persistent;
}
// HPC_OPS_ROWWISE_BULK=0 never uses the bulk-copy kernel, =1 uses it whenever
// it fits (the tests' second pass); unset: the default rule in launch().
int bulk_mode() {
  static const int mode = env_int("HPC_OPS_ROWWISE_BULK", -1);
  return mode;
}
// HPC_OPS_BULK_CTAS=N forces N bulk-copy CTAs per SM.
int forced_bulk_ctas() {
  static const int forced = env_int("HPC_OPS_BULK_CTAS", 0);
  return forced;
}

// HPC_OPS_ROWWISE_LOOPED=0 never uses the looped kernel, =1 uses it whenever
// it applies (the tests' third pass); unset: the default rule in launch().
int looped_mode() {
  static const int mode = env_int("HPC_OPS_ROWWISE_LOOPED", -1);
  return mode;
}

// HPC_OPS_ROWWISE_PREFETCH_WEIGHT=0 skips the norms' early L2 prefetch of the
// weight (rowwise_enter in rowwise_kernel.cuh).
bool prefetch_weight() {
  static const bool on = env_int("HPC_OPS_ROWWISE_PREFETCH_WEIGHT", 1) != 0;
  return on;
}

}  // namespace

void check_row_tensor(const detail::Checker& check, const Tensor& t, const char* name,
                      std::initializer_list<DType> dtypes, int ndim, const char* layout) {
  check.dtype(t, name, dtypes);
  check_row_layout(check, t, name, ndim, layout);
}

void check_row_layout(const detail::Checker& check, const Tensor& t, const char* name, int ndim,
                      const char* layout) {
  check.ndim(t, name, ndim, layout);
  check.non_negative_strides(t, name);
  check.last_dim_contiguous(t, name);
}

RowView row_view(const Tensor& t) {
  RowView v;
  v.ptr = t.data;
  if (t.ndim == 3) {
    v.batch_stride = t.strides[0];
    v.row_stride = t.strides[1];
  } else {
    v.row_stride = t.strides[0];
  }
  return v;
}

void set_epilogue(const detail::Checker& check, const Fp8Output& quant,
                  std::initializer_list<Fp8Scaling> allowed, const Tensor& out, int64_t batches, int64_t rows, int64_t cols,
                  RowwiseParams& p) {
  bool ok = false;
  for (Fp8Scaling a : allowed) ok = ok || a == quant.scaling;
  if (!ok) {
    check.unsupported("quantization ", fp8_scaling_name(quant.scaling),
                      " is not supported here; supported: ", scaling_list(allowed));
  }
  if (quant.scaling == Fp8Scaling::kNone) {
    check.dtype(out, "out", {DType::kBFloat16});
    if (quant.scale.has_value()) {
      check.invalid("a scale tensor was given but no FP8 quantization was requested");
    }
    p.epilogue = Epilogue::kStoreBf16;
    return;
  }
  check.dtype(out, "out", {DType::kFloat8E4M3});
  if (!quant.scale.has_value()) {
    check.invalid("quantization ", fp8_scaling_name(quant.scaling), " needs a scale tensor (",
                  quant.scaling == Fp8Scaling::kPerTensorStatic ? "input" : "output", ")");
  }
  const Tensor& scale = *quant.scale;
  check.dtype(scale, "scale", {DType::kFloat32});
  check.non_negative_strides(scale, "scale");
  switch (quant.scaling) {
    case Fp8Scaling::kPerTensorStatic:
    case Fp8Scaling::kPerTensorDynamic:
      if (scale.numel() != 1) {
        check.invalid("scale must hold exactly 1 element for per-tensor quantization, got shape ",
                      detail::shape_string(scale));
      }
      if (quant.scaling == Fp8Scaling::kPerTensorStatic) {
        p.epilogue = Epilogue::kFp8Static;
        p.static_scale = static_cast<const float*>(scale.data);
      } else {
        p.epilogue = Epilogue::kAmaxOnly;
        p.scale_out = static_cast<float*>(scale.data);
      }
      break;
    case Fp8Scaling::kPerToken:
    case Fp8Scaling::kPerGroup128: {
      const int64_t groups = quant.scaling == Fp8Scaling::kPerToken ? 1 : (cols + 127) / 128;
      const char* layout = quant.scaling == Fp8Scaling::kPerToken
                               ? (batches ? "[E, max_rows, 1]" : "[rows, 1]")
                               : (batches ? "[E, max_rows, ceil(C / 128)]"
                                          : "[rows, ceil(cols / 128)]");
      const int base = batches ? 1 : 0;
      check.ndim(scale, "scale", base + 2, layout);
      if (batches) check.dim(scale, "scale", 0, batches, "the number of batches (experts)");
      check.dim(scale, "scale", base, rows, "the number of rows");
      check.dim(scale, "scale", base + 1, groups,
                quant.scaling == Fp8Scaling::kPerToken ? "one scale per row"
                                                       : "one scale per 128 columns, rounded up");
      p.epilogue = quant.scaling == Fp8Scaling::kPerToken ? Epilogue::kFp8PerToken
                                                          : Epilogue::kFp8PerGroup;
      p.scale_out = static_cast<float*>(scale.data);
      p.scale_batch_stride = batches ? scale.strides[0] : 0;
      p.scale_row_stride = scale.strides[base];
      p.scale_group_stride = scale.strides[base + 1];
      break;
    }
    case Fp8Scaling::kNone:
      break;
  }
}

void check_devices(const detail::Checker& check, const Tensor& x,
                   std::initializer_list<std::pair<const Tensor*, const char*>> others,
                   const Fp8Output& quant) {
  check.on_cuda(x, "x");
  for (const auto& [tensor, name] : others) check.same_device(*tensor, name, x, "x");
  if (quant.scale.has_value()) check.same_device(*quant.scale, "scale", x, "x");
}

void launch(const detail::Checker& check, const KernelTable& table, Prologue prologue,
            DType in_dtype, RowwiseParams& p, cudaStream_t stream, int device) {
  const int64_t total_rows = p.num_batches * p.rows_per_batch;
  if (total_rows == 0 || p.cols == 0) return;
  detail::DeviceGuard guard(device, check.op());
  const bool norm = prologue == Prologue::kRmsNorm || prologue == Prologue::kAddRmsNorm;
  const int inputs = prologue == Prologue::kRmsNorm || prologue == Prologue::kIdentity ? 1 : 2;
  const int sms = detail::multiprocessor_count(check.op(), device);
  LaunchConfig config;
  config.row = choose_rowwise_config(p.cols, total_rows, sms, inputs, forced_vecs());
  config.row.persistent = persistent_grid();
  // Work items (rows x 1x128 groups at most) index with 32-bit FastDivmod.
  const int64_t groups_per_row = (p.cols + 127) / 128;
  if (total_rows > kMaxFastDividend / groups_per_row) {
    check.unsupported("too many rows (", total_rows, ") for one launch; at most ",
                      kMaxFastDividend / groups_per_row, " at ", p.cols, " columns");
  }
  p.rows_per_batch_div = FastDivmod(static_cast<uint32_t>(p.rows_per_batch));
  p.prefetch_weight = prefetch_weight() ? 1 : 0;
  p.num_tiles = static_cast<int32_t>(config.row.grid);
  p.warps_per_row = config.row.threads_per_row / 32;
  p.rows_per_cta = config.row.rows_per_cta;
  // Row statistics (RMSNorm, per-token scales) need whole rows per work item.
  const bool whole_row = norm || p.epilogue == Epilogue::kFp8PerToken;
  config.bulk = choose_bulk_config(p.cols, total_rows, sms, dtype_size(in_dtype), inputs,
                                   whole_row, forced_bulk_ctas());
  // The bulk-copy kernel takes whole rows too wide for registers (the
  // 16-vector register variant spills 0.5-1.5 KB per thread). Everywhere else
  // the register and streaming kernels measured as fast or faster on the H200
  // (docs/perf/norm.md, v5); HPC_OPS_ROWWISE_BULK=1 forces it for tests.
  const int mode = bulk_mode();
  const bool bulk = config.bulk.usable && mode != 0 &&
                    (mode == 1 || (whole_row && config.row.vecs_per_thread >= 16));
  if (bulk) {
    p.items_per_row_div =
        FastDivmod(static_cast<uint32_t>((p.cols + config.bulk.chunk_cols - 1) / config.bulk.chunk_cols));
    p.chunk_cols = config.bulk.chunk_cols;
    p.stages = config.bulk.stages;
    p.buffer_bytes = config.bulk.buffer_bytes;
    p.buffers_offset = config.bulk.buffers_offset;
  }
  // The looped kernel: RMSNorm whose output needs no statistic but the sum of squares.
  const int lmode = looped_mode();
  const bool looped = !bulk && prologue == Prologue::kRmsNorm &&
                      (p.epilogue == Epilogue::kStoreBf16 || p.epilogue == Epilogue::kFp8Static) &&
                      lmode != 0 && (lmode == 1 || use_looped_kernel(total_rows, p.cols));
  if (looped) config.looped_threads = looped_threads(p.cols);
  // Otherwise outputs that need no row statistic stream (no row held in registers).
  const bool streaming = !whole_row;
  if (!bulk && streaming) {
    p.stream_slots = choose_stream_slots(total_rows, groups_per_row, sms);
    const int64_t groups_per_chunk = 2 * p.stream_slots;
    p.items_per_row_div =
        FastDivmod(static_cast<uint32_t>((groups_per_row + groups_per_chunk - 1) / groups_per_chunk));
  }
  const int vecs = bulk                ? kBulkKernel
                   : looped            ? kLoopedKernel
                   : streaming         ? kStreamingKernel
                                       : config.row.vecs_per_thread;
  for (int i = 0; i < table.size; ++i) {
    const KernelKey& k = table.entries[i].key;
    if (k.prologue == prologue && k.in_dtype == in_dtype && k.vecs_per_thread == vecs) {
      HPC_OPS_CUDA_CHECK(check.op(), table.entries[i].launch(p, config, stream));
      return;
    }
  }
  check.fail(ErrorKind::kInternal, "no compiled kernel for input ", dtype_name(in_dtype),
             " with ", vecs, " vectors per thread (0 = streaming, -1 = bulk copy, -2 = looped; prologue ",
             static_cast<int>(prologue), "); this build's instantiation table is incomplete");
}

}  // namespace hpc_ops::rowwise
