// SPDX-License-Identifier: Apache-2.0
// The looped kernel of the row-wise engine: RMSNorm in two passes over the
// row with a small register footprint, for large problems whose output needs
// only the row's sum of squares (bf16 out, or FP8 with a static scale).
//
// One CTA per row (no persistent loop), T threads; thread t owns vectors
// t, t + T, ... Each pass takes kLoopedVecs vectors per thread per step, all
// loads of a step issued before any use. Pass 1 accumulates the sum of
// squares, reduced across the CTA. Pass 2 reads the row again, an L2 hit (the
// loads of pass 1 carry an evict_last policy, those of pass 2 evict_first;
// 132 SMs x 6 rows x 14 KB = 11 MB in flight against 60 MB of L2), with the
// weight, and stores. Nothing is held across the reduction: 48 registers, so
// 6 CTAs of 224 threads fit per SM at hidden 7168 (86 KB of loads in flight).
//
// NOTE: measured on the H200 (docs/perf/norm.md, v8), RMSNorm at 16384 x 7168:
// register kernel 126.8 us (86.9% of the ceiling), this kernel 113.4 (97.4%),
// torch.compile 111.9; at 4096 x 7168: 32.2 / 31.0 / 30.4. Without the L2
// policies 114.6 and 31.4; 2 vectors per step x 448 threads 117.4 and 32.0;
// 8 vectors x 128 threads 113.3 and 31.2; evict_first stores changed nothing.
#pragma once

#include <cuda_runtime.h>

#include "common/launch.h"
#include "common/pdl.cuh"
#include "rowwise/rowwise_kernel.cuh"

namespace hpc_ops::rowwise {

template <Prologue kPrologue, class TIn>
__global__ void __launch_bounds__(kLoopedMaxThreads, kLoopedMinCtas)
    looped_kernel(const __grid_constant__ RowwiseParams p) {
  static_assert(kPrologue == Prologue::kRmsNorm, "the looped kernel implements RMSNorm only");
  static_assert(sizeof(device::Packed8<TIn>) == 16, "16-byte input vectors");
  using device::kVecElems;
  using device::Packed8;
  using Bf16 = __nv_bfloat16;
  constexpr int kVecs = kLoopedVecs;
  __shared__ float scratch[32];
  rowwise_enter<kPrologue>(p);  // first: earlier kernels may still run

  uint32_t batch = 0;
  uint32_t m = 0;
  p.rows_per_batch_div.divmod(blockIdx.x, batch, m);
  const TIn* in =
      static_cast<const TIn*>(p.in.ptr) + batch * p.in.batch_stride + m * p.in.row_stride;
  const int nvec = p.cols / kVecElems;
  const int threads = blockDim.x;
  const uint64_t keep = device::l2_evict_last_policy();
  const uint64_t drop = device::l2_evict_first_policy();
  auto load_row = [&](int j, uint64_t policy) {
    Packed8<TIn> v;
    v.raw = j < nvec ? device::load_16_hinted(in + j * kVecElems, policy) : make_uint4(0, 0, 0, 0);
    return v;
  };

  // ---- Pass 1: sum of squares ------------------------------------------------
  float sum_sq = 0.0f;
  for (int base = threadIdx.x; base < nvec; base += kVecs * threads) {
    Packed8<TIn> x[kVecs];
#pragma unroll
    for (int i = 0; i < kVecs; ++i) x[i] = load_row(base + i * threads, keep);
#pragma unroll
    for (int i = 0; i < kVecs; ++i) {
      float a[8];
      device::unpack(x[i], a);
#pragma unroll
      for (int e = 0; e < 8; ++e) sum_sq += a[e] * a[e];
    }
  }
  sum_sq = device::row_allreduce(sum_sq, device::SumOp{}, scratch, threads / 32, 0,
                                 threadIdx.x / 32);
  const float inv_rms = rsqrtf(sum_sq / static_cast<float>(p.cols) + p.eps);

  // ---- Pass 2: the row again (from L2) with the weight -------------------------
  const bool fp8 = p.epilogue == Epilogue::kFp8Static;
  const device::Fp8Divisor divisor = fp8 ? device::fp8_divisor(*p.static_scale) : device::Fp8Divisor{};
  const int64_t out_offset = batch * p.out.batch_stride + m * p.out.row_stride;
  const auto* weight = static_cast<const Bf16*>(p.weight);
  for (int base = threadIdx.x; base < nvec; base += kVecs * threads) {
    Packed8<TIn> x[kVecs];
    Packed8<Bf16> w[kVecs];
#pragma unroll
    for (int i = 0; i < kVecs; ++i) {
      const int j = base + i * threads;
      x[i] = load_row(j, drop);
      w[i].raw = j < nvec ? device::load_16_hinted(weight + j * kVecElems, keep)
                          : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int i = 0; i < kVecs; ++i) {
      const int j = base + i * threads;
      if (j >= nvec) continue;
      float y[8], wf[8];
      device::unpack(x[i], y);
      device::unpack(w[i], wf);
#pragma unroll
      for (int e = 0; e < 8; ++e) y[e] = (y[e] * inv_rms) * wf[e];
      if (fp8) {
        device::store8_fp8(static_cast<__nv_fp8_e4m3*>(p.out.ptr) + out_offset + j * kVecElems,
                           y, divisor);
      } else {
        device::store_packed(static_cast<Bf16*>(p.out.ptr) + out_offset + j * kVecElems,
                             device::pack_bf16(y));
      }
    }
  }
}

// Host-side launcher: one CTA per row of looped_threads(cols) threads.
template <Prologue kPrologue, class TIn>
cudaError_t launch_looped_kernel(const RowwiseParams& params, const LaunchConfig& launch_config,
                                 cudaStream_t stream) {
  detail::LaunchShape shape;
  shape.grid = dim3(static_cast<unsigned>(params.num_batches * params.rows_per_batch));
  shape.block = dim3(static_cast<unsigned>(launch_config.looped_threads));
  return detail::launch_kernel(looped_kernel<kPrologue, TIn>, shape, stream, params);
}

}  // namespace hpc_ops::rowwise
