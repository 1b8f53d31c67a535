// SPDX-License-Identifier: Apache-2.0
// Instantiations and launchers of the decode-attention kernels, and the merge
// kernel that combines the partial results of units cut into pieces.
#include <cuda_runtime.h>

#include <algorithm>

#include "attention/decode_attention_kernel.cuh"
#include "common/cuda_check.h"
#include "common/launch.h"

namespace hpc_ops::attention {
namespace {

constexpr int kMergeThreads = 256;

// One warp per output row (unit, row): lane l owns columns 4l .. 4l + 3.
// Units of one piece were written by the attention kernel; units with no
// tiles (kv_len 0) get zeros and lse = -inf.
__global__ void __launch_bounds__(kMergeThreads) decode_merge_kernel(const __grid_constant__ DecodeParams p) {
  // Launched early (PDL): the partial results are complete only after this.
  device::pdl_wait_for_previous();
  const int64_t warp_id = (int64_t{blockIdx.x} * kMergeThreads + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  const int32_t* sched = p.schedule;
  const int32_t per_bin = sched[0], units = sched[2];
  if (warp_id >= int64_t{units} * p.rows) return;
  const int u = static_cast<int>(warp_id / p.rows), row = static_cast<int>(warp_id % p.rows);
  const ScheduleLayout layout = schedule_layout(p.batch, p.kv_heads, p.num_bins);
  const int32_t ts = sched[layout.tile_start + u], te = sched[layout.tile_start + u + 1];
  const int32_t pieces = unit_pieces(ts, te - ts, per_bin);
  if (pieces == 1) return;
  const int b = u / p.kv_heads, h = u - b * p.kv_heads;
  const int qi = row / p.group, hi = row - qi * p.group;
  const int64_t q_row = int64_t{b} * p.q_len + qi, head = int64_t{h} * p.group + hi;

  float m_all = -INFINITY;
  const int64_t first = int64_t{sched[layout.slot_start + u]} * p.rows + row;
  for (int k = 0; k < pieces; ++k) m_all = fmaxf(m_all, p.partial_lse[first + int64_t{k} * p.rows]);
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  float den = 0.0f;
  if (m_all != -INFINITY) {
    for (int k = 0; k < pieces; ++k) {
      const int64_t at = first + int64_t{k} * p.rows;
      const float f = exp2f(p.partial_lse[at] - m_all);
      const float4 v = *reinterpret_cast<const float4*>(p.partial_out + at * kDecodeHeadDim + lane * 4);
      den += f;
      acc.x += f * v.x;
      acc.y += f * v.y;
      acc.z += f * v.z;
      acc.w += f * v.w;
    }
  }
  const float inv = den > 0.0f ? 1.0f / den : 0.0f;
  __nv_bfloat16* dst = p.out + q_row * p.out_row_stride + head * p.out_head_stride + lane * 4;
  *reinterpret_cast<uint2*>(dst) = make_uint2(device::pack_bf16x2(acc.x * inv, acc.y * inv),
                                              device::pack_bf16x2(acc.z * inv, acc.w * inv));
  if (p.lse != nullptr && lane == 0) {
    p.lse[q_row * p.lse_row_stride + head * p.lse_head_stride] =
        den > 0.0f ? (m_all + log2f(den)) * 0.6931471805599453f : -INFINITY;
  }
}

int m_tiles_for(int rows) { return rows <= 16 ? 1 : rows <= 32 ? 2 : rows <= 64 ? 4 : 8; }

// Opts the variant into its dynamic shared memory on the current device (once).
template <int kMTiles, class Kv>
void prepare_variant(const char* op) {
  HPC_OPS_CUDA_CHECK(op, detail::once_per_device([] {
    return cudaFuncSetAttribute(decode_attention_kernel<kMTiles, Kv>,
                                cudaFuncAttributeMaxDynamicSharedMemorySize,
                                DecodeGeometry<kMTiles, Kv>::kSmemBytes);
  }));
}

template <int kMTiles, class Kv>
int ctas_per_sm_of(const char* op) {
  using G = DecodeGeometry<kMTiles, Kv>;
  prepare_variant<kMTiles, Kv>(op);
  int n = 0;
  HPC_OPS_CUDA_CHECK(op, cudaOccupancyMaxActiveBlocksPerMultiprocessor(
                             &n, decode_attention_kernel<kMTiles, Kv>, G::kThreads, G::kSmemBytes));
  return std::max(n, 1);
}

template <class Kv>
int ctas_per_sm_for(int rows, const char* op) {
  switch (m_tiles_for(rows)) {
    case 1: return ctas_per_sm_of<1, Kv>(op);
    case 2: return ctas_per_sm_of<2, Kv>(op);
    case 4: return ctas_per_sm_of<4, Kv>(op);
    default: return ctas_per_sm_of<8, Kv>(op);
  }
}

// Launches with programmatic stream serialization (PDL, common/launch.h), so
// a kernel's launch and prologue overlap the previous kernel's tail.
// NOTE: attention + merge are two dependent launches per call; without PDL
// each adds its launch latency to a decode step.
template <class Kernel>
void launch_pdl(Kernel kernel, unsigned grid, unsigned threads, size_t smem, cudaStream_t stream,
                const DecodeParams& p) {
  detail::LaunchShape shape;
  shape.grid = dim3(grid);
  shape.block = dim3(threads);
  shape.smem_bytes = smem;
  HPC_OPS_CUDA_CHECK("decode_attention", detail::launch_kernel(kernel, shape, stream, p));
}

template <int kMTiles, class Kv>
void launch_variant(const DecodeParams& p, cudaStream_t stream) {
  using G = DecodeGeometry<kMTiles, Kv>;
  prepare_variant<kMTiles, Kv>("decode_attention");
  launch_pdl(decode_attention_kernel<kMTiles, Kv>, static_cast<unsigned>(p.num_bins), G::kThreads,
             G::kSmemBytes, stream, p);
}

template <class Kv>
void launch_format(const DecodeParams& p, cudaStream_t stream) {
  switch (m_tiles_for(p.rows)) {
    case 1: launch_variant<1, Kv>(p, stream); break;
    case 2: launch_variant<2, Kv>(p, stream); break;
    case 4: launch_variant<4, Kv>(p, stream); break;
    default: launch_variant<8, Kv>(p, stream); break;
  }
}

}  // namespace

// The FP8 kernel (4 x 16.6 KB ring, ~165 registers at 1-2 m-tiles) fits 3
// CTAs per SM where the BF16 one (3 x 32 KB) fits 2: 12 warps instead of 8
// to hide its conversion and mma latencies.
int decode_ctas_per_sm(int rows, bool kv_fp8, int device) {
  const char* op = "plan_decode_attention";
  detail::DeviceGuard guard(device, op);
  return kv_fp8 ? ctas_per_sm_for<KvFp8>(rows, op) : ctas_per_sm_for<KvBf16>(rows, op);
}

void launch_decode_attention(const DecodeParams& p, cudaStream_t stream) {
  if (p.kv_fp8) {
    launch_format<KvFp8>(p, stream);
  } else {
    launch_format<KvBf16>(p, stream);
  }
  const int64_t warps = int64_t{p.batch} * p.kv_heads * p.rows;
  const int64_t blocks = (warps * 32 + kMergeThreads - 1) / kMergeThreads;
  launch_pdl(decode_merge_kernel, static_cast<unsigned>(std::max<int64_t>(blocks, 1)), kMergeThreads, 0,
             stream, p);
}

}  // namespace hpc_ops::attention
