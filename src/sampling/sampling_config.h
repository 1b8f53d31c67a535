// SPDX-License-Identifier: Apache-2.0
// How a row of the vocabulary is split over the CTAs of a cluster. A function
// of V alone (never of the batch), so a row is computed the same way whatever
// else shares the batch.
#pragma once

#include <cstdint>

namespace hpc_ops::sampling {

struct ClusterSplit {
  int cluster = 1;       // CTAs per row
  int slice = 0;         // tokens per CTA, a multiple of 32
  int cached = 0;        // of those, kept in shared memory
  int64_t smem_bytes = 0;  // dynamic shared memory per CTA
};

// max_cluster: 8 (portable) unless overridden; shared_budget: dynamic shared
// memory a CTA may take (bytes); state_bytes: the kernel's fixed part.
ClusterSplit choose_cluster_split(int64_t vocab, int max_cluster, int64_t shared_budget,
                                  int64_t state_bytes);

}  // namespace hpc_ops::sampling
