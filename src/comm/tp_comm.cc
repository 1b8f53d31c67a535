// SPDX-License-Identifier: Apache-2.0
// TpCommunicator: one rank's peer buffer, the IPC handle exchange that
// connects the ranks, and the device-side error report of a timed-out call.
#include <cuda_runtime.h>

#include <cstring>

#include "comm/allreduce_config.h"
#include "comm/allreduce_kernels.h"
#include "comm/tp_comm_impl.h"
#include "common/check.h"
#include "common/cuda_check.h"
#include "common/device_info.h"
#include "common/env.h"

namespace hpc_ops {
namespace {

using detail::Checker;
using detail::DeviceGuard;

// What each rank exports: enough to open its buffer and to check that every
// rank was set up alike (the kernels address a peer's buffer with this rank's layout).
struct HandleBlob {
  uint32_t magic = 0x54504331;  // "TPC1"
  int32_t rank = 0;
  int32_t world = 0;
  int32_t device = 0;
  int64_t hidden = 0;
  int64_t max_tokens = 0;
  int64_t total_bytes = 0;
  char pci_bus_id[32] = {};
  cudaIpcMemHandle_t handle = {};
};

constexpr uint64_t kDebugTimeoutNs = 10'000'000'000ull;

}  // namespace

TpCommunicator::TpCommunicator(int rank, int world, int device, const TpCommOptions& options)
    : rank_(rank), world_(world), device_(device), options_(options), impl_(new Impl) {
  const Checker check("TpCommunicator");
  if (world < 1 || world > kMaxTpWorld) {
    check.invalid("world = ", world, ", expected 1..", kMaxTpWorld);
  }
  if (rank < 0 || rank >= world) check.invalid("rank = ", rank, ", expected 0..", world - 1);
  if (options.hidden <= 0 || options.hidden % comm::kVecElems != 0) {
    check.invalid("hidden = ", options.hidden, ", expected a positive multiple of 8");
  }
  if (options.max_tokens < 1) check.invalid("max_tokens = ", options.max_tokens, ", expected >= 1");
  // (compared by division: the product of two large values would wrap)
  if (options.max_tokens > (kMaxFastDividend - 1) / options.hidden) {
    check.invalid("max_tokens = ", options.max_tokens, " with hidden = ", options.hidden,
                  ", expected max_tokens x hidden below 2^31 elements");
  }
  if (options.max_ctas < 0) check.invalid("max_ctas = ", options.max_ctas, ", expected >= 0");
  if (options.timeout_ms < 0) check.invalid("timeout_ms = ", options.timeout_ms, ", expected >= 0");

  Impl& m = *impl_;
  m.layout = comm::plan_peer_buffer(world, options.max_tokens * options.hidden);
  const int sms = detail::multiprocessor_count("TpCommunicator", device);
  m.max_ctas = options.max_ctas > 0 ? std::min(options.max_ctas, sms) : sms;
  m.check_after_call = detail::env_is("HPC_OPS_DEBUG_CHECKS", "1");
  m.timeout_ns = options.timeout_ms > 0 ? static_cast<uint64_t>(options.timeout_ms) * 1'000'000ull
                 : m.check_after_call   ? kDebugTimeoutNs
                                        : 0;
  DeviceGuard guard(device, check.op());
  void* base = nullptr;
  HPC_OPS_CUDA_CHECK(check.op(), cudaMalloc(&base, m.layout.total_bytes));
  m.base = static_cast<uint8_t*>(base);
  m.peer_base[rank] = m.base;
  try {
    HPC_OPS_CUDA_CHECK(check.op(), cudaMemset(m.base, 0, m.layout.control_bytes));
    HPC_OPS_CUDA_CHECK(check.op(), comm::launch_fill_sentinel(m.base + m.layout.buffers_offset,
                                                              2 * m.layout.buffer_bytes, nullptr));
    HPC_OPS_CUDA_CHECK(check.op(), cudaDeviceSynchronize());
  } catch (...) {
    cudaFree(m.base);  // a throwing constructor runs no destructor
    throw;
  }
}

TpCommunicator::~TpCommunicator() {
  if (!impl_) return;
  int previous = 0;
  cudaGetDevice(&previous);
  cudaSetDevice(device_);
  cudaDeviceSynchronize();
  for (int r = 0; r < world_; ++r) {
    if (impl_->ipc_opened[r]) cudaIpcCloseMemHandle(impl_->peer_base[r]);
  }
  if (impl_->base != nullptr) cudaFree(impl_->base);
  cudaSetDevice(previous);
}

int64_t TpCommunicator::capacity_elems() const { return options_.max_tokens * options_.hidden; }

int64_t TpCommunicator::one_shot_capacity_elems() const {
  return std::min(comm::one_shot_limit_elems(world_, capacity_elems()), impl_->layout.slot_elems);
}

AllReducePath TpCommunicator::path_for(int64_t tokens) const {
  const int64_t elems = tokens * options_.hidden;
  const AllReducePath chosen = choose_allreduce_path(elems, capacity_elems(),
                                                     one_shot_capacity_elems(), connected_);
  if (chosen == AllReducePath::kNccl) return chosen;
  if (detail::env_is("HPC_OPS_ALLREDUCE_PATH", "twoshot")) return AllReducePath::kTwoShot;
  if (detail::env_is("HPC_OPS_ALLREDUCE_PATH", "oneshot") && elems <= one_shot_capacity_elems()) {
    return AllReducePath::kOneShot;
  }
  return chosen;
}

std::string TpCommunicator::export_handle() const {
  const Checker check("TpCommunicator.export_handle");
  HandleBlob blob;
  blob.rank = rank_;
  blob.world = world_;
  blob.device = device_;
  blob.hidden = options_.hidden;
  blob.max_tokens = options_.max_tokens;
  blob.total_bytes = impl_->layout.total_bytes;
  HPC_OPS_CUDA_CHECK(check.op(),
                     cudaDeviceGetPCIBusId(blob.pci_bus_id, sizeof(blob.pci_bus_id), device_));
  if (world_ > 1) {
    DeviceGuard guard(device_, check.op());
    HPC_OPS_CUDA_CHECK(check.op(), cudaIpcGetMemHandle(&blob.handle, impl_->base));
  }
  return std::string(reinterpret_cast<const char*>(&blob), sizeof(blob));
}

void TpCommunicator::connect(const std::vector<std::string>& handles) {
  const Checker check("TpCommunicator.connect");
  if (connected_) check.invalid("this communicator is already connected");
  if (static_cast<int>(handles.size()) != world_) {
    check.invalid("got ", handles.size(), " handles, expected one per rank (world = ", world_, ")");
  }
  std::vector<HandleBlob> blobs(world_);
  for (int r = 0; r < world_; ++r) {
    if (handles[r].size() != sizeof(HandleBlob)) {
      check.invalid("handles[", r, "] has ", handles[r].size(), " bytes, expected ",
                    sizeof(HandleBlob), " (what export_handle returns)");
    }
    std::memcpy(&blobs[r], handles[r].data(), sizeof(HandleBlob));
    const HandleBlob& b = blobs[r];
    if (b.magic != HandleBlob{}.magic) check.invalid("handles[", r, "] is not an export_handle result");
    if (b.rank != r) check.invalid("handles[", r, "] comes from rank ", b.rank, ", expected rank ", r);
    if (b.world != world_ || b.hidden != options_.hidden || b.max_tokens != options_.max_tokens) {
      check.invalid("rank ", r, " was set up with world = ", b.world, ", hidden = ", b.hidden,
                    ", max_tokens = ", b.max_tokens, "; rank ", rank_, " with world = ", world_,
                    ", hidden = ", options_.hidden, ", max_tokens = ", options_.max_tokens,
                    " (every rank must pass the same values)");
    }
  }
  DeviceGuard guard(device_, check.op());
  for (int r = 0; r < world_; ++r) {
    if (r == rank_) continue;
    int peer_device = -1;
    if (cudaDeviceGetByPCIBusId(&peer_device, blobs[r].pci_bus_id) != cudaSuccess) {
      cudaGetLastError();  // not visible to this process: the IPC open decides
      peer_device = -1;
    }
    if (peer_device >= 0 && peer_device != device_) {
      int can = 0;
      cudaDeviceCanAccessPeer(&can, device_, peer_device);
      if (!can) {
        check.unsupported("GPU ", device_, " cannot access the memory of rank ", r, "'s GPU ",
                          peer_device, " (no peer-to-peer path): use NCCL");
      }
    }
    void* ptr = nullptr;
    const cudaError_t err =
        cudaIpcOpenMemHandle(&ptr, blobs[r].handle, cudaIpcMemLazyEnablePeerAccess);
    if (err != cudaSuccess) {
      cudaGetLastError();
      check.unsupported("cannot open rank ", r, "'s buffer (cudaIpcOpenMemHandle: ",
                        cudaGetErrorString(err), "): use NCCL");
    }
    impl_->peer_base[r] = static_cast<uint8_t*>(ptr);
    impl_->ipc_opened[r] = true;
  }
  connected_ = true;
}

std::vector<std::unique_ptr<TpCommunicator>> TpCommunicator::local_group(
    int world, int device, const TpCommOptions& options) {
  const Checker check("TpCommunicator.local_group");
  if (world < 1 || world > kMaxTpWorld) {
    check.invalid("world = ", world, ", expected 1..", kMaxTpWorld);
  }
  const int sms = detail::multiprocessor_count("TpCommunicator.local_group", device);
  TpCommOptions shared = options;
  const int fair_share = std::max(sms / world, 1);
  shared.max_ctas = options.max_ctas > 0 ? std::min(options.max_ctas, fair_share) : fair_share;
  std::vector<std::unique_ptr<TpCommunicator>> group;
  for (int r = 0; r < world; ++r) {
    group.push_back(std::make_unique<TpCommunicator>(r, world, device, shared));
  }
  for (auto& c : group) {
    for (int r = 0; r < world; ++r) c->impl_->peer_base[r] = group[r]->impl_->base;
    c->impl_->local_group = true;
    c->impl_->check_after_call = false;  // a sync here would wait for ranks not yet launched
    c->connected_ = true;
  }
  return group;
}

std::string TpCommunicator::device_error() {
  const Checker check("TpCommunicator.device_error");
  DeviceGuard guard(device_, check.op());
  HPC_OPS_CUDA_CHECK(check.op(), cudaDeviceSynchronize());
  uint32_t words[comm::kControlWords] = {};
  HPC_OPS_CUDA_CHECK(check.op(),
                     cudaMemcpy(words, impl_->base, sizeof(words), cudaMemcpyDeviceToHost));
  if (words[comm::kErrorWord] == 0) return "";
  failed_ = true;
  return "rank " + std::to_string(rank_) + " waited more than " +
         std::to_string(impl_->timeout_ns / 1'000'000) + " ms for rank " +
         std::to_string(words[comm::kErrorPeerWord]) + "'s data (vector " +
         std::to_string(words[comm::kErrorVectorWord]) +
         "): the ranks' calls do not match (a different number of tokens or calls on some "
         "rank?); this communicator cannot be used again";
}

}  // namespace hpc_ops
