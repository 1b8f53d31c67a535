// SPDX-License-Identifier: Apache-2.0
// Instantiations and launchers of the decode-attention kernel variants, and
// the merge kernel that combines the partial results of the units of many
// rows cut into many pieces.
#include <cuda_runtime.h>

#include <algorithm>

#include "attention/decode_attention_kernel.cuh"
#include "attention/decode_merge.cuh"
#include "common/cuda_check.h"
#include "common/launch.h"

namespace hpc_ops::attention {
namespace {

constexpr int kMergeThreads = 512;
constexpr int kMergeWarps = kMergeThreads / 32;

// Warps that share one output row: enough that a row's pieces take one round
// trip of kMergeUnroll loads per warp (up to 16 warps: 128 pieces per round
// trip). One warp per row walked the 256 pieces of 1 x 64K (8 q heads over 1
// kv head) in ~64 dependent round trips: 72 us for the whole call.
__device__ __forceinline__ int merge_warps_per_row(int32_t most_pieces) {
  int w = 1;
  while (w < kMergeWarps && w * kMergeUnroll < most_pieces) w *= 2;
  return w;
}

// Combines the partial results of the units the attention CTAs leave
// (merged_by_merge_kernel: more than kTreeMergeRows rows and many pieces;
// schedule word 7 counts them). An output row (unit, row) is a job; a CTA
// takes kMergeWarps / W jobs at a time, W warps per job (W from the
// schedule's largest piece count, so uniform over the grid), and loops over
// the jobs with a grid stride. Warp w of a job takes pieces w, w + W, ...;
// the job's warps meet in shared memory.
__global__ void __launch_bounds__(kMergeThreads) decode_merge_kernel(const __grid_constant__ DecodeParams p) {
  __shared__ float warp_max[kMergeWarps];
  __shared__ float warp_den[kMergeWarps];
  __shared__ float4 warp_acc[kMergeWarps][32];
  // Launched early (PDL): the partial results are complete only after this.
  device::pdl_wait_for_previous();
  const int32_t* sched = p.schedule;
  const int32_t per_bin = sched[0], most_pieces = sched[4], overhead = sched[kScheduleOverheadWord];
  if (sched[kScheduleMergeKernelWord] == 0) return;  // uniform over the grid
  const int32_t units = p.batch * p.kv_heads;
  const ScheduleLayout layout = schedule_layout(p.batch, p.kv_heads, p.num_bins);
  const int warps_per_row = merge_warps_per_row(most_pieces);
  const int rows_per_cta = kMergeWarps / warps_per_row;
  const int warp = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x % 32);
  const int job_in_cta = warp / warps_per_row, part = warp % warps_per_row;
  const int64_t jobs = int64_t{units} * p.rows;
  for (int64_t base = int64_t{blockIdx.x} * rows_per_cta; base < jobs;
       base += int64_t{gridDim.x} * rows_per_cta) {
    const int64_t job = base + job_in_cta;
    int row[1] = {0};
    int u = 0;
    int32_t pieces = 1, slot0 = 0;  // past the last job: nothing to write
    if (job < jobs) {
      u = static_cast<int>(job / p.rows);
      row[0] = static_cast<int>(job - int64_t{u} * p.rows);
      const int32_t ts = sched[layout.tile_start + u], te = sched[layout.tile_start + u + 1];
      slot0 = sched[layout.slot_start + u];  // loaded with tile_start: one round trip
      pieces = unit_pieces(ts, unit_tiles_end(ts, te, overhead) - ts, per_bin);
    }
    const bool mine = merged_by_merge_kernel(pieces, p.rows);
    MergedRow r[1];
    if (mine && part < pieces) {
      const PartialRun run{int64_t{slot0} + part, (pieces - part + warps_per_row - 1) / warps_per_row,
                           warps_per_row};
      merge_partials(p, run, row, lane, r);
    }
    if (warps_per_row > 1) {  // uniform over the grid
      warp_acc[warp][lane] = r[0].acc;
      if (lane == 0) {
        warp_max[warp] = r[0].m;
        warp_den[warp] = r[0].den;
      }
      __syncthreads();
      if (part == 0) {
        for (int w = 1; w < warps_per_row; ++w) {
          r[0].add(warp_max[warp + w], warp_den[warp + w], warp_acc[warp + w][lane]);
        }
      }
      __syncthreads();  // the shared arrays are rewritten by the next round
    }
    if (mine && part == 0) store_merged_row(p, u, row[0], 4 * lane, r[0]);
  }
}

int m_tiles_for(int rows) { return rows <= 16 ? 1 : rows <= 32 ? 2 : rows <= 64 ? 4 : 8; }

// Opts the variant into its dynamic shared memory on the current device
// (once), for the occupancy query; launches opt in through
// launch_with_smem_opt_in.
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

template <int kMTiles, class Kv>
void launch_variant(const DecodeParams& p, cudaStream_t stream) {
  using G = DecodeGeometry<kMTiles, Kv>;
  detail::LaunchShape shape;
  shape.grid = dim3(static_cast<unsigned>(p.num_bins));
  shape.block = dim3(G::kThreads);
  shape.smem_bytes = G::kSmemBytes;
  HPC_OPS_CUDA_CHECK("decode_attention",
                     (detail::launch_with_smem_opt_in<&decode_attention_kernel<kMTiles, Kv>, G::kSmemBytes>(
                         shape, stream, p)));
}

// Calls f.template run<kMTiles, Kv>() for the kernel variant that serves
// `rows` query rows per kv head: an FP8 cache takes tokens on M (wgmma, one
// warpgroup) up to 16 rows, rows on M with mma.sync up to 32 and rows on M
// with wgmma above (a warpgroup per 64 rows: at 32 rows, half of its M would
// be padding, and it ran 38-45% slower than mma.sync there); a BF16 cache
// rows on M, with mma.sync up to 32 rows and wgmma above.
template <class F>
auto with_variant(int rows, bool kv_fp8, const F& f) {
  if (decode_tokens_on_m(rows, kv_fp8)) {
    return rows <= 8 ? f.template run<1, KvFp8TokensOnM<1>>() : f.template run<1, KvFp8TokensOnM<2>>();
  }
  switch (m_tiles_for(rows)) {
    case 1: return f.template run<1, KvBf16>();
    case 2: return kv_fp8 ? f.template run<2, KvFp8>() : f.template run<2, KvBf16>();
    case 4: return kv_fp8 ? f.template run<4, KvFp8Wgmma>() : f.template run<4, KvBf16Wgmma>();
    default: return kv_fp8 ? f.template run<8, KvFp8Wgmma>() : f.template run<8, KvBf16Wgmma>();
  }
}

struct CtasPerSm {
  const char* op;
  template <int kMTiles, class Kv>
  int run() const { return ctas_per_sm_of<kMTiles, Kv>(op); }
};

struct LaunchVariant {
  const DecodeParams& p;
  cudaStream_t stream;
  template <int kMTiles, class Kv>
  int run() const {
    launch_variant<kMTiles, Kv>(p, stream);
    return 0;
  }
};

}  // namespace

// The FP8 kernels fit more CTAs per SM than the BF16 one (3 x 32 KB ring, 2
// per SM): TokensOnM at 8 query rows 4 (3 x 16 KB, 96 registers), at 16 rows
// and the rows-on-M kernel 3 (register- or ring-bound): warps to hide their
// conversion and mma latencies.
int decode_ctas_per_sm(int rows, bool kv_fp8, int device) {
  const char* op = "plan_decode_attention";
  detail::DeviceGuard guard(device, op);
  return with_variant(rows, kv_fp8, CtasPerSm{op});
}

void launch_decode_attention(const DecodeParams& p, cudaStream_t stream) {
  with_variant(p.rows, p.kv_fp8, LaunchVariant{p, stream});
  if (p.rows <= kTreeMergeRows) return;  // the attention CTAs combine every partial
  // One CTA per kMergeWarps output rows covers every row at one warp per row;
  // at W warps per row the CTAs loop, but the grid is at least one CTA per
  // row (up to one per bin), so a few long rows still spread over the SMs.
  // PDL (common/launch.h): its launch and prologue overlap the attention
  // grid's tail.
  const int64_t rows = int64_t{p.batch} * p.kv_heads * p.rows;
  const int64_t blocks = std::max((rows + kMergeWarps - 1) / kMergeWarps,
                                  std::min<int64_t>(rows, p.num_bins));
  detail::LaunchShape shape;
  shape.grid = dim3(static_cast<unsigned>(std::max<int64_t>(blocks, 1)));
  shape.block = dim3(kMergeThreads);
  HPC_OPS_CUDA_CHECK("decode_attention", detail::launch_kernel(decode_merge_kernel, shape, stream, p));
}

}  // namespace hpc_ops::attention
