"""GPU tests of hpc_ops.rope_qk_norm_kv_write (RoPE + optional per-head QK
RMSNorm + paged KV-cache write, BF16 or FP8) and of hpc_ops.split_qkv.

Numerics: every case builds a whole call with rope_reference.make_rope_problem
(requests of (kv_len, n_new) rows: prefill chunks over earlier tokens, decode
tokens, empty requests, NaN inputs in the padding rows past cu_seqlens[B]; a
shuffled page table with unused pages; every cache slot poisoned except the
requests' earlier tokens; poisoned out_q and output scales) and compares with
the float64 reference:
  * q_out (bf16: assert_bf16_close, fp8: assert_fp8_close with the given or
    the dynamic per-(token, head) scales) on every row; padding rows exactly
    zero; rows rotated by a position outside [0, max_position) all NaN;
  * the written cache slots: k like q_out; v bit for bit (bf16) or within the
    FP8 rules (v / v_scale, per tensor or per kv head); per-token k scales;
  * every other cache slot (and per-token k scale) bit-identical to before,
    the inputs bit-identical, the columns of a wider out_q allocation untouched.
The cases are a hand-picked spread (not the cross product) over model shapes
(Qwen3 64/4 with QK norm, Llama-70B 64/8, Llama-8B 32/8, partial rotary 64 of
128, D = 64 and 256, Hq not a multiple of Hkv), both rotation styles, both
norm orders, cos_sin_cache float32/bfloat16, norm weights bfloat16/float32,
explicit int32/int64 positions, every page size (1, 16, 32, 64, 128 and one
odd size), the NHD/HND/interleaved layouts, the packed / split / separate
input forms, and the BF16 cache and the three FP8 schemes with a bf16 or fp8
q_out (static scales with clip < 1 saturate).

Edge rules: a padded request (page-table row of -1) writes nothing; rotation
positions outside the cos/sin table give NaN q rows and no write; cache
positions below 0 or past the page table write nothing.

Round trip: the cache written by two calls (a prefill, then q_len decode
tokens per request) is read by hpc_ops.decode_attention with this op's q_out
(and q scales), compared with decode_attention_ref on the dequantized values.

CUDA graph: one capture serves steps with new lengths, positions, tokens and
scales written into the captured tensors (and a padded request), each replay
checked against the reference and bit for bit against an eager call.
torch.compile (fullgraph) gives the eager bits. Argument errors with device
tensors (and host tensors among device ones) are ValueErrors naming the
argument, and leave the outputs untouched.

Kernels: every test runs twice, with the per-row kernel and with the
streaming kernel forced (HPC_OPS_ROPE_KERNEL), so each case covers both
whatever its row count; test_kernels_agree_bit_for_bit checks that the two,
and the automatic choice, give the same bits on a prefill large enough for
the streaming CTAs to cycle through their stages.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pytest
import torch

import hpc_ops
from attention_reference import decode_attention_ref, dequantized
from hpc_test_utils import capture_graph, expect_rejected, needs_family
from reference import FP8
from rope_reference import (PER_TENSOR, Q_TOKEN_HEAD, QK_TOKEN_HEAD, bits, build_invalid_call,
                            invalid_call_names, make_rope_problem, select_rows, slot_values)
from tolerances import (SCALE_RTOL_EXACT, assert_bf16_close, assert_bits_equal,
                        assert_fp8_close)

pytestmark = [pytest.mark.gpu, needs_family("rope")]

BF16 = torch.bfloat16
F32 = torch.float32
I32 = torch.int32
I64 = torch.int64
NT, RT = "norm_then_rope", "rope_then_norm"
PT, QT, QK = PER_TENSOR, Q_TOKEN_HEAD, QK_TOKEN_HEAD
ATTN_ATOL, ATTN_RTOL = 2e-2, 2e-2   # as test_decode_attention_gpu.py


@pytest.fixture(autouse=True, params=["per_row", "stream"])
def rope_kernel(request, monkeypatch):
    """Forces one of the two kernels for the whole test (the op reads
    HPC_OPS_ROPE_KERNEL at every call)."""
    monkeypatch.setenv("HPC_OPS_ROPE_KERNEL", request.param)
    return request.param


def rope(*args, **kwargs):
    """hpc_ops.rope_qk_norm_kv_write, looked up at call time (a build without
    the 'rope' family skips these tests instead of failing at import)."""
    return hpc_ops.rope_qk_norm_kv_write(*args, **kwargs)


# ----------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------
def unpack(problem, result):
    """(q_out, q_scale) of a call's result: (q_out, q_scale) for an fp8 q_out
    with dynamic scales, else q_out alone (q_scale: the given one or None)."""
    if problem.dynamic_q:
        assert isinstance(result, tuple) and len(result) == 2, \
            f"an fp8 q_out under {problem.kv_scheme} returns (q_out, q_scale), got {type(result)}"
        return result
    assert isinstance(result, torch.Tensor), f"expected q_out alone, got {type(result)}"
    return result, problem.q_scale


def check_q_out(problem, expected, q_out, q_scale, what="q_out"):
    assert q_out.dtype == problem.out_q.dtype and tuple(q_out.shape) == tuple(expected.q.shape), \
        f"{what}: {q_out.dtype}{tuple(q_out.shape)}"
    nan_rows, padding = expected.nan_rows, expected.padding
    if bool(nan_rows.any()):
        got = select_rows(q_out, nan_rows).float()
        assert bool(got.isnan().all()), \
            f"{what}: rows rotated by a position outside [0, max_position) must be all NaN"
    if bool(padding.any()):
        got = select_rows(q_out, padding).float()
        assert bool((got == 0).all()), f"{what}: rows past cu_seqlens[B] must be zero"
    live = ~nan_rows
    got, y, err = select_rows(q_out, live), expected.q[live], expected.q_err[live]
    if not problem.q_fp8:
        assert_bf16_close(got, y, what, ref_err=err)
    elif problem.dynamic_q:
        assert q_scale.dtype == F32 and tuple(q_scale.shape) == tuple(expected.q.shape[:2]), \
            f"{what} scale: {q_scale.dtype}{tuple(q_scale.shape)}, expected float32 [rows, Hq]"
        assert_fp8_close(got, q_scale[live][..., None], y, "per_token", what=what, ref_err=err)
    else:
        assert_fp8_close(got, q_scale, y, "per_tensor", static_scale=q_scale, what=what,
                         ref_err=err)


def check_cache(problem, expected, before, what=""):
    """The written slots against the reference; every other slot (and
    per-token k scale) bit-identical to `before`."""
    e = expected
    k_got = slot_values(problem.k_cache, e.pages, e.slots)
    v_got = slot_values(problem.v_cache, e.pages, e.slots)
    if not problem.kv_fp8:
        assert_bf16_close(k_got, e.k, f"{what}k_cache (written slots)", ref_err=e.k_err)
        assert_bits_equal(v_got, e.v.to(BF16), f"{what}v_cache (written slots): v as given")
    elif problem.kv_scheme == QK:
        k_scale = slot_values(problem.k_scale, e.pages, e.slots)
        assert_fp8_close(k_got, k_scale[..., None], e.k, "per_token", what=f"{what}k_cache",
                         ref_err=e.k_err)
        for h in range(problem.v_scale.shape[0]):
            s = problem.v_scale[h:h + 1]
            assert_fp8_close(v_got[:, h], s, e.v[:, h], "per_tensor", static_scale=s,
                             scale_rtol=SCALE_RTOL_EXACT, what=f"{what}v_cache head {h}")
    else:
        assert_fp8_close(k_got, problem.k_scale, e.k, "per_tensor", static_scale=problem.k_scale,
                         what=f"{what}k_cache", ref_err=e.k_err)
        assert_fp8_close(v_got, problem.v_scale, e.v, "per_tensor", static_scale=problem.v_scale,
                         scale_rtol=SCALE_RTOL_EXACT, what=f"{what}v_cache")
    others = ~e.written_mask(problem.k_cache.shape[0], problem.page_size)
    names = ("k_cache", "v_cache") + (("k_scale",) if problem.kv_scheme == QK else ())
    for name in names:
        assert_bits_equal(bits(getattr(problem, name))[others], bits(before[name])[others],
                          f"{what}{name}: slots of other tokens changed")


def check_untouched_inputs(problem, before, what=""):
    for name, t in problem.inputs().items():
        assert_bits_equal(t, before[name], f"{what}{name} (an input) was modified")
    if problem.out_q_base is not problem.out_q:  # out_q = base[:, 1:]
        assert_bits_equal(problem.out_q_base[:, 0], before["out_q_base"][:, 0],
                          f"{what}out_q: a head outside the view was written")


def check_call(problem, expected, before, result, what=""):
    q_out, q_scale = unpack(problem, result)
    assert q_out is problem.out_q, "the result must be the given out_q"
    if problem.dynamic_q:
        assert q_scale is problem.q_scale, "the result must hold the given q_scale"
    check_q_out(problem, expected, q_out, q_scale, what=f"{what}q_out")
    check_cache(problem, expected, before, what)
    check_untouched_inputs(problem, before, what)
    return q_out, q_scale


def run_and_check(problem, form: Optional[str] = None, what=""):
    """Calls the op on the problem (in `form`) and checks everything; (q_out, q_scale)."""
    expected = problem.expected()
    before = problem.snapshot()
    args, kwargs = problem.call(form)
    result = rope(*args, **kwargs)
    torch.cuda.synchronize()
    return check_call(problem, expected, before, result, what)


def restore_outputs_(problem, before):
    """Puts every output of the problem (cache, scales, out_q) back as in `before`."""
    for name, t in problem.outputs().items():
        t.copy_(before[name])


def output_bits(problem) -> dict:
    return {name: bits(t) for name, t in problem.outputs().items()}


def assert_same_outputs(got: dict, want: dict, what: str):
    for name in want:
        assert_bits_equal(got[name], want[name], f"{what}: {name}")


# ----------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------
# (kv_len, n_new) per request.
DECODE_1 = ((1, 1), (17, 1), (300, 1), (4097, 1), (64, 1), (1000, 1), (33, 1), (129, 1))
DECODE_4 = ((4, 4), (7, 4), (1000, 4), (4097, 4), (129, 4), (65, 4))
PREFILL_1000 = ((1000, 1000),)
PREFILL_4097 = ((4097, 4097),)
CHUNKS = ((3000, 1000), (1007, 7), (2048, 33))          # chunks after earlier chunks
MIXED = ((1000, 1000), (37, 1), (4097, 4), (0, 0), (300, 7), (1, 1), (2049, 1), (77, 0))
SMALL = ((300, 300), (37, 1), (129, 4), (0, 0), (64, 7), (1, 1))
SHORT = ((1, 1), (7, 7), (8, 1), (7, 0))
EMPTY = ((0, 0), (5, 0), (300, 0))                      # no rows at all: padding only
LENS_IDS = {DECODE_1: "decode1", DECODE_4: "decode4", PREFILL_1000: "prefill1000",
            PREFILL_4097: "prefill4097", CHUNKS: "chunks", MIXED: "mixed", SMALL: "small",
            SHORT: "short", EMPTY: "empty"}
DTYPE_IDS = {F32: "f32", BF16: "bf16", I32: "i32", I64: "i64"}
SCHEME_IDS = {None: "bf16kv", PT: "fp8pt", QT: "fp8qt", QK: "fp8qk"}


@dataclass(frozen=True)
class Case:
    lens: tuple
    hq: int
    hkv: int
    d: int = 128
    rot: Optional[int] = None       # rotary_dim (None: the default, D)
    style: str = "neox"
    norm: Optional[str] = None      # QK norm order, None: no QK norm
    wdtype: torch.dtype = BF16      # norm weights
    cs: torch.dtype = F32           # cos_sin_cache
    pos: Optional[torch.dtype] = None  # explicit positions of this dtype
    page_size: int = 16
    layout: str = "NHD"
    form: str = "split"
    scheme: Optional[str] = None    # FP8 cache scheme (None: BF16 cache)
    q_fp8: bool = False
    pad: int = 0                    # padding rows past cu_seqlens[B]
    clip: float = 1.0               # static FP8 scales amax * clip / 448
    out_strided: bool = False
    table_pad: int = 0
    eps: float = 1e-6
    tag: str = ""

    def build(self, gen):
        return make_rope_problem(
            gen, self.lens, self.hq, self.hkv, self.d, page_size=self.page_size,
            layout=self.layout, form=self.form, rotary_dim=self.rot, style=self.style,
            norm_order=self.norm, norm_dtype=self.wdtype, cos_sin_dtype=self.cs,
            positions=self.pos, eps=self.eps, scheme=self.scheme, q_fp8=self.q_fp8,
            pad_rows=self.pad, clip=self.clip, out_strided=self.out_strided,
            table_pad=self.table_pad)

    @property
    def id(self) -> str:
        parts = [self.tag] if self.tag else []
        parts += [LENS_IDS.get(self.lens, f"B{len(self.lens)}"), f"h{self.hq}x{self.hkv}",
                  f"d{self.d}"]
        parts += [f"rot{self.rot}"] if self.rot is not None else []
        parts += ["ilv" if self.style == "interleaved" else "neox"]
        if self.norm is not None:
            parts += [("nt" if self.norm == NT else "rt") + "-w" + DTYPE_IDS[self.wdtype]]
        parts += [f"cs{DTYPE_IDS[self.cs]}"]
        parts += [f"pos{DTYPE_IDS[self.pos]}"] if self.pos is not None else []
        parts += [f"ps{self.page_size}", self.layout, self.form, SCHEME_IDS[self.scheme]]
        parts += ["q8"] if self.q_fp8 else []
        parts += [f"clip{self.clip:g}"] if self.clip != 1.0 else []
        parts += [f"pad{self.pad}"] if self.pad else []
        parts += ["outstrided"] if self.out_strided else []
        parts += [f"tpad{self.table_pad}"] if self.table_pad else []
        parts += [f"eps{self.eps:g}"] if self.eps != 1e-6 else []
        return "-".join(parts)


def _case_id(case: Case) -> str:
    return case.id


MODEL_CASES = [
    # Qwen3: 64 q / 4 kv heads of 128, QK norm before the rotation.
    Case(MIXED, 64, 4, norm=NT, form="packed", pad=3, tag="qwen3"),
    Case(DECODE_1, 64, 4, norm=NT, scheme=QK, q_fp8=True, page_size=64, layout="HND",
         tag="qwen3"),
    # Llama-3 70B / 8B.
    Case(CHUNKS, 64, 8, pos=I64, page_size=32, layout="interleaved", form="separate", eps=1e-5,
         tag="llama70b"),
    Case(DECODE_4, 64, 8, scheme=PT, q_fp8=True, clip=0.5, page_size=128, pad=5,
         tag="llama70b"),
    Case(PREFILL_4097, 32, 8, cs=BF16, page_size=1, layout="HND", form="packed", tag="llama8b"),
    Case(DECODE_1, 32, 8, style="interleaved", layout="interleaved", out_strided=True,
         tag="llama8b"),
    # Partial rotary: 64 of 128 dims (neox; interleaved as in GLM).
    Case(MIXED, 32, 2, rot=64, norm=RT, wdtype=F32, page_size=64, layout="HND", tag="partial"),
    Case(DECODE_4, 32, 2, rot=64, style="interleaved", scheme=QT, q_fp8=True,
         layout="interleaved", tag="partial"),
    # Head dims 64 and 256.
    Case(MIXED, 16, 16, d=64, norm=NT, wdtype=F32, pos=I32, page_size=32, tag="d64"),
    Case(SHORT, 12, 4, d=64, rot=32, style="interleaved", page_size=1, form="packed", pad=2,
         tag="d64"),
    Case(CHUNKS, 8, 4, d=256, norm=NT, cs=BF16, pos=I32, table_pad=3, tag="d256"),
    Case(DECODE_1, 16, 8, d=256, norm=RT, scheme=QK, q_fp8=True, page_size=128,
         layout="interleaved", form="separate", tag="d256"),
    # Rows so wide that the streaming kernel's ring holds 2 and 3 of them (the
    # producer's v copy of a row then goes out one row before its stage is
    # refilled, which with 2 stages is right after the row's own load), each
    # CTA going round the ring several times.
    Case(PREFILL_4097, 64, 8, d=256, form="packed", layout="HND", tag="d256-2stages"),
    Case(PREFILL_1000, 56, 4, d=256, norm=NT, form="packed", tag="d256-3stages"),
    # Hq not a multiple of Hkv; one head each; many heads of an odd count.
    Case(PREFILL_1000, 6, 4, page_size=32, form="separate", tag="h6x4"),
    Case(DECODE_4, 1, 1, layout="HND", pad=1, tag="h1x1"),
    Case(SHORT, 80, 5, norm=NT, scheme=QT, page_size=64, tag="h80x5"),
]

# Rotation and QK norm: each style meets no norm and both orders, both weight
# and cos/sin dtypes, no / int32 / int64 positions; the smallest rotary dims.
ROTATION_CASES = [
    Case(SMALL, 16, 4),
    Case(SMALL, 16, 4, norm=NT, cs=BF16, pos=I32),
    Case(SMALL, 16, 4, norm=RT, wdtype=F32, pos=I64, form="packed"),
    Case(SMALL, 16, 4, style="interleaved", cs=BF16, pos=I64, form="separate"),
    Case(SMALL, 16, 4, style="interleaved", norm=NT, wdtype=F32, layout="HND"),
    Case(SMALL, 16, 4, style="interleaved", norm=RT, cs=BF16, pos=I32, layout="interleaved"),
    Case(SMALL, 16, 4, d=64, rot=16, norm=RT, pos=I64),                 # smallest neox rotary
    Case(SMALL, 8, 2, d=256, rot=8, style="interleaved", norm=NT),      # smallest interleaved
    Case(SMALL, 8, 8, rot=120, style="interleaved", norm=RT, cs=BF16),  # a multiple of 8, not 16
    Case(SMALL, 8, 2, d=256, rot=128, norm=NT, wdtype=F32, pos=I32),
]

# Every page size in every layout (input forms, padding and table padding
# spread over them), plus a page size decode attention does not take.
PAGE_CASES = [
    Case(SMALL, 16, 2, page_size=1, layout="NHD", form="packed"),
    Case(SMALL, 16, 2, page_size=1, layout="HND", form="split", pad=2),
    Case(SMALL, 16, 2, page_size=1, layout="interleaved", form="separate", table_pad=4),
    Case(SMALL, 16, 2, page_size=16, layout="NHD", form="separate", pad=1),
    Case(SMALL, 16, 2, page_size=16, layout="HND", form="packed", table_pad=1),
    Case(SMALL, 16, 2, page_size=16, layout="interleaved", form="split"),
    Case(SMALL, 16, 2, page_size=32, layout="NHD", form="split", table_pad=2),
    Case(SMALL, 16, 2, page_size=32, layout="HND", form="separate"),
    Case(SMALL, 16, 2, page_size=32, layout="interleaved", form="packed", pad=7),
    Case(SMALL, 16, 2, page_size=64, layout="NHD", form="packed"),
    Case(SMALL, 16, 2, page_size=64, layout="HND", form="split", pad=3),
    Case(SMALL, 16, 2, page_size=64, layout="interleaved", form="separate", table_pad=5),
    Case(SMALL, 16, 2, page_size=128, layout="NHD", form="separate", table_pad=1),
    Case(SMALL, 16, 2, page_size=128, layout="HND", form="packed"),
    Case(SMALL, 16, 2, page_size=128, layout="interleaved", form="split", pad=4),
    Case(SMALL, 16, 2, page_size=48, layout="HND", form="split", pad=1),
]

# FP8 caches: each scheme with a bf16 and an fp8 q_out in every layout, static
# scales that saturate (clip 0.5) for each scheme's inputs.
FP8_CASES = [
    Case(MIXED, 32, 8, scheme=PT, norm=NT),
    Case(DECODE_4, 16, 2, scheme=PT, q_fp8=True, page_size=1, layout="interleaved",
         form="packed"),
    Case(SMALL, 8, 8, scheme=PT, q_fp8=True, clip=0.5, page_size=32, layout="HND",
         pos=I32),
    Case(CHUNKS, 32, 4, scheme=QT, norm=RT, page_size=128, layout="HND"),
    Case(SMALL, 16, 2, scheme=QT, q_fp8=True, page_size=64, form="packed", pad=4),
    Case(DECODE_1, 8, 1, scheme=QT, q_fp8=True, clip=0.5, layout="interleaved",
         out_strided=True),
    Case(MIXED, 16, 4, scheme=QK, page_size=32, layout="interleaved", form="separate",
         style="interleaved"),
    Case(SMALL, 64, 8, scheme=QK, q_fp8=True, page_size=1, pos=I64, pad=2),
    Case(PREFILL_1000, 8, 2, d=64, scheme=QK, q_fp8=True, clip=0.5, page_size=128,
         layout="HND", norm=NT, wdtype=F32),
]

# No rows of any request: every row is padding (zeros), nothing is written.
EMPTY_CASES = [
    Case(EMPTY, 8, 2, pad=5),
    Case(EMPTY, 8, 2, scheme=QK, q_fp8=True, pad=4, form="packed"),
    Case(EMPTY, 8, 2, scheme=PT, q_fp8=True, pad=0),
]


@pytest.mark.parametrize("case", MODEL_CASES + ROTATION_CASES, ids=_case_id)
def test_rope_qk_norm_kv_write(gen, case):
    run_and_check(case.build(gen))


@pytest.mark.parametrize("case", PAGE_CASES, ids=_case_id)
def test_page_sizes_and_layouts(gen, case):
    run_and_check(case.build(gen))


@pytest.mark.parametrize("case", FP8_CASES, ids=_case_id)
def test_fp8_cache(gen, case):
    run_and_check(case.build(gen))


@pytest.mark.parametrize("case", EMPTY_CASES, ids=_case_id)
def test_no_rows(gen, case):
    """Requests with n_new = 0 only (and a kv_len of 0): q_out is all padding."""
    run_and_check(case.build(gen))


# ----------------------------------------------------------------------------
# Edge rules
# ----------------------------------------------------------------------------
EDGE_VARIANTS = {"bf16": dict(), "fp8qk_q8": dict(scheme=QK, q_fp8=True),
                 "fp8pt_q8": dict(scheme=PT, q_fp8=True)}


@pytest.mark.parametrize("variant", ["bf16", "fp8qk_q8"])
def test_padded_request_writes_nothing(gen, variant):
    """A padded request (CUDA graphs: its page-table row is -1) writes nothing
    to the cache; its q rows are still computed. Its pages stay poisoned."""
    lens = ((300, 4), (1, 1), (64, 1), (17, 3))
    problem = make_rope_problem(gen, lens, 16, 4, page_size=16, pad_rows=3, positions=I64,
                                **EDGE_VARIANTS[variant])
    problem.page_table[1] = -1
    expected = problem.expected()
    assert 4 not in expected.rows.tolist(), "the reference writes the padded request's row"
    assert expected.rows.numel() == 8
    run_and_check(problem)


@pytest.mark.parametrize("variant,dtype", [("bf16", I32), ("fp8qk_q8", I64), ("fp8pt_q8", I64)],
                         ids=["bf16-posi32", "fp8qk_q8-posi64", "fp8pt_q8-posi64"])
def test_rotation_position_out_of_range(gen, variant, dtype):
    """Positions max_position (one past the table), -1 and far out (past int32
    for int64): NaN q rows and no cache write; max_position - 1 and 0 are fine."""
    lens = ((100, 8), (50, 4), (3000, 2))
    problem = make_rope_problem(gen, lens, 8, 2, page_size=32, pad_rows=2, positions=dtype,
                                **EDGE_VARIANTS[variant])
    max_position = problem.cos_sin_cache.shape[0]
    far = 2 ** 31 - 1 if dtype == I32 else 2 ** 40
    changes = {0: max_position, 1: -1, 2: max_position - 1, 3: 0, 5: far, 9: -far, 12: far}
    for row, pos in changes.items():
        problem.positions[row] = pos
    expected = problem.expected()
    nan_rows = sorted(expected.nan_rows.nonzero().flatten().tolist())
    assert nan_rows == [0, 1, 5, 9, 12], nan_rows
    assert set(expected.rows.tolist()) == set(range(14)) - {0, 1, 5, 9, 12}
    run_and_check(problem)


@pytest.mark.parametrize("variant", ["bf16", "fp8qk_q8"])
def test_cache_position_outside_the_table(gen, variant):
    """Cache positions past max_pages * page_size, behind -1 page-table entries,
    or below 0 (kv_len < n_new; rotated by that position, so also NaN q rows)
    write nothing; the other rows of those requests are written."""
    page_size = 16
    # Request 0: its table holds pages for 40 tokens, then -1 up to column 7;
    # it writes positions 40..149 (40..47 land, 48..127 meet -1, 128.. are past
    # the 8 columns). Request 1: kv_len 3 < n_new 5: positions -2..2.
    lens = ((150, 110), (100, 3), (3, 5))
    problem = make_rope_problem(gen, lens, 8, 2, page_size=page_size, pad_rows=1,
                                capacity=[40, 100, 3], **EDGE_VARIANTS[variant])
    table = problem.page_table
    assert table.shape[1] * page_size == 128, table.shape
    for b, cap in enumerate([40, 100, 3]):
        table[b, (cap + page_size - 1) // page_size:] = -1
    expected = problem.expected()
    written = sorted(expected.rows.tolist())
    assert written == list(range(0, 8)) + [110, 111, 112] + [115, 116, 117], written
    assert sorted(expected.nan_rows.nonzero().flatten().tolist()) == [113, 114]
    run_and_check(problem)


# ----------------------------------------------------------------------------
# The two kernels
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["bf16", "fp8qk_q8", "fp8pt_q8"])
def test_kernels_agree_bit_for_bit(gen, variant, rope_kernel, monkeypatch):
    """The per-row kernel, the streaming kernel and the automatic choice give
    the same bits on a prefill of 5000 rows over two requests with padding
    rows (each streaming CTA cycles through its stages several times); the
    result matches the reference."""
    if rope_kernel != "per_row":
        pytest.skip("runs once: it forces each kernel itself")
    problem = make_rope_problem(gen, ((4097, 4097), (1000, 903), (7, 0)), 32, 8, page_size=16,
                                form="packed", norm_order=NT, pad_rows=5,
                                **EDGE_VARIANTS[variant])
    before = problem.snapshot()
    results = {}
    for kernel in ("per_row", "stream", None):
        if kernel is None:
            monkeypatch.delenv("HPC_OPS_ROPE_KERNEL")
        else:
            monkeypatch.setenv("HPC_OPS_ROPE_KERNEL", kernel)
        restore_outputs_(problem, before)
        run_and_check(problem, what=f"{kernel or 'auto'}: ")
        results[kernel] = output_bits(problem)
    assert_same_outputs(results["stream"], results["per_row"], "stream vs per_row")
    assert_same_outputs(results[None], results["per_row"], "auto vs per_row")


# ----------------------------------------------------------------------------
# Input forms, split_qkv and default outputs
# ----------------------------------------------------------------------------
def test_split_qkv_views(gen):
    """split_qkv returns views of the packed tensor (no copy) with the
    documented shapes and offsets."""
    for hq, hkv, d in ((64, 4, 128), (6, 4, 64), (8, 1, 256)):
        rows = 5
        qkv = torch.randn(rows, (hq + 2 * hkv) * d, generator=gen, device="cuda").to(BF16)
        q, k, v = hpc_ops.split_qkv(qkv, hq, hkv, d)
        assert tuple(q.shape) == (rows, hq, d) and tuple(k.shape) == (rows, hkv, d) \
            and tuple(v.shape) == (rows, hkv, d)
        for t, start in ((q, 0), (k, hq * d), (v, (hq + hkv) * d)):
            assert t.stride() == (qkv.stride(0), d, 1), t.stride()
            assert t.data_ptr() == qkv.data_ptr() + start * qkv.element_size()
            assert torch.equal(t.flatten(1), qkv[:, start:start + t.shape[1] * d])


@pytest.mark.parametrize("variant", ["bf16", "fp8qk_q8"])
def test_input_forms_agree(gen, variant):
    """The packed call (k = v = None), split_qkv views and contiguous copies
    give the same bits; the packed call matches the reference."""
    problem = make_rope_problem(gen, SMALL, 16, 4, page_size=16, layout="HND", form="packed",
                                norm_order=NT, positions=I32, pad_rows=2,
                                **EDGE_VARIANTS[variant])
    before = problem.snapshot()
    run_and_check(problem)
    want = output_bits(problem)
    args, kwargs = problem.call("packed")
    q, k, v = hpc_ops.split_qkv(problem.qkv, 16, 4, 128)
    for what, qkv in (("split_qkv views", (q, k, v)),
                      ("contiguous q, k, v", (q.contiguous(), k.contiguous(), v.contiguous()))):
        restore_outputs_(problem, before)
        rope(*qkv, *args[3:], **kwargs)
        torch.cuda.synchronize()
        assert_same_outputs(output_bits(problem), want, f"{what} vs packed")


def test_default_outputs(gen):
    """Outputs allocated by the op: a bf16 q_out alone; (q_out, q_scale) for an
    fp8 q_out with dynamic scales; an fp8 q_out alone under per_tensor. The
    defaults (rotary_dim = D, style neox, eps 1e-6, norm_order norm_then_rope)
    and kv_scheme as an Fp8Scheme member give the same bits."""
    for scheme, q_fp8 in ((None, False), (QT, True), (PT, True)):
        problem = make_rope_problem(gen, MIXED, 16, 4, page_size=32, scheme=scheme, q_fp8=q_fp8,
                                    norm_order=NT, pad_rows=2)
        problem.rotary_dim = 128  # passed explicitly here, left out below
        before = problem.snapshot()
        run_and_check(problem, what=f"{scheme}: ")
        want = output_bits(problem)
        args, kwargs = problem.call()
        dynamic = problem.dynamic_q
        minimal = dict(q_norm_weight=problem.q_norm_weight, k_norm_weight=problem.k_norm_weight)
        if scheme is not None:
            minimal.update(kv_scheme=hpc_ops.Fp8Scheme(scheme), k_scale=problem.k_scale,
                           v_scale=problem.v_scale)
        if q_fp8:
            minimal["q_out_dtype"] = FP8
            if not dynamic:
                minimal["q_scale"] = problem.q_scale
        restore_outputs_(problem, before)
        result = rope(*args, **minimal)
        torch.cuda.synchronize()
        if dynamic:
            assert isinstance(result, tuple) and len(result) == 2
            q_out, q_scale = result
            assert q_scale.dtype == F32 and tuple(q_scale.shape) == (problem.rows, 16)
            assert_bits_equal(bits(q_scale), want["q_scale"], f"{scheme}: allocated q_scale")
        else:
            assert isinstance(result, torch.Tensor)
            q_out = result
        assert q_out.device.type == "cuda" and q_out.dtype == problem.out_q.dtype
        assert tuple(q_out.shape) == (problem.rows, 16, 128)
        assert_bits_equal(bits(q_out), want["out_q_base"], f"{scheme}: allocated q_out")
        for name in ("k_cache", "v_cache"):
            assert_bits_equal(bits(getattr(problem, name)), want[name],
                              f"{scheme}: {name} with default arguments")


# ----------------------------------------------------------------------------
# Round trip through decode attention
# ----------------------------------------------------------------------------
# (scheme, fp8 q_out, layout, page_size, Hq, Hkv, q_len, QK norm order)
ROUND_TRIPS = [
    (None, False, "NHD", 16, 32, 8, 1, None),
    (PT, False, "HND", 32, 64, 8, 2, None),
    (PT, True, "interleaved", 1, 16, 2, 1, RT),
    (QT, False, "NHD", 128, 32, 4, 4, None),
    (QT, True, "HND", 16, 64, 4, 1, NT),
    (QK, False, "interleaved", 64, 8, 8, 2, None),
    (QK, True, "NHD", 16, 64, 4, 4, NT),
]


def _round_trip_id(params) -> str:
    scheme, q_fp8, layout, page_size, hq, hkv, q_len, norm = params
    parts = [SCHEME_IDS[scheme]] + (["q8"] if q_fp8 else []) + [
        layout, f"ps{page_size}", f"h{hq}x{hkv}", f"q{q_len}"]
    return "-".join(parts + ([norm] if norm else []))


@needs_family("attention")
@pytest.mark.parametrize("params", ROUND_TRIPS, ids=_round_trip_id)
def test_round_trip_decode_attention(gen, params):
    """A prefill call writes each request's first L - q_len tokens, a decode
    call its last q_len (uniform); decode_attention over that cache with this
    op's q_out (and q scales) matches the attention reference on the
    dequantized q and cache."""
    scheme, q_fp8, layout, page_size, hq, hkv, q_len, norm = params
    total = [300, q_len, 4097, 64, 129]
    prefill = make_rope_problem(gen, [(n - q_len, n - q_len) for n in total], hq, hkv,
                                page_size=page_size, layout=layout, form="packed",
                                norm_order=norm, scheme=scheme, capacity=total)
    run_and_check(prefill, what="prefill: ")
    decode = make_rope_problem(gen, [(n, q_len) for n in total], form="split", q_fp8=q_fp8,
                               positions=None, like=prefill, keep_cache=True, keep_scales=True)
    q_out, q_scale = run_and_check(decode, what="decode: ")

    fp8 = {}
    if scheme is not None:
        fp8 = dict(scheme=scheme, q_scale=q_scale if q_fp8 else None, k_scale=decode.k_scale,
                   v_scale=decode.v_scale)
    out = hpc_ops.decode_attention(q_out, decode.k_cache, decode.v_cache, decode.page_table,
                                   decode.kv_lens, q_len=q_len, **fp8)
    real = dequantized(q_out, decode.k_cache, decode.v_cache, fp8.get("q_scale"),
                       fp8.get("k_scale"), fp8.get("v_scale"))
    expected, _ = decode_attention_ref(*real, decode.page_table, decode.kv_lens, q_len)
    got = out.float()
    assert bool(torch.isfinite(got).all()), "attention over the written cache is not finite"
    torch.testing.assert_close(got, expected, atol=ATTN_ATOL, rtol=ATTN_RTOL,
                               msg=lambda m: f"decode_attention over the written cache: {m}")


# ----------------------------------------------------------------------------
# CUDA graphs and torch.compile
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", [None, QK], ids=lambda s: SCHEME_IDS[s])
def test_cuda_graph_replay_with_new_lengths(gen, scheme):
    """One capture (packed qkv, int64 positions, QK norm; FP8: per-token k
    scales and an fp8 q_out with dynamic scales) replayed on steps with new
    kv_lens, cu_seqlens, positions, tokens and v scales written into the
    captured tensors, and a padded request (page-table row -1) in one step;
    each replay matches the reference and an eager call bit for bit."""
    q_fp8 = scheme is not None
    rows, capacity = 48, [3000, 600, 64, 129, 8]
    steps = [
        [(40, 40), (600, 1), (3, 3), (129, 1), (1, 1)],
        [(3000, 4), (300, 4), (64, 4), (100, 4), (8, 4)],
        [(2000, 1), (0, 0), (60, 30), (129, 0), (1, 1)],   # request 4 padded
        [(7, 7), (599, 1), (64, 33), (5, 5), (1, 1)],
    ]
    padded_step, padded_request = 2, 4
    static = make_rope_problem(gen, steps[0], 16, 2, page_size=16, layout="HND", form="packed",
                               norm_order=NT, positions=I64, scheme=scheme, q_fp8=q_fp8,
                               rows=rows, capacity=capacity)
    args, kwargs = static.call()
    graph, _ = capture_graph(lambda: rope(*args, **kwargs))
    table_row = static.page_table[padded_request].clone()

    for i, lens in enumerate(steps):
        what = f"replay {i} ({lens}): "
        step = make_rope_problem(gen, lens, form="packed", positions=I64, q_fp8=q_fp8,
                                 rows=rows, like=static)
        problem = static.load_(step)
        if i == padded_step:
            problem.page_table[padded_request] = -1
        else:
            problem.page_table[padded_request] = table_row
        expected = problem.expected()
        before = problem.snapshot()

        graph.replay()
        torch.cuda.synchronize()
        result = (problem.out_q, problem.q_scale) if problem.dynamic_q else problem.out_q
        check_call(problem, expected, before, result, what)

        replayed = output_bits(problem)
        restore_outputs_(problem, before)
        rope(*args, **kwargs)
        torch.cuda.synchronize()
        assert_same_outputs(output_bits(problem), replayed, f"{what}eager vs replay")


def _step_bf16(qkv_half, cos_sin, k_cache, v_cache, page_table, kv_lens, cu_seqlens, positions,
               q_w, k_w):
    qkv = qkv_half * 2  # exact in bf16, so eager and compiled inputs agree bit for bit
    return hpc_ops.rope_qk_norm_kv_write(qkv, None, None, cos_sin, k_cache, v_cache, page_table,
                                         kv_lens, cu_seqlens, positions=positions,
                                         style="interleaved", q_norm_weight=q_w,
                                         k_norm_weight=k_w, norm_order="rope_then_norm")


def _step_fp8(qkv_half, cos_sin, k_cache, v_cache, page_table, kv_lens, cu_seqlens, positions,
              k_scale, v_scale):
    qkv = qkv_half * 2
    return hpc_ops.rope_qk_norm_kv_write(qkv, None, None, cos_sin, k_cache, v_cache, page_table,
                                         kv_lens, cu_seqlens, positions=positions,
                                         style="interleaved",
                                         kv_scheme="q_token_head__kv_tensor", k_scale=k_scale,
                                         v_scale=v_scale, q_out_dtype=torch.float8_e4m3fn)


@pytest.mark.parametrize("variant", ["bf16", "fp8qt_q8"])
def test_torch_compile_matches_eager(gen, variant):
    """A function calling the op compiles with fullgraph=True and writes the
    same bits (q_out, q_scale, cache) as eager; eager matches the reference."""
    fp8 = variant == "fp8qt_q8"
    problem = make_rope_problem(gen, MIXED, 16, 4, page_size=32, form="packed",
                                style="interleaved", positions=I64, pad_rows=3,
                                norm_order=None if fp8 else RT,
                                scheme=QT if fp8 else None, q_fp8=fp8)
    fn = _step_fp8 if fp8 else _step_bf16
    extra = ((problem.k_scale, problem.v_scale) if fp8
             else (problem.q_norm_weight, problem.k_norm_weight))
    inputs = (problem.qkv / 2, problem.cos_sin_cache, problem.k_cache, problem.v_cache,
              problem.page_table, problem.kv_lens, problem.cu_seqlens, problem.positions, *extra)
    expected = problem.expected()
    before = problem.snapshot()

    eager = fn(*inputs)
    torch.cuda.synchronize()
    eager_q, eager_scale = eager if fp8 else (eager, None)
    problem.out_q.copy_(eager_q)
    if fp8:
        problem.q_scale.copy_(eager_scale)
    result = (problem.out_q, problem.q_scale) if fp8 else problem.out_q
    check_call(problem, expected, before, result, "eager: ")
    want = {"q_out": bits(eager_q), "k_cache": bits(problem.k_cache),
            "v_cache": bits(problem.v_cache)}
    if fp8:
        want["q_scale"] = bits(eager_scale)

    restore_outputs_(problem, before)
    compiled = torch.compile(fn, fullgraph=True)(*inputs)
    torch.cuda.synchronize()
    comp_q, comp_scale = compiled if fp8 else (compiled, None)
    got = {"q_out": bits(comp_q), "k_cache": bits(problem.k_cache),
           "v_cache": bits(problem.v_cache)}
    if fp8:
        got["q_scale"] = bits(comp_scale)
    assert_same_outputs(got, want, "compiled vs eager")


# ----------------------------------------------------------------------------
# Argument errors with device tensors
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", invalid_call_names("cuda"))
def test_invalid_arguments(name):
    """Rejected with a ValueError naming the argument, before any launch: the
    NaN-filled out_q (and output scales) and the caches are bit-identical
    afterwards."""
    args, kwargs, match, buffers = build_invalid_call(name, "cuda")
    expect_rejected(lambda: rope(*args, **kwargs), match, buffers)
