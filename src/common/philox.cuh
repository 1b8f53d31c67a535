// SPDX-License-Identifier: Apache-2.0
// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2,
// 3", SC 2011) and the uniform the samplers draw from it. A pure function of
// (key, counter): any thread computes any uniform, in any order.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace hpc_ops::device {

// Ten rounds; the key is bumped by the Weyl constants before every round but
// the first. Output word order follows the Random123 reference (and the
// float64 mirror of the tests, which checks its known-answer vectors).
__device__ __forceinline__ uint4 philox4x32_10(uint4 c, uint32_t k0, uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
#pragma unroll
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += kW0;
      k1 += kW1;
    }
    const uint32_t hi0 = __umulhi(kM0, c.x), lo0 = kM0 * c.x;
    const uint32_t hi1 = __umulhi(kM1, c.z), lo1 = kM1 * c.z;
    c = make_uint4(hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0);
  }
  return c;
}

// The four words of block `block` (= index / 4) of `stream` for (seed,
// offset): counter (block, stream, offset lo, offset hi), key (seed lo, seed hi).
__device__ __forceinline__ uint4 philox_block(uint64_t seed, uint64_t offset, uint32_t stream,
                                              uint32_t block) {
  return philox4x32_10(make_uint4(block, stream, static_cast<uint32_t>(offset),
                                  static_cast<uint32_t>(offset >> 32)),
                       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// Word j (0..3) of a block.
__device__ __forceinline__ uint32_t word_of(const uint4& w, uint32_t j) {
  return j == 0 ? w.x : j == 1 ? w.y : j == 2 ? w.z : w.w;
}

// Word `index` of `stream`: word index % 4 of block index / 4.
__device__ __forceinline__ uint32_t philox_word(uint64_t seed, uint64_t offset, uint32_t stream,
                                                uint32_t index) {
  return word_of(philox_block(seed, offset, stream, index >> 2), index & 3u);
}

// u = ((x >> 9) + 0.5) / 2^23: 23 random bits, an odd multiple of 2^-24, so
// exact in float32 and strictly inside (0, 1) (log(-log(u)) is finite).
__device__ __forceinline__ float uniform_from_word(uint32_t x) {
  return fmaf(static_cast<float>(x >> 9), 0x1p-23f, 0x1p-24f);
}

}  // namespace hpc_ops::device
