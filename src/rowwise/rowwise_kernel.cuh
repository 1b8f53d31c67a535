// SPDX-License-Identifier: Apache-2.0
// The row-wise kernel: one pass over HBM for RMSNorm, fused add + RMSNorm,
// gated activations and FP8 quantization.
//
// Geometry: a persistent grid (at most as many CTAs as fit on the GPU at once)
// walks row tiles; a CTA holds rows_per_cta rows per tile; a row is owned by
// warps_per_row warps; thread t of a row owns the 8-element vectors
// t, t + T, t + 2T, ... (T = threads per row), so a warp's accesses are
// contiguous 512-byte runs.
// Phases per row: (1) every load of the row issued before any use, kept packed
// (4 registers per vector); (2) prologue: residual add (stored back packed, as
// bf16) and, for RMSNorm, the sum of squares reduced over the row; (3)
// epilogue: each output vector is computed from the packed inputs when it is
// stored (twice for per-token scales without RMSNorm: once for the row
// maximum, once to store; after RMSNorm the maximum comes with phase 2). A 1x128 group is 16 vectors = 16 consecutive lanes (a half-warp), so
// group maxima are 4 shuffles with no shared memory.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>

#include "common/bulk_copy.cuh"
#include "common/fp8_scale.cuh"
#include "common/launch.h"
#include "common/pdl.cuh"
#include "common/reduce.cuh"
#include "common/vec.cuh"
#include "hpc_ops/core/dtype.h"
#include "hpc_ops/quantization.h"
#include "rowwise/rowwise_config.h"
#include "rowwise/rowwise_host.h"
#include "rowwise/rowwise_params.h"

namespace hpc_ops::rowwise {

// NOTE: fast exp and division (ex2.approx, rcp.approx; ~2 ulp of float32, far
// below the bf16/fp8 output rounding). The IEEE division alone was ~15
// instructions per element, and the activation kernels ran issue-bound.
// __fdividef returns 0 for denominators above 2^126: silu(g) -> -0 for g << 0,
// which is the limit.
__device__ __forceinline__ float silu(float g) { return __fdividef(g, 1.0f + __expf(-g)); }

// 0.5 g (1 + tanh(u)) = g * sigmoid(2u): the same function without tanhf and
// without the cancellation of 1 + tanh(u) for u << 0.
__device__ __forceinline__ float gelu_tanh(float g) {
  constexpr float kTwoSqrt2OverPi = 2.0f * 0.7978845608028654f;
  const float two_u = kTwoSqrt2OverPi * (g + 0.044715f * g * g * g);
  return __fdividef(g, 1.0f + __expf(-two_u));
}

using device::dynamic_scale;

// The first statement of every row-wise kernel. Norms first ask L2 for the
// weight (one bulk prefetch by the grid's first CTA): with PDL this runs
// while the previous kernel drains, so the first wave's weight loads hit L2
// instead of waiting on HBM. Then wait for the previous grid (common/pdl.cuh).
// NOTE: measured on the H200 (docs/perf/norm.md, v10), the benchmark giving
// each call its own weight as layers do: RMSNorm 4096 x 7168 30.75-30.81 ->
// 30.22-30.26 us, one-row norms 0.03 us faster, add + RMSNorm unchanged.
template <Prologue kPrologue>
__device__ __forceinline__ void rowwise_enter(const RowwiseParams& p) {
  if constexpr (kPrologue == Prologue::kRmsNorm || kPrologue == Prologue::kAddRmsNorm) {
    if (p.prefetch_weight && blockIdx.x == 0 && threadIdx.x == 0) {
      device::prefetch_l2_bulk(p.weight, static_cast<uint32_t>(p.cols) * sizeof(__nv_bfloat16));
    }
  }
  device::pdl_enter();
}

// Raises *scale_out to dynamic_scale(amax), atomically across the grid (the
// amax pass of dynamic per-tensor FP8). Non-negative floats order like their
// bit patterns (NaN above +inf), so an integer max over the bits is a float
// max that keeps NaN.
__device__ __forceinline__ void atomic_max_scale(float* scale_out, float amax) {
  atomicMax(reinterpret_cast<int*>(scale_out), __float_as_int(dynamic_scale(amax)));
}

// The grid-stride kernels' end of the amax pass: each warp reduces its
// threads' maxima and publishes one scale.
__device__ __forceinline__ void publish_warp_amax(float* scale_out, float thread_amax) {
  const float amax = device::warp_allreduce(thread_amax, device::AbsMaxOp{});
  if (threadIdx.x % 32 == 0) atomic_max_scale(scale_out, amax);
}

// y <- act(y) * up for the gated prologues (y holds the gate on entry).
template <Prologue kPrologue, class TIn>
__device__ __forceinline__ void apply_gate(float (&y)[8], const device::Packed8<TIn>& up) {
  float u[8];
  device::unpack(up, u);
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    y[e] = (kPrologue == Prologue::kSiluMul ? silu(y[e]) : gelu_tanh(y[e])) * u[e];
  }
}

__device__ __forceinline__ float abs_max8(const float (&v)[8]) {
  device::AbsMaxOp op;
  float a = 0.0f;
#pragma unroll
  for (int e = 0; e < 8; ++e) a = op(a, fabsf(v[e]));
  return a;
}

// max |x[e] * w[e]| over one vector (NaN-propagating).
__device__ __forceinline__ float abs_max_product8(const float (&x)[8],
                                                  const device::Packed8<__nv_bfloat16>& w) {
  float wf[8];
  device::unpack(w, wf);
  device::AbsMaxOp op;
  float a = 0.0f;
#pragma unroll
  for (int e = 0; e < 8; ++e) a = op(a, fabsf(x[e] * wf[e]));
  return a;
}

template <Prologue kPrologue, class TIn, int kVecs>
__global__ void __launch_bounds__(max_threads_for_vecs(kVecs), min_ctas_for_vecs(kVecs))
    rowwise_kernel(const __grid_constant__ RowwiseParams p) {
  using device::kVecElems;
  using device::Packed8;
  using Bf16 = __nv_bfloat16;
  constexpr bool kNorm = kPrologue == Prologue::kRmsNorm || kPrologue == Prologue::kAddRmsNorm;
  constexpr bool kGated = kPrologue == Prologue::kSiluMul || kPrologue == Prologue::kGeluTanhMul;
  __shared__ float scratch[32];
  rowwise_enter<kPrologue>(p);  // first: earlier kernels may still run

  const int threads_per_row = p.warps_per_row * 32;
  const int row_in_cta = threadIdx.x / threads_per_row;
  const int tid = threadIdx.x - row_in_cta * threads_per_row;
  const int warp_in_row = tid / 32;
  const int nvec = p.cols / kVecElems;
  const int total_rows = static_cast<int>(p.num_batches * p.rows_per_batch);

  const device::Fp8Divisor static_divisor =
      p.epilogue == Epilogue::kFp8Static ? device::fp8_divisor(*p.static_scale) : device::Fp8Divisor{};

  for (int tile = blockIdx.x; tile < p.num_tiles; tile += gridDim.x) {
    // ---- Which row this thread works on ---------------------------------------
    const int flat_row = tile * p.rows_per_cta + row_in_cta;
    uint32_t batch = 0;
    uint32_t m = 0;
    bool active = flat_row < total_rows;
    if (active) {
      p.rows_per_batch_div.divmod(flat_row, batch, m);
      if (p.batch_row_counts != nullptr) active = static_cast<int>(m) < p.batch_row_counts[batch];
    }
    // Rows of one CTA reduce through shared memory together, so threads of an
    // inactive row stay while any row of the tile is active.
    if (p.rows_per_cta == 1) {
      if (!active) continue;
    } else if (!__syncthreads_or(active)) {
      continue;
    }

    // ---- Phase 1: loads, all issued before any use ------------------------------
    const TIn* in =
        static_cast<const TIn*>(p.in.ptr) + batch * p.in.batch_stride + m * p.in.row_stride;
    Packed8<TIn> x[kVecs];
    bool valid[kVecs];
#pragma unroll
    for (int i = 0; i < kVecs; ++i) {
      const int j = tid + i * threads_per_row;
      valid[i] = active && j < nvec;
      x[i] = valid[i] ? device::load_packed(in + j * kVecElems) : device::zero_packed<TIn>();
    }
    // RMSNorm weights: re-read per row (L1/L2 hits) rather than pinned in
    // registers across rows.
    Packed8<Bf16> weight[kNorm ? kVecs : 1];
    if constexpr (kNorm) {
      const auto* w = static_cast<const uint4*>(p.weight);
#pragma unroll
      for (int i = 0; i < kVecs; ++i) {
        weight[i].raw = valid[i] ? __ldg(w + tid + i * threads_per_row) : make_uint4(0, 0, 0, 0);
      }
    }
    Packed8<TIn> up[kGated ? kVecs : 1];
    if constexpr (kGated) {
#pragma unroll
      for (int i = 0; i < kVecs; ++i) {
        const int j = tid + i * threads_per_row;
        up[i] = valid[i] ? device::load_packed(in + p.cols + j * kVecElems)
                         : device::zero_packed<TIn>();
      }
    }

    // ---- Phase 2: residual add and RMSNorm statistics ----------------------------
    if constexpr (kPrologue == Prologue::kAddRmsNorm) {
      const Bf16* res = static_cast<const Bf16*>(p.residual.ptr) +
                        batch * p.residual.batch_stride + m * p.residual.row_stride;
      Bf16* res_out = static_cast<Bf16*>(p.residual_out.ptr) + batch * p.residual_out.batch_stride +
                      m * p.residual_out.row_stride;
      Packed8<Bf16> r[kVecs];
#pragma unroll
      for (int i = 0; i < kVecs; ++i) {
        const int j = tid + i * threads_per_row;
        r[i] = valid[i] ? device::load_packed(res + j * kVecElems)
                        : device::zero_packed<Bf16>();
      }
      // The norm is taken of the residual as stored (bf16), so out equals
      // rms_norm(residual_out) exactly as an unfused sequence computes it.
#pragma unroll
      for (int i = 0; i < kVecs; ++i) {
        float a[8], b[8];
        device::unpack(x[i], a);
        device::unpack(r[i], b);
#pragma unroll
        for (int e = 0; e < 8; ++e) a[e] += b[e];
        x[i] = device::pack_bf16(a);
        if (valid[i]) device::store_packed(res_out + (tid + i * threads_per_row) * kVecElems, x[i]);
      }
    }
    float inv_rms = 1.0f;
    // Per-token scales after RMSNorm: max|y| = inv_rms * max|x * w| (inv_rms is
    // one positive factor per row), so the maximum is reduced together with the
    // sum of squares, one row reduction instead of two.
    float amax_xw = 0.0f;
    if constexpr (kNorm) {
      const bool fused_amax = p.epilogue == Epilogue::kFp8PerToken;
      float sum_sq = 0.0f;
#pragma unroll
      for (int i = 0; i < kVecs; ++i) {
        float a[8];
        device::unpack(x[i], a);
#pragma unroll
        for (int e = 0; e < 8; ++e) sum_sq += a[e] * a[e];
        if (fused_amax) amax_xw = device::AbsMaxOp{}(amax_xw, abs_max_product8(a, weight[i]));
      }
      if (fused_amax) {
        device::row_allreduce_pair(sum_sq, amax_xw, device::SumOp{}, device::AbsMaxOp{}, scratch,
                                   p.warps_per_row, row_in_cta, warp_in_row);
      } else {
        sum_sq = device::row_allreduce(sum_sq, device::SumOp{}, scratch, p.warps_per_row,
                                       row_in_cta, warp_in_row);
      }
      inv_rms = rsqrtf(sum_sq / static_cast<float>(p.cols) + p.eps);
    }

    // Output vector i, computed from the packed inputs (zeros past the row end).
    auto output = [&](int i, float (&y)[8]) {
      device::unpack(x[i], y);
      if constexpr (kNorm) {
        float w[8];
        device::unpack(weight[i], w);
#pragma unroll
        for (int e = 0; e < 8; ++e) y[e] = (y[e] * inv_rms) * w[e];
      }
      if constexpr (kGated) apply_gate<kPrologue>(y, up[i]);
    };

    // Called at the start of each epilogue pass: outputs are recomputed per pass
    // rather than computed once and held (8 floats per vector) across passes.
    auto fresh_inputs = [&]() {
#pragma unroll
      for (int i = 0; i < kVecs; ++i) {
        device::recompute_barrier(x[i]);
        if constexpr (kNorm) device::recompute_barrier(weight[i]);
        if constexpr (kGated) device::recompute_barrier(up[i]);
      }
    };

    // ---- Phase 3: epilogue -------------------------------------------------------
    const Epilogue epilogue = p.epilogue;
    const int64_t out_offset = batch * p.out.batch_stride + m * p.out.row_stride;
    if (epilogue == Epilogue::kStoreBf16) {
      fresh_inputs();
      Bf16* out = static_cast<Bf16*>(p.out.ptr) + out_offset;
#pragma unroll
      for (int i = 0; i < kVecs; ++i) {
        if (!valid[i]) continue;
        float y[8];
        output(i, y);
        device::store_packed(out + (tid + i * threads_per_row) * kVecElems, device::pack_bf16(y));
      }
      continue;
    }

    __nv_fp8_e4m3* out = static_cast<__nv_fp8_e4m3*>(p.out.ptr) + out_offset;
    float* scale_row = p.scale_out == nullptr
                           ? nullptr
                           : p.scale_out + batch * p.scale_batch_stride + m * p.scale_row_stride;
    if (epilogue == Epilogue::kFp8Static) {
      fresh_inputs();
#pragma unroll
      for (int i = 0; i < kVecs; ++i) {
        if (!valid[i]) continue;
        float y[8];
        output(i, y);
        device::store8_fp8(out + (tid + i * threads_per_row) * kVecElems, y, static_divisor);
      }
      continue;
    }

    if (epilogue == Epilogue::kFp8PerGroup) {
      fresh_inputs();
#pragma unroll
      for (int i = 0; i < kVecs; ++i) {
        const int j = tid + i * threads_per_row;
        float y[8];
        output(i, y);
        // All 32 lanes take part in the shuffles; lanes past the row end hold zeros.
        const float amax = device::warp_allreduce<16>(abs_max8(y), device::AbsMaxOp{});
        const float scale = dynamic_scale(amax);
        if (valid[i]) {
          if (j % 16 == 0) scale_row[(j / 16) * p.scale_group_stride] = scale;
          device::store8_fp8(out + j * kVecElems, y, device::fp8_divisor(scale));
        }
      }
      continue;
    }

    // kFp8PerToken or kAmaxOnly: the row maximum first.
    float amax = 0.0f;
    if (kNorm && epilogue == Epilogue::kFp8PerToken) {
      amax = inv_rms * amax_xw;
    } else {
      fresh_inputs();
#pragma unroll
      for (int i = 0; i < kVecs; ++i) {
        float y[8];
        output(i, y);
        amax = device::AbsMaxOp{}(amax, abs_max8(y));
      }
      amax = device::row_allreduce(amax, device::AbsMaxOp{}, scratch, p.warps_per_row, row_in_cta,
                                   warp_in_row);
    }
    if (epilogue == Epilogue::kAmaxOnly) {
      if (active && tid == 0) atomic_max_scale(p.scale_out, amax);
      continue;
    }
    const float scale = dynamic_scale(amax);
    if (active && tid == 0) scale_row[0] = scale;
    const device::Fp8Divisor divisor = device::fp8_divisor(scale);
    fresh_inputs();
#pragma unroll
    for (int i = 0; i < kVecs; ++i) {
      if (!valid[i]) continue;
      float y[8];
      output(i, y);
      device::store8_fp8(out + (tid + i * threads_per_row) * kVecElems, y, divisor);
    }
  }
}

// Host-side launcher of one instantiation (the registry stores its address).
// NOTE: the grid is capped at the CTAs that fit on the GPU at once; each CTA
// then walks row tiles. One CTA per row (v1) paid a CTA launch per 14-28 KB
// row and a partial last wave.
template <Prologue kPrologue, class TIn, int kVecs>
cudaError_t launch_rowwise_kernel(const RowwiseParams& params, const LaunchConfig& launch_config,
                                  cudaStream_t stream) {
  const RowwiseConfig& config = launch_config.row;
  auto* kernel = rowwise_kernel<kPrologue, TIn, kVecs>;
  const int threads = config.threads_per_cta();
  static int blocks_per_sm[1024 / 32 + 1] = {};  // by CTA size in warps; benign race
  int& resident = blocks_per_sm[threads / 32];
  if (resident == 0) {
    int n = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, threads, 0) != cudaSuccess) {
      n = 1;
    }
    resident = std::max(n, 1);
  }
  const int64_t grid = config.persistent
                           ? std::min<int64_t>(config.grid, int64_t{resident} * config.num_sms)
                           : config.grid;
  detail::LaunchShape shape;
  shape.grid = dim3(static_cast<unsigned>(std::max<int64_t>(grid, 1)));
  shape.block = dim3(static_cast<unsigned>(threads));
  return detail::launch_kernel(kernel, shape, stream, params);
}

}  // namespace hpc_ops::rowwise
