"""GPU tests of hpc_ops.router_gemm and hpc_ops.split_router_weight against
float64 references, over:

  * the weight split: three parts sum to the fp32 weight exactly, two to
    within 2^-16 |w| (including tiny, huge and zero weights);
  * tokens 1, 7, 16, 33, 100, 128, 300, 1000, 4097 x (N, K) of the DeepSeek-V3
    and Hunyuan-V3 routers, an N and K tail (144, 208), a single tile (16, 16)
    and a wide N (512): the CUDA-core kernel (up to 16 tokens; every size
    with HPC_OPS_ROUTER_GEMV_MAX_M=100000, none with -1, as
    scripts/gpu_check.sh runs them), split-K and unsplit launches of the
    tensor-core kernel, every token tile;
  * 2 and 3 parts, fp32 and bf16 output, strided x and out;
  * the accuracy bar: with 3 parts, mean error within 2x cuBLAS fp32's.

Outputs are NaN-poisoned before each call; the workspace's arrival counters
are back at zero after every call; repeated calls are bit-identical; CUDA-graph
replay with new inputs and torch.compile match eager bit for bit. Bad
arguments are ValueErrors that leave the output untouched.
"""
from __future__ import annotations

import pytest
import torch

import hpc_ops
from hpc_test_utils import capture_graph, expect_rejected, needs_family, poisoned
from tolerances import assert_bits_equal

pytestmark = [pytest.mark.gpu, needs_family("gemm")]

TOKENS = (1, 7, 16, 33, 100, 128, 300, 1000, 4097)
SHAPES = ((256, 7168), (192, 4096), (144, 208), (16, 16), (512, 2048))


def make(gen, m, n, k, parts, x_pad=0):
    x_full = torch.randn(m, k + x_pad, generator=gen, device="cuda").bfloat16()
    x = x_full[:, :k]
    # Weights of a router: small, with a spread of magnitudes.
    w = torch.randn(n, k, generator=gen, device="cuda") * 0.02
    w *= torch.exp2(torch.randn(n, 1, generator=gen, device="cuda"))
    return x, w, hpc_ops.split_router_weight(w, parts)


def check(y, x, w, parts):
    """y against x @ w^T in float64: the bound is the weight's representation
    error (2^-16 sum |x w| with two parts, none with three), the fp32 sums
    (2^-20 sum |x w|, far above what they reach) and the output rounding."""
    x64, w64 = x.double(), w.double()
    ref = x64 @ w64.T
    mag = x64.abs() @ w64.abs().T
    tol = (2.0 ** -16 if parts == 2 else 0.0) * mag + 2.0 ** -20 * mag + 1e-30
    if y.dtype == torch.bfloat16:
        tol = tol + 2.0 ** -8 * ref.abs()
    assert torch.isfinite(y).all(), "non-finite output"
    bad = (y.double() - ref).abs() > tol
    assert not bad.any(), (f"{int(bad.sum())} of {y.numel()} elements off; worst "
                           f"{((y.double() - ref).abs() / tol).max().item():.3g}x the bound")


@pytest.mark.parametrize("parts", (2, 3))
def test_split_is_exact_with_three_parts(gen, parts):
    w = torch.randn(300, 208, generator=gen, device="cuda")
    w *= torch.exp2(torch.randint(-60, 60, (300, 1), generator=gen, device="cuda").float())
    w[0, :8] = torch.tensor([0.0, -0.0, 2 ** -100, -3e38, 1.0, 2 ** -126, 65504.0, 1 + 2 ** -23])
    out = poisoned((parts, 300, 208), torch.bfloat16)
    wp = hpc_ops.split_router_weight(w, parts, out=out)
    assert wp.data_ptr() == out.data_ptr()
    approx = wp.double().sum(0)
    err = (approx - w.double()).abs()
    if parts == 3:
        assert torch.equal(approx, w.double())
    else:
        assert (err <= 2.0 ** -16 * w.double().abs()).all()
    assert_bits_equal(wp[0], w.bfloat16(), "part 0 is bf16(w)")


@pytest.mark.parametrize("n,k", SHAPES)
@pytest.mark.parametrize("m", TOKENS)
@pytest.mark.parametrize("parts", (2, 3))
def test_matches_float64(gen, m, n, k, parts):
    x, w, wp = make(gen, m, n, k, parts)
    out = poisoned((m, n), torch.float32)
    y = hpc_ops.router_gemm(x, wp, out=out)
    assert y.data_ptr() == out.data_ptr()
    check(y, x, w, parts)


@pytest.mark.parametrize("m", (1, 300))
def test_bf16_output_and_strides(gen, m):
    x, w, wp = make(gen, m, 256, 7168, 3, x_pad=64)
    assert x.stride(0) == 7168 + 64
    wide = poisoned((m, 256 + 32), torch.bfloat16)
    out = wide[:, 16:16 + 256]
    y = hpc_ops.router_gemm(x, wp, out=out)
    check(y, x, w, 3)
    assert torch.isnan(wide[:, :16].float()).all() and torch.isnan(wide[:, 16 + 256:].float()).all()
    y2 = hpc_ops.router_gemm(x.contiguous(), wp, out_dtype=torch.bfloat16)
    assert_bits_equal(y2, y.contiguous(), "strided vs contiguous")


@pytest.mark.parametrize("m", (1, 64, 1024))
def test_three_parts_within_twice_fp32_error(gen, m):
    """The accuracy bar (SPEC 2c): mean |error| vs float64 within 2x that of
    cuBLAS's fp32 GEMM on the same inputs."""
    x, w, wp = make(gen, m, 256, 7168, 3)
    ref = x.double() @ w.double().T
    ours = (hpc_ops.router_gemm(x, wp).double() - ref).abs().mean().item()
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        fp32 = (torch.mm(x.float(), w.T).double() - ref).abs().mean().item()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
    assert ours <= 2.0 * fp32, f"mean error {ours:.3g} vs cuBLAS fp32 {fp32:.3g}"


def test_workspace_is_left_zero_and_calls_repeat_bit_for_bit(gen):
    ws = hpc_ops.router_gemm_workspace()
    counters = ws[: 4 * torch.cuda.get_device_properties(0).multi_processor_count]
    for m in (1, 33, 300):  # split launches of different shapes reuse one workspace
        x, w, wp = make(gen, m, 192, 4096, 2)
        y1 = hpc_ops.router_gemm(x, wp, workspace=ws)
        y2 = hpc_ops.router_gemm(x, wp, workspace=ws)
        torch.cuda.synchronize()
        assert not counters.any(), "arrival counters not reset"
        assert_bits_equal(y1, y2, "repeated call")
        check(y1, x, w, 2)


def test_graph_replay_with_new_inputs(gen):
    x, w, wp = make(gen, 16, 256, 7168, 2)
    out = torch.empty(16, 256, device="cuda")
    graph, _ = capture_graph(lambda: hpc_ops.router_gemm(x, wp, out=out))
    for _ in range(3):
        x.copy_(torch.randn(16, 7168, generator=gen, device="cuda").bfloat16())
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        assert_bits_equal(out, hpc_ops.router_gemm(x, wp), "graph replay vs eager")


def test_torch_compile_matches_eager(gen):
    x, w, wp = make(gen, 7, 192, 4096, 3)
    compiled = torch.compile(lambda a, b: hpc_ops.router_gemm(a, b), fullgraph=True)
    assert_bits_equal(compiled(x, wp), hpc_ops.router_gemm(x, wp), "torch.compile vs eager")


def test_empty_batch_launches_nothing(gen):
    x, w, wp = make(gen, 1, 256, 64, 2)
    y = hpc_ops.router_gemm(x[:0], wp)
    assert y.shape == (0, 256)


def test_bad_arguments(gen):
    x, w, wp = make(gen, 4, 256, 4096, 2)
    out = poisoned((4, 256), torch.float32)
    run = lambda **kw: hpc_ops.router_gemm(kw.pop("x", x), kw.pop("wp", wp), out=out, **kw)  # noqa: E731
    expect_rejected(lambda: run(x=x.float()), r"x must be .*bfloat16", [out])
    expect_rejected(lambda: run(wp=wp.float()), r"w_parts must be .*bfloat16", [out])
    expect_rejected(lambda: run(wp=torch.cat([wp, wp])), r"parts = w_parts.shape\[0\] = 4", [out])
    expect_rejected(lambda: run(x=x[:, :4000]), r"x.shape\[1\].*K, w_parts.shape\[2\]", [out])
    expect_rejected(lambda: run(wp=wp[:, :, :4008].contiguous(), x=x[:, :4008].contiguous()),
                    r"K = w_parts.shape\[2\] = 4008.*multiple of 16", [out])
    expect_rejected(lambda: run(workspace=torch.zeros(64, dtype=torch.uint8, device="cuda")),
                    r"workspace has 64 bytes", [out])
    expect_rejected(lambda: hpc_ops.router_gemm(x, wp, out=torch.empty(4, 255, device="cuda")),
                    r"out.shape\[1\]", [out])
    expect_rejected(lambda: hpc_ops.router_gemm(x, wp, out=torch.empty(4, 256, device="cuda",
                                                                     dtype=torch.float16)),
                    r"out must be", [out])
    expect_rejected(lambda: hpc_ops.router_gemm(x, wp, out_dtype=torch.float16), r"out_dtype", [])
    expect_rejected(lambda: hpc_ops.split_router_weight(w.bfloat16()), r"w must be .*float32", [])
    expect_rejected(lambda: hpc_ops.split_router_weight(w, 4), r"parts = w_parts.shape\[0\] = 4", [])
