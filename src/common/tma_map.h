// SPDX-License-Identifier: Apache-2.0
// Host-side TMA descriptors (CUtensorMap). The driver's encoder is reached
// through the runtime's entry-point lookup, so nothing links libcuda directly.
// Encoding is pure host work (no device access, no synchronization): safe to
// do on every call, including under CUDA-graph capture.
#pragma once

#include <cuda.h>

#include <cstdint>

namespace hpc_ops::detail {

// A 3-D tiled map over an array [dim2][dim1][dim0] of `type` elements, dim 0
// contiguous, byte strides stride1 (dim 1) and stride2 (dim 2) (multiples of
// 16), boxes of box0 x box1 x 1 with the 128-byte swizzle (box0 elements must
// be 128 bytes).
// Reads outside the array fill zeros. Throws hpc_ops::Error (kCuda) when the
// driver rejects it.
CUtensorMap make_tma_map_3d_sw128(const void* base, CUtensorMapDataType type, uint64_t dim0,
                                  uint64_t dim1, uint64_t dim2, uint64_t stride1, uint64_t stride2,
                                  uint32_t box0, uint32_t box1);

// The same for rank 2..5: dims[0] contiguous, strides[i] the byte stride of
// dims[i + 1] (a multiple of 16, under 2^40), boxes of box[0..rank) with the
// 128-byte swizzle (box[0] elements at most 128 bytes).
// `promotion`: how much L2 fetches around each access (256 B suits boxes whose
// rows are contiguous; rows of 128 B strided apart want 128 B, or every row
// drags in 128 B nobody asked for).
CUtensorMap make_tma_map_sw128(const void* base, CUtensorMapDataType type, int rank,
                               const uint64_t* dims, const uint64_t* strides, const uint32_t* box,
                               CUtensorMapL2promotion promotion = CU_TENSOR_MAP_L2_PROMOTION_L2_256B);

// The same, returning false instead of throwing when the driver rejects the
// map (for callers with another way to move the data).
bool try_make_tma_map_sw128(CUtensorMap* map, const void* base, CUtensorMapDataType type, int rank,
                            const uint64_t* dims, const uint64_t* strides, const uint32_t* box,
                            CUtensorMapL2promotion promotion);

// Whether TMA can address a stride of `bytes` (what make_tma_map_sw128 needs).
constexpr bool tma_stride_ok(int64_t bytes) {
  return bytes > 0 && bytes % 16 == 0 && bytes < (int64_t{1} << 40);
}

}  // namespace hpc_ops::detail
