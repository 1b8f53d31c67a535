// SPDX-License-Identifier: Apache-2.0
// Division by a run-time divisor that is fixed per launch, as one multiply-high,
// an add and a shift (Granlund-Montgomery): the divisor's magic numbers are
// computed on the host once. Valid for dividends and divisors below 2^31;
// callers reject larger problems on the host.
// NOTE: a 64-bit '/' in a kernel is a ~70-instruction subroutine call; four of
// them before the first load of a 1-row problem cost the streaming kernel
// several microseconds of latency on the H200.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define HPC_OPS_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define HPC_OPS_HOST_DEVICE inline
#endif

namespace hpc_ops {

struct FastDivmod {
  uint32_t divisor = 1;
  uint32_t multiplier = 0;
  uint32_t shift = 0;

  FastDivmod() = default;
  // divisor in [1, 2^31).
  explicit FastDivmod(uint32_t d) : divisor(d) {
    while ((uint64_t{1} << shift) < d) ++shift;
    multiplier =
        static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << shift) - d)) / d + 1);
  }

  // n / divisor for n in [0, 2^31).
  HPC_OPS_HOST_DEVICE uint32_t div(uint32_t n) const {
#if defined(__CUDA_ARCH__)
    const uint32_t hi = __umulhi(n, multiplier);
#else
    const auto hi = static_cast<uint32_t>((uint64_t{n} * multiplier) >> 32);
#endif
    return (hi + n) >> shift;
  }

  // quotient = n / divisor, remainder = n % divisor.
  HPC_OPS_HOST_DEVICE void divmod(uint32_t n, uint32_t& quotient, uint32_t& remainder) const {
    quotient = div(n);
    remainder = n - quotient * divisor;
  }
};

// Largest dividend FastDivmod handles; the row-wise engine rejects problems
// with more rows or work items than this.
constexpr int64_t kMaxFastDividend = (int64_t{1} << 31) - 1;

}  // namespace hpc_ops
