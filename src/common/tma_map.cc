// SPDX-License-Identifier: Apache-2.0
// Host-side TMA descriptors through the driver entry point (see tma_map.h).
#include "common/tma_map.h"

#include <cuda_runtime_api.h>
#include <cudaTypedefs.h>

#include <mutex>
#include <string>

#include "hpc_ops/core/error.h"

namespace hpc_ops::detail {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = nullptr;
  static std::once_flag once;
  std::call_once(once, [] {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult status;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000, cudaEnableDefault,
                                         &status) == cudaSuccess &&
        status == cudaDriverEntryPointSuccess) {
      fn = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(ptr);
    }
  });
  if (fn == nullptr) {
    throw Error(ErrorKind::kCuda,
                "hpc_ops: the CUDA driver does not provide cuTensorMapEncodeTiled (needs a "
                "driver for CUDA 12.0 or newer)");
  }
  return fn;
}

CUresult encode_sw128(CUtensorMap* map, const void* base, CUtensorMapDataType type, int rank,
                      const uint64_t* dims, const uint64_t* strides, const uint32_t* box,
                      CUtensorMapL2promotion promotion) {
  cuuint64_t global_dims[5], global_strides[4];
  cuuint32_t box_dims[5], element_strides[5];
  for (int d = 0; d < rank; ++d) {
    global_dims[d] = dims[d];
    box_dims[d] = box[d];
    element_strides[d] = 1;
    if (d + 1 < rank) global_strides[d] = strides[d];
  }
  return encoder()(map, type, static_cast<cuuint32_t>(rank), const_cast<void*>(base), global_dims,
                   global_strides, box_dims, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                   CU_TENSOR_MAP_SWIZZLE_128B, promotion, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
}

}  // namespace

bool try_make_tma_map_sw128(CUtensorMap* map, const void* base, CUtensorMapDataType type, int rank,
                            const uint64_t* dims, const uint64_t* strides, const uint32_t* box,
                            CUtensorMapL2promotion promotion) {
  return encode_sw128(map, base, type, rank, dims, strides, box, promotion) == CUDA_SUCCESS;
}

CUtensorMap make_tma_map_sw128(const void* base, CUtensorMapDataType type, int rank,
                               const uint64_t* dims, const uint64_t* strides, const uint32_t* box,
                               CUtensorMapL2promotion promotion) {
  CUtensorMap map;
  const CUresult r = encode_sw128(&map, base, type, rank, dims, strides, box, promotion);
  if (r != CUDA_SUCCESS) {
    throw Error(ErrorKind::kCuda, "hpc_ops: cuTensorMapEncodeTiled failed with CUresult " +
                                      std::to_string(static_cast<int>(r)));
  }
  return map;
}

CUtensorMap make_tma_map_3d_sw128(const void* base, CUtensorMapDataType type, uint64_t dim0,
                                  uint64_t dim1, uint64_t dim2, uint64_t stride1, uint64_t stride2,
                                  uint32_t box0, uint32_t box1) {
  const uint64_t dims[3] = {dim0, dim1, dim2};
  const uint64_t strides[2] = {stride1, stride2};
  const uint32_t box[3] = {box0, box1, 1};
  return make_tma_map_sw128(base, type, 3, dims, strides, box);
}

}  // namespace hpc_ops::detail
