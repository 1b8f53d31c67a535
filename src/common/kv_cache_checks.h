// SPDX-License-Identifier: Apache-2.0
// Checks shared by the operators that read or write a paged KV cache (decode
// attention, RoPE + KV write): the K/V cache pair, and the FP8 scale tensors
// of each scheme (names for messages, one-element scales, shaped scales).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <utility>

#include "common/check.h"
#include "hpc_ops/attention.h"

namespace hpc_ops::detail {

const char* fp8_scheme_name(Fp8Scheme s);

// k_cache and v_cache: bf16 or fp8 e4m3, [num_pages, page_size, num_kv_heads,
// head_dim], last dim contiguous, same dtype and shape, aligned to 16 bytes
// (bf16) or `fp8_align` bytes (fp8). Returns whether the caches are FP8.
bool check_kv_cache_pair(const Checker& check, const Tensor& k_cache, const Tensor& v_cache,
                         int fp8_align);

// A float32 scale tensor of exactly one element (shape [] or [1], or any
// shape of one element).
void check_one_scale(const Checker& check, const Tensor& t, const char* name, Fp8Scheme scheme);

// A float32 scale tensor of the given rank and sizes (any non-negative strides).
void check_scale_shape(const Checker& check, const Tensor& t, const char* name, Fp8Scheme scheme,
                       std::initializer_list<int64_t> sizes, const char* layout);

// A scheme value that names an Fp8Scheme (`arg`: the option's name).
void check_scheme(const Checker& check, Fp8Scheme scheme, const char* arg);

// With a bfloat16 cache: none of `scales` was given and `scheme` (named `arg`)
// is the default, per_tensor.
void check_no_fp8_scales(const Checker& check, Fp8Scheme scheme, const char* arg,
                         std::initializer_list<std::pair<const Tensor*, const char*>> scales);

// Where the k and v scales of an FP8 KV cache live.
struct KvScaleLayout {
  bool k_per_token = false;         // else one element
  int64_t k_strides[3] = {};        // page, slot, kv head (per-token only)
  int64_t v_stride = 0;             // per kv head (0: one element)
};

// With an FP8 cache: k_scale and v_scale given and shaped for `scheme`
// (per_tensor / q_token_head__kv_tensor: one element each;
// qk_token_head__v_head: k [num_pages, page_size, Hkv], v [Hkv]). `k_note` is
// appended to the k layout in messages (e.g. ", an output").
KvScaleLayout check_kv_scales(const Checker& check, Fp8Scheme scheme, const Tensor& k_scale,
                              const Tensor& v_scale, const Tensor& k_cache, const char* k_note);

}  // namespace hpc_ops::detail
