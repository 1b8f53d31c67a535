// SPDX-License-Identifier: Apache-2.0
// fused_allreduce_residual_rmsnorm: validation, the peer-memory all-reduce
// into the staging buffer, then the row-wise engine's add + RMSNorm on it.
#include <cuda_runtime.h>

#include <cmath>

#include "comm/allreduce_config.h"
#include "comm/allreduce_kernels.h"
#include "comm/tp_comm_impl.h"
#include "common/check.h"
#include "common/cuda_check.h"
#include "norm/norm_kernels.h"
#include "rowwise/rowwise_host.h"

namespace hpc_ops {
namespace {

using detail::Checker;

constexpr std::initializer_list<Fp8Scaling> kScalings = {
    Fp8Scaling::kNone, Fp8Scaling::kPerTensorStatic, Fp8Scaling::kPerToken,
    Fp8Scaling::kPerGroup128};

void check_row_input(const Checker& check, const Tensor& t, const char* name, const Tensor& x) {
  rowwise::check_row_tensor(check, t, name, {DType::kBFloat16}, 2, "[tokens, hidden]");
  if (&t != &x) check.same_shape(t, name, x, "x");
  check.aligned(t, name, 16);
}

}  // namespace

void fused_allreduce_residual_rmsnorm(TpCommunicator& comm, const Tensor& x,
                                      const Tensor& residual, const Tensor& weight, float eps,
                                      const Tensor& out, const Tensor& residual_out,
                                      const Fp8Output& quant, cudaStream_t stream) {
  const Checker check("fused_allreduce_residual_rmsnorm");
  if (!comm.connected()) check.invalid("comm is not connected (call connect with every rank's handle)");
  if (comm.failed()) check.invalid("comm timed out in an earlier call and cannot be used again");
  const int64_t hidden = comm.options().hidden;
  rowwise::check_row_tensor(check, x, "x", {DType::kBFloat16}, 2, "[tokens, hidden]");
  check.dim(x, "x", 1, hidden, "the communicator's hidden size");
  check.dim_at_most(x, "x", 0, comm.options().max_tokens,
                    "the communicator's max_tokens (larger calls take the NCCL path)");
  check.aligned(x, "x", 16);
  check_row_input(check, residual, "residual", x);
  check_row_input(check, residual_out, "residual_out", x);
  check.dtype(weight, "weight", {DType::kBFloat16});
  check.ndim(weight, "weight", 1, "[hidden]");
  check.dim(weight, "weight", 0, hidden, "the hidden size, x.shape[1]");
  check.contiguous(weight, "weight");
  check.aligned(weight, "weight", 16);
  if (!std::isfinite(eps) || eps < 0.0f) check.invalid("eps = ", eps, ", expected a finite value >= 0");

  const int64_t tokens = x.shape[0];
  TpCommunicator::Impl& m = comm.impl();
  rowwise::RowwiseParams norm;
  norm.rows_per_batch = tokens;
  norm.cols = static_cast<int32_t>(hidden);
  norm.in = {m.base + m.layout.staging_offset, 0, hidden};
  norm.residual = rowwise::row_view(residual);
  norm.residual_out = rowwise::row_view(residual_out);
  norm.out = rowwise::row_view(out);
  norm.weight = weight.data;
  norm.eps = eps;
  rowwise::set_epilogue(check, quant, kScalings, out, 0, tokens, hidden, norm);
  rowwise::check_row_layout(check, out, "out", 2, "[tokens, hidden]");
  check.same_shape(out, "out", x, "x");
  check.aligned(out, "out", rowwise::vector_bytes(out));
  rowwise::check_devices(check, x,
                         {{&residual, "residual"}, {&weight, "weight"}, {&out, "out"},
                          {&residual_out, "residual_out"}},
                         quant);
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
    const cudaError_t err =
        comm::launch_allreduce(path, p, comm::allreduce_ctas(p.vecs, m.max_ctas), stream);
    if (err != cudaSuccess) detail::throw_cuda_error(err, check.op(), "the all-reduce launch");
  }
  rowwise::launch(check, rowwise::norm_kernel_table(), rowwise::Prologue::kAddRmsNorm,
                  DType::kBFloat16, norm, stream, comm.device());
  if (m.check_after_call) {
    const std::string error = comm.device_error();
    if (!error.empty()) check.fail(ErrorKind::kCuda, error);
  }
}

}  // namespace hpc_ops
