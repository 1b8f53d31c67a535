"""Argument validation of hpc_ops.rope_qk_norm_kv_write and hpc_ops.split_qkv
with host tensors, no GPU needed (skipped when the 'rope' family is not built).

As for the other operators (test_cpu_arguments.py), host tensors reach the
structural checks (dtype, rank, shape, strides, options) before the device
check, so every message naming a bad argument can be tested here; a call that
is valid except for living on the host is rejected naming a tensor and the
device. A rejected call leaves the NaN-filled out_q (and a dynamic q_scale)
and the caches untouched. INVALID_CALLS (rope_reference.py) covers q/k/v
(dtype, rank, rows, heads, head dims, the packed form), cos_sin_cache and
rotary_dim (dtype, shape, range, parity and the multiple per style), style and
norm_order names, the QK norm weights (both or neither, shape, dtype), the
caches (dtypes, shapes, rank), page_table / kv_lens / cu_seqlens / positions
(dtype, shape), out_q and q_out_dtype, and the FP8 scales (needed, forbidden,
dtype, shape per scheme).
"""
import pytest
import torch

import hpc_ops
from hpc_test_utils import expect_rejected, needs_family
from rope_reference import build_invalid_call, invalid_call_names

pytestmark = needs_family("rope")

BF16 = torch.bfloat16
FP8 = torch.float8_e4m3fn
INT32 = torch.int32
TENSOR_NAMES = (r"(qkv|\bq\b|\bk\b|\bv\b|cos_sin_cache|k_cache|v_cache|page_table|kv_lens|"
                r"cu_seqlens|positions|norm_weight|out_q|_scale)")
ON_HOST = TENSOR_NAMES + r".*(CUDA|cuda|device|cpu)"



@pytest.mark.parametrize("name", invalid_call_names("cpu"))
def test_invalid_arguments(name):
    args, kwargs, match, buffers = build_invalid_call(name, "cpu")
    expect_rejected(lambda: hpc_ops.rope_qk_norm_kv_write(*args, **kwargs), match, buffers)


def _host_call(fp8_scheme=None):
    """A valid call on the host: B = 2 (4 and 1 rows, one padding row),
    Hq = 8, Hkv = 2, D = 128, page_size 16; optional arguments given; an FP8
    cache of `fp8_scheme` with an fp8 q_out and its scales."""
    rows, hq, hkv, d = 6, 8, 2, 128
    qkv = torch.zeros(rows, (hq + 2 * hkv) * d, dtype=BF16)
    caches = torch.zeros(4, 2, 16, hkv, d, dtype=BF16 if fp8_scheme is None else FP8)
    args = [qkv, None, None, torch.ones(64, d), caches[:, 0], caches[:, 1],
            torch.tensor([[0, 1], [2, 3]], dtype=INT32), torch.tensor([20, 5], dtype=INT32),
            torch.tensor([0, 4, 5], dtype=INT32)]
    out_q = torch.full((rows, hq, d), float("nan"), dtype=BF16)
    kwargs = dict(positions=torch.arange(rows, dtype=torch.int64), style="interleaved",
                  q_norm_weight=torch.ones(d, dtype=BF16),
                  k_norm_weight=torch.ones(d, dtype=BF16),
                  norm_order="rope_then_norm", eps=1e-5)
    buffers = [caches]
    if fp8_scheme is not None:
        out_q = torch.empty(rows, hq, d, dtype=FP8)
        out_q.view(torch.uint8).fill_(0x7F)
        per_token = fp8_scheme == "qk_token_head__v_head"
        kwargs.update(kv_scheme=fp8_scheme, q_out_dtype=FP8,
                      k_scale=torch.ones(4, 16, hkv) if per_token else torch.ones(1),
                      v_scale=torch.ones(hkv) if per_token else torch.ones(1))
        if fp8_scheme == "per_tensor":
            kwargs["q_scale"] = torch.ones(1)
        else:
            kwargs["q_scale"] = torch.full((rows, hq), float("nan"))
            buffers.append(kwargs["q_scale"])
        if per_token:
            buffers.append(kwargs["k_scale"])
    kwargs["out_q"] = out_q
    return args, kwargs, [out_q] + buffers


@pytest.mark.parametrize("scheme", [None, "per_tensor", "q_token_head__kv_tensor",
                                    "qk_token_head__v_head"])
def test_host_tensors_are_rejected(scheme):
    """Everything valid but on the host: the device check is the one left."""
    args, kwargs, buffers = _host_call(scheme)
    expect_rejected(lambda: hpc_ops.rope_qk_norm_kv_write(*args, **kwargs), ON_HOST, buffers)
    # The same call with separate q, k, v and the minimal options.
    q, k, v = hpc_ops.split_qkv(args[0], 8, 2, 128)
    minimal = {n: kwargs[n] for n in ("kv_scheme", "k_scale", "v_scale", "q_out_dtype",
                                      "q_scale") if n in kwargs}
    expect_rejected(lambda: hpc_ops.rope_qk_norm_kv_write(q, k, v, *args[3:], **minimal), ON_HOST)


def test_split_qkv_on_host():
    """split_qkv is shape arithmetic: views of the host tensor, no device needed."""
    qkv = torch.arange(3 * (6 + 2 * 4) * 64, dtype=torch.float32).reshape(3, -1).to(BF16)
    q, k, v = hpc_ops.split_qkv(qkv, 6, 4, 64)
    assert (tuple(q.shape), tuple(k.shape), tuple(v.shape)) == ((3, 6, 64), (3, 4, 64),
                                                                  (3, 4, 64))
    assert q.data_ptr() == qkv.data_ptr()
    assert k.data_ptr() == qkv.data_ptr() + 6 * 64 * qkv.element_size()
    assert v.data_ptr() == qkv.data_ptr() + 10 * 64 * qkv.element_size()
    assert torch.equal(v.flatten(1), qkv[:, 10 * 64:])


@pytest.mark.parametrize("shape", [(3, 14 * 64 + 1), (3, 13 * 64), (3, 14, 64), (14 * 64,)],
                         ids=["width_plus_1", "one_head_short", "3d", "1d"])
def test_split_qkv_shape_errors(shape):
    qkv = torch.zeros(shape, dtype=BF16)
    expect_rejected(lambda: hpc_ops.split_qkv(qkv, 6, 4, 64), r"qkv")


def test_split_qkv_needs_a_tensor():
    expect_rejected(lambda: hpc_ops.split_qkv([[0.0] * 64], 0, 0, 64), r"qkv")
