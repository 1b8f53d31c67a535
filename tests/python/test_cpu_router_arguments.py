"""Argument validation of hpc_ops.router_gemm and hpc_ops.split_router_weight
with host tensors, no GPU needed (skipped when the 'gemm' family is not
built). Structural checks (dtypes, ranks, shapes, the part count, K and N
multiples, strides) come before the device check, so each message is tested
here; a call valid except for living on the host is rejected naming the
device. A rejected call leaves the NaN-filled output untouched."""
from __future__ import annotations

import pytest
import torch

import hpc_ops
from hpc_test_utils import expect_rejected, needs_family

pytestmark = needs_family("gemm")

BF16 = torch.bfloat16


def call(x=None, wp=None, out=None, workspace=None):
    x = torch.zeros(4, 256, dtype=BF16) if x is None else x
    wp = torch.zeros(2, 192, 256, dtype=BF16) if wp is None else wp
    out = torch.full((4, 192), float("nan")) if out is None else out
    return lambda: hpc_ops.router_gemm(x, wp, out=out, workspace=workspace), out


CASES = {
    "x dtype": (dict(x=torch.zeros(4, 256)), r"x must be bfloat16, got float32"),
    "x rank": (dict(x=torch.zeros(256, dtype=BF16)), r"x must be 2-D \[M, K\], got 1-D"),
    "x K": (dict(x=torch.zeros(4, 240, dtype=BF16)), r"x.shape\[1\] = 240, expected 256"),
    "w dtype": (dict(wp=torch.zeros(2, 192, 256)), r"w_parts must be bfloat16"),
    "w rank": (dict(wp=torch.zeros(192, 256, dtype=BF16)), r"w_parts must be 3-D \[parts, N, K\]"),
    "parts": (dict(wp=torch.zeros(1, 192, 256, dtype=BF16)), r"parts = w_parts.shape\[0\] = 1"),
    "K multiple": (dict(x=torch.zeros(4, 200, dtype=BF16), wp=torch.zeros(2, 192, 200, dtype=BF16)),
                   r"K = w_parts.shape\[2\] = 200; expected a positive multiple of 16"),
    "N multiple": (dict(wp=torch.zeros(2, 100, 256, dtype=BF16), out=torch.zeros(4, 100)),
                   r"N = w_parts.shape\[1\] = 100; expected a positive multiple of 16"),
    "w strides": (dict(wp=torch.zeros(2, 256, 192, dtype=BF16).transpose(1, 2)),
                  r"w_parts.*contiguous"),
    "out rows": (dict(out=torch.zeros(5, 192)), r"out.shape\[0\] = 5, expected 4"),
    "out dtype": (dict(out=torch.zeros(4, 192, dtype=torch.float16)),
                  r"out must be one of \{bfloat16, float32\}"),
    "workspace dtype": (dict(workspace=torch.zeros(64)), r"workspace must be uint8, got float32"),
    "workspace rank": (dict(workspace=torch.zeros(2, 64, dtype=torch.uint8)),
                       r"workspace must be 1-D \[bytes\]"),
    "host": ({}, r"w_parts must be on a CUDA device"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_router_gemm_rejects(name):
    changes, match = CASES[name]
    fn, out = call(**changes)
    expect_rejected(fn, match, [out])


def test_split_router_weight_rejects():
    expect_rejected(lambda: hpc_ops.split_router_weight(torch.zeros(8, 16, dtype=BF16)),
                    r"w must be float32, got bfloat16")
    expect_rejected(lambda: hpc_ops.split_router_weight(torch.zeros(8, 16), 5),
                    r"parts = w_parts.shape\[0\] = 5; expected 2 or 3")
    expect_rejected(lambda: hpc_ops.split_router_weight(torch.zeros(8, 16), parts="3"),
                    r"parts must be an int")
    expect_rejected(lambda: hpc_ops.split_router_weight(torch.zeros(8, 16)),
                    r"w must be on a CUDA device")


def test_default_workspace_is_not_made_under_capture(monkeypatch):
    """The shared workspace's zero fill would only be recorded in a CUDA-graph
    capture: made for the first time under capture, it is refused before any
    allocation (the capture state is faked: no GPU needed)."""
    import importlib
    router_module = importlib.import_module("hpc_ops.router_gemm")
    monkeypatch.setattr(router_module, "_WORKSPACES", {})
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    with pytest.raises(ValueError, match="before capturing"):
        router_module.shared_workspace(torch.device("cuda", 0))
    assert not router_module._WORKSPACES, "a workspace was recorded under capture"
