// SPDX-License-Identifier: Apache-2.0
// Launch geometry of the RoPE + KV-write kernels (see rope_config.h).
#include "rope/rope_config.h"

#include <algorithm>

namespace hpc_ops::rope {

int choose_heads_per_cta(int64_t rows, int heads, int head_dim, int num_sms) {
  const int groups = rope_groups_per_cta(head_dim);
  // NOTE: wide chunks once they fill a wave (one CTA per SM). Measured on the
  // H200, Qwen3 decode B = 256: 13.3 us with 5 narrow CTAs per row (3.3 waves
  // of CTAs each paying the lookup chain) where torch.compile took 10.0.
  const int64_t wide_chunks = (heads + groups * kRopeHeadsPerGroup - 1) / (groups * kRopeHeadsPerGroup);
  const bool large = rows * wide_chunks >= std::max(num_sms, 1);
  const int most = large ? groups * kRopeHeadsPerGroup : groups;
  const int chunks = (heads + most - 1) / most;
  return std::max(1, (heads + chunks - 1) / chunks);
}

StreamShape stream_shape(int heads, int head_dim, int rotary_dim, int cos_sin_elem_bytes) {
  StreamShape s;
  s.cos_sin_offset = heads * head_dim * 2;
  s.cos_sin_bytes = rotary_dim * cos_sin_elem_bytes;
  s.stage_bytes = (s.cos_sin_offset + s.cos_sin_bytes + 127) / 128 * 128;
  s.stages = std::min(kStreamMaxStages, kStreamSharedBytesPerCta / std::max(s.stage_bytes, 1));
  if (s.stages < 2) s.stages = 0;
  return s;
}

bool use_stream_kernel(int64_t rows, int num_sms, const StreamShape& shape) {
  return shape.stages >= 2 && rows >= stream_min_rows(num_sms);
}

int stream_grid(int64_t rows, int num_sms) {
  return static_cast<int>(std::min<int64_t>(rows, int64_t{kStreamMinCtas} * std::max(num_sms, 1)));
}

}  // namespace hpc_ops::rope
