// SPDX-License-Identifier: Apache-2.0
// KV-cache and FP8 scale checks (see kv_cache_checks.h).
#include "common/kv_cache_checks.h"

#include <string>

namespace hpc_ops::detail {

const char* fp8_scheme_name(Fp8Scheme s) {
  switch (s) {
    case Fp8Scheme::kPerTensor: return "per_tensor";
    case Fp8Scheme::kQTokenHeadKvTensor: return "q_token_head__kv_tensor";
    case Fp8Scheme::kQkTokenHeadVHead: return "qk_token_head__v_head";
  }
  return "?";
}

bool check_kv_cache_pair(const Checker& check, const Tensor& k_cache, const Tensor& v_cache,
                         int fp8_align) {
  for (const auto& [c, name] : {std::pair<const Tensor*, const char*>{&k_cache, "k_cache"},
                                {&v_cache, "v_cache"}}) {
    check.dtype(*c, name, {DType::kBFloat16, DType::kFloat8E4M3});
    check.ndim(*c, name, 4, "[num_pages, page_size, num_kv_heads, head_dim]");
    check.last_dim_contiguous(*c, name);
    check.non_negative_strides(*c, name);
  }
  check.same_shape(v_cache, "v_cache", k_cache, "k_cache");
  if (v_cache.dtype != k_cache.dtype) {
    check.invalid("v_cache is ", dtype_name(v_cache.dtype), " but k_cache is ",
                  dtype_name(k_cache.dtype), "; both must be bfloat16 or both float8_e4m3fn");
  }
  const bool fp8 = k_cache.dtype == DType::kFloat8E4M3;
  check.aligned(k_cache, "k_cache", fp8 ? fp8_align : 16);
  check.aligned(v_cache, "v_cache", fp8 ? fp8_align : 16);
  return fp8;
}

void check_one_scale(const Checker& check, const Tensor& t, const char* name, Fp8Scheme scheme) {
  check.dtype(t, name, {DType::kFloat32});
  if (t.numel() != 1) {
    check.invalid(name, " must hold one element for scheme ", fp8_scheme_name(scheme),
                  ", got shape ", shape_string(t));
  }
}

void check_scale_shape(const Checker& check, const Tensor& t, const char* name, Fp8Scheme scheme,
                       std::initializer_list<int64_t> sizes, const char* layout) {
  check.dtype(t, name, {DType::kFloat32});
  bool ok = t.ndim == static_cast<int>(sizes.size());
  int d = 0;
  for (const int64_t n : sizes) ok = ok && t.shape[d++] == n;
  if (!ok) {
    check.invalid(name, " must be ", layout, " for scheme ", fp8_scheme_name(scheme),
                  ", got shape ", shape_string(t));
  }
  check.non_negative_strides(t, name);
}

void check_scheme(const Checker& check, Fp8Scheme scheme, const char* arg) {
  const int s = static_cast<int>(scheme);
  if (s < 0 || s > 2) check.invalid(arg, " = ", s, ", expected 0, 1 or 2 (an Fp8Scheme)");
}

void check_no_fp8_scales(const Checker& check, Fp8Scheme scheme, const char* arg,
                         std::initializer_list<std::pair<const Tensor*, const char*>> scales) {
  for (const auto& [t, name] : scales) {
    if (has(*t)) {
      check.invalid(name, " was given, but the KV cache is bfloat16 (scales are for an FP8 cache)");
    }
  }
  if (scheme != Fp8Scheme::kPerTensor) {
    check.invalid(arg, " ", fp8_scheme_name(scheme), " was given, but the KV cache is bfloat16");
  }
}

KvScaleLayout check_kv_scales(const Checker& check, Fp8Scheme scheme, const Tensor& k_scale,
                              const Tensor& v_scale, const Tensor& k_cache, const char* k_note) {
  if (!has(k_scale)) check.invalid("k_scale is required with an FP8 KV cache");
  if (!has(v_scale)) check.invalid("v_scale is required with an FP8 KV cache");
  KvScaleLayout l;
  if (scheme != Fp8Scheme::kQkTokenHeadVHead) {
    check_one_scale(check, k_scale, "k_scale", scheme);
    check_one_scale(check, v_scale, "v_scale", scheme);
    return l;
  }
  const int64_t kv_heads = k_cache.shape[2];
  const std::string k_layout =
      std::string("[num_pages, page_size, num_kv_heads] (k_cache.shape[:3]") + k_note + ")";
  check_scale_shape(check, k_scale, "k_scale", scheme, {k_cache.shape[0], k_cache.shape[1], kv_heads},
                    k_layout.c_str());
  check_scale_shape(check, v_scale, "v_scale", scheme, {kv_heads}, "[num_kv_heads] (k_cache.shape[2])");
  l.k_per_token = true;
  for (int d = 0; d < 3; ++d) l.k_strides[d] = k_scale.strides[d];
  l.v_stride = v_scale.strides[0];
  return l;
}

}  // namespace hpc_ops::detail
