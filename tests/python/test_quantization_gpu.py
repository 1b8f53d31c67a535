"""GPU tests of hpc_ops.quantize_fp8 (bf16 / fp16 / fp32 input to float8_e4m3fn).

Modes: static per-tensor (scale=), dynamic per-tensor (two passes: amax, then
quantize), per-token and per-group (1x128, last group may be partial). The
exact input is the reference, so scales must match to 1e-5. Also: saturation
with a static scale, all-zero rows and groups (floor scale 1e-10/448), and NaN
propagation into the scales (a NaN input must never yield a finite scale).
"""
from __future__ import annotations

import pytest
import torch

import hpc_ops
import reference as ref
from hpc_test_utils import MAX_COLS, WIDE_COLS, needs_family, poisoned, scale_storage, varied
from tolerances import SCALE_RTOL_EXACT, assert_bits_equal, assert_fp8_close

pytestmark = [pytest.mark.gpu, needs_family("quantization")]

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# (mode passed to quantize_fp8, whether a static scale is given)
MODES = {"per_tensor_static": ("per_tensor", True), "per_tensor_dynamic": ("per_tensor", False),
         "per_token": ("per_token", False), "per_group": ("per_group", False)}
ROWS = [0, 1, 7, 4097]
COLS = [8, 520, 4096, 8200]
FLOOR = torch.tensor(ref.MIN_AMAX / ref.FP8_MAX, dtype=torch.float32).item()


def _scale_out(mode, static, rows, n, layout="mn_major"):
    if mode == "per_tensor":
        return None if static else poisoned((1,), torch.float32)
    return scale_storage(mode, (rows,), n, layout)


def _static_scale(x, clip_at=0.8):
    amax = float(x.float().abs().amax()) if x.numel() else 1.0
    return torch.tensor([amax * clip_at / ref.FP8_MAX], dtype=torch.float32, device="cuda")


def check_quantized(q, scale, x, mode, static, what="q"):
    """Against the exact input; an empty tensor's dynamic per-tensor scale may be 0
    (left as zeroed) or the floor 1e-10/448."""
    if x.numel() == 0 and mode == "per_tensor" and static is None:
        assert q.numel() == 0 and scale.numel() == 1
        assert float(scale) in (0.0, FLOOR), f"empty tensor: dynamic scale {float(scale)}"
        return
    assert_fp8_close(q, scale, x.double(), mode, static_scale=static,
                     scale_rtol=SCALE_RTOL_EXACT, what=what)


@pytest.mark.parametrize("mode_id", list(MODES))
@pytest.mark.parametrize("n", COLS)
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("dtype_id", list(DTYPES))
def test_quantize_fp8(gen, dtype_id, rows, n, mode_id):
    mode, is_static = MODES[mode_id]
    x = varied(gen, rows, n, dtype=DTYPES[dtype_id], scale=3.0)
    x_before = x.clone()
    static = _static_scale(x) if is_static else None
    out = poisoned((rows, n), ref.FP8)
    scale_out = _scale_out(mode, is_static, rows, n)

    q, scale = hpc_ops.quantize_fp8(x, mode, scale=static, out=out, scale_out=scale_out)

    assert q is out
    assert scale is (static if is_static else scale_out)
    check_quantized(q, scale, x, mode, static)
    assert_bits_equal(x, x_before, "x (an input) was modified")


@pytest.mark.parametrize("mode_id", list(MODES))
@pytest.mark.parametrize("dtype_id", list(DTYPES))
def test_default_outputs(gen, dtype_id, mode_id):
    mode, is_static = MODES[mode_id]
    rows, n = 13, 520
    x = varied(gen, rows, n, dtype=DTYPES[dtype_id])
    static = _static_scale(x) if is_static else None
    q, scale = hpc_ops.quantize_fp8(x, mode, scale=static)
    assert q.dtype == ref.FP8 and tuple(q.shape) == (rows, n)
    check_quantized(q, scale, x, mode, static)
    if mode == "per_tensor":
        assert scale.numel() == 1 and scale.dtype == torch.float32
    elif mode == "per_token":
        assert tuple(scale.shape) == (rows, 1)
    else:
        assert tuple(scale.shape) == (rows, ref.num_groups(n))
        assert scale.stride() == (1, 16), "per-group scales must be MN-major, rows padded to 4"


def test_default_mode_is_per_token(gen):
    x = varied(gen, 9, 4096)
    q, scale = hpc_ops.quantize_fp8(x)
    assert tuple(scale.shape) == (9, 1)
    check_quantized(q, scale, x, "per_token", None)


@pytest.mark.parametrize("mode_id", list(MODES))
@pytest.mark.parametrize("dtype_id", list(DTYPES))
@pytest.mark.parametrize("n", WIDE_COLS)
def test_wide_rows(gen, n, dtype_id, mode_id):
    mode, is_static = MODES[mode_id]
    rows = 3
    x = varied(gen, rows, n, dtype=DTYPES[dtype_id])
    static = _static_scale(x) if is_static else None
    q, scale = hpc_ops.quantize_fp8(x, mode, scale=static, out=poisoned((rows, n), ref.FP8),
                                    scale_out=_scale_out(mode, is_static, rows, n))
    check_quantized(q, scale, x, mode, static)


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("mode", ["per_token", "per_group"])
def test_scale_out_any_strides(gen, mode, layout):
    rows, n = 29, 8200
    x = varied(gen, rows, n, dtype=torch.float32)
    scale_out = _scale_out(mode, False, rows, n, layout)
    q, scale = hpc_ops.quantize_fp8(x, mode, scale_out=scale_out)
    assert scale is scale_out
    check_quantized(q, scale, x, mode, None)


@pytest.mark.parametrize("mode_id", list(MODES))
@pytest.mark.parametrize("dtype_id", list(DTYPES))
def test_strided_rows(gen, dtype_id, mode_id):
    """x and out as column slices of wider buffers; columns past n untouched."""
    mode, is_static = MODES[mode_id]
    rows, n = 37, 520
    x = varied(gen, rows, n + 40, dtype=DTYPES[dtype_id])[:, 8:n + 8]
    out_buf = poisoned((rows, n + 24), ref.FP8)
    out = out_buf[:, 8:n + 8]
    static = _static_scale(x) if is_static else None
    q, scale = hpc_ops.quantize_fp8(x, mode, scale=static, out=out,
                                    scale_out=_scale_out(mode, is_static, rows, n))
    check_quantized(q, scale, x, mode, static)
    for outside in (out_buf[:, :8], out_buf[:, n + 8:]):
        assert bool(outside.float().isnan().all()), "out was written outside its columns"


@pytest.mark.parametrize("mode_id", list(MODES))
def test_three_dim_input(gen, mode_id):
    mode, is_static = MODES[mode_id]
    x = varied(gen, 2, 3, 520, dtype=torch.float32)
    static = _static_scale(x) if is_static else None
    q, scale = hpc_ops.quantize_fp8(x, mode, scale=static)
    assert tuple(q.shape) == (2, 3, 520)
    check_quantized(q.reshape(6, 520), scale, x.reshape(6, 520), mode, static)


# ----------------------------------------------------------------------------
# Saturation, zeros, NaN
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype_id", list(DTYPES))
def test_static_scale_saturates(gen, dtype_id):
    """Values beyond 448 * scale saturate to +-448 (never NaN); a 0-d scale works."""
    dtype = DTYPES[dtype_id]
    rows, n = 64, 4096
    x = varied(gen, rows, n, dtype=torch.float32, scale=300.0).clamp(-6e4, 6e4).to(dtype)
    x[0, :8] = torch.tensor([1e4, -1e4, 449, -449, 448, -448, 5000, -60000], dtype=dtype)
    scale = torch.tensor(1.0, dtype=torch.float32, device="cuda")  # 0-d
    q, s = hpc_ops.quantize_fp8(x, "per_tensor", scale=scale, out=poisoned((rows, n), ref.FP8))
    assert s is scale
    check_quantized(q, s, x, "per_tensor", scale)
    qf, xd = q.float(), x.double()
    assert not bool(qf.isnan().any())
    beyond = xd.abs() >= 464  # rounds past the largest finite e4m3 value
    assert bool(beyond.any())
    assert bool((qf[beyond] == 448 * xd[beyond].sign()).all())
    assert qf[0, :8].tolist() == [448, -448, 448, -448, 448, -448, 448, -448]


@pytest.mark.parametrize("mode_id", list(MODES))
@pytest.mark.parametrize("dtype_id", list(DTYPES))
def test_zero_rows_and_groups(gen, dtype_id, mode_id):
    """All-zero rows / groups: zero codes and the floor scale 1e-10/448, all finite."""
    mode, is_static = MODES[mode_id]
    rows, n = 8, 520
    x = varied(gen, rows, n, dtype=DTYPES[dtype_id])
    x[2] = 0
    x[5, 128:256] = 0   # one zero group
    x[6, 512:] = 0      # the partial last group
    static = _static_scale(x) if is_static else None
    q, scale = hpc_ops.quantize_fp8(x, mode, scale=static, out=poisoned((rows, n), ref.FP8),
                                    scale_out=_scale_out(mode, is_static, rows, n))
    check_quantized(q, scale, x, mode, static)
    assert bool((q[2].float() == 0).all())
    if mode == "per_token":
        assert float(scale[2, 0]) == pytest.approx(FLOOR, rel=1e-6)
    if mode == "per_group":
        for r, g in [(2, 0), (2, 4), (5, 1), (6, 4)]:
            assert float(scale[r, g]) == pytest.approx(FLOOR, rel=1e-6), (r, g)


@pytest.mark.parametrize("dtype_id", list(DTYPES))
def test_all_zero_tensor_dynamic(gen, dtype_id):
    x = torch.zeros(5, 4096, dtype=DTYPES[dtype_id], device="cuda")
    q, scale = hpc_ops.quantize_fp8(x, "per_tensor", scale_out=poisoned((1,), torch.float32),
                                    out=poisoned((5, 4096), ref.FP8))
    assert float(scale) == pytest.approx(FLOOR, rel=1e-6)
    assert bool((q.float() == 0).all())


@pytest.mark.parametrize("n", [520, 4096, MAX_COLS])
@pytest.mark.parametrize("dtype_id", list(DTYPES))
def test_nan_gives_nan_scale(gen, dtype_id, n):
    """A NaN in a row gives a NaN scale for that row (per-token), for its group
    (per-group) or for the tensor (dynamic per-tensor) - never a finite scale.
    The other rows and groups are unaffected."""
    dtype = DTYPES[dtype_id]
    rows = 6
    x = varied(gen, rows, n, dtype=dtype)
    nan_col = n - 3  # in the last (partial when n % 128) group
    x[1, nan_col] = float("nan")
    x[4, 0] = float("nan")
    nan_rows = [1, 4]
    ok_rows = [0, 2, 3, 5]

    q, scale = hpc_ops.quantize_fp8(x, "per_token", scale_out=poisoned((rows, 1), torch.float32))
    assert bool(scale[nan_rows].isnan().all()), f"per-token scales of NaN rows: {scale.flatten()}"
    check_quantized(q[ok_rows], scale[ok_rows], x[ok_rows], "per_token", None)

    q, scale = hpc_ops.quantize_fp8(x, "per_group")
    g_nan = nan_col // ref.GROUP
    assert bool(scale[1, g_nan].isnan()) and bool(scale[4, 0].isnan())
    finite_groups = torch.ones_like(scale, dtype=torch.bool)
    finite_groups[1, g_nan] = False
    finite_groups[4, 0] = False
    assert bool(scale[finite_groups].isfinite().all()), "a NaN leaked into another group's scale"
    check_quantized(q[ok_rows], scale[ok_rows], x[ok_rows], "per_group", None)

    q, scale = hpc_ops.quantize_fp8(x, "per_tensor", scale_out=poisoned((1,), torch.float32))
    assert bool(scale.isnan().all()), f"dynamic per-tensor scale {float(scale)} with NaN input"


def test_nan_single_row_dynamic_per_tensor(gen):
    """The dynamic per-tensor amax keeps NaN whichever row holds it and however
    large the other values are."""
    x = varied(gen, 4097, 520, dtype=torch.float32, scale=1e30)
    x[4096, 7] = float("nan")
    _, scale = hpc_ops.quantize_fp8(x, "per_tensor")
    assert bool(scale.isnan().all())


@pytest.mark.parametrize("dtype_id", list(DTYPES))
def test_repeated_dynamic_per_tensor_resets_scale(gen, dtype_id):
    """The dynamic scale is recomputed (zeroed first), not maxed with a previous value."""
    dtype = DTYPES[dtype_id]
    scale_out = torch.tensor([1000.0], device="cuda")
    big = varied(gen, 7, 520, dtype=dtype, scale=100.0)
    small = varied(gen, 7, 520, dtype=dtype, scale=0.01)
    hpc_ops.quantize_fp8(big, "per_tensor", scale_out=scale_out)
    q, scale = hpc_ops.quantize_fp8(small, "per_tensor", scale_out=scale_out)
    check_quantized(q, scale, small, "per_tensor", None)
