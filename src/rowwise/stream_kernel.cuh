// SPDX-License-Identifier: Apache-2.0
// The streaming kernel: gated activations and FP8 quantization whose output
// needs no whole-row statistic (bf16, static FP8, per-1x128-group FP8, and the
// amax pass of dynamic per-tensor FP8). Nothing is held per row: a half-warp
// owns one 1x128 group (16 vectors of 8 elements) of one row at a time, and a
// grid-stride loop walks (row, group) items, four per thread per iteration so
// four loads per input are in flight before any use.
// NOTE: the row-resident kernel reached 47-73% of the bandwidth ceiling on
// SiLU-and-mul at C = 14336 (8 vectors x 224 threads, 2 CTAs per SM);
// torch.compile's streaming kernel reached ~99%. Per-token scales need the row
// maximum and stay on the row kernel (rowwise_kernel.cuh).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>

#include "rowwise/rowwise_kernel.cuh"

namespace hpc_ops::rowwise {

constexpr int kStreamThreads = 256;
// NOTE: 4 items per thread per iteration (4 loads per input in flight); at 2,
// SiLU-and-mul at C = 14336 read at 2.3 TB/s, latency-bound. The register cap
// of 85 (3 CTAs of 256 threads per SM) avoids the 24-64 byte spills of a 64 cap.
constexpr int kStreamUnroll = 4;  // (row, group) items per thread per iteration

template <Prologue kPrologue, class TIn>
__global__ void __launch_bounds__(kStreamThreads, 3)
    stream_kernel(const __grid_constant__ RowwiseParams p) {
  using device::kVecElems;
  using device::Packed8;
  constexpr bool kGated = kPrologue == Prologue::kSiluMul || kPrologue == Prologue::kGeluTanhMul;
  static_assert(kGated || kPrologue == Prologue::kIdentity, "norms need the row kernel");

  const int nvec = p.cols / kVecElems;
  const int64_t items = p.num_batches * p.rows_per_batch * p.items_per_row_div.divisor;
  const int lane = threadIdx.x % 32;
  const int half = lane / 16;      // which item of the warp's pair
  const int lane16 = lane % 16;    // vector within the 1x128 group
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (kStreamThreads / 32);
  const int64_t warp0 = static_cast<int64_t>(blockIdx.x) * (kStreamThreads / 32) + threadIdx.x / 32;
  const float static_inv_scale =
      p.epilogue == Epilogue::kFp8Static ? 1.0f / *p.static_scale : 1.0f;
  float amax_acc = 0.0f;  // kAmaxOnly

  // The loop bound is uniform per warp so that every lane reaches the shuffles.
  for (int64_t w = warp0; w * 2 < items; w += warps * kStreamUnroll) {
    Packed8<TIn> x[kStreamUnroll], up[kStreamUnroll];
    bool valid[kStreamUnroll];
    int64_t row_offset_out[kStreamUnroll];
    float* scale_at[kStreamUnroll];
    int j_of[kStreamUnroll];
    // ---- loads of both items first ----------------------------------------------
#pragma unroll
    for (int u = 0; u < kStreamUnroll; ++u) {
      valid[u] = false;
      // Warp-uniform: slots past the end are skipped, not executed predicated
      // off (a 1-row problem was latency-bound on those instructions).
      if ((w + u * warps) * 2 >= items) continue;
      const int64_t item = (w + u * warps) * 2 + half;
      // Past the end: item 0's indices (the loads are predicated off).
      const uint32_t item32 = item < items ? static_cast<uint32_t>(item) : 0u;
      uint32_t row, g, batch, m;
      p.items_per_row_div.divmod(item32, row, g);
      p.rows_per_batch_div.divmod(row, batch, m);
      const int j = static_cast<int>(g) * 16 + lane16;
      bool ok = item < items && j < nvec;
      if (ok && p.batch_row_counts != nullptr) ok = static_cast<int>(m) < p.batch_row_counts[batch];
      valid[u] = ok;
      j_of[u] = j;
      row_offset_out[u] = batch * p.out.batch_stride + m * p.out.row_stride;
      scale_at[u] = p.scale_out == nullptr ? nullptr
                                           : p.scale_out + batch * p.scale_batch_stride +
                                                 m * p.scale_row_stride + g * p.scale_group_stride;
      const TIn* in = static_cast<const TIn*>(p.in.ptr) + batch * p.in.batch_stride +
                      m * p.in.row_stride + j * kVecElems;
      x[u] = ok ? device::load_packed(in) : device::zero_packed<TIn>();
      if constexpr (kGated) {
        up[u] = ok ? device::load_packed(in + p.cols) : device::zero_packed<TIn>();
      }
    }
    // ---- compute and store ---------------------------------------------------------
#pragma unroll
    for (int u = 0; u < kStreamUnroll; ++u) {
      if ((w + u * warps) * 2 >= items) continue;  // warp-uniform, as above
      float y[8];
      device::unpack(x[u], y);
      if constexpr (kGated) apply_gate<kPrologue>(y, up[u]);
      const int64_t out_index = row_offset_out[u] + static_cast<int64_t>(j_of[u]) * kVecElems;
      switch (p.epilogue) {
        case Epilogue::kStoreBf16:
          if (valid[u]) {
            device::store_packed(static_cast<__nv_bfloat16*>(p.out.ptr) + out_index,
                                 device::pack_bf16(y));
          }
          break;
        case Epilogue::kFp8Static:
          if (valid[u]) {
            device::store8_fp8(static_cast<__nv_fp8_e4m3*>(p.out.ptr) + out_index, y,
                               static_inv_scale);
          }
          break;
        case Epilogue::kFp8PerGroup: {
          const float amax = device::warp_allreduce<16>(abs_max8(y), device::AbsMaxOp{});
          const float scale = dynamic_scale(amax);
          if (valid[u]) {
            if (lane16 == 0) *scale_at[u] = scale;
            device::store8_fp8(static_cast<__nv_fp8_e4m3*>(p.out.ptr) + out_index, y,
                               __frcp_rn(scale));
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
void launch_stream_kernel(const RowwiseParams& params, const LaunchConfig& launch_config,
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
  const int64_t items =
      params.num_batches * params.rows_per_batch * params.items_per_row_div.divisor;
  // NOTE: small problems get one item per half-warp (one CTA per 16 items) so
  // that each thread runs one slot of the unrolled loop: the latency of a
  // 1-row problem is the instruction chain of one thread (ncu, C = 14336, one
  // row on 2 CTAs: 7.9 us, 134 active cycles per SM, issue-bound per warp).
  const int64_t needed = (items * 16 + kStreamThreads - 1) / kStreamThreads;
  const int64_t grid = std::max<int64_t>(1, std::min<int64_t>(needed, int64_t{resident} * config.num_sms));
  kernel<<<static_cast<unsigned>(grid), kStreamThreads, 0, stream>>>(params);
}

}  // namespace hpc_ops::rowwise
