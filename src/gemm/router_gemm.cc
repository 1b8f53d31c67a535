// SPDX-License-Identifier: Apache-2.0
// Router GEMM and the weight split: validation of every argument (structure
// first, devices last), the TMA descriptors, then one launch.
#include "hpc_ops/router_gemm.h"

#include "common/check.h"
#include "common/cuda_check.h"
#include "common/device_info.h"
#include "common/env.h"
#include "common/tma_map.h"
#include "gemm/router_gemm_config.h"
#include "gemm/router_gemm_kernels.h"

namespace hpc_ops {

int64_t router_gemm_workspace_bytes(int device) {
  return gemm::router_workspace_bytes(
      detail::multiprocessor_count("router_gemm_workspace_bytes", device));
}

void router_gemm(const Tensor& x, const Tensor& w_parts, const Tensor& y,
                 const Tensor& workspace, cudaStream_t stream) {
  const detail::Checker check("router_gemm");
  // w_parts
  check.dtype(w_parts, "w_parts", {DType::kBFloat16});
  check.ndim(w_parts, "w_parts", 3, "[parts, N, K]");
  check.last_dim_contiguous(w_parts, "w_parts");
  check.non_negative_strides(w_parts, "w_parts");
  check.aligned(w_parts, "w_parts", 16);
  const int64_t parts = w_parts.shape[0], n = w_parts.shape[1], k = w_parts.shape[2];
  if (parts != 2 && parts != 3) {
    check.unsupported("parts = w_parts.shape[0] = ", parts,
                      "; expected 2 (bf16 high + low) or 3 (exact fp32)");
  }
  if (k < 16 || k % 16 != 0) {
    check.unsupported("K = w_parts.shape[2] = ", k, "; expected a positive multiple of 16");
  }
  if (n < 16 || n % 16 != 0) {
    check.unsupported("N = w_parts.shape[1] = ", n, "; expected a positive multiple of 16");
  }
  if (n > INT32_MAX || k > INT32_MAX) check.unsupported("N or K of 2^31 or more");
  // x
  check.dtype(x, "x", {DType::kBFloat16});
  check.ndim(x, "x", 2, "[M, K]");
  check.dim(x, "x", 1, k, "K, w_parts.shape[2]");
  check.last_dim_contiguous(x, "x");
  check.non_negative_strides(x, "x");
  check.aligned(x, "x", 16);
  const int64_t m = x.shape[0];
  if (m > INT32_MAX) check.unsupported("M = x.shape[0] = ", m, "; at most 2^31 - 1 rows");
  // y
  check.dtype(y, "out", {DType::kBFloat16, DType::kFloat32});
  check.ndim(y, "out", 2, "[M, N]");
  check.dim(y, "out", 0, m, "M, x.shape[0]");
  check.dim(y, "out", 1, n, "N, w_parts.shape[1]");
  check.last_dim_contiguous(y, "out");
  check.non_negative_strides(y, "out");
  // workspace (optional; a split launch needs one)
  const bool has_workspace = detail::given(workspace);
  if (has_workspace) {
    check.dtype(workspace, "workspace", {DType::kUInt8});
    check.ndim(workspace, "workspace", 1, "[bytes]");
    check.contiguous(workspace, "workspace");
    check.aligned(workspace, "workspace", 256);
  }
  // devices
  check.on_cuda(w_parts, "w_parts");
  check.same_device(x, "x", w_parts, "w_parts");
  check.same_device(y, "out", w_parts, "w_parts");
  if (has_workspace) check.same_device(workspace, "workspace", w_parts, "w_parts");
  const int device = w_parts.device.index;
  const int sms = detail::multiprocessor_count(check.op(), device);
  if (has_workspace && workspace.shape[0] < gemm::router_workspace_bytes(sms)) {
    check.invalid("workspace has ", workspace.shape[0], " bytes; expected at least ",
                  gemm::router_workspace_bytes(sms), " (router_gemm_workspace_bytes)");
  }
  if (m == 0) return;

  // A few tokens: the CUDA-core kernel (no workspace). HPC_OPS_ROUTER_GEMV_MAX_M
  // moves the threshold, for tuning runs and tests of both kernels.
  static const int forced_gemv_max_m = detail::env_int("HPC_OPS_ROUTER_GEMV_MAX_M", 0);
  gemm::RouterOperands operands;
  operands.m = static_cast<int>(m);
  operands.n = static_cast<int>(n);
  operands.k = static_cast<int>(k);
  operands.w = w_parts.data;
  operands.w_part_stride_bytes = w_parts.strides[0] * 2;
  operands.w_row_stride_bytes = w_parts.strides[1] * 2;
  operands.y = y.data;
  operands.y_row_stride = y.strides[0];
  operands.y_fp32 = y.dtype == DType::kFloat32;
  if (gemm::router_uses_gemv(m, forced_gemv_max_m)) {
    gemm::RouterGemvParams g;
    static_cast<gemm::RouterOperands&>(g) = operands;
    g.x = x.data;
    g.x_row_stride = x.strides[0];
    const gemm::RouterGemvShape shape = gemm::choose_router_gemv_shape(m, n, k, sms);
    detail::DeviceGuard guard(device, check.op());
    HPC_OPS_CUDA_CHECK(check.op(), gemm::launch_router_gemv(static_cast<int>(parts), g, shape, stream));
    return;
  }

  // HPC_OPS_ROUTER_TOKEN_TILE (16, 32, 64, 128) and HPC_OPS_ROUTER_SPLITS
  // override the launch shape, for tuning runs.
  static const int forced_tile = detail::env_int("HPC_OPS_ROUTER_TOKEN_TILE", 0);
  static const int forced_splits = detail::env_int("HPC_OPS_ROUTER_SPLITS", 0);
  const gemm::RouterGemmShape shape =
      gemm::choose_router_shape(m, n, k, sms, forced_tile, forced_splits);
  if (shape.ctas() > INT32_MAX) check.unsupported("problem of more than 2^31 tiles");
  if (shape.splits > 1 && !has_workspace) {
    check.invalid("workspace is required: this shape splits K over ", shape.splits,
                  " CTAs per output tile (uint8, router_gemm_workspace_bytes() = ",
                  gemm::router_workspace_bytes(sms), " bytes, zero-filled once)");
  }
  gemm::RouterGemmParams p;
  static_cast<gemm::RouterOperands&>(p) = operands;
  if (has_workspace) {
    uint8_t* base = static_cast<uint8_t*>(workspace.data);
    p.counters = reinterpret_cast<int*>(base);
    p.partials = reinterpret_cast<float*>(base + gemm::router_partials_offset(sms));
  }
  p.channel_tiles = shape.channel_tiles;
  p.splits = shape.splits;
  p.k_tiles_per_split = shape.k_tiles_per_split;

  const uint64_t w_row = static_cast<uint64_t>(w_parts.strides[1] * 2);
  const CUtensorMap w_map = detail::make_tma_map_3d_sw128(
      w_parts.data, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, static_cast<uint64_t>(k),
      static_cast<uint64_t>(n), static_cast<uint64_t>(parts), w_row,
      static_cast<uint64_t>(w_parts.strides[0] * 2), gemm::kRouterKTile,
      gemm::kRouterChannelTile);
  const uint64_t x_dims[2] = {static_cast<uint64_t>(k), static_cast<uint64_t>(m)};
  // check.aligned made the row stride a multiple of 16 bytes where M > 1 (TMA's
  // rule); a single row's stride is never stepped along.
  const uint64_t x_row = static_cast<uint64_t>(m > 1 ? x.strides[0] * 2 : k * 2);
  const uint32_t x_box[2] = {gemm::kRouterKTile, static_cast<uint32_t>(shape.token_tile)};
  const CUtensorMap x_map = detail::make_tma_map_sw128(x.data, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2,
                                                       x_dims, &x_row, x_box);

  detail::DeviceGuard guard(device, check.op());
  HPC_OPS_CUDA_CHECK(check.op(),
                     gemm::launch_router_gemm(static_cast<int>(parts), shape.token_tile, w_map,
                                              x_map, p, static_cast<int>(shape.ctas()), stream));
}

void split_router_weight(const Tensor& w, const Tensor& w_parts, cudaStream_t stream) {
  const detail::Checker check("split_router_weight");
  check.dtype(w, "w", {DType::kFloat32});
  check.ndim(w, "w", 2, "[N, K]");
  check.last_dim_contiguous(w, "w");
  check.non_negative_strides(w, "w");
  check.dtype(w_parts, "w_parts", {DType::kBFloat16});
  check.ndim(w_parts, "w_parts", 3, "[parts, N, K]");
  check.contiguous(w_parts, "w_parts");
  const int64_t parts = w_parts.shape[0];
  if (parts != 2 && parts != 3) {
    check.unsupported("parts = w_parts.shape[0] = ", parts, "; expected 2 or 3");
  }
  check.dim(w_parts, "w_parts", 1, w.shape[0], "N, w.shape[0]");
  check.dim(w_parts, "w_parts", 2, w.shape[1], "K, w.shape[1]");
  check.on_cuda(w, "w");
  check.same_device(w_parts, "w_parts", w, "w");
  if (w.numel() == 0) return;
  detail::DeviceGuard guard(w.device.index, check.op());
  const int sms = detail::multiprocessor_count(check.op(), w.device.index);
  HPC_OPS_CUDA_CHECK(check.op(), gemm::launch_split_router_weight(
                                     static_cast<const float*>(w.data), w.strides[0], w.shape[0],
                                     w.shape[1], static_cast<int>(parts), w_parts.data, sms,
                                     stream));
}

}  // namespace hpc_ops
