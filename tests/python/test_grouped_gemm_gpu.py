"""GPU tests of hpc_ops.grouped_gemm against the float64 reference of
gemm_reference.py (dequantized inputs), over:

  * every layout (contiguous, masked, gathered) x scaling (bf16, fp8
    per-tensor, per-row, block) x row tile (16, 32, 64, 128, forced through
    expected_rows_per_group), with ragged groups: 0, 1, 7, 64, 300 rows;
  * model shapes (N, K from Qwen3-235B, Qwen3-30B, DeepSeek-V3 gate-up and
    down at TP8/EP8; 1, 8, 128 and 256 groups; 1..2048 rows per group and
    4097-row groups), and N / K tails (N = 144, K = 208);
  * strided weights, x and out; block scales in the column-major layout that
    hpc_ops.quantize_fp8 emits, end to end from bf16 activations.

Each call writes into a NaN-poisoned output; rows no group owns (padding past
cu_seqlens[G], masked rows past the count) must stay bit-identical, and input
rows no group owns hold NaN. CUDA-graph replay with new routings, and
torch.compile (fullgraph), match eager bit for bit. Bad arguments on device
tensors are ValueErrors that leave the output untouched.
"""
from __future__ import annotations

import pytest
import torch

import hpc_ops
from gemm_reference import (BF16, FP8, make_problem, output_rows, reference, unowned_mask)
from hpc_test_utils import capture_graph, expect_rejected, needs_family
from tolerances import assert_bf16_close, assert_bits_equal

pytestmark = [pytest.mark.gpu, needs_family("gemm")]

LAYOUTS = ("contiguous", "masked", "gathered")
SCALINGS = (None, "per_tensor", "per_row", "block")
# expected_rows_per_group values that select each row tile (16, 32, 64, 128).
TILE_HINTS = {16: 1, 32: 20, 64: 50, 128: 200}


def run_and_check(p, **extra):
    before = p.out.clone()
    y = hpc_ops.grouped_gemm(p.x, p.w, **p.kwargs(**extra))
    assert y.data_ptr() == p.out.data_ptr()
    for g, (expected, err) in enumerate(reference(p)):
        assert_bf16_close(output_rows(p, y, g), expected, f"group {g}", ref_err=err)
    mask = unowned_mask(p)
    assert_bits_equal(y[mask], before[mask], "rows owned by no group")
    return y


def scaling_id(s):
    return "bf16" if s is None else s


@pytest.mark.parametrize("tile", sorted(TILE_HINTS))
@pytest.mark.parametrize("scaling", SCALINGS, ids=scaling_id)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts_scalings_tiles(gen, layout, scaling, tile):
    counts = [0, 1, 7, 64, 300, 17, 0, 33]
    p = make_problem(gen, layout=layout, scaling=scaling, counts=counts, n=384, k=512)
    run_and_check(p, expected_rows_per_group=TILE_HINTS[tile])


# (groups, rows per group, N, K): model shapes. Qwen3-235B TP8 gate-up
# (2 x 1536 / 8 = 384, K 4096) and down (4096, 192); Qwen3-30B EP8 gate-up
# (1536, 2048); DeepSeek-V3 EP8 gate-up (4096, 7168) and down (7168, 2048);
# DeepSeek-V3 TP8 gate-up over 256 experts (512, 7168).
MODEL_CASES = [
    (128, "decode", 384, 4096),
    (128, "decode", 4096, 192),
    (16, "mixed", 1536, 2048),
    (8, "mixed", 4096, 7168),
    (8, "decode", 7168, 2048),
    (256, "decode", 512, 7168),
    (1, "large", 4096, 7168),
    (2, "ragged_large", 1536, 4096),
]


def model_counts(gen, groups, kind):
    if kind == "decode":  # 0..16 rows, some empty
        return torch.randint(0, 17, (groups,), generator=gen, device="cuda").tolist()
    if kind == "mixed":
        choices = [0, 1, 7, 64, 300]
        return [choices[i % len(choices)] for i in range(groups)]
    if kind == "large":
        return [2048]
    return [4097, 1000]


@pytest.mark.parametrize("scaling", SCALINGS, ids=scaling_id)
@pytest.mark.parametrize("groups,kind,n,k", MODEL_CASES,
                         ids=[f"G{g}-{kind}-N{n}-K{k}" for g, kind, n, k in MODEL_CASES])
def test_model_shapes(gen, groups, kind, n, k, scaling):
    if scaling == "block" and k % 128:
        pytest.skip(f"block scales need K % 128 == 0 (K = {k})")
    counts = model_counts(gen, groups, kind)
    p = make_problem(gen, layout="contiguous", scaling=scaling, counts=counts, n=n, k=k)
    run_and_check(p)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("scaling", (None, "per_tensor", "per_row"), ids=scaling_id)
def test_n_and_k_tails(gen, layout, scaling):
    p = make_problem(gen, layout=layout, scaling=scaling, counts=[5, 0, 40, 130], n=144, k=208)
    run_and_check(p)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("scaling", SCALINGS, ids=scaling_id)
def test_strided_tensors(gen, layout, scaling):
    p = make_problem(gen, layout=layout, scaling=scaling, counts=[3, 70, 0, 9], n=256, k=384,
                     strided=True, x_scale_layout="mn_major")
    assert not p.w.is_contiguous()
    run_and_check(p)


def test_masked_rows_past_the_count_are_untouched(gen):
    p = make_problem(gen, layout="masked", scaling="block", counts=[0, 5, 64, 17], n=256,
                     k=512, max_rows=96)
    run_and_check(p)


def test_gathered_reads_through_the_index(gen):
    # Every source row used by several groups, in a shuffled order.
    p = make_problem(gen, layout="gathered", scaling="per_row", counts=[40, 40, 40], n=256,
                     k=256, src_rows=7)
    run_and_check(p)


@pytest.mark.parametrize("layout", ("contiguous", "masked"))
def test_block_scales_from_quantize_fp8(gen, layout):
    """bf16 activations -> hpc_ops.quantize_fp8 per_group (1x128, column-major
    scales) -> grouped_gemm, against the bf16 product."""
    groups, n, k = 4, 256, 1024
    counts = [9, 0, 33, 128]
    w_real = torch.randn(groups, n, k, generator=gen, device="cuda") * 0.05
    # Weights to FP8 with one scale per 128 x 128 block.
    blocks = w_real.unflatten(1, (n // 128, 128)).unflatten(3, (k // 128, 128))
    w_scale = (blocks.abs().amax(dim=(2, 4)) / 448).float()
    w = (blocks / w_scale[:, :, None, :, None]).flatten(3).flatten(1, 2).to(FP8)
    if layout == "contiguous":
        a = torch.randn(sum(counts), k, generator=gen, device="cuda").to(BF16)
        x, x_scale = hpc_ops.quantize_fp8(a, "per_group")
        offsets = torch.tensor([0, 9, 9, 42, 170], dtype=torch.int32, device="cuda")
        y = hpc_ops.grouped_gemm(x, w, cu_seqlens=offsets, scaling="block", x_scale=x_scale,
                                 w_scale=w_scale)
        a_groups = [a[offsets[g]:offsets[g + 1]] for g in range(groups)]
        y_groups = [y[offsets[g]:offsets[g + 1]] for g in range(groups)]
    else:
        a = torch.randn(groups, 128, k, generator=gen, device="cuda").to(BF16)
        x, x_scale = hpc_ops.quantize_fp8(a.flatten(0, 1), "per_group")
        x = x.view(groups, 128, k)
        x_scale = x_scale.unflatten(0, (groups, 128))
        y = hpc_ops.grouped_gemm(x, w, layout="masked", scaling="block", x_scale=x_scale,
                                 w_scale=w_scale,
                                 rows_per_group=torch.tensor(counts, dtype=torch.int32,
                                                             device="cuda"))
        a_groups = [a[g, :c] for g, c in enumerate(counts)]
        y_groups = [y[g, :c] for g, c in enumerate(counts)]
    w_deq = (w.float().unflatten(1, (n // 128, 128)).unflatten(3, (k // 128, 128))
             * w_scale[:, :, None, :, None]).flatten(3).flatten(1, 2).double()
    x_rows = x.flatten(0, -2) if layout == "masked" else x
    x_deq = (x_rows.double() * x_scale.reshape(-1, k // 128).double().repeat_interleave(128, 1))
    if layout == "masked":
        x_deq = x_deq.view(groups, 128, k)
        x_groups = [x_deq[g, :c] for g, c in enumerate(counts)]
    else:
        x_groups = [x_deq[offsets[g]:offsets[g + 1]] for g in range(groups)]
    for g in range(groups):
        # Exact math on what the kernel reads (the quantized values and scales) ...
        expected = x_groups[g] @ w_deq[g].T
        err = 2.0 ** -11 * (x_groups[g].abs() @ w_deq[g].abs().T)
        assert_bf16_close(y_groups[g], expected, f"group {g}", ref_err=err)
        # ... and close to the bf16 product: FP8 rounding of x and w (~5% rms
        # per product) averages over K.
        exact = a_groups[g].double() @ w_real[g].double().T
        if exact.numel():
            rel = float((y_groups[g].double() - exact).norm() / exact.norm())
            assert rel < 0.05, f"group {g}: relative error {rel} against the bf16 product"


def test_empty_problems(gen):
    # No rows at all: nothing is launched, nothing written.
    w = torch.randn(4, 128, 256, device="cuda").to(BF16)
    x = torch.empty(0, 256, dtype=BF16, device="cuda")
    y = hpc_ops.grouped_gemm(x, w, cu_seqlens=torch.zeros(5, dtype=torch.int32, device="cuda"))
    assert y.shape == (0, 128)
    # Every group empty, padding rows present: nothing written.
    p = make_problem(gen, layout="contiguous", scaling="per_row", counts=[0, 0, 0], n=128,
                     k=128, pad_rows=5)
    run_and_check(p)
    p = make_problem(gen, layout="masked", scaling=None, counts=[0, 0], n=128, k=128)
    run_and_check(p)


def test_cuda_graph_replay_with_new_routing(gen):
    groups, n, k = 8, 512, 1024
    p = make_problem(gen, layout="contiguous", scaling="block", counts=[4] * groups, n=n, k=k,
                     pad_rows=48)
    total_rows = p.x.shape[0]

    def step():
        return hpc_ops.grouped_gemm(p.x, p.w, **p.kwargs(expected_rows_per_group=8))

    graph, y = capture_graph(step)
    for counts in ([0, 1, 7, 0, 20, 2, 0, 3], [9] * 8, [0] * 7 + [40]):
        offsets = [0]
        for c in counts:
            offsets.append(offsets[-1] + c)
        assert offsets[-1] <= total_rows
        p.cu_seqlens.copy_(torch.tensor(offsets, dtype=torch.int32))
        p.counts = counts
        p.owned = [torch.arange(offsets[g], offsets[g + 1], device="cuda") for g in range(groups)]
        p.x[:offsets[-1]] = (torch.randn(offsets[-1], k, generator=gen, device="cuda")).to(FP8)
        p.out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        for g, (expected, err) in enumerate(reference(p)):
            assert_bf16_close(output_rows(p, y, g), expected, f"replay group {g}", ref_err=err)
        eager = hpc_ops.grouped_gemm(p.x, p.w, **p.kwargs(out=None, expected_rows_per_group=8))
        owned = ~unowned_mask(p)
        assert_bits_equal(y[owned], eager[owned], "graph replay vs eager")


def test_torch_compile_matches_eager(gen):
    p = make_problem(gen, layout="gathered", scaling="per_row", counts=[3, 0, 50], n=256, k=256)

    def f(x, w, cu, idx, xs, ws):
        y = hpc_ops.grouped_gemm(x, w, layout="gathered", cu_seqlens=cu, row_index=idx,
                                 scaling="per_row", x_scale=xs, w_scale=ws)
        return y.float() * 2

    args = (p.x, p.w, p.cu_seqlens, p.row_index, p.x_scale, p.w_scale)
    compiled = torch.compile(f, fullgraph=True)
    got = compiled(*args)
    want = f(*args)
    owned = ~unowned_mask(p)
    assert_bits_equal(got[owned], want[owned], "torch.compile vs eager")


def test_bad_arguments_leave_the_output_untouched(gen):
    p = make_problem(gen, layout="contiguous", scaling="block", counts=[3, 5], n=256, k=256)
    out = p.out
    kw = p.kwargs()
    cases = [
        (dict(x=p.x.to(BF16)), "x is bfloat16 but w is float8_e4m3fn"),
        (dict(w=p.w[:, :, :128]), r"x.shape\[1\] = 256, expected 128"),
        (dict(x_scale=p.x_scale[:, :1]), "x_scale has shape"),
        (dict(w_scale=p.w_scale[:1]), "w_scale has shape"),
        (dict(cu_seqlens=p.cu_seqlens.long()), "cu_seqlens must be"),
        (dict(cu_seqlens=p.cu_seqlens[:2]), r"cu_seqlens.shape\[0\] = 2"),
        (dict(scaling="per_tensor"), "x_scale has shape"),
        (dict(scaling=None), "float8_e4m3fn inputs need scaling"),
        (dict(layout="masked"), "x must be 3-D"),
        (dict(row_index=torch.zeros(11, dtype=torch.int32, device="cuda")),
         "row_index was given"),
        (dict(x_scale=p.x_scale.cpu()), "x_scale"),
        (dict(layout="diagonal"), "layout = 'diagonal'"),
    ]
    for change, match in cases:
        args = dict(x=p.x, w=p.w, **kw)
        args.update(change)
        x = args.pop("x")
        w = args.pop("w")
        expect_rejected(lambda: hpc_ops.grouped_gemm(x, w, **args), match, buffers=[out])
    # Misaligned rows (x viewed at an odd element offset).
    x_store = torch.zeros(p.x.shape[0], 272, dtype=FP8, device="cuda")
    expect_rejected(lambda: hpc_ops.grouped_gemm(x_store[:, 1:257], p.w, **kw), "aligned",
                    buffers=[out])
