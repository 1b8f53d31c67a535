"""CPU tests of the fused all-reduce's Python layer: the path heuristic as the
binding exposes it, and the set-up errors raised before any device work."""
from __future__ import annotations

import pytest

import hpc_ops
from hpc_ops import _C
from hpc_ops.comm import PATHS, TpCommunicator, fused_allreduce_residual_rmsnorm

pytestmark = pytest.mark.skipif("comm" not in hpc_ops.built_families(),
                                reason="hpc_ops was built without the 'comm' family")

CAP = 512 * 7168


def _path(world, tokens, hidden=7168, peer=True):
    return PATHS[_C.choose_allreduce_path(world, tokens * hidden, CAP, peer)]


def test_paths():
    assert _path(2, 1) == "one_shot"
    assert _path(2, 512) == "one_shot"       # two ranks never gain from two-shot
    assert _path(8, 1) == "one_shot"
    assert _path(8, 10) == "one_shot"
    assert _path(8, 11) == "two_shot"
    assert _path(4, 36) == "one_shot"        # ~512 KB of x at 4 ranks
    assert _path(4, 37) == "two_shot"
    assert _path(8, 512) == "two_shot"
    assert _path(8, 513) == "nccl"           # past the peer buffers
    assert _path(8, 1, peer=False) == "nccl"


def test_setup_errors_before_any_device_work():
    with pytest.raises(ValueError, match="torch.distributed is not initialized"):
        TpCommunicator(hidden=4096)
    with pytest.raises(ValueError, match="hidden = 4, expected >= 8"):
        TpCommunicator(hidden=4)
    with pytest.raises(ValueError, match="max_tokens = 0, expected >= 1"):
        TpCommunicator(hidden=4096, max_tokens=0)
    with pytest.raises(ValueError, match="world = 9, expected in 1..8"):
        TpCommunicator.local_group(9, hidden=4096)
    with pytest.raises(ValueError, match="hidden must be an int"):
        TpCommunicator.local_group(2, hidden=4096.0)


def test_comm_must_be_a_communicator():
    import torch
    x = torch.zeros(2, 8, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="comm must be a TpCommunicator, got str"):
        fused_allreduce_residual_rmsnorm(x, x, x[0], 1e-6, "comm")
