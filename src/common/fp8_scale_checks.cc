// SPDX-License-Identifier: Apache-2.0
// FP8 scale checks (see fp8_scale_checks.h).
#include "common/fp8_scale_checks.h"

namespace hpc_ops::detail {

const char* fp8_scheme_name(Fp8Scheme s) {
  switch (s) {
    case Fp8Scheme::kPerTensor: return "per_tensor";
    case Fp8Scheme::kQTokenHeadKvTensor: return "q_token_head__kv_tensor";
    case Fp8Scheme::kQkTokenHeadVHead: return "qk_token_head__v_head";
  }
  return "?";
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

}  // namespace hpc_ops::detail
