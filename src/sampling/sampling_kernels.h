// SPDX-License-Identifier: Apache-2.0
// Host-side interface of the sampling kernels (sampling_kernels.cu,
// sampling_state_kernels.cu). Launch errors are thrown as hpc_ops::Error
// naming `op`.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "sampling/sampling_config.h"
#include "sampling/sampling_params.h"

namespace hpc_ops::sampling {

// Bytes of the kernel's fixed shared state (the vocabulary cache follows it).
int64_t shared_state_bytes();

// How many clusters of kWideCluster CTAs the device runs at once (0 when
// its GPCs cannot hold one); queried once per device.
int wide_clusters_resident(const char* op);

// One cluster of split.cluster CTAs of split.threads threads per flat row
// (rows = B * positions).
void launch_sampling(const SamplingParams& p, bool bf16_logits, int rows, const ClusterSplit& split,
                     const char* op, cudaStream_t stream);

// verify_speculative's last step: accepted[b] holds the acceptance bits of
// its k positions on entry and the accepted count on exit; tokens [B, k+1]
// holds each position's recovered / bonus token on entry, the result on exit.
void launch_spec_finalize(int32_t* accepted, int32_t* tokens, const int32_t* drafts,
                          int64_t drafts_stride, int batch, int k, const char* op,
                          cudaStream_t stream);

enum class StateUpdate { kSeenMask, kTokenCounts };

// Sets the seen bit of / counts each token of tokens [rows, per_row] (element
// strides) in its row of state (int32 words / counts, row stride
// state_stride); entries < 0 are skipped.
void launch_state_update(StateUpdate kind, int32_t* state, int64_t state_stride,
                         const int32_t* tokens, int64_t token_row_stride,
                         int64_t token_col_stride, int rows, int per_row, const char* op,
                         cudaStream_t stream);

}  // namespace hpc_ops::sampling
