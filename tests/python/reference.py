"""Plain-torch references for the hpc_ops operators.

Everything is computed in float64 (so the reference is more accurate than the
float32 kernels it checks) from the *inputs* of an operator, never from a
kernel's output. The quantization references take the exact real-valued
result ``y`` of an operator (float64) and return the scales the kernel should
compute and the FP8 codes it should store.

Conventions (see python/hpc_ops/_quant.py):
  * scales are float32 dequantization multipliers: ``real = q.float() * scale``;
  * dynamic scales are ``max(amax, 1e-10) / 448``;
  * FP8 is float8_e4m3fn, saturating at +-448.
"""
from __future__ import annotations

import math

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0
MIN_AMAX = 1e-10
GROUP = 128

MODES = (None, "per_tensor", "per_token", "per_group")


# ----------------------------------------------------------------------------
# Operators
# ----------------------------------------------------------------------------
def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """y = x * rsqrt(mean(x^2) + eps) * weight, float64, over the last dim."""
    xd = x.double()
    inv_rms = torch.rsqrt(xd.square().mean(dim=-1, keepdim=True) + eps)
    return xd * inv_rms * weight.double()


def add_residual_ref(x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """bf16(x + residual): the sum of two bf16 values in float32, rounded once to bf16."""
    return (x.float() + residual.float()).to(torch.bfloat16)


def add_rms_norm_ref(x, residual, weight, eps: float = 1e-6):
    """(y, residual_out): residual_out = bf16(x + residual) (exact, bit for bit),
    y = rms_norm of the *rounded* residual (float64)."""
    residual_out = add_residual_ref(x, residual)
    return rms_norm_ref(residual_out, weight, eps), residual_out


def allreduce_sum_ref(xs) -> torch.Tensor:
    """bf16 of the float32 sum of the ranks' bf16 tensors, added in rank order
    (what every rank of the fused all-reduce computes, bit for bit)."""
    acc = torch.zeros_like(xs[0], dtype=torch.float32)
    for x in xs:
        acc = acc + x.float()
    return acc.to(torch.bfloat16)


def silu_ref(g: torch.Tensor) -> torch.Tensor:
    g = g.double()
    return g / (1.0 + torch.exp(-g))


def gelu_tanh_ref(g: torch.Tensor) -> torch.Tensor:
    g = g.double()
    k = math.sqrt(2.0 / math.pi)
    return 0.5 * g * (1.0 + torch.tanh(k * (g + 0.044715 * g * g * g)))


ACTIVATIONS = {"silu": silu_ref, "gelu_tanh": gelu_tanh_ref}


def act_and_mul_ref(x: torch.Tensor, act: str) -> torch.Tensor:
    """act(gate) * up for rows laid out [gate (C) | up (C)], float64."""
    c = x.shape[-1] // 2
    gate, up = x[..., :c], x[..., c:]
    return ACTIVATIONS[act](gate) * up.double()


def act_and_mul_fp32_error(x: torch.Tensor, act: str) -> torch.Tensor:
    """An absolute bound on the error that float32 evaluation of the documented
    formulas legitimately makes, per output element (float64).

    silu(g) = g / (1 + exp(-g)): exp and the division may be the fast
    intrinsics; exp's error grows with |g| (CUDA documents 2 + 1.173 |g|
    ulps), the division adds 2 ulps, so a relative (6 + 1.5 |g|) * 2**-23.
    gelu_tanh(g) = 0.5 g (1 + tanh(.)): evaluated literally, for g below about
    -2, 1 + tanh(.) cancels and carries an absolute error of a few float32 ulps
    of 1, i.e. |0.5 g up| * 2**-21 in the output; evaluated as the equal
    g * sigmoid(2 u) with the fast exp, the error is relative and far smaller.
    The bound admits both.
    """
    c = x.shape[-1] // 2
    g, up = x[..., :c].double(), x[..., c:].double()
    if act == "silu":
        return (act_and_mul_ref(x, act).abs() * (6.0 + 1.5 * g.abs()) * 2.0 ** -23)
    if act == "gelu_tanh":
        return (0.5 * g * up).abs() * 2.0 ** -21 + act_and_mul_ref(x, act).abs() * 2.0 ** -21
    raise ValueError(act)


# ----------------------------------------------------------------------------
# FP8 quantization
# ----------------------------------------------------------------------------
def _dynamic_scale(amax: torch.Tensor) -> torch.Tensor:
    """max(amax, 1e-10) / 448 as float32; NaN stays NaN (clamp_min keeps NaN)."""
    return (amax.double().clamp_min(MIN_AMAX) / FP8_MAX).float()


def num_groups(n: int) -> int:
    return (n + GROUP - 1) // GROUP


def per_tensor_scale_ref(y: torch.Tensor) -> torch.Tensor:
    """Dynamic per-tensor scale, shape [1]."""
    amax = y.abs().amax() if y.numel() else torch.zeros((), dtype=y.dtype, device=y.device)
    return _dynamic_scale(amax).reshape(1)


def per_token_scale_ref(y: torch.Tensor) -> torch.Tensor:
    """[..., rows, 1]: one scale per row (last dim reduced)."""
    if y.shape[-1] == 0:
        return torch.full((*y.shape[:-1], 1), MIN_AMAX / FP8_MAX, device=y.device)
    return _dynamic_scale(y.abs().amax(dim=-1, keepdim=True))


def per_group_scale_ref(y: torch.Tensor) -> torch.Tensor:
    """[..., rows, ceil(n/128)]: one scale per 1x128 group; the last group may be
    partial (it is padded with zeros, which do not change an absolute maximum)."""
    n = y.shape[-1]
    g = num_groups(n)
    pad = g * GROUP - n
    padded = torch.nn.functional.pad(y.abs(), (0, pad)) if pad else y.abs()
    grouped = padded.reshape(*y.shape[:-1], g, GROUP)
    return _dynamic_scale(grouped.amax(dim=-1))


def expand_scale(scale: torch.Tensor, mode: str, shape) -> torch.Tensor:
    """Broadcast a scale tensor of `mode` to the full [..., n] shape (float64)."""
    n = shape[-1]
    s = scale.double()
    if mode == "per_tensor":
        return s.reshape(()).expand(shape)
    if mode == "per_token":
        return s.expand(shape)
    if mode == "per_group":
        return s.repeat_interleave(GROUP, dim=-1)[..., :n].expand(shape)
    raise ValueError(mode)


def to_fp8_saturating(v: torch.Tensor) -> torch.Tensor:
    """Round to float8_e4m3fn (nearest even) with saturation to +-448, as
    cvt.rn.satfinite does. (A plain torch cast turns overflow into NaN.)
    NaN stays NaN."""
    v = v.float()
    return torch.where(v.isnan(), v, v.clamp(-FP8_MAX, FP8_MAX)).to(FP8)


def scale_ref(y: torch.Tensor, mode: str, static_scale: torch.Tensor | None = None):
    """The scale tensor a kernel should produce for result y (static: the given one)."""
    if mode == "per_tensor":
        if static_scale is not None:
            return static_scale.float().reshape(1)
        return per_tensor_scale_ref(y)
    if mode == "per_token":
        return per_token_scale_ref(y)
    if mode == "per_group":
        return per_group_scale_ref(y)
    raise ValueError(mode)


def quantize_ref(y: torch.Tensor, mode: str, scale: torch.Tensor):
    """FP8 codes of y for the given scale tensor (of `mode`'s shape):
    sat(y / scale) rounded to e4m3. Pass the kernel's own scale to compare codes
    without the (tiny) scale difference, or scale_ref(y, mode) for a full reference."""
    s = expand_scale(scale, mode, y.shape)
    return to_fp8_saturating(y.double() / s)


def dequantize(q: torch.Tensor, scale: torch.Tensor, mode: str) -> torch.Tensor:
    """q.float() * scale, broadcast, float64."""
    return q.double() * expand_scale(scale, mode, q.shape)


def saturate_ref(y: torch.Tensor, scale: torch.Tensor, mode: str) -> torch.Tensor:
    """y limited to what FP8 can represent with that scale: +-448 * scale."""
    limit = FP8_MAX * expand_scale(scale, mode, y.shape)
    return torch.maximum(torch.minimum(y.double(), limit), -limit)
