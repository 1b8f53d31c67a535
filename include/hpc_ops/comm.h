// SPDX-License-Identifier: Apache-2.0
// Tensor-parallel all-reduce fused with the residual add and RMSNorm that
// follow it in every decoder layer, over CUDA IPC peer memory on one node.
//
//   s            = bf16(sum over ranks of x_r)        (float32, rank order, same bits on every rank)
//   residual_out = bf16(s + residual)
//   out          = rms_norm(residual_out) * weight      (bf16, or FP8 as rms_norm's quant)
//
// Each rank allocates one buffer (TpCommunicator), exports an IPC handle,
// every rank opens every other rank's buffer (connect) and from then on a
// call moves its data with stores into the peers' memory: one-shot (every
// rank pushes its whole x to every peer and sums locally) for small
// messages, two-shot (reduce-scatter by pushes to the owner of each chunk,
// then the owner pushes the sum to every rank) for larger ones. The sum is
// written to a local staging buffer and the foundation's fused add + RMSNorm
// kernel runs on it, launched with PDL so it is resident when the sum lands.
// No NVLink multicast and no NCCL in the C++ core: past the peer buffers'
// capacity (and across nodes) the Python layer runs NCCL's all-reduce and
// fused_add_rms_norm (choose_allreduce_path says which).
//
// Synchronization is carried in the data: the peer buffers hold a sentinel
// (bf16 -0.0) wherever no value has landed, writers turn -0.0 into +0.0, and a
// reader spins until none of its elements is the sentinel, then puts the
// sentinel back. Two buffers alternate between calls (a counter on the device
// picks one, so CUDA-graph replays alternate too).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "hpc_ops/core/tensor.h"
#include "hpc_ops/quantization.h"

namespace hpc_ops {

constexpr int kMaxTpWorld = 8;

enum class AllReducePath : int32_t {
  kOneShot = 0,  // push x to every peer, each rank sums all copies
  kTwoShot = 1,  // push chunks to their owners, owners push the sums back
  kNccl = 2,     // too large for the peer buffers (or no peer access): NCCL + fused_add_rms_norm
};
const char* allreduce_path_name(AllReducePath path);

struct TpCommOptions {
  int64_t hidden = 0;        // the hidden size every call uses (a multiple of 8)
  int64_t max_tokens = 512;  // rows the peer buffers hold; larger calls take the NCCL path
  int max_ctas = 0;          // CTAs per call at most; 0: the device's multiprocessors
  // > 0: a kernel that waits longer than this for a peer's data stops, marks
  // the communicator failed and writes NaN; 0: wait without limit, unless
  // HPC_OPS_DEBUG_CHECKS=1 (then 10 s, checked after every call that is not
  // captured into a CUDA graph).
  int64_t timeout_ms = 0;
};

// One rank's side of a tensor-parallel group on one node.
class TpCommunicator {
 public:
  // Allocates this rank's peer buffer on CUDA device `device` (cudaMalloc)
  // and fills it with the sentinel; synchronizes (set-up, not a hot path).
  TpCommunicator(int rank, int world, int device, const TpCommOptions& options);
  ~TpCommunicator();
  TpCommunicator(const TpCommunicator&) = delete;
  TpCommunicator& operator=(const TpCommunicator&) = delete;

  // Bytes to hand to every rank (an IPC handle and this rank's set-up).
  std::string export_handle() const;
  // Opens every other rank's buffer; handles[r] is what rank r exported.
  // Throws kInvalidArgument when the ranks were set up differently (world,
  // hidden, max_tokens) and kUnsupported when a peer's memory
  // cannot be reached (no peer access between the GPUs).
  void connect(const std::vector<std::string>& handles);

  // `world` communicators of one process on one device, connected without IPC
  // (the ranks run on different streams). For testing the protocol on one GPU:
  // their kernels must run concurrently, so each call uses at most
  // multiprocessors / world CTAs and does not let the norm kernel start early.
  static std::vector<std::unique_ptr<TpCommunicator>> local_group(int world, int device,
                                                                  const TpCommOptions& options);

  int rank() const { return rank_; }
  int world() const { return world_; }
  int device() const { return device_; }
  const TpCommOptions& options() const { return options_; }
  bool connected() const { return connected_; }
  // Peer-path capacity in elements (max_tokens x hidden) and the one-shot limit.
  int64_t capacity_elems() const;
  int64_t one_shot_capacity_elems() const;
  // The path a call of `tokens` rows takes (HPC_OPS_ALLREDUCE_PATH = oneshot /
  // twoshot overrides it where the call fits; "nccl" is honoured by the Python
  // wrapper, which owns the NCCL call).
  AllReducePath path_for(int64_t tokens) const;

  // Synchronizes the device and returns the message of a kernel that timed
  // out waiting for a peer ("" when none did). After one, the communicator
  // refuses further calls.
  std::string device_error();
  bool failed() const { return failed_; }

  // Internal: the buffers and launch limits (src/comm/tp_comm_impl.h).
  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  int rank_;
  int world_;
  int device_;
  TpCommOptions options_;
  bool connected_ = false;
  bool failed_ = false;
  std::unique_ptr<Impl> impl_;
};

// The peer path (one-shot or two-shot per comm.path_for) then the fused
// residual add + RMSNorm. x, residual [tokens, hidden] bfloat16 (row strides
// may exceed hidden; 16-byte aligned rows); weight [hidden]; out bf16 or FP8
// per quant (see rms_norm); residual_out bf16 (may be residual). Every rank
// must call with the same tokens, in the same order of calls. Throws
// kInvalidArgument when tokens exceed comm.max_tokens (take the NCCL path).
void fused_allreduce_residual_rmsnorm(TpCommunicator& comm, const Tensor& x,
                                      const Tensor& residual, const Tensor& weight, float eps,
                                      const Tensor& out, const Tensor& residual_out,
                                      const Fp8Output& quant, cudaStream_t stream);

// The path for a call of `elems` elements when the peer buffers hold
// `capacity_elems` (`one_shot_elems` of them for one-shot, which depends on
// the world size) and every rank reaches every other's memory
// (`peer_access`). Pure host code.
AllReducePath choose_allreduce_path(int64_t elems, int64_t capacity_elems,
                                    int64_t one_shot_elems, bool peer_access);

}  // namespace hpc_ops
