// SPDX-License-Identifier: Apache-2.0
// Router GEMM: y = x @ W^T with bf16 activations and an fp32 weight, at
// near-fp32 accuracy on bf16 tensor cores (the MoE router's logits; N is the
// expert count, 64..512).
//
// The weight is held as P bf16 parts, W = w_parts[0] + ... + w_parts[P-1]
// (split_router_weight makes them; part i is the rounded remainder of the
// parts before it). Three parts hold an fp32 weight exactly, so the error is
// that of the summation alone (within 2x an fp32 GEMM's); two parts hold it
// to within 2^-16 of |W| (3-12x an fp32 GEMM's error, measured) and read
// 2/3 of the bytes. The parts are not scaled: bf16 has fp32's exponent
// range, so remainders need no scale to stay normal. Weights split with a
// power-of-two scale s (low = (W - high) / s) become parts by multiplying
// the low part by s once; that is exact.
//
// Tensors (last dim contiguous, row strides multiples of 16 bytes):
//   x        bf16 [M, K]
//   w_parts  bf16 [P, N, K], P = 2 or 3
//   y        bf16 or fp32 [M, N]
// K and N multiples of 16 (tails inside a tile are handled). M = 0 launches
// nothing.
//
// Up to 16 tokens run on the CUDA cores (the parts added back into fp32,
// fp32 FMAs: an fp32 GEMV's error); more on the tensor cores, where partial
// sums are added in fp32 every 64 of K. When the output tiles are
// fewer than the SMs, K is split over CTAs; their partial tiles go through
// `workspace` (uint8, at least router_gemm_workspace_bytes(device) bytes,
// zero-filled once before first use: the kernel leaves it as it found it).
// Calls sharing a workspace must not run concurrently. The result does not
// depend on the split's timing (partials are added in a fixed order).
// One launch, no host synchronization; CUDA-graph capturable.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "hpc_ops/core/tensor.h"

namespace hpc_ops {

// Bytes of the router GEMM workspace on `device` (a few MB; independent of
// the shapes).
int64_t router_gemm_workspace_bytes(int device);

void router_gemm(const Tensor& x, const Tensor& w_parts, const Tensor& y,
                 const Tensor& workspace, cudaStream_t stream);

// w fp32 [N, K] (last dim contiguous) -> w_parts bf16 [P, N, K] (contiguous,
// P = 2 or 3), for router_gemm. One launch.
void split_router_weight(const Tensor& w, const Tensor& w_parts, cudaStream_t stream);

}  // namespace hpc_ops
