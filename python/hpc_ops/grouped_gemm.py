# SPDX-License-Identifier: Apache-2.0
"""Grouped GEMM for MoE experts (FP8 with per-tensor, per-row or block
scales, or BF16): ``y[rows of g] = (x[rows of g] @ w[g]^T) * scales``."""
from __future__ import annotations

from typing import Optional

import torch

from . import _C, _ops
from ._tensor import as_optional_tensor, as_tensor, choice, desc, desc_or_none, direct_call_ok
from ._tensor import int_arg, stream_of

_LAYOUTS = {"contiguous": 0, "masked": 1, "gathered": 2}
_SCALINGS = {None: 0, "per_tensor": 1, "per_row": 2, "block": 3}



def grouped_gemm(x, w, *, layout: str = "contiguous", cu_seqlens=None, rows_per_group=None,
                 row_index=None, scaling: Optional[str] = None, x_scale=None, w_scale=None,
                 expected_rows_per_group: Optional[int] = None, out=None):
    """Per-group matrix products of MoE experts, bfloat16 output.

    Parameters
    ----------
    x : float8_e4m3fn or bfloat16 (the dtype of w), last dim contiguous,
        16-byte aligned rows; by ``layout``:

        - ``"contiguous"``: ``[rows, K]``; group g is rows ``cu_seqlens[g] ..
          cu_seqlens[g+1] - 1`` (int32 ``[G + 1]``, non-decreasing; empty
          groups allowed; no padding needed).
        - ``"masked"``: ``[G, max_rows, K]``; group g is its first
          ``rows_per_group[g]`` rows (int32 ``[G]``, read on the device: one
          CUDA graph serves every routing). Rows past the count are not read
          for their values and their output rows are not written.
        - ``"gathered"``: ``[src_rows, K]``; output row i reads
          ``x[row_index[i]]`` (int32 ``[rows]``), groups over output rows by
          ``cu_seqlens`` as in ``"contiguous"``: MoE tokens read through the
          routing order with no gather pass. An index outside
          ``[0, src_rows)`` reads a zero row.
    w : ``[G, N, K]``, K-major (last dim contiguous), 1 <= G <= 1024.
        K and N multiples of 16 (128 with block scales).
    scaling : ``None`` for bfloat16; for float8_e4m3fn one of
        (float32 dequantization scales, real = fp8 * scale; "x rows" are the
        rows of x as stored, so gathered scales follow the source row):

        - ``"per_tensor"``: x_scale ``[1]`` or ``[G]``, w_scale ``[1]`` or ``[G]``.
        - ``"per_row"``: x_scale one per x row, ``[x rows]`` or ``[x rows, 1]``
          (``[G, max_rows]`` when masked); w_scale ``[G, N]`` per channel.
        - ``"block"`` (DeepSeek-V3): x_scale per 1x128 of K, ``[x rows, K/128]``
          (``[G, max_rows, K/128]`` when masked; any strides, so the
          ``per_group`` scales of :func:`quantize_fp8` and the fused norms
          work as they are); w_scale per 128x128 block ``[G, N/128, K/128]``.
    expected_rows_per_group : rows per group the caller expects (default
        rows / G, or max_rows when masked); picks the row tile, speed only.
    out : optional bfloat16 output, ``[rows, N]`` (``[G, max_rows, N]`` when
        masked); any row strides.

    FP8 partial sums are promoted to fp32 every 128 of K. One kernel, no
    workspace, no synchronization; CUDA-graph capturable.
    """
    op = "grouped_gemm"
    x = as_tensor(x, op, "x")
    w = as_tensor(w, op, "w")
    layout_code = choice(op, "layout", layout, _LAYOUTS)
    scaling_code = choice(op, "scaling", scaling, _SCALINGS)
    cu_seqlens = as_optional_tensor(cu_seqlens, op, "cu_seqlens")
    rows_per_group = as_optional_tensor(rows_per_group, op, "rows_per_group")
    row_index = as_optional_tensor(row_index, op, "row_index")
    x_scale = as_optional_tensor(x_scale, op, "x_scale")
    w_scale = as_optional_tensor(w_scale, op, "w_scale")
    if expected_rows_per_group is None:
        expected = 0
    else:
        expected = max(0, int_arg(op, "expected_rows_per_group", expected_rows_per_group))
    if out is None:
        n = w.shape[1] if w.dim() == 3 else 0
        if layout_code == 1:
            shape = (x.shape[0], x.shape[1], n) if x.dim() == 3 else (0, 0, n)
        elif layout_code == 2:
            shape = (row_index.shape[0] if row_index is not None else 0, n)
        else:
            shape = (x.shape[0], n)
        out = torch.empty(shape, dtype=torch.bfloat16, device=x.device)
    else:
        out = as_tensor(out, op, "out")
    args = (x, w, cu_seqlens, rows_per_group, row_index, x_scale, w_scale, out)
    if direct_call_ok(x):
        _C.grouped_gemm(*(desc_or_none(t) for t in args[:-1]), desc(out), layout_code,
                        scaling_code, expected, stream_of(x))
    else:
        _ops.grouped_gemm_op(*args, layout_code, scaling_code, expected)
    return out


__all__ = ["grouped_gemm"]
