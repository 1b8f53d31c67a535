# SPDX-License-Identifier: Apache-2.0
"""Family "activation": gated activations act(gate) * up on rows [gate | up]
of width 2C, bf16 and FP8 outputs, plain and masked (per-expert padded)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

import hpc_ops

from .common import (BF16, F32, FP8, FP8_MAX, GROUP, I32, Case, Impl, OpSpec, check_bf16,
                     check_fp8, compiled_impl, fp8_quant_ref, grid, group_scales, randn,
                     standard_impls)

FP8_DT = torch.float8_e4m3fn
INTER = (1536, 2048, 4096, 14336)        # C, the intermediate size
INTER_QUICK = (2048, 14336)
EXPERTS, MAX_ROWS = 8, 256               # masked layout [E, max_rows, 2C]

# ---------------------------------------------------------------------------
# baselines. bf16 outputs use the plain bf16 sequence people write; FP8
# outputs compute in float32 and quantize like hpc_ops does.


def base_silu_and_mul(x):
    c = x.shape[-1] // 2
    return F.silu(x[..., :c]) * x[..., c:]


def base_gelu_tanh_and_mul(x):
    c = x.shape[-1] // 2
    return F.gelu(x[..., :c], approximate="tanh") * x[..., c:]


def _silu_f32(x):
    c = x.shape[-1] // 2
    return F.silu(x[..., :c].float()) * x[..., c:].float()


def base_silu_and_mul_fp8_static(x, scale):
    y = _silu_f32(x)
    return (y / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DT), scale


def base_silu_and_mul_fp8_group(x):
    y = _silu_f32(x)
    yg = y.view(*y.shape[:-1], -1, GROUP)
    scale = yg.abs().amax(-1, keepdim=True).clamp(min=1e-10) / FP8_MAX
    q = (yg / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DT).view(y.shape)
    return q, scale.squeeze(-1)


# ---------------------------------------------------------------------------
# references and checks

def _ref_silu(s):
    return {"y": _silu_f32(s["x"])}


def _ref_gelu(s):
    c = s["x"].shape[-1] // 2
    return {"y": F.gelu(s["x"][:, :c].float(), approximate="tanh") * s["x"][:, c:].float()}


def _ref_static(s):
    return {"y": fp8_quant_ref(_silu_f32(s["x"]), "static", s["scale"]), "scale": s["scale"]}


def _check_bf16(ref, out):
    return check_bf16(out, ref["y"])


def _check_static(ref, out):
    return check_fp8(out[0], ref["scale"].float().reshape(1, 1), ref["y"])


def _check_group(ref, out):
    q, scale = out
    rows, cols = ref["y"].shape
    return check_fp8(q, group_scales(scale, (rows,), cols), ref["y"])


# ---------------------------------------------------------------------------
# the plain cases

def _inputs(rows, c, static=False):
    def make(slot):
        s = {"x": randn(rows, 2 * c)}
        if static:  # a realistic static scale: this input set's amax / 448
            s["scale"] = (_silu_f32(s["x"]).abs().amax().clamp(min=1e-10) / FP8_MAX).reshape(1)
        return s
    return make


def _specs() -> dict:
    x = lambda s: (s["x"],)   # noqa: E731
    bf16_bytes = lambda r, c: r * 2 * c * BF16 + r * c * BF16   # noqa: E731
    return {
        "silu_and_mul": OpSpec(
            lambda s: hpc_ops.silu_and_mul(s["x"]), base_silu_and_mul, x, x, _ref_silu,
            _check_bf16, bf16_bytes),
        "silu_and_mul_fp8_static": OpSpec(
            lambda s: hpc_ops.silu_and_mul(s["x"], quant="per_tensor", scale=s["scale"]),
            base_silu_and_mul_fp8_static, lambda s: (s["x"], s["scale"]), x, _ref_static,
            _check_static, lambda r, c: r * 2 * c * BF16 + r * c * FP8 + F32,
            inputs={"static": True}),
        "silu_and_mul_fp8_per_group": OpSpec(
            lambda s: hpc_ops.silu_and_mul(s["x"], quant="per_group"),
            base_silu_and_mul_fp8_group, x, x, _ref_silu, _check_group,
            lambda r, c: r * 2 * c * BF16 + r * c * FP8 + r * (c // GROUP) * F32),
        "gelu_tanh_and_mul": OpSpec(
            lambda s: hpc_ops.gelu_tanh_and_mul(s["x"]), base_gelu_tanh_and_mul, x, x,
            _ref_gelu, _check_bf16, bf16_bytes),
    }


def _plain_cases(quick):
    out = []
    for op, spec in _specs().items():
        opts = spec.inputs or {}
        for c, rows in grid(quick, INTER, INTER_QUICK):
            out.append(Case(
                family="activation", op=op, label=f"C={c} r={rows}",
                params={"C": c, "rows": rows}, bytes=spec.nbytes(rows, c),
                make_inputs=_inputs(rows, c, **opts),
                impls=lambda spec=spec: standard_impls(spec),
                reference=spec.reference, check=spec.check, config_dims=(c, rows),
                plot_group=f"{op} C={c}", plot_x=rows))
    return out


# ---------------------------------------------------------------------------
# the masked case: x [E, max_rows, 2C], rows m >= counts[e] are padding

def _counts(c):
    """Fixed random row counts per expert (seeded by C, the same for every
    rotation slot, so the byte count is well defined)."""
    g = torch.Generator().manual_seed(1000 + c)
    return torch.randint(0, MAX_ROWS + 1, (EXPERTS,), generator=g, dtype=torch.int32)


def _masked_case(c):
    counts_cpu = _counts(c)
    valid = int(counts_cpu.sum())
    groups = c // GROUP

    def make(slot):
        return {"x": randn(EXPERTS, MAX_ROWS, 2 * c), "counts": counts_cpu.to("cuda")}

    def ref(s):
        return {"y": _silu_f32(s["x"]), "counts": counts_cpu.tolist()}

    def check(r, out):
        q, scale = out
        # Only valid rows are compared: hpc_ops leaves padding rows untouched.
        qs = torch.cat([q[e, :n] for e, n in enumerate(r["counts"])])
        ss = torch.cat([scale[e, :n] for e, n in enumerate(r["counts"])])
        ys = torch.cat([r["y"][e, :n] for e, n in enumerate(r["counts"])])
        return check_fp8(qs, group_scales(ss, (ys.shape[0],), c), ys)

    def impls():
        ours = Impl("hpc_ops", lambda s: hpc_ops.silu_and_mul_masked(
            s["x"], s["counts"], quant="per_group"), baseline=False)
        # The baselines have no masking: they process the whole padded buffer.
        note = "baseline over full padded buffer"
        return [ours,
                Impl("torch", lambda s: base_silu_and_mul_fp8_group(s["x"]), note=note),
                compiled_impl(base_silu_and_mul_fp8_group, lambda s: (), lambda s: (s["x"],),
                              note=note)]

    return Case(
        family="activation", op="silu_and_mul_masked_fp8_per_group",
        label=f"C={c} E{EXPERTS}x{MAX_ROWS} v={valid}",
        params={"C": c, "experts": EXPERTS, "max_rows": MAX_ROWS, "valid_rows": valid,
                "rows": valid},
        # bytes of valid rows only: read x, write fp8 out and scales; read counts
        bytes=valid * (2 * c * BF16 + c * FP8 + groups * F32) + EXPERTS * I32,
        make_inputs=make, impls=impls, reference=ref, check=check,
        config_dims=(c, EXPERTS * MAX_ROWS), plot_group="silu_and_mul_masked_fp8_per_group",
        plot_x=c, plot_xlabel="C",
        note="bytes count valid rows only; baselines compute all E*max_rows rows")


def cases(quick: bool) -> list:
    return _plain_cases(quick) + [_masked_case(c) for c in (INTER_QUICK if quick else INTER)]
