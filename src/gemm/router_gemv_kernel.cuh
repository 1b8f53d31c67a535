// SPDX-License-Identifier: Apache-2.0
// Router GEMM for a few tokens, on the CUDA cores: y = x @ (w[0] + .. +
// w[P-1])^T with the parts added back into the fp32 weight (exact: three
// parts hold it, two parts' sum has at most 17 significant bits) and fp32
// fused multiply-adds, so the error is an fp32 GEMV's.
//
// At decode sizes the router GEMM is a stream of its weights (N x K x P bf16,
// 11 MB for DeepSeek-V3 with 3 parts) with a few FLOPs per byte; the
// tensor-core kernel (router_gemm_kernel.cuh) needs a K split reduced through
// global memory for that and spent 8-10 us at M = 1.
//
// A CTA (kGemvThreads threads) owns kRouterGemvChannels output channels, a
// range of K and up to kRouterGemvTokens tokens (kT = 1 for a single-token
// call). The CTAs of one cluster share the channels and split K; each thread
// walks 8-element chunks of its range (consecutive threads, consecutive
// 16-byte chunks of a weight row), keeping channels x tokens sums; the sums meet through warp shuffles, shared memory and, across the
// cluster, distributed shared memory in rank order (the result does not
// depend on timing).
#pragma once

#include <cooperative_groups.h>
#include <cuda_bf16.h>

#include <cstdint>

#include "common/bulk_copy.cuh"
#include "common/pdl.cuh"
#include "common/vec.cuh"
#include "gemm/router_gemm_config.h"
#include "gemm/router_gemm_params.h"

namespace hpc_ops::gemm {

namespace cg = cooperative_groups;

constexpr int kGemvThreads = 128;
constexpr int kGemvWarps = kGemvThreads / 32;

// One 8-element chunk of channel c's weight, added back to fp32.
template <int kParts>
__device__ __forceinline__ void weight_chunk(const uint4 (&raw)[kParts], float (&w)[8]) {
  device::unpack(reinterpret_cast<const device::Packed8<__nv_bfloat16>&>(raw[0]), w);
#pragma unroll
  for (int p = 1; p < kParts; ++p) {
    float part[8];
    device::unpack(reinterpret_cast<const device::Packed8<__nv_bfloat16>&>(raw[p]), part);
#pragma unroll
    for (int e = 0; e < 8; ++e) w[e] += part[e];
  }
}

// kT: tokens per CTA, 1 (a single-token call) or kRouterGemvTokens.
template <int kParts, int kT>
__global__ void __launch_bounds__(kGemvThreads)
    router_gemv_kernel(const __grid_constant__ RouterGemvParams p) {
  constexpr int kC = kRouterGemvChannels;
  __shared__ float warp_sums[kGemvWarps][kC * kT];
  __shared__ float cta_sums[kC * kT];
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank());
  const int ranks = static_cast<int>(cluster.num_blocks());
  const int channel0 = static_cast<int>(blockIdx.x) / ranks * kC;
  const int token0 = static_cast<int>(blockIdx.y) * kRouterGemvTokens;
  const int tokens = min(kT, p.m - token0);  // kT = 1 only when M = 1
  const int chunks = p.k / 8;
  const int per_rank = (chunks + ranks - 1) / ranks;
  const int chunk_begin = rank * per_rank;
  const int chunk_end = min(chunk_begin + per_rank, chunks);
  const uint8_t* w = static_cast<const uint8_t*>(p.w);

  // The weights were written before the previous kernel at the latest, or by
  // it: pull this CTA's rows into L2 now, load them after the wait.
  if (threadIdx.x < kParts * kC && chunk_end > chunk_begin) {
    const int part = static_cast<int>(threadIdx.x) / kC, c = static_cast<int>(threadIdx.x) % kC;
    if (channel0 + c < p.n) {
      device::prefetch_l2_bulk(w + part * p.w_part_stride_bytes + (channel0 + c) * p.w_row_stride_bytes +
                                   int64_t{chunk_begin} * 16,
                               static_cast<uint32_t>(chunk_end - chunk_begin) * 16);
    }
  }
  device::pdl_enter();

  float acc[kC][kT];
#pragma unroll
  for (int c = 0; c < kC; ++c) {
#pragma unroll
    for (int t = 0; t < kT; ++t) acc[c][t] = 0.0f;
  }
  // NOTE: two chunks per pass, all their weight loads (2 x kC x kParts
  // 16-byte loads) issued before any use: at M = 1 a thread's whole range
  // (<= 2 chunks for DeepSeek-V3 on 4-CTA clusters) is then one round trip.
  constexpr int kUnroll = 2;
  for (int base = chunk_begin + static_cast<int>(threadIdx.x); base < chunk_end;
       base += kUnroll * kGemvThreads) {
    uint4 raw[kUnroll][kC][kParts];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int chunk = base + u * kGemvThreads;
#pragma unroll
      for (int c = 0; c < kC; ++c) {
        const bool valid = chunk < chunk_end && channel0 + c < p.n;
#pragma unroll
        for (int part = 0; part < kParts; ++part) {
          raw[u][c][part] = valid ? *reinterpret_cast<const uint4*>(
                                        w + part * p.w_part_stride_bytes +
                                        (channel0 + c) * p.w_row_stride_bytes + int64_t{chunk} * 16)
                                  : make_uint4(0, 0, 0, 0);
        }
      }
    }
    // x of every token (zeros past the CTA's tokens: no branch, so the
    // loads go out together; per-token branches made M = 16 wait for one
    // L2 round trip per token, 17.6 us), a chunk ahead of its use.
    uint4 x_raw[2][kT];
    auto load_x = [&](int u, uint4 (&dst)[kT]) {
      const int chunk = base + u * kGemvThreads;
#pragma unroll
      for (int t = 0; t < kT; ++t) {
        const auto* x = static_cast<const __nv_bfloat16*>(p.x);
        dst[t] = t < tokens && chunk < chunk_end
                     ? *reinterpret_cast<const uint4*>(x + int64_t{token0 + t} * p.x_row_stride +
                                                       int64_t{chunk} * 8)
                     : make_uint4(0, 0, 0, 0);
      }
    };
    load_x(0, x_raw[0]);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (u + 1 < kUnroll) load_x(u + 1, x_raw[(u + 1) % 2]);
      float wf[kC][8];
#pragma unroll
      for (int c = 0; c < kC; ++c) weight_chunk<kParts>(raw[u][c], wf[c]);
#pragma unroll
      for (int t = 0; t < kT; ++t) {
        float xf[8];
        device::unpack(reinterpret_cast<const device::Packed8<__nv_bfloat16>&>(x_raw[u % 2][t]), xf);
#pragma unroll
        for (int c = 0; c < kC; ++c) {
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[c][t] = fmaf(xf[e], wf[c][e], acc[c][t]);
        }
      }
    }
  }

  // Threads of a warp, then warps, then the cluster's CTAs, in a fixed order.
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
#pragma unroll
  for (int c = 0; c < kC; ++c) {
#pragma unroll
    for (int t = 0; t < kT; ++t) {
      float v = acc[c][t];
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
      if (lane == 0) warp_sums[warp][c * kT + t] = v;
    }
  }
  __syncthreads();
  if (threadIdx.x < kC * kT) {
    float v = warp_sums[0][threadIdx.x];
#pragma unroll
    for (int i = 1; i < kGemvWarps; ++i) v += warp_sums[i][threadIdx.x];
    cta_sums[threadIdx.x] = v;
  }
  cluster.sync();  // every CTA's sums are in its shared memory
  if (rank == 0 && threadIdx.x < kC * kT) {
    float v = cta_sums[threadIdx.x];
    for (int r = 1; r < ranks; ++r) v += cluster.map_shared_rank(cta_sums, r)[threadIdx.x];
    const int c = static_cast<int>(threadIdx.x) / kT, t = static_cast<int>(threadIdx.x) % kT;
    if (t < tokens && channel0 + c < p.n) {
      const int64_t at = int64_t{token0 + t} * p.y_row_stride + channel0 + c;
      if (p.y_fp32) {
        static_cast<float*>(p.y)[at] = v;
      } else {
        static_cast<__nv_bfloat16*>(p.y)[at] = __float2bfloat16(v);
      }
    }
  }
  cluster.sync();  // rank 0 is done reading the others' shared memory
}

}  // namespace hpc_ops::gemm
