// SPDX-License-Identifier: Apache-2.0
// FastDivmod (the kernels' 32-bit division by a launch-time divisor) agrees
// with '/' and '%' over edge and random dividends and divisors below 2^31.
#include <cstdint>
#include <random>

#include "common/fast_divmod.h"
#include "test_harness.h"

using hpc_ops::FastDivmod;

namespace {
bool agrees(uint32_t n, uint32_t d) {
  const FastDivmod f(d);
  uint32_t q = 0, r = 0;
  f.divmod(n, q, r);
  return q == n / d && r == n % d;
}
}  // namespace

TEST(edge_values) {
  const uint32_t max = (uint32_t{1} << 31) - 1;
  for (uint32_t d : {1u, 2u, 3u, 7u, 16u, 56u, 112u, 128u, 4097u, 65535u, 65536u, max - 1, max}) {
    for (uint32_t n : {0u, 1u, d - 1, d, d + 1, 2 * d - 1, max - 1, max}) {
      if (n > max) continue;
      EXPECT_TRUE(agrees(n, d));
    }
  }
}

TEST(random_values) {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<uint32_t> any(0, (uint32_t{1} << 31) - 1);
  std::uniform_int_distribution<uint32_t> small(1, 70000);
  int failures = 0;
  for (int i = 0; i < 200000; ++i) {
    const uint32_t d = (i % 2) ? small(rng) : any(rng) | 1u;
    if (!agrees(any(rng), d)) ++failures;
  }
  EXPECT_EQ(failures, 0);
}

TEST_MAIN()
