// SPDX-License-Identifier: Apache-2.0
// Launch geometry of the RoPE + KV-write kernel (see rope_config.h).
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

}  // namespace hpc_ops::rope
