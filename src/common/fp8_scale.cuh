// SPDX-License-Identifier: Apache-2.0
// The dynamic FP8 scale every quantizing kernel writes: max(amax, kMinAmax)
// divided by the e4m3 maximum, a float32 dequantization multiplier; and the
// divisor every FP8 store quantizes with (x / scale, correctly rounded).
#pragma once

#include <cuda_runtime.h>

#include "hpc_ops/quantization.h"

namespace hpc_ops::device {

// max(amax, kMinAmax) / 448, keeping NaN (fmaxf would drop it).
__device__ __forceinline__ float dynamic_scale(float amax) {
  return (amax != amax ? amax : fmaxf(amax, kMinAmax)) * (1.0f / kFp8E4M3Max);
}

// A quantization scale and its reciprocal: FP8 stores compute x / scale as
// x * inv plus one residual step (divide_rn), the correctly rounded quotient.
// NOTE: x * inv alone is off by up to an ulp, which matters exactly when
// x / scale is an e4m3 rounding midpoint; bf16 inputs divided by a scale whose
// mantissa shares a factor with theirs (3, 7, ...) land on midpoints often (a
// bf16 v head written to an FP8 cache had 1.6% of its codes rounded the wrong
// way). The step costs two FMAs per element in memory-bound kernels.
struct Fp8Divisor {
  float scale = 1.0f;
  float inv = 1.0f;
};

__device__ __forceinline__ Fp8Divisor fp8_divisor(float scale) { return {scale, __frcp_rn(scale)}; }

// x / d.scale, correctly rounded where it matters: results beyond the e4m3
// range (|q| > 512) saturate anyway and keep x * inv, so a zero or tiny
// static scale saturates as before instead of turning inf - inf into NaN.
__device__ __forceinline__ float divide_rn(float x, Fp8Divisor d) {
  const float q = x * d.inv;
  const float refined = fmaf(fmaf(-q, d.scale, x), d.inv, q);
  return fabsf(q) <= 512.0f ? refined : q;
}

// x / d.scale, correctly rounded, for a dynamic scale whose maximum covers x
// (|x| <= amax, scale = dynamic_scale(amax) >= kMinAmax / 448): the quotient
// is within e4m3's range up to rounding, so the guard above never fires.
// NOTE: the guard's compare and select are 2 of the 5 instructions an
// element costs; the per-(token, head) scales of rope_row.cuh pay them on
// 16 elements per lane and head.
__device__ __forceinline__ float divide_rn_covered(float x, Fp8Divisor d) {
  const float q = x * d.inv;
  return fmaf(fmaf(-q, d.scale, x), d.inv, q);
}

}  // namespace hpc_ops::device
