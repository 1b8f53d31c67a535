# SPDX-License-Identifier: Apache-2.0
"""Python argument handling and validation messages, with no GPU needed.

Host (CPU) tensors reach the C++ validation like device tensors do: every
structural check (dtype, rank, shape, strides, alignment) runs before the
device check, so each message can be tested here. Each failing call must leave
a provided output untouched and launch nothing.
"""
import pytest
import torch

import hpc_ops

BF16 = torch.bfloat16
FP8 = torch.float8_e4m3fn


def poisoned(shape, dtype=BF16):
    t = torch.empty(shape, dtype=dtype)
    t.view(torch.uint8).fill_(0x7F)
    return t


def expect_error(fn, match, out=None):
    before = None if out is None else out.view(torch.uint8).clone()
    with pytest.raises(ValueError, match=match):
        fn()
    if out is not None:
        assert torch.equal(out.view(torch.uint8), before), "a failed call wrote to out"


def test_version_and_families():
    assert hpc_ops.__version__.count(".") == 2
    assert set(hpc_ops.built_families()) <= {"norm", "activation", "quantization", "attention", "rope",
                                             "gemm", "sampling", "comm"}
    assert hpc_ops.built_families(), "no operator family compiled"


@pytest.mark.parametrize("bad_dtype", [torch.float16, torch.float32, torch.int32, torch.complex64])
def test_rms_norm_wrong_dtype(bad_dtype):
    x = torch.ones(4, 64, dtype=bad_dtype)
    out = poisoned((4, 64))
    name = {torch.complex64: "a dtype hpc_ops does not handle"}.get(bad_dtype, str(bad_dtype)[6:])
    expect_error(lambda: hpc_ops.rms_norm(x, torch.ones(64, dtype=BF16), out=out),
                 rf"hpc_ops\.rms_norm: x must be bfloat16, got {name}", out)


def test_rms_norm_wrong_rank():
    expect_error(lambda: hpc_ops.rms_norm(torch.ones(64, dtype=BF16), torch.ones(64, dtype=BF16)),
                 r"x must be 2-D \[rows, hidden\], got 1-D with shape \[64\]")


def test_rms_norm_mismatched_hidden():
    out = poisoned((4, 64))
    expect_error(lambda: hpc_ops.rms_norm(torch.ones(4, 64, dtype=BF16),
                                          torch.ones(72, dtype=BF16), out=out),
                 r"weight\.shape\[0\] = 72, expected 64 \(the hidden size, x\.shape\[1\]\)", out)


def test_hidden_not_multiple_of_8():
    expect_error(lambda: hpc_ops.rms_norm(torch.ones(4, 60, dtype=BF16), torch.ones(60, dtype=BF16)),
                 r"x\.shape\[1\] = 60, expected a multiple of 8")


def test_cpu_tensor_is_rejected():
    out = poisoned((4, 64))
    expect_error(lambda: hpc_ops.rms_norm(torch.ones(4, 64, dtype=BF16), torch.ones(64, dtype=BF16),
                                          out=out),
                 r"hpc_ops\.rms_norm: x must be on a CUDA device, got cpu", out)


def test_non_contiguous_last_dim():
    x = torch.ones(4, 128, dtype=BF16)[:, ::2]
    expect_error(lambda: hpc_ops.rms_norm(x, torch.ones(64, dtype=BF16)),
                 r"x\.stride\(1\) = 2, expected 1 \(the last dim must be contiguous\)")


def test_misaligned_pointer():
    buf = torch.ones(4 * 64 + 8, dtype=BF16)
    x = buf[1:1 + 4 * 64].view(4, 64)
    expect_error(lambda: hpc_ops.rms_norm(x, torch.ones(64, dtype=BF16)),
                 r"x\.data_ptr\(\) = 0x[0-9a-f]+ is not 16-byte aligned")


def test_misaligned_row_stride():
    x = torch.ones(4, 70, dtype=BF16)[:, :64]  # rows 140 bytes apart
    expect_error(lambda: hpc_ops.rms_norm(x, torch.ones(64, dtype=BF16)),
                 r"x\.stride\(0\) = 70 elements \(140 bytes\), expected a multiple of 16 bytes")


def test_non_tensor_argument():
    expect_error(lambda: hpc_ops.rms_norm([[1.0] * 8], torch.ones(8, dtype=BF16)),
                 r"x must be a torch\.Tensor or an array supporting DLPack, got list")


def test_wrong_out_shape_and_dtype():
    x, w = torch.ones(4, 64, dtype=BF16), torch.ones(64, dtype=BF16)
    expect_error(lambda: hpc_ops.rms_norm(x, w, out=poisoned((5, 64))),
                 r"out has shape \[5, 64\], expected \[4, 64\]")
    expect_error(lambda: hpc_ops.rms_norm(x, w, out=poisoned((4, 64), torch.float32)),
                 r"out must be bfloat16, got float32")


def test_eps_validated():
    expect_error(lambda: hpc_ops.rms_norm(torch.ones(4, 64, dtype=BF16), torch.ones(64, dtype=BF16),
                                          eps=float("nan")),
                 r"eps = nan, expected a finite value >= 0")


def test_quant_mode_names():
    x, w = torch.ones(4, 256, dtype=BF16), torch.ones(256, dtype=BF16)
    expect_error(lambda: hpc_ops.rms_norm(x, w, quant="per_block"),
                 r"quant must be one of .*got 'per_block'")
    expect_error(lambda: hpc_ops.rms_norm(x, w, quant="per_tensor"),
                 r"quantization per_tensor \(dynamic\) is not supported here; supported: none, "
                 r"per_tensor \(static\), per_token, per_group \(1x128\)")
    expect_error(lambda: hpc_ops.rms_norm(x, w, quant="per_token", scale=torch.ones(1)),
                 r"scale= is the static per-tensor scale")
    expect_error(lambda: hpc_ops.quantize_fp8(x, None), r"quant must be 'per_tensor'")


def test_scale_arguments():
    x, w = torch.ones(4, 256, dtype=BF16), torch.ones(256, dtype=BF16)
    out = poisoned((4, 256), FP8)
    expect_error(lambda: hpc_ops.rms_norm(x, w, quant="per_tensor", scale=torch.ones(2), out=out),
                 r"scale must hold exactly 1 element", out)
    expect_error(lambda: hpc_ops.rms_norm(x, w, quant="per_tensor",
                                          scale=torch.ones(1, dtype=BF16)),
                 r"scale must be float32, got bfloat16")
    expect_error(lambda: hpc_ops.rms_norm(x, w, quant="per_group", scale_out=torch.ones(4, 3)),
                 r"scale\.shape\[1\] = 3, expected 2 \(one scale per 128 columns, rounded up\)")
    expect_error(lambda: hpc_ops.rms_norm(x, w, quant="per_token", scale_out=torch.ones(4)),
                 r"scale must be 2-D \[rows, 1\], got 1-D")


def test_fused_add_rms_norm_arguments():
    x, w = torch.ones(4, 64, dtype=BF16), torch.ones(64, dtype=BF16)
    expect_error(lambda: hpc_ops.fused_add_rms_norm(x, torch.ones(4, 72, dtype=BF16), w),
                 r"hpc_ops\.fused_add_rms_norm: residual has shape \[4, 72\], expected \[4, 64\]")
    expect_error(lambda: hpc_ops.fused_add_rms_norm(x, x.clone(), w,
                                                    residual_out=torch.ones(4, 64)),
                 r"residual_out must be bfloat16, got float32")


def test_activation_arguments():
    expect_error(lambda: hpc_ops.silu_and_mul(torch.ones(4, 100, dtype=BF16)),
                 r"hpc_ops\.silu_and_mul: x\.shape\[1\] = 100, expected a multiple of 16")
    expect_error(lambda: hpc_ops.gelu_tanh_and_mul(torch.ones(4, 128, dtype=BF16),
                                                   out=poisoned((4, 128))),
                 r"hpc_ops\.gelu_tanh_and_mul: out\.shape\[1\] = 128, expected 64")
    x = torch.ones(4, 8, 128, dtype=BF16)
    expect_error(lambda: hpc_ops.silu_and_mul_masked(x, torch.ones(3, dtype=torch.int32)),
                 r"row_counts\.shape\[0\] = 3, expected 4 \(the number of experts E")
    expect_error(lambda: hpc_ops.silu_and_mul_masked(x, torch.ones(4, dtype=torch.int64)),
                 r"row_counts must be int32, got int64")
    expect_error(lambda: hpc_ops.silu_and_mul_masked(torch.ones(32, 128, dtype=BF16),
                                                     torch.ones(4, dtype=torch.int32)),
                 r"x must be 3-D \[E, max_rows, 2\*C\], got 2-D")


def test_quantize_arguments():
    expect_error(lambda: hpc_ops.quantize_fp8(torch.ones(4, 64, dtype=torch.int32)),
                 r"x must be one of \{bfloat16, float16, float32\}, got int32")
    expect_error(lambda: hpc_ops.quantize_fp8(torch.ones(4, 64), out=poisoned((4, 64), BF16)),
                 r"out must be float8_e4m3fn, got bfloat16")
    # Everything valid but on the host: the device check is the one left.
    expect_error(lambda: hpc_ops.quantize_fp8(torch.ones(4, 64), "per_group"),
                 r"hpc_ops\.quantize_fp8: x must be on a CUDA device, got cpu")


def test_dlpack_inputs_are_accepted():
    class Foreign:  # any object speaking DLPack reaches the same validation
        def __init__(self, t):
            self._t = t

        def __dlpack__(self, **kwargs):
            return self._t.__dlpack__(**kwargs)

        def __dlpack_device__(self):
            return self._t.__dlpack_device__()

    expect_error(lambda: hpc_ops.rms_norm(Foreign(torch.ones(4, 64, dtype=torch.float16)),
                                          torch.ones(64, dtype=BF16)),
                 r"x must be bfloat16, got float16")


def test_leading_dims_are_flattened_or_rejected():
    x = torch.ones(2, 3, 64, dtype=BF16)
    expect_error(lambda: hpc_ops.rms_norm(x, torch.ones(64, dtype=BF16)), r"must be on a CUDA device")
    y = torch.ones(2, 3, 128, dtype=BF16).transpose(0, 1)[..., :64]
    expect_error(lambda: hpc_ops.rms_norm(y, torch.ones(64, dtype=BF16)),
                 r"cannot be viewed as \[rows, n\] without a copy")


def test_registered_torch_ops_and_fakes():
    for name in ("rms_norm", "fused_add_rms_norm", "act_and_mul", "act_and_mul_masked",
                 "quantize_fp8"):
        assert hasattr(torch.ops.hpc_ops, name), name
    # The fake implementation lets meta tensors trace without running anything.
    x = torch.empty(4, 64, dtype=BF16, device="meta")
    out = hpc_ops.rms_norm(x, torch.empty(64, dtype=BF16, device="meta"))
    assert out.shape == (4, 64) and out.device.type == "meta"
    q, s = hpc_ops.fused_add_rms_norm(x, x, torch.empty(64, dtype=BF16, device="meta"),
                                      quant="per_group")[::2]
    assert q.dtype == FP8 and s.shape == (4, 1) and s.stride() == (1, 4)
