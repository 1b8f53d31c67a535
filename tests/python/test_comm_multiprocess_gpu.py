"""Multi-process tests of the fused all-reduce: one process per rank, set up
through torch.distributed (IPC handle exchange, set-up checks), the peer path
and the NCCL path (torch.distributed's all-reduce) past max_tokens.

Two ranks sharing GPU 0 (gloo for the set-up and the large-call path) run
wherever there is one GPU: CUDA IPC between processes of one device exercises
the same handle exchange, and the GPU time-slices their spinning kernels.
Worlds of 2, 4 and 8 GPUs (NCCL) run when that many GPUs are present and are
skipped with the reason otherwise.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod

import pytest
import torch

from hpc_test_utils import needs_family

pytestmark = [pytest.mark.gpu, needs_family("comm")]

TIMEOUT_S = 300


def _spawn(world, backend, one_gpu, case, hidden, tmp_path):
    import comm_worker
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    init_file = str(tmp_path / "dist_init")
    procs = [ctx.Process(target=comm_worker.worker,
                         args=(r, world, init_file, backend, one_gpu, case, hidden, q))
             for r in range(world)]
    for p in procs:
        p.start()
    results = {}
    try:
        for _ in range(world):
            rank, status, payload = q.get(timeout=TIMEOUT_S)
            assert status == "ok", f"rank {rank} failed:\n{payload}"
            results[rank] = payload
    except queue_mod.Empty:
        pytest.fail(f"{case}: no answer from {world - len(results)} rank(s) within {TIMEOUT_S} s "
                    "(a hang)")
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    return results


def _need_gpus(n):
    have = torch.cuda.device_count()
    if have < n:
        pytest.skip(f"needs {n} GPUs for one process per GPU; this machine has {have}")


@pytest.mark.parametrize("hidden", [7168])
def test_two_processes_one_gpu(tmp_path, hidden):
    results = _spawn(2, "gloo", True, "numerics", hidden, tmp_path)
    assert all(set(r) == {"one_shot", "two_shot", "nccl"} for r in results.values()), results


def test_setup_mismatch_raises_on_every_rank(tmp_path):
    results = _spawn(2, "gloo", True, "setup_mismatch", 4096, tmp_path)
    assert results == {0: "raised", 1: "raised"}


def test_setup_error_on_one_rank_raises_on_every_rank(tmp_path):
    results = _spawn(2, "gloo", True, "setup_error", 4096, tmp_path)
    assert results == {0: "raised", 1: "raised"}


@pytest.mark.parametrize("hidden", [4096, 5120, 7168, 8200])
@pytest.mark.parametrize("world", [2, 4, 8])
def test_one_process_per_gpu(tmp_path, world, hidden):
    _need_gpus(world)
    results = _spawn(world, "nccl", False, "numerics", hidden, tmp_path)
    assert all(set(r) == {"one_shot", "two_shot", "nccl"} for r in results.values()), results
