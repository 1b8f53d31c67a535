# SPDX-License-Identifier: Apache-2.0
"""Router GEMM: ``y = x @ W^T`` with bfloat16 activations and a float32
weight held as bfloat16 parts, at near-fp32 accuracy on bf16 tensor cores
(the MoE router's logits)."""
from __future__ import annotations

import torch

from . import _C, _ops
from ._tensor import as_optional_tensor, as_tensor, desc, desc_or_none, direct_call_ok
from ._tensor import int_arg, rows_view, stream_of

_WORKSPACES: dict = {}  # device index -> the shared zero-initialized workspace


def router_gemm_workspace(device=None) -> torch.Tensor:
    """A zero-filled workspace for :func:`router_gemm` on ``device`` (default:
    the current CUDA device): uint8, a few MB, independent of the shapes. The
    kernel leaves it as it found it, so one serves any number of calls, as
    long as they do not run at the same time."""
    device = torch.device("cuda", torch.cuda.current_device()) if device is None else torch.device(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.zeros(_C.router_gemm_workspace_bytes(index), dtype=torch.uint8,
                       device=torch.device("cuda", index))


def shared_workspace(device: torch.device) -> torch.Tensor:
    """The workspace calls without one use (one per device, made on first use).
    Not made during CUDA-graph capture: its zero fill would only be recorded,
    so eager calls before the first replay would read garbage counters."""
    ws = _WORKSPACES.get(device.index)
    if ws is None:
        if torch.cuda.is_current_stream_capturing():
            raise ValueError("hpc_ops.router_gemm: the default workspace is made on the first call, "
                             "which must not be under CUDA-graph capture; call router_gemm once "
                             "before capturing, or pass workspace=hpc_ops.router_gemm_workspace()")
        ws = _WORKSPACES[device.index] = router_gemm_workspace(device)
    return ws


def split_router_weight(w, parts: int = 3, *, out=None) -> torch.Tensor:
    """Split a float32 weight ``[N, K]`` into ``parts`` bfloat16 parts
    ``[parts, N, K]`` with ``w ~= parts.sum(0)``: part 0 is ``bf16(w)``, each
    later part the rounded remainder. ``parts=3`` holds every float32 weight
    exactly; ``parts=2`` to within 2^-16 of ``|w|`` and reads 2/3 of the
    bytes. Done once per weight, at load time."""
    op = "split_router_weight"
    w = as_tensor(w, op, "w")
    int_arg(op, "parts", parts)  # 2 or 3: checked with the tensors
    if out is None:
        shape = (parts, w.shape[0], w.shape[1]) if w.dim() == 2 else (parts, 0, 0)
        out = torch.empty(shape, dtype=torch.bfloat16, device=w.device)
    else:
        out = as_tensor(out, op, "out")
    if direct_call_ok(w):
        _C.split_router_weight(desc(w), desc(out), stream_of(w))
    else:
        _ops.split_router_weight_op(w, out)
    return out


def router_gemm(x, w_parts, *, out=None, out_dtype: torch.dtype = torch.float32,
                workspace=None) -> torch.Tensor:
    """``y = x @ (w_parts.sum(0))^T`` with every product and sum in fp32.

    Parameters
    ----------
    x : bfloat16 ``[..., K]`` (leading dims flattened without a copy).
    w_parts : bfloat16 ``[P, N, K]``, P = 2 or 3, from :func:`split_router_weight`.
        Weights split elsewhere with a scale, ``low = (w - high) / s``, become
        parts as ``torch.stack([high, low * s])`` (exact for a power of two s).
        K and N multiples of 16.
    out : optional ``[..., N]`` output (float32 or bfloat16), else a new
        tensor of ``out_dtype``.
    workspace : from :func:`router_gemm_workspace`; default one shared per
        device (pass your own when calls may run concurrently on several
        streams).

    Error (mean, vs float64; docs/perf/grouped_gemm.md): with 3 parts 0.5-1.8x
    an fp32 GEMM's; with 2 parts 3-12x (the weight itself is off by up to
    2^-16). Deterministic. One kernel launch; CUDA-graph capturable.
    """
    op = "router_gemm"
    x = as_tensor(x, op, "x")
    w_parts = as_tensor(w_parts, op, "w_parts")
    x2 = rows_view(x, op)
    n = w_parts.shape[1] if w_parts.dim() == 3 else 0
    if out is None:
        if out_dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"hpc_ops.{op}: out_dtype must be torch.float32 or torch.bfloat16, "
                             f"got {out_dtype}")
        out = torch.empty(x.shape[:-1] + (n,), dtype=out_dtype, device=x.device)
    else:
        out = as_tensor(out, op, "out")
    out2 = rows_view(out, op)
    workspace = as_optional_tensor(workspace, op, "workspace")
    if direct_call_ok(x):
        if workspace is None:
            workspace = shared_workspace(x.device)
        _C.router_gemm(desc(x2), desc(w_parts), desc(out2), desc(workspace), stream_of(x))
    else:  # traced: the op takes the shared workspace when it runs
        _ops.router_gemm_op(x2, w_parts, out2, workspace)
    return out


__all__ = ["router_gemm", "router_gemm_workspace", "split_router_weight"]
