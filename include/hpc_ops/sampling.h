// SPDX-License-Identifier: Apache-2.0
// Fused decode sampling: logits [B, V] -> one token per row, in one kernel
// (penalties, temperature, top-k, top-p, min-p, seeded draw), plus
// speculative-decoding verification and the seen-token state updates.
//
// Pipeline per row (the float64 mirror tests/python/sampling_reference.py is
// the exact definition):
//   1. allowed_mask: tokens whose bit is clear become -inf;
//   2-4. repetition (seen: l > 0 ? l / r : l * r), presence (seen: l - p),
//        frequency (l - f * count) penalties: the penalized logits l;
//   5. temperature T: 0 = greedy (token = argmax l, ties to the smallest id;
//      no truncation); else s = l / T;
//   6. p = softmax(s); logprob = log_softmax(s)[token] (T taken as 1 if greedy);
//   7. truncation, thresholds on p (tied tokens kept or dropped together):
//        top-k: p >= the k-th largest p; top-p (on the top-k survivors): the
//        mass strictly above p_t < top_p * (mass of the top-k survivors);
//        min-p: p >= min_p * max(p);
//   8. token = argmax over survivors of s_t - log(-log(u_t)) (the exponential
//      race: draws the truncated distribution exactly), u_t the Philox4x32-10
//      uniform of (seed, offset, stream 0, index t).
// A row with every logit -inf after step 1 gives token -1 and logprob NaN.
// Numerics: float32 throughout; tokens whose p is below e^-32 * max(p)
// (~1.3e-14) are treated as having probability 0 (they can never win the
// race); top-k / top-p masses are summed in 2^-40 fixed point (relative to
// max(p)), so the thresholds do not depend on summation order: results are
// deterministic and each row's token depends only on that row (batch
// invariant).
//
// Every per-request parameter is a scalar or a float32 (top_k: int32) [B]
// tensor; seeds and offsets are 64-bit scalars or int64 [B] tensors (read as
// uint64). Values inside parameter tensors are not checked (the API never
// synchronizes); scalars are. No allocation, no host synchronization: every
// entry point is CUDA-graph capturable.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "hpc_ops/core/tensor.h"

namespace hpc_ops {

// A per-request parameter: `tensor` [B] when given, else `value` for every row.
struct RowParam {
  double value = 0.0;
  Tensor tensor;  // empty (data == nullptr): use value
};

// A per-request 64-bit Philox input: int64 [B] tensor when given, else `value`.
struct RowSeed {
  uint64_t value = 0;
  Tensor tensor;
};

struct SamplingOptions {
  RowParam temperature{1.0, {}};       // >= 0, finite; 0 = greedy
  RowParam top_k{0.0, {}};             // integer >= 0 (<= V as a scalar); 0 or >= V = off
  RowParam top_p{1.0, {}};             // (0, 1]; 1 = off
  RowParam min_p{0.0, {}};             // [0, 1); 0 = off
  RowParam repetition_penalty{1.0, {}};  // > 0; 1 = off (needs seen_mask)
  RowParam presence_penalty{0.0, {}};    // finite; 0 = off (needs seen_mask)
  RowParam frequency_penalty{0.0, {}};   // finite; 0 = off (needs token_counts)
  // int32 [B, ceil(V/32)] bitmasks (bit t % 32 of word t / 32; bits past V
  // ignored) and int32 [B, V] counts. For verify_speculative also
  // [B, k+1, ...]: one per target position.
  Tensor seen_mask, token_counts, allowed_mask;
  RowSeed seeds, offsets;
};

// tokens_out int32 [B]; logprobs_out float32 [B] or empty. logits float32 or
// bfloat16 [B, V], last dim contiguous, any row stride.
void sample(const Tensor& logits, const SamplingOptions& options, const Tensor& tokens_out,
            const Tensor& logprobs_out, cudaStream_t stream);

// Verification of k draft tokens per request (1 <= k <= 31).
//   draft_token_ids int32 [B, k]; draft_probs float32 [B, k, V] (the
//   distributions the drafts were drawn from) or empty for the greedy
//   (exact-match) variant; target_logits float32 / bfloat16 [B, k+1, V].
// Rejection sampling: draft i is accepted iff a_i * P_i[d_i] < Q_i[d_i], Q_i
// the truncated renormalized target distribution of position i (one-hot for
// greedy rows), a_i the uniform of stream 0xffffffff, index i; at the first
// rejection the recovered token is the race over max(0, Q_i - P_i) (over Q_i
// if that is all zero) with the uniforms of stream 1 + i; with every draft
// accepted, the bonus token is the race over Q_k (stream 1 + k). The greedy
// variant accepts while d_i equals the argmax of position i's penalized
// logits and emits that argmax at the first mismatch (or the bonus argmax).
// accepted_out int32 [B] (0..k); tokens_out int32 [B, k+1]: the accepted
// drafts, the recovered / bonus token, then -1.
void verify_speculative(const Tensor& draft_token_ids, const Tensor& draft_probs,
                        const Tensor& target_logits, const SamplingOptions& options,
                        const Tensor& accepted_out, const Tensor& tokens_out,
                        cudaStream_t stream);

// Sets bit tokens[b] of seen_mask[b] (int32 [B, W]) for every row; tokens
// int32 [B] or [B, n]; entries < 0 are skipped. In place.
void update_seen_mask(const Tensor& seen_mask, const Tensor& tokens, cudaStream_t stream);

// Adds one to token_counts[b, tokens[b, j]] (int32 [B, V]) for every token;
// tokens int32 [B] or [B, n]; entries < 0 are skipped. In place.
void update_token_counts(const Tensor& token_counts, const Tensor& tokens, cudaStream_t stream);

}  // namespace hpc_ops
