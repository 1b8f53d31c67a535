// SPDX-License-Identifier: Apache-2.0
// Hopper warpgroup MMA (wgmma) with shared-memory operands in the 128-byte
// swizzle that TMA (CU_TENSOR_MAP_SWIZZLE_128B) and our cp.async writer
// (swizzle_128b_offset) produce: K-major, or MN-major for B (sw128_mnmajor_desc),
// and A either in shared memory or in registers (wgmma_16_rs). The
// instruction wrappers come from CuTe (cute/arch/mma_sm90_gmma.hpp); this
// file adds the descriptors of such tiles and calls that spread a float array
// over the wrappers' arguments.
//
// Tile layout (one operand, R rows x 128 bytes of K): row r's 16-byte chunk c
// lies at r * 128 + ((c ^ (r % 8)) * 16); groups of 8 rows are 1024 bytes
// apart; the tile base is 1024-byte aligned.
//
// Accumulator of m64nNk*: thread t of the warpgroup (warp w = t / 32, lane l)
// holds for each n8 block b < N / 8: acc[4b + 2i + j] = D[16w + l/4 + 8i][8b + 2(l%4) + j].
#pragma once

#include <cstdint>
#include <utility>

#include <cute/arch/mma_sm90_desc.hpp>
#include <cute/arch/mma_sm90_gmma.hpp>

namespace hpc_ops::device {

// Byte offset of (row, 16-byte chunk) in a 128-byte-swizzled K-major tile.
__device__ __forceinline__ uint32_t swizzle_128b_offset(int row, int chunk) {
  return static_cast<uint32_t>(row * 128 + ((chunk ^ (row & 7)) << 4));
}

// The descriptor of a K-major, 128-byte-swizzled tile as two 32-bit words.
// The upper word (stride 1024 bytes = 8 rows x 128 bytes, base offset 0 as
// tile bases are 1024-byte aligned, 128-byte swizzle) is one constant for
// every such tile, so a loop over pipeline stages adds only to the lower word
// (start address / 16 in bits 0-13; the leading offset, unused by swizzled
// K-major layouts, 1 in bits 16-29): one 32-bit add per operand instead of
// 64-bit arithmetic moved into uniform registers.
constexpr uint32_t kSw128DescHi =
    (1024 >> 4) | (static_cast<uint32_t>(cute::SM90::GMMA::LayoutType::B128) << 30);
__device__ __forceinline__ uint32_t sw128_kmajor_desc_lo(uint32_t smem_addr) {
  return ((smem_addr >> 4) & 0x3fffu) | (1u << 16);
}
__device__ __forceinline__ uint64_t sw128_desc(uint32_t lo) {
  return (static_cast<uint64_t>(kSw128DescHi) << 32) | lo;
}

// The descriptor of such a tile starting at `smem` (a row whose index is a
// multiple of 8), advanced by `k_byte_offset` (a multiple of 32) along K
// inside the 128-byte rows.
__device__ __forceinline__ uint64_t sw128_kmajor_desc(const void* smem, uint32_t k_byte_offset) {
  return sw128_desc(
      sw128_kmajor_desc_lo(static_cast<uint32_t>(__cvta_generic_to_shared(smem)) + k_byte_offset));
}

// The descriptor of an MN-major operand in the same 128-byte swizzle (16-bit
// elements only): rows of 128 bytes hold 64 consecutive MN elements of one K
// index, 8 rows (K) make a 1024-byte atom, atoms along K are 1024 bytes
// apart (the stride word above) and blocks of 64 MN elements `mn_block_bytes`
// apart (the leading offset).
__device__ __forceinline__ uint64_t sw128_mnmajor_desc(uint32_t smem_addr, uint32_t mn_block_bytes) {
  return sw128_desc(((smem_addr >> 4) & 0x3fffu) | ((mn_block_bytes >> 4) << 16));
}

// The m64nNk* instruction for A = B = element type, fp32 accumulation.
template <class Element, int N>
struct WgmmaAtom;

#define HPC_OPS_WGMMA_ATOMS(N)                                                              \
  template <>                                                                               \
  struct WgmmaAtom<__nv_fp8_e4m3, N> {                                                      \
    using Op = cute::SM90::GMMA::MMA_64x##N##x32_F32E4M3E4M3_SS_TN<>;                       \
    static constexpr int kK = 32;                                                           \
  };                                                                                        \
  template <>                                                                               \
  struct WgmmaAtom<__nv_bfloat16, N> {                                                      \
    using Op = cute::SM90::GMMA::MMA_64x##N##x16_F32BF16BF16_SS<                         \
        cute::SM90::GMMA::Major::K, cute::SM90::GMMA::Major::K>;                          \
    static constexpr int kK = 16;                                                           \
  };
HPC_OPS_WGMMA_ATOMS(16)
HPC_OPS_WGMMA_ATOMS(32)
HPC_OPS_WGMMA_ATOMS(64)
HPC_OPS_WGMMA_ATOMS(128)
#undef HPC_OPS_WGMMA_ATOMS

template <class Op, int... I>
__device__ __forceinline__ void wgmma_expand(uint64_t desc_a, uint64_t desc_b, float* acc,
                                             bool accumulate, std::integer_sequence<int, I...>) {
  Op::fma(desc_a, desc_b, acc[I]...,
          accumulate ? cute::SM90::GMMA::ScaleOut::One : cute::SM90::GMMA::ScaleOut::Zero);
}

// acc (N / 2 floats per thread) = A(64 x kK) * B(N x kK)^T (+ acc if accumulate).
template <class Element, int N>
__device__ __forceinline__ void wgmma(uint64_t desc_a, uint64_t desc_b, float* acc,
                                      bool accumulate) {
  wgmma_expand<typename WgmmaAtom<Element, N>::Op>(desc_a, desc_b, acc, accumulate,
                                                   std::make_integer_sequence<int, N / 2>{});
}

// m64nNk16 in fp16 (or bf16: kBf16) with A from registers (each warp of the
// warpgroup holds the m16n8k16 A fragments of its 16 rows) and B from shared
// memory, K-major or MN-major (kBMnMajor).
template <bool kBf16, int N, bool kBMnMajor>
struct Wgmma16Rs;
#define HPC_OPS_WGMMA_16_RS(N)                                                                        \
  template <bool kBMnMajor>                                                                           \
  struct Wgmma16Rs<false, N, kBMnMajor> {                                                             \
    using Op = cute::SM90::GMMA::MMA_64x##N##x16_F32F16F16_RS<                                        \
        cute::SM90::GMMA::Major::K, kBMnMajor ? cute::SM90::GMMA::Major::MN : cute::SM90::GMMA::Major::K>; \
  };                                                                                                  \
  template <bool kBMnMajor>                                                                           \
  struct Wgmma16Rs<true, N, kBMnMajor> {                                                              \
    using Op = cute::SM90::GMMA::MMA_64x##N##x16_F32BF16BF16_RS<                                      \
        cute::SM90::GMMA::Major::K, kBMnMajor ? cute::SM90::GMMA::Major::MN : cute::SM90::GMMA::Major::K>; \
  };
HPC_OPS_WGMMA_16_RS(64)
HPC_OPS_WGMMA_16_RS(128)
#undef HPC_OPS_WGMMA_16_RS

template <class Op, int... I>
__device__ __forceinline__ void wgmma_rs_expand(const uint32_t (&a)[4], uint64_t desc_b, float* acc,
                                                bool accumulate, std::integer_sequence<int, I...>) {
  Op::fma(a[0], a[1], a[2], a[3], desc_b, acc[I]...,
          accumulate ? cute::SM90::GMMA::ScaleOut::One : cute::SM90::GMMA::ScaleOut::Zero);
}

// acc (N / 2 floats per thread) = A(64 x 16) * B(16 x N) (+ acc if accumulate).
template <int N, bool kBMnMajor, bool kBf16 = false>
__device__ __forceinline__ void wgmma_16_rs(const uint32_t (&a)[4], uint64_t desc_b, float* acc,
                                            bool accumulate) {
  wgmma_rs_expand<typename Wgmma16Rs<kBf16, N, kBMnMajor>::Op>(a, desc_b, acc, accumulate,
                                                              std::make_integer_sequence<int, N / 2>{});
}

// The N = 24 and 48 shapes of e4m3 x e4m3 (CuTe keeps them in an optional
// header): acc = A(64 x 32) * B(N x 32)^T (+ acc if accumulate), same layouts.
__device__ __forceinline__ void wgmma_e4m3_m64n24k32(uint64_t desc_a, uint64_t desc_b, float (&acc)[12],
                                                    bool accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %14, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n24k32.f32.e4m3.e4m3 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11}, %12, %13, p, 1, 1;\n}\n"
      : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3]), "+f"(acc[4]), "+f"(acc[5]), "+f"(acc[6]), "+f"(acc[7]), "+f"(acc[8]), "+f"(acc[9]), "+f"(acc[10]), "+f"(acc[11])
      : "l"(desc_a), "l"(desc_b), "r"(static_cast<int32_t>(accumulate)));
}

__device__ __forceinline__ void wgmma_e4m3_m64n48k32(uint64_t desc_a, uint64_t desc_b, float (&acc)[24],
                                                    bool accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %26, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n48k32.f32.e4m3.e4m3 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23}, %24, %25, p, 1, 1;\n}\n"
      : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3]), "+f"(acc[4]), "+f"(acc[5]), "+f"(acc[6]), "+f"(acc[7]), "+f"(acc[8]), "+f"(acc[9]), "+f"(acc[10]), "+f"(acc[11]), "+f"(acc[12]), "+f"(acc[13]), "+f"(acc[14]), "+f"(acc[15]), "+f"(acc[16]), "+f"(acc[17]), "+f"(acc[18]), "+f"(acc[19]), "+f"(acc[20]), "+f"(acc[21]), "+f"(acc[22]), "+f"(acc[23])
      : "l"(desc_a), "l"(desc_b), "r"(static_cast<int32_t>(accumulate)));
}

}  // namespace hpc_ops::device
