// SPDX-License-Identifier: Apache-2.0
// The bulk-copy kernel of the row-wise engine, for rows too wide to hold in
// registers: the copy engine (cp.async.bulk, see common/bulk_copy.cuh)
// stages work items in shared memory, `stages` items ahead of the threads
// that compute on them.
//
// A work item is one chunk of one row: the whole row when a row statistic is
// needed (RMSNorm, per-token scales), else up to kBulkChunkCols columns. Its
// inputs (x; or x and the residual; or gate and up) are one contiguous copy
// each. A persistent grid of `ctas_per_sm` CTAs per SM takes items
// blockIdx.x, blockIdx.x + gridDim.x, ...; item k of a CTA lives in stage
// k % stages. Thread 0 issues the copies; after every thread is done with a
// stage (a __syncthreads) it refills that stage with the item `stages` ahead.
//
// NOTE: where it runs. It was written to lift the bytes in flight per SM above
// what registers allow (1-3 CTAs x up to 8 stages, 100-200 KB per SM), but on
// the H200 the register and streaming kernels matched or beat it on the model
// shapes (RMSNorm 4096 x 7168: 32.2 us register vs 39.5 bulk; SiLU-and-mul +
// FP8 per-group at C = 14336: 91.9 stream vs 98.7 bulk; static: 80.7 vs 79.9):
// with whole rows per item, a CTA waits at three barriers per row. It runs by
// default only for rows wider than 16384 columns, where the register kernel's
// 16-vector variant spills (HPC_OPS_ROWWISE_BULK=1 forces it, for tests).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>

#include "common/bulk_copy.cuh"
#include "rowwise/rowwise_kernel.cuh"

namespace hpc_ops::rowwise {

// Where a work item lives.
struct BulkItem {
  uint32_t batch;
  uint32_t m;        // row within the batch
  int col0_vec;      // first vector of the chunk
  int vecs;          // vectors in the chunk
  bool active;       // false: a masked (padding) row
};

__device__ __forceinline__ BulkItem decode_bulk_item(const RowwiseParams& p, uint32_t item) {
  BulkItem it;
  uint32_t row, chunk;
  p.items_per_row_div.divmod(item, row, chunk);
  p.rows_per_batch_div.divmod(row, it.batch, it.m);
  const int chunk_vecs = p.chunk_cols / device::kVecElems;
  it.col0_vec = static_cast<int>(chunk) * chunk_vecs;
  it.vecs = min(chunk_vecs, p.cols / device::kVecElems - it.col0_vec);
  it.active = p.batch_row_counts == nullptr || static_cast<int>(it.m) < p.batch_row_counts[it.batch];
  return it;
}

// Calls f(j) for this thread's vectors j = tid, tid + T, ... below `vecs`,
// kBulkUnroll at a time: the unrolled calls are independent, so their shared
// memory loads issue together (one at a time, each pass was latency-bound at
// 16-24 warps per SM: 41% issue utilization, 2.8 TB/s for RMSNorm).
constexpr int kBulkUnroll = 4;
template <class F>
__device__ __forceinline__ void for_each_vec(int vecs, F&& f) {
  for (int base = threadIdx.x; base < vecs; base += kBulkUnroll * kBulkThreads) {
#pragma unroll
    for (int u = 0; u < kBulkUnroll; ++u) {
      const int j = base + u * kBulkThreads;
      if (j < vecs) f(j);
    }
  }
}

// NOTE: at most 85 registers, so 3 CTAs of 256 threads fit per SM.
template <Prologue kPrologue, class TIn>
__global__ void __launch_bounds__(kBulkThreads, 3)
    bulk_kernel(const __grid_constant__ RowwiseParams p) {
  using device::kVecElems;
  using device::Packed8;
  using Bf16 = __nv_bfloat16;
  constexpr bool kNorm = kPrologue == Prologue::kRmsNorm || kPrologue == Prologue::kAddRmsNorm;
  constexpr bool kAdd = kPrologue == Prologue::kAddRmsNorm;
  constexpr bool kGated = kPrologue == Prologue::kSiluMul || kPrologue == Prologue::kGeluTanhMul;
  constexpr int kInputs = kAdd || kGated ? 2 : 1;
  constexpr int kWarps = kBulkThreads / 32;

  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ float scratch[2 * kWarps];  // room for a pair reduction
  rowwise_enter<kPrologue>(p);  // first: earlier kernels may still run
  uint64_t* full = reinterpret_cast<uint64_t*>(smem);  // one barrier per stage
  auto buffer = [&](int stage, int input) {
    return reinterpret_cast<Packed8<TIn>*>(smem + p.buffers_offset +
                                           (stage * kInputs + input) * p.buffer_bytes);
  };

  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int items = static_cast<int>(p.num_batches * p.rows_per_batch) *
                    static_cast<int>(p.items_per_row_div.divisor);
  const int stages = p.stages;

  if (tid == 0) {
    for (int s = 0; s < stages; ++s) device::mbarrier_init(&full[s], 1);
    device::fence_barrier_init();
  }
  __syncthreads();
  // RMSNorm weight: read per row through L1 (hits after the first row); staged
  // in shared memory it cost a stage (14 KB at hidden 7168) per CTA.
  const auto* weight = static_cast<const uint4*>(p.weight);
  auto weight_vec = [&](int j) { return Packed8<Bf16>{__ldg(weight + j)}; };

  // Thread 0: load this CTA's item k into `stage` (= k % stages).
  auto issue = [&](int k, int stage) {
    const int64_t item = blockIdx.x + int64_t{k} * gridDim.x;
    if (item >= items) return;
    uint64_t* bar = &full[stage];
    const BulkItem it = decode_bulk_item(p, static_cast<uint32_t>(item));
    if (!it.active) {
      device::mbarrier_arrive(bar);  // completes the phase; nothing is read
      return;
    }
    const uint32_t bytes = static_cast<uint32_t>(it.vecs * sizeof(Packed8<TIn>));
    device::mbarrier_arrive_expect_tx(bar, kInputs * bytes);
    const TIn* in = static_cast<const TIn*>(p.in.ptr) + it.batch * p.in.batch_stride +
                    it.m * p.in.row_stride + it.col0_vec * kVecElems;
    device::bulk_copy_g2s(buffer(stage, 0), in, bytes, bar);
    if constexpr (kGated) device::bulk_copy_g2s(buffer(stage, 1), in + p.cols, bytes, bar);
    if constexpr (kAdd) {
      const TIn* res = static_cast<const TIn*>(p.residual.ptr) + it.batch * p.residual.batch_stride +
                       it.m * p.residual.row_stride;
      device::bulk_copy_g2s(buffer(stage, 1), res, bytes, bar);
    }
  };
  if (tid == 0) {
    for (int k = 0; k < stages; ++k) issue(k, k);
  }

  const device::Fp8Divisor static_divisor =
      p.epilogue == Epilogue::kFp8Static ? device::fp8_divisor(*p.static_scale) : device::Fp8Divisor{};
  float amax_acc = 0.0f;  // kAmaxOnly, over all of this thread's items

  int stage = 0;
  uint32_t phase = 0;  // parity of stage's current use: (k / stages) & 1
  for (int k = 0;; ++k) {
    const int64_t item = blockIdx.x + int64_t{k} * gridDim.x;
    if (item >= items) break;
    const BulkItem it = decode_bulk_item(p, static_cast<uint32_t>(item));
    if (it.active) {
      device::mbarrier_wait(&full[stage], phase);
      Packed8<TIn>* a = buffer(stage, 0);
      const Packed8<TIn>* b = buffer(stage, 1);

      // ---- prologue: residual add (written back to the stage) and row statistics
      float inv_rms = 1.0f;
      // After RMSNorm, max|y| = inv_rms * max|x * w| (see rowwise_kernel.cuh).
      const bool fused_amax = kNorm && p.epilogue == Epilogue::kFp8PerToken;
      float amax_xw = 0.0f;
      if constexpr (kNorm) {
        Bf16* res_out = kAdd ? static_cast<Bf16*>(p.residual_out.ptr) +
                                   it.batch * p.residual_out.batch_stride +
                                   it.m * p.residual_out.row_stride
                             : nullptr;
        float sum_sq = 0.0f;
        for_each_vec(it.vecs, [&](int j) {
          Packed8<TIn> x = device::load_shared(a + j);
          if constexpr (kAdd) {
            // The norm is taken of the residual as stored (bf16), as an
            // unfused sequence computes it.
            float u[8], v[8];
            device::unpack(x, u);
            device::unpack(device::load_shared(b + j), v);
#pragma unroll
            for (int e = 0; e < 8; ++e) u[e] += v[e];
            x = device::pack_bf16(u);
            device::store_shared(a + j, x);
            device::store_packed(res_out + j * kVecElems, x);
          }
          float u[8];
          device::unpack(x, u);
#pragma unroll
          for (int e = 0; e < 8; ++e) sum_sq += u[e] * u[e];
          if (fused_amax) amax_xw = device::AbsMaxOp{}(amax_xw, abs_max_product8(u, weight_vec(j)));
        });
        if (fused_amax) {
          device::row_allreduce_pair(sum_sq, amax_xw, device::SumOp{}, device::AbsMaxOp{}, scratch,
                                     kWarps, 0, warp);
        } else {
          sum_sq = device::row_allreduce(sum_sq, device::SumOp{}, scratch, kWarps, 0, warp);
        }
        inv_rms = rsqrtf(sum_sq / static_cast<float>(p.cols) + p.eps);
      }

      // Output vector j of the chunk (zeros past its end).
      auto output = [&](int j, float (&y)[8]) {
        if (j >= it.vecs) {
#pragma unroll
          for (int e = 0; e < 8; ++e) y[e] = 0.0f;
          return;
        }
        device::unpack(device::load_shared(a + j), y);
        if constexpr (kNorm) {
          float w[8];
          device::unpack(weight_vec(j), w);
#pragma unroll
          for (int e = 0; e < 8; ++e) y[e] = (y[e] * inv_rms) * w[e];
        }
        if constexpr (kGated) apply_gate<kPrologue>(y, device::load_shared(b + j));
      };

      // ---- epilogue ---------------------------------------------------------------
      const int64_t out_offset = it.batch * p.out.batch_stride + it.m * p.out.row_stride +
                                 int64_t{it.col0_vec} * kVecElems;
      float* scale_row = p.scale_out == nullptr ? nullptr
                                                : p.scale_out + it.batch * p.scale_batch_stride +
                                                      it.m * p.scale_row_stride;
      auto* out8 = static_cast<__nv_fp8_e4m3*>(p.out.ptr) + out_offset;
      switch (p.epilogue) {
        case Epilogue::kStoreBf16: {
          Bf16* out = static_cast<Bf16*>(p.out.ptr) + out_offset;
          for_each_vec(it.vecs, [&](int j) {
            float y[8];
            output(j, y);
            device::store_packed(out + j * kVecElems, device::pack_bf16(y));
          });
          break;
        }
        case Epilogue::kFp8Static:
          for_each_vec(it.vecs, [&](int j) {
            float y[8];
            output(j, y);
            device::store8_fp8(out8 + j * kVecElems, y, static_divisor);
          });
          break;
        case Epilogue::kFp8PerGroup:
          // A 1x128 group is 16 vectors = 16 consecutive lanes (chunks start at
          // multiples of 128 columns); the loop bound is uniform so every lane
          // reaches the shuffles.
#pragma unroll 2
          for (int base = 0; base < it.vecs; base += kBulkThreads) {
            const int j = base + tid;
            float y[8];
            output(j, y);
            const float amax = device::warp_allreduce<16>(abs_max8(y), device::AbsMaxOp{});
            const float scale = dynamic_scale(amax);
            if (j < it.vecs) {
              if (j % 16 == 0) {
                scale_row[((it.col0_vec + j) / 16) * p.scale_group_stride] = scale;
              }
              device::store8_fp8(out8 + j * kVecElems, y, device::fp8_divisor(scale));
            }
          }
          break;
        case Epilogue::kAmaxOnly:
          for_each_vec(it.vecs, [&](int j) {
            float y[8];
            output(j, y);
            amax_acc = device::AbsMaxOp{}(amax_acc, abs_max8(y));
          });
          break;
        case Epilogue::kFp8PerToken: {  // items are whole rows
          float amax = inv_rms * amax_xw;
          if (!fused_amax) {
            amax = 0.0f;
            for_each_vec(it.vecs, [&](int j) {
              float y[8];
              output(j, y);
              amax = device::AbsMaxOp{}(amax, abs_max8(y));
            });
            amax = device::row_allreduce(amax, device::AbsMaxOp{}, scratch, kWarps, 0, warp);
          }
          const float scale = dynamic_scale(amax);
          if (tid == 0) scale_row[0] = scale;
          const device::Fp8Divisor divisor = device::fp8_divisor(scale);
          for_each_vec(it.vecs, [&](int j) {
            float y[8];
            output(j, y);
            device::store8_fp8(out8 + j * kVecElems, y, divisor);
          });
          break;
        }
      }
      // The residual add wrote the stage through the generic proxy; order that
      // before the copy engine refills it.
      if constexpr (kAdd) device::fence_proxy_async_shared();
    }
    __syncthreads();  // every thread is done with this stage
    if (tid == 0) issue(k + stages, stage);
    if (++stage == stages) {
      stage = 0;
      phase ^= 1u;
    }
  }

  if (p.epilogue == Epilogue::kAmaxOnly) publish_warp_amax(p.scale_out, amax_acc);
}

// Host-side launcher of one instantiation. Dynamic shared memory above 48 KB
// needs an opt-in per kernel and device; it is raised when a launch needs more
// than any before (a host call, never on the steady-state path).
template <Prologue kPrologue, class TIn>
cudaError_t launch_bulk_kernel(const RowwiseParams& params, const LaunchConfig& launch_config,
                               cudaStream_t stream) {
  const BulkConfig& config = launch_config.bulk;
  auto* kernel = bulk_kernel<kPrologue, TIn>;
  static int opted_in[64] = {};  // bytes, per device; a benign race sets it twice
  int device = 0;
  if (cudaGetDevice(&device) == cudaSuccess && device >= 0 && device < 64 &&
      config.smem_bytes > opted_in[device]) {
    // A failure resurfaces as the launch error, which the caller checks. The
    // carveout preference asks for all 228 KB as shared memory, so that
    // ctas_per_sm CTAs are resident (the driver may otherwise pick less).
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             config.smem_bytes) == cudaSuccess &&
        cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                             cudaSharedmemCarveoutMaxShared) == cudaSuccess) {
      opted_in[device] = config.smem_bytes;
    }
  }
  detail::LaunchShape shape;
  shape.grid = dim3(static_cast<unsigned>(config.grid));
  shape.block = dim3(kBulkThreads);
  shape.smem_bytes = static_cast<size_t>(config.smem_bytes);
  return detail::launch_kernel(kernel, shape, stream, params);
}

}  // namespace hpc_ops::rowwise
