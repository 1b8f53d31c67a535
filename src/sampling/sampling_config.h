// SPDX-License-Identifier: Apache-2.0
// How a row of the vocabulary is split over the CTAs of a cluster. Every
// result of the kernel (token, acceptance, logprob) is the same for any split,
// so the split may follow the batch: wide clusters for a few rows.
#pragma once

#include <cstdint>

#include "sampling/sampling_params.h"  // kThreads

namespace hpc_ops::sampling {

struct ClusterSplit {
  int cluster = 1;       // CTAs per row
  int slice = 0;         // tokens per CTA, a multiple of 32
  int cached = 0;        // of those, kept in shared memory
  int64_t smem_bytes = 0;  // dynamic shared memory per CTA
  int threads = kThreads;  // per CTA: kThreads, or kPairedCtaThreads (two CTAs per SM)
};

// CTAs of 512 threads, two per SM, for batches whose clusters take more than
// one wave of SMs at one CTA per SM: a CTA's barriers and cluster waits then
// overlap the other CTA's passes.
// NOTE: measured on the H200 (docs/perf/sampling.md, v3), V = 128256: top-k
// + top-p B = 512 856 -> 521 us, B = 32 73.5 -> 55.3; temperature-only B =
// 512 541 -> 373 (same 64 registers per thread; slices past half the SM's
// shared memory re-read their tail from global memory).
constexpr int kPairedCtaThreads = 512;
bool use_paired_ctas(int64_t rows, int cluster, int num_sms);

// The most CTAs one row may take. Rows that need no threshold search (no
// top-k, no top-p) and are few enough that their clusters of kWideCluster
// CTAs all run at once (`wide_resident`: how many fit the device) take
// kWideCluster; everything else kPortableCluster.
// NOTE: measured on the H200 (docs/perf/sampling.md, v2), temperature-only,
// B = 1: 8 CTAs 16.7 us (V = 128256) and 18.6 (151936), 16 CTAs 13.1 and
// 14.6; at B = 8 16 CTAs take 25.8 us against 17.1 (the clusters no longer
// fit at once), and top-k + top-p at B = 1 27.5 against 25.9 (more CTAs per
// histogram round).
constexpr int kPortableCluster = 8;
constexpr int kWideCluster = 16;
constexpr int64_t kWideClusterMaxRows = 4;
int max_cluster_for(int64_t rows, bool threshold_search, int wide_resident);

// max_cluster: from max_cluster_for (or an override); shared_budget: dynamic
// shared memory a CTA may take (bytes); state_bytes: the kernel's fixed part.
ClusterSplit choose_cluster_split(int64_t vocab, int max_cluster, int64_t shared_budget,
                                  int64_t state_bytes);

}  // namespace hpc_ops::sampling
