"""GPU tests of hpc_ops inside CUDA graphs and under torch.compile, and
torch.library.opcheck of the registered ops (torch.ops.hpc_ops.*).

CUDA graphs: the operators are captured once with static input buffers; each
replay runs on NEW data copied into those buffers (and a new static scale and
new masked row counts, both read on the device), and is checked against the
reference computed from that new data.

torch.compile: functions calling the operators compile with fullgraph=True and
give bit-identical results to eager calls (in-place residual update included).
"""
from __future__ import annotations

import pytest
import torch

import hpc_ops
import reference as ref
from hpc_ops import _quant
from hpc_test_utils import capture_graph, needs_family, poison_, scale_storage, static_scale_for, varied
from tolerances import (SCALE_RTOL_EXACT, assert_bits_equal, assert_fp8_close,
                        assert_output_close)

pytestmark = [pytest.mark.gpu, needs_family("norm"), needs_family("activation"),
              needs_family("quantization")]

BF16 = torch.bfloat16


def _new_data(gen, t: torch.Tensor, scale: float = 1.0) -> None:
    """Copies fresh random values (varied magnitudes) into static buffer t."""
    t.copy_(varied(gen, *t.shape, dtype=t.dtype, scale=scale))


# ----------------------------------------------------------------------------
# CUDA graphs
# ----------------------------------------------------------------------------
def test_cuda_graph_replay_with_new_data(gen):
    rows, hidden, c = 129, 4096, 2048
    e, max_rows = 6, 40
    x = torch.empty(rows, hidden, dtype=BF16, device="cuda")
    residual = torch.empty_like(x)
    w = torch.empty(hidden, dtype=BF16, device="cuda")
    gate_up = torch.empty(rows, 2 * c, dtype=BF16, device="cuda")
    xq = torch.empty(rows, hidden, dtype=torch.float32, device="cuda")
    xm = torch.empty(e, max_rows, 2 * c, dtype=BF16, device="cuda")
    counts = torch.empty(e, dtype=torch.int32, device="cuda")
    static = torch.empty(1, dtype=torch.float32, device="cuda")

    def fill(step):
        for t in (x, residual, gate_up, xm):
            _new_data(gen, t)
        _new_data(gen, xq, scale=10.0 ** step)
        w.copy_(1 + 0.3 * torch.randn(hidden, generator=gen, device="cuda"))
        counts.copy_(torch.tensor([[0, 40, 7, 1, 55, 39], [13, 0, 40, 0, 2, 33],
                                   [40, 40, 40, 40, 40, 40]][step % 3], dtype=torch.int32))
        static.fill_(0.01 * (step + 1))

    def run():
        return {
            "rms": hpc_ops.rms_norm(x, w),
            "rms_static": hpc_ops.rms_norm(x, w, quant="per_tensor", scale=static),
            "add": hpc_ops.fused_add_rms_norm(x, residual, w, quant="per_token",
                                              residual_out=residual),
            "silu": hpc_ops.silu_and_mul(gate_up, quant="per_group"),
            "quant": hpc_ops.quantize_fp8(xq, "per_tensor"),
            "masked": hpc_ops.gelu_tanh_and_mul_masked(xm, counts, quant="per_group"),
        }

    fill(0)
    graph, outs = capture_graph(run)

    for step in range(3):
        fill(step)
        residual_in = residual.clone()
        for value in outs.values():  # poison every output the graph writes
            for t in (value if isinstance(value, tuple) else (value,)):
                if t is not residual and t is not static:
                    poison_(t)
        masked_before = [t.clone() for t in outs["masked"]]

        graph.replay()
        torch.cuda.synchronize()

        assert_output_close(outs["rms"], ref.rms_norm_ref(x, w), None, what=f"replay {step} rms")
        assert_output_close(outs["rms_static"], ref.rms_norm_ref(x, w), "per_tensor",
                            static_scale=static, what=f"replay {step} rms static")
        y, residual_sum = ref.add_rms_norm_ref(x, residual_in, w)
        q, r, s = outs["add"]
        assert r is residual
        assert_bits_equal(residual, residual_sum, f"replay {step}: residual updated in place")
        assert_output_close((q, s), y, "per_token", what=f"replay {step} add")
        assert_output_close(outs["silu"], ref.act_and_mul_ref(gate_up, "silu"), "per_group",
                            what=f"replay {step} silu",
                            ref_err=ref.act_and_mul_fp32_error(gate_up, "silu"))
        q, s = outs["quant"]
        assert_fp8_close(q, s, xq.double(), "per_tensor", scale_rtol=SCALE_RTOL_EXACT,
                         what=f"replay {step} quantize_fp8")

        q, s = outs["masked"]
        ym = ref.act_and_mul_ref(xm, "gelu_tanh")
        err = ref.act_and_mul_fp32_error(xm, "gelu_tanh")
        for i, count in enumerate(counts.tolist()):
            n = min(count, max_rows)
            what = f"replay {step} masked expert {i} (count {count})"
            if n:
                assert_output_close((q[i, :n], s[i, :n]), ym[i, :n], "per_group", what=what,
                                    ref_err=err[i, :n])
            assert_bits_equal(q[i, n:], masked_before[0][i, n:], what + " rows past the count")
            assert_bits_equal(s[i, n:], masked_before[1][i, n:], what + " scales past the count")


def _dependent_chain(x, residual, w, sync: bool):
    """Operators each reading what the previous one wrote: RMSNorm of the
    last output, add + RMSNorm + FP8 updating the residual in place,
    SiLU-and-mul and dynamic per-tensor quantization (zero, amax, quantize)
    of its output. sync=True waits for the GPU after every call."""
    def step(value):
        if sync:
            torch.cuda.synchronize()
        return value

    outs = []
    h = x
    for _ in range(4):
        h = step(hpc_ops.rms_norm(h, w))
        q, _, s = step(hpc_ops.fused_add_rms_norm(h, residual, w, quant="per_token",
                                                  residual_out=residual))
        outs += [h, q, s]
    a = step(hpc_ops.silu_and_mul(h))
    outs += [a, *step(hpc_ops.silu_and_mul(h, quant="per_group"))]
    outs += [*step(hpc_ops.quantize_fp8(a, "per_tensor"))]
    return outs


@pytest.mark.parametrize("rows,hidden", [(1, 2048), (300, 4096), (4096, 7168), (3, 65536)],
                         ids=["1x2048", "300x4096", "4096x7168-looped", "3x65536-bulk"])
def test_cuda_graph_dependent_chain_matches_synchronized_calls(gen, rows, hidden):
    """A chain of dependent calls captured in one graph. The kernels launch
    with programmatic dependent launch, so each may start while the previous
    one runs and must wait for its writes: the replay matches the same calls
    with a device synchronization after each one, bit for bit."""
    x = varied(gen, rows, hidden)
    residual0 = varied(gen, rows, hidden)
    w = (1 + 0.3 * torch.randn(hidden, generator=gen, device="cuda")).to(BF16)
    residual = residual0.clone()
    expected = [t.clone() for t in _dependent_chain(x, residual, w, sync=True)]
    residual_expected = residual.clone()

    graph, outs = capture_graph(lambda: _dependent_chain(x, residual, w, sync=False))
    for t in outs:
        poison_(t)
    residual.copy_(residual0)
    graph.replay()
    torch.cuda.synchronize()
    for i, (got, want) in enumerate(zip(outs, expected)):
        assert_bits_equal(got, want, f"{rows}x{hidden}: output {i} of the chain")
    assert_bits_equal(residual, residual_expected, f"{rows}x{hidden}: residual")


def test_cuda_graph_allocates_no_new_memory_per_replay(gen):
    """Replays reuse the captured buffers: outputs keep their addresses."""
    x = varied(gen, 64, 7168)
    w = torch.ones(7168, dtype=BF16, device="cuda")
    hpc_ops.rms_norm(x, w, quant="per_group")  # warm-up
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        q, s = hpc_ops.rms_norm(x, w, quant="per_group")
    ptrs = (q.data_ptr(), s.data_ptr())
    for _ in range(2):
        x.copy_(varied(gen, 64, 7168))
        graph.replay()
        torch.cuda.synchronize()
        assert (q.data_ptr(), s.data_ptr()) == ptrs
        assert_output_close((q, s), ref.rms_norm_ref(x, w), "per_group")


# ----------------------------------------------------------------------------
# torch.compile
# ----------------------------------------------------------------------------
def _decoder_step(x, residual, w, gate_up, xq, counts, xm):
    x = x * 0.5  # exact in bf16, so eager and compiled inputs agree bit for bit
    q, r, s = hpc_ops.fused_add_rms_norm(x, residual, w, quant="per_token", residual_out=residual)
    normed = hpc_ops.rms_norm(r, w)
    h, hs = hpc_ops.silu_and_mul(gate_up, quant="per_group")
    g = hpc_ops.gelu_tanh_and_mul(gate_up)
    fq, fs = hpc_ops.quantize_fp8(xq, "per_tensor")
    tq, ts = hpc_ops.quantize_fp8(xq, "per_token")
    mq, ms = hpc_ops.silu_and_mul_masked(xm, counts, quant="per_token")
    return q, s, normed, h, hs, g, fq, fs, tq, ts, mq, ms


@pytest.mark.parametrize("rows", [37, 256])
def test_torch_compile_matches_eager(gen, rows):
    hidden, c, e, max_rows = 4096, 1024, 4, 16
    x = varied(gen, rows, hidden)
    residual = varied(gen, rows, hidden)
    w = (1 + 0.3 * torch.randn(hidden, generator=gen, device="cuda")).to(BF16)
    gate_up = varied(gen, rows, 2 * c)
    xq = varied(gen, rows, 520, dtype=torch.float32)
    counts = torch.tensor([0, 16, 5, 30], dtype=torch.int32, device="cuda")
    xm = varied(gen, e, max_rows, 2 * c)

    residual_eager = residual.clone()
    eager = _decoder_step(x, residual_eager, w, gate_up, xq, counts, xm)
    residual_compiled = residual.clone()
    compiled_fn = torch.compile(_decoder_step, fullgraph=True)
    compiled = compiled_fn(x, residual_compiled, w, gate_up, xq, counts, xm)

    assert_bits_equal(residual_compiled, residual_eager, "residual updated in place")
    assert_bits_equal(residual_eager, ref.add_residual_ref(x * 0.5, residual), "residual value")
    names = "q s normed h hs g fq fs tq ts".split()
    for name, a, b in zip(names, compiled, eager):
        assert_bits_equal(a, b, f"compiled vs eager: {name}")
    mq_c, ms_c, mq_e, ms_e = compiled[-2], compiled[-1], eager[-2], eager[-1]
    for i, count in enumerate(counts.tolist()):  # rows past the counts are not written
        n = min(count, max_rows)
        assert_bits_equal(mq_c[i, :n], mq_e[i, :n], f"compiled vs eager: masked expert {i}")
        assert_bits_equal(ms_c[i, :n], ms_e[i, :n], f"compiled vs eager: masked scales {i}")
    # and eager is right
    y, _ = ref.add_rms_norm_ref(x * 0.5, residual, w)
    assert_output_close((eager[0], eager[1]), y, "per_token")


def test_torch_compile_static_scale_and_outputs(gen):
    """Static per-tensor scale and caller-provided out=/scale_out= under torch.compile."""
    rows, hidden = 64, 5120
    x = varied(gen, rows, hidden)
    w = (1 + 0.3 * torch.randn(hidden, generator=gen, device="cuda")).to(BF16)
    static = static_scale_for(ref.rms_norm_ref(x, w), clip_at=0.8)

    def fn(x, w, static, out, scale_out):
        a = hpc_ops.rms_norm(x, w, quant="per_tensor", scale=static)
        b = hpc_ops.rms_norm(x, w, quant="per_group", out=out, scale_out=scale_out)
        return a[0], b[0], b[1]

    out_e = torch.empty(rows, hidden, dtype=ref.FP8, device="cuda")
    scale_e = scale_storage("per_group", (rows,), hidden, "contiguous")
    eager = fn(x, w, static, out_e, scale_e)
    out_c = torch.empty_like(out_e)
    scale_c = scale_storage("per_group", (rows,), hidden, "contiguous")
    compiled = torch.compile(fn, fullgraph=True)(x, w, static, out_c, scale_c)
    for name, a, b in zip(("static", "group", "group scales"), compiled, eager):
        assert_bits_equal(a, b, f"compiled vs eager: {name}")
    assert_bits_equal(out_c, out_e, "out= written by the compiled function")
    assert_bits_equal(scale_c, scale_e, "scale_out= written by the compiled function")
    assert_output_close((out_c, scale_c), ref.rms_norm_ref(x, w), "per_group")


# ----------------------------------------------------------------------------
# torch.library.opcheck
# ----------------------------------------------------------------------------
# opcheck's test_schema runs the op under SchemaCheckMode, which does arithmetic
# on the outputs that torch does not implement for float8_e4m3fn ("mul_cuda" not
# implemented); ops writing FP8 are checked with the other utilities.
OPCHECK_ALL = ("test_schema", "test_autograd_registration", "test_faketensor",
               "test_aot_dispatch_dynamic")
OPCHECK_FP8 = ("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


def _opcheck(op, args, out_dtype):
    torch.library.opcheck(op, args, test_utils=OPCHECK_ALL if out_dtype == BF16 else OPCHECK_FP8)


OPCHECK_MODES = {"none": (_quant.NONE, None), "per_tensor": (_quant.PER_TENSOR_STATIC, None),
                 "per_token": (_quant.PER_TOKEN, "per_token"),
                 "per_group": (_quant.PER_GROUP, "per_group")}


def _opcheck_scales(mode_id, rows, n, lead=None):
    code, mode = OPCHECK_MODES[mode_id]
    lead = (rows,) if lead is None else lead
    out_dtype = BF16 if code == _quant.NONE else ref.FP8
    static = (torch.tensor([0.05], device="cuda") if code == _quant.PER_TENSOR_STATIC else None)
    scale_out = scale_storage(mode, lead, n, "contiguous") if mode else None
    return code, out_dtype, static, scale_out


@pytest.mark.parametrize("mode_id", list(OPCHECK_MODES))
def test_opcheck_rms_norm(gen, mode_id):
    rows, hidden = 9, 520
    code, out_dtype, static, scale_out = _opcheck_scales(mode_id, rows, hidden)
    x = varied(gen, rows, hidden)
    w = torch.ones(hidden, dtype=BF16, device="cuda")
    out = torch.empty(rows, hidden, dtype=out_dtype, device="cuda")
    _opcheck(torch.ops.hpc_ops.rms_norm.default, (x, w, 1e-6, out, code, static, scale_out),
             out_dtype)


@pytest.mark.parametrize("mode_id", list(OPCHECK_MODES))
def test_opcheck_fused_add_rms_norm(gen, mode_id):
    rows, hidden = 9, 520
    code, out_dtype, static, scale_out = _opcheck_scales(mode_id, rows, hidden)
    x, residual = varied(gen, rows, hidden), varied(gen, rows, hidden)
    w = torch.ones(hidden, dtype=BF16, device="cuda")
    out = torch.empty(rows, hidden, dtype=out_dtype, device="cuda")
    residual_out = torch.empty(rows, hidden, dtype=BF16, device="cuda")
    _opcheck(torch.ops.hpc_ops.fused_add_rms_norm.default,
             (x, residual, w, 1e-6, out, residual_out, code, static, scale_out), out_dtype)


@pytest.mark.parametrize("act", [0, 1], ids=["silu", "gelu_tanh"])
@pytest.mark.parametrize("mode_id", list(OPCHECK_MODES))
def test_opcheck_act_and_mul(gen, mode_id, act):
    rows, c = 9, 520
    code, out_dtype, static, scale_out = _opcheck_scales(mode_id, rows, c)
    x = varied(gen, rows, 2 * c)
    out = torch.empty(rows, c, dtype=out_dtype, device="cuda")
    _opcheck(torch.ops.hpc_ops.act_and_mul.default, (act, x, out, code, static, scale_out),
             out_dtype)


@pytest.mark.parametrize("mode_id", list(OPCHECK_MODES))
def test_opcheck_act_and_mul_masked(gen, mode_id):
    e, max_rows, c = 3, 8, 136
    code, out_dtype, static, scale_out = _opcheck_scales(mode_id, max_rows, c, lead=(e, max_rows))
    x = varied(gen, e, max_rows, 2 * c)
    # Every row written (a count above max_rows means all of them): opcheck compares
    # whole outputs between runs, and rows past a count would hold stale memory.
    counts = torch.tensor([8, 8, 20], dtype=torch.int32, device="cuda")
    out = torch.empty(e, max_rows, c, dtype=out_dtype, device="cuda")
    _opcheck(torch.ops.hpc_ops.act_and_mul_masked.default,
             (0, x, counts, out, code, static, scale_out), out_dtype)


@pytest.mark.parametrize("mode_id", ["per_tensor_static", "per_tensor_dynamic", "per_token",
                                     "per_group"])
def test_opcheck_quantize_fp8(gen, mode_id):
    rows, n = 9, 520
    x = varied(gen, rows, n, dtype=torch.float32)
    out = torch.empty(rows, n, dtype=ref.FP8, device="cuda")
    static, scale_out = None, None
    if mode_id == "per_tensor_static":
        code, static = _quant.PER_TENSOR_STATIC, torch.tensor([0.05], device="cuda")
    elif mode_id == "per_tensor_dynamic":
        code, scale_out = _quant.PER_TENSOR_DYNAMIC, torch.empty(1, device="cuda")
    else:
        code = OPCHECK_MODES[mode_id][0]
        scale_out = scale_storage(mode_id, (rows,), n, "contiguous")
    _opcheck(torch.ops.hpc_ops.quantize_fp8.default, (x, out, code, static, scale_out), ref.FP8)
