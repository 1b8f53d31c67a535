# SPDX-License-Identifier: Apache-2.0
"""RMSNorm and fused residual-add + RMSNorm, with optional FP8 output."""
from __future__ import annotations

import torch

from . import _C, _ops
from ._quant import alloc_scales, out_dtype, scaling_code
from ._tensor import as_optional_tensor, as_tensor, desc, desc_or_none, direct_call_ok, rows_view
from ._tensor import stream_of


def rms_norm(x, weight, eps: float = 1e-6, *, quant=None, scale=None, out=None, scale_out=None):
    """RMSNorm: ``y = x * rsqrt(mean(x**2, -1) + eps) * weight``.

    Parameters
    ----------
    x : bfloat16 ``[..., hidden]``
        ``hidden`` a multiple of 8 (up to 65536). Any number of rows, 0 and 1
        included. Leading dims are flattened; a 2-D ``x`` may have a row stride
        larger than ``hidden`` (16-byte aligned rows, contiguous last dim).
    weight : bfloat16 ``[hidden]``
    eps : float, finite and >= 0
    quant : None, ``"per_tensor"``, ``"per_token"`` or ``"per_group"``
        FP8 (float8_e4m3fn) output; see ``hpc_ops._quant``. ``"per_tensor"``
        needs ``scale``, a float32 tensor of one element (y / scale is stored).
    out : optional output ``[rows, hidden]`` (bfloat16, or float8_e4m3fn with ``quant``)
    scale_out : optional float32 storage for dynamic scales (``[rows, 1]`` or
        ``[rows, ceil(hidden / 128)]``, any strides)

    Returns
    -------
    ``out`` for bfloat16 output, else ``(out, scale)``. Math is float32 with one
    rounding at the output. Runs on the current CUDA stream; never synchronizes
    or allocates beyond the outputs it returns, so it can be captured in a CUDA graph.
    """
    op = "rms_norm"
    x = as_tensor(x, op, "x")
    weight = as_tensor(weight, op, "weight")
    scale = as_optional_tensor(scale, op, "scale")
    code = scaling_code(op, quant, scale)
    x2 = rows_view(x, op)
    if out is None:
        out = torch.empty(x2.shape, dtype=out_dtype(code), device=x.device)
    else:
        out = rows_view(as_tensor(out, op, "out"), op)
    scale_out = as_optional_tensor(scale_out, op, "scale_out")
    if scale_out is None and code >= 2:
        scale_out = alloc_scales(code, x2.shape[:1], x2.shape[-1], x.device)
    if direct_call_ok(x):
        _C.rms_norm(desc(x2), desc(weight), eps, desc(out), code,
                    desc_or_none(scale if scale is not None else scale_out), stream_of(x))
    else:
        _ops.rms_norm_op(x2, weight, eps, out, code, scale, scale_out)
    out = out.view(x.shape) if x.dim() > 2 else out
    if code == 0:
        return out
    return out, (scale if scale is not None else scale_out)


def fused_add_rms_norm(x, residual, weight, eps: float = 1e-6, *, quant=None, scale=None,
                       out=None, residual_out=None, scale_out=None):
    """Residual add then RMSNorm, in one pass over memory.

    ``residual_out = bfloat16(x + residual)``; ``out = rms_norm(residual_out)``
    (the norm is of the residual as stored, so it matches the unfused sequence).

    Parameters
    ----------
    x, residual : bfloat16 ``[..., hidden]`` (same shape; see ``rms_norm``)
    weight : bfloat16 ``[hidden]``
    residual_out : optional bfloat16 ``[rows, hidden]``; pass ``residual`` to
        update it in place (the usual choice in a decoder layer). A bfloat16
        ``out`` may likewise be ``x``.
    quant, scale, out, scale_out : as in ``rms_norm``

    Returns
    -------
    ``(out, residual_out)``, or ``(out, residual_out, scale)`` with ``quant``.
    """
    op = "fused_add_rms_norm"
    x = as_tensor(x, op, "x")
    x2 = rows_view(x, op)
    r2, weight, scale, code, out, residual_out, scale_out = add_norm_operands(
        op, x2, residual, weight, quant, scale, out, residual_out, scale_out)
    if direct_call_ok(x):
        _C.fused_add_rms_norm(desc(x2), desc(r2), desc(weight), eps, desc(out), desc(residual_out),
                              code, desc_or_none(scale if scale is not None else scale_out),
                              stream_of(x))
    else:
        _ops.fused_add_rms_norm_op(x2, r2, weight, eps, out, residual_out, code, scale, scale_out)
    return add_norm_result(x, out, residual_out, code, scale, scale_out)


def add_norm_operands(op, x2, residual, weight, quant, scale, out, residual_out, scale_out):
    """The operands of an add + RMSNorm of rows x2 (shared with the fused
    all-reduce): (residual rows, weight, scale, scaling code, out, residual_out,
    scale_out), the outputs allocated where not given."""
    residual = as_tensor(residual, op, "residual")
    weight = as_tensor(weight, op, "weight")
    scale = as_optional_tensor(scale, op, "scale")
    code = scaling_code(op, quant, scale)
    r2 = rows_view(residual, op)
    if out is None:
        out = torch.empty(x2.shape, dtype=out_dtype(code), device=x2.device)
    else:
        out = rows_view(as_tensor(out, op, "out"), op)
    if residual_out is None:
        residual_out = torch.empty(x2.shape, dtype=torch.bfloat16, device=x2.device)
    else:
        residual_out = rows_view(as_tensor(residual_out, op, "residual_out"), op)
    scale_out = as_optional_tensor(scale_out, op, "scale_out")
    if scale_out is None and code >= 2:
        scale_out = alloc_scales(code, x2.shape[:1], x2.shape[-1], x2.device)
    return r2, weight, scale, code, out, residual_out, scale_out


def add_norm_result(x, out, residual_out, code, scale, scale_out):
    """What an add + RMSNorm returns: (out, residual_out[, scale]) shaped like x."""
    if x.dim() > 2:
        out = out.view(x.shape)
        residual_out = residual_out.view(x.shape)
    if code == 0:
        return out, residual_out
    return out, residual_out, (scale if scale is not None else scale_out)
