"""GPU tests of hpc_ops.fused_allreduce_residual_rmsnorm on one GPU.

The ranks of TpCommunicator.local_group live in this process on one device,
each calling the operator on its own stream, so the one-shot and two-shot
protocols (pushes into the peers' buffers, the sentinel as the flag, the two
alternating buffers) run for real with 1, 2, 4 and 8 ranks; only NVLink is
missing. Every output is poisoned before the call. The sum of the ranks' x is
float32 in rank order, so residual_out is compared bit for bit with
bf16(bf16(sum) + residual), and every rank must return the same bits.
Multi-process runs (IPC set-up, NCCL path) are in test_comm_multiprocess_gpu.py.
"""
from __future__ import annotations

import pytest
import torch

import hpc_ops
import reference as ref
from hpc_ops.comm import TpCommunicator, fused_allreduce_residual_rmsnorm
from hpc_test_utils import (expect_rejected, needs_family, norm_weight, poisoned, poisoned_out,
                            quant_id, scale_storage, static_scale_for, varied)
from tolerances import assert_bits_equal, assert_output_close

pytestmark = [pytest.mark.gpu, needs_family("comm")]

BF16 = torch.bfloat16
EPS = 1e-6


def _group(world, hidden, max_tokens, **kw):
    kw.setdefault("timeout_ms", 30000)  # a protocol bug fails the test instead of hanging it
    return TpCommunicator.local_group(world, hidden=hidden, max_tokens=max_tokens, **kw)


class _Ranks:
    """Per-rank streams and the fork/join with the current stream."""

    def __init__(self, world):
        self.streams = [torch.cuda.Stream() for _ in range(world)]

    def run(self, fn):
        """fn(r) on rank r's stream for every rank; returns the results."""
        main = torch.cuda.current_stream()
        results = []
        for r, s in enumerate(self.streams):
            s.wait_stream(main)
            with torch.cuda.stream(s):
                results.append(fn(r))
        for s in self.streams:
            main.wait_stream(s)
        return results


def _inputs(gen, world, tokens, hidden):
    xs = [varied(gen, tokens, hidden, scale=0.5) for _ in range(world)]
    residual = varied(gen, tokens, hidden)
    return xs, residual


def _check_rank_results(results, xs, residual, w, mode, static=None):
    s = ref.allreduce_sum_ref(xs)
    y, residual_sum = ref.add_rms_norm_ref(s, residual, w, EPS)
    first = None
    for r, result in enumerate(results):
        out, res_out = result[0], result[1]
        assert_bits_equal(res_out, residual_sum, f"rank {r}: residual_out vs bf16(sum + residual)")
        if mode is None:
            assert_output_close(out, y, mode)
        else:
            assert_output_close((out, result[2]), y, mode, static_scale=static)
        if first is None:
            first = out
        else:
            assert_bits_equal(out, first, f"rank {r}'s out differs from rank 0's")


def _call_all(ranks, comms, xs, residuals, w, mode=None, static=None):
    tokens, hidden = xs[0].shape
    outs = [poisoned_out((tokens, hidden), mode) for _ in comms]
    res_outs = [poisoned((tokens, hidden), BF16) for _ in comms]
    scales = [scale_storage(mode, (tokens,), hidden) for _ in comms]
    return ranks.run(lambda r: fused_allreduce_residual_rmsnorm(
        xs[r], residuals[r], w, EPS, comms[r], quant=mode, scale=static, out=outs[r],
        residual_out=res_outs[r], scale_out=scales[r]))


# ----------------------------------------------------------------------------
# Sweeps
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["oneshot", "twoshot"])
@pytest.mark.parametrize("tokens", [1, 7, 128])
@pytest.mark.parametrize("hidden", [4096, 5120, 7168, 8200])
@pytest.mark.parametrize("world", [1, 2, 4, 8])
def test_allreduce_norm(gen, monkeypatch, world, hidden, tokens, path):
    monkeypatch.setenv("HPC_OPS_ALLREDUCE_PATH", path)
    comms = _group(world, hidden, 128)
    expected_path = "one_shot" if path == "oneshot" and (
        tokens * hidden <= comms[0]._comm.one_shot_capacity_elems) else "two_shot"
    assert all(c.path_for(tokens) == expected_path for c in comms)
    xs, residual = _inputs(gen, world, tokens, hidden)
    w = norm_weight(gen, hidden)
    xs_before = [x.clone() for x in xs]
    results = _call_all(_Ranks(world), comms, xs, [residual] * world, w)
    torch.cuda.synchronize()
    _check_rank_results(results, xs, residual, w, None)
    for x, x0 in zip(xs, xs_before):
        assert_bits_equal(x, x0, "x (an input) was modified")
    assert all(c.device_error() == "" for c in comms)


@pytest.mark.parametrize("world", [2, 8])
@pytest.mark.parametrize("hidden", [4096, 7168])
def test_allreduce_norm_4096_tokens(gen, world, hidden):
    """The largest size of the issue's sweep, on the default path (two-shot past a few tokens)."""
    tokens = 4096
    comms = _group(world, hidden, tokens)
    xs, residual = _inputs(gen, world, tokens, hidden)
    w = norm_weight(gen, hidden)
    results = _call_all(_Ranks(world), comms, xs, [residual] * world, w)
    torch.cuda.synchronize()
    _check_rank_results(results, xs, residual, w, None)


@pytest.mark.parametrize("mode", ["per_tensor", "per_token", "per_group"], ids=quant_id)
@pytest.mark.parametrize("world,tokens", [(2, 7), (4, 33), (8, 1)])
def test_allreduce_norm_fp8_out(gen, world, tokens, mode):
    hidden = 7168
    comms = _group(world, hidden, 64)
    xs, residual = _inputs(gen, world, tokens, hidden)
    w = norm_weight(gen, hidden)
    s = ref.allreduce_sum_ref(xs)
    y, _ = ref.add_rms_norm_ref(s, residual, w, EPS)
    static = static_scale_for(y, clip_at=0.8) if mode == "per_tensor" else None
    results = _call_all(_Ranks(world), comms, xs, [residual] * world, w, mode, static)
    torch.cuda.synchronize()
    _check_rank_results(results, xs, residual, w, mode, static)


def test_strided_rows_and_in_place_residual(gen):
    """x a column slice of a wider tensor; residual updated in place; 3-D input."""
    world, tokens, hidden = 4, 9, 4096
    comms = _group(world, hidden, 16)
    wide = [varied(gen, tokens, hidden + 64, scale=0.5) for _ in range(world)]
    xs = [t[:, 32:32 + hidden] for t in wide]
    residuals = [varied(gen, tokens, hidden) for _ in range(world)]
    residuals = [residuals[0].clone() for _ in range(world)]  # the same residual on every rank
    residual0 = residuals[0].clone()
    w = norm_weight(gen, hidden)
    ranks = _Ranks(world)
    results = ranks.run(lambda r: fused_allreduce_residual_rmsnorm(
        xs[r], residuals[r], w, EPS, comms[r], residual_out=residuals[r]))
    torch.cuda.synchronize()
    _check_rank_results(results, [x.contiguous() for x in xs], residual0, w, None)
    assert all(res is residuals[r] for r, (_, res) in enumerate(results))
    # leading dims are flattened
    xs3 = [varied(gen, 2, 3, hidden) for _ in range(world)]
    res3 = varied(gen, 2, 3, hidden)
    results = ranks.run(lambda r: fused_allreduce_residual_rmsnorm(xs3[r], res3, w, EPS, comms[r]))
    torch.cuda.synchronize()
    assert results[0][0].shape == (2, 3, hidden)
    _check_rank_results([(o.view(6, hidden), ro.view(6, hidden)) for o, ro in results],
                        [x.view(6, hidden) for x in xs3], res3.view(6, hidden), w, None)


@pytest.mark.parametrize("world", [2, 8])
def test_repeated_calls_no_stale_data(gen, world):
    """Calls of changing sizes and both paths, back to back without a sync: the
    alternating buffers and the sentinel reset must leave nothing behind."""
    hidden = 5120
    comms = _group(world, hidden, 64)
    ranks = _Ranks(world)
    w = norm_weight(gen, hidden)
    calls = []
    for tokens in [1, 64, 7, 7, 33, 1, 64, 2]:
        xs, residual = _inputs(gen, world, tokens, hidden)
        calls.append((xs, residual, _call_all(ranks, comms, xs, [residual] * world, w)))
    torch.cuda.synchronize()
    for xs, residual, results in calls:
        _check_rank_results(results, xs, residual, w, None)


def test_zero_tokens_is_a_no_op(gen):
    comms = _group(2, 4096, 8)
    x = torch.empty(0, 4096, dtype=BF16, device="cuda")
    w = norm_weight(gen, 4096)
    out, res = fused_allreduce_residual_rmsnorm(x, x, w, EPS, comms[0])
    assert out.shape == (0, 4096) and res.shape == (0, 4096)


@pytest.mark.parametrize("world", [2, 4])
def test_cuda_graph_replay(gen, world):
    """Each rank's call captured in its own graph; replays on the ranks' streams
    with new inputs copied in between (the device-side epoch alternates buffers)."""
    tokens, hidden = 16, 7168
    comms = _group(world, hidden, 16)
    w = norm_weight(gen, hidden)
    static_x = [torch.zeros(tokens, hidden, dtype=BF16, device="cuda") for _ in range(world)]
    static_res = torch.zeros(tokens, hidden, dtype=BF16, device="cuda")
    outs = [poisoned((tokens, hidden), BF16) for _ in range(world)]
    res_outs = [poisoned((tokens, hidden), BF16) for _ in range(world)]
    ranks = _Ranks(world)

    def call(r):
        return fused_allreduce_residual_rmsnorm(static_x[r], static_res, w, EPS, comms[r],
                                                out=outs[r], residual_out=res_outs[r])

    ranks.run(call)  # warm-up outside the capture
    torch.cuda.synchronize()
    graphs = []
    for r, s in enumerate(ranks.streams):
        g = torch.cuda.CUDAGraph()
        with torch.cuda.stream(s):
            with torch.cuda.graph(g, stream=s):
                call(r)
        graphs.append(g)
    for _ in range(3):
        xs, residual = _inputs(gen, world, tokens, hidden)
        for r in range(world):
            static_x[r].copy_(xs[r])
        static_res.copy_(residual)
        for o in outs + res_outs:
            o.fill_(float("nan"))
        ranks.run(lambda r: graphs[r].replay())
        torch.cuda.synchronize()
        _check_rank_results(list(zip(outs, res_outs)), xs, residual, w, None)


def test_timeout_reports_mismatched_calls(gen):
    """Rank 1 never calls: with a timeout, rank 0's kernel gives up, writes NaN,
    and the communicator reports the wait and refuses further calls."""
    hidden = 4096
    comms = _group(2, hidden, 8, timeout_ms=200)
    x = varied(gen, 4, hidden)
    w = norm_weight(gen, hidden)
    out, _ = fused_allreduce_residual_rmsnorm(x, x, w, EPS, comms[0])
    message = comms[0].device_error()
    assert "waited more than 200 ms for rank 1" in message
    assert torch.isnan(out.float()).any()
    with pytest.raises(ValueError, match="timed out in an earlier call"):
        fused_allreduce_residual_rmsnorm(x, x, w, EPS, comms[0])


# ----------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------
def test_bad_arguments(gen):
    hidden = 4096
    comms = _group(2, hidden, 8)
    c = comms[0]
    x = varied(gen, 4, hidden)
    w = norm_weight(gen, hidden)
    out = poisoned((4, hidden), BF16)
    f = fused_allreduce_residual_rmsnorm
    expect_rejected(lambda: f(varied(gen, 4, 5120), varied(gen, 4, 5120), norm_weight(gen, 5120),
                              EPS, c), r"x has shape \[4, 5120\], expected \[..., 4096\]")
    expect_rejected(lambda: f(varied(gen, 9, hidden), varied(gen, 9, hidden), w, EPS, c),
                    r"9 rows, more than the local group's max_tokens = 8")
    expect_rejected(lambda: f(x.float(), x, w, EPS, c, out=out), "x must be bfloat16", [out])
    expect_rejected(lambda: f(x, varied(gen, 3, hidden), w, EPS, c, out=out), "residual", [out])
    expect_rejected(lambda: f(x, x, w[:-8], EPS, c, out=out), "weight", [out])
    expect_rejected(lambda: f(x, x, w, -1.0, c, out=out), "eps", [out])
    expect_rejected(lambda: f(x, x, w, EPS, c, out=poisoned((4, hidden), torch.float16)), "out")
    expect_rejected(lambda: f(x, x, w, EPS, "comm"), "comm must be a TpCommunicator")
    expect_rejected(lambda: f(x.cpu(), x.cpu(), w.cpu(), EPS, c), "x must be on a CUDA device")
    with pytest.raises(ValueError, match="hidden = 12, expected a positive multiple of 8"):
        _group(2, 12, 8)
    with pytest.raises(ValueError, match="world = 9"):
        _group(9, hidden, 8)
    with pytest.raises(ValueError, match="torch.distributed is not initialized"):
        TpCommunicator(hidden=hidden)
