// SPDX-License-Identifier: Apache-2.0
// fused_allreduce_residual_rmsnorm: validation, the peer-memory all-reduce
// into the staging buffer, then the row-wise engine's add + RMSNorm on it.
#include <cuda_runtime.h>

#include "comm/allreduce_config.h"
#include "comm/allreduce_kernels.h"
#include "comm/tp_comm_impl.h"
#include "common/check.h"
#include "common/cuda_check.h"
#include "norm/norm_args.h"
#include "norm/norm_kernels.h"
#include "rowwise/rowwise_host.h"

namespace hpc_ops {

using detail::Checker;

void fused_allreduce_residual_rmsnorm(TpCommunicator& comm, const Tensor& x,
                                      const Tensor& residual, const Tensor& weight, float eps,
                                      const Tensor& out, const Tensor& residual_out,
                                      const Fp8Output& quant, cudaStream_t stream) {
  const Checker check("fused_allreduce_residual_rmsnorm");
  if (!comm.connected()) check.invalid("comm is not connected (call connect with every rank's handle)");
  if (comm.failed()) check.invalid("comm timed out in an earlier call and cannot be used again");
  const int64_t hidden = comm.options().hidden;
  // The add + RMSNorm's own checks (norm.cc), then what the communicator adds.
  rowwise::RowwiseParams norm =
      add_norm_params(check, x, residual, weight, eps, out, residual_out, quant);
  check.dim(x, "x", 1, hidden, "the communicator's hidden size");
  check.dim_at_most(x, "x", 0, comm.options().max_tokens,
                    "the communicator's max_tokens (larger calls take the NCCL path)");
  const int64_t tokens = x.shape[0];
  TpCommunicator::Impl& m = comm.impl();
  norm.in = {m.base + m.layout.staging_offset, 0, hidden};  // the norm reads the sum
  if (x.device.index != comm.device()) {
    check.invalid("x is on cuda:", x.device.index, ", the communicator on cuda:", comm.device());
  }
  if (tokens == 0) return;

  comm::AllReduceParams p;
  p.x = x.data;
  p.x_row_stride = x.strides[0];
  p.sum = m.base + m.layout.staging_offset;
  p.vecs = tokens * hidden / comm::kVecElems;
  p.vecs_per_row = FastDivmod(static_cast<uint32_t>(hidden / comm::kVecElems));
  for (int r = 0; r < comm.world(); ++r) p.peer_base[r] = m.peer_base[r];
  p.control = reinterpret_cast<uint32_t*>(m.base);
  p.buffers_offset = m.layout.buffers_offset;
  p.buffer_bytes = m.layout.buffer_bytes;
  p.slot_bytes = m.layout.slot_elems * 2;
  p.gather_offset = m.layout.gather_offset;
  p.chunk_vecs = comm::two_shot_chunk_vecs(comm.world(), p.vecs);
  p.chunk_div = FastDivmod(static_cast<uint32_t>(p.chunk_vecs));
  p.rank = comm.rank();
  p.world = comm.world();
  p.timeout_ns = m.timeout_ns;
  p.allow_next = m.local_group ? 0 : 1;

  if (m.local_group) {
    // Ranks sharing one GPU: the norm kernel's first launch may load its code
    // lazily (CUDA_MODULE_LOADING=LAZY, the default), which can block this
    // thread until the running kernels finish, and rank 0's all-reduce waits
    // for a rank this thread has not launched yet. Launching the same norm
    // kernel first, on the staging buffer alone (its result unused), loads it
    // while nothing waits. Local groups exist for tests only.
    rowwise::RowwiseParams warm = norm;
    warm.residual = warm.residual_out = warm.out = warm.in;
    warm.epilogue = rowwise::Epilogue::kStoreBf16;
    warm.static_scale = nullptr;
    warm.scale_out = nullptr;
    rowwise::launch(check, rowwise::norm_kernel_table(), rowwise::Prologue::kAddRmsNorm,
                    DType::kBFloat16, warm, stream, comm.device());
  }
  const AllReducePath path = comm.path_for(tokens);
  {
    detail::DeviceGuard guard(comm.device(), check.op());
    HPC_OPS_CUDA_CHECK(check.op(), comm::launch_allreduce(
                                       path, p, comm::allreduce_ctas(p.vecs, m.max_ctas), stream));
  }
  rowwise::launch(check, rowwise::norm_kernel_table(), rowwise::Prologue::kAddRmsNorm,
                  DType::kBFloat16, norm, stream, comm.device());
  // (device_error synchronizes: not while the stream is captured into a graph)
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (m.check_after_call && cudaStreamIsCapturing(stream, &capture) == cudaSuccess &&
      capture == cudaStreamCaptureStatusNone) {
    const std::string error = comm.device_error();
    if (!error.empty()) check.fail(ErrorKind::kCuda, error);
  }
}

}  // namespace hpc_ops
