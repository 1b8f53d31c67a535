"""Problem builder and float64 reference for hpc_ops.grouped_gemm.

make_problem builds one whole call: weights [G, N, K] (fp8 codes or bf16
values), x in the requested layout, the group description, the scales, and a
poisoned output. Rows that no group owns (padding rows past cu_seqlens[G],
rows past a masked group's count) hold NaN inputs, so a kernel that reads
them for their values fails; gathered indices include -1 and src_rows, which
read zero rows.

The reference dequantizes (real = fp8 * scale, the scale layout as the op
documents it) and multiplies in float64. The allowed error of an output
element is REL_OF_ABS_PRODUCT times sum_k |x_k w_k|: fp32 accumulation over K
(and the tensor cores' shorter FP8 accumulation inside each 128-K block)
errs relative to the magnitudes summed, not to a result that may cancel.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import torch

FP8 = torch.float8_e4m3fn
BF16 = torch.bfloat16
FP8_NAN_BYTE = 0x7F
REL_OF_ABS_PRODUCT = 2.0 ** -11


@dataclass
class GemmProblem:
    layout: str
    scaling: Optional[str]
    counts: List[int]
    x: torch.Tensor
    w: torch.Tensor
    out: torch.Tensor
    cu_seqlens: Optional[torch.Tensor] = None
    rows_per_group: Optional[torch.Tensor] = None
    row_index: Optional[torch.Tensor] = None
    x_scale: Optional[torch.Tensor] = None
    w_scale: Optional[torch.Tensor] = None
    # Output rows each group owns: (row index tensor into out's row space).
    owned: List[torch.Tensor] = field(default_factory=list)

    def kwargs(self, **extra):
        kw = dict(layout=self.layout, cu_seqlens=self.cu_seqlens,
                  rows_per_group=self.rows_per_group, row_index=self.row_index,
                  scaling=self.scaling, x_scale=self.x_scale, w_scale=self.w_scale, out=self.out)
        kw.update(extra)
        return kw


def _poison_(t: torch.Tensor) -> torch.Tensor:
    if t.dtype == FP8:
        t.view(torch.uint8).fill_(FP8_NAN_BYTE)
    else:
        t.fill_(float("nan"))
    return t


def _values(gen, shape, dtype, device="cuda"):
    """Random inputs with a spread of magnitudes: fp8 codes (every finite
    code magnitude up to ~64) or bf16 values."""
    v = torch.randn(shape, generator=gen, device=device)
    v = v * torch.exp2(torch.randint(-2, 3, shape, generator=gen, device=device).float())
    return v.to(dtype)


def _scales(gen, shape, device="cuda"):
    """Positive float32 scales spread over 2^[-3, 1): a wrong scale index shows."""
    return torch.exp2(torch.rand(shape, generator=gen, device=device) * 4 - 3) * 0.01


def make_problem(gen: torch.Generator, *, layout: str, scaling: Optional[str], counts,
                 n: int, k: int, pad_rows: int = 3, max_rows: Optional[int] = None,
                 src_rows: Optional[int] = None, strided: bool = False,
                 x_scale_layout: str = "row_major") -> GemmProblem:
    counts = [int(c) for c in counts]
    groups = len(counts)
    dtype = BF16 if scaling is None else FP8
    dev = "cuda"
    # Weights, optionally a view with padded rows (N stride > K).
    if strided:
        w_store = _values(gen, (groups, n + 16, k + 32), dtype)
        w = w_store[:, 8:8 + n, 16:16 + k]
    else:
        w = _values(gen, (groups, n, k), dtype)
    kx = k + 48 if strided else k

    cu = None
    rows_per_group = None
    row_index = None
    owned = []
    if layout == "masked":
        mr = max(counts + [0]) + pad_rows if max_rows is None else max_rows
        x_store = _poison_(torch.empty((groups, mr, kx), dtype=dtype, device=dev))
        x = x_store[..., :k]
        for g, c in enumerate(counts):
            x[g, :c] = _values(gen, (c, k), dtype)
        rows_per_group = torch.tensor(counts, dtype=torch.int32, device=dev)
        out = _poison_(torch.empty((groups, mr, n), dtype=BF16, device=dev))
        x_rows_shape = (groups, mr)
    else:
        total = sum(counts)
        offsets = [0]
        for c in counts:
            offsets.append(offsets[-1] + c)
        cu = torch.tensor(offsets, dtype=torch.int32, device=dev)
        rows = total + pad_rows  # rows past cu_seqlens[G]: owned by no group
        owned = [torch.arange(offsets[g], offsets[g + 1], device=dev) for g in range(groups)]
        if layout == "contiguous":
            x_store = _poison_(torch.empty((rows, kx), dtype=dtype, device=dev))
            x = x_store[:, :k]
            x[:total] = _values(gen, (total, k), dtype)
            x_rows_shape = (rows,)
        else:
            s = src_rows if src_rows is not None else max(1, total // 2 + 5)
            x_store = torch.empty((s, kx), dtype=dtype, device=dev)
            x = x_store[:, :k]
            x.copy_(_values(gen, (s, k), dtype))
            idx = torch.randint(0, s, (rows,), generator=gen, device=dev, dtype=torch.int32)
            if total >= 3:  # out-of-range indices read zero rows
                idx[1] = -1
                idx[total - 1] = s
            row_index = idx
            x_rows_shape = (s,)
        out = _poison_(torch.empty((rows, n), dtype=BF16, device=dev))

    x_scale = w_scale = None
    if scaling == "per_tensor":
        x_scale = _scales(gen, (1,))
        w_scale = _scales(gen, (groups,))
    elif scaling == "per_row":
        x_scale = _scales(gen, x_rows_shape)
        w_scale = _scales(gen, (groups, n))
    elif scaling == "block":
        kb = k // 128
        if x_scale_layout == "mn_major":  # what hpc_ops.quantize_fp8 emits
            lead, r = x_rows_shape[:-1], x_rows_shape[-1]
            padded = (r + 3) // 4 * 4
            store = _scales(gen, (*lead, kb, padded))
            x_scale = store[..., :r].transpose(-1, -2)
        else:
            x_scale = _scales(gen, (*x_rows_shape, kb))
        w_scale = _scales(gen, (groups, n // 128, kb))
    return GemmProblem(layout, scaling, counts, x, w, out, cu, rows_per_group, row_index,
                       x_scale, w_scale, owned)


def _dequant_x(p: GemmProblem) -> torch.Tensor:
    """x as float64 values (rows of x as stored)."""
    x = p.x.double()
    if p.scaling in (None, "per_tensor"):
        return x * (float(p.x_scale[0]) if p.scaling else 1.0)
    if p.scaling == "per_row":
        return x * p.x_scale.double().unsqueeze(-1)
    return x * p.x_scale.double().repeat_interleave(128, dim=-1)


def _dequant_w(p: GemmProblem) -> torch.Tensor:
    w = p.w.double()
    if p.scaling is None:
        return w
    if p.scaling == "per_tensor":
        return w * p.w_scale.double().view(-1, 1, 1)
    if p.scaling == "per_row":
        return w * p.w_scale.double().unsqueeze(-1)
    s = p.w_scale.double().repeat_interleave(128, dim=1).repeat_interleave(128, dim=2)
    return w * s


def _group_inputs(p: GemmProblem, xd: torch.Tensor, g: int):
    """(values, |values|) of group g's input rows, in output-row order."""
    if p.layout == "masked":
        return xd[g, :p.counts[g]]
    rows = p.owned[g]
    if p.layout == "contiguous":
        return xd[rows]
    idx = p.row_index[rows].long()
    valid = (idx >= 0) & (idx < xd.shape[0])
    vals = torch.zeros((rows.numel(), xd.shape[1]), dtype=torch.float64, device=xd.device)
    vals[valid] = xd[idx[valid]]
    return vals


def reference(p: GemmProblem):
    """Per group: (expected float64 [rows_g, N], allowed error [rows_g, N])."""
    xd = _dequant_x(p)
    wd = _dequant_w(p)
    results = []
    for g in range(len(p.counts)):
        xg = _group_inputs(p, xd, g)
        y = xg @ wd[g].T
        err = REL_OF_ABS_PRODUCT * (xg.abs() @ wd[g].abs().T)
        results.append((y, err))
    return results


def output_rows(p: GemmProblem, out: torch.Tensor, g: int) -> torch.Tensor:
    if p.layout == "masked":
        return out[g, :p.counts[g]]
    return out[p.owned[g]]


def unowned_mask(p: GemmProblem) -> torch.Tensor:
    """Rows of out that no group owns (must stay as poisoned)."""
    if p.layout == "masked":
        mask = torch.ones(p.out.shape[:2], dtype=torch.bool, device=p.out.device)
        for g, c in enumerate(p.counts):
            mask[g, :c] = False
        return mask
    mask = torch.ones(p.out.shape[0], dtype=torch.bool, device=p.out.device)
    for rows in p.owned:
        mask[rows] = False
    return mask
