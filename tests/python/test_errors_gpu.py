"""GPU tests of argument rejection with real CUDA tensors: every bad call raises
ValueError before anything is launched, so the poisoned out= / residual_out= /
scale_out= buffers handed to it are bit-identical afterwards (checked after a
device synchronization, so a stray asynchronous kernel would be caught too).
"""
from __future__ import annotations

import pytest
import torch

import hpc_ops
import reference as ref
from hpc_test_utils import MAX_COLS, poisoned, poisoned_out, scale_storage, varied
from tolerances import assert_bits_equal

pytestmark = pytest.mark.gpu

BF16 = torch.bfloat16
ROWS, HIDDEN, C = 7, 520, 520


def _misaligned(rows, cols, dtype=BF16, offset=1):
    """A [rows, cols] tensor whose data pointer is `offset` elements past an allocation."""
    storage_dtype = torch.uint8 if dtype == ref.FP8 else dtype
    buf = torch.zeros(rows * cols + 64, dtype=storage_dtype, device="cuda").view(dtype)
    return buf[offset:offset + rows * cols].view(rows, cols)


def _w(hidden=HIDDEN):
    return torch.ones(hidden, dtype=BF16, device="cuda")


def _x(gen, rows=ROWS, cols=HIDDEN, dtype=BF16):
    return varied(gen, rows, cols, dtype=dtype)


# Each case: gen -> (call, buffers that must stay untouched, regex the message must match).
def _rms_case(x_fn, *, w_fn=_w, quant=None, static_fn=None, eps=1e-6, out_fn=None,
              scale_fn=None, match):
    def build(gen):
        x = x_fn(gen)
        scale = static_fn() if static_fn else None
        rows = x.reshape(-1, x.shape[-1]).shape[0]
        out = out_fn() if out_fn else poisoned_out((rows, x.shape[-1]), quant)
        scale_out = scale_fn() if scale_fn else scale_storage(quant, (rows,), x.shape[-1])
        buffers = [t for t in (out, scale_out) if t is not None]
        return (lambda: hpc_ops.rms_norm(x, w_fn(), eps, quant=quant, scale=scale, out=out,
                                         scale_out=scale_out)), buffers, match
    return build


RMS_CASES = {
    "weight_wrong_size": _rms_case(_x, w_fn=lambda: _w(HIDDEN - 8), match=r"weight\.shape\[0\]"),
    "weight_wrong_dtype": _rms_case(_x, w_fn=lambda: _w().float(), match="bfloat16"),
    "weight_on_cpu": _rms_case(_x, w_fn=lambda: _w().cpu(), match="cpu|CUDA|device"),
    "x_misaligned": _rms_case(lambda g: _misaligned(ROWS, HIDDEN), match="aligned"),
    "x_row_stride_not_16_bytes": _rms_case(lambda g: _x(g, cols=HIDDEN + 4)[:, :HIDDEN],
                                           match="stride"),
    "x_last_dim_strided": _rms_case(lambda g: _x(g, cols=2 * HIDDEN)[:, ::2], match="stride"),
    "x_float16": _rms_case(lambda g: _x(g, dtype=torch.float16), match="bfloat16"),
    "hidden_not_multiple_of_8": _rms_case(lambda g: _x(g, cols=100), w_fn=lambda: _w(100),
                                          match="multiple of 8"),
    "hidden_too_wide": _rms_case(lambda g: _x(g, rows=1, cols=MAX_COLS + 8),
                                 w_fn=lambda: _w(MAX_COLS + 8), match=str(MAX_COLS)),
    "eps_negative": _rms_case(_x, eps=-1.0, match="eps"),
    "eps_nan": _rms_case(_x, eps=float("nan"), match="eps"),
    # [2, 3 of 4, hidden]: the leading dims cannot be merged into one row dim without a copy
    "x_3d_not_viewable": _rms_case(lambda g: varied(g, 2, 4, HIDDEN)[:, :3],
                                   out_fn=lambda: poisoned((6, HIDDEN), BF16),
                                   match="viewed|2-D"),
    "out_wrong_shape": _rms_case(_x, out_fn=lambda: poisoned((ROWS + 1, HIDDEN), BF16),
                                 match="out"),
    "fp8_out_without_quant": _rms_case(_x, out_fn=lambda: poisoned((ROWS, HIDDEN), ref.FP8),
                                       match="bfloat16"),
    "bf16_out_with_quant": _rms_case(_x, quant="per_token",
                                     out_fn=lambda: poisoned((ROWS, HIDDEN), BF16),
                                     match="float8_e4m3fn"),
    "fp8_out_misaligned": _rms_case(_x, quant="per_token",
                                    out_fn=lambda: _misaligned(ROWS, HIDDEN, ref.FP8, offset=4),
                                    match="aligned"),
    "per_group_scale_wrong_shape": _rms_case(
        _x, quant="per_group", scale_fn=lambda: poisoned((ROWS, 4), torch.float32),
        match="scale"),
    "per_token_scale_wrong_dtype": _rms_case(
        _x, quant="per_token", scale_fn=lambda: poisoned((ROWS, 1), torch.float64),
        match="float32"),
    "per_token_with_static_scale": _rms_case(
        _x, quant="per_token", static_fn=lambda: torch.ones(1, device="cuda"), match="scale"),
    "static_scale_two_elements": _rms_case(
        _x, quant="per_tensor", static_fn=lambda: torch.ones(2, device="cuda"),
        match="1 element"),
    "dynamic_per_tensor_unsupported": _rms_case(
        _x, quant="per_tensor", scale_fn=lambda: poisoned((1,), torch.float32),
        match="per_tensor"),
    "unknown_quant": _rms_case(_x, quant="per_channel",
                               out_fn=lambda: poisoned((ROWS, HIDDEN), ref.FP8),
                               scale_fn=lambda: None, match="quant"),
}


def _fused_case(*, x_fn=_x, residual_fn=_x, residual_out_fn=None, in_place=False, match):
    def build(gen):
        x, residual = x_fn(gen), residual_fn(gen)
        out = poisoned((ROWS, HIDDEN), BF16)
        residual_out = residual if in_place else (
            residual_out_fn() if residual_out_fn else poisoned((ROWS, HIDDEN), BF16))
        return (lambda: hpc_ops.fused_add_rms_norm(x, residual, _w(), out=out,
                                                   residual_out=residual_out)), \
            [out, residual_out, residual], match
    return build


FUSED_CASES = {
    "residual_misaligned": _fused_case(residual_fn=lambda g: _misaligned(ROWS, HIDDEN),
                                       match="aligned"),
    "residual_wrong_shape": _fused_case(residual_fn=lambda g: _x(g, rows=ROWS + 1),
                                        match="residual"),
    "residual_out_float32": _fused_case(
        residual_out_fn=lambda: poisoned((ROWS, HIDDEN), torch.float32), match="bfloat16"),
    "in_place_with_misaligned_x": _fused_case(x_fn=lambda g: _misaligned(ROWS, HIDDEN),
                                              in_place=True, match="aligned"),
    "in_place_with_fp16_x": _fused_case(x_fn=lambda g: _x(g, dtype=torch.float16), in_place=True,
                                        match="bfloat16"),
}


def _act_case(*, x_fn=lambda g: _x(g, cols=2 * C), quant=None, out_fn=None, scale_fn=None, match):
    def build(gen):
        x = x_fn(gen)
        c = x.shape[-1] // 2
        out = out_fn() if out_fn else poisoned_out((x.shape[0], c), quant)
        scale_out = scale_fn() if scale_fn else scale_storage(quant, (x.shape[0],), c)
        buffers = [t for t in (out, scale_out) if t is not None]
        return (lambda: hpc_ops.silu_and_mul(x, quant=quant, out=out, scale_out=scale_out)), \
            buffers, match
    return build


def _masked_case(*, counts_fn=None, quant="per_token", scale_fn=None, out_fn=None, match):
    e, max_rows = 4, 9

    def build(gen):
        x = varied(gen, e, max_rows, 2 * C)
        counts = counts_fn() if counts_fn else torch.full((e,), max_rows, dtype=torch.int32,
                                                          device="cuda")
        out = out_fn() if out_fn else poisoned_out((e, max_rows, C), quant)
        scale_out = scale_fn() if scale_fn else scale_storage(quant, (e, max_rows), C)
        buffers = [t for t in (out, scale_out) if t is not None]
        return (lambda: hpc_ops.gelu_tanh_and_mul_masked(x, counts, quant=quant, out=out,
                                                         scale_out=scale_out)), buffers, match
    return build


ACT_CASES = {
    "c_not_multiple_of_8": _act_case(x_fn=lambda g: _x(g, cols=24), match="multiple of"),
    "x_misaligned": _act_case(x_fn=lambda g: _misaligned(ROWS, 2 * C), match="aligned"),
    "out_wrong_width": _act_case(out_fn=lambda: poisoned((ROWS, 2 * C), BF16), match="out"),
    "out_wrong_rows": _act_case(out_fn=lambda: poisoned((ROWS - 1, C), BF16), match="out"),
    "per_group_scale_wrong_shape": _act_case(
        quant="per_group", scale_fn=lambda: poisoned((ROWS, 1), torch.float32), match="scale"),
    "masked_counts_int64": _masked_case(
        counts_fn=lambda: torch.full((4,), 9, dtype=torch.int64, device="cuda"), match="int32"),
    "masked_counts_on_cpu": _masked_case(
        counts_fn=lambda: torch.full((4,), 9, dtype=torch.int32), match="cpu|CUDA|device"),
    "masked_counts_wrong_length": _masked_case(
        counts_fn=lambda: torch.full((5,), 9, dtype=torch.int32, device="cuda"),
        match="row_counts"),
    "masked_scale_2d": _masked_case(
        scale_fn=lambda: poisoned((36, 1), torch.float32), match="scale"),
    "masked_out_wrong_experts": _masked_case(
        quant=None, out_fn=lambda: poisoned((3, 9, C), BF16), match="out"),
}


def _quant_case(*, x_fn=_x, quant="per_token", static_fn=None, out_fn=None, scale_fn=None,
                match):
    def build(gen):
        x = x_fn(gen)
        scale = static_fn() if static_fn else None
        out = out_fn() if out_fn else poisoned((x.shape[0], x.shape[-1]), ref.FP8)
        if scale_fn:
            scale_out = scale_fn()
        elif quant == "per_tensor" and scale is None:
            scale_out = poisoned((1,), torch.float32)
        else:
            scale_out = scale_storage(quant, (x.shape[0],), x.shape[-1])
        buffers = [t for t in (out, scale_out) if t is not None]
        return (lambda: hpc_ops.quantize_fp8(x, quant, scale=scale, out=out,
                                             scale_out=scale_out)), buffers, match
    return build


QUANT_CASES = {
    "quant_none": _quant_case(quant=None, scale_fn=lambda: None, match="quant"),
    "x_float64": _quant_case(x_fn=lambda g: _x(g, dtype=torch.float64), match="float64"),
    "out_bf16": _quant_case(out_fn=lambda: poisoned((ROWS, HIDDEN), BF16),
                            match="float8_e4m3fn"),
    "out_misaligned": _quant_case(out_fn=lambda: _misaligned(ROWS, HIDDEN, ref.FP8, offset=4),
                                  match="aligned"),
    "x_fp32_misaligned": _quant_case(x_fn=lambda g: _misaligned(ROWS, HIDDEN, torch.float32),
                                     match="aligned"),
    "dynamic_scale_two_elements": _quant_case(
        quant="per_tensor", scale_fn=lambda: poisoned((2,), torch.float32), match="1 element"),
    "static_scale_float64": _quant_case(
        quant="per_tensor", static_fn=lambda: torch.ones(1, dtype=torch.float64, device="cuda"),
        match="float32"),
    "per_token_scale_too_few_rows": _quant_case(
        scale_fn=lambda: poisoned((ROWS - 1, 1), torch.float32), match="scale"),
    "n_too_wide": _quant_case(x_fn=lambda g: _x(g, rows=1, cols=MAX_COLS + 8),
                              match=str(MAX_COLS)),
}

ALL_CASES = {**{f"rms_norm-{k}": v for k, v in RMS_CASES.items()},
             **{f"fused_add_rms_norm-{k}": v for k, v in FUSED_CASES.items()},
             **{f"act-{k}": v for k, v in ACT_CASES.items()},
             **{f"quantize_fp8-{k}": v for k, v in QUANT_CASES.items()}}


@pytest.mark.parametrize("case", list(ALL_CASES))
def test_bad_arguments_leave_outputs_untouched(gen, case):
    call, buffers, match = ALL_CASES[case](gen)
    torch.cuda.synchronize()
    before = [b.clone() for b in buffers]
    with pytest.raises(ValueError, match=match):
        call()
    torch.cuda.synchronize()
    for i, (b, old) in enumerate(zip(buffers, before)):
        assert_bits_equal(b, old, f"buffer {i} after a rejected call")


def test_usable_after_rejected_call(gen):
    """A rejected call leaves no sticky CUDA error: the next good call works."""
    x = _misaligned(ROWS, HIDDEN)
    with pytest.raises(ValueError, match="aligned"):
        hpc_ops.rms_norm(x, _w())
    good = _x(gen)
    torch.testing.assert_close(hpc_ops.rms_norm(good, _w()).double(),
                               ref.rms_norm_ref(good, _w()), rtol=1.6e-2, atol=1e-5)
