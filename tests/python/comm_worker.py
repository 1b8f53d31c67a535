"""The per-process side of test_comm_multiprocess_gpu.py (a module of its own
so spawned processes can import it): set-up of torch.distributed and one
TpCommunicator per rank, then one of the cases below, reporting through a queue."""
from __future__ import annotations

import os
import traceback

import torch

EPS = 1e-6


def _all_ranks_inputs(world, tokens, hidden, seed):
    """Every rank's x and the shared residual, the same in every process."""
    g = torch.Generator(device="cuda")
    g.manual_seed(seed)
    xs = [(torch.randn(tokens, hidden, generator=g, device="cuda") * 0.5).to(torch.bfloat16)
          for _ in range(world)]
    residual = torch.randn(tokens, hidden, generator=g, device="cuda").to(torch.bfloat16)
    w = (1.0 + 0.1 * torch.randn(hidden, generator=g, device="cuda")).to(torch.bfloat16)
    return xs, residual, w


def case_numerics(rank, world, hidden):
    """Peer path (one-shot and two-shot) and the NCCL path past max_tokens, back to back."""
    import reference as ref
    from tolerances import assert_bits_equal, assert_output_close

    import hpc_ops
    comm = hpc_ops.TpCommunicator(hidden=hidden, max_tokens=64, timeout_ms=60000)
    assert comm.peer_access, comm.reason
    paths = set()
    calls = [(None, t) for t in [1, 7, 64, 3, 65, 200, 1]] + [("twoshot", t) for t in [1, 64, 9]]
    for i, (forced, tokens) in enumerate(calls):
        if forced:
            os.environ["HPC_OPS_ALLREDUCE_PATH"] = forced
        else:
            os.environ.pop("HPC_OPS_ALLREDUCE_PATH", None)
        xs, residual, w = _all_ranks_inputs(world, tokens, hidden, seed=1000 + i)
        out = torch.full((tokens, hidden), float("nan"), dtype=torch.bfloat16, device="cuda")
        res_out = torch.full_like(out, float("nan"))
        path = comm.path_for(tokens)
        paths.add(path)
        hpc_ops.fused_allreduce_residual_rmsnorm(xs[rank], residual, w, EPS, comm, out=out,
                                                 residual_out=res_out)
        torch.cuda.synchronize()
        assert comm.device_error() == ""
        s = ref.allreduce_sum_ref(xs)
        y, residual_sum = ref.add_rms_norm_ref(s, residual, w, EPS)
        if path == "nccl":  # the collective's own summation order: close, not bit-equal
            y = ref.rms_norm_ref(res_out, w, EPS)
            sum_err = (res_out.float() - residual_sum.float()).abs()
            assert float(sum_err.max()) <= 0.05 * float(residual_sum.float().abs().max()), path
        else:
            assert_bits_equal(res_out, residual_sum, f"rank {rank} {path}: residual_out")
        assert_output_close(out, y, None)
    return sorted(paths)


def case_setup_mismatch(rank, world, hidden):
    """Rank 1 asks for another hidden size: every rank must raise, none may hang."""
    import hpc_ops
    mine = hidden if rank != 1 else hidden // 2
    try:
        hpc_ops.TpCommunicator(hidden=mine, max_tokens=8)
    except ValueError as e:
        assert "rank 1 was created with hidden=" in str(e), str(e)
        return "raised"
    raise AssertionError("no error for mismatched hidden sizes")


def case_setup_error(rank, world, hidden):
    """Rank 1's own set-up fails (hidden not a multiple of 8, caught by the C++
    constructor): every rank must raise that error, none may hang."""
    import hpc_ops
    mine = hidden if rank != 1 else hidden + 4
    try:
        hpc_ops.TpCommunicator(hidden=mine, max_tokens=8)
    except ValueError as e:
        assert f"set-up failed on rank 1: hpc_ops.TpCommunicator: hidden = {hidden + 4}" in str(e), \
            str(e)
        return "raised"
    raise AssertionError("no error although rank 1's set-up failed")


CASES = {"numerics": case_numerics, "setup_mismatch": case_setup_mismatch,
         "setup_error": case_setup_error}


def worker(rank, world, init_file, backend, one_gpu, case, hidden, queue):
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # never NVLink multicast
    try:
        import torch.distributed as dist
        torch.cuda.set_device(0 if one_gpu else rank)
        dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank,
                                world_size=world)
        try:
            result = CASES[case](rank, world, hidden)
            queue.put((rank, "ok", result))
        finally:
            dist.destroy_process_group()
    except BaseException:  # report everything, including assertion failures
        queue.put((rank, "error", traceback.format_exc()))
