// SPDX-License-Identifier: Apache-2.0
// Fused sampling: validation of every argument (structure first, devices
// last), then the launches (sampling_kernels.cu, sampling_state_kernels.cu).
#include "hpc_ops/sampling.h"

#include <cmath>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "common/check.h"
#include "common/cuda_check.h"
#include "common/device_info.h"
#include "common/env.h"
#include "sampling/sampling_config.h"
#include "sampling/sampling_kernels.h"

namespace hpc_ops {
namespace {

using detail::Checker;
using detail::has;
using sampling::SamplingParams;

// Tensors to check for the device at the end, with their names.
using DeviceList = std::vector<std::pair<const Tensor*, const char*>>;

// A per-request parameter tensor: dtype [B], contiguous.
void check_row_tensor(const Checker& check, const Tensor& t, const char* name, DType dtype,
                      int64_t batch, DeviceList& devices) {
  check.dtype(t, name, {dtype});
  check.ndim(t, name, 1, "[B]");
  check.dim(t, name, 0, batch, "the batch, logits.shape[0]");
  check.contiguous(t, name);
  devices.push_back({&t, name});
}

sampling::FloatParam float_param(const Checker& check, const RowParam& p, const char* name,
                                 int64_t batch, DeviceList& devices) {
  sampling::FloatParam out;
  out.value = static_cast<float>(p.value);
  if (has(p.tensor)) {
    check_row_tensor(check, p.tensor, name, DType::kFloat32, batch, devices);
    out.ptr = static_cast<const float*>(p.tensor.data);
  }
  return out;
}

void check_scalar(const Checker& check, const RowParam& p, const char* name, bool ok,
                  const char* expected) {
  if (!has(p.tensor) && !ok) check.invalid(name, " = ", p.value, ", expected ", expected);
}

// Every per-request parameter of options into p (scalars range-checked).
void read_parameters(const Checker& check, const SamplingOptions& o, int64_t batch,
                     int64_t vocab, SamplingParams& p, DeviceList& devices) {
  const double t = o.temperature.value, tp = o.top_p.value, mp = o.min_p.value;
  const double k = o.top_k.value, rep = o.repetition_penalty.value;
  check_scalar(check, o.temperature, "temperature", std::isfinite(t) && t >= 0.0,
               "a finite value >= 0 (0 = greedy)");
  check_scalar(check, o.top_k, "top_k", k >= 0.0 && k == std::floor(k),
               "an integer >= 0 (0 = off)");
  if (!has(o.top_k.tensor) && k > static_cast<double>(vocab)) {
    check.invalid("top_k = ", k, ", expected at most the vocabulary size V = ", vocab,
                  " (0 = off)");
  }
  check_scalar(check, o.top_p, "top_p", tp > 0.0 && tp <= 1.0, "a value in (0, 1] (1 = off)");
  check_scalar(check, o.min_p, "min_p", mp >= 0.0 && mp < 1.0, "a value in [0, 1) (0 = off)");
  check_scalar(check, o.repetition_penalty, "repetition_penalty", std::isfinite(rep) && rep > 0.0,
               "a finite value > 0 (1 = off)");
  check_scalar(check, o.presence_penalty, "presence_penalty",
               std::isfinite(o.presence_penalty.value), "a finite value (0 = off)");
  check_scalar(check, o.frequency_penalty, "frequency_penalty",
               std::isfinite(o.frequency_penalty.value), "a finite value (0 = off)");
  p.temperature = float_param(check, o.temperature, "temperature", batch, devices);
  p.top_p = float_param(check, o.top_p, "top_p", batch, devices);
  p.min_p = float_param(check, o.min_p, "min_p", batch, devices);
  p.repetition = float_param(check, o.repetition_penalty, "repetition_penalty", batch, devices);
  p.presence = float_param(check, o.presence_penalty, "presence_penalty", batch, devices);
  p.frequency = float_param(check, o.frequency_penalty, "frequency_penalty", batch, devices);
  p.top_k.value = static_cast<int32_t>(k);
  if (has(o.top_k.tensor)) {
    check_row_tensor(check, o.top_k.tensor, "top_k", DType::kInt32, batch, devices);
    p.top_k.ptr = static_cast<const int32_t*>(o.top_k.tensor.data);
  }
  for (auto [seed, name, out] :
       {std::tuple<const RowSeed*, const char*, sampling::SeedParam*>{&o.seeds, "seeds", &p.seeds},
        {&o.offsets, "offsets", &p.offsets}}) {
    out->value = seed->value;
    if (has(seed->tensor)) {
      check_row_tensor(check, seed->tensor, name, DType::kInt64, batch, devices);
      out->ptr = static_cast<const int64_t*>(seed->tensor.data);
    }
  }
  p.use_seen = has(o.repetition_penalty.tensor) || rep != 1.0 ||
               has(o.presence_penalty.tensor) || o.presence_penalty.value != 0.0;
  p.use_counts = has(o.frequency_penalty.tensor) || o.frequency_penalty.value != 0.0;
  if (p.use_seen && !has(o.seen_mask)) {
    check.invalid("seen_mask is required by the repetition / presence penalties (int32 [B, ",
                  "ceil(V / 32)] bitmask of the tokens seen so far)");
  }
  if (p.use_counts && !has(o.token_counts)) {
    check.invalid("token_counts is required by the frequency penalty (int32 [B, V] counts)");
  }
}

// A mask / count tensor: [B, N], or [B, k+1, N] when positions > 1. Returns
// its strides as a RowInput.
sampling::RowInput row_input(const Checker& check, const Tensor& t, const char* name,
                             int64_t batch, int positions, int64_t width, const char* what,
                             DeviceList& devices) {
  sampling::RowInput in;
  if (!has(t)) return in;
  check.dtype(t, name, {DType::kInt32});
  if (positions > 1 && t.ndim == 3) {
    check.dim(t, name, 0, batch, "the batch");
    check.dim(t, name, 1, positions, "the target positions, k + 1");
    check.dim(t, name, 2, width, what);
    in.position_stride = t.strides[1];
  } else {
    check.ndim(t, name, 2, positions > 1 ? "[B, N] or [B, k+1, N]" : "[B, N]");
    check.dim(t, name, 0, batch, "the batch");
    check.dim(t, name, 1, width, what);
  }
  check.last_dim_contiguous(t, name);
  check.non_negative_strides(t, name);
  in.ptr = t.data;
  in.request_stride = t.strides[0];
  devices.push_back({&t, name});
  return in;
}

void read_masks(const Checker& check, const SamplingOptions& o, int64_t batch, int positions,
                int64_t vocab, SamplingParams& p, DeviceList& devices) {
  const int64_t words = (vocab + 31) / 32;
  p.seen_mask = row_input(check, o.seen_mask, "seen_mask", batch, positions, words,
                          "ceil(V / 32) words", devices);
  p.allowed_mask = row_input(check, o.allowed_mask, "allowed_mask", batch, positions, words,
                             "ceil(V / 32) words", devices);
  p.token_counts = row_input(check, o.token_counts, "token_counts", batch, positions, vocab,
                             "the vocabulary size V", devices);
  if (!p.use_seen) p.seen_mask = {};
  if (!p.use_counts) p.token_counts = {};
}

void check_logits(const Checker& check, const Tensor& logits, const char* name, int rank,
                  const char* layout) {
  check.dtype(logits, name, {DType::kFloat32, DType::kBFloat16});
  check.ndim(logits, name, rank, layout);
  if (logits.shape[rank - 1] < 1) {
    check.invalid(name, ".shape[", rank - 1, "] = ", logits.shape[rank - 1],
                  ", expected a vocabulary of at least 1 token");
  }
  if (logits.shape[rank - 1] > (int64_t{1} << 30)) {
    check.unsupported(name, ": a vocabulary of ", logits.shape[rank - 1],
                      " tokens (at most 2^30)");
  }
  check.last_dim_contiguous(logits, name);
  check.non_negative_strides(logits, name);
}

void check_output(const Checker& check, const Tensor& t, const char* name, DType dtype,
                  std::initializer_list<int64_t> shape, const char* layout) {
  check.dtype(t, name, {dtype});
  check.ndim(t, name, static_cast<int>(shape.size()), layout);
  int d = 0;
  for (int64_t size : shape) {
    check.dim(t, name, d, size, d == 0 ? "the batch" : "k + 1");
    ++d;
  }
  check.contiguous(t, name);
}

void check_devices(const Checker& check, const Tensor& anchor, const char* anchor_name,
                   const DeviceList& devices) {
  check.on_cuda(anchor, anchor_name);
  for (const auto& [t, name] : devices) {
    if (has(*t)) check.same_device(*t, name, anchor, anchor_name);
  }
}

// Whether top-k or top-p may truncate some row (a per-request tensor may).
bool threshold_search(const sampling::SamplingParams& p, int64_t vocab) {
  return p.top_k.ptr != nullptr || (p.top_k.value > 0 && p.top_k.value < vocab) ||
         p.top_p.ptr != nullptr || p.top_p.value < 1.0f;
}

// The cluster split of `rows` rows of V tokens on `device` (the current one)
// (HPC_OPS_SAMPLING_CLUSTER overrides the cluster limit, for experiments).
sampling::ClusterSplit split_for(int64_t vocab, int64_t rows, bool thresholds, int device,
                                 const char* op) {
  int max_cluster = sampling::kPortableCluster;
  if (const int v = detail::env_int("HPC_OPS_SAMPLING_CLUSTER", 0); v != 0) {
    if (v >= 1 && v <= sampling::kMaxClusterSize) max_cluster = v;
  } else if (!thresholds && rows <= sampling::kWideClusterMaxRows) {
    // (the occupancy query only where max_cluster_for may answer 16)
    max_cluster = sampling::max_cluster_for(rows, thresholds, sampling::wide_clusters_resident(op));
  }
  sampling::ClusterSplit split = sampling::choose_cluster_split(
      vocab, max_cluster, detail::kSmemPerCtaMax, sampling::shared_state_bytes());
  // HPC_OPS_SAMPLING_THREADS=1024 or 512 forces the CTA size (experiments, tests).
  const int forced = detail::env_int("HPC_OPS_SAMPLING_THREADS", 0);
  const bool paired = forced ? forced == sampling::kPairedCtaThreads
                             : sampling::use_paired_ctas(rows, split.cluster,
                                                         detail::multiprocessor_count(op, device));
  if (paired) {  // (the kernel has no static shared memory)
    split = sampling::choose_cluster_split(vocab, max_cluster, detail::dynamic_smem_per_cta(2, 0),
                                           sampling::shared_state_bytes());
    split.threads = sampling::kPairedCtaThreads;
  }
  return split;
}

void check_grid_rows(const Checker& check, int64_t rows) {
  if (rows > 65535) {
    check.unsupported("B * positions = ", rows, " rows (at most 65535 per call)");
  }
}

}  // namespace

void sample(const Tensor& logits, const SamplingOptions& options, const Tensor& tokens_out,
            const Tensor& logprobs_out, cudaStream_t stream) {
  const Checker check("sample");
  check_logits(check, logits, "logits", 2, "[B, V]");
  const int64_t batch = logits.shape[0], vocab = logits.shape[1];
  SamplingParams p;
  DeviceList devices;
  read_parameters(check, options, batch, vocab, p, devices);
  read_masks(check, options, batch, 1, vocab, p, devices);
  check_output(check, tokens_out, "out", DType::kInt32, {batch}, "[B]");
  devices.push_back({&tokens_out, "out"});
  if (has(logprobs_out)) {
    check_output(check, logprobs_out, "logprobs_out", DType::kFloat32, {batch}, "[B]");
    devices.push_back({&logprobs_out, "logprobs_out"});
  }
  check_grid_rows(check, batch);
  check_devices(check, logits, "logits", devices);
  if (batch == 0) return;

  detail::DeviceGuard guard(logits.device.index, check.op());
  const sampling::ClusterSplit split =
      split_for(vocab, batch, threshold_search(p, vocab), logits.device.index, check.op());
  p.logits = {logits.data, logits.strides[0], 0};
  p.vocab = static_cast<int32_t>(vocab);
  p.positions = 1;
  p.slice = split.slice;
  p.cached = split.cached;
  p.mode = sampling::Mode::kSample;
  p.tokens_out = static_cast<int32_t*>(tokens_out.data);
  p.logprobs_out = static_cast<float*>(logprobs_out.data);
  sampling::launch_sampling(p, logits.dtype == DType::kBFloat16, static_cast<int>(batch), split,
                            check.op(), stream);
}

void verify_speculative(const Tensor& draft_token_ids, const Tensor& draft_probs,
                        const Tensor& target_logits, const SamplingOptions& options,
                        const Tensor& accepted_out, const Tensor& tokens_out,
                        cudaStream_t stream) {
  const Checker check("verify_speculative");
  check.dtype(draft_token_ids, "draft_token_ids", {DType::kInt32});
  check.ndim(draft_token_ids, "draft_token_ids", 2, "[B, k]");
  check.last_dim_contiguous(draft_token_ids, "draft_token_ids");
  check.non_negative_strides(draft_token_ids, "draft_token_ids");
  const int64_t batch = draft_token_ids.shape[0], k = draft_token_ids.shape[1];
  if (k < 1 || k > 31) {
    check.unsupported("draft_token_ids.shape[1] = k = ", k, ", expected 1..31 draft tokens");
  }
  check_logits(check, target_logits, "target_logits", 3, "[B, k+1, V]");
  check.dim(target_logits, "target_logits", 0, batch, "the batch, draft_token_ids.shape[0]");
  check.dim(target_logits, "target_logits", 1, k + 1,
            "k + 1 target positions (draft_token_ids.shape[1] + 1)");
  const int64_t vocab = target_logits.shape[2];
  const int positions = static_cast<int>(k + 1);
  SamplingParams p;
  DeviceList devices{{&draft_token_ids, "draft_token_ids"}};
  if (has(draft_probs)) {
    check.dtype(draft_probs, "draft_probs", {DType::kFloat32});
    check.ndim(draft_probs, "draft_probs", 3, "[B, k, V]");
    check.dim(draft_probs, "draft_probs", 0, batch, "the batch, draft_token_ids.shape[0]");
    check.dim(draft_probs, "draft_probs", 1, k, "k, draft_token_ids.shape[1]");
    check.dim(draft_probs, "draft_probs", 2, vocab, "the vocabulary size V, target_logits.shape[2]");
    check.last_dim_contiguous(draft_probs, "draft_probs");
    check.non_negative_strides(draft_probs, "draft_probs");
    devices.push_back({&draft_probs, "draft_probs"});
  }
  read_parameters(check, options, batch, vocab, p, devices);
  read_masks(check, options, batch, positions, vocab, p, devices);
  check_output(check, accepted_out, "accepted_out", DType::kInt32, {batch}, "[B]");
  check_output(check, tokens_out, "tokens_out", DType::kInt32, {batch, k + 1}, "[B, k+1]");
  devices.push_back({&accepted_out, "accepted_out"});
  devices.push_back({&tokens_out, "tokens_out"});
  check_grid_rows(check, batch * positions);
  check_devices(check, target_logits, "target_logits", devices);
  if (batch == 0) return;

  detail::DeviceGuard guard(target_logits.device.index, check.op());
  const sampling::ClusterSplit split =
      split_for(vocab, batch * positions, threshold_search(p, vocab), target_logits.device.index,
                check.op());
  p.logits = {target_logits.data, target_logits.strides[0], target_logits.strides[1]};
  p.vocab = static_cast<int32_t>(vocab);
  p.positions = positions;
  p.slice = split.slice;
  p.cached = split.cached;
  p.mode = has(draft_probs) ? sampling::Mode::kSpecSampled : sampling::Mode::kSpecGreedy;
  p.tokens_out = static_cast<int32_t*>(tokens_out.data);
  p.drafts = static_cast<const int32_t*>(draft_token_ids.data);
  p.drafts_stride = draft_token_ids.strides[0];
  if (has(draft_probs)) {
    p.draft_probs = {draft_probs.data, draft_probs.strides[0], draft_probs.strides[1]};
  }
  p.accept_bits = static_cast<uint32_t*>(accepted_out.data);
  HPC_OPS_CUDA_CHECK(check.op(), cudaMemsetAsync(accepted_out.data, 0,
                                                 static_cast<size_t>(batch) * 4, stream));
  sampling::launch_sampling(p, target_logits.dtype == DType::kBFloat16,
                            static_cast<int>(batch * positions), split, check.op(), stream);
  sampling::launch_spec_finalize(static_cast<int32_t*>(accepted_out.data), p.tokens_out, p.drafts,
                                 p.drafts_stride, static_cast<int>(batch), static_cast<int>(k),
                                 check.op(), stream);
}

namespace {

// tokens int32 [B] or [B, n] of a state update; returns (per_row, row stride, col stride).
struct TokenView {
  int per_row = 1;
  int64_t row_stride = 1, col_stride = 0;
};

TokenView check_tokens(const Checker& check, const Tensor& tokens, int64_t batch) {
  check.dtype(tokens, "tokens", {DType::kInt32});
  if (tokens.ndim != 1 && tokens.ndim != 2) check.ndim(tokens, "tokens", 1, "[B] or [B, n]");
  check.dim(tokens, "tokens", 0, batch, "the batch, shape[0] of the state");
  check.non_negative_strides(tokens, "tokens");
  TokenView v;
  v.row_stride = tokens.strides[0];
  if (tokens.ndim == 2) {
    if (tokens.shape[1] > INT32_MAX) check.unsupported("tokens.shape[1] = ", tokens.shape[1]);
    v.per_row = static_cast<int>(tokens.shape[1]);
    v.col_stride = tokens.strides[1];
  }
  return v;
}

// A state update (seen mask or counts, int32 [B, N]) by tokens: every check
// (devices last), then one launch.
void update_state(const char* op, sampling::StateUpdate kind, const Tensor& state,
                  const char* name, const char* layout, const Tensor& tokens,
                  cudaStream_t stream) {
  const Checker check(op);
  check.dtype(state, name, {DType::kInt32});
  check.ndim(state, name, 2, layout);
  check.last_dim_contiguous(state, name);
  check.non_negative_strides(state, name);
  const TokenView v = check_tokens(check, tokens, state.shape[0]);
  if (state.shape[0] > INT32_MAX) check.unsupported(name, ".shape[0] = ", state.shape[0]);
  check.on_cuda(state, name);
  check.same_device(tokens, "tokens", state, name);
  if (state.shape[0] == 0 || state.shape[1] == 0) return;
  detail::DeviceGuard guard(state.device.index, check.op());
  sampling::launch_state_update(kind, static_cast<int32_t*>(state.data), state.strides[0],
                                static_cast<const int32_t*>(tokens.data), v.row_stride,
                                v.col_stride, static_cast<int>(state.shape[0]), v.per_row,
                                check.op(), stream);
}

}  // namespace

void update_seen_mask(const Tensor& seen_mask, const Tensor& tokens, cudaStream_t stream) {
  update_state("update_seen_mask", sampling::StateUpdate::kSeenMask, seen_mask, "seen_mask",
               "[B, ceil(V / 32)]", tokens, stream);
}

void update_token_counts(const Tensor& token_counts, const Tensor& tokens, cudaStream_t stream) {
  update_state("update_token_counts", sampling::StateUpdate::kTokenCounts, token_counts,
               "token_counts", "[B, V]", tokens, stream);
}

}  // namespace hpc_ops
