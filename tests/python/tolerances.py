"""Tolerances and comparison helpers for kernel outputs against reference.py.

bfloat16 outputs
    The kernels compute in float32 and round once to bf16 (8 significant
    bits, unit roundoff 2**-8). The float64 reference rounded to bf16 can
    differ from the kernel's value by one ulp where the exact value sits near a
    rounding boundary, so the elementwise bound is 2 ulps (rtol 1.6e-2 ~
    2 * 2**-7) plus a tiny atol. Because that bound alone would let a
    consistently mis-rounding kernel through, the fraction of elements that
    are not bit-equal to the reference rounded to bf16 must also be tiny.

float8_e4m3fn outputs
    e4m3 has 3 mantissa bits: one rounding is up to 1/16 relative, a one-code
    disagreement at a rounding boundary up to 1/8. Elementwise:
        |q * scale - sat(y)| <= 0.13 * |sat(y)| + 2**-6 * scale
    (the second term covers the subnormal range), where sat(y) clamps y to
    +-448 * scale. Scales must match the reference scales (computed from the
    float64 y) to a relative 1e-5 when y is the exact input (quantize_fp8) and
    1e-4 when y is the result of float32 math (norms, activations). Codes are
    compared with the codes the reference gives *with the kernel's scale*; the
    fraction that differ must be tiny.

Every check also requires finite outputs: tests fill out= buffers with NaN
(bf16), the NaN byte 0x7F (fp8) and NaN scales before the call, so a NaN left
over means an element that was never written.
"""
from __future__ import annotations

import torch

import reference as ref

BF16_RTOL = 1.6e-2
BF16_ATOL = 1e-5

FP8_REL = 0.13
FP8_ABS_IN_SCALES = 2.0 ** -6

SCALE_RTOL_EXACT = 1e-5    # y is the operator's input (quantize_fp8)
SCALE_RTOL_COMPUTED = 1e-4  # y comes out of float32 math (norms, activations)

# At most this fraction of elements may differ from the correctly rounded
# reference (never fewer than MIN_ALLOWED_MISMATCHES elements).
MAX_MISMATCH_FRACTION = 0.01
MIN_ALLOWED_MISMATCHES = 2


def _allowed_mismatches(numel: int) -> int:
    return max(MIN_ALLOWED_MISMATCHES, int(MAX_MISMATCH_FRACTION * numel))


def _first_bad(mask: torch.Tensor):
    return tuple(int(i) for i in mask.nonzero()[0].tolist())


def assert_all_finite(t: torch.Tensor, what: str) -> None:
    """No NaN/inf (for fp8: no NaN code 0x7F/0xFF)."""
    if t.numel() == 0:
        return
    finite = torch.isfinite(t.float())
    if not bool(finite.all()):
        bad = ~finite
        raise AssertionError(f"{what}: {int(bad.sum())} of {t.numel()} elements are not finite "
                             f"(never written, or NaN produced); first at {_first_bad(bad)}")


def _counted(ref_err, magnitude: torch.Tensor, rel: float):
    """Elements whose correctly rounded value is well defined: those where the
    allowed implementation error ref_err is below rel * magnitude."""
    if ref_err is None:
        return torch.ones_like(magnitude, dtype=torch.bool)
    return ref_err <= rel * magnitude


def assert_bf16_close(out: torch.Tensor, expected: torch.Tensor, what: str = "out",
                      ref_err: torch.Tensor | None = None) -> None:
    """out (bfloat16) against a float64/float32 reference of the same shape.

    ref_err: optional per-element absolute error that the float32 evaluation
    of the operator's formula may legitimately carry (see
    reference.act_and_mul_fp32_error); it widens the bound, and elements where
    it is not negligible are left out of the rounding (mismatch) count.
    """
    assert out.dtype == torch.bfloat16, f"{what}: dtype {out.dtype}, expected bfloat16"
    assert tuple(out.shape) == tuple(expected.shape), \
        f"{what}: shape {tuple(out.shape)}, expected {tuple(expected.shape)}"
    if out.numel() == 0:
        return
    assert_all_finite(out, what)
    expected = expected.double()
    got = out.double()
    bound = BF16_ATOL + BF16_RTOL * expected.abs()
    if ref_err is not None:
        bound = bound + ref_err
    bad = (got - expected).abs() > bound
    if bool(bad.any()):
        i = _first_bad(bad)
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {out.numel()} elements are off by more than "
            f"{BF16_ATOL} + {BF16_RTOL} * |expected|; first at {i}: got {float(got[i])}, "
            f"expected {float(expected[i])}; largest error {float((got - expected).abs().max())}")
    rounded = expected.float().to(torch.bfloat16)
    counted = _counted(ref_err, expected.abs(), 2.0 ** -16)
    mismatches = int(((out != rounded) & counted).sum())
    allowed = _allowed_mismatches(int(counted.sum()))
    assert mismatches <= allowed, (
        f"{what}: {mismatches} of {int(counted.sum())} elements differ from the correctly rounded "
        f"reference (allowed {allowed}): a systematic rounding or math error")


def assert_bits_equal(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    """Bit-for-bit equality (NaN payloads included)."""
    assert a.dtype == b.dtype and tuple(a.shape) == tuple(b.shape), \
        f"{what}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
    as_int = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    differ = a.view(as_int) != b.view(as_int)
    if bool(differ.any()):
        raise AssertionError(f"{what}: {int(differ.sum())} of {a.numel()} elements differ "
                             f"bit-wise; first at {_first_bad(differ)}")


def assert_scales_close(scale: torch.Tensor, expected: torch.Tensor, rtol: float,
                        what: str = "scale") -> None:
    assert scale.dtype == torch.float32, f"{what}: dtype {scale.dtype}, expected float32"
    assert scale.numel() == expected.numel(), \
        f"{what}: shape {tuple(scale.shape)}, expected {tuple(expected.shape)}"
    if scale.numel() == 0:
        return
    assert_all_finite(scale, what)
    assert bool((scale > 0).all()), f"{what}: scales must be positive"
    torch.testing.assert_close(scale.reshape(expected.shape).double(), expected.double(),
                               rtol=rtol, atol=0.0, msg=lambda m: f"{what}: {m}")


def assert_fp8_close(q: torch.Tensor, scale: torch.Tensor, y: torch.Tensor, mode: str, *,
                     static_scale: torch.Tensor | None = None,
                     scale_rtol: float = SCALE_RTOL_COMPUTED, what: str = "out",
                     ref_err: torch.Tensor | None = None) -> None:
    """q (float8_e4m3fn) and scale (as returned by hpc_ops) against the exact result y.

    mode: "per_tensor" (static_scale given, or dynamic), "per_token" or "per_group".
    ref_err: as in assert_bf16_close.
    """
    assert q.dtype == ref.FP8, f"{what}: dtype {q.dtype}, expected float8_e4m3fn"
    assert tuple(q.shape) == tuple(y.shape), \
        f"{what}: shape {tuple(q.shape)}, expected {tuple(y.shape)}"
    y = y.double()
    expected_scale = ref.scale_ref(y, mode, static_scale)
    if mode != "per_tensor":
        assert tuple(scale.shape) == tuple(expected_scale.shape), \
            f"{what}: scale shape {tuple(scale.shape)}, expected {tuple(expected_scale.shape)}"
    assert_scales_close(scale, expected_scale, scale_rtol, what=f"{what} scale")
    if q.numel() == 0:
        return
    assert_all_finite(q, what)
    scale = scale.reshape(expected_scale.shape)

    # Elementwise bound on the dequantized values.
    deq = ref.dequantize(q, scale, mode)
    target = ref.saturate_ref(y, scale, mode)
    full_scale = ref.expand_scale(scale, mode, y.shape)
    bound = FP8_REL * target.abs() + FP8_ABS_IN_SCALES * full_scale
    if ref_err is not None:
        bound = bound + 1.25 * ref_err
    err = (deq - target).abs()
    bad = err > bound
    if bool(bad.any()):
        i = _first_bad(bad)
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {q.numel()} dequantized values are off; first at {i}: "
            f"q*scale = {float(deq[i])}, expected {float(target[i])} (y = {float(y[i])}, "
            f"scale = {float(full_scale[i])})")

    # Codes: nearly all equal to the correctly rounded codes for the kernel's scale.
    expected_q = ref.quantize_ref(y, mode, scale)
    counted = _counted(ref_err, torch.maximum(y.abs(), full_scale * 2.0 ** -6), 2.0 ** -12)
    mismatches = int(((expected_q.float() != q.float()) & counted).sum())
    allowed = _allowed_mismatches(int(counted.sum()))
    assert mismatches <= allowed, (
        f"{what}: {mismatches} of {int(counted.sum())} FP8 codes differ from the correctly "
        f"rounded codes (allowed {allowed}): a systematic rounding or scaling error")


def assert_output_close(result, y: torch.Tensor, mode, *, static_scale=None,
                        scale_rtol: float = SCALE_RTOL_COMPUTED, what: str = "out",
                        ref_err: torch.Tensor | None = None) -> None:
    """Dispatch on mode: None -> result is a bf16 tensor; otherwise (q, scale)."""
    if mode is None:
        assert_bf16_close(result, y, what, ref_err=ref_err)
    else:
        q, scale = result
        assert_fp8_close(q, scale, y, mode, static_scale=static_scale, scale_rtol=scale_rtol,
                         what=what, ref_err=ref_err)
