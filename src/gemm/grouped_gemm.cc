// SPDX-License-Identifier: Apache-2.0
// Grouped GEMM: validation of every argument (structure first, devices last),
// the weight TMA descriptor, then one launch (grouped_gemm_*.cu).
#include "hpc_ops/grouped_gemm.h"


#include "common/check.h"
#include "common/cuda_check.h"
#include "common/device_info.h"
#include "common/env.h"
#include "common/tma_map.h"
#include "gemm/grouped_gemm_config.h"
#include "gemm/grouped_gemm_kernels.h"

namespace hpc_ops {

const char* grouped_layout_name(GroupedLayout layout) {
  switch (layout) {
    case GroupedLayout::kContiguous: return "contiguous";
    case GroupedLayout::kMasked: return "masked";
    case GroupedLayout::kGathered: return "gathered";
  }
  return "unknown";
}

const char* gemm_scaling_name(GemmScaling scaling) {
  switch (scaling) {
    case GemmScaling::kNone: return "none";
    case GemmScaling::kPerTensor: return "per_tensor";
    case GemmScaling::kPerRow: return "per_row";
    case GemmScaling::kBlock: return "block";
  }
  return "unknown";
}

namespace {

using detail::Checker;
using detail::given;

void check_index_tensor(const Checker& check, const Tensor& t, const char* name, int64_t length,
                        const char* what) {
  check.dtype(t, name, {DType::kInt32});
  check.ndim(t, name, 1, what);
  check.dim(t, name, 0, length, what);
  check.contiguous(t, name);
}

void reject(const Checker& check, const Tensor& t, const char* name, const char* why) {
  if (given(t)) check.invalid(name, " was given, but ", why);
}

// A scale tensor of rank `lead.size()` or with one more trailing dim of 1
// (per-row scales as [rows, 1]); returns false when the shape differs.
bool matches(const Tensor& t, std::initializer_list<int64_t> lead, bool allow_trailing_one) {
  const int n = static_cast<int>(lead.size());
  if (t.ndim != n && !(allow_trailing_one && t.ndim == n + 1 && t.shape[n] == 1)) return false;
  int d = 0;
  for (int64_t s : lead) {
    if (t.shape[d++] != s) return false;
  }
  return true;
}

std::string dims_text(std::initializer_list<int64_t> dims) {
  std::string s = "[";
  for (int64_t d : dims) s += (s.size() > 1 ? ", " : "") + std::to_string(d);
  return s + "]";
}

void check_scale_tensor(const Checker& check, const Tensor& t, const char* name) {
  if (!given(t)) check.invalid(name, " is required for this scaling");
  check.dtype(t, name, {DType::kFloat32});
  check.non_negative_strides(t, name);
}

// The row tile: the caller's hint, else the average rows per group; the
// environment variable HPC_OPS_GEMM_TOKEN_TILE (16, 32, 64, 128) overrides it
// for tuning runs.
int token_tile_for(int64_t expected_rows) {
  static const int forced = detail::env_int("HPC_OPS_GEMM_TOKEN_TILE", 0);
  for (int tile : gemm::kTokenTiles) {
    if (forced == tile) return tile;
  }
  return gemm::choose_token_tile(expected_rows);
}

// The [slabs][rows][columns] view a TMA map takes of x or y: contiguous, one
// slab of shape[0] rows; masked, one slab per group. False where TMA cannot
// address the strides.
struct RowSlabs {
  uint64_t dims[3];     // columns, rows, slabs
  uint64_t strides[2];  // bytes: row, slab
};
bool row_slabs(const Tensor& t, GroupedLayout layout, int64_t element_bytes, RowSlabs* out) {
  const bool masked = layout == GroupedLayout::kMasked;
  const int64_t row_bytes = t.strides[masked ? 1 : 0] * element_bytes;
  const int64_t rows = t.shape[masked ? 1 : 0];
  const int64_t slabs = masked ? t.shape[0] : 1;
  // A slab stride is never used with one slab; TMA wants it addressable.
  const int64_t slab_bytes = slabs == 1 ? row_bytes * rows : t.strides[0] * element_bytes;
  if (!detail::tma_stride_ok(row_bytes) || !detail::tma_stride_ok(slab_bytes)) return false;
  *out = RowSlabs{{static_cast<uint64_t>(t.shape[t.ndim - 1]), static_cast<uint64_t>(rows),
                   static_cast<uint64_t>(slabs)},
                  {static_cast<uint64_t>(row_bytes), static_cast<uint64_t>(slab_bytes)}};
  return true;
}

// The TMA map of x's row tiles (contiguous: one slab of x.shape[0] rows;
// masked: one slab per group), or false where x goes by cp.async: where
// gemm::rows_by_tma says so, strides TMA cannot address, or
// HPC_OPS_GEMM_X_TMA=0 (for tests and A/B runs). The kernel loads whole row
// tiles through it; rows of the next group in a tile are computed and never
// stored.
bool x_tma_map(CUtensorMap* map, const Tensor& x, GroupedLayout layout, bool fp8,
               int token_tile) {
  static const bool enabled = detail::env_int("HPC_OPS_GEMM_X_TMA", 1) != 0;
  if (!enabled || !gemm::rows_by_tma(static_cast<gemm::Layout>(layout), token_tile)) return false;
  const int64_t element_bytes = fp8 ? 1 : 2;
  RowSlabs slabs;
  if (!row_slabs(x, layout, element_bytes, &slabs)) return false;
  const uint32_t box[3] = {static_cast<uint32_t>(gemm::kKTileBytes / element_bytes),
                           static_cast<uint32_t>(token_tile), 1};
  return detail::try_make_tma_map_sw128(
      map, x.data, fp8 ? CU_TENSOR_MAP_DATA_TYPE_UINT8 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3,
      slabs.dims, slabs.strides, box, CU_TENSOR_MAP_L2_PROMOTION_L2_256B);
}

// The TMA map of y's row tiles, [slabs][rows][N] bf16 in boxes of 64
// channels x `box_rows` rows (a consumer warpgroup's staged block: the row
// tile, or 64 rows where gemm::tokens_on_m); false
// where TMA cannot address y's strides or HPC_OPS_GEMM_Y_TMA=0 (for tests and
// A/B runs): every tile is then stored by the threads. The kernel stores a
// warpgroup's staged block through it only when all the block's rows belong
// to its group.
bool y_tma_map(CUtensorMap* map, const Tensor& y, GroupedLayout layout, int box_rows) {
  static const bool enabled = detail::env_int("HPC_OPS_GEMM_Y_TMA", 1) != 0;
  if (!enabled) return false;
  RowSlabs slabs;
  if (!row_slabs(y, layout, 2, &slabs)) return false;
  const uint32_t box[3] = {64, static_cast<uint32_t>(box_rows), 1};
  return detail::try_make_tma_map_sw128(map, y.data, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3,
                                        slabs.dims, slabs.strides, box,
                                        CU_TENSOR_MAP_L2_PROMOTION_L2_256B);
}

}  // namespace

void grouped_gemm(const Tensor& x, const Tensor& w, const Tensor& y,
                  const GroupedGemmOptions& o, cudaStream_t stream) {
  const Checker check("grouped_gemm");
  gemm::GroupedGemmParams p;
  const GroupedLayout layout = o.layout;
  if (layout != GroupedLayout::kContiguous && layout != GroupedLayout::kMasked &&
      layout != GroupedLayout::kGathered) {
    check.invalid("layout must be contiguous (0), masked (1) or gathered (2), got ",
                  static_cast<int>(layout));
  }
  const bool masked = layout == GroupedLayout::kMasked;
  const bool gathered = layout == GroupedLayout::kGathered;
  // w
  check.dtype(w, "w", {DType::kFloat8E4M3, DType::kBFloat16});
  check.ndim(w, "w", 3, "[groups, N, K]");
  check.last_dim_contiguous(w, "w");
  check.non_negative_strides(w, "w");
  check.aligned(w, "w", 16);
  const int64_t groups = w.shape[0], n = w.shape[1], k = w.shape[2];
  const bool fp8 = w.dtype == DType::kFloat8E4M3;
  if (groups < 1 || groups > gemm::kMaxGroups) {
    check.unsupported("groups = w.shape[0] = ", groups, "; supported: 1 to ", gemm::kMaxGroups);
  }
  const GemmScaling scaling = o.scaling;
  const bool block = scaling == GemmScaling::kBlock;
  const int64_t multiple = block ? 128 : 16;
  if (k < 1 || k % multiple != 0) {
    check.unsupported("K = w.shape[2] = ", k, "; expected a positive multiple of ", multiple,
                      block ? " (block scales cover 128 of K)" : "");
  }
  if (n < 1 || n % multiple != 0) {
    check.unsupported("N = w.shape[1] = ", n, "; expected a positive multiple of ", multiple,
                      block ? " (block scales cover 128 of N)" : "");
  }
  if (n > INT32_MAX || k > INT32_MAX) check.unsupported("N or K of 2^31 or more");
  // x
  if (x.dtype != w.dtype) {
    check.invalid("x is ", dtype_name(x.dtype), " but w is ", dtype_name(w.dtype),
                  "; they must have the same dtype");
  }
  int64_t rows = 0, max_rows = 0;
  if (masked) {
    check.ndim(x, "x", 3, "[groups, max_rows, K] (masked layout)");
    check.dim(x, "x", 0, groups, "the groups, w.shape[0]");
    check.dim(x, "x", 2, k, "K, w.shape[2]");
    max_rows = x.shape[1];
  } else {
    check.ndim(x, "x", 2, "[rows, K]");
    check.dim(x, "x", 1, k, "K, w.shape[2]");
    rows = x.shape[0];
  }
  check.last_dim_contiguous(x, "x");
  check.non_negative_strides(x, "x");
  check.aligned(x, "x", 16);
  // groups and rows
  if (layout == GroupedLayout::kContiguous || gathered) {
    if (!given(o.cu_seqlens)) {
      check.invalid("cu_seqlens (int32 [groups + 1]) is required with the ",
                    grouped_layout_name(layout), " layout");
    }
    check_index_tensor(check, o.cu_seqlens, "cu_seqlens", groups + 1,
                       "[groups + 1] (w.shape[0] + 1)");
    reject(check, o.rows_per_group, "rows_per_group", "it is for the masked layout");
  } else {
    if (!given(o.rows_per_group)) {
      check.invalid("rows_per_group (int32 [groups]) is required with the masked layout");
    }
    check_index_tensor(check, o.rows_per_group, "rows_per_group", groups, "[groups] (w.shape[0])");
    reject(check, o.cu_seqlens, "cu_seqlens", "the masked layout takes rows_per_group");
  }
  if (gathered) {
    if (!given(o.row_index)) check.invalid("row_index (int32 [rows]) is required with the gathered layout");
    check.dtype(o.row_index, "row_index", {DType::kInt32});
    check.ndim(o.row_index, "row_index", 1, "[rows]");
    check.contiguous(o.row_index, "row_index");
    rows = o.row_index.shape[0];
  } else {
    reject(check, o.row_index, "row_index", "it is for the gathered layout");
  }
  // y
  check.dtype(y, "out", {DType::kBFloat16});
  if (masked) {
    check.ndim(y, "out", 3, "[groups, max_rows, N] (masked layout)");
    check.dim(y, "out", 0, groups, "the groups, w.shape[0]");
    check.dim(y, "out", 1, max_rows, "max_rows, x.shape[1]");
    check.dim(y, "out", 2, n, "N, w.shape[1]");
  } else {
    check.ndim(y, "out", 2, "[rows, N]");
    check.dim(y, "out", 0, rows, gathered ? "the rows, row_index.shape[0]" : "the rows, x.shape[0]");
    check.dim(y, "out", 1, n, "N, w.shape[1]");
  }
  check.last_dim_contiguous(y, "out");
  check.non_negative_strides(y, "out");
  check.aligned(y, "out", 16);
  if (rows > INT32_MAX || max_rows > INT32_MAX || (!masked && x.shape[0] > INT32_MAX)) {
    check.unsupported("2^31 or more rows");
  }
  // scales
  if (scaling != GemmScaling::kNone && scaling != GemmScaling::kPerTensor &&
      scaling != GemmScaling::kPerRow && scaling != GemmScaling::kBlock) {
    check.invalid("scaling must be none (0), per_tensor (1), per_row (2) or block (3), got ",
                  static_cast<int>(scaling));
  }
  if (!fp8 && scaling != GemmScaling::kNone) {
    check.invalid("scaling = ", gemm_scaling_name(scaling),
                  " is for float8_e4m3fn inputs; bfloat16 inputs take scaling = none");
  }
  if (fp8 && scaling == GemmScaling::kNone) {
    check.invalid("float8_e4m3fn inputs need scaling = per_tensor, per_row or block");
  }
  const int64_t x_rows = masked ? max_rows : x.shape[0];  // rows of x as stored
  const Tensor& xs = o.x_scale;
  const Tensor& ws = o.w_scale;
  if (scaling == GemmScaling::kNone) {
    reject(check, xs, "x_scale", "bfloat16 inputs take no scales");
    reject(check, ws, "w_scale", "bfloat16 inputs take no scales");
  } else {
    check_scale_tensor(check, xs, "x_scale");
    check_scale_tensor(check, ws, "w_scale");
  }
  if (scaling == GemmScaling::kPerTensor) {
    if (xs.numel() != 1 && !matches(xs, {groups}, false)) {
      check.invalid("x_scale has shape ", detail::shape_string(xs), "; per_tensor expects [1] or ",
                    dims_text({groups}), " (one per group)");
    }
    if (ws.numel() != 1 && !matches(ws, {groups}, false)) {
      check.invalid("w_scale has shape ", detail::shape_string(ws), "; per_tensor expects [1] or ",
                    dims_text({groups}), " (one per group)");
    }
    p.xs_group_stride = xs.numel() == 1 ? 0 : xs.strides[0];
    p.ws_group_stride = ws.numel() == 1 ? 0 : ws.strides[0];
  } else if (scaling == GemmScaling::kPerRow) {
    if (masked ? !matches(xs, {groups, max_rows}, true) : !matches(xs, {x_rows}, true)) {
      check.invalid("x_scale has shape ", detail::shape_string(xs), "; per_row expects ",
                    masked ? dims_text({groups, max_rows}) : dims_text({x_rows}),
                    " (one per row of x; a trailing dim of 1 is allowed)");
    }
    if (!matches(ws, {groups, n}, false)) {
      check.invalid("w_scale has shape ", detail::shape_string(ws), "; per_row expects ",
                    dims_text({groups, n}), " (one per group and output channel)");
    }
    p.xs_group_stride = masked ? xs.strides[0] : 0;
    p.xs_row_stride = xs.strides[masked ? 1 : 0];
    p.ws_group_stride = ws.strides[0];
    p.ws_n_stride = ws.strides[1];
  } else if (block) {
    if (masked ? !matches(xs, {groups, max_rows, k / 128}, false)
               : !matches(xs, {x_rows, k / 128}, false)) {
      check.invalid("x_scale has shape ", detail::shape_string(xs), "; block expects ",
                    masked ? dims_text({groups, max_rows, k / 128}) : dims_text({x_rows, k / 128}),
                    " (one per row of x and 128 of K)");
    }
    if (!matches(ws, {groups, n / 128, k / 128}, false)) {
      check.invalid("w_scale has shape ", detail::shape_string(ws), "; block expects ",
                    dims_text({groups, n / 128, k / 128}), " (one per group and 128 x 128 block)");
    }
    p.xs_group_stride = masked ? xs.strides[0] : 0;
    p.xs_row_stride = xs.strides[masked ? 1 : 0];
    p.xs_k_stride = xs.strides[masked ? 2 : 1];
    p.ws_group_stride = ws.strides[0];
    p.ws_n_stride = ws.strides[1];
    p.ws_k_stride = ws.strides[2];
  }
  // devices
  check.on_cuda(w, "w");
  for (const auto& [t, name] :
       {std::pair<const Tensor*, const char*>{&x, "x"}, {&y, "out"},
        {&o.cu_seqlens, "cu_seqlens"}, {&o.rows_per_group, "rows_per_group"},
        {&o.row_index, "row_index"}, {&xs, "x_scale"}, {&ws, "w_scale"}}) {
    if (given(*t)) check.same_device(*t, name, w, "w");
  }
  if ((masked ? max_rows : rows) == 0) return;

  p.layout = static_cast<gemm::Layout>(layout);
  p.num_groups = static_cast<int>(groups);
  p.n = static_cast<int>(n);
  p.k = static_cast<int>(k);
  p.total_rows = static_cast<int>(rows);
  p.max_rows = static_cast<int>(max_rows);
  p.src_rows = static_cast<int>(x.shape[0]);
  p.cu_seqlens = static_cast<const int*>(o.cu_seqlens.data);
  p.rows_per_group = static_cast<const int*>(o.rows_per_group.data);
  p.row_index = static_cast<const int*>(o.row_index.data);
  p.x = x.data;
  p.x_row_stride = x.strides[masked ? 1 : 0];
  p.x_group_stride = masked ? x.strides[0] : 0;
  p.y = y.data;
  p.y_row_stride = y.strides[masked ? 1 : 0];
  p.y_group_stride = masked ? y.strides[0] : 0;
  p.x_scale = static_cast<const float*>(xs.data);
  p.w_scale = static_cast<const float*>(ws.data);

  const int64_t expected =
      o.expected_rows_per_group > 0 ? o.expected_rows_per_group
                                    : (masked ? max_rows : (rows + groups - 1) / groups);
  const int token_tile = token_tile_for(expected);
  const int64_t tiles = gemm::max_tiles(p.layout, rows, max_rows, p.num_groups, p.n, token_tile);
  if (tiles > INT32_MAX) check.unsupported("problem of more than 2^31 tiles");

  const int64_t element_bytes = fp8 ? 1 : 2;
  const uint64_t n_stride = static_cast<uint64_t>(w.strides[1] * element_bytes);
  // A group stride is never used when there is one group; TMA wants it non-zero.
  const uint64_t group_stride =
      groups == 1 ? n_stride * static_cast<uint64_t>(n) : static_cast<uint64_t>(w.strides[0] * element_bytes);
  const CUtensorMap w_map = detail::make_tma_map_3d_sw128(
      w.data, fp8 ? CU_TENSOR_MAP_DATA_TYPE_UINT8 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
      static_cast<uint64_t>(k), static_cast<uint64_t>(n), static_cast<uint64_t>(groups), n_stride,
      group_stride, static_cast<uint32_t>(gemm::kKTileBytes / element_bytes), gemm::kWeightTile);

  CUtensorMap x_map;
  const bool x_by_tma = x_tma_map(&x_map, x, layout, fp8, token_tile);
  CUtensorMap y_map = w_map;  // a placeholder the kernel never reads without y_by_tma
  const gemm::Epilogue epilogue = !fp8   ? gemm::Epilogue::kNone
                                  : block ? gemm::Epilogue::kBlockScaled
                                          : gemm::Epilogue::kScaleAtEnd;
  p.y_by_tma =
      y_tma_map(&y_map, y, layout, gemm::tokens_on_m(epilogue, token_tile) ? 64 : token_tile);

  detail::DeviceGuard guard(w.device.index, check.op());
  const int grid = gemm::grid_size(tiles, detail::multiprocessor_count(check.op(), w.device.index));
  const CUtensorMap* x_map_arg = x_by_tma ? &x_map : nullptr;
  if (!fp8) {
    HPC_OPS_CUDA_CHECK(check.op(),
                       gemm::launch_grouped_gemm_bf16(token_tile, w_map, x_map_arg, y_map, p, grid,
                                                      stream));
  } else if (block) {
    HPC_OPS_CUDA_CHECK(check.op(), gemm::launch_grouped_gemm_fp8_block(token_tile, w_map, x_map_arg,
                                                                       y_map, p, grid, stream));
  } else {
    HPC_OPS_CUDA_CHECK(check.op(),
                       gemm::launch_grouped_gemm_fp8(token_tile, w_map, x_map_arg, y_map, p, grid,
                                                     stream));
  }
}

}  // namespace hpc_ops
