// SPDX-License-Identifier: Apache-2.0
// Cached device attributes (see device_info.h).
#include "common/device_info.h"

#include <cuda_runtime_api.h>

#include <array>

#include "common/cuda_check.h"

namespace hpc_ops::detail {

int multiprocessor_count(const char* op, int device) {
  // A benign race at worst writes the same value twice.
  static std::array<int, 64> cache{};
  const bool cacheable = device >= 0 && device < static_cast<int>(cache.size());
  if (cacheable && cache[device] > 0) return cache[device];
  int sms = 0;
  const cudaError_t err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err != cudaSuccess) throw_cuda_error(err, op, "cudaDeviceGetAttribute(MultiProcessorCount)");
  if (cacheable) cache[device] = sms;
  return sms;
}

}  // namespace hpc_ops::detail
