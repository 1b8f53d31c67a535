// SPDX-License-Identifier: Apache-2.0
// Launch-geometry heuristic of the row-wise engine (see rowwise_config.h).
#include "rowwise/rowwise_config.h"

#include <algorithm>

namespace hpc_ops::rowwise {

std::string RowwiseConfig::to_string() const {
  return "vecs_per_thread=" + std::to_string(vecs_per_thread) +
         " threads_per_row=" + std::to_string(threads_per_row) +
         " rows_per_cta=" + std::to_string(rows_per_cta) + " grid=" + std::to_string(grid);
}

namespace {
int64_t threads_for(int64_t vecs, int v) {
  const int64_t threads = (vecs + v - 1) / v;
  return std::max<int64_t>(32, (threads + 31) / 32 * 32);
}
}  // namespace

RowwiseConfig choose_rowwise_config(int64_t cols, int64_t rows, int num_sms, int inputs,
                                    int force_vecs) {
  const int64_t vecs = (cols + 7) / 8;
  RowwiseConfig c;
  // NOTE: bytes in flight per SM decide the bandwidth. Rows of one input take
  // 4 vectors per thread (64 B in flight per thread) once a row has 128
  // vectors; rows of two inputs take 2 (the same 64 B), which measured better
  // than 4 at hidden 4096 (add + RMSNorm + FP8: 36.4 us vs 38.7 us) by
  // keeping more threads per row. Otherwise the fewest that fit the bound.
  const int first = inputs >= 2 ? (vecs >= 64 ? 2 : 1) : (vecs >= 128 ? 4 : vecs >= 64 ? 2 : 1);
  for (int v : {1, 2, 4, 8, 16}) {
    if (v < first) continue;
    const int64_t rounded = threads_for(vecs, v);
    if (rounded <= max_threads_for_vecs(v) || v == 16) {
      c.vecs_per_thread = v;
      c.threads_per_row = static_cast<int>(rounded);
      break;
    }
  }
  if (force_vecs == 1 || force_vecs == 2 || force_vecs == 4 || force_vecs == 8 ||
      force_vecs == 16) {
    const int64_t rounded = threads_for(vecs, force_vecs);
    if (rounded <= max_threads_for_vecs(force_vecs)) {
      c.vecs_per_thread = force_vecs;
      c.threads_per_row = static_cast<int>(rounded);
    }
  }
  // Short rows: pack several rows into a CTA of up to 128 threads, but keep at
  // least one CTA per SM busy when rows are few.
  int rows_per_cta = std::max(1, 128 / c.threads_per_row);
  if (num_sms > 0 && rows > 0) {
    const int64_t per_sm = std::max<int64_t>(1, rows / num_sms);
    rows_per_cta = static_cast<int>(std::min<int64_t>(rows_per_cta, per_sm));
  }
  c.rows_per_cta = std::max(1, rows_per_cta);
  c.grid = (rows + c.rows_per_cta - 1) / c.rows_per_cta;
  c.num_sms = std::max(num_sms, 1);
  return c;
}

int looped_threads(int64_t cols) {
  const int64_t vecs = (cols + 7) / 8;
  return static_cast<int>(std::min<int64_t>(kLoopedMaxThreads, threads_for(vecs, kLoopedVecs)));
}

bool use_looped_kernel(int64_t rows, int64_t cols) { return rows * cols >= kLoopedMinElements; }

int choose_stream_slots(int64_t rows, int64_t groups_per_row, int num_sms) {
  const int64_t full_chunks = rows * ((groups_per_row + 2 * kStreamUnroll - 1) / (2 * kStreamUnroll));
  const int64_t resident_warps = int64_t{std::max(num_sms, 1)} * kStreamMinCtas * (kStreamThreads / 32);
  return full_chunks >= resident_warps ? kStreamUnroll : 1;
}

std::string BulkConfig::to_string() const {
  if (!usable) return "bulk: unusable";
  return "bulk: chunk_cols=" + std::to_string(chunk_cols) + " stages=" + std::to_string(stages) +
         " ctas_per_sm=" + std::to_string(ctas_per_sm) + " smem=" + std::to_string(smem_bytes) +
         " grid=" + std::to_string(grid);
}

BulkConfig choose_bulk_config(int64_t cols, int64_t rows, int num_sms, int in_bytes, int inputs,
                              bool whole_row, int ctas_per_sm) {
  BulkConfig c;
  if (cols <= 0 || rows <= 0 || cols % 8 != 0) return c;
  const auto round128 = [](int64_t b) { return (b + 127) / 128 * 128; };
  c.chunk_cols = static_cast<int>(whole_row ? cols : std::min<int64_t>(cols, kBulkChunkCols));
  const int64_t buffer = round128(int64_t{c.chunk_cols} * in_bytes);
  const int64_t stage = buffer * inputs;
  const int64_t fixed = 128;  // the barriers (<= 16)
  // NOTE: the most CTAs per SM (up to 3) that each keep >= 3 items in flight:
  // a CTA serializes its items behind __syncthreads, so more CTAs overlap one
  // CTA's reductions with the others' compute (measured: RMSNorm at hidden
  // 7168 with 1 CTA reached 2.4 TB/s, 2 CTAs 2.8); else one CTA with >= 2.
  const auto try_ctas = [&](int ctas, int min_stages) {
    const int64_t budget = detail::dynamic_smem_per_cta(ctas, kBulkStaticSmem);
    const int64_t stages = std::min<int64_t>(kBulkMaxStages, (budget - fixed) / stage);
    if (stages < min_stages) return false;
    c.usable = true;
    c.stages = static_cast<int>(stages);
    c.ctas_per_sm = ctas;
    return true;
  };
  if (ctas_per_sm > 0) {
    try_ctas(ctas_per_sm, 2);
  } else if (!try_ctas(3, 3) && !try_ctas(2, 3)) {
    try_ctas(1, 2);
  }
  if (!c.usable) return c;
  c.buffer_bytes = static_cast<int>(buffer);
  c.buffers_offset = static_cast<int>(fixed);
  c.smem_bytes = static_cast<int>(fixed + stage * c.stages);
  c.items = rows * ((cols + c.chunk_cols - 1) / c.chunk_cols);
  c.grid = std::min<int64_t>(c.items, int64_t{c.ctas_per_sm} * std::max(num_sms, 1));
  return c;
}

}  // namespace hpc_ops::rowwise
