// SPDX-License-Identifier: Apache-2.0
// The GPU planner: one CTA computes the schedule of decode_plan.h from
// kv_lens, word for word what plan_on_host computes, so that the plan can be
// refreshed inside a captured CUDA graph.
#include <cub/block/block_scan.cuh>

#include "attention/decode_kernels.h"
#include "common/launch.h"
#include "common/pdl.cuh"

namespace hpc_ops::attention {
namespace {

constexpr int kPlanThreads = 1024;

using PlanScan = cub::BlockScan<int32_t, kPlanThreads>;

// out[u] = carry + exclusive prefix sum of count(u) over u < units, in
// chunks of kPlanThreads; returns the total. count(u) is called with u < units.
template <class Count>
__device__ int32_t scan_units(int32_t units, Count count, int32_t* out,
                              typename PlanScan::TempStorage& storage, int32_t& carry) {
  if (threadIdx.x == 0) carry = 0;
  __syncthreads();
  for (int32_t base = 0; base < units; base += kPlanThreads) {
    const int32_t u = base + static_cast<int32_t>(threadIdx.x);
    const int32_t n = u < units ? count(u) : 0;
    int32_t before = 0, sum = 0;
    PlanScan(storage).ExclusiveSum(n, before, sum);
    if (u < units) out[u] = carry + before;
    __syncthreads();
    if (threadIdx.x == 0) carry += sum;
    __syncthreads();
  }
  const int32_t total = carry;
  __syncthreads();  // every thread has read carry before the next scan resets it
  return total;
}

__global__ void __launch_bounds__(kPlanThreads)
    decode_plan_kernel(const int32_t* kv_lens, int32_t batch, int32_t heads, int32_t q_len,
                       int32_t rows, int32_t window, int32_t bins, int32_t piece_cost, int32_t* sched) {
  __shared__ typename PlanScan::TempStorage scan_storage;
  __shared__ int32_t carry;
  __shared__ int32_t most_pieces, empty_units, left_to_merge;  // header words 4, 5 and 7
  __shared__ int32_t tiles, requests_with_tiles, fewest, most;  // per request (x heads: per unit)
  if (threadIdx.x == 0) {
    most_pieces = empty_units = left_to_merge = 0;
    tiles = requests_with_tiles = most = 0;
    fewest = INT32_MAX;
  }
  device::pdl_enter();  // first: earlier kernels may still run (common/pdl.cuh)
  const ScheduleLayout layout = schedule_layout(batch, heads, bins);
  const int32_t units = batch * heads;
  // Pass 0: what bin_run needs, per thread, per warp, then per CTA.
  int32_t my_tiles = 0, my_requests = 0, my_fewest = INT32_MAX, my_most = 0;
  for (int32_t b = static_cast<int32_t>(threadIdx.x); b < batch; b += kPlanThreads) {
    int32_t first = 0, count = 0;
    request_tiles(kv_lens[b], q_len, window, first, count);
    if (count > 0) {
      my_tiles += count;
      ++my_requests;
      my_fewest = min(my_fewest, count);
      my_most = max(my_most, count);
    }
  }
  my_tiles = __reduce_add_sync(0xffffffffu, my_tiles);
  my_requests = __reduce_add_sync(0xffffffffu, my_requests);
  my_fewest = __reduce_min_sync(0xffffffffu, my_fewest);
  my_most = __reduce_max_sync(0xffffffffu, my_most);
  __syncthreads();  // the shared totals are initialized
  if (threadIdx.x % 32 == 0) {
    atomicAdd(&tiles, my_tiles);
    atomicAdd(&requests_with_tiles, my_requests);
    atomicMin(&fewest, my_fewest);
    atomicMax(&most, my_most);
  }
  __syncthreads();
  const BinRun run = bin_run(int64_t{tiles} * heads, int64_t{requests_with_tiles} * heads, fewest, most, bins,
                             piece_cost, rows);
  const int32_t overhead = run.overhead;
  // Pass 1: tile_start (and first_tile per request): each unit with tiles
  // spans them and `overhead` empty positions.
  const int32_t total = scan_units(
      units,
      [&](int32_t u) {
        const int32_t b = u / heads;
        int32_t first = 0, count = 0;
        request_tiles(kv_lens[b], q_len, window, first, count);
        if (u - b * heads == 0) sched[layout.first_tile + b] = first;
        return unit_span(count, overhead);
      },
      sched + layout.tile_start, scan_storage, carry);
  const int32_t per_bin = run.per_bin;
  // Pass 2: slot_start over the units cut into >= 2 pieces (this CTA's own
  // tile_start writes are visible after the barriers of pass 1).
  const int32_t slots = scan_units(
      units,
      [&](int32_t u) {
        const int32_t start = sched[layout.tile_start + u];
        const int32_t next = u + 1 < units ? sched[layout.tile_start + u + 1] : total;
        const int32_t pieces = unit_pieces(start, unit_tiles_end(start, next, overhead) - start, per_bin);
        atomicMax(&most_pieces, pieces);
        if (pieces == 0) atomicAdd(&empty_units, 1);
        if (merged_by_merge_kernel(pieces, rows)) atomicAdd(&left_to_merge, 1);
        return pieces >= 2 ? pieces : 0;
      },
      sched + layout.slot_start, scan_storage, carry);
  // Pass 3: the merge trees' counters (zero), bin_first (every bin's unit first -1, then the
  // record of its first unit).
  for (int64_t w = layout.counters + threadIdx.x; w < layout.bin_first; w += kPlanThreads) {
    sched[w] = 0;  // counters and the alignment padding (zero in the CPU planner's words too)
  }
  for (int32_t c = static_cast<int32_t>(threadIdx.x); c < bins; c += kPlanThreads) {
    write_bin_first(sched + layout.bin_first + kBinFirstWords * c, -1, 0, 0, 0);
  }
  __syncthreads();
  for (int32_t u = static_cast<int32_t>(threadIdx.x); u < units; u += kPlanThreads) {
    const int32_t ts = sched[layout.tile_start + u];
    const int32_t te = u + 1 < units ? sched[layout.tile_start + u + 1] : total;
    const int32_t tiles_end = unit_tiles_end(ts, te, overhead);
    if (tiles_end == ts) continue;
    const int32_t first_tile = sched[layout.first_tile + u / heads];
    int32_t c_begin = 0, c_end = 0;
    bins_starting_at_unit(ts, tiles_end, overhead, per_bin, c_begin, c_end);
    for (int32_t c = c_begin; c < c_end; ++c) {
      write_bin_first(sched + layout.bin_first + kBinFirstWords * c, u, ts, tiles_end, first_tile);
    }
  }
  if (threadIdx.x == 0) {
    sched[layout.tile_start + units] = total;
    sched[layout.slot_start + units] = slots;
    sched[0] = per_bin;
    sched[1] = total;
    sched[2] = units;
    sched[3] = slots;
    sched[4] = most_pieces;  // complete: the scans' barriers came after every atomic
    sched[5] = empty_units;
    sched[kScheduleOverheadWord] = overhead;
    sched[kScheduleMergeKernelWord] = left_to_merge;
  }
}

}  // namespace

cudaError_t launch_plan_kernel(const int32_t* kv_lens, const DecodePlanInfo& info, int32_t* schedule,
                        cudaStream_t stream) {
  detail::LaunchShape shape;
  shape.grid = dim3(1);
  shape.block = dim3(kPlanThreads);
  return detail::launch_kernel(decode_plan_kernel, shape, stream, kv_lens, info.batch,
                               info.num_kv_heads, info.q_len, unit_rows(info), info.sliding_window,
                               info.num_bins, piece_cost_tiles(), schedule);
}

}  // namespace hpc_ops::attention
