// SPDX-License-Identifier: Apache-2.0
// Instantiations of the RoPE + KV-write kernels: per-row and streaming, per
// head dim (64, 128, 256) and cache dtype (BF16, FP8), the streaming one also
// with and without heads in phases by kind: 18 kernels.
#include "common/launch.h"
#include "rope/rope_kernel.cuh"
#include "rope/rope_kernels.h"
#include "rope/rope_stream_kernel.cuh"

namespace hpc_ops::rope {
namespace {

template <int kD>
cudaError_t launch_per_row(bool fp8, dim3 grid, const RopeParams& params, cudaStream_t stream) {
  detail::LaunchShape shape;
  shape.grid = grid;
  shape.block = dim3(kRopeThreads);
  return fp8 ? detail::launch_kernel(rope_kv_write_kernel<kD, true>, shape, stream, params)
             : detail::launch_kernel(rope_kv_write_kernel<kD, false>, shape, stream, params);
}

// Whether the streaming consumers take a row's heads in phases by kind
// (rope_stream_kernel's kPhased): where the kinds' code differs most. (k norm
// weights come only with q ones: rope.cc checks it, the kernels test q's.)
// NOTE: phases took Qwen3 1x16K (QK norm) BF16 173.1 -> 170.1 us, FP8
// per-tensor 170.7 -> 167.8 and with dynamic scales 154.7 -> 142.0; phased,
// Llama-8B (no norm) ran 116.4 -> 119.4 (another run): its 32 q heads leave the q phase's
// second heads empty and its 8 k heads take a step of their own. Both ways in
// one kernel (a runtime choice) spilled and cost 3-10% (docs/perf/rope.md v12b).
bool stream_heads_in_phases(const RopeParams& params) {
  return params.q_norm_weight != nullptr ||
         (params.kv_fp8 && (params.q_scale_out != nullptr || params.k_scale_out != nullptr));
}

template <int kD, bool kFp8, bool kPhased>
cudaError_t launch_stream(int ctas, const RopeParams& params, cudaStream_t stream) {
  detail::LaunchShape shape;
  shape.grid = dim3(static_cast<unsigned>(ctas));
  shape.block = dim3(kStreamThreads);
  shape.smem_bytes = static_cast<size_t>(params.stages) * params.stage_bytes;
  return detail::launch_with_smem_opt_in<&rope_stream_kernel<kD, kFp8, kPhased>,
                                         kStreamSharedBytesPerCta>(shape, stream, params);
}

template <int kD>
cudaError_t launch_stream_for(int ctas, const RopeParams& params, cudaStream_t stream) {
  const bool phased = stream_heads_in_phases(params);
  if (params.kv_fp8) {
    return phased ? launch_stream<kD, true, true>(ctas, params, stream)
                  : launch_stream<kD, true, false>(ctas, params, stream);
  }
  return phased ? launch_stream<kD, false, true>(ctas, params, stream)
                : launch_stream<kD, false, false>(ctas, params, stream);
}

}  // namespace

cudaError_t launch_rope_kv_write(const RopeParams& params, int head_dim, cudaStream_t stream) {
  const int heads = params.num_q_heads + 2 * params.num_kv_heads;
  const dim3 grid(static_cast<unsigned>(params.rows),
                  static_cast<unsigned>((heads + params.heads_per_cta - 1) / params.heads_per_cta));
  const bool fp8 = params.kv_fp8;
  switch (head_dim) {
    case 64: return launch_per_row<64>(fp8, grid, params, stream);
    case 128: return launch_per_row<128>(fp8, grid, params, stream);
    case 256: return launch_per_row<256>(fp8, grid, params, stream);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t launch_rope_stream(const RopeParams& params, int head_dim, int ctas, cudaStream_t stream) {
  switch (head_dim) {
    case 64: return launch_stream_for<64>(ctas, params, stream);
    case 128: return launch_stream_for<128>(ctas, params, stream);
    case 256: return launch_stream_for<256>(ctas, params, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace hpc_ops::rope
