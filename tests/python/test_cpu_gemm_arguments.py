"""Argument validation of hpc_ops.grouped_gemm with host tensors, no GPU
needed (skipped when the 'gemm' family is not built).

Host tensors reach the structural checks (dtype, rank, shape, strides,
layout and scaling rules) before the device check, so every message naming a
bad argument is tested here; a call that is valid except for living on the
host is rejected naming w and the device. A rejected call leaves the
NaN-filled output untouched. Covers: dtypes of x / w / out / the index
tensors / the scales, ranks and sizes per layout, K and N multiples (16, or
128 with block scales), the group count limit, tensors given to a layout or
scaling that does not take them, required tensors missing, each scaling's
scale shapes, row alignment and strides, and the layout / scaling names.
"""
from __future__ import annotations

import pytest
import torch

import hpc_ops
from hpc_test_utils import expect_rejected, needs_family

pytestmark = needs_family("gemm")

BF16 = torch.bfloat16
FP8 = torch.float8_e4m3fn
I32 = torch.int32


def base_call():
    """A valid FP8 block-scaled contiguous call (except for living on the host)."""
    return dict(x=torch.zeros(8, 256, dtype=FP8), w=torch.zeros(2, 256, 256, dtype=FP8),
                cu_seqlens=torch.tensor([0, 3, 8], dtype=I32), scaling="block",
                x_scale=torch.ones(8, 2), w_scale=torch.ones(2, 2, 2),
                out=torch.full((8, 256), float("nan"), dtype=BF16))


def masked_call():
    return dict(x=torch.zeros(2, 4, 256, dtype=FP8), w=torch.zeros(2, 256, 256, dtype=FP8),
                layout="masked", rows_per_group=torch.tensor([1, 4], dtype=I32),
                scaling="per_row", x_scale=torch.ones(2, 4), w_scale=torch.ones(2, 256),
                out=torch.full((2, 4, 256), float("nan"), dtype=BF16))


def bf16_call():
    return dict(x=torch.zeros(8, 144, dtype=BF16), w=torch.zeros(2, 160, 144, dtype=BF16),
                cu_seqlens=torch.tensor([0, 3, 8], dtype=I32),
                out=torch.full((8, 160), float("nan"), dtype=BF16))


# name -> (base, changes, message regex)
CASES = {
    "x_dtype": (base_call, dict(x=torch.zeros(8, 256, dtype=BF16)),
                "x is bfloat16 but w is float8_e4m3fn"),
    "w_dtype": (base_call, dict(w=torch.zeros(2, 256, 256)), "w must be one of"),
    "w_rank": (base_call, dict(w=torch.zeros(256, 256, dtype=FP8)), "w must be 3-D"),
    "k_mismatch": (base_call, dict(w=torch.zeros(2, 256, 128, dtype=FP8)),
                   r"x.shape\[1\] = 256, expected 128"),
    "block_n_multiple": (base_call, dict(w=torch.zeros(2, 144, 256, dtype=FP8)),
                         "N = w.shape.1. = 144; expected a positive multiple of 128"),
    "block_k_multiple": (base_call, dict(w=torch.zeros(2, 256, 144, dtype=FP8),
                                         x=torch.zeros(8, 144, dtype=FP8)),
                         "K = w.shape.2. = 144; expected a positive multiple of 128"),
    "k_multiple_16": (bf16_call, dict(w=torch.zeros(2, 160, 8, dtype=BF16),
                                      x=torch.zeros(8, 8, dtype=BF16)),
                      "K = w.shape.2. = 8; expected a positive multiple of 16"),
    "n_multiple_16": (bf16_call, dict(w=torch.zeros(2, 40, 144, dtype=BF16)),
                      "N = w.shape.1. = 40; expected a positive multiple of 16"),
    "too_many_groups": (bf16_call, dict(w=torch.zeros(1025, 16, 16, dtype=BF16)),
                        "groups = w.shape.0. = 1025; supported: 1 to 1024"),
    "cu_seqlens_dtype": (base_call, dict(cu_seqlens=torch.tensor([0, 3, 8])),
                         "cu_seqlens must be int32, got int64"),
    "cu_seqlens_length": (base_call, dict(cu_seqlens=torch.tensor([0, 3], dtype=I32)),
                          r"cu_seqlens.shape\[0\] = 2, expected 3"),
    "cu_seqlens_missing": (base_call, dict(cu_seqlens=None), "cu_seqlens .* is required"),
    "rows_per_group_for_contiguous": (base_call, dict(rows_per_group=torch.ones(2, dtype=I32)),
                                      "rows_per_group was given, but it is for the masked"),
    "row_index_for_contiguous": (base_call, dict(row_index=torch.zeros(8, dtype=I32)),
                                 "row_index was given, but it is for the gathered"),
    "row_index_missing": (base_call, dict(layout="gathered"), "row_index .* is required"),
    "row_index_dtype": (base_call, dict(layout="gathered", row_index=torch.zeros(8)),
                        "row_index must be int32"),
    "gathered_out_rows": (base_call, dict(layout="gathered",
                                          row_index=torch.zeros(5, dtype=I32)),
                          r"out.shape\[0\] = 8, expected 5"),
    "masked_x_rank": (masked_call, dict(x=torch.zeros(8, 256, dtype=FP8)), "x must be 3-D"),
    "masked_groups": (masked_call, dict(x=torch.zeros(3, 4, 256, dtype=FP8)),
                      r"x.shape\[0\] = 3, expected 2"),
    "masked_counts_missing": (masked_call, dict(rows_per_group=None),
                              "rows_per_group .* is required"),
    "masked_offsets_given": (masked_call, dict(cu_seqlens=torch.zeros(3, dtype=I32)),
                             "cu_seqlens was given, but the masked layout"),
    "masked_out_shape": (masked_call, dict(out=torch.zeros(2, 5, 256, dtype=BF16)),
                         r"out.shape\[1\] = 5, expected 4"),
    "masked_x_scale": (masked_call, dict(x_scale=torch.ones(8)),
                       r"x_scale has shape \[8\]; per_row expects \[2, 4\]"),
    "out_dtype": (base_call, dict(out=torch.zeros(8, 256, dtype=torch.float16)),
                  "out must be bfloat16"),
    "out_n": (base_call, dict(out=torch.zeros(8, 128, dtype=BF16)),
              r"out.shape\[1\] = 128, expected 256"),
    "fp8_needs_scaling": (base_call, dict(scaling=None, x_scale=None, w_scale=None),
                          "float8_e4m3fn inputs need scaling"),
    "bf16_takes_no_scaling": (bf16_call, dict(scaling="per_row"),
                              "scaling = per_row is for float8_e4m3fn inputs"),
    "bf16_takes_no_scales": (bf16_call, dict(x_scale=torch.ones(8)),
                             "x_scale was given, but bfloat16 inputs take no scales"),
    "x_scale_missing": (base_call, dict(x_scale=None), "x_scale is required"),
    "x_scale_dtype": (base_call, dict(x_scale=torch.ones(8, 2, dtype=torch.float64)),
                      "x_scale must be float32"),
    "block_x_scale_shape": (base_call, dict(x_scale=torch.ones(8, 1)),
                            r"x_scale has shape \[8, 1\]; block expects \[8, 2\]"),
    "block_w_scale_shape": (base_call, dict(w_scale=torch.ones(2, 2)),
                            r"w_scale has shape \[2, 2\]; block expects \[2, 2, 2\]"),
    "per_tensor_x_scale": (base_call, dict(scaling="per_tensor", w_scale=torch.ones(2)),
                           r"x_scale has shape \[8, 2\]; per_tensor expects \[1\] or \[2\]"),
    "per_tensor_w_scale": (base_call, dict(scaling="per_tensor", x_scale=torch.ones(1),
                                           w_scale=torch.ones(3)),
                           r"w_scale has shape \[3\]; per_tensor expects \[1\] or \[2\]"),
    "per_row_x_scale": (base_call, dict(scaling="per_row", x_scale=torch.ones(7),
                                        w_scale=torch.ones(2, 256)),
                        r"x_scale has shape \[7\]; per_row expects \[8\]"),
    "per_row_w_scale": (base_call, dict(scaling="per_row", x_scale=torch.ones(8, 1),
                                        w_scale=torch.ones(2, 255)),
                        r"w_scale has shape \[2, 255\]; per_row expects \[2, 256\]"),
    "misaligned_x": (base_call, dict(x=torch.zeros(8, 272, dtype=FP8)[:, 1:257]),
                     "x.data_ptr.* is not 16-byte aligned"),
    "x_last_dim_strided": (base_call, dict(x=torch.zeros(8, 512, dtype=FP8)[:, ::2]),
                           r"x.stride\(1\) = 2, expected 1"),
    "layout_name": (base_call, dict(layout="diagonal"), "layout = 'diagonal', expected one of"),
    "scaling_name": (base_call, dict(scaling="per_block"), "scaling = 'per_block', expected"),
    "expected_rows_type": (base_call, dict(expected_rows_per_group=2.5),
                           "expected_rows_per_group must be an int"),
    "host_tensors": (base_call, {}, "w must be on a CUDA device, got cpu"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_invalid_arguments(name):
    make, changes, match = CASES[name]
    call = make()
    call.update(changes)
    call = {k: v for k, v in call.items() if v is not None or k in ("scaling",)}
    out = call.get("out")
    x = call.pop("x")
    w = call.pop("w")
    expect_rejected(lambda: hpc_ops.grouped_gemm(x, w, **call), match,
                    buffers=[out] if out is not None else [])
