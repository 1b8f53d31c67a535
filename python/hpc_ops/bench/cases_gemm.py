# SPDX-License-Identifier: Apache-2.0
"""Family "gemm": hpc_ops.grouped_gemm on the MoE expert projections of
DeepSeek-V3 (hidden 7168, expert intermediate 2048, 256 experts), Qwen3-235B
(4096, 1536, 128) and Qwen3-30B (2048, 768, 128), gate-up (N = 2 I, K = hidden)
and down (N = hidden, K = I), at TP8 (all experts, I / 8) and EP8 (experts / 8,
whole I), with the same number of tokens per expert (1 .. 4096; at most 64K
rows per call). The router GEMM's cases are in cases_router.py.

Ops:
  gg_fp8_row    FP8, one scale per token and per output channel, against
                torch._scaled_grouped_mm (row-wise scales; same layout).
  gg_bf16       BF16 against torch._grouped_mm.
  gg_fp8_block  FP8 with DeepSeek-V3 block scales (1x128 activations,
                128x128 weights, activation scales column-major as
                hpc_ops.quantize_fp8 emits them) against a loop over experts of
                torch.nn.functional.scaled_mm with the BlockWise1x128 /
                BlockWise128x128 recipes (cuBLASLt), where torch has them.
Inputs: contiguous layout, cu_seqlens with the tokens of each expert
together. Random FP8 codes with scales spread over 2^[-3, 1).

Correctness: float32 reference from the dequantized inputs; an element may
be off by 2e-2 |ref| + 2^-9 sum_k |x_k w_k| (bf16 output rounding plus the
FP8 accumulation error relative to the magnitudes summed).

Bytes counted: weights G N K (1 or 2 bytes), x rows T K, y T N x 2, scales
(T + G N) x 4 (per row) or (T K/128 + G N K/16384) x 4 (block). The ceiling
for decode sizes is the bandwidth one (weights dominate). FLOPs 2 T N K; the
TFLOP/s column compares with the dense GEMM rate measured in the same run and
timed like the cases (torch._scaled_mm 8192^3 per-tensor FP8, or torch.matmul
BF16; dense_rate).
"""
from __future__ import annotations

import math

import torch

from . import timing
from .common import Case, Check, Impl, _finish

FP8_DT = torch.float8_e4m3fn
MAX_ROWS = 65536

# (model, hidden, expert intermediate, experts)
MODELS = (("dsv3", 7168, 2048, 256), ("q235b", 4096, 1536, 128), ("q30b", 2048, 768, 128))
TOKENS = (4096, 512, 64, 16, 8, 1)
QUICK = {("gg_fp8_row", "q235b-tp8-up", 8), ("gg_fp8_row", "q235b-ep8-up", 64),
         ("gg_fp8_row", "dsv3-ep8-up", 16), ("gg_fp8_row", "q235b-ep8-up", 4096),
         ("gg_fp8_block", "dsv3-ep8-up", 16), ("gg_bf16", "q235b-tp8-up", 16)}

_dense = {}
DENSE_REPS, DENSE_ROUNDS = 120, 4   # as the full run times each case


def dense_rate(kind: str) -> float:
    """TFLOP/s of a dense 8192^3 GEMM measured now (FP8 per-tensor through
    torch._scaled_mm, or BF16 torch.matmul): the compute ceiling.

    Timed the way the cases are: 4 rounds of 30 calls back to back (the full
    run's reps and rounds), the median call. NOTE: FP8 GEMMs on the H200 are
    power-bound, so a short burst runs faster than sustained work: 8192^3 at
    1434 TFLOP/s over 10 calls, 1232 over 300 (BENCHMARKING.md: 1258). The
    cases run 30 replays per burst, so a 10-call ceiling put them ~14% lower
    than the same kernel's share of the sustained rate."""
    if kind not in _dense:
        n = 8192
        a = torch.randn(n, n, device="cuda")
        b = torch.randn(n, n, device="cuda")
        if kind == "fp8":
            a8, b8 = a.to(FP8_DT), b.to(FP8_DT).t()
            one = torch.ones((), device="cuda")
            fn = lambda: torch._scaled_mm(a8, b8, one, one, out_dtype=torch.bfloat16)  # noqa: E731
        else:
            a16, b16 = a.bfloat16(), b.bfloat16()
            fn = lambda: a16 @ b16  # noqa: E731
        seconds = timing.time_eager({"dense": fn}, reps=DENSE_REPS, rounds=DENSE_ROUNDS)["dense"]
        _dense[kind] = 2 * n ** 3 / seconds / 1e12
    return _dense[kind]


def projections():
    """(label, experts, N, K) for every model, TP8/EP8, gate-up/down."""
    out = []
    for name, hidden, inter, experts in MODELS:
        for mode, e, i in (("tp8", experts, inter // 8), ("ep8", experts // 8, inter)):
            out.append((f"{name}-{mode}-up", e, 2 * i, hidden))
            out.append((f"{name}-{mode}-down", e, hidden, i))
    return out


def _scales(shape):
    return torch.exp2(torch.rand(shape, device="cuda") * 4 - 3) * 0.01


def _make_inputs(op, e, m, n, k):
    def make(slot):
        t = e * m
        cu = torch.arange(0, t + 1, m, dtype=torch.int32, device="cuda")
        s = {"cu": cu}
        if op == "gg_bf16":
            s["x"] = torch.randn(t, k, device="cuda").bfloat16()
            s["w"] = torch.randn(e, n, k, device="cuda").bfloat16() * 0.05
            return s
        s["x"] = torch.randn(t, k, device="cuda").to(FP8_DT)
        s["w"] = torch.randn(e, n, k, device="cuda").to(FP8_DT)
        if op == "gg_fp8_row":
            s["xs"] = _scales((t,))
            s["ws"] = _scales((e, n))
        else:
            padded = (t + 3) // 4 * 4
            s["xs"] = _scales((k // 128, padded))[:, :t].t()  # column-major, as quantize_fp8
            s["ws"] = _scales((e, n // 128, k // 128))
        return s
    return make


def _dequant(s, op, g, lo, hi):
    x = s["x"][lo:hi].float()
    w = s["w"][g].float()
    if op == "gg_fp8_row":
        x = x * s["xs"][lo:hi, None]
        w = w * s["ws"][g][:, None]
    elif op == "gg_fp8_block":
        x = x * s["xs"][lo:hi].repeat_interleave(128, dim=1)
        w = w * s["ws"][g].repeat_interleave(128, 0).repeat_interleave(128, 1)
    return x, w


def _reference(op, e, m):
    def ref(s):
        ys, tols = [], []
        for g in range(e):
            x, w = _dequant(s, op, g, g * m, (g + 1) * m)
            y = x @ w.T
            ys.append(y)
            tols.append(2e-2 * y.abs() + 2.0 ** -9 * (x.abs() @ w.abs().T) + 1e-6)
        return torch.cat(ys), torch.cat(tols)
    return ref


def _check(ref, out) -> Check:
    y, tol = ref
    if out.dtype != torch.bfloat16 or out.shape != y.shape:
        return Check(math.inf, math.inf, False, f"got {out.dtype} {list(out.shape)}")
    return _finish((out.float() - y).abs(), tol, "y")


def _ours(op, m):
    import hpc_ops
    scaling = {"gg_bf16": None, "gg_fp8_row": "per_row", "gg_fp8_block": "block"}[op]
    if scaling is None:
        return lambda s: hpc_ops.grouped_gemm(s["x"], s["w"], cu_seqlens=s["cu"],
                                              expected_rows_per_group=m)
    return lambda s: hpc_ops.grouped_gemm(s["x"], s["w"], cu_seqlens=s["cu"], scaling=scaling,
                                          x_scale=s["xs"], w_scale=s["ws"],
                                          expected_rows_per_group=m)


def _torch_scaled_grouped(s):
    return torch._scaled_grouped_mm(s["x"], s["w"].transpose(1, 2), s["xs"], s["ws"],
                                    offs=s["cu"][1:], out_dtype=torch.bfloat16)


def _torch_grouped(s):
    return torch._grouped_mm(s["x"], s["w"].transpose(1, 2), offs=s["cu"][1:])


def _torch_block_loop(e, m):
    """Per expert: F.scaled_mm with BlockWise1x128 x BlockWise128x128 scales;
    cuBLASLt wants the token count a multiple of 4 and K/128 padded to 4 for
    the weight scales, so the inputs are prepared once per input set (not
    timed)."""
    import torch.nn.functional as F
    prepared = {}

    def run(s):
        key = id(s["x"])
        if key not in prepared:
            k = s["x"].shape[1]
            m4 = (m + 3) // 4 * 4
            kb = k // 128
            kb4 = (kb + 3) // 4 * 4
            parts = []
            for g in range(e):
                x = torch.zeros(m4, k, dtype=FP8_DT, device="cuda")
                x[:m] = s["x"][g * m:(g + 1) * m]
                xs = torch.ones(m4, kb, device="cuda")
                xs[:m] = s["xs"][g * m:(g + 1) * m]
                xs = xs.t().contiguous().t()
                ws = torch.nn.functional.pad(s["ws"][g], (0, kb4 - kb), value=1.0)
                parts.append((x, s["w"][g].t(), xs, ws.t()))
            prepared[key] = parts
        ys = [F.scaled_mm(x, wt, xs, F.ScalingType.BlockWise1x128, ws,
                          F.ScalingType.BlockWise128x128, output_dtype=torch.bfloat16)[:m]
              for x, wt, xs, ws in prepared[key]]
        return torch.cat(ys)
    return run


def _bytes(op, e, m, n, k):
    t = e * m
    el = 2 if op == "gg_bf16" else 1
    b = e * n * k * el + t * k * el + t * n * 2
    if op == "gg_fp8_row":
        b += (t + e * n) * 4
    elif op == "gg_fp8_block":
        b += (t * (k // 128) + e * (n // 128) * (k // 128)) * 4
    return b


def _config(m):
    def text(sms):  # the row tile follows expected_rows_per_group
        tile = next((t for t in (16, 32, 64, 128) if m <= t), 128)
        return f"rows_tile={tile}"
    return text


def cases(quick: bool) -> list:
    out = []
    for op in ("gg_fp8_row", "gg_bf16", "gg_fp8_block"):
        for label, e, n, k in projections():
            if op == "gg_fp8_block" and (n % 128 or k % 128):
                continue
            for m in TOKENS:
                if e * m > MAX_ROWS:
                    continue
                if op == "gg_bf16" and m not in (1, 16, 512):
                    continue
                if op == "gg_fp8_block" and m not in (1, 16, 64, 512):
                    continue
                if quick and (op, label, m) not in QUICK:
                    continue
                params = {"experts": e, "tokens_per_expert": m, "n": n, "k": k,
                          "flops": 2 * e * m * n * k}

                def impls(op=op, e=e, m=m, params=params):
                    params["dense_tflops"] = dense_rate("bf16" if op == "gg_bf16" else "fp8")
                    lst = [Impl("hpc_ops", _ours(op, m), baseline=False)]
                    if op == "gg_fp8_row":
                        lst.append(Impl("torch._scaled_grouped_mm", _torch_scaled_grouped))
                    elif op == "gg_bf16":
                        lst.append(Impl("torch._grouped_mm", _torch_grouped))
                    else:
                        lst.append(Impl("F.scaled_mm loop", _torch_block_loop(e, m),
                                        note="per-expert cuBLASLt block-scaled"))
                    return lst

                out.append(Case(
                    family="gemm", op=op, label=f"{label} m={m}", params=params,
                    bytes=_bytes(op, e, m, n, k), make_inputs=_make_inputs(op, e, m, n, k),
                    impls=impls, reference=_reference(op, e, m), check=_check,
                    config_dims=None, plot_group=f"{op} {label}", plot_x=m,
                    plot_xlabel="tokens per expert", config_text=_config(m)))
    from . import cases_router
    return out + cases_router.cases(quick, dense_rate)
