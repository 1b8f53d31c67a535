// SPDX-License-Identifier: Apache-2.0
// The row-wise kernel: one pass over HBM for RMSNorm, fused add + RMSNorm,
// gated activations and FP8 quantization.
//
// Geometry: a CTA holds rows_per_cta rows; a row is owned by warps_per_row
// warps; thread t of a row owns the 8-element vectors t, t + T, t + 2T, ...
// (T = threads per row), so a warp's accesses are contiguous 512-byte runs.
// Phases: (1) every load of the row issued before any use, (2) prologue math in
// float32 registers, with a row reduction for RMSNorm, (3) epilogue: bf16
// store, or FP8 with a static, per-token or per-1x128-group scale. A 1x128
// group is 16 vectors = 16 consecutive lanes (a half-warp), so group maxima are
// 4 shuffles with no shared memory.
#pragma once

#include <cuda_runtime.h>

#include "common/reduce.cuh"
#include "common/vec.cuh"
#include "hpc_ops/core/dtype.h"
#include "hpc_ops/quantization.h"
#include "rowwise/rowwise_config.h"
#include "rowwise/rowwise_params.h"

namespace hpc_ops::rowwise {

__device__ __forceinline__ float silu(float g) { return g / (1.0f + __expf(-g)); }

__device__ __forceinline__ float gelu_tanh(float g) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  return 0.5f * g * (1.0f + tanhf(kSqrt2OverPi * (g + 0.044715f * g * g * g)));
}

// max(amax, kMinAmax) / 448, keeping NaN (fmaxf would drop it).
__device__ __forceinline__ float dynamic_scale(float amax) {
  return (amax != amax ? amax : fmaxf(amax, kMinAmax)) * (1.0f / kFp8E4M3Max);
}

__device__ __forceinline__ float abs_max8(const float (&v)[8]) {
  device::AbsMaxOp op;
  float a = 0.0f;
#pragma unroll
  for (int e = 0; e < 8; ++e) a = op(a, fabsf(v[e]));
  return a;
}

template <Prologue kPrologue, class TIn, int kVecs>
__global__ void __launch_bounds__(max_threads_for_vecs(kVecs))
    rowwise_kernel(const __grid_constant__ RowwiseParams p) {
  using device::kVecElems;
  __shared__ float scratch[32];

  // ---- Which row this thread works on --------------------------------------
  const int threads_per_row = p.warps_per_row * 32;
  const int row_in_cta = threadIdx.x / threads_per_row;
  const int tid = threadIdx.x - row_in_cta * threads_per_row;
  const int warp_in_row = tid / 32;
  const int64_t flat_row = static_cast<int64_t>(blockIdx.x) * p.rows_per_cta + row_in_cta;
  int64_t batch = 0;
  int64_t m = 0;
  bool active = flat_row < p.num_batches * p.rows_per_batch;
  if (active) {
    batch = flat_row / p.rows_per_batch;
    m = flat_row - batch * p.rows_per_batch;
    if (p.batch_row_counts != nullptr) active = m < p.batch_row_counts[batch];
  }
  // Rows of one CTA reduce through shared memory together, so threads of an
  // inactive row stay until the CTA has no active row at all.
  if (p.rows_per_cta == 1) {
    if (!active) return;
  } else if (!__syncthreads_or(active)) {
    return;
  }

  const int nvec = p.cols / kVecElems;
  const TIn* in = static_cast<const TIn*>(p.in.ptr) + batch * p.in.batch_stride + m * p.in.row_stride;

  // ---- Phase 1: loads (all issued before any store) --------------------------
  float v[kVecs][kVecElems];
  bool valid[kVecs];
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    const int j = tid + i * threads_per_row;
    valid[i] = active && j < nvec;
#pragma unroll
    for (int e = 0; e < kVecElems; ++e) v[i][e] = 0.0f;
    if (valid[i]) device::load8(in + j * kVecElems, v[i]);
  }

  uint4 weight_raw[kVecs];  // raw bf16 weights, fetched early to overlap their latency
  if constexpr (kPrologue == Prologue::kRmsNorm || kPrologue == Prologue::kAddRmsNorm) {
    const auto* w = static_cast<const uint4*>(p.weight);
#pragma unroll
    for (int i = 0; i < kVecs; ++i) {
      const int j = tid + i * threads_per_row;
      weight_raw[i] = valid[i] ? __ldg(w + j) : make_uint4(0, 0, 0, 0);
    }
  }

  if constexpr (kPrologue == Prologue::kAddRmsNorm) {
    const auto* res = static_cast<const __nv_bfloat16*>(p.residual.ptr) +
                      batch * p.residual.batch_stride + m * p.residual.row_stride;
    auto* res_out = static_cast<__nv_bfloat16*>(p.residual_out.ptr) +
                    batch * p.residual_out.batch_stride + m * p.residual_out.row_stride;
    float r[kVecs][kVecElems];
#pragma unroll
    for (int i = 0; i < kVecs; ++i) {
      const int j = tid + i * threads_per_row;
#pragma unroll
      for (int e = 0; e < kVecElems; ++e) r[i][e] = 0.0f;
      if (valid[i]) device::load8(res + j * kVecElems, r[i]);
    }
    // The norm is taken of the residual as stored (bf16), so out equals
    // rms_norm(residual_out) exactly as an unfused sequence would compute it.
#pragma unroll
    for (int i = 0; i < kVecs; ++i) {
      const int j = tid + i * threads_per_row;
#pragma unroll
      for (int e = 0; e < kVecElems; ++e) v[i][e] += r[i][e];
      device::round_to_bf16(v[i]);
      if (valid[i]) device::store8(res_out + j * kVecElems, v[i]);
    }
  }

  if constexpr (kPrologue == Prologue::kSiluMul || kPrologue == Prologue::kGeluTanhMul) {
    float up[kVecs][kVecElems];
#pragma unroll
    for (int i = 0; i < kVecs; ++i) {
      const int j = tid + i * threads_per_row;
#pragma unroll
      for (int e = 0; e < kVecElems; ++e) up[i][e] = 0.0f;
      if (valid[i]) device::load8(in + p.cols + j * kVecElems, up[i]);
    }
    // ---- Phase 2 (activations): y = act(gate) * up ----------------------------
#pragma unroll
    for (int i = 0; i < kVecs; ++i) {
#pragma unroll
      for (int e = 0; e < kVecElems; ++e) {
        const float g = v[i][e];
        v[i][e] = (kPrologue == Prologue::kSiluMul ? silu(g) : gelu_tanh(g)) * up[i][e];
      }
    }
  }

  // ---- Phase 2 (norms): y = x * rsqrt(mean(x^2) + eps) * w ----------------------
  if constexpr (kPrologue == Prologue::kRmsNorm || kPrologue == Prologue::kAddRmsNorm) {
    float sum_sq = 0.0f;
#pragma unroll
    for (int i = 0; i < kVecs; ++i) {
#pragma unroll
      for (int e = 0; e < kVecElems; ++e) sum_sq += v[i][e] * v[i][e];
    }
    sum_sq = device::row_allreduce(sum_sq, device::SumOp{}, scratch, p.warps_per_row, row_in_cta,
                                   warp_in_row);
    const float inv_rms = rsqrtf(sum_sq / static_cast<float>(p.cols) + p.eps);
#pragma unroll
    for (int i = 0; i < kVecs; ++i) {
      const auto* w2 = reinterpret_cast<const __nv_bfloat162*>(&weight_raw[i]);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float2 w = __bfloat1622float2(w2[e]);
        v[i][2 * e] = (v[i][2 * e] * inv_rms) * w.x;
        v[i][2 * e + 1] = (v[i][2 * e + 1] * inv_rms) * w.y;
      }
    }
  }

  // ---- Phase 3: epilogue -------------------------------------------------------
  const Epilogue epilogue = p.epilogue;
  const int64_t out_offset = batch * p.out.batch_stride + m * p.out.row_stride;
  if (epilogue == Epilogue::kStoreBf16) {
    auto* out = static_cast<__nv_bfloat16*>(p.out.ptr) + out_offset;
#pragma unroll
    for (int i = 0; i < kVecs; ++i) {
      if (valid[i]) device::store8(out + (tid + i * threads_per_row) * kVecElems, v[i]);
    }
    return;
  }

  auto* out = static_cast<__nv_fp8_e4m3*>(p.out.ptr) + out_offset;
  float* scale_row = p.scale_out == nullptr
                         ? nullptr
                         : p.scale_out + batch * p.scale_batch_stride + m * p.scale_row_stride;
  if (epilogue == Epilogue::kFp8PerGroup) {
#pragma unroll
    for (int i = 0; i < kVecs; ++i) {
      const int j = tid + i * threads_per_row;
      // All 32 lanes take part in the shuffles; lanes past the row end hold zeros.
      const float amax = device::warp_allreduce<16>(abs_max8(v[i]), device::AbsMaxOp{});
      const float scale = dynamic_scale(amax);
      if (valid[i]) {
        if (j % 16 == 0) scale_row[(j / 16) * p.scale_group_stride] = scale;
        device::store8_fp8(out + j * kVecElems, v[i], 1.0f / scale);
      }
    }
    return;
  }

  float scale;
  if (epilogue == Epilogue::kFp8Static) {
    scale = *p.static_scale;
  } else {  // kFp8PerToken or kAmaxOnly
    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < kVecs; ++i) amax = device::AbsMaxOp{}(amax, abs_max8(v[i]));
    amax = device::row_allreduce(amax, device::AbsMaxOp{}, scratch, p.warps_per_row, row_in_cta,
                                 warp_in_row);
    scale = dynamic_scale(amax);
    if (epilogue == Epilogue::kAmaxOnly) {
      // Non-negative floats order like their bit patterns (NaN above +inf), so
      // an integer max over the bits is a float max that keeps NaN.
      if (active && tid == 0) atomicMax(reinterpret_cast<int*>(p.scale_out), __float_as_int(scale));
      return;
    }
    if (active && tid == 0) scale_row[0] = scale;
  }
  const float inv_scale = 1.0f / scale;
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    if (valid[i]) device::store8_fp8(out + (tid + i * threads_per_row) * kVecElems, v[i], inv_scale);
  }
}

// Host-side launcher of one instantiation (the registry stores its address).
template <Prologue kPrologue, class TIn, int kVecs>
void launch_rowwise_kernel(const RowwiseParams& params, const RowwiseConfig& config,
                           cudaStream_t stream) {
  rowwise_kernel<kPrologue, TIn, kVecs>
      <<<static_cast<unsigned>(config.grid), config.threads_per_cta(), 0, stream>>>(params);
}

}  // namespace hpc_ops::rowwise
