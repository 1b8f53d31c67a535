# SPDX-License-Identifier: Apache-2.0
"""Shared pieces of the benchmark: how a case and an implementation are
described, correctness checks against float32 references, and the
torch.compile helper used by every compiled baseline.

Nothing here touches the GPU at import time, so ``--list`` and ``--help``
work on a machine without CUDA.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

# Bytes per element for the minimal-traffic counts.
BF16, FP8, F32, I32 = 2, 1, 4, 4
FP8_MAX = 448.0
GROUP = 128          # 1x128 quantization groups
EPS = 1e-6           # norm epsilon used by every case

# Tolerances (BENCHMARKING.md): bf16 rtol 2e-2; fp8 compares dequantized
# values with 0.13*|ref| (two e4m3 steps) plus a few subnormal steps of the scale.
BF16_RTOL, BF16_ATOL = 2e-2, 1e-2
FP8_RTOL, FP8_ATOL_STEPS = 0.13, 2.0 ** -8


@dataclass
class Impl:
    """One implementation of a case: fn(input_set) -> outputs (any structure)."""
    name: str
    fn: Callable[[dict], Any]
    baseline: bool = True
    note: str = ""


@dataclass
class Case:
    """One benchmark point. make_inputs(slot) returns a fresh random input set
    (a dict of tensors); reference(inputs) computes the float32 reference from
    an input set before any implementation has run on it; check(ref, outputs)
    compares one implementation's outputs with it and returns a Check.
    Every implementation returns its outputs in the same order (e.g.
    (out, residual_out, scale)), so one check serves ours and the baselines."""
    family: str
    op: str
    label: str                       # short shape text for the table, e.g. "h=4096 r=128"
    params: dict
    bytes: int                       # minimal HBM traffic of one call
    make_inputs: Callable[[int], dict]
    impls: Callable[[], list]        # built lazily: compiled wrappers are created on demand
    reference: Callable[[dict], Any]
    check: Callable[[Any, Any], "Check"]
    config_dims: Optional[tuple]     # (cols, rows) given to hpc_ops._C.rowwise_config, or None
    plot_group: str                  # one subplot per group
    plot_x: float                    # x coordinate within the subplot
    plot_xlabel: str = "rows"
    inplace: bool = False            # an impl writes into its inputs: check on clones
    note: str = ""
    config_text: Optional[Callable[[int], str]] = None  # (SM count) -> config column, if no dims


@dataclass
class Check:
    max_err: float       # max |out - ref| over all compared outputs
    ratio: float         # max |out - ref| / tolerance (<= 1 passes)
    ok: bool
    detail: str = ""


def merge_checks(*checks: Check) -> Check:
    worst = max(checks, key=lambda c: c.ratio)
    detail = "; ".join(c.detail for c in checks if c.detail)
    return Check(max(c.max_err for c in checks), worst.ratio, all(c.ok for c in checks), detail)


def _finish(diff: torch.Tensor, tol: torch.Tensor, what: str) -> Check:
    if diff.numel() == 0:
        return Check(0.0, 0.0, True)
    if not torch.isfinite(diff).all():
        return Check(math.inf, math.inf, False, f"{what}: non-finite values")
    max_err = diff.max().item()
    ratio = (diff / tol).max().item()
    return Check(max_err, ratio, ratio <= 1.0, "" if ratio <= 1.0 else f"{what} over tolerance")


def check_bf16(out: torch.Tensor, ref: torch.Tensor, what: str = "out") -> Check:
    """bfloat16 output vs float32 reference: |out - ref| <= atol + rtol |ref|."""
    if out.dtype != torch.bfloat16 or out.shape != ref.shape:
        return Check(math.inf, math.inf, False,
                     f"{what}: got {out.dtype} {list(out.shape)}, want bfloat16 {list(ref.shape)}")
    diff = (out.float() - ref).abs()
    return _finish(diff, BF16_ATOL + BF16_RTOL * ref.abs(), what)


def check_fp8(q: torch.Tensor, scale: torch.Tensor, ref: torch.Tensor, what: str = "out") -> Check:
    """fp8 output: dequantize with its own scale (broadcast to q's shape by the
    caller) and compare with the float32 reference (already clamped to the
    representable range for static scales)."""
    if q.dtype != torch.float8_e4m3fn or q.shape != ref.shape:
        return Check(math.inf, math.inf, False,
                     f"{what}: got {q.dtype} {list(q.shape)}, want float8_e4m3fn {list(ref.shape)}")
    deq = q.float() * scale
    diff = (deq - ref).abs()
    tol = FP8_RTOL * ref.abs() + FP8_ATOL_STEPS * scale.abs() + 1e-6
    return _finish(diff, tol, what)


def group_scales(scale: torch.Tensor, rows_shape: tuple, cols: int) -> torch.Tensor:
    """Expand a per-group scale [..., ceil(cols/128)] to [..., cols] (any strides)."""
    s = scale.float().repeat_interleave(GROUP, dim=-1)[..., :cols]
    return s.reshape(*rows_shape, cols)


def fp8_quant_ref(y: torch.Tensor, mode: str, static_scale: Optional[torch.Tensor] = None):
    """Reference of what dequantized fp8 should give for float32 y: y itself for
    dynamic scales (amax maps to 448), y clamped to +-448*scale for a static one."""
    if mode == "static":
        lim = FP8_MAX * static_scale.float()
        return torch.maximum(torch.minimum(y, lim), -lim)
    return y


# ---------------------------------------------------------------------------
# torch.compile baselines

_compiled: dict = {}
_compile_failed: dict = {}


def configure_dynamo() -> None:
    """One compiled wrapper per baseline function serves every hidden size:
    dynamo caches one entry per (hidden, rows==1 or not). Automatic dynamic
    shapes are off so a new hidden size gives a new static-hidden kernel (what a
    real deployment compiles) rather than turning the hidden dim symbolic; the
    row dim is marked dynamic explicitly (mark_rows), so all row counts >= 2
    share one compile. The recompile limit is raised to hold all entries."""
    cfg = torch._dynamo.config
    cfg.automatic_dynamic_shapes = False
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), 64))
    if hasattr(cfg, "accumulated_recompile_limit"):
        cfg.accumulated_recompile_limit = max(cfg.accumulated_recompile_limit, 1024)


def compiled(fn: Callable) -> Callable:
    """torch.compile(fn), created once per baseline function."""
    if fn not in _compiled:
        _compiled[fn] = torch.compile(fn)
    return _compiled[fn]


# --compile-static: compile every baseline for each exact shape (slower to run,
# the best torch.compile can do per shape).
STATIC_COMPILE = False


def mark_rows(*tensors: torch.Tensor) -> None:
    """Mark dim 0 (rows) dynamic. Size-1 dims are specialised by dynamo anyway
    (rows=1 gets its own static compile), so they are left alone."""
    if STATIC_COMPILE:
        return
    for t in tensors:
        if t.shape[0] >= 2:
            torch._dynamo.maybe_mark_dynamic(t, 0)


def compiled_impl(fn: Callable, rows_args: Callable[[dict], tuple],
                  args: Callable[[dict], tuple], name: str = "torch.compile", note: str = ""):
    """An Impl calling torch.compile(fn)(*args(inputs)); rows_args(inputs) are
    the tensors whose dim 0 is the row count."""
    cfn = compiled(fn)

    def run(inputs):
        mark_rows(*rows_args(inputs))
        return cfn(*args(inputs))

    return Impl(name, run, baseline=True, note=note)


@dataclass
class OpSpec:
    """How to run, check and count one operator across a shape grid."""
    ours: Callable                  # input set -> outputs
    base: Callable                  # the plain PyTorch sequence, on tensors
    args: Callable                  # input set -> positional args of base
    rows_args: Callable             # input set -> the tensors whose dim 0 is rows
    reference: Callable             # input set -> float32 reference
    check: Callable                 # (reference, outputs) -> Check
    nbytes: Callable                # (rows, dim) -> minimal HBM bytes of one call
    base_name: str = "torch"
    inputs: dict = None             # keyword options of the family's input factory
    # False: compile the baseline per shape. For whole-tensor reductions, whose
    # dynamic-shape kernels cannot split the reduction across CTAs (measured
    # 10-30x slower than a static compile on an H200).
    dynamic_rows: bool = True


def standard_impls(spec: OpSpec) -> list:
    """hpc_ops, the baseline eager and the baseline under torch.compile."""
    cname = "torch.compile" if spec.base_name == "torch" else spec.base_name + "+compile"
    return [Impl("hpc_ops", spec.ours, baseline=False),
            Impl(spec.base_name, lambda s: spec.base(*spec.args(s))),
            compiled_impl(spec.base, spec.rows_args if spec.dynamic_rows else (lambda s: ()),
                          spec.args, name=cname)]


def randn(*shape, dtype=torch.bfloat16) -> torch.Tensor:
    """Random normal data on the GPU (never time on zeros: zeros can take
    faster paths, e.g. compressible memory or trivially exact math)."""
    return torch.randn(*shape, device="cuda", dtype=dtype)


# Case grids (BENCHMARKING.md); --quick uses the smaller ones.
HIDDEN = (2048, 4096, 7168, 8192)
HIDDEN_QUICK = (4096, 7168)
ROWS = (1, 16, 128, 1024, 4096, 16384)
ROWS_QUICK = (1, 128, 4096)


def grid(quick: bool, full_dims, quick_dims):
    """(dim, rows) pairs, dim-major so consecutive cases reuse a compile, rows
    largest first: the dynamic-rows compile of a baseline happens at its first
    call, and inductor picks tile sizes and autotunes for the row count it sees
    then. Compiled at rows=16, the same kernels ran up to 3x slower at 16384 rows
    on an H200; compiled at the largest count they match a static compile there,
    and the small counts, which are launch-bound, lose little."""
    dims = quick_dims if quick else full_dims
    rows = sorted(ROWS_QUICK if quick else ROWS, reverse=True)
    return [(d, r) for d in dims for r in rows]


def row_grid_cases(family: str, specs: dict, quick: bool, full_dims, quick_dims,
                   make_inputs: Callable, plot_name: Callable[[str], str] = lambda op: op,
                   inplace_option: str = "") -> list:
    """One Case per (op spec, hidden, rows) of the grid, for families whose
    cases are [rows, hidden] tensors (norm, quantization)."""
    out = []
    for op, spec in specs.items():
        opts = spec.inputs or {}
        for hidden, rows in grid(quick, full_dims, quick_dims):
            out.append(Case(
                family=family, op=op, label=f"h={hidden} r={rows}",
                params={"hidden": hidden, "rows": rows}, bytes=spec.nbytes(rows, hidden),
                make_inputs=make_inputs(rows, hidden, **opts),
                impls=lambda spec=spec: standard_impls(spec),
                reference=spec.reference, check=spec.check, config_dims=(hidden, rows),
                plot_group=f"{plot_name(op)} h={hidden}", plot_x=rows,
                inplace=bool(inplace_option) and opts.get(inplace_option, False)))
    return out
