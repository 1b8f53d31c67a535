// SPDX-License-Identifier: Apache-2.0
// Parameters of the peer-memory all-reduce kernels (allreduce_kernel.cuh):
// plain data shared by host and device, passed as a __grid_constant__.
#pragma once

#include <cstdint>

#include "common/fast_divmod.h"
#include "hpc_ops/comm.h"

namespace hpc_ops::comm {

struct AllReduceParams {
  const void* x = nullptr;    // bf16 [rows, hidden], row stride x_row_stride elements
  int64_t x_row_stride = 0;
  void* sum = nullptr;        // bf16 [rows, hidden] contiguous (this rank's staging buffer)
  int64_t vecs = 0;           // rows x hidden / 8 (< 2^31)
  FastDivmod vecs_per_row;    // vector -> (row, vector in row)

  uint8_t* peer_base[kMaxTpWorld] = {};  // every rank's allocation (this rank's included)
  uint32_t* control = nullptr;           // this rank's control words (allreduce_config.h)
  int64_t buffers_offset = 0;            // bytes from a base to the first buffer
  int64_t buffer_bytes = 0;
  int64_t slot_bytes = 0;                // one sending rank's slot
  int64_t gather_offset = 0;             // bytes from a buffer to its gather region
  int64_t chunk_vecs = 0;                // two-shot: vectors per owner
  FastDivmod chunk_div;                  // vector -> (owner, vector in its chunk)
  int32_t rank = 0;
  int32_t world = 1;
  uint64_t timeout_ns = 0;               // 0: wait without limit
  int32_t allow_next = 1;                // let the norm kernel be scheduled early (PDL)
};

}  // namespace hpc_ops::comm
