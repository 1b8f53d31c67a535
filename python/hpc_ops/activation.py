# SPDX-License-Identifier: Apache-2.0
"""Gated activations of MLP / MoE layers: ``act(gate) * up`` over rows laid
out ``[gate (C) | up (C)]``, with optional FP8 output, plain or masked over a
padded per-expert buffer."""
from __future__ import annotations

import torch

from . import _C, _ops
from ._quant import alloc_scales, out_dtype, scaling_code
from ._tensor import as_optional_tensor, as_tensor, desc, desc_or_none, direct_call_ok, rows_view
from ._tensor import stream_of

SILU, GELU_TANH = 0, 1  # hpc_ops::Activation codes


def _act_and_mul(act, op, x, quant, scale, out, scale_out):
    x = as_tensor(x, op, "x")
    scale = as_optional_tensor(scale, op, "scale")
    code = scaling_code(op, quant, scale)
    x2 = rows_view(x, op)
    cols = x2.shape[-1] // 2 if x2.dim() == 2 else 0
    if out is None:
        out = torch.empty((x2.shape[0], cols) if x2.dim() == 2 else x2.shape,
                          dtype=out_dtype(code), device=x.device)
    else:
        out = rows_view(as_tensor(out, op, "out"), op)
    scale_out = as_optional_tensor(scale_out, op, "scale_out")
    if scale_out is None and code >= 2:
        scale_out = alloc_scales(code, x2.shape[:1], cols, x.device)
    if direct_call_ok(x):
        _C.act_and_mul(act, desc(x2), desc(out), code,
                       desc_or_none(scale if scale is not None else scale_out), stream_of(x))
    else:
        _ops.act_and_mul_op(act, x2, out, code, scale, scale_out)
    if x.dim() > 2:
        out = out.view(*x.shape[:-1], cols)
    return out if code == 0 else (out, scale if scale is not None else scale_out)


def _act_and_mul_masked(act, op, x, row_counts, quant, scale, out, scale_out):
    x = as_tensor(x, op, "x")
    row_counts = as_tensor(row_counts, op, "row_counts")
    scale = as_optional_tensor(scale, op, "scale")
    code = scaling_code(op, quant, scale)
    cols = x.shape[-1] // 2 if x.dim() == 3 else 0
    if out is None:
        out = torch.empty((*x.shape[:2], cols) if x.dim() == 3 else x.shape,
                          dtype=out_dtype(code), device=x.device)
    else:
        out = as_tensor(out, op, "out")
    scale_out = as_optional_tensor(scale_out, op, "scale_out")
    if scale_out is None and code >= 2 and x.dim() == 3:
        scale_out = alloc_scales(code, tuple(x.shape[:2]), cols, x.device)
    if direct_call_ok(x):
        _C.act_and_mul_masked(act, desc(x), desc(row_counts), desc(out), code,
                              desc_or_none(scale if scale is not None else scale_out), stream_of(x))
    else:
        _ops.act_and_mul_masked_op(act, x, row_counts, out, code, scale, scale_out)
    return out if code == 0 else (out, scale if scale is not None else scale_out)


_DOC = """{name}: ``out = {formula} * up`` for each row ``[gate | up]`` of x.

    Parameters
    ----------
    x : bfloat16 ``[..., 2*C]``, C a multiple of 8 (up to 65536); leading dims
        flattened; 2-D x may have a row stride larger than 2*C (16-byte aligned).
    quant : None, ``"per_tensor"`` (static, needs ``scale``), ``"per_token"``
        or ``"per_group"`` (1x128); see ``hpc_ops._quant``.
    out : optional output ``[rows, C]``; scale_out : optional scale storage.

    Returns
    -------
    ``out`` (bfloat16), or ``(out, scale)`` with ``quant``. Float32 math, one
    rounding at the output; CUDA-graph capturable.
    """

_MASKED_DOC = """{name}: the masked (padded per-expert) variant.

    Parameters
    ----------
    x : bfloat16 ``[E, max_rows, 2*C]`` (the DeepEP low-latency layout)
    row_counts : int32 ``[E]`` on the device: rows ``m >= row_counts[e]`` of
        expert e are neither computed nor written (out and scales keep what
        they held). Read on the device, so a CUDA graph can replay with new counts.
    quant, scale, out, scale_out : as in the plain variant; per-token scales
        are ``[E, max_rows, 1]``, per-group ``[E, max_rows, ceil(C / 128)]``.

    Returns
    -------
    ``out [E, max_rows, C]``, or ``(out, scale)`` with ``quant``.
    """


def silu_and_mul(x, *, quant=None, scale=None, out=None, scale_out=None):
    return _act_and_mul(SILU, "silu_and_mul", x, quant, scale, out, scale_out)


def gelu_tanh_and_mul(x, *, quant=None, scale=None, out=None, scale_out=None):
    return _act_and_mul(GELU_TANH, "gelu_tanh_and_mul", x, quant, scale, out, scale_out)


def silu_and_mul_masked(x, row_counts, *, quant=None, scale=None, out=None, scale_out=None):
    return _act_and_mul_masked(SILU, "silu_and_mul_masked", x, row_counts, quant, scale, out,
                               scale_out)


def gelu_tanh_and_mul_masked(x, row_counts, *, quant=None, scale=None, out=None, scale_out=None):
    return _act_and_mul_masked(GELU_TANH, "gelu_tanh_and_mul_masked", x, row_counts, quant, scale,
                               out, scale_out)


silu_and_mul.__doc__ = _DOC.format(name="SiLU-and-mul", formula="silu(gate) = gate * sigmoid(gate)")
gelu_tanh_and_mul.__doc__ = _DOC.format(
    name="GELU(tanh)-and-mul",
    formula="gelu_tanh(gate) = 0.5 gate (1 + tanh(sqrt(2/pi) (gate + 0.044715 gate^3)))")
silu_and_mul_masked.__doc__ = _MASKED_DOC.format(name="SiLU-and-mul")
gelu_tanh_and_mul_masked.__doc__ = _MASKED_DOC.format(name="GELU(tanh)-and-mul")
