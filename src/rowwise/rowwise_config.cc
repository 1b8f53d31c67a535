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

RowwiseConfig choose_rowwise_config(int64_t cols, int64_t rows, int num_sms) {
  const int64_t vecs = (cols + 7) / 8;
  RowwiseConfig c;
  // NOTE: the fewest vectors per thread such that a row needs at most 256
  // threads (512 at 16 vectors). At hidden 7168 that is 4 vectors x
  // 224 threads: each thread has 4 independent 16-byte loads in flight per
  // input, and 4-9 CTAs fit per SM, enough bytes in flight to cover HBM latency.
  for (int v : {1, 2, 4, 8, 16}) {
    const int64_t threads = (vecs + v - 1) / v;
    const int64_t rounded = std::max<int64_t>(32, (threads + 31) / 32 * 32);
    if (rounded <= max_threads_for_vecs(v) || v == 16) {
      c.vecs_per_thread = v;
      c.threads_per_row = static_cast<int>(rounded);
      break;
    }
  }
  // Short rows: pack several rows into a CTA of up to 256 threads, but keep at
  // least one CTA per SM busy when rows are few.
  int rows_per_cta = std::max(1, 256 / c.threads_per_row);
  if (num_sms > 0 && rows > 0) {
    const int64_t per_sm = std::max<int64_t>(1, rows / num_sms);
    rows_per_cta = static_cast<int>(std::min<int64_t>(rows_per_cta, per_sm));
  }
  c.rows_per_cta = std::max(1, rows_per_cta);
  c.grid = (rows + c.rows_per_cta - 1) / c.rows_per_cta;
  return c;
}

}  // namespace hpc_ops::rowwise
