// SPDX-License-Identifier: Apache-2.0
// Checks of FP8 scale tensors shared by the operators that read or write an
// FP8 KV cache (decode attention, RoPE + KV write): scheme names for messages,
// one-element scales and scales of a given shape.
#pragma once

#include <cstdint>
#include <initializer_list>

#include "common/check.h"
#include "hpc_ops/attention.h"

namespace hpc_ops::detail {

const char* fp8_scheme_name(Fp8Scheme s);

inline bool has(const Tensor& t) { return t.data != nullptr; }

// A float32 scale tensor of exactly one element (shape [] or [1], or any
// shape of one element).
void check_one_scale(const Checker& check, const Tensor& t, const char* name, Fp8Scheme scheme);

// A float32 scale tensor of the given rank and sizes (any non-negative strides).
void check_scale_shape(const Checker& check, const Tensor& t, const char* name, Fp8Scheme scheme,
                       std::initializer_list<int64_t> sizes, const char* layout);

}  // namespace hpc_ops::detail
