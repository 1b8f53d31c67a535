"""Argument validation of hpc_ops.decode_attention, plan_decode_attention and
decode_schedule_cpu with host tensors, no GPU needed (skipped when the
'attention' family is not built).

As for the other operators (test_cpu_arguments.py), host tensors reach the
structural checks (dtype, rank, shape, strides, options) before the device
check, so every message naming a bad argument can be tested here; a call that
is valid except for living on the host is rejected naming a tensor and the
device. A rejected call leaves the NaN-filled out= / lse_out= untouched.
INVALID_CALLS includes the FP8 ones (scheme names; scales required, forbidden,
mis-shaped or not float32; fp8 q or k without an FP8 cache).
"""
import pytest
import torch

import hpc_ops
from attention_reference import build_invalid_call, invalid_call_names
from hpc_test_utils import expect_rejected, needs_family

pytestmark = needs_family("attention")

BF16 = torch.bfloat16
INT32 = torch.int32
TENSOR_NAMES = r"(\bq\b|k_cache|v_cache|page_table|kv_lens)"
ON_HOST = TENSOR_NAMES + r".*(CUDA|cuda|device|cpu)"



@pytest.mark.parametrize("name", invalid_call_names("cpu"))
def test_invalid_arguments(name):
    args, kwargs, match, buffers = build_invalid_call(name, "cpu")
    expect_rejected(lambda: hpc_ops.decode_attention(*args, **kwargs), match, buffers)


def test_fp8_scheme_names():
    """hpc_ops.Fp8Scheme: a str enum made from its names; other names fail."""
    names = ["per_tensor", "q_token_head__kv_tensor", "qk_token_head__v_head"]
    assert [s.value for s in hpc_ops.Fp8Scheme] == names
    for scheme in hpc_ops.Fp8Scheme:
        assert hpc_ops.Fp8Scheme(scheme.value) is scheme and scheme == scheme.value
    for bad in ("per_block", "PER_TENSOR", ""):
        with pytest.raises(ValueError):
            hpc_ops.Fp8Scheme(bad)


def test_host_tensors_are_rejected():
    """Everything valid but on the host: the device check is the one left."""
    q = torch.zeros(2, 8, 128, dtype=BF16)
    k, v = torch.zeros(2, 4, 16, 2, 128, dtype=BF16).unbind(0)
    page_table = torch.tensor([[0, 1], [2, 3]], dtype=INT32)
    kv_lens = torch.tensor([5, 17], dtype=INT32)
    out = torch.full((2, 8, 128), float("nan"), dtype=BF16)
    lse = torch.full((2, 8), float("nan"))
    expect_rejected(lambda: hpc_ops.decode_attention(q, k, v, page_table, kv_lens, out=out,
                                                  return_lse=True, lse_out=lse),
                 ON_HOST, [out, lse])
    expect_rejected(lambda: hpc_ops.decode_attention(q, k, v, page_table, kv_lens, q_len=1,
                                                  sliding_window=16, soft_cap=30.0), ON_HOST)


def test_plan_needs_device_kv_lens():
    expect_rejected(lambda: hpc_ops.plan_decode_attention(torch.tensor([5, 17], dtype=INT32),
                                                       num_q_heads=8, num_kv_heads=2),
                 r"kv_lens.*(CUDA|cuda|device|cpu)")


PLAN_ARGS = dict(num_q_heads=8, num_kv_heads=2, head_dim=128, q_len=1, sliding_window=None,
                 num_bins=132)


def test_schedule_cpu_is_deterministic():
    lens = torch.tensor([0, 1, 4096, 65536, 300, 17], dtype=INT32)
    a = hpc_ops.decode_schedule_cpu(lens, **PLAN_ARGS)
    b = hpc_ops.decode_schedule_cpu(lens.clone(), **PLAN_ARGS)
    assert isinstance(a, torch.Tensor) and a.device.type == "cpu" and a.dtype == INT32
    assert a.numel() > 0 and torch.equal(a, b)
    assert torch.equal(lens, torch.tensor([0, 1, 4096, 65536, 300, 17], dtype=INT32)), \
        "kv_lens (an input) was modified"


SCHEDULE_ERRORS = {  # name -> (changed planner arguments, regex)
    "heads_not_divisible": (dict(num_q_heads=6, num_kv_heads=4), r"head|group"),
    "group_17": (dict(num_q_heads=17, num_kv_heads=1), r"head|group"),
    "head_dim_64": (dict(head_dim=64), r"head.?dim"),
    "head_dim_256": (dict(head_dim=256), r"head.?dim"),
    "q_len_0": (dict(q_len=0), r"q_len"),
    "q_len_9": (dict(q_len=9), r"q_len"),
    "sliding_window_0": (dict(sliding_window=0), r"sliding_window"),
    "num_bins_0": (dict(num_bins=0), r"num_bins"),
}


@pytest.mark.parametrize("name", list(SCHEDULE_ERRORS))
def test_schedule_cpu_arguments(name):
    change, match = SCHEDULE_ERRORS[name]
    lens = torch.tensor([5, 17, 300], dtype=INT32)
    expect_rejected(lambda: hpc_ops.decode_schedule_cpu(lens, **{**PLAN_ARGS, **change}), match)


@pytest.mark.parametrize("lens,match", [
    (torch.tensor([5, 17, 300]), r"kv_lens.*int"),
    (torch.tensor([5.0, 17.0]), r"kv_lens.*(int32|float)"),
    (torch.tensor([[5, 17]], dtype=INT32), r"kv_lens"),
], ids=["int64", "float32", "2d"])
def test_schedule_cpu_kv_lens(lens, match):
    expect_rejected(lambda: hpc_ops.decode_schedule_cpu(lens, **PLAN_ARGS), match)
