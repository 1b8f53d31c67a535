// SPDX-License-Identifier: Apache-2.0
// The dynamic FP8 scale every quantizing kernel writes: max(amax, kMinAmax)
// divided by the e4m3 maximum, a float32 dequantization multiplier.
#pragma once

#include <cuda_runtime.h>

#include "hpc_ops/quantization.h"

namespace hpc_ops::device {

// max(amax, kMinAmax) / 448, keeping NaN (fmaxf would drop it).
__device__ __forceinline__ float dynamic_scale(float amax) {
  return (amax != amax ? amax : fmaxf(amax, kMinAmax)) * (1.0f / kFp8E4M3Max);
}

}  // namespace hpc_ops::device
