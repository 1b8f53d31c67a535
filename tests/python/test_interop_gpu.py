"""GPU tests of how hpc_ops meets the rest of the stack: DLPack producers that
are not torch tensors, tensor subclasses (which take the registered
torch.library op path in eager mode), the current CUDA stream, and a second GPU.
"""
from __future__ import annotations

import pytest
import torch

import hpc_ops
import reference as ref
from hpc_test_utils import needs_family, varied
from tolerances import SCALE_RTOL_EXACT, assert_bits_equal, assert_fp8_close, assert_output_close

pytestmark = [pytest.mark.gpu, needs_family("norm"), needs_family("activation"),
              needs_family("quantization")]

BF16 = torch.bfloat16


class DLPackOnly:
    """A foreign array: only the DLPack protocol, delegating to a torch tensor
    (zero-copy, so writes through it are visible in the tensor)."""

    def __init__(self, tensor: torch.Tensor):
        self._tensor = tensor

    def __dlpack__(self, *args, **kwargs):
        return self._tensor.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self._tensor.__dlpack_device__()


def _inputs(gen, rows=33, hidden=520, c=520, e=4, max_rows=16):
    return {
        "x": varied(gen, rows, hidden),
        "residual": varied(gen, rows, hidden),
        "w": (1 + 0.3 * torch.randn(hidden, generator=gen, device="cuda")).to(BF16),
        "gate_up": varied(gen, rows, 2 * c),
        "xq": varied(gen, rows, hidden, dtype=torch.float32),
        "xm": varied(gen, e, max_rows, 2 * c),
        "counts": torch.tensor([0, 16, 3, 99][:e], dtype=torch.int32, device="cuda"),
        "static": torch.tensor([0.02], dtype=torch.float32, device="cuda"),
    }


def _all_ops(d, wrap):
    """Every operator once, with every tensor argument passed through wrap."""
    residual = d["residual"].clone()
    return {
        "rms_norm": hpc_ops.rms_norm(wrap(d["x"]), wrap(d["w"])),
        "rms_norm_static": hpc_ops.rms_norm(wrap(d["x"]), wrap(d["w"]), quant="per_tensor",
                                            scale=wrap(d["static"]))[0],
        "fused": hpc_ops.fused_add_rms_norm(wrap(d["x"]), wrap(residual), wrap(d["w"]),
                                            quant="per_group", residual_out=wrap(residual)),
        "residual_after": residual,
        "silu": hpc_ops.silu_and_mul(wrap(d["gate_up"]), quant="per_token"),
        "gelu": hpc_ops.gelu_tanh_and_mul(wrap(d["gate_up"])),
        "masked": hpc_ops.silu_and_mul_masked(wrap(d["xm"]), wrap(d["counts"])),
        "quant": hpc_ops.quantize_fp8(wrap(d["xq"]), "per_group"),
        "quant_static": hpc_ops.quantize_fp8(wrap(d["xq"]), "per_tensor",
                                             scale=wrap(d["static"]))[0],
    }


def _assert_same_results(got, expected, counts, max_rows):
    for name, exp in expected.items():
        res = got[name]
        pairs = zip(res, exp) if isinstance(exp, tuple) else [(res, exp)]
        for i, (a, b) in enumerate(pairs):
            if name == "masked":  # only rows below the counts are defined
                for e, count in enumerate(counts):
                    n = min(count, max_rows)
                    assert_bits_equal(a[e, :n], b[e, :n], f"{name} expert {e}")
            else:
                assert_bits_equal(a, b, f"{name}[{i}]")


def test_dlpack_inputs(gen):
    """Inputs given as DLPack-only objects give the same bits as torch tensors;
    residual_out passed that way is updated in place (no copy)."""
    d = _inputs(gen)
    expected = _all_ops(d, lambda t: t)
    got = _all_ops(d, DLPackOnly)
    _assert_same_results(got, expected, d["counts"].tolist(), d["xm"].shape[1])
    assert_bits_equal(got["residual_after"], ref.add_residual_ref(d["x"], d["residual"]),
                      "residual_out through DLPack")


def test_tensor_subclass_takes_registered_op_path(gen):
    """nn.Parameter inputs are not plain tensors, so eager calls go through
    torch.ops.hpc_ops.*; the results are the same bits as the direct path."""
    d = _inputs(gen)
    expected = _all_ops(d, lambda t: t)

    def as_param(t):
        return torch.nn.Parameter(t, requires_grad=False) if t.is_floating_point() else t

    got = _all_ops(d, as_param)
    _assert_same_results(got, expected, d["counts"].tolist(), d["xm"].shape[1])


def test_cupy_arrays(gen):
    """quantize_fp8 on CuPy arrays (CuPy has no bfloat16; fp16 and fp32 here)."""
    cupy = pytest.importorskip("cupy")
    for dtype in (torch.float16, torch.float32):
        x = varied(gen, 17, 520, dtype=dtype)
        x_cp = cupy.from_dlpack(x)
        q, scale = hpc_ops.quantize_fp8(x_cp, "per_token")
        assert isinstance(q, torch.Tensor) and q.is_cuda
        assert_fp8_close(q, scale, x.double(), "per_token", scale_rtol=SCALE_RTOL_EXACT)


@pytest.mark.parametrize("op", ["rms_norm", "fused_add_rms_norm", "silu_and_mul", "masked",
                                "quantize_dynamic"])
def test_runs_on_current_stream(gen, op):
    """The kernels are launched on torch's current stream: inputs produced on a
    side stream after a long sleep are seen, and outputs are complete once that
    stream is synchronized."""
    d = _inputs(gen, rows=2048, hidden=4096, c=4096, max_rows=512)
    calls = {
        "rms_norm": lambda t: hpc_ops.rms_norm(t["x"], t["w"]),
        "fused_add_rms_norm": lambda t: hpc_ops.fused_add_rms_norm(t["x"], t["residual"], t["w"],
                                                                   quant="per_token"),
        "silu_and_mul": lambda t: hpc_ops.silu_and_mul(t["gate_up"], quant="per_group"),
        "masked": lambda t: hpc_ops.silu_and_mul_masked(t["xm"], t["counts"]),
        "quantize_dynamic": lambda t: hpc_ops.quantize_fp8(t["xq"], "per_tensor"),
    }
    expected = calls[op](d)
    torch.cuda.synchronize()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        late = {k: torch.zeros_like(v) for k, v in d.items()}
        torch.cuda._sleep(100_000_000)  # tens of milliseconds of GPU time on `side`
        for k, v in d.items():
            late[k].copy_(v)
        got = calls[op](late)
    side.synchronize()

    exp_t = expected if isinstance(expected, tuple) else (expected,)
    got_t = got if isinstance(got, tuple) else (got,)
    for i, (a, b) in enumerate(zip(got_t, exp_t)):
        if op == "masked":
            for e, count in enumerate(d["counts"].tolist()):
                n = min(count, d["xm"].shape[1])
                assert_bits_equal(a[e, :n], b[e, :n], f"{op} expert {e}")
        else:
            assert_bits_equal(a, b, f"{op} output {i} on a side stream")


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                    reason="needs two CUDA devices")
def test_second_device(gen):
    """Tensors on cuda:1 are processed on cuda:1 whatever the current device."""
    d = {k: v.to("cuda:1") for k, v in _inputs(gen).items()}
    assert torch.cuda.current_device() == 0
    out = hpc_ops.rms_norm(d["x"], d["w"])
    q, r, s = hpc_ops.fused_add_rms_norm(d["x"], d["residual"], d["w"], quant="per_group")
    h = hpc_ops.silu_and_mul(d["gate_up"])
    fq, fs = hpc_ops.quantize_fp8(d["xq"], "per_tensor")
    torch.cuda.synchronize(1)
    assert torch.cuda.current_device() == 0
    assert out.device == torch.device("cuda:1")
    assert_output_close(out, ref.rms_norm_ref(d["x"], d["w"]), None)
    y, residual_sum = ref.add_rms_norm_ref(d["x"], d["residual"], d["w"])
    assert_bits_equal(r, residual_sum, "residual_out")
    assert_output_close((q, s), y, "per_group")
    assert_output_close(h, ref.act_and_mul_ref(d["gate_up"], "silu"), None,
                        ref_err=ref.act_and_mul_fp32_error(d["gate_up"], "silu"))
    assert_fp8_close(fq, fs, d["xq"].double(), "per_tensor", scale_rtol=SCALE_RTOL_EXACT)
