// SPDX-License-Identifier: Apache-2.0
// Device attributes the launch heuristics need, queried once per device.
#pragma once

namespace hpc_ops::detail {

// Multiprocessors of CUDA device `device` (cached after the first query; a
// failed query throws hpc_ops::Error naming `op`).
int multiprocessor_count(const char* op, int device);

// Shared memory of a Hopper SM, the same on every sm_90 part (H100, H200,
// H20): 228 KB per SM, at most 227 KB to one CTA, 1 KB taken by the system
// per resident CTA.
constexpr int kSmemPerSm = 228 * 1024;
constexpr int kSmemPerCtaMax = 227 * 1024;
constexpr int kSmemReservedPerCta = 1024;

// The dynamic shared memory each of `ctas` CTAs resident on one SM may take,
// each also holding `static_bytes` of static shared memory.
constexpr int dynamic_smem_per_cta(int ctas, int static_bytes) {
  const int share = kSmemPerSm / ctas - kSmemReservedPerCta;
  return (share < kSmemPerCtaMax ? share : kSmemPerCtaMax) - static_bytes;
}

}  // namespace hpc_ops::detail
