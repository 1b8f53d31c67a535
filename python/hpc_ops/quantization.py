# SPDX-License-Identifier: Apache-2.0
"""Standalone FP8 (float8_e4m3fn) quantization."""
from __future__ import annotations

import torch

from . import _C, _ops
from ._quant import NONE, alloc_scales, scaling_code
from ._tensor import as_optional_tensor, as_tensor, desc, desc_or_none, direct_call_ok, rows_view
from ._tensor import stream_of


def quantize_fp8(x, quant: str = "per_token", *, scale=None, out=None, scale_out=None):
    """Quantize x to float8_e4m3fn.

    Parameters
    ----------
    x : bfloat16, float16 or float32 ``[..., n]``, n a multiple of 8 (up to
        65536 per row; reshape longer rows); leading dims flattened.
    quant : ``"per_tensor"`` (static with ``scale=``, a float32 one-element
        tensor; dynamic without: computes ``max(amax, 1e-10) / 448`` over the
        whole tensor in a second pass), ``"per_token"`` (scales ``[rows, 1]``)
        or ``"per_group"`` (1x128 groups, scales ``[rows, ceil(n / 128)]``
        MN-major; see ``hpc_ops._quant``).
    out : optional float8_e4m3fn ``[rows, n]``; scale_out : optional scale storage.

    Returns
    -------
    ``(q, scale)`` with ``x ~= q.float() * scale`` (broadcast per row / group).
    Values beyond the scale's range saturate to +-448. An empty ``x`` with
    dynamic per-tensor scaling leaves ``scale = 0``. For inputs with more than
    two dims, ``q`` takes x's shape and the scales stay ``[rows, ...]``.
    """
    op = "quantize_fp8"
    x = as_tensor(x, op, "x")
    scale = as_optional_tensor(scale, op, "scale")
    code = scaling_code(op, quant, scale)
    if code == NONE:
        raise ValueError(f"hpc_ops.{op}: quant must be 'per_tensor', 'per_token' or 'per_group', "
                         "got None")
    x2 = rows_view(x, op)
    if out is None:
        out = torch.empty(x2.shape, dtype=torch.float8_e4m3fn, device=x.device)
    else:
        out = rows_view(as_tensor(out, op, "out"), op)
    scale_out = as_optional_tensor(scale_out, op, "scale_out")
    if scale_out is None and code >= 2:
        scale_out = alloc_scales(code, x2.shape[:1], x2.shape[-1], x.device)
    if direct_call_ok(x):
        _C.quantize_fp8(desc(x2), desc(out), code,
                        desc_or_none(scale if scale is not None else scale_out), stream_of(x))
    else:
        _ops.quantize_fp8_op(x2, out, code, scale, scale_out)
    out = out.view(x.shape) if x.dim() > 2 else out
    return out, (scale if scale is not None else scale_out)
