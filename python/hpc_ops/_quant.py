# SPDX-License-Identifier: Apache-2.0
"""The FP8 output options shared by every operator that can emit FP8.

``quant`` is one of:

- ``None``: bfloat16 output.
- ``"per_tensor"``: one scale for the whole output. With ``scale=`` (a float32
  tensor of one element) it is static; without, ``quantize_fp8`` computes it.
- ``"per_token"``: one scale per row, returned as float32 ``[rows, 1]``.
- ``"per_group"``: one scale per row and 128 columns (1x128 groups, the last
  group may be partial), returned as float32 ``[rows, ceil(n / 128)]`` in the
  layout the FP8 grouped GEMM reads: column-major ("MN-major") with the row
  count padded to a multiple of 4 (strides ``(1, padded_rows)``), so a TMA box
  of scales is 16-byte aligned. Any strides are accepted for ``scale_out=``.

Scales are dequantization multipliers: ``real = fp8.float() * scale``.
Dynamic scales are ``max(amax, 1e-10) / 448``.
"""
from __future__ import annotations

import torch

# hpc_ops::Fp8Scaling codes (include/hpc_ops/quantization.h).
NONE, PER_TENSOR_STATIC, PER_TENSOR_DYNAMIC, PER_TOKEN, PER_GROUP = 0, 1, 2, 3, 4
GROUP_SIZE = 128
_MODES = (None, "per_tensor", "per_token", "per_group")


def scaling_code(op: str, quant, scale) -> int:
    if quant is None:
        return NONE
    if quant == "per_tensor":
        return PER_TENSOR_STATIC if scale is not None else PER_TENSOR_DYNAMIC
    if scale is not None:
        raise ValueError(f"hpc_ops.{op}: scale= is the static per-tensor scale; quant={quant!r} "
                         "computes its scales (pass scale_out= to give their storage)")
    if quant == "per_token":
        return PER_TOKEN
    if quant == "per_group":
        return PER_GROUP
    raise ValueError(f"hpc_ops.{op}: quant must be one of {_MODES}, got {quant!r}")


def out_dtype(code: int):
    return torch.bfloat16 if code == NONE else torch.float8_e4m3fn


def alloc_scales(code: int, lead: tuple, cols: int, device) -> torch.Tensor | None:
    """Storage for dynamic scales. lead = (rows,) or (batches, rows)."""
    if code == PER_TENSOR_DYNAMIC:
        return torch.empty((1,), dtype=torch.float32, device=device)
    if code == PER_TOKEN:
        return torch.empty((*lead, 1), dtype=torch.float32, device=device)
    if code == PER_GROUP:
        groups = (cols + GROUP_SIZE - 1) // GROUP_SIZE
        rows = lead[-1]
        padded = (rows + 3) // 4 * 4
        storage = torch.empty((*lead[:-1], groups, padded), dtype=torch.float32, device=device)
        return storage[..., :rows].transpose(-1, -2)
    return None
