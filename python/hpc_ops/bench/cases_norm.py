# SPDX-License-Identifier: Apache-2.0
"""Family "norm": RMSNorm and fused residual-add + RMSNorm, bf16 and FP8
outputs, against PyTorch eager and torch.compile baselines."""
from __future__ import annotations

import torch
import torch.nn.functional as F

import hpc_ops

from .common import (BF16, EPS, F32, FP8, FP8_MAX, GROUP, HIDDEN, HIDDEN_QUICK, OpSpec,
                     row_grid_cases,
                     check_bf16, check_fp8, fp8_quant_ref, group_scales, merge_checks,
                     randn)

FP8_DT = torch.float8_e4m3fn

# ---------------------------------------------------------------------------
# baselines: the plain PyTorch sequences (run eager and under torch.compile)


def _rms_f32(r, w):
    rf = r.float()
    return rf * torch.rsqrt(rf.pow(2).mean(-1, keepdim=True) + EPS) * w.float()


def base_rms_norm(x, w):
    return F.rms_norm(x, (x.shape[-1],), w, EPS)


def base_add_rms_norm(x, r, w):
    r = x + r
    return F.rms_norm(r, (r.shape[-1],), w, EPS), r


def base_add_rms_norm_fp8_token(x, r, w):
    r = x + r
    y = _rms_f32(r, w)
    scale = y.abs().amax(-1, keepdim=True).clamp(min=1e-10) / FP8_MAX
    q = (y / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DT)
    return q, r, scale


def base_add_rms_norm_fp8_group(x, r, w):
    r = x + r
    y = _rms_f32(r, w)
    yg = y.view(y.shape[0], -1, GROUP)
    scale = yg.abs().amax(-1, keepdim=True).clamp(min=1e-10) / FP8_MAX
    q = (yg / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DT).view(y.shape)
    return q, r, scale.squeeze(-1)


def base_rms_norm_fp8_static(x, w, scale):
    y = _rms_f32(x, w)
    return (y / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DT), scale


# ---------------------------------------------------------------------------
# ours

def ours_rms_norm(s):
    return hpc_ops.rms_norm(s["x"], s["w"], EPS)


def ours_add_rms_norm(s):
    # In place on the residual, as a decoder layer calls it.
    return hpc_ops.fused_add_rms_norm(s["x"], s["r"], s["w"], EPS, residual_out=s["r"])


def ours_add_rms_norm_fp8(quant):
    def run(s):
        return hpc_ops.fused_add_rms_norm(s["x"], s["r"], s["w"], EPS, quant=quant,
                                          residual_out=s["r"])
    return run


def ours_rms_norm_fp8_static(s):
    return hpc_ops.rms_norm(s["x"], s["w"], EPS, quant="per_tensor", scale=s["scale"])


# ---------------------------------------------------------------------------
# inputs, references, checks

def _inputs(rows, hidden, residual=False, static=False):
    """Factory of one input set (x, w[, r][, scale]); called once per rotation slot."""
    def make(slot):
        s = {"x": randn(rows, hidden), "w": randn(hidden)}
        if residual:
            s["r"] = randn(rows, hidden)
        if static:  # a realistic static scale: this input set's amax / 448
            amax = _rms_f32(s["x"], s["w"]).abs().amax().clamp(min=1e-10)
            s["scale"] = (amax / FP8_MAX).reshape(1).float()
        return s
    return make


def _ref_rms(s):
    return {"y": _rms_f32(s["x"], s["w"])}


def _ref_add(s):
    rsum = s["x"].float() + s["r"].float()
    # The norm is of the residual as stored in bf16 (see fused_add_rms_norm).
    return {"r": rsum, "y": _rms_f32(rsum.to(torch.bfloat16), s["w"])}


def _ref_static(s):
    return {"y": fp8_quant_ref(_rms_f32(s["x"], s["w"]), "static", s["scale"]),
            "scale": s["scale"]}


def _check_rms(ref, out):
    return check_bf16(out, ref["y"])


def _check_add(ref, out):
    y, r = out[0], out[1]
    return merge_checks(check_bf16(y, ref["y"], "out"), check_bf16(r, ref["r"], "residual"))


def _check_add_fp8(per_group):
    def check(ref, out):
        q, r, scale = out
        rows, cols = ref["y"].shape
        sb = group_scales(scale, (rows,), cols) if per_group else scale.float().reshape(rows, 1)
        return merge_checks(check_fp8(q, sb, ref["y"], "out"), check_bf16(r, ref["r"], "residual"))
    return check


def _check_static(ref, out):
    q, _ = out
    return check_fp8(q, ref["scale"].float().reshape(1, 1), ref["y"])


# ---------------------------------------------------------------------------
# the cases

def _rows_x(s):
    return (s["x"],)


def _rows_xr(s):
    return (s["x"], s["r"])


def _groups(h):
    return (h + GROUP - 1) // GROUP


def _specs() -> dict:
    xw = lambda s: (s["x"], s["w"])             # noqa: E731
    xrw = lambda s: (s["x"], s["r"], s["w"])    # noqa: E731
    res = {"residual": True}
    return {
        "rms_norm": OpSpec(
            ours_rms_norm, base_rms_norm, xw, _rows_x, _ref_rms, _check_rms,
            lambda r, h: r * h * (BF16 + BF16) + h * BF16, base_name="F.rms_norm"),
        # read x, residual; write residual, out
        "add_rms_norm": OpSpec(
            ours_add_rms_norm, base_add_rms_norm, xrw, _rows_xr, _ref_add, _check_add,
            lambda r, h: r * h * 4 * BF16 + h * BF16, inputs=res),
        "add_rms_norm_fp8_per_token": OpSpec(
            ours_add_rms_norm_fp8("per_token"), base_add_rms_norm_fp8_token, xrw, _rows_xr,
            _ref_add, _check_add_fp8(False),
            lambda r, h: r * h * (3 * BF16 + FP8) + h * BF16 + r * F32, inputs=res),
        "add_rms_norm_fp8_per_group": OpSpec(
            ours_add_rms_norm_fp8("per_group"), base_add_rms_norm_fp8_group, xrw, _rows_xr,
            _ref_add, _check_add_fp8(True),
            lambda r, h: r * h * (3 * BF16 + FP8) + h * BF16 + r * _groups(h) * F32, inputs=res),
        "rms_norm_fp8_static": OpSpec(
            ours_rms_norm_fp8_static, base_rms_norm_fp8_static,
            lambda s: (s["x"], s["w"], s["scale"]), _rows_x, _ref_static, _check_static,
            lambda r, h: r * h * (BF16 + FP8) + h * BF16 + F32, inputs={"static": True}),
    }


def cases(quick: bool) -> list:
    return row_grid_cases("norm", _specs(), quick, HIDDEN, HIDDEN_QUICK, _inputs,
                          inplace_option="residual")
