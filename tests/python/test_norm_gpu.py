"""GPU tests of hpc_ops.rms_norm and hpc_ops.fused_add_rms_norm.

Every call writes into poisoned out= / residual_out= / scale_out= buffers, so an
element that is not written fails the finiteness checks. Results are compared
with the float64 references of reference.py using the rules of tolerances.py;
the residual written by fused_add_rms_norm must be bit-exact (one float32 add,
one rounding to bf16).
"""
from __future__ import annotations

import pytest
import torch

import hpc_ops
import reference as ref
from hpc_test_utils import (WIDE_COLS, needs_family, norm_weight, poison_, poisoned, poisoned_out,
                            quant_id, scale_storage, static_scale_for, varied)
from tolerances import assert_bits_equal, assert_output_close

pytestmark = [pytest.mark.gpu, needs_family("norm")]

BF16 = torch.bfloat16
HIDDEN = [8, 520, 4096, 5120, 7168, 8200]
ROWS = [0, 1, 7, 4097]
MODES = list(ref.MODES)


def _expected_scale(mode, static, scale_out):
    return static if mode == "per_tensor" else scale_out


# ----------------------------------------------------------------------------
# Sweeps
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES, ids=quant_id)
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_rms_norm(gen, hidden, rows, mode):
    x = varied(gen, rows, hidden)
    w = norm_weight(gen, hidden)
    x_before = x.clone()
    y = ref.rms_norm_ref(x, w)
    # clip_at 0.8: |y| above 0.8 * amax saturates with the static scale.
    static = static_scale_for(y, clip_at=0.8) if mode == "per_tensor" else None
    out = poisoned_out((rows, hidden), mode)
    scale_out = scale_storage(mode, (rows,), hidden)

    result = hpc_ops.rms_norm(x, w, quant=mode, scale=static, out=out, scale_out=scale_out)

    if mode is None:
        assert result is out
    else:
        assert result[0] is out and result[1] is _expected_scale(mode, static, scale_out)
    assert_output_close(result, y, mode, static_scale=static)
    assert_bits_equal(x, x_before, "x (an input) was modified")


@pytest.mark.parametrize("mode", MODES, ids=quant_id)
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_fused_add_rms_norm(gen, hidden, rows, mode):
    x = varied(gen, rows, hidden, scale=0.5)
    residual = varied(gen, rows, hidden)
    w = norm_weight(gen, hidden)
    x_before, residual_before = x.clone(), residual.clone()
    y, residual_sum = ref.add_rms_norm_ref(x, residual, w)
    static = static_scale_for(y, clip_at=0.8) if mode == "per_tensor" else None
    out = poisoned_out((rows, hidden), mode)
    residual_out = poisoned((rows, hidden), BF16)
    scale_out = scale_storage(mode, (rows,), hidden)

    result = hpc_ops.fused_add_rms_norm(x, residual, w, quant=mode, scale=static, out=out,
                                        residual_out=residual_out, scale_out=scale_out)

    if mode is None:
        o, r = result
        assert o is out
        assert_output_close(o, y, mode)
    else:
        o, r, s = result
        assert o is out and s is _expected_scale(mode, static, scale_out)
        assert_output_close((o, s), y, mode, static_scale=static)
    assert r is residual_out
    assert_bits_equal(r, residual_sum, "residual_out vs bf16(x + residual)")
    assert_bits_equal(x, x_before, "x (an input) was modified")
    assert_bits_equal(residual, residual_before, "residual (an input) was modified")


@pytest.mark.parametrize("mode", [None, "per_token", "per_group"], ids=quant_id)
@pytest.mark.parametrize("rows", [1, 3, 300])
@pytest.mark.parametrize("hidden", WIDE_COLS)
def test_rms_norm_wide_rows(gen, hidden, rows, mode):
    """Rows held by 8 and 16 vectors per thread, up to the widest supported row."""
    x = varied(gen, rows, hidden)
    w = norm_weight(gen, hidden)
    y = ref.rms_norm_ref(x, w)
    out = poisoned_out((rows, hidden), mode)
    scale_out = scale_storage(mode, (rows,), hidden)
    result = hpc_ops.rms_norm(x, w, quant=mode, out=out, scale_out=scale_out)
    assert_output_close(result, y, mode)

    residual = varied(gen, rows, hidden)
    y2, residual_sum = ref.add_rms_norm_ref(x, residual, w)
    result = hpc_ops.fused_add_rms_norm(x, residual, w, quant=mode)
    assert_bits_equal(result[1], residual_sum, "residual_out")
    assert_output_close(result[0] if mode is None else (result[0], result[2]), y2, mode)


@pytest.mark.parametrize("mode", MODES, ids=quant_id)
@pytest.mark.parametrize("hidden,rows", [(8, 5), (520, 7), (7168, 33)])
def test_default_outputs(gen, hidden, rows, mode):
    """Outputs allocated by hpc_ops: dtype, shape and (per-group) MN-major scale layout."""
    x = varied(gen, rows, hidden)
    residual = varied(gen, rows, hidden)
    w = norm_weight(gen, hidden)
    y = ref.rms_norm_ref(x, w)
    static = static_scale_for(y) if mode == "per_tensor" else None
    result = hpc_ops.rms_norm(x, w, quant=mode, scale=static)
    y2, residual_sum = ref.add_rms_norm_ref(x, residual, w)
    static2 = static_scale_for(y2) if mode == "per_tensor" else None
    fused = hpc_ops.fused_add_rms_norm(x, residual, w, quant=mode, scale=static2)
    assert_bits_equal(fused[1], residual_sum, "residual_out")
    if mode is None:
        assert isinstance(result, torch.Tensor) and len(fused) == 2
        assert_output_close(result, y, mode)
        assert_output_close(fused[0], y2, mode)
        return
    assert len(result) == 2 and len(fused) == 3
    q, scale = result
    assert q.dtype == torch.float8_e4m3fn and tuple(q.shape) == (rows, hidden)
    assert_output_close(result, y, mode, static_scale=static)
    assert_output_close((fused[0], fused[2]), y2, mode, static_scale=static2)
    if mode == "per_tensor":
        assert scale is static and fused[2] is static2
    elif mode == "per_token":
        assert tuple(scale.shape) == (rows, 1)
    else:
        padded = (rows + 3) // 4 * 4
        assert tuple(scale.shape) == (rows, ref.num_groups(hidden))
        assert scale.stride() == (1, padded), "per-group scales must be MN-major, rows padded to 4"
        assert fused[2].stride() == (1, padded)


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("mode", ["per_token", "per_group"])
def test_scale_out_any_strides(gen, mode, layout):
    rows, hidden = 37, 8200
    x = varied(gen, rows, hidden)
    residual = varied(gen, rows, hidden)
    w = norm_weight(gen, hidden)
    scale_out = scale_storage(mode, (rows,), hidden, layout)
    base = scale_out._base if scale_out._base is not None else scale_out
    q, s = hpc_ops.rms_norm(x, w, quant=mode, scale_out=scale_out)
    assert s is scale_out
    assert_output_close((q, s), ref.rms_norm_ref(x, w), mode)
    if layout == "strided":  # the gaps between scales stay untouched
        gaps = torch.ones_like(base, dtype=torch.bool)
        gaps.as_strided(s.shape, s.stride(), s.storage_offset()).fill_(False)
        assert bool(base[gaps].isnan().all()), "a scale was written outside scale_out"

    scale_out = scale_storage(mode, (rows,), hidden, layout)
    y2, residual_sum = ref.add_rms_norm_ref(x, residual, w)
    q, r, s = hpc_ops.fused_add_rms_norm(x, residual, w, quant=mode, scale_out=scale_out)
    assert s is scale_out
    assert_bits_equal(r, residual_sum, "residual_out")
    assert_output_close((q, s), y2, mode)


# ----------------------------------------------------------------------------
# Layouts: strided rows, 3-D inputs, in-place updates
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES, ids=quant_id)
@pytest.mark.parametrize("hidden,rows", [(520, 7), (4096, 300), (8200, 3)])
def test_strided_rows(gen, hidden, rows, mode):
    """x, residual, out and residual_out as column slices of wider buffers:
    results as for contiguous tensors, and the columns past `hidden` untouched."""
    x = varied(gen, rows, hidden + 64)[:, :hidden]
    residual = varied(gen, rows, hidden + 128)[:, 8:hidden + 8]
    w = norm_weight(gen, hidden)
    out_pad = 32 if mode is None else 16
    out_buf = poisoned_out((rows, hidden + out_pad), mode)
    res_buf = poisoned((rows, hidden + 24), BF16)
    out, residual_out = out_buf[:, :hidden], res_buf[:, 8:hidden + 8]
    assert not x.is_contiguous() and not out.is_contiguous()

    y = ref.rms_norm_ref(x, w)
    static = static_scale_for(y, clip_at=0.8) if mode == "per_tensor" else None
    result = hpc_ops.rms_norm(x, w, quant=mode, scale=static, out=out,
                              scale_out=scale_storage(mode, (rows,), hidden))
    assert_output_close(result, y, mode, static_scale=static)
    assert bool(out_buf[:, hidden:].float().isnan().all()), "out was written past its row end"

    poison_(out_buf)
    y2, residual_sum = ref.add_rms_norm_ref(x, residual, w)
    static2 = static_scale_for(y2, clip_at=0.8) if mode == "per_tensor" else None
    result = hpc_ops.fused_add_rms_norm(x, residual, w, quant=mode, scale=static2, out=out,
                                        residual_out=residual_out,
                                        scale_out=scale_storage(mode, (rows,), hidden))
    assert_bits_equal(result[1], residual_sum, "residual_out")
    assert_output_close(result[0] if mode is None else (result[0], result[2]), y2, mode,
                        static_scale=static2)
    assert bool(out_buf[:, hidden:].float().isnan().all()), "out was written past its row end"
    assert bool(res_buf[:, :8].isnan().all() and res_buf[:, hidden + 8:].isnan().all()), \
        "residual_out was written outside its columns"


@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "strided_rows"])
@pytest.mark.parametrize("mode", MODES, ids=quant_id)
def test_three_dim_input(gen, mode, strided):
    """[2, 3, hidden] inputs: leading dims are flattened (also when the rows are
    column slices of a wider buffer: the dims still merge into one row stride);
    outputs keep x's shape."""
    hidden = 520
    pad = 8 if strided else 0
    x = varied(gen, 2, 3, hidden + pad)[..., :hidden]
    residual = varied(gen, 2, 3, hidden + 2 * pad)[..., pad:hidden + pad]
    w = norm_weight(gen, hidden)
    y = ref.rms_norm_ref(x, w)
    static = static_scale_for(y) if mode == "per_tensor" else None
    result = hpc_ops.rms_norm(x, w, quant=mode, scale=static)
    out = result if mode is None else result[0]
    assert tuple(out.shape) == (2, 3, hidden)
    if mode is None:
        assert_output_close(out.reshape(6, hidden), y.reshape(6, hidden), mode)
    else:
        assert_output_close((out.reshape(6, hidden), result[1]), y.reshape(6, hidden), mode,
                            static_scale=static)

    y2, residual_sum = ref.add_rms_norm_ref(x, residual, w)
    static2 = static_scale_for(y2) if mode == "per_tensor" else None
    result = hpc_ops.fused_add_rms_norm(x, residual, w, quant=mode, scale=static2)
    out, residual_out = result[0], result[1]
    assert tuple(out.shape) == (2, 3, hidden) and tuple(residual_out.shape) == (2, 3, hidden)
    assert_bits_equal(residual_out, residual_sum, "residual_out")
    if mode is None:
        assert_output_close(out.reshape(6, hidden), y2.reshape(6, hidden), mode)
    else:
        assert_output_close((out.reshape(6, hidden), result[2]), y2.reshape(6, hidden), mode,
                            static_scale=static2)


@pytest.mark.parametrize("mode", MODES, ids=quant_id)
@pytest.mark.parametrize("hidden,rows", [(8, 33), (4096, 257), (8200, 7)])
def test_in_place_residual(gen, hidden, rows, mode):
    """residual_out=residual (and, for bf16, out=x) gives the out-of-place result."""
    x = varied(gen, rows, hidden)
    residual = varied(gen, rows, hidden)
    w = norm_weight(gen, hidden)
    y = ref.add_rms_norm_ref(x, residual, w)[0]
    static = static_scale_for(y) if mode == "per_tensor" else None
    expected = hpc_ops.fused_add_rms_norm(x, residual, w, quant=mode, scale=static)

    x_in, residual_in = x.clone(), residual.clone()
    got = hpc_ops.fused_add_rms_norm(x_in, residual_in, w, quant=mode, scale=static,
                                     residual_out=residual_in)
    assert got[1] is residual_in
    for i, (a, b) in enumerate(zip(got, expected)):
        assert_bits_equal(a, b, f"in-place result [{i}]")
    assert_bits_equal(x_in, x, "x changed although out was not x")

    if mode is None:  # fully in place, as in a decoder layer: out=x, residual_out=residual
        x_in, residual_in = x.clone(), residual.clone()
        got = hpc_ops.fused_add_rms_norm(x_in, residual_in, w, out=x_in, residual_out=residual_in)
        assert got[0] is x_in and got[1] is residual_in
        assert_bits_equal(x_in, expected[0], "out=x")
        assert_bits_equal(residual_in, expected[1], "residual_out=residual")

        x_in = x.clone()
        got = hpc_ops.rms_norm(x_in, w, out=x_in)
        assert got is x_in
        assert_bits_equal(x_in, hpc_ops.rms_norm(x, w), "rms_norm out=x")


# ----------------------------------------------------------------------------
# Values: zero rows, eps
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES, ids=quant_id)
@pytest.mark.parametrize("hidden", [8, 520, 4096])
def test_zero_rows(gen, hidden, mode):
    """All-zero rows give zero outputs, finite everywhere, and the floor scale 1e-10/448."""
    rows = 9
    zero_rows = [0, 4, 8]
    x = varied(gen, rows, hidden)
    x[zero_rows] = 0
    residual = varied(gen, rows, hidden)
    x2 = varied(gen, rows, hidden)
    x2[zero_rows] = -residual[zero_rows]  # x2 + residual == 0 exactly on those rows
    w = norm_weight(gen, hidden)
    floor = torch.tensor(ref.MIN_AMAX / ref.FP8_MAX, dtype=torch.float32).item()

    y = ref.rms_norm_ref(x, w)
    static = static_scale_for(y) if mode == "per_tensor" else None
    result = hpc_ops.rms_norm(x, w, quant=mode, scale=static,
                              out=poisoned_out((rows, hidden), mode),
                              scale_out=scale_storage(mode, (rows,), hidden))
    assert_output_close(result, y, mode, static_scale=static)
    out = result if mode is None else result[0]
    assert bool((out[zero_rows].float() == 0).all())
    if mode in ("per_token", "per_group"):
        torch.testing.assert_close(result[1][zero_rows],
                                   torch.full_like(result[1][zero_rows], floor), rtol=1e-6, atol=0)

    y2, residual_sum = ref.add_rms_norm_ref(x2, residual, w)
    assert bool((residual_sum[zero_rows].float() == 0).all())
    result = hpc_ops.fused_add_rms_norm(x2, residual, w, quant=mode, scale=static)
    assert_bits_equal(result[1], residual_sum, "residual_out")
    out = result[0]
    assert_output_close(out if mode is None else (out, result[2]), y2, mode, static_scale=static)
    assert bool((out[zero_rows].float() == 0).all())
    if mode in ("per_token", "per_group"):
        torch.testing.assert_close(result[2][zero_rows],
                                   torch.full_like(result[2][zero_rows], floor), rtol=1e-6, atol=0)


@pytest.mark.parametrize("eps", [0.0, 1e-5, 1e-2, 3.0])
def test_eps(gen, eps):
    """eps is added to mean(x^2): with small inputs a wrong eps changes every value."""
    rows, hidden = 65, 4096
    x = varied(gen, rows, hidden, scale=0.05)
    residual = varied(gen, rows, hidden, scale=0.05)
    w = norm_weight(gen, hidden)
    assert_output_close(hpc_ops.rms_norm(x, w, eps), ref.rms_norm_ref(x, w, eps), None)
    out, r = hpc_ops.fused_add_rms_norm(x, residual, w, eps=eps)
    y2, residual_sum = ref.add_rms_norm_ref(x, residual, w, eps)
    assert_bits_equal(r, residual_sum, "residual_out")
    assert_output_close(out, y2, None)


def test_static_scale_saturates(gen):
    """Values beyond 448 * scale saturate to +-448, never NaN; a 0-d scale works too."""
    rows, hidden = 17, 4096
    x = varied(gen, rows, hidden)
    w = norm_weight(gen, hidden)
    y = ref.rms_norm_ref(x, w)
    scale = static_scale_for(y, clip_at=0.05).reshape(())  # |y| > 5% of amax saturates
    q, s = hpc_ops.rms_norm(x, w, quant="per_tensor", scale=scale)
    assert s is scale
    assert_output_close((q, s), y, "per_tensor", static_scale=scale)
    qf = q.float()
    saturated = y.abs() > 448.0 * 1.01 * float(scale)
    assert bool(saturated.any())
    assert bool((qf[saturated].abs() == 448.0).all())
    assert bool((qf.sign()[saturated] == y.sign()[saturated]).all())
