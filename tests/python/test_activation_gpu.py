"""GPU tests of the gated activations: hpc_ops.silu_and_mul, gelu_tanh_and_mul
and their masked per-expert variants.

x rows are [gate (C) | up (C)]; the gate values span a wide range (about
N(0, 3)) so both tails of the activations are exercised. Outputs go into
poisoned buffers. For the masked variants the rows at or beyond row_counts[e]
must keep their previous contents, bit for bit, in out and in the scales.
"""
from __future__ import annotations

import pytest
import torch

import hpc_ops
import reference as ref
from hpc_test_utils import (WIDE_COLS, needs_family, poisoned_out, quant_id, scale_storage,
                            static_scale_for, varied)
from tolerances import assert_bits_equal, assert_output_close

pytestmark = [pytest.mark.gpu, needs_family("activation")]

ACTS = {"silu": (hpc_ops.silu_and_mul, hpc_ops.silu_and_mul_masked),
        "gelu_tanh": (hpc_ops.gelu_tanh_and_mul, hpc_ops.gelu_tanh_and_mul_masked)}
MODES = list(ref.MODES)
COLS = [8, 520, 2048, 7168]
ROWS = [0, 1, 7, 4097]


def act_input(gen, *lead, c: int, width: int | None = None) -> torch.Tensor:
    """bf16 [*lead, 2C] = [gate | up] (or a [*lead, :2C] slice of a wider buffer):
    gate ~ N(0, 3), up with per-row / per-group magnitudes."""
    width = 2 * c if width is None else width
    buf = torch.empty(*lead, width, dtype=torch.bfloat16, device="cuda")
    buf.normal_(generator=gen)
    x = buf[..., :2 * c]
    x[..., :c] = (3.0 * torch.randn(*lead, c, generator=gen, device="cuda")).to(torch.bfloat16)
    x[..., c:] = varied(gen, *lead, c)
    return x


def _static(y, mode, clip_at=0.8):
    return static_scale_for(y, clip_at=clip_at) if mode == "per_tensor" else None


class Expected:
    """The float64 reference of act(gate) * up and the error bound that float32
    evaluation may legitimately carry (reference.act_and_mul_fp32_error)."""

    def __init__(self, x, act, y=None, err=None):
        self.y = ref.act_and_mul_ref(x, act) if y is None else y
        self.err = ref.act_and_mul_fp32_error(x, act) if err is None else err

    def __getitem__(self, index):
        return Expected(None, None, self.y[index], self.err[index])

    def reshape(self, *shape):
        return Expected(None, None, self.y.reshape(*shape), self.err.reshape(*shape))


def check(result, expected: Expected, mode, static=None, what="out"):
    assert_output_close(result, expected.y, mode, static_scale=static, what=what,
                        ref_err=expected.err)


# ----------------------------------------------------------------------------
# Plain (dense) variant
# ----------------------------------------------------------------------------
def _run_and_check(act, x, mode, rows, c):
    """Runs the plain activation into poisoned outputs and checks it; returns the result."""
    exp = Expected(x, act)
    static = _static(exp.y, mode)
    result = ACTS[act][0](x, quant=mode, scale=static, out=poisoned_out((rows, c), mode),
                          scale_out=scale_storage(mode, (rows,), c))
    check(result, exp, mode, static)
    return result


@pytest.mark.parametrize("mode", MODES, ids=quant_id)
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("c", COLS)
@pytest.mark.parametrize("act", list(ACTS))
def test_act_and_mul(gen, act, c, rows, mode):
    fn = ACTS[act][0]
    x = act_input(gen, rows, c=c)
    x_before = x.clone()
    exp = Expected(x, act)
    y = exp.y
    static = _static(y, mode)
    out = poisoned_out((rows, c), mode)
    scale_out = scale_storage(mode, (rows,), c)

    result = fn(x, quant=mode, scale=static, out=out, scale_out=scale_out)

    if mode is None:
        assert result is out
    else:
        assert result[0] is out
        assert result[1] is (static if mode == "per_tensor" else scale_out)
    check(result, exp, mode, static)
    assert_bits_equal(x, x_before, "x (an input) was modified")


@pytest.mark.parametrize("mode", MODES, ids=quant_id)
@pytest.mark.parametrize("act", list(ACTS))
def test_default_outputs(gen, act, mode):
    rows, c = 45, 520
    x = act_input(gen, rows, c=c)
    exp = Expected(x, act)
    y = exp.y
    static = _static(y, mode)
    result = ACTS[act][0](x, quant=mode, scale=static)
    check(result, exp, mode, static)
    if mode == "per_group":
        scale = result[1]
        assert tuple(scale.shape) == (rows, ref.num_groups(c))
        assert scale.stride() == (1, 48), "per-group scales must be MN-major, rows padded to 4"
    if mode == "per_token":
        assert tuple(result[1].shape) == (rows, 1)


@pytest.mark.parametrize("mode", MODES, ids=quant_id)
@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize("c", WIDE_COLS)
def test_wide_rows(gen, act, c, mode):
    """C held by 8 and 16 vectors per thread, up to the widest supported row."""
    rows = 5
    x = act_input(gen, rows, c=c)
    _run_and_check(act, x, mode, rows, c)


@pytest.mark.parametrize("mode", MODES, ids=quant_id)
@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize("c,rows", [(520, 7), (2048, 300)])
def test_strided_rows(gen, act, c, rows, mode):
    """x a column slice of a wider buffer, out likewise; columns past C untouched."""
    x = act_input(gen, rows, c=c, width=2 * c + 64)
    assert not x.is_contiguous()
    exp = Expected(x, act)
    y = exp.y
    static = _static(y, mode)
    out_buf = poisoned_out((rows, c + 16), mode)
    out = out_buf[:, :c]
    scale_out = scale_storage(mode, (rows,), c, "strided")
    result = ACTS[act][0](x, quant=mode, scale=static, out=out, scale_out=scale_out)
    check(result, exp, mode, static)
    assert bool(out_buf[:, c:].float().isnan().all()), "out was written past its row end"


@pytest.mark.parametrize("mode", MODES, ids=quant_id)
@pytest.mark.parametrize("act", list(ACTS))
def test_three_dim_input(gen, act, mode):
    c = 520
    x = act_input(gen, 2, 3, c=c)
    exp = Expected(x, act).reshape(6, c)
    y = exp.y
    static = _static(y, mode)
    result = ACTS[act][0](x, quant=mode, scale=static)
    out = result if mode is None else result[0]
    assert tuple(out.shape) == (2, 3, c)
    if mode is None:
        check(out.reshape(6, c), exp, mode)
    else:
        check((out.reshape(6, c), result[1]), exp, mode, static)


@pytest.mark.parametrize("mode", MODES, ids=quant_id)
@pytest.mark.parametrize("act", list(ACTS))
def test_zero_rows(gen, act, mode):
    """Rows whose gate or up is all zero give zeros, finite scales 1e-10/448."""
    rows, c = 6, 520
    x = act_input(gen, rows, c=c)
    x[1, :c] = 0   # act(0) = 0
    x[3, c:] = 0   # up = 0
    x[5] = 0
    result = _run_and_check(act, x, mode, rows, c)
    out = result if mode is None else result[0]
    assert bool((out[[1, 3, 5]].float() == 0).all())
    if mode in ("per_token", "per_group"):
        floor = torch.tensor(ref.MIN_AMAX / ref.FP8_MAX, dtype=torch.float32).item()
        s = result[1][[1, 3, 5]]
        torch.testing.assert_close(s, torch.full_like(s, floor), rtol=1e-6, atol=0)


def test_extreme_gates(gen):
    """Large |gate| (silu/gelu saturate to 0 or to gate) stays finite and accurate."""
    rows, c = 4, 1024
    x = act_input(gen, rows, c=c)
    gate = torch.linspace(-80, 80, c, device="cuda")
    x[:, :c] = gate.to(torch.bfloat16)
    for act, (fn, _) in ACTS.items():
        exp = Expected(x, act)
        check(fn(x), exp, None, what=act)
        check(fn(x, quant="per_token"), exp, "per_token", what=act)


# ----------------------------------------------------------------------------
# Masked (per-expert) variant
# ----------------------------------------------------------------------------
MASKED_CASES = {
    # name: (max_rows, row counts); counts above max_rows behave as max_rows
    "E4": (33, [0, 33, 17, 50]),
    "E8": (33, [5, 0, 33, 1, 40, 32, 0, 16]),
    "E8_tall": (1100, [1100, 0, 517, 1, 2000, 1023, 64, 9]),
}


def check_masked(x, counts, out, scale, before_out, before_scale, exp, mode, static):
    """Rows below the counts match the reference; the rest keep their previous bits."""
    max_rows = x.shape[1]
    for e, count in enumerate(counts):
        n = max(0, min(count, max_rows))
        what = f"expert {e} (count {count})"
        if n:
            if mode is None:
                check(out[e, :n], exp[e, :n], mode, what=what)
            else:
                s = static if mode == "per_tensor" else scale[e, :n]
                check((out[e, :n], s), exp[e, :n], mode, static, what=what)
        if n < max_rows:
            assert_bits_equal(out[e, n:], before_out[e, n:], f"{what}: masked rows of out")
            if before_scale is not None:
                assert_bits_equal(scale[e, n:], before_scale[e, n:],
                                  f"{what}: masked rows of the scales")


@pytest.mark.parametrize("mode", MODES, ids=quant_id)
@pytest.mark.parametrize("c", [8, 520, 2048])
@pytest.mark.parametrize("case", list(MASKED_CASES))
@pytest.mark.parametrize("act", list(ACTS))
def test_masked(gen, act, case, c, mode):
    fn = ACTS[act][1]
    max_rows, counts = MASKED_CASES[case]
    e = len(counts)
    x = act_input(gen, e, max_rows, c=c)
    x_before = x.clone()
    row_counts = torch.tensor(counts, dtype=torch.int32, device="cuda")
    exp = Expected(x, act)
    y = exp.y
    static = _static(y, mode)
    out = poisoned_out((e, max_rows, c), mode)
    scale_out = scale_storage(mode, (e, max_rows), c)
    before_out = out.clone()
    before_scale = None if scale_out is None else scale_out.clone()

    result = fn(x, row_counts, quant=mode, scale=static, out=out, scale_out=scale_out)

    if mode is None:
        assert result is out
        scale = None
    else:
        assert result[0] is out
        scale = result[1]
        assert scale is (static if mode == "per_tensor" else scale_out)
    check_masked(x, counts, out, scale, before_out, before_scale, exp, mode, static)
    assert_bits_equal(x, x_before, "x (an input) was modified")
    assert row_counts.tolist() == counts, "row_counts was modified"


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("mode", ["per_token", "per_group"])
def test_masked_scale_layouts(gen, mode, layout):
    max_rows, counts = MASKED_CASES["E8"]
    c = 520
    x = act_input(gen, len(counts), max_rows, c=c)
    row_counts = torch.tensor(counts, dtype=torch.int32, device="cuda")
    exp = Expected(x, "silu")
    out = poisoned_out((len(counts), max_rows, c), mode)
    scale_out = scale_storage(mode, (len(counts), max_rows), c, layout)
    before_out, before_scale = out.clone(), scale_out.clone()
    q, s = hpc_ops.silu_and_mul_masked(x, row_counts, quant=mode, out=out, scale_out=scale_out)
    assert s is scale_out
    check_masked(x, counts, q, s, before_out, before_scale, exp, mode, None)


@pytest.mark.parametrize("mode", MODES, ids=quant_id)
def test_masked_default_outputs(gen, mode):
    """Allocated outputs: [E, max_rows, C] and per-expert MN-major per-group scales."""
    max_rows, counts = MASKED_CASES["E4"]
    c, e = 520, len(counts)
    x = act_input(gen, e, max_rows, c=c)
    row_counts = torch.tensor(counts, dtype=torch.int32, device="cuda")
    exp = Expected(x, "gelu_tanh")
    y = exp.y
    static = _static(y, mode)
    result = hpc_ops.gelu_tanh_and_mul_masked(x, row_counts, quant=mode, scale=static)
    out = result if mode is None else result[0]
    assert tuple(out.shape) == (e, max_rows, c)
    for i, count in enumerate(counts):
        n = min(count, max_rows)
        if not n:
            continue
        if mode is None:
            check(out[i, :n], exp[i, :n], mode)
        else:
            s = static if mode == "per_tensor" else result[1][i, :n]
            check((out[i, :n], s), exp[i, :n], mode, static)
    if mode == "per_token":
        assert tuple(result[1].shape) == (e, max_rows, 1)
    if mode == "per_group":
        g = ref.num_groups(c)
        assert tuple(result[1].shape) == (e, max_rows, g)
        assert result[1].stride() == (g * 36, 1, 36)


def test_masked_all_empty(gen):
    """All counts 0: nothing is written."""
    x = act_input(gen, 4, 16, c=128)
    row_counts = torch.zeros(4, dtype=torch.int32, device="cuda")
    out = poisoned_out((4, 16, 128), "per_group")
    scale_out = scale_storage("per_group", (4, 16), 128)
    before_out, before_scale = out.clone(), scale_out.clone()
    hpc_ops.silu_and_mul_masked(x, row_counts, quant="per_group", out=out, scale_out=scale_out)
    assert_bits_equal(out, before_out, "out")
    assert_bits_equal(scale_out, before_scale, "scale_out")


def test_masked_matches_dense(gen):
    """Rows below the counts equal the dense operator's rows bit for bit."""
    max_rows, counts = MASKED_CASES["E8"]
    c = 2048
    x = act_input(gen, len(counts), max_rows, c=c)
    row_counts = torch.tensor(counts, dtype=torch.int32, device="cuda")
    for act, (dense, masked) in ACTS.items():
        for mode in ("per_token", "per_group"):
            q_m, s_m = masked(x, row_counts, quant=mode)
            q_d, s_d = dense(x.reshape(-1, 2 * c), quant=mode)
            q_d, s_d = q_d.reshape(q_m.shape), s_d.reshape(s_m.shape)
            for e, count in enumerate(counts):
                n = min(count, max_rows)
                assert_bits_equal(q_m[e, :n], q_d[e, :n], f"{act} {mode} expert {e} codes")
                assert_bits_equal(s_m[e, :n], s_d[e, :n], f"{act} {mode} expert {e} scales")
        out_m = masked(x, row_counts)
        out_d = dense(x).reshape(out_m.shape)
        for e, count in enumerate(counts):
            n = min(count, max_rows)
            assert_bits_equal(out_m[e, :n], out_d[e, :n], f"{act} expert {e}")
