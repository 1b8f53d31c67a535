// SPDX-License-Identifier: Apache-2.0
// The streaming kernel: gated activations and FP8 quantization whose output
// needs no whole-row statistic (bf16, static FP8, per-1x128-group FP8, and the
// amax pass of dynamic per-tensor FP8). Nothing is held per row. Work is cut
// into chunks of 2 x stream_slots consecutive 1x128 groups of one row; a
// warp takes one chunk per iteration (grid-stride), each half-warp one group
// (16 vectors of 8 elements) per unrolled slot, and every load of the chunk is
// issued before any use. The row and its addresses are worked out once per
// chunk; slots differ by a constant offset.
// NOTE: the row-resident kernel reached 47-73% of the bandwidth ceiling on
// SiLU-and-mul at C = 14336 (8 vectors x 224 threads, 2 CTAs per SM);
// torch.compile's streaming kernel reached ~99%. Per-token scales need the row
// maximum and stay on the row kernel (rowwise_kernel.cuh).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>

#include "rowwise/rowwise_kernel.cuh"

namespace hpc_ops::rowwise {

template <Prologue kPrologue, class TIn>
__global__ void __launch_bounds__(kStreamThreads, kStreamMinCtas)
    stream_kernel(const __grid_constant__ RowwiseParams p) {
  using device::kVecElems;
  using device::Packed8;
  constexpr bool kGated = kPrologue == Prologue::kSiluMul || kPrologue == Prologue::kGeluTanhMul;
  static_assert(kGated || kPrologue == Prologue::kIdentity, "norms need the row kernel");
  constexpr int kVecsPerGroup = 16;  // 128 columns
  rowwise_enter<kPrologue>(p);  // first: earlier kernels may still run

  const int nvec = p.cols / kVecElems;
  // Below 2^31 (the launcher checks rows x groups).
  const uint32_t chunks =
      static_cast<uint32_t>(p.num_batches * p.rows_per_batch) * p.items_per_row_div.divisor;
  const int lane = threadIdx.x % 32;
  const int half = lane / 16;  // which group of a slot's pair
  const int lane16 = lane % 16;
  const uint32_t warps = gridDim.x * (kStreamThreads / 32);
  const device::Fp8Divisor static_divisor =
      p.epilogue == Epilogue::kFp8Static ? device::fp8_divisor(*p.static_scale) : device::Fp8Divisor{};
  float amax_acc = 0.0f;  // kAmaxOnly

  // The loop bound is uniform per warp so that every lane reaches the shuffles.
  for (uint32_t chunk = blockIdx.x * (kStreamThreads / 32) + threadIdx.x / 32; chunk < chunks;
       chunk += warps) {
    uint32_t row, c, batch, m;
    p.items_per_row_div.divmod(chunk, row, c);
    p.rows_per_batch_div.divmod(row, batch, m);
    bool row_ok = true;
    if (p.batch_row_counts != nullptr) row_ok = static_cast<int>(m) < p.batch_row_counts[batch];
    // Vector index of this lane in slot 0; slot u adds u * 2 groups.
    const int groups_per_chunk = 2 * p.stream_slots;
    const int j0 = (static_cast<int>(c) * groups_per_chunk + half) * kVecsPerGroup + lane16;
    // Slots whose first group starts past the row end are skipped warp-uniformly
    // (not executed predicated off: a 1-row problem is latency-bound on them).
    const int first_vec0 = static_cast<int>(c) * groups_per_chunk * kVecsPerGroup;
    const TIn* in = static_cast<const TIn*>(p.in.ptr) + batch * p.in.batch_stride +
                    m * p.in.row_stride;
    Packed8<TIn> x[kStreamUnroll], up[kStreamUnroll];
    // ---- every load of the chunk first -------------------------------------------
#pragma unroll
    for (int u = 0; u < kStreamUnroll; ++u) {
      if (u >= p.stream_slots || first_vec0 + u * 2 * kVecsPerGroup >= nvec) break;
      const int j = j0 + u * 2 * kVecsPerGroup;
      const bool ok = row_ok && j < nvec;
      x[u] = ok ? device::load_packed(in + j * kVecElems) : device::zero_packed<TIn>();
      if constexpr (kGated) {
        up[u] = ok ? device::load_packed(in + p.cols + j * kVecElems) : device::zero_packed<TIn>();
      }
    }
    // ---- compute and store ---------------------------------------------------------
    const int64_t out_row = batch * p.out.batch_stride + m * p.out.row_stride;
    float* scale_row = p.scale_out == nullptr
                           ? nullptr
                           : p.scale_out + batch * p.scale_batch_stride + m * p.scale_row_stride;
#pragma unroll
    for (int u = 0; u < kStreamUnroll; ++u) {
      // Warp-uniform, as above.
      if (u >= p.stream_slots || first_vec0 + u * 2 * kVecsPerGroup >= nvec) break;
      const int j = j0 + u * 2 * kVecsPerGroup;
      const bool ok = row_ok && j < nvec;
      float y[8];
      device::unpack(x[u], y);
      if constexpr (kGated) apply_gate<kPrologue>(y, up[u]);
      const int64_t out_index = out_row + static_cast<int64_t>(j) * kVecElems;
      switch (p.epilogue) {
        case Epilogue::kStoreBf16:
          if (ok) {
            device::store_packed(static_cast<__nv_bfloat16*>(p.out.ptr) + out_index,
                                 device::pack_bf16(y));
          }
          break;
        case Epilogue::kFp8Static:
          if (ok) {
            device::store8_fp8(static_cast<__nv_fp8_e4m3*>(p.out.ptr) + out_index, y,
                               static_divisor);
          }
          break;
        case Epilogue::kFp8PerGroup: {
          // All 32 lanes take part; lanes past the row end hold zeros.
          const float amax = device::warp_allreduce<16>(abs_max8(y), device::AbsMaxOp{});
          const float scale = dynamic_scale(amax);
          if (ok) {
            if (lane16 == 0) scale_row[(j / kVecsPerGroup) * p.scale_group_stride] = scale;
            device::store8_fp8(static_cast<__nv_fp8_e4m3*>(p.out.ptr) + out_index, y,
                               device::fp8_divisor(scale));
          }
          break;
        }
        default:  // kAmaxOnly (kFp8PerToken never reaches this kernel)
          amax_acc = device::AbsMaxOp{}(amax_acc, abs_max8(y));
          break;
      }
    }
  }
  // The launcher never runs an empty problem, so every warp has a maximum to give.
  if (p.epilogue == Epilogue::kAmaxOnly) publish_warp_amax(p.scale_out, amax_acc);
}

// NOTE: grid = enough CTAs for one pass at full occupancy at most; the
// grid-stride loop covers the rest.
template <Prologue kPrologue, class TIn>
cudaError_t launch_stream_kernel(const RowwiseParams& params, const LaunchConfig& launch_config,
                                 cudaStream_t stream) {
  const RowwiseConfig& config = launch_config.row;
  auto* kernel = stream_kernel<kPrologue, TIn>;
  static int resident = 0;  // CTAs per SM; benign race
  if (resident == 0) {
    int n = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kStreamThreads, 0) != cudaSuccess) {
      n = 1;
    }
    resident = std::max(n, 1);
  }
  const int64_t chunks =
      params.num_batches * params.rows_per_batch * params.items_per_row_div.divisor;
  // NOTE: small problems get one chunk per warp (one CTA per 8 chunks), so no
  // warp walks a second chunk: the latency of a 1-row problem is one warp's
  // instruction chain (ncu, C = 14336, one row on 2 CTAs: 7.9 us, 134 active
  // cycles per SM, issue-bound per warp).
  const int64_t needed = (chunks * 32 + kStreamThreads - 1) / kStreamThreads;
  const int64_t grid = std::max<int64_t>(1, std::min<int64_t>(needed, int64_t{resident} * config.num_sms));
  detail::LaunchShape shape;
  shape.grid = dim3(static_cast<unsigned>(grid));
  shape.block = dim3(kStreamThreads);
  return detail::launch_kernel(kernel, shape, stream, params);
}

}  // namespace hpc_ops::rowwise
