// SPDX-License-Identifier: Apache-2.0
// What the sampling kernels receive: one flat "row" per (request, position)
// (position 0 only for sample(); 0..k for verify_speculative), the inputs as
// raw pointers with element strides, per-request parameters as a value or a
// [B] pointer, and the cluster split of the vocabulary.
#pragma once

#include <cstdint>

namespace hpc_ops::sampling {

constexpr int kThreads = 1024;        // per CTA (the most; paired CTAs have 512)
constexpr int kMaxClusterSize = 16;   // CTAs splitting one row (non-portable above 8)
constexpr int kBins = 256;            // radix digit of the threshold search

// A float parameter of request b: ptr ? ptr[b] : value.
struct FloatParam {
  float value = 0.0f;
  const float* ptr = nullptr;
};

struct IntParam {
  int32_t value = 0;
  const int32_t* ptr = nullptr;
};

struct SeedParam {
  uint64_t value = 0;
  const int64_t* ptr = nullptr;
};

// A per-row input indexed [request][position][...]: position stride 0 when
// shared by every position of a request.
struct RowInput {
  const void* ptr = nullptr;
  int64_t request_stride = 0;
  int64_t position_stride = 0;
};

enum class Mode : int32_t {
  kSample = 0,       // tokens_out[b] (+ logprobs_out[b])
  kSpecSampled = 1,  // per position: acceptance bit + recovered / bonus token
  kSpecGreedy = 2,   // per position: exact-match bit + argmax
};

struct SamplingParams {
  RowInput logits;         // float or bf16 [.., V], last dim contiguous
  RowInput seen_mask;      // uint32 words, or ptr null
  RowInput allowed_mask;   // uint32 words, or ptr null
  RowInput token_counts;   // int32 [.., V], or ptr null
  int32_t vocab = 0;
  int32_t positions = 1;   // per request: 1 (sample) or k + 1 (verify)
  int32_t slice = 0;       // tokens per CTA of a row's cluster (multiple of 32)
  int32_t cached = 0;      // of those, held in shared memory (the rest re-read)

  FloatParam temperature, top_p, min_p, repetition, presence, frequency;
  IntParam top_k;
  SeedParam seeds, offsets;
  bool use_seen = false, use_counts = false;

  Mode mode = Mode::kSample;
  int32_t* tokens_out = nullptr;     // sample: [B]; verify: [B, k+1] (row stride k+1)
  float* logprobs_out = nullptr;     // sample only, may be null
  // verify_speculative
  const int32_t* drafts = nullptr;   // [B, k], row stride drafts_stride
  int64_t drafts_stride = 0;
  RowInput draft_probs;              // float [B, k, V]; null for the greedy variant
  uint32_t* accept_bits = nullptr;   // accepted_out, zeroed before the kernel
};

}  // namespace hpc_ops::sampling
