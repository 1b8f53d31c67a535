// SPDX-License-Identifier: Apache-2.0
// RoPE + QK-norm + paged KV write: validation of every argument (structure
// first, devices last), then one launch of the kernel rope_config.h picks
// (rope_kernels.cu).
#include "hpc_ops/rope.h"

#include <cmath>

#include "common/check.h"
#include "common/cuda_check.h"
#include "common/device_info.h"
#include "common/env.h"
#include "common/kv_cache_checks.h"
#include "rope/rope_config.h"
#include "rope/rope_kernels.h"

namespace hpc_ops {
namespace {

using detail::Checker;
using detail::check_one_scale;
using detail::check_scale_shape;
using detail::has;

bool is_supported_head_dim(int64_t d) { return d == 64 || d == 128 || d == 256; }

// q, k or v: bf16 [rows, heads, D] with 16-byte aligned heads.
void check_input(const Checker& check, const Tensor& t, const char* name, const char* layout) {
  check.dtype(t, name, {DType::kBFloat16});
  check.ndim(t, name, 3, layout);
  check.last_dim_contiguous(t, name);
  check.non_negative_strides(t, name);
}

void check_norm_weight(const Checker& check, const Tensor& w, const char* name, int64_t head_dim) {
  check.dtype(w, name, {DType::kBFloat16, DType::kFloat32});
  check.ndim(w, name, 1, "[head_dim]");
  check.dim(w, name, 0, head_dim, "the head dim, q.shape[2]");
  check.contiguous(w, name);
  check.aligned(w, name, 16);
}

// The FP8 scales of the cache and of an FP8 q_out against the scheme, into p.
void check_fp8(const Checker& check, const RopeKvWriteOptions& o, const Tensor& q_out,
               const Tensor& k_cache, bool kv_fp8, rope::RopeParams& p) {
  detail::check_scheme(check, o.kv_scheme, "kv_scheme");
  const bool q_fp8 = q_out.dtype == DType::kFloat8E4M3;
  if (!kv_fp8) {
    detail::check_no_fp8_scales(check, o.kv_scheme, "kv_scheme",
                                {{&o.k_scale, "k_scale"}, {&o.v_scale, "v_scale"}, {&o.q_scale, "q_scale"}});
    if (q_fp8) check.invalid("out_q is float8_e4m3fn, but the KV cache is bfloat16 (FP8 q needs an FP8 cache)");
    return;
  }
  const detail::KvScaleLayout kv =
      detail::check_kv_scales(check, o.kv_scheme, o.k_scale, o.v_scale, k_cache, ", an output");
  if (kv.k_per_token) {
    p.k_scale_out = static_cast<float*>(o.k_scale.data);
    for (int d = 0; d < 3; ++d) p.k_scale_strides[d] = kv.k_strides[d];
  } else {
    p.k_scale = static_cast<const float*>(o.k_scale.data);
  }
  p.v_scale = static_cast<const float*>(o.v_scale.data);
  p.v_scale_stride = kv.v_stride;
  if (!q_fp8) {
    if (has(o.q_scale)) check.invalid("q_scale was given, but out_q is bfloat16 (q_scale is for an FP8 q)");
    return;
  }
  if (!has(o.q_scale)) {
    check.invalid("q_scale is required with an FP8 out_q (",
                  o.kv_scheme == Fp8Scheme::kPerTensor ? "an input, one element" : "an output, [rows, num_q_heads]",
                  ")");
  }
  if (o.kv_scheme == Fp8Scheme::kPerTensor) {
    check_one_scale(check, o.q_scale, "q_scale", o.kv_scheme);
    p.q_scale = static_cast<const float*>(o.q_scale.data);
  } else {
    check_scale_shape(check, o.q_scale, "q_scale", o.kv_scheme, {q_out.shape[0], q_out.shape[1]},
                      "[rows, num_q_heads] (q.shape[:2], an output)");
    p.q_scale_out = static_cast<float*>(o.q_scale.data);
    p.q_scale_strides[0] = o.q_scale.strides[0];
    p.q_scale_strides[1] = o.q_scale.strides[1];
  }
}

}  // namespace

void rope_qk_norm_kv_write(const Tensor& q, const Tensor& k, const Tensor& v,
                           const Tensor& cos_sin_cache, const Tensor& k_cache,
                           const Tensor& v_cache, const Tensor& page_table, const Tensor& kv_lens,
                           const Tensor& cu_seqlens, const RopeKvWriteOptions& options,
                           const Tensor& q_out, cudaStream_t stream) {
  const Checker check("rope_qk_norm_kv_write");
  rope::RopeParams p;
  // q, k, v
  check_input(check, q, "q", "[rows, num_q_heads, head_dim]");
  check_input(check, k, "k", "[rows, num_kv_heads, head_dim]");
  check_input(check, v, "v", "[rows, num_kv_heads, head_dim]");
  const int64_t rows = q.shape[0];
  const int64_t head_dim = q.shape[2];
  if (!is_supported_head_dim(head_dim)) {
    check.unsupported("head_dim = q.shape[2] = ", head_dim, "; supported: 64, 128, 256");
  }
  check.dim(k, "k", 0, rows, "the rows of q, q.shape[0]");
  check.dim(v, "v", 0, rows, "the rows of q, q.shape[0]");
  check.dim(k, "k", 2, head_dim, "the head dim, q.shape[2]");
  check.dim(v, "v", 2, head_dim, "the head dim, q.shape[2]");
  check.same_shape(v, "v", k, "k");
  if (q.shape[1] < 1 || k.shape[1] < 1 || q.shape[1] + 2 * k.shape[1] > 65535) {
    check.unsupported("num_q_heads = ", q.shape[1], ", num_kv_heads = ", k.shape[1],
                      "; expected at least 1 each and num_q_heads + 2 * num_kv_heads <= 65535");
  }
  check.aligned(q, "q", 16);
  check.aligned(k, "k", 16);
  check.aligned(v, "v", 16);
  if (rows > INT32_MAX) check.unsupported("more than 2^31 rows (", rows, ")");
  // caches
  // FP8 slots are written 8 bytes per lane.
  const bool kv_fp8 = detail::check_kv_cache_pair(check, k_cache, v_cache, 8);
  check.dim(k_cache, "k_cache", 2, k.shape[1], "the kv heads, k.shape[1]");
  check.dim(k_cache, "k_cache", 3, head_dim, "the head dim, q.shape[2]");
  if (k_cache.shape[0] > INT32_MAX) check.unsupported("more than 2^31 pages in k_cache");
  // rotation
  const int64_t rotary_dim = options.rotary_dim == 0 ? head_dim : options.rotary_dim;
  const bool interleaved = options.style == RopeStyle::kInterleaved;
  if (options.style != RopeStyle::kNeox && !interleaved) {
    check.invalid("style = ", static_cast<int>(options.style), ", expected 0 (neox) or 1 (interleaved)");
  }
  const int multiple = interleaved ? 8 : 16;
  if (rotary_dim <= 0 || rotary_dim > head_dim || rotary_dim % multiple != 0) {
    check.unsupported("rotary_dim = ", rotary_dim, ", expected a multiple of ", multiple, " in ",
                      multiple, "..", head_dim, " (head_dim) for ",
                      interleaved ? "interleaved" : "neox", " rotation");
  }
  check.dtype(cos_sin_cache, "cos_sin_cache", {DType::kFloat32, DType::kBFloat16});
  check.ndim(cos_sin_cache, "cos_sin_cache", 2, "[max_position, rotary_dim]");
  check.dim(cos_sin_cache, "cos_sin_cache", 1, rotary_dim, "rotary_dim (cos, then sin)");
  check.last_dim_contiguous(cos_sin_cache, "cos_sin_cache");
  check.non_negative_strides(cos_sin_cache, "cos_sin_cache");
  check.aligned(cos_sin_cache, "cos_sin_cache", 16);
  if (cos_sin_cache.shape[0] > INT32_MAX) check.unsupported("cos_sin_cache has more than 2^31 positions");
  const Tensor& positions = options.positions;
  if (has(positions)) {
    check.dtype(positions, "positions", {DType::kInt32, DType::kInt64});
    check.ndim(positions, "positions", 1, "[rows]");
    check.dim(positions, "positions", 0, rows, "the rows of q, q.shape[0]");
    check.contiguous(positions, "positions");
  }
  // QK norm
  const bool norm = has(options.q_norm_weight) || has(options.k_norm_weight);
  if (norm) {
    if (!has(options.q_norm_weight) || !has(options.k_norm_weight)) {
      check.invalid("q_norm_weight and k_norm_weight go together; only ",
                    has(options.q_norm_weight) ? "q_norm_weight" : "k_norm_weight", " was given");
    }
    check_norm_weight(check, options.q_norm_weight, "q_norm_weight", head_dim);
    check_norm_weight(check, options.k_norm_weight, "k_norm_weight", head_dim);
    if (options.q_norm_weight.dtype != options.k_norm_weight.dtype) {
      check.invalid("q_norm_weight is ", dtype_name(options.q_norm_weight.dtype),
                    " but k_norm_weight is ", dtype_name(options.k_norm_weight.dtype));
    }
    if (!std::isfinite(options.eps) || options.eps < 0.0f) {
      check.invalid("eps = ", options.eps, ", expected a finite value >= 0");
    }
  }
  if (options.norm_order != QkNormOrder::kNormThenRope &&
      options.norm_order != QkNormOrder::kRopeThenNorm) {
    check.invalid("norm_order = ", static_cast<int>(options.norm_order),
                  ", expected 0 (norm_then_rope) or 1 (rope_then_norm)");
  }
  // requests
  check.dtype(kv_lens, "kv_lens", {DType::kInt32});
  check.ndim(kv_lens, "kv_lens", 1, "[batch]");
  check.contiguous(kv_lens, "kv_lens");
  const int64_t batch = kv_lens.shape[0];
  check.dtype(cu_seqlens, "cu_seqlens", {DType::kInt32});
  check.ndim(cu_seqlens, "cu_seqlens", 1, "[batch + 1]");
  check.dim(cu_seqlens, "cu_seqlens", 0, batch + 1, "the batch + 1, kv_lens.shape[0] + 1");
  check.contiguous(cu_seqlens, "cu_seqlens");
  check.dtype(page_table, "page_table", {DType::kInt32});
  check.ndim(page_table, "page_table", 2, "[batch, max_pages]");
  check.dim(page_table, "page_table", 0, batch, "the batch, kv_lens.shape[0]");
  check.last_dim_contiguous(page_table, "page_table");
  check.non_negative_strides(page_table, "page_table");
  if (page_table.shape[1] > INT32_MAX) check.unsupported("page_table has more than 2^31 pages per request");
  // q out
  check.dtype(q_out, "out_q", {DType::kBFloat16, DType::kFloat8E4M3});
  check.ndim(q_out, "out_q", 3, "[rows, num_q_heads, head_dim]");
  check.same_shape(q_out, "out_q", q, "q");
  check.last_dim_contiguous(q_out, "out_q");
  check.non_negative_strides(q_out, "out_q");
  check.aligned(q_out, "out_q", q_out.dtype == DType::kFloat8E4M3 ? 8 : 16);
  check_fp8(check, options, q_out, k_cache, kv_fp8, p);
  // devices (structure first, so host tensors get the structural messages too)
  check.on_cuda(q, "q");
  for (const auto& [t, name] : {std::pair<const Tensor*, const char*>{&k, "k"}, {&v, "v"},
                                {&cos_sin_cache, "cos_sin_cache"}, {&k_cache, "k_cache"},
                                {&v_cache, "v_cache"}, {&page_table, "page_table"},
                                {&kv_lens, "kv_lens"}, {&cu_seqlens, "cu_seqlens"},
                                {&q_out, "out_q"}, {&positions, "positions"},
                                {&options.q_norm_weight, "q_norm_weight"},
                                {&options.k_norm_weight, "k_norm_weight"},
                                {&options.k_scale, "k_scale"}, {&options.v_scale, "v_scale"},
                                {&options.q_scale, "q_scale"}}) {
    if (has(*t)) check.same_device(*t, name, q, "q");
  }
  if (rows == 0) return;

  p.rows = static_cast<int32_t>(rows);
  p.batch = static_cast<int32_t>(batch);
  p.num_q_heads = static_cast<int32_t>(q.shape[1]);
  p.num_kv_heads = static_cast<int32_t>(k.shape[1]);
  p.q = q.data;
  p.k = k.data;
  p.v = v.data;
  for (int d = 0; d < 2; ++d) {
    p.q_strides[d] = q.strides[d];
    p.k_strides[d] = k.strides[d];
    p.v_strides[d] = v.strides[d];
    p.q_out_strides[d] = q_out.strides[d];
  }
  p.cos_sin = cos_sin_cache.data;
  p.cos_sin_f32 = cos_sin_cache.dtype == DType::kFloat32;
  p.cos_sin_stride = cos_sin_cache.strides[0];
  p.max_position = static_cast<int32_t>(cos_sin_cache.shape[0]);
  p.rotary_dim = static_cast<int32_t>(rotary_dim);
  p.interleaved = interleaved;
  p.positions = positions.data;
  p.positions_i64 = has(positions) && positions.dtype == DType::kInt64;
  if (norm) {
    p.q_norm_weight = options.q_norm_weight.data;
    p.k_norm_weight = options.k_norm_weight.data;
    p.norm_weight_f32 = options.q_norm_weight.dtype == DType::kFloat32;
  }
  p.rope_then_norm = options.norm_order == QkNormOrder::kRopeThenNorm;
  p.eps = options.eps;
  p.page_table = static_cast<const int32_t*>(page_table.data);
  p.page_table_stride = page_table.strides[0];
  p.max_pages = static_cast<int32_t>(page_table.shape[1]);
  p.num_pages = static_cast<int32_t>(k_cache.shape[0]);
  p.page_size = static_cast<int32_t>(k_cache.shape[1]);
  p.kv_lens = static_cast<const int32_t*>(kv_lens.data);
  p.cu_seqlens = static_cast<const int32_t*>(cu_seqlens.data);
  p.k_cache = k_cache.data;
  p.v_cache = v_cache.data;
  for (int d = 0; d < 3; ++d) {
    p.k_cache_strides[d] = k_cache.strides[d];
    p.v_cache_strides[d] = v_cache.strides[d];
  }
  p.kv_fp8 = kv_fp8;
  p.q_out = q_out.data;
  p.q_fp8 = q_out.dtype == DType::kFloat8E4M3;

  detail::DeviceGuard guard(q.device.index, check.op());
  const int heads = p.num_q_heads + 2 * p.num_kv_heads;
  const int sms = detail::multiprocessor_count(check.op(), q.device.index);
  const rope::StreamShape stream_shape = rope::stream_shape(
      heads, static_cast<int>(head_dim), p.rotary_dim, p.cos_sin_f32 ? 4 : 2);
  // HPC_OPS_ROPE_KERNEL=per_row or stream forces a kernel (experiments,
  // tests); stream falls back to per_row where a row does not fit twice.
  bool stream_kernel = rope::use_stream_kernel(rows, sms, stream_shape);
  if (detail::env_set("HPC_OPS_ROPE_KERNEL")) {  // read per call: the tests switch it
    stream_kernel = detail::env_is("HPC_OPS_ROPE_KERNEL", "stream") && stream_shape.stages >= 2;
  }
  if (stream_kernel) {
    p.stages = stream_shape.stages;
    p.stage_bytes = stream_shape.stage_bytes;
    p.cos_sin_offset = stream_shape.cos_sin_offset;
    p.cos_sin_bytes = stream_shape.cos_sin_bytes;
    HPC_OPS_CUDA_CHECK(check.op(), rope::launch_rope_stream(p, static_cast<int>(head_dim),
                                                            rope::stream_grid(rows, sms), stream));
    return;
  }
  p.heads_per_cta = rope::choose_heads_per_cta(rows, heads, static_cast<int>(head_dim), sms);
  HPC_OPS_CUDA_CHECK(check.op(), rope::launch_rope_kv_write(p, static_cast<int>(head_dim), stream));
}

}  // namespace hpc_ops
