// SPDX-License-Identifier: Apache-2.0
// Decode-attention plans: the host heuristic (bins, workspace size), the CPU
// planner and the entry points that check their arguments.
#include "attention/decode_plan.h"

#include <algorithm>

#include "attention/decode_kernels.h"
#include "common/check.h"
#include "common/cuda_check.h"
#include "common/device_info.h"
#include "common/env.h"

namespace hpc_ops {
namespace attention {

void plan_on_host(const int32_t* kv_lens, const DecodePlanInfo& info, int32_t piece_cost,
                  int32_t* schedule) {
  const int64_t batch = info.batch, heads = info.num_kv_heads, units = batch * heads;
  const ScheduleLayout l = schedule_layout(batch, heads, info.num_bins);
  std::fill(schedule, schedule + l.words, 0);
  int64_t tiles = 0, units_with_tiles = 0;
  int32_t fewest = INT32_MAX, most = 0;
  for (int64_t b = 0; b < batch; ++b) {
    int32_t first = 0, count = 0;
    request_tiles(kv_lens[b], info.q_len, info.sliding_window, first, count);
    if (count == 0) continue;
    tiles += int64_t{count} * heads;
    units_with_tiles += heads;
    fewest = std::min(fewest, count);
    most = std::max(most, count);
  }
  const BinRun run = bin_run(tiles, units_with_tiles, fewest, most, info.num_bins, piece_cost, unit_rows(info));
  const int32_t overhead = run.overhead;
  int64_t total = 0;
  for (int64_t b = 0; b < batch; ++b) {
    int32_t first = 0, count = 0;
    request_tiles(kv_lens[b], info.q_len, info.sliding_window, first, count);
    schedule[l.first_tile + b] = first;
    for (int64_t h = 0; h < heads; ++h) {
      schedule[l.tile_start + b * heads + h] = static_cast<int32_t>(total);
      total += unit_span(count, overhead);
    }
  }
  schedule[l.tile_start + units] = static_cast<int32_t>(total);
  const int32_t per_bin = run.per_bin;
  const int rows = unit_rows(info);
  int64_t slots = 0;
  int32_t most_pieces = 0, empty_units = 0, left_to_merge = 0;
  for (int64_t u = 0; u < units; ++u) {
    schedule[l.slot_start + u] = static_cast<int32_t>(slots);
    const int32_t start = schedule[l.tile_start + u];
    const int32_t tiles_end = unit_tiles_end(start, schedule[l.tile_start + u + 1], overhead);
    const int32_t pieces = unit_pieces(start, tiles_end - start, per_bin);
    if (pieces >= 2) slots += pieces;
    most_pieces = std::max(most_pieces, pieces);
    if (pieces == 0) ++empty_units;
    if (merged_by_merge_kernel(pieces, rows)) ++left_to_merge;
  }
  schedule[l.slot_start + units] = static_cast<int32_t>(slots);
  // Each bin's first unit (so a CTA needs no search and one load).
  for (int64_t c = 0; c < info.num_bins; ++c) schedule[l.bin_first + kBinFirstWords * c] = -1;
  for (int64_t u = 0; u < units; ++u) {
    const int32_t ts = schedule[l.tile_start + u];
    const int32_t tiles_end = unit_tiles_end(ts, schedule[l.tile_start + u + 1], overhead);
    if (tiles_end == ts) continue;
    int32_t c_begin = 0, c_end = 0;
    bins_starting_at_unit(ts, tiles_end, overhead, per_bin, c_begin, c_end);
    for (int32_t c = c_begin; c < c_end; ++c) {
      write_bin_first(schedule + l.bin_first + kBinFirstWords * c, static_cast<int32_t>(u), ts,
                      tiles_end, schedule[l.first_tile + u / heads]);
    }
  }
  schedule[0] = per_bin;
  schedule[1] = static_cast<int32_t>(total);
  schedule[2] = static_cast<int32_t>(units);
  schedule[3] = static_cast<int32_t>(slots);
  schedule[4] = most_pieces;
  schedule[5] = empty_units;
  schedule[kScheduleOverheadWord] = overhead;
  schedule[kScheduleMergeKernelWord] = left_to_merge;
}

int32_t piece_cost_tiles() {
  // NOTE: a piece pays a chain of dependent round trips beyond its tiles'
  // streaming (schedule words, page ids, the first KV tiles, the output
  // write): ~2.3 us where a bin streams a BF16 tile in ~2 us (64 x 4K 64/8).
  // Measured over skewed and random-length batches (docs/perf/
  // decode_attention.md v6): 2 -> 4 gains up to 9% on FP8 8/1 and 64/4
  // (1 x 64K + 31 x 4K, 2 x 32K + 30 x 4K, random 1..8K), BF16 within 1.5%;
  // 3 to 8 within ~1% of each other elsewhere (unit_overhead clips it).
  static const int32_t forced = detail::env_int("HPC_OPS_DECODE_PIECE_COST", -1);
  return forced >= 0 ? std::min(forced, kMaxUnitOverhead) : 4;
}

}  // namespace attention

using detail::Checker;

namespace {

// The heads and batch a plan description needs before anything is sized.
void check_plan_shape(const Checker& check, const DecodePlanInfo& info) {
  if (info.batch < 0 || info.num_kv_heads < 1 || info.num_q_heads % info.num_kv_heads != 0) {
    check.invalid("the plan description is inconsistent (make it with make_decode_plan_info)");
  }
}

}  // namespace

DecodePlanInfo make_decode_plan_info(int32_t batch, int32_t num_q_heads, int32_t num_kv_heads,
                                     int32_t head_dim, int32_t q_len, int32_t sliding_window,
                                     int device, DType kv_dtype) {
  const Checker check("plan_decode_attention");
  if (kv_dtype != DType::kBFloat16 && kv_dtype != DType::kFloat8E4M3) {
    check.unsupported("kv_dtype = ", dtype_name(kv_dtype), ", supported: bfloat16, float8_e4m3fn");
  }
  if (batch < 0) check.invalid("batch = ", batch, ", expected >= 0");
  if (num_kv_heads < 1) check.invalid("num_kv_heads = ", num_kv_heads, ", expected >= 1");
  if (num_q_heads < 1 || num_q_heads % num_kv_heads != 0) {
    check.invalid("num_q_heads = ", num_q_heads, " is not a multiple of num_kv_heads = ",
                  num_kv_heads);
  }
  const int32_t group = num_q_heads / num_kv_heads;
  if (group > attention::kMaxGroup) {
    check.unsupported("num_q_heads / num_kv_heads = ", group, ", supported: 1..",
                      attention::kMaxGroup);
  }
  if (head_dim != attention::kDecodeHeadDim) {
    check.unsupported("head_dim = ", head_dim, ", supported: ", attention::kDecodeHeadDim);
  }
  if (q_len < 1 || q_len > attention::kMaxQLen) {
    check.unsupported("q_len = ", q_len, ", supported: 1..", attention::kMaxQLen);
  }
  if (sliding_window < 0) check.invalid("sliding_window = ", sliding_window, ", expected >= 1 (or 0: off)");
  // Tile positions index with int32 (see kMaxKvLen).
  if (int64_t{batch} * num_kv_heads > attention::kMaxUnits) {
    check.unsupported("batch x num_kv_heads = ", int64_t{batch} * num_kv_heads,
                      ", supported: up to ", attention::kMaxUnits);
  }
  DecodePlanInfo info;
  info.batch = batch;
  info.num_q_heads = num_q_heads;
  info.num_kv_heads = num_kv_heads;
  info.head_dim = head_dim;
  info.q_len = q_len;
  info.sliding_window = sliding_window;
  info.kv_dtype = kv_dtype;
  const int rows = q_len * group;
  int32_t bins = 1;  // no device: a description for argument checks only
  if (device >= 0) {
    const int sms = detail::multiprocessor_count(check.op(), device);
    bins = std::max(1, sms * attention::decode_ctas_per_sm(rows, kv_dtype == DType::kFloat8E4M3, device));
    const int forced = detail::env_int("HPC_OPS_DECODE_BINS", 0);  // tuning experiments
    if (forced > 0) bins = forced;
  }
  return with_decode_bins(info, bins);
}

DecodePlanInfo with_decode_bins(const DecodePlanInfo& info, int32_t num_bins) {
  const Checker check("with_decode_bins");
  if (num_bins < 1) check.invalid("num_bins = ", num_bins, ", expected >= 1");
  check_plan_shape(check, info);
  DecodePlanInfo out = info;
  out.num_bins = num_bins;
  out.num_slots = attention::kSlotsPerBin * num_bins;
  const attention::ScheduleLayout l = attention::schedule_layout(info.batch, info.num_kv_heads, num_bins);
  out.schedule_words = l.words;
  const int64_t rows = attention::unit_rows(info);
  const int64_t schedule_bytes = (l.words * 4 + 255) / 256 * 256;
  const int64_t partial_bytes = int64_t{out.num_slots} * rows * info.head_dim * 4;
  const int64_t lse_bytes = int64_t{out.num_slots} * rows * 4;
  out.workspace_bytes = schedule_bytes + partial_bytes + lse_bytes;
  return out;
}

namespace {

void check_plan_info(const Checker& check, const DecodePlanInfo& info) {
  check_plan_shape(check, info);
  if (info.num_bins < 1 || info.num_slots < attention::kSlotsPerBin * info.num_bins ||
      info.schedule_words !=
          attention::schedule_layout(info.batch, info.num_kv_heads, info.num_bins).words) {
    check.invalid("the plan description is inconsistent (make it with make_decode_plan_info)");
  }
}

void check_kv_lens(const Checker& check, const Tensor& kv_lens, const DecodePlanInfo& info) {
  check.dtype(kv_lens, "kv_lens", {DType::kInt32});
  check.ndim(kv_lens, "kv_lens", 1, "[batch]");
  check.dim(kv_lens, "kv_lens", 0, info.batch, "the batch the plan was made for");
  check.contiguous(kv_lens, "kv_lens");
}

}  // namespace

void decode_attention_schedule_host(const Tensor& kv_lens, const DecodePlanInfo& info,
                                    const Tensor& schedule) {
  const Checker check("decode_attention_schedule_host");
  check_plan_info(check, info);
  check_kv_lens(check, kv_lens, info);
  if (kv_lens.device.type != DeviceType::kCPU) check.invalid("kv_lens must be in host memory");
  check.dtype(schedule, "schedule", {DType::kInt32});
  check.ndim(schedule, "schedule", 1, "[schedule_words]");
  check.dim(schedule, "schedule", 0, info.schedule_words, "the plan's schedule_words");
  check.contiguous(schedule, "schedule");
  if (schedule.device.type != DeviceType::kCPU) check.invalid("schedule must be in host memory");
  attention::plan_on_host(static_cast<const int32_t*>(kv_lens.data), info,
                          attention::piece_cost_tiles(), static_cast<int32_t*>(schedule.data));
}

void plan_decode_attention(const Tensor& kv_lens, const DecodePlanInfo& info,
                           const Tensor& workspace, cudaStream_t stream) {
  const Checker check("plan_decode_attention");
  check_plan_info(check, info);
  check_kv_lens(check, kv_lens, info);
  check.on_cuda(kv_lens, "kv_lens");
  attention::check_workspace(check, workspace, info, kv_lens);
  if (info.batch == 0) return;
  detail::DeviceGuard guard(kv_lens.device.index, check.op());
  HPC_OPS_CUDA_CHECK(check.op(), attention::launch_plan_kernel(static_cast<const int32_t*>(kv_lens.data),
                                                               info,
                                                               static_cast<int32_t*>(workspace.data),
                                                               stream));
}

}  // namespace hpc_ops
