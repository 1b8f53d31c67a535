// SPDX-License-Identifier: Apache-2.0
// What a TpCommunicator holds: its allocation, the peers' (opened from IPC
// handles, or the other ranks' of a local group) and the launch limits.
#pragma once

#include <cstdint>

#include "comm/allreduce_config.h"
#include "hpc_ops/comm.h"

namespace hpc_ops {

struct TpCommunicator::Impl {
  comm::PeerBufferLayout layout;
  uint8_t* base = nullptr;                  // this rank's allocation (cudaMalloc)
  uint8_t* peer_base[kMaxTpWorld] = {};     // every rank's, this one's included
  bool ipc_opened[kMaxTpWorld] = {};        // to close with cudaIpcCloseMemHandle
  int max_ctas = 1;
  bool local_group = false;                 // ranks share one GPU (no early norm launch)
  bool check_after_call = false;            // HPC_OPS_DEBUG_CHECKS=1
  uint64_t timeout_ns = 0;
};

}  // namespace hpc_ops
