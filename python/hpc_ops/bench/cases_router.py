# SPDX-License-Identifier: Apache-2.0
"""Router GEMM cases of the "gemm" family: hpc_ops.router_gemm (bf16 x,
fp32 weight as 2 or 3 bf16 parts, fp32 output) on the routers of
DeepSeek-V3 (256 experts, hidden 7168) and Hunyuan-V3 (192 experts, hidden
4096), tokens 1 .. 4096.

Baselines: cuBLAS fp32 (torch.mm on float32 with TF32 off) and cuBLAS TF32
(TF32 on), both given x already in float32 (the conversion is not timed, so
they read 2 bytes more per x element than hpc_ops does and pay nothing for it).

Correctness: float64 reference on the GPU; an element may be off by
2^-10 sum_k |x_k w_k| (loose enough for TF32). The check's detail gives the
mean absolute error over the output and its ratio to cuBLAS fp32's on the
same input (the accuracy bar: within 2x).

Bytes counted: weights P N K x 2 (hpc_ops) , x M K x 2, y M N x 4. The
ceiling for decode sizes is the bandwidth one; FLOPs 2 P M N K (the
TFLOP/s column compares with the dense BF16 rate measured in the same run).
"""
from __future__ import annotations

import math

import torch

from .common import Case, Check, Impl

ROUTERS = (("dsv3", 256, 7168), ("hy3", 192, 4096))
TOKENS = (1, 16, 64, 256, 1024, 4096)
QUICK = {("dsv3", 1), ("dsv3", 256), ("dsv3", 4096)}


def _make_inputs(parts, m, n, k):
    def make(slot):
        import hpc_ops
        x = torch.randn(m, k, device="cuda").bfloat16()
        w = torch.randn(n, k, device="cuda") * 0.02
        return {"x": x, "w": w, "x32": x.float(), "wp": hpc_ops.split_router_weight(w, parts)}
    return make


def _reference(s):
    x64, w64 = s["x"].double(), s["w"].double()
    y = x64 @ w64.T
    tol = 2.0 ** -10 * (x64.abs() @ w64.abs().T) + 1e-6
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        fp32_err = (torch.mm(s["x32"], s["w"].T).double() - y).abs().mean().item()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
    return y, tol, fp32_err


def _check(ref, out) -> Check:
    y, tol, fp32_err = ref
    if out.shape != y.shape:
        return Check(math.inf, math.inf, False, f"got {list(out.shape)}")
    diff = (out.double() - y).abs()
    finite = bool(torch.isfinite(out).all())
    max_err = diff.max().item() if finite else math.inf
    ratio = (diff / tol).max().item() if finite else math.inf
    mean = diff.mean().item()
    detail = f"mean err {mean:.3g} = {mean / max(fp32_err, 1e-30):.2f}x cuBLAS fp32's"
    return Check(max_err, ratio, finite and ratio <= 1.0, detail)


def _cublas(tf32: bool):
    def run(s):
        prev = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            return torch.mm(s["x32"], s["w"].T)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = prev
    return run


def _config(m, n, k):
    def text(sms):  # the core's own choice (router_gemm_config.cc)
        from hpc_ops import _C
        return _C.router_gemm_config(m, n, k, sms)
    return text


def cases(quick: bool, dense_rate) -> list:
    out = []
    for parts in (2, 3):
        for label, n, k in ROUTERS:
            for m in TOKENS:
                if quick and (label, m) not in QUICK:
                    continue
                params = {"tokens": m, "n": n, "k": k, "parts": parts,
                          "flops": 2 * parts * m * n * k}

                def impls(parts=parts, params=params):
                    import hpc_ops
                    params["dense_tflops"] = dense_rate("bf16")
                    return [Impl("hpc_ops", lambda s: hpc_ops.router_gemm(s["x"], s["wp"]),
                                 baseline=False),
                            Impl("cuBLAS fp32", _cublas(False)),
                            Impl("cuBLAS tf32", _cublas(True))]

                out.append(Case(
                    family="gemm", op=f"router_p{parts}", label=f"{label} m={m}", params=params,
                    bytes=parts * n * k * 2 + m * k * 2 + m * n * 4,
                    make_inputs=_make_inputs(parts, m, n, k), impls=impls,
                    reference=_reference, check=_check, config_dims=None,
                    plot_group=f"router_p{parts} {label}", plot_x=m, plot_xlabel="tokens",
                    config_text=_config(m, n, k)))
    return out
