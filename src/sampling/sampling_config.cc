// SPDX-License-Identifier: Apache-2.0
// The cluster split of one vocabulary row (sampling_config.h).
#include "sampling/sampling_config.h"

#include <algorithm>

namespace hpc_ops::sampling {

// At least 4096 tokens per CTA: below that the fixed cost of a CTA (its
// histogram rounds and cluster barriers) outweighs its share of the load.
constexpr int64_t kMinTokensPerCta = 4096;

int max_cluster_for(int64_t rows, bool threshold_search, int wide_resident) {
  const bool wide = !threshold_search && rows <= kWideClusterMaxRows && rows <= wide_resident;
  return wide ? kWideCluster : kPortableCluster;
}

bool use_paired_ctas(int64_t rows, int cluster, int num_sms) {
  return rows * cluster > static_cast<int64_t>(num_sms);
}

ClusterSplit choose_cluster_split(int64_t vocab, int max_cluster, int64_t shared_budget,
                                  int64_t state_bytes) {
  ClusterSplit s;
  const int64_t want = (vocab + kMinTokensPerCta - 1) / kMinTokensPerCta;
  s.cluster = static_cast<int>(std::clamp<int64_t>(want, 1, std::max(1, max_cluster)));
  const int64_t per_cta = (vocab + s.cluster - 1) / s.cluster;
  s.slice = static_cast<int>(std::max<int64_t>(32, (per_cta + 31) / 32 * 32));
  const int64_t fit = std::max<int64_t>(0, (shared_budget - state_bytes) / 4);
  s.cached = static_cast<int>(std::min<int64_t>(s.slice, fit));
  s.smem_bytes = state_bytes + 4 * static_cast<int64_t>(s.cached);
  return s;
}

}  // namespace hpc_ops::sampling
