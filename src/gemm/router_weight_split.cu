// SPDX-License-Identifier: Apache-2.0
// The fp32 -> bf16 parts split of a router weight (router_gemm.h): part 0 is
// bf16(w) rounded to nearest, each later part the rounded remainder. The
// remainders are exact in fp32 (w - bf16(w) has at most 16 significant bits),
// so three parts hold every normal fp32 weight exactly (each part adds 8 bits
// and a sign), two parts to within 2^-16 of |w|.
#include <cuda_bf16.h>

#include <algorithm>

#include "common/launch.h"
#include "common/pdl.cuh"
#include "gemm/router_gemm_kernels.h"

namespace hpc_ops::gemm {
namespace {

__global__ void split_router_weight_kernel(const float* __restrict__ w, int64_t w_row_stride,
                                           int64_t n, int64_t k, int parts,
                                           __nv_bfloat16* __restrict__ out) {
  device::pdl_enter();
  const int64_t count = n * k;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t row = i / k;
    float rest = w[row * w_row_stride + (i - row * k)];
    for (int part = 0; part < parts; ++part) {
      const __nv_bfloat16 piece = __float2bfloat16_rn(rest);
      out[part * count + i] = piece;
      rest -= __bfloat162float(piece);
    }
  }
}

}  // namespace

cudaError_t launch_split_router_weight(const float* w, int64_t w_row_stride, int64_t n, int64_t k,
                                       int parts, void* out, int num_sms, cudaStream_t stream) {
  detail::LaunchShape shape;
  const int64_t blocks = (n * k + 255) / 256;
  shape.grid = dim3(static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(blocks, 8 * num_sms))));
  shape.block = dim3(256);
  return detail::launch_kernel(&split_router_weight_kernel, shape, stream, w, w_row_stride, n, k,
                               parts, static_cast<__nv_bfloat16*>(out));
}

}  // namespace hpc_ops::gemm
