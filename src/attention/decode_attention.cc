// SPDX-License-Identifier: Apache-2.0
// Paged decode attention: validation of every argument against the plan,
// then the attention and merge launches (decode_attention_kernels.cu).
#include <algorithm>
#include <cmath>

#include "attention/decode_kernels.h"
#include "common/check.h"
#include "common/kv_cache_checks.h"
#include "common/cuda_check.h"
#include "common/env.h"
#include "common/tma_map.h"

namespace hpc_ops {
namespace attention {

void check_workspace(const detail::Checker& check, const Tensor& workspace,
                     const DecodePlanInfo& info, const Tensor& kv_lens) {
  check.dtype(workspace, "workspace", {DType::kUInt8});
  check.ndim(workspace, "workspace", 1, "[workspace_bytes]");
  check.contiguous(workspace, "workspace");
  if (workspace.shape[0] < info.workspace_bytes) {
    check.invalid("workspace has ", workspace.shape[0], " bytes, the plan needs ",
                  info.workspace_bytes);
  }
  check.aligned(workspace, "workspace", 256);
  check.on_cuda(kv_lens, "kv_lens");
  check.on_cuda(workspace, "workspace");
  check.same_device(workspace, "workspace", kv_lens, "kv_lens");
}

}  // namespace attention

namespace {

using detail::Checker;
using detail::check_one_scale;
using detail::check_scale_shape;
using detail::has;

bool is_supported_page_size(int64_t n) { return n == 1 || n == 16 || n == 32 || n == 64 || n == 128; }

// The (page, slot, head) strides of a paged tensor in bytes; page and slot
// strides must be under 4 GiB (DecodeParams' 32-bit address arithmetic).
attention::PagedStrides paged_strides(const Checker& check, const int64_t* strides, int64_t element_bytes,
                                      const char* name) {
  uint32_t small[2];
  for (int d = 0; d < 2; ++d) {
    const int64_t bytes = strides[d] * element_bytes;
    if (bytes >= (int64_t{1} << 32)) {
      check.invalid(name, ".stride(", d, ") = ", strides[d], " elements (", bytes,
                    " bytes), expected under 4 GiB");
    }
    small[d] = static_cast<uint32_t>(bytes);
  }
  return {small[0], small[1], strides[2] * element_bytes};
}

// Fills p.tma and sets p.kv_tma when the KV tiles come in by TMA: the FP8
// tokens-on-M kernel, pages of 16 slots or more (a box of a 1-slot page
// moves 128 bytes), k scales not per token (those copies stay cp.async),
// strides TMA can address. Same-run A/B on the H200 (docs/perf/
// decode_attention.md, v5): 1.00-1.08x cp.async (64 x 4K 64/8 137.6 vs
// 145.5 us). HPC_OPS_DECODE_TMA=0 keeps cp.async (a second pass of the GPU
// tests runs it).
void set_kv_tma(const Tensor& k_cache, const Tensor& v_cache, int64_t page_size,
                attention::DecodeParams& p) {
  static const bool enabled = detail::env_int("HPC_OPS_DECODE_TMA", 1) != 0;
  if (!enabled || !attention::decode_tokens_on_m(p.rows, p.kv_fp8) || page_size < 16 ||
      p.k_scale_per_token) {
    return;
  }
  // Cache dims 2, 1, 0 (head, slot, page) of [pages, slots, heads, D], byte
  // strides (one byte per element). A dim of one element is never stepped
  // along: it takes the largest of the others' strides, so it sorts last.
  const int cache_dims[3] = {2, 1, 0};  // head, slot, page
  uint64_t strides[2][3];
  for (int t = 0; t < 2; ++t) {
    const Tensor& c = t == 0 ? k_cache : v_cache;
    int64_t largest = 0;
    for (int i = 0; i < 3; ++i) {
      const int d = cache_dims[i];
      if (c.shape[d] > 1) largest = std::max(largest, c.strides[d]);
    }
    for (int i = 0; i < 3; ++i) {
      const int d = cache_dims[i];
      const int64_t s = c.shape[d] == 1 ? largest : c.strides[d];
      if (!detail::tma_stride_ok(s)) return;
      strides[t][i] = static_cast<uint64_t>(s);
    }
  }
  // Map dims 1-3 in increasing K stride (the layout TMA describes: each
  // dim's stride spans the ones before it); V shares the order.
  int order[3] = {0, 1, 2};
  std::sort(order, order + 3, [&](int a, int b) { return strides[0][a] < strides[0][b]; });
  int8_t map_dim[3];
  uint64_t dims[4] = {attention::kDecodeHeadDim, 0, 0, 0};
  uint32_t box[4] = {attention::kDecodeHeadDim, 1, 1, 1};
  const int box_slots = static_cast<int>(std::min<int64_t>(page_size, attention::kDecodeTileTokens));
  for (int m = 0; m < 3; ++m) {
    const int i = order[m];
    map_dim[i] = static_cast<int8_t>(m + 1);
    dims[m + 1] = static_cast<uint64_t>(k_cache.shape[cache_dims[i]]);
    box[m + 1] = i == 1 ? static_cast<uint32_t>(box_slots) : 1u;
  }
  uint64_t map_strides[2][3];
  for (int t = 0; t < 2; ++t) {
    for (int m = 0; m < 3; ++m) map_strides[t][m] = strides[t][order[m]];
  }
  // L2 fetches 128 B per access: a box's rows are 128 B, strided apart when
  // the cache interleaves heads (NHD). 256 B fetched each row's neighbour
  // head for nothing: 64 x 4K 64/8 149.2 us instead of 137.6, 128 x 1K 64/8
  // 99.8 instead of 74.6 (no promotion: the same as 128 B).
  const CUtensorMapL2promotion promotion = CU_TENSOR_MAP_L2_PROMOTION_L2_128B;
  const CUtensorMapDataType type = CU_TENSOR_MAP_DATA_TYPE_UINT8;
  // A map the driver does not encode: cp.async takes any strides.
  if (!detail::try_make_tma_map_sw128(&p.tma.k, k_cache.data, type, 4, dims, map_strides[0], box, promotion) ||
      !detail::try_make_tma_map_sw128(&p.tma.v, v_cache.data, type, 4, dims, map_strides[1], box, promotion)) {
    return;
  }
  p.tma.head_dim = map_dim[0];
  p.tma.slot_dim = map_dim[1];
  p.tma.box_slots = box_slots;
  p.kv_tma = true;
}

// The FP8 scales against the scheme, filled into p. Structural checks only.
void check_fp8_scales(const Checker& check, const DecodeAttentionOptions& o, const Tensor& q,
                      const Tensor& k_cache, bool q_fp8, bool kv_fp8, attention::DecodeParams& p) {
  detail::check_scheme(check, o.scheme, "scheme");
  if (!kv_fp8) {
    detail::check_no_fp8_scales(check, o.scheme, "scheme",
                                {{&o.q_scale, "q_scale"}, {&o.k_scale, "k_scale"}, {&o.v_scale, "v_scale"}});
    return;
  }
  const detail::KvScaleLayout kv = detail::check_kv_scales(check, o.scheme, o.k_scale, o.v_scale, k_cache, "");
  if (q_fp8 && !has(o.q_scale)) check.invalid("q_scale is required with an FP8 q");
  if (!q_fp8 && has(o.q_scale)) {
    check.invalid("q_scale was given, but q is bfloat16 (q_scale is for an FP8 q)");
  }
  if (q_fp8) {
    if (o.scheme == Fp8Scheme::kPerTensor) {
      check_one_scale(check, o.q_scale, "q_scale", o.scheme);
    } else {
      check_scale_shape(check, o.q_scale, "q_scale", o.scheme, {q.shape[0], q.shape[1]},
                        "[batch * q_len, num_q_heads] (q.shape[:2])");
      p.q_scale_strides[0] = o.q_scale.strides[0];
      p.q_scale_strides[1] = o.q_scale.strides[1];
    }
    p.q_scale = static_cast<const float*>(o.q_scale.data);
  }
  p.k_scale_per_token = kv.k_per_token;
  if (kv.k_per_token) p.k_scale_bytes = paged_strides(check, kv.k_strides, sizeof(float), "k_scale");
  p.v_scale_stride = kv.v_stride;
  p.k_scale = static_cast<const float*>(o.k_scale.data);
  p.v_scale = static_cast<const float*>(o.v_scale.data);
}

}  // namespace

void decode_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                      const Tensor& page_table, const Tensor& kv_lens, const DecodePlanInfo& info,
                      const Tensor& workspace, const DecodeAttentionOptions& options,
                      const Tensor& out, const Tensor& lse, cudaStream_t stream) {
  const Checker check("decode_attention");
  attention::DecodeParams p;
  // q
  check.dtype(q, "q", {DType::kBFloat16, DType::kFloat8E4M3});
  check.ndim(q, "q", 3, "[batch * q_len, num_q_heads, head_dim]");
  check.last_dim_contiguous(q, "q");
  check.aligned(q, "q", 16);
  if (q.shape[2] != attention::kDecodeHeadDim) {
    check.unsupported("head_dim (q.shape[2]) = ", q.shape[2], ", supported: ",
                      attention::kDecodeHeadDim);
  }
  // caches
  // NOTE: 16-byte aligned for FP8 too: tiles arrive by 16-byte cp.async.
  const bool kv_fp8 = detail::check_kv_cache_pair(check, k_cache, v_cache, 16);
  const bool q_fp8 = q.dtype == DType::kFloat8E4M3;
  if (q_fp8 && !kv_fp8) {
    check.invalid("q is float8_e4m3fn but the KV cache is bfloat16; an FP8 q needs an FP8 cache");
  }
  const int64_t page_size = k_cache.shape[1], kv_heads = k_cache.shape[2];
  if (!is_supported_page_size(page_size)) {
    check.unsupported("page_size (k_cache.shape[1]) = ", page_size,
                      ", supported: 1, 16, 32, 64, 128");
  }
  check.dim(k_cache, "k_cache", 3, q.shape[2], "the head dim, q.shape[2]");
  if (kv_heads < 1 || q.shape[1] % kv_heads != 0) {
    check.invalid("num_q_heads (q.shape[1]) = ", q.shape[1],
                  " is not a multiple of num_kv_heads (k_cache.shape[2]) = ", kv_heads);
  }
  // page table and lengths
  check.dtype(page_table, "page_table", {DType::kInt32});
  check.ndim(page_table, "page_table", 2, "[batch, max_pages]");
  check.last_dim_contiguous(page_table, "page_table");
  check.non_negative_strides(page_table, "page_table");
  check.dtype(kv_lens, "kv_lens", {DType::kInt32});
  check.ndim(kv_lens, "kv_lens", 1, "[batch]");
  check.contiguous(kv_lens, "kv_lens");
  const int64_t batch = kv_lens.shape[0];
  check.dim(page_table, "page_table", 0, batch, "the batch, kv_lens.shape[0]");
  if (page_table.shape[1] > INT32_MAX) check.unsupported("page_table has more than 2^31 pages per request");
  // the plan
  if (info.batch != batch || info.num_q_heads != q.shape[1] || info.num_kv_heads != kv_heads ||
      info.head_dim != q.shape[2]) {
    check.invalid("the plan was made for batch ", info.batch, ", ", info.num_q_heads, " q heads, ",
                  info.num_kv_heads, " kv heads, head_dim ", info.head_dim, "; this call has batch ",
                  batch, ", ", q.shape[1], " q heads, ", kv_heads, " kv heads, head_dim ", q.shape[2]);
  }
  if (info.kv_dtype != k_cache.dtype) {
    check.invalid("the plan was made for a ", dtype_name(info.kv_dtype), " KV cache; k_cache is ",
                  dtype_name(k_cache.dtype), " (pass kv_dtype when planning)");
  }
  if (q.shape[0] != batch * info.q_len) {
    check.invalid("q.shape[0] = ", q.shape[0], ", expected batch * q_len = ", batch, " * ",
                  info.q_len);
  }
  // outputs
  check.dtype(out, "out", {DType::kBFloat16});
  check.ndim(out, "out", 3, "[batch * q_len, num_q_heads, head_dim]");
  check.same_shape(out, "out", q, "q");
  check.last_dim_contiguous(out, "out");
  check.aligned(out, "out", 8);
  const bool has_lse = lse.data != nullptr;
  if (has_lse) {
    check.dtype(lse, "lse_out", {DType::kFloat32});
    check.ndim(lse, "lse_out", 2, "[batch * q_len, num_q_heads]");
    check.dim(lse, "lse_out", 0, q.shape[0], "q.shape[0]");
    check.dim(lse, "lse_out", 1, q.shape[1], "q.shape[1]");
    check.non_negative_strides(lse, "lse_out");
  }
  // options
  if (!std::isfinite(options.softmax_scale) || options.softmax_scale < 0.0f) {
    check.invalid("softmax_scale = ", options.softmax_scale, ", expected a finite value > 0");
  }
  if (!std::isfinite(options.soft_cap) || options.soft_cap < 0.0f) {
    check.invalid("soft_cap = ", options.soft_cap, ", expected a finite value > 0 (or 0: off)");
  }
  check_fp8_scales(check, options, q, k_cache, q_fp8, kv_fp8, p);
  // devices (structure first, so host tensors get the structural messages too)
  check.on_cuda(q, "q");
  for (const auto& [t, name] : {std::pair<const Tensor*, const char*>{&k_cache, "k_cache"},
                                {&v_cache, "v_cache"}, {&page_table, "page_table"},
                                {&kv_lens, "kv_lens"}, {&out, "out"}}) {
    check.same_device(*t, name, q, "q");
  }
  if (has_lse) check.same_device(lse, "lse_out", q, "q");
  for (const auto& [t, name] : {std::pair<const Tensor*, const char*>{&options.q_scale, "q_scale"},
                                {&options.k_scale, "k_scale"}, {&options.v_scale, "v_scale"}}) {
    if (has(*t)) check.same_device(*t, name, q, "q");
  }
  attention::check_workspace(check, workspace, info, kv_lens);
  const int64_t kv_bytes = dtype_size(k_cache.dtype);
  p.k_bytes = paged_strides(check, k_cache.strides, kv_bytes, "k_cache");
  p.v_bytes = paged_strides(check, v_cache.strides, kv_bytes, "v_cache");
  if (batch == 0) return;

  p.q = q.data;
  p.q_fp8 = q_fp8;
  p.kv_fp8 = kv_fp8;
  p.q_row_stride = q.strides[0];
  p.q_head_stride = q.strides[1];
  p.k = k_cache.data;
  p.v = v_cache.data;
  p.page_table = static_cast<const int32_t*>(page_table.data);
  p.page_table_stride = page_table.strides[0];
  p.max_pages = static_cast<int32_t>(page_table.shape[1]);
  p.page_shift = 0;
  while ((int64_t{1} << p.page_shift) < page_size) ++p.page_shift;
  p.kv_lens = static_cast<const int32_t*>(kv_lens.data);
  p.out = static_cast<__nv_bfloat16*>(out.data);
  p.out_row_stride = out.strides[0];
  p.out_head_stride = out.strides[1];
  if (has_lse) {
    p.lse = static_cast<float*>(lse.data);
    p.lse_row_stride = lse.strides[0];
    p.lse_head_stride = lse.strides[1];
  }
  p.batch = static_cast<int32_t>(batch);
  p.kv_heads = static_cast<int32_t>(kv_heads);
  p.group = static_cast<int32_t>(q.shape[1] / kv_heads);
  p.q_len = info.q_len;
  p.rows = p.q_len * p.group;
  p.sliding_window = info.sliding_window;
  p.softmax_scale = options.softmax_scale > 0.0f ? options.softmax_scale
                                                 : 1.0f / std::sqrt(static_cast<float>(q.shape[2]));
  p.soft_cap = options.soft_cap;
  auto* ws = static_cast<uint8_t*>(workspace.data);
  const int64_t schedule_bytes = (info.schedule_words * 4 + 255) / 256 * 256;
  p.schedule = reinterpret_cast<int32_t*>(ws);
  p.partial_out = reinterpret_cast<float*>(ws + schedule_bytes);
  p.partial_lse = p.partial_out + int64_t{info.num_slots} * p.rows * attention::kDecodeHeadDim;
  p.num_bins = info.num_bins;
  set_kv_tma(k_cache, v_cache, page_size, p);

  detail::DeviceGuard guard(q.device.index, check.op());
  attention::launch_decode_attention(p, stream);
  HPC_OPS_CUDA_CHECK(check.op(), cudaGetLastError());
}

}  // namespace hpc_ops
