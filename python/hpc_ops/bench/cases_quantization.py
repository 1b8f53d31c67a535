# SPDX-License-Identifier: Apache-2.0
"""Family "quantization": standalone bf16 -> FP8 quantize_fp8 in the four
scalings (per-token, 1x128 per-group, static and dynamic per-tensor)."""
from __future__ import annotations

import torch

import hpc_ops

from .common import (BF16, F32, FP8, FP8_MAX, GROUP, HIDDEN, HIDDEN_QUICK, OpSpec,
                     row_grid_cases,
                     check_fp8, fp8_quant_ref, group_scales, randn)

FP8_DT = torch.float8_e4m3fn

# ---------------------------------------------------------------------------
# baselines (float32 math, like hpc_ops)


def base_per_token(x):
    xf = x.float()
    scale = xf.abs().amax(-1, keepdim=True).clamp(min=1e-10) / FP8_MAX
    return (xf / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DT), scale


def base_per_group(x):
    # Row-major [rows, groups] scales; hpc_ops writes the GEMM's MN-major layout.
    xg = x.float().view(x.shape[0], -1, GROUP)
    scale = xg.abs().amax(-1, keepdim=True).clamp(min=1e-10) / FP8_MAX
    q = (xg / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DT).view(x.shape)
    return q, scale.squeeze(-1)


def base_per_tensor_static(x, scale):
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DT), scale


def base_per_tensor_dynamic(x):
    scale = (x.abs().amax().float().clamp(min=1e-10) / FP8_MAX).reshape(1)
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DT), scale


# ---------------------------------------------------------------------------
# references and checks (out = (q, scale) for every implementation)

def _ref(s):
    return {"y": s["x"].float()}


def _ref_static(s):
    return {"y": fp8_quant_ref(s["x"].float(), "static", s["scale"])}


def _check_row(ref, out):
    q, scale = out
    return check_fp8(q, scale.float().reshape(-1, 1), ref["y"])


def _check_group(ref, out):
    q, scale = out
    rows, cols = ref["y"].shape
    return check_fp8(q, group_scales(scale, (rows,), cols), ref["y"])


def _check_tensor(ref, out):
    q, scale = out
    return check_fp8(q, scale.float().reshape(1, 1), ref["y"])


# ---------------------------------------------------------------------------
# the cases

def _inputs(rows, hidden, static=False):
    def make(slot):
        s = {"x": randn(rows, hidden)}
        if static:  # a realistic static scale: this input set's amax / 448
            s["scale"] = (s["x"].float().abs().amax().clamp(min=1e-10) / FP8_MAX).reshape(1)
        return s
    return make


def _specs() -> dict:
    x = lambda s: (s["x"],)   # noqa: E731
    q_bytes = lambda r, h: r * h * (BF16 + FP8)   # noqa: E731 - read bf16, write fp8
    return {
        "quantize_fp8_per_token": OpSpec(
            lambda s: hpc_ops.quantize_fp8(s["x"], "per_token"), base_per_token, x, x, _ref,
            _check_row, lambda r, h: q_bytes(r, h) + r * F32),
        "quantize_fp8_per_group": OpSpec(
            lambda s: hpc_ops.quantize_fp8(s["x"], "per_group"), base_per_group, x, x, _ref,
            _check_group, lambda r, h: q_bytes(r, h) + r * (h // GROUP) * F32),
        "quantize_fp8_per_tensor_static": OpSpec(
            lambda s: hpc_ops.quantize_fp8(s["x"], "per_tensor", scale=s["scale"]),
            base_per_tensor_static, lambda s: (s["x"], s["scale"]), x, _ref_static,
            _check_tensor, lambda r, h: q_bytes(r, h) + F32, inputs={"static": True}),
        # Minimal bytes read x once; a two-pass implementation reads it twice.
        # The baseline's whole-tensor amax is compiled per shape (dynamic_rows=False).
        "quantize_fp8_per_tensor_dynamic": OpSpec(
            lambda s: hpc_ops.quantize_fp8(s["x"], "per_tensor"), base_per_tensor_dynamic, x, x,
            _ref, _check_tensor, lambda r, h: q_bytes(r, h) + F32, dynamic_rows=False),
    }


def cases(quick: bool) -> list:
    return row_grid_cases("quantization", _specs(), quick, HIDDEN, HIDDEN_QUICK, _inputs,
                          plot_name=lambda op: op[len("quantize_fp8_"):])
