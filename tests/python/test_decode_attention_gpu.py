"""GPU tests of hpc_ops.decode_attention (paged decode attention over a BF16 or
FP8 KV cache) and of its plan: hpc_ops.plan_decode_attention / DecodePlan.

Numerics: every case builds a paged cache with make_paged_kv (shuffled pages;
NaN in the slots past kv_len, in unowned pages, and behind the -1 or random
page ids past each request's pages), writes into NaN-poisoned out= / lse_out=
buffers and compares with the float64 loop of attention_reference.py:
out (bf16) within atol = rtol = 2e-2, lse within atol 2e-3, rtol 1e-3; every
row with kv_len > 0 finite, rows of kv_len == 0 zeros with lse = -inf; the
inputs bit-identical afterwards. The cases are a hand-picked spread over
batch x page size x GQA ratio x q_len x layout (not the cross product): big
batches get short lengths, long lengths get small batches.

FP8: the same checks with float8_e4m3fn caches quantized per hpc_ops.Fp8Scheme
(make_fp8_paged_kv: token and head magnitudes spread over a few octaves; NaN
codes, and NaN per-token k scales, wherever no token is) and a bf16 or fp8 q.
The reference runs on the dequantized values (fp8 code x scale), which the
kernel takes exactly (K as e4m3 or fp16, V as fp16; an fp8 q exact, a bf16 q
as three e4m3 parts or rounded to fp16: within 2^-12 either way), so the BF16
tolerances apply (two e4m3 parts, within 2^-8, missed the lse tolerance on
logits near 40). Each scheme x q dtype meets every batch size,
page size, GQA ratio, q_len and layout at least once; scales also come as
shape [] and with other strides (k_scale slots innermost, q_scale
column-major); the scales are inputs and stay bit-identical too.

Plan: the GPU planner's schedule equals the CPU planner's bit for bit, and a
plan gives bit-identical results to planning inside the call. CUDA graph: one
capture of plan.update + decode_attention serves new lengths on each replay
(BF16, and FP8 with new per-token scales).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

import hpc_ops
from attention_reference import (PER_TENSOR, Q_TOKEN_HEAD, QK_TOKEN_HEAD, build_invalid_call,
                                 decode_attention_ref, dequantized, draw_kv_lens,
                                 fill_fp8_paged_kv_, fill_paged_kv_, invalid_call_names,
                                 make_fp8_paged_kv, make_paged_kv, make_q, quantize_paged_kv,
                                 quantize_q)
from hpc_test_utils import capture_graph, expect_rejected, needs_family, poison_, poisoned
from tolerances import assert_all_finite, assert_bits_equal

pytestmark = [pytest.mark.gpu, needs_family("attention")]

BF16 = torch.bfloat16
F32 = torch.float32
D = 128
OUT_ATOL, OUT_RTOL = 2e-2, 2e-2
LSE_ATOL, LSE_RTOL = 2e-3, 1e-3


def _lens_tensor(lens) -> torch.Tensor:
    return torch.tensor(lens, dtype=torch.int32, device="cuda")


def assert_attention_close(out, expected, lens, q_len, *, lse=None, expected_lse=None,
                           what="out"):
    """out (bf16 [B*q_len, Hq, D]) and optionally lse (float32 [B*q_len, Hq])
    against the reference; rows of requests with kv_len == 0 must be exactly 0
    and -inf."""
    assert out.dtype == BF16, f"{what}: dtype {out.dtype}, expected bfloat16"
    assert tuple(out.shape) == tuple(expected.shape), \
        f"{what}: shape {tuple(out.shape)}, expected {tuple(expected.shape)}"
    live = torch.tensor(lens, device="cuda").repeat_interleave(q_len) > 0
    got = out.float()
    if bool((~live).any()):
        assert bool((got[~live] == 0).all()), f"{what}: rows of kv_len == 0 requests are not 0"
    assert_all_finite(got[live], what)
    torch.testing.assert_close(got[live], expected[live], atol=OUT_ATOL, rtol=OUT_RTOL,
                               msg=lambda m: f"{what}: {m}")
    if lse is None:
        return
    assert lse.dtype == F32 and tuple(lse.shape) == tuple(expected_lse.shape), \
        f"{what} lse: {lse.dtype}{tuple(lse.shape)}, expected float32{tuple(expected_lse.shape)}"
    if bool((~live).any()):
        assert bool((lse[~live] == float("-inf")).all()), \
            f"{what} lse: rows of kv_len == 0 requests are not -inf"
    assert_all_finite(lse[live], f"{what} lse")
    torch.testing.assert_close(lse[live], expected_lse[live], atol=LSE_ATOL, rtol=LSE_RTOL,
                               msg=lambda m: f"{what} lse: {m}")


# ----------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    batch: int
    page_size: int
    hq: int
    hkv: int
    q_len: int
    layout: str
    max_len: int = 8192          # random kv_lens in q_len..max_len ...
    lens: tuple | None = None    # ... unless given
    long: tuple | None = None    # (index, kv_len): one long request among the random ones
    window: int | None = None
    cap: float | None = None
    scale: float | None = None
    lse: bool = False
    table_pad: int = 0           # page_table row stride = max_pages + table_pad
    q_strided: bool = False
    shuffle: bool = True
    garbage: str = "nan"
    scheme: str | None = None    # FP8 cache quantized with this Fp8Scheme (None: BF16 cache)
    q_fp8: bool = False          # fp8 q and its q_scale (FP8 caches only)
    strided_scales: bool = False  # one-element scales of shape [], k/q_scale transposed

    def kv_lens(self, gen) -> list[int]:
        if self.lens is not None:
            return list(self.lens)
        lens = draw_kv_lens(gen, self.batch, self.max_len, self.page_size, min_len=self.q_len)
        if self.long is not None:
            lens[self.long[0]] = self.long[1]
        return lens

    @property
    def id(self) -> str:
        if self.lens is not None and len(self.lens) <= 5:
            lens = "L" + "_".join(map(str, self.lens))
        else:
            lens = f"B{self.batch}-max{self.max_len}"
            if self.long is not None:
                lens += f"-long{self.long[1]}"
        parts = [lens, f"ps{self.page_size}", f"h{self.hq}x{self.hkv}", f"q{self.q_len}",
                 self.layout]
        parts += [f"w{self.window}"] if self.window is not None else []
        parts += [f"cap{self.cap:g}"] if self.cap is not None else []
        parts += [f"scale{self.scale:g}"] if self.scale is not None else []
        parts += [SCHEME_IDS[self.scheme]] if self.scheme is not None else []
        flags = {"q8": self.q_fp8, "sstrided": self.strided_scales, "lse": self.lse,
                 "pad": self.table_pad > 0, "qstrided": self.q_strided,
                 "inorder": not self.shuffle, "large": self.garbage == "large"}
        return "-".join(parts + [name for name, on in flags.items() if on])


SCHEME_IDS = {PER_TENSOR: "fp8pt", Q_TOKEN_HEAD: "fp8qt", QK_TOKEN_HEAD: "fp8qk"}


def C(batch, page_size, hq, hkv, q_len, layout, **kw) -> Case:
    if "lens" in kw:
        kw["lens"] = tuple(kw["lens"])
        batch = len(kw["lens"])
    return Case(batch, page_size, hq, hkv, q_len, layout, **kw)


def _case_id(case: Case) -> str:
    return case.id


# Every page size meets every batch size; GQA ratios 1, 4, 5, 6, 8, 16; q_len
# 1, 2, 4, 8 (8 x 16 = 128 query rows per kv head at most); all three layouts.
CASES = [
    C(1, 16, 8, 8, 1, "NHD", lens=[8192], lse=True),
    C(1, 128, 16, 1, 4, "HND", lens=[4097], table_pad=5),
    C(1, 1, 8, 2, 1, "interleaved", lens=[1], lse=True),
    C(1, 64, 10, 2, 8, "NHD", q_strided=True),
    C(1, 32, 12, 2, 2, "HND", lens=[129], lse=True),
    C(3, 32, 64, 8, 1, "interleaved", lse=True, table_pad=3),
    C(3, 1, 32, 2, 2, "NHD"),
    C(3, 128, 2, 2, 8, "HND", lse=True, shuffle=False),
    C(3, 16, 5, 1, 4, "interleaved", garbage="large"),
    C(3, 64, 32, 8, 2, "HND", lse=True, q_strided=True),
    C(64, 16, 16, 2, 1, "HND", max_len=2048, table_pad=16),
    C(64, 1, 8, 8, 4, "NHD", max_len=512, lse=True),
    C(64, 32, 16, 1, 8, "interleaved", max_len=1024, lse=True),
    C(64, 128, 40, 8, 2, "NHD", max_len=2048),
    C(64, 64, 4, 1, 1, "interleaved", max_len=2048, lse=True, shuffle=False),
    C(64, 16, 24, 4, 8, "HND", max_len=512),
    C(200, 16, 32, 8, 1, "NHD", max_len=512, lse=True),
    C(200, 1, 8, 1, 2, "interleaved", max_len=300),
    C(200, 128, 4, 4, 4, "HND", max_len=512, lse=True, table_pad=2),
    C(200, 32, 32, 2, 1, "HND", max_len=512, q_strided=True),
    C(200, 64, 10, 2, 8, "NHD", max_len=300, lse=True),
]

WINDOW_CASES = [
    C(3, 16, 8, 2, 1, "NHD", window=1000, lse=True),
    C(1, 128, 16, 2, 4, "HND", lens=[4097], window=1, lse=True),  # each query sees itself only
    C(64, 32, 10, 2, 2, "interleaved", max_len=2048, window=64),
    C(3, 64, 16, 1, 8, "NHD", window=100, cap=20.0, lse=True),
    C(200, 1, 8, 8, 1, "HND", max_len=512, window=7),
    C(1, 16, 8, 2, 8, "NHD", lens=[300], window=10000, lse=True),  # window longer than the request
    C(3, 64, 4, 4, 2, "interleaved", lens=[8192, 65, 64], window=64, lse=True),
]

CAP_CASES = [
    C(3, 32, 64, 8, 1, "HND", cap=5.0, lse=True),
    C(64, 16, 32, 8, 4, "NHD", max_len=1024, cap=30.0, scale=0.2),
    C(1, 128, 16, 1, 2, "interleaved", lens=[8192], cap=10.0, scale=0.05, lse=True),
]

ZERO_LENGTH_CASES = [
    C(5, 16, 8, 2, 1, "NHD", lens=[0, 300, 0, 17, 0], lse=True),
    C(4, 64, 16, 2, 2, "HND", lens=[5, 0, 4096, 0], window=100, lse=True),
    C(3, 32, 8, 8, 4, "interleaved", lens=[0, 0, 0], lse=True),
]

SKEWED_CASES = [
    C(32, 16, 32, 4, 1, "NHD", max_len=300, long=(13, 20000), lse=True),
    C(16, 64, 8, 2, 4, "HND", max_len=300, long=(0, 20011), lse=True, garbage="large"),
    C(8, 1, 16, 1, 2, "interleaved", max_len=300, long=(7, 19999), window=2048),
]

# FP8 caches
PT, QT, QK = PER_TENSOR, Q_TOKEN_HEAD, QK_TOKEN_HEAD

# Each scheme with a bf16 q and with an fp8 q meets batch 1, 3, 64 and 200;
# together they cover every page size, GQA ratio (1, 4, 5, 8, 16), q_len and
# layout under each scheme, and the scale layouts (sstrided), q strides,
# page-table padding, in-order pages and large garbage somewhere.
FP8_CASES = [
    # per_tensor, bf16 q
    C(1, 16, 8, 8, 1, "NHD", lens=[8192], lse=True, scheme=PT),
    C(3, 128, 16, 4, 4, "HND", lse=True, table_pad=3, scheme=PT),
    C(64, 1, 10, 2, 2, "interleaved", max_len=512, scheme=PT, strided_scales=True),
    C(200, 32, 64, 8, 8, "NHD", max_len=300, lse=True, scheme=PT),
    # per_tensor, fp8 q
    C(1, 64, 16, 1, 8, "HND", lens=[4097], lse=True, scheme=PT, q_fp8=True, strided_scales=True),
    C(3, 32, 8, 8, 2, "interleaved", lse=True, scheme=PT, q_fp8=True, garbage="large"),
    C(64, 128, 32, 8, 1, "NHD", max_len=2048, scheme=PT, q_fp8=True, shuffle=False),
    C(200, 16, 40, 8, 4, "HND", max_len=512, lse=True, scheme=PT, q_fp8=True),
    # q_token_head__kv_tensor, bf16 q (no q_scale: the same math as per_tensor)
    C(1, 32, 40, 8, 4, "NHD", lens=[129], lse=True, scheme=QT),
    C(3, 16, 16, 1, 1, "HND", scheme=QT, q_strided=True),
    C(64, 64, 8, 1, 8, "interleaved", max_len=1024, lse=True, scheme=QT),
    C(200, 1, 4, 4, 2, "HND", max_len=300, scheme=QT, strided_scales=True),
    # q_token_head__kv_tensor, fp8 q
    C(1, 128, 32, 8, 2, "interleaved", lens=[8192], lse=True, scheme=QT, q_fp8=True),
    C(3, 1, 8, 1, 8, "NHD", max_len=2048, lse=True, scheme=QT, q_fp8=True, q_strided=True),
    C(64, 16, 64, 4, 4, "HND", max_len=1024, lse=True, scheme=QT, q_fp8=True,
      strided_scales=True),
    C(200, 64, 10, 2, 1, "NHD", max_len=512, lse=True, scheme=QT, q_fp8=True, table_pad=2),
    # qk_token_head__v_head, bf16 q
    C(1, 1, 16, 16, 2, "HND", lens=[1000], lse=True, scheme=QK),
    C(3, 64, 20, 4, 8, "NHD", lse=True, scheme=QK, garbage="large"),
    C(64, 32, 16, 1, 1, "interleaved", max_len=2048, scheme=QK, strided_scales=True),
    C(200, 128, 32, 4, 4, "interleaved", max_len=512, lse=True, scheme=QK),
    # qk_token_head__v_head, fp8 q
    C(1, 16, 4, 1, 4, "interleaved", lens=[3000], lse=True, scheme=QK, q_fp8=True),
    C(3, 128, 64, 8, 1, "HND", lse=True, scheme=QK, q_fp8=True, strided_scales=True,
      table_pad=5),
    C(3, 16, 48, 3, 2, "NHD", lse=True, scheme=QK, q_fp8=True, q_strided=True),
    C(64, 1, 5, 1, 8, "NHD", max_len=300, lse=True, scheme=QK, q_fp8=True),
    C(200, 32, 8, 8, 2, "HND", max_len=512, lse=True, scheme=QK, q_fp8=True, shuffle=False),
]

FP8_WINDOW_CAP_CASES = [
    C(3, 16, 8, 2, 1, "NHD", window=1000, lse=True, scheme=QK, q_fp8=True),
    C(3, 64, 16, 1, 8, "HND", window=100, cap=20.0, lse=True, scheme=PT),
    C(64, 32, 10, 2, 2, "interleaved", max_len=2048, window=64, cap=30.0, scale=0.2, scheme=QT,
      q_fp8=True),
    C(1, 128, 16, 2, 4, "NHD", lens=[4097], window=1, lse=True, scheme=QK),
    C(1, 16, 32, 8, 2, "HND", lens=[8192], cap=10.0, scale=0.05, lse=True, scheme=PT, q_fp8=True),
]

FP8_ZERO_LENGTH_CASES = [
    C(5, 16, 8, 2, 1, "NHD", lens=[0, 300, 0, 17, 0], lse=True, scheme=QK, q_fp8=True),
    C(4, 64, 16, 2, 2, "HND", lens=[5, 0, 4096, 0], window=100, lse=True, scheme=QT, q_fp8=True),
    C(3, 32, 8, 8, 4, "interleaved", lens=[0, 0, 0], lse=True, scheme=QK),  # every k_scale NaN
]

FP8_SKEWED_CASES = [
    C(32, 16, 32, 4, 1, "NHD", max_len=300, long=(13, 20000), lse=True, scheme=QK, q_fp8=True),
    C(16, 64, 8, 2, 4, "HND", max_len=300, long=(0, 20011), lse=True, garbage="large", scheme=PT),
    C(8, 1, 16, 1, 2, "interleaved", max_len=300, long=(7, 19999), window=2048, scheme=QT,
      q_fp8=True),
]


# Units cut into many pieces, whose partials the attention CTAs combine in a
# tree (decode_plan.h, MergeWalk): 1 x 64K at 8 rows (256-512 pieces, fan-in
# 16: two or three levels), 16 rows (fan-in 8); at 128 rows (q_len 8 x group
# 16) the merge kernel; a zero-length request beside a long one.
DEEP_MERGE_CASES = [
    C(1, 16, 8, 1, 1, "HND", lens=[65536], lse=True),
    C(2, 32, 16, 1, 1, "NHD", lens=[30001, 0], lse=True),
    C(2, 64, 16, 1, 8, "NHD", lens=[0, 12000], lse=True),
    C(1, 16, 8, 1, 1, "NHD", lens=[65536], lse=True, scheme=QK, q_fp8=True),
    C(2, 32, 16, 1, 1, "HND", lens=[30001, 0], lse=True, scheme=PT),
    C(2, 64, 16, 1, 8, "NHD", lens=[0, 12000], lse=True, scheme=QT),
]


INPUT_NAMES = ("q", "k_cache", "v_cache", "page_table", "kv_lens")
SCALE_NAMES = ("q_scale", "k_scale", "v_scale")


def _build(gen, case: Case):
    """(lens, (q, k_cache, v_cache, page_table, kv_lens), fp8): fp8 holds the
    keyword arguments of an FP8 call (scheme and scales), {} for a BF16 cache."""
    lens = case.kv_lens(gen)
    layout = dict(layout=case.layout, shuffle=case.shuffle, garbage=case.garbage,
                  table_pad=case.table_pad)
    if case.scheme is None:
        assert not case.q_fp8, "an fp8 q needs an FP8 cache"
        k, v, pt = make_paged_kv(gen, len(lens), lens, case.page_size, case.hkv, D, **layout)
        fp8 = {}
    else:
        k, v, pt, k_scale, v_scale = make_fp8_paged_kv(
            gen, len(lens), lens, case.page_size, case.hkv, D, scheme=case.scheme,
            strided_scales=case.strided_scales, **layout)
        fp8 = dict(scheme=case.scheme, q_scale=None, k_scale=k_scale, v_scale=v_scale)
    q = make_q(gen, len(lens) * case.q_len, case.hq, D, strided=case.q_strided)
    if case.q_fp8:
        q, fp8["q_scale"] = quantize_q(q, per_token_head=case.scheme != PER_TENSOR,
                                       strided_scale=case.strided_scales)
    return lens, (q, k, v, pt, _lens_tensor(lens)), fp8


def _options(case: Case) -> dict:
    return dict(q_len=case.q_len, softmax_scale=case.scale, sliding_window=case.window,
                soft_cap=case.cap)


def _reference(inputs, case: Case, fp8=None):
    """The float64 loop on the values the kernel attends over (FP8: dequantized)."""
    q, k, v, pt, kv_lens = inputs
    if fp8:
        q, k, v = dequantized(q, k, v, *(fp8[n] for n in SCALE_NAMES))
    return decode_attention_ref(q, k, v, pt, kv_lens, case.q_len, case.scale, case.window,
                                case.cap)


def _input_tensors(inputs, fp8) -> dict:
    """Every tensor the call reads, by name (the scales of an FP8 call included)."""
    named = dict(zip(INPUT_NAMES, inputs))
    named.update((n, fp8[n]) for n in SCALE_NAMES if fp8.get(n) is not None)
    return named


def _run_case(gen, case: Case):
    lens, inputs, fp8 = _build(gen, case)
    before = {name: t.clone() for name, t in _input_tensors(inputs, fp8).items()}
    expected, expected_lse = _reference(inputs, case, fp8)
    rows = len(lens) * case.q_len
    out = poisoned((rows, case.hq, D), BF16)
    lse = poisoned((rows, case.hq), F32) if case.lse else None

    result = hpc_ops.decode_attention(*inputs, **_options(case), **fp8, out=out,
                                      return_lse=case.lse, lse_out=lse)

    if case.lse:
        assert result[0] is out and result[1] is lse
    else:
        assert result is out
    assert_attention_close(out, expected, lens, case.q_len, lse=lse, expected_lse=expected_lse)
    for name, t in _input_tensors(inputs, fp8).items():
        assert_bits_equal(t, before[name], f"{name} (an input) was modified")


@pytest.mark.parametrize("case", CASES + FP8_CASES, ids=_case_id)
def test_decode_attention(gen, case):
    _run_case(gen, case)


@pytest.mark.parametrize("case", WINDOW_CASES + FP8_WINDOW_CAP_CASES, ids=_case_id)
def test_sliding_window(gen, case):
    _run_case(gen, case)


@pytest.mark.parametrize("case", CAP_CASES, ids=_case_id)
def test_soft_cap_and_scale(gen, case):
    _run_case(gen, case)


@pytest.mark.parametrize("case", ZERO_LENGTH_CASES + FP8_ZERO_LENGTH_CASES, ids=_case_id)
def test_zero_length_requests(gen, case):
    """kv_len == 0 requests (first, middle, last, all): zeros and lse = -inf."""
    _run_case(gen, case)


@pytest.mark.parametrize("case", SKEWED_CASES + FP8_SKEWED_CASES, ids=_case_id)
def test_skewed_batch(gen, case):
    """One request of ~20000 tokens among short ones: the split over the SMs."""
    _run_case(gen, case)


@pytest.mark.parametrize("case", DEEP_MERGE_CASES, ids=_case_id)
def test_deep_merge_trees(gen, case):
    """Hundreds of pieces of one unit combined, level by level, by the
    attention CTAs that finish last (or, at 128 rows, by the merge kernel)."""
    _run_case(gen, case)


def _slot_positions(page_table, lens, num_pages: int, page_size: int) -> torch.Tensor:
    """float32 [num_pages, page_size]: the position of the token each slot holds (0 elsewhere)."""
    pos = torch.zeros(num_pages, page_size, device="cuda")
    for b, n in enumerate(lens):
        t = torch.arange(n, device="cuda")
        pos[page_table[b, t // page_size].long(), t % page_size] = t.float()
    return pos


@pytest.mark.parametrize("scheme", [None, PT, QK], ids=lambda s: s or "bf16")
@pytest.mark.parametrize("hq,hkv,q_len", [(64, 8, 1), (16, 1, 1), (64, 4, 1), (8, 1, 2)])
def test_rising_maximum(gen, scheme, hq, hkv, q_len):
    """Keys that grow along the sequence (x1 to x7, and x3 more from position
    2000 on): a row's maximum logit keeps rising long after the first tile, by
    more than 2^8 in probability in some tiles, so the kernels' running-maximum
    updates (lazy in the tokens-on-M kernel) run mid-sequence; out and lse
    against the float64 loop."""
    lens = [4097, 700, q_len, 2500]
    page_size = 16
    k, v, pt = make_paged_kv(gen, len(lens), lens, page_size, hkv, D)
    pos = _slot_positions(pt, lens, k.shape[0], page_size)
    growth = 1.0 + 6.0 * pos / 4096 + 3.0 * (pos >= 2000).float()
    k.copy_(k.float() * growth[:, :, None, None])
    q = make_q(gen, len(lens) * q_len, hq, D)
    fp8 = {}
    if scheme is not None:
        k, v, k_scale, v_scale = quantize_paged_kv(k, v, pt, lens, scheme)
        q_scale = None
        if scheme == QK:
            q, q_scale = quantize_q(q, per_token_head=True)
        fp8 = dict(scheme=scheme, q_scale=q_scale, k_scale=k_scale, v_scale=v_scale)
    inputs = (q, k, v, pt, _lens_tensor(lens))
    rq, rk, rv = dequantized(q, k, v, *(fp8.get(n) for n in SCALE_NAMES))
    expected, expected_lse = decode_attention_ref(rq, rk, rv, pt, inputs[4], q_len)
    rows = len(lens) * q_len
    out, lse = poisoned((rows, hq, D), BF16), poisoned((rows, hq), F32)
    hpc_ops.decode_attention(*inputs, q_len=q_len, **fp8, out=out, return_lse=True, lse_out=lse)
    assert_attention_close(out, expected, lens, q_len, lse=lse, expected_lse=expected_lse)


def test_default_outputs(gen):
    """Outputs allocated by hpc_ops; return_lse picks the return type; the
    default softmax_scale is 1/sqrt(D)."""
    case = C(3, 16, 8, 2, 2, "NHD", lens=[37, 2, 600])
    lens, inputs, _ = _build(gen, case)
    expected, expected_lse = _reference(inputs, case)

    out = hpc_ops.decode_attention(*inputs, q_len=2)
    assert isinstance(out, torch.Tensor) and out.device.type == "cuda"
    assert_attention_close(out, expected, lens, 2)

    result = hpc_ops.decode_attention(*inputs, q_len=2, return_lse=True)
    assert isinstance(result, tuple) and len(result) == 2
    assert_attention_close(result[0], expected, lens, 2, lse=result[1],
                           expected_lse=expected_lse)
    assert_bits_equal(result[0], out, "out with and without return_lse")

    out_buf = poisoned(tuple(out.shape), BF16)
    o, lse = hpc_ops.decode_attention(*inputs, q_len=2, softmax_scale=1 / math.sqrt(D),
                                      out=out_buf, return_lse=True)
    assert o is out_buf
    assert_bits_equal(o, out, "explicit softmax_scale 1/sqrt(D) vs the default")
    assert_bits_equal(lse, result[1], "lse with out= vs without")


# ----------------------------------------------------------------------------
# FP8 KV cache
# ----------------------------------------------------------------------------
def test_fp8_scheme_and_scale_forms(gen):
    """The scheme as an Fp8Scheme member, as its name or (per_tensor) None, and
    one-element scales of shape [1] or []: the same bits. Outputs allocated by
    hpc_ops are bfloat16 / float32 also for an fp8 q."""
    for scheme, enum, scalars in ((PT, hpc_ops.Fp8Scheme.PER_TENSOR, SCALE_NAMES),
                                  (QK, hpc_ops.Fp8Scheme.QK_TOKEN_HEAD__V_HEAD, ())):
        case = C(3, 16, 8, 2, 2, "NHD", lens=[37, 2, 600], scheme=scheme, q_fp8=True)
        lens, inputs, fp8 = _build(gen, case)
        expected, expected_lse = _reference(inputs, case, fp8)
        out, lse = hpc_ops.decode_attention(*inputs, q_len=2, **fp8, return_lse=True)
        assert_attention_close(out, expected, lens, 2, lse=lse, expected_lse=expected_lse,
                               what=f"{scheme} out")
        variants = {f"scheme={enum!r}": dict(fp8, scheme=enum)}
        if scheme == PT:
            variants["scheme=None"] = dict(fp8, scheme=None)
        if scalars:
            variants["scales of shape []"] = dict(fp8, **{n: fp8[n].reshape(()) for n in scalars})
        for what, kwargs in variants.items():
            o, l = hpc_ops.decode_attention(*inputs, q_len=2, **kwargs, return_lse=True)
            assert_bits_equal(o, out, f"{scheme}: out with {what} vs scheme={scheme!r}")
            assert_bits_equal(l, lse, f"{scheme}: lse with {what} vs scheme={scheme!r}")


# ----------------------------------------------------------------------------
# The plan
# ----------------------------------------------------------------------------
def _plan_kwargs(case: Case) -> dict:
    return dict(num_q_heads=case.hq, num_kv_heads=case.hkv, head_dim=D, q_len=case.q_len,
                sliding_window=case.window)


def _plan_kwargs_for(case: Case) -> dict:
    """_plan_kwargs plus the cache dtype (plan_decode_attention only)."""
    kv_dtype = torch.bfloat16 if case.scheme is None else torch.float8_e4m3fn
    return dict(_plan_kwargs(case), kv_dtype=kv_dtype)


def _check_schedule(plan, kv_lens, kwargs, what):
    sched = plan.schedule()
    assert sched.device.type == "cpu" and sched.dtype == torch.int32, \
        f"{what}: schedule() gave {sched.dtype} on {sched.device}, expected int32 on the host"
    expected = hpc_ops.decode_schedule_cpu(kv_lens.cpu(), **kwargs, num_bins=plan.num_bins)
    assert_bits_equal(sched, expected, f"{what}: GPU schedule vs decode_schedule_cpu")


SCHEDULE_LENS = {
    "uniform": lambda gen: [4096] * 32,
    "skewed": lambda gen: [65536] + [4096] * 31,
    "zeros_mixed": lambda gen: [0 if i % 3 == 0 else n
                                for i, n in enumerate(draw_kv_lens(gen, 24, 8192, 16))],
    "single": lambda gen: [777],
    "all_zero": lambda gen: [0] * 5,
    "random_200": lambda gen: draw_kv_lens(gen, 200, 3000, 16),
    "short_64": lambda gen: [1] * 64,
}

SCHEDULE_VARIANTS = {
    "h32x8": dict(num_q_heads=32, num_kv_heads=8),
    "h16x1_q4": dict(num_q_heads=16, num_kv_heads=1, q_len=4),
    "h10x2_q8_w1000": dict(num_q_heads=10, num_kv_heads=2, q_len=8, sliding_window=1000),
}


@pytest.mark.parametrize("variant", list(SCHEDULE_VARIANTS))
@pytest.mark.parametrize("dist", list(SCHEDULE_LENS))
def test_plan_schedule_matches_cpu(gen, dist, variant):
    kwargs = dict(SCHEDULE_VARIANTS[variant], head_dim=D)
    q_len = kwargs.get("q_len", 1)
    lens = [max(n, q_len) if n else 0 for n in SCHEDULE_LENS[dist](gen)]
    kv_lens = _lens_tensor(lens)
    plan = hpc_ops.plan_decode_attention(kv_lens, **kwargs)
    assert isinstance(plan, hpc_ops.DecodePlan)
    assert isinstance(plan.num_bins, int) and plan.num_bins > 0
    _check_schedule(plan, kv_lens, kwargs, "plan")

    # Re-plan in place for other lengths of the same batch.
    other = _lens_tensor(draw_kv_lens(gen, len(lens), 5000, 16, min_len=q_len))
    plan.update(other)
    _check_schedule(plan, other, kwargs, "after update")


PLAN_CASES = [
    C(32, 16, 32, 4, 1, "NHD", max_len=300, long=(13, 20000)),
    C(64, 32, 16, 2, 4, "HND", max_len=1024, window=100),
    C(5, 16, 8, 1, 2, "interleaved", lens=[0, 4096, 0, 2, 77]),
    C(1, 64, 16, 1, 8, "NHD", lens=[8192], cap=30.0),
    C(32, 32, 16, 2, 4, "HND", max_len=300, long=(5, 20000), scheme=QK_TOKEN_HEAD, q_fp8=True),
]


@pytest.mark.parametrize("case", PLAN_CASES, ids=_case_id)
def test_plan_matches_internal_planning(gen, case):
    """decode_attention(plan=plan) is bit-identical to planning inside the call,
    and a plan can be used again."""
    lens, inputs, fp8 = _build(gen, case)
    options = dict(_options(case), **fp8)
    plan = hpc_ops.plan_decode_attention(inputs[4], **_plan_kwargs_for(case))
    planned = hpc_ops.decode_attention(*inputs, **options, plan=plan, return_lse=True)
    internal = hpc_ops.decode_attention(*inputs, **options, plan=None, return_lse=True)
    again = hpc_ops.decode_attention(*inputs, **options, plan=plan, return_lse=True)
    for name, a, b, c in zip(("out", "lse"), planned, internal, again):
        assert_bits_equal(a, b, f"{name}: plan= vs planned inside the call")
        assert_bits_equal(a, c, f"{name}: the same plan used twice")
    expected, expected_lse = _reference(inputs, case, fp8)
    assert_attention_close(planned[0], expected, lens, case.q_len, lse=planned[1],
                           expected_lse=expected_lse)


@pytest.mark.parametrize("scheme", [None, PT], ids=["bf16", "fp8pt"])
def test_plan_for_longer_lengths(gen, scheme):
    """A plan made for longer kv_lens than the call's: its extra tiles lie
    wholly past each request's length (FP8 at 8 rows: TMA tiles that copy
    nothing) and the call attends over its own lengths."""
    case = C(3, 16, 16, 2, 1, "NHD", lens=[100, 7, 300], lse=True, scheme=scheme)
    lens, inputs, fp8 = _build(gen, case)
    plan = hpc_ops.plan_decode_attention(_lens_tensor([1000, 700, 3000]), **_plan_kwargs_for(case))
    out = poisoned((3, case.hq, D), BF16)
    lse = poisoned((3, case.hq), F32)
    hpc_ops.decode_attention(*inputs, **_options(case), **fp8, plan=plan, out=out,
                             return_lse=True, lse_out=lse)
    expected, expected_lse = _reference(inputs, case, fp8)
    assert_attention_close(out, expected, lens, case.q_len, lse=lse, expected_lse=expected_lse)


def test_plan_for_other_shapes_is_rejected(gen):
    case = C(3, 16, 8, 2, 1, "NHD", lens=[100, 7, 300])
    _, inputs, _ = _build(gen, case)
    kv_lens = inputs[4]
    make_plan = hpc_ops.plan_decode_attention
    wrong = {
        "batch": make_plan(_lens_tensor([100, 7, 300, 5]), num_q_heads=8, num_kv_heads=2),
        "num_q_heads": make_plan(kv_lens, num_q_heads=16, num_kv_heads=2),
        "num_kv_heads": make_plan(kv_lens, num_q_heads=8, num_kv_heads=4),
        "q_len": make_plan(kv_lens, num_q_heads=8, num_kv_heads=2, q_len=2),
        "sliding_window": make_plan(kv_lens, num_q_heads=8, num_kv_heads=2, sliding_window=64),
        "kv_dtype": make_plan(kv_lens, num_q_heads=8, num_kv_heads=2,
                              kv_dtype=torch.float8_e4m3fn),
    }
    for name, p in wrong.items():
        out = poisoned((3, 8, D), BF16)
        with pytest.raises(ValueError, match="plan"):
            hpc_ops.decode_attention(*inputs, plan=p, out=out)
        torch.cuda.synchronize()
        assert bool(out.isnan().all()), f"a call rejected for its plan ({name}) wrote to out"

    # A plan without a window used with one; a plan with window 64 used with 128.
    out = poisoned((3, 8, D), BF16)
    with pytest.raises(ValueError, match="plan"):
        hpc_ops.decode_attention(*inputs, sliding_window=64, out=out,
                                 plan=make_plan(kv_lens, num_q_heads=8, num_kv_heads=2))
    with pytest.raises(ValueError, match="plan"):
        hpc_ops.decode_attention(*inputs, sliding_window=128, out=out, plan=wrong["sliding_window"])
    torch.cuda.synchronize()
    assert bool(out.isnan().all()), "a call rejected for its plan wrote to out"

    # update() keeps the batch size.
    good = make_plan(kv_lens, num_q_heads=8, num_kv_heads=2)
    with pytest.raises(ValueError, match="kv_lens|batch"):
        good.update(_lens_tensor([100, 7]))


def test_page_stride_of_4_gib_is_rejected(gen):
    """The kernels address pages with 32-bit byte strides: a k_cache whose
    page stride is 4 GiB (two pages of one allocation, K and V the same view)
    is refused before any launch, naming the tensor and the stride."""
    big = 1 << 31  # bf16 elements: 4 GiB
    if torch.cuda.mem_get_info()[0] < 3 * big:
        pytest.skip("needs 6 GiB of free GPU memory for a 4 GiB page stride")
    case = C(1, 16, 8, 2, 1, "NHD", lens=[20])
    _, inputs, _ = _build(gen, case)
    q, k_cache, _, page_table, kv_lens = inputs[:5]
    storage = torch.zeros(big + k_cache[0].numel(), dtype=BF16, device="cuda")
    wide = storage.as_strided((2, *k_cache.shape[1:]), (big, *k_cache.stride()[1:]))
    wide[0].copy_(k_cache[page_table[0, 0]])
    table = torch.zeros_like(page_table)
    out = poisoned(tuple(q.shape), BF16)
    message = r"k_cache\.stride\(0\) = 2147483648 elements \(4294967296 bytes\), expected under 4 GiB"
    expect_rejected(lambda: hpc_ops.decode_attention(q, wide, wide, table, kv_lens, out=out),
                    message, [out])
    del storage, wide


# ----------------------------------------------------------------------------
# CUDA graphs and torch.compile
# ----------------------------------------------------------------------------
def _check_replay(i, lens, got, expected, eager, plan, kv_lens, hq, hkv, q_len):
    """A graph replay's (out, lse) against the reference, its schedule against
    the CPU planner's, and its bits against an eager call."""
    what = f"replay {i} (kv_lens {lens})"
    (out, lse), (ref, ref_lse) = got, expected
    assert_attention_close(out, ref, lens, q_len, lse=lse, expected_lse=ref_lse, what=what)
    _check_schedule(plan, kv_lens, dict(num_q_heads=hq, num_kv_heads=hkv, head_dim=D,
                                        q_len=q_len), what)
    assert_bits_equal(out, eager[0], f"{what}: out vs an eager call")
    assert_bits_equal(lse, eager[1], f"{what}: lse vs an eager call")


def test_cuda_graph_replay_with_new_lengths(gen):
    """Capture plan.update + decode_attention once; each replay runs on new
    kv_lens (one request growing from 40 to 16384 tokens, a zero, shrinking
    again), new cache contents and new queries, all written into the static
    buffers in place, and matches the reference and an eager call."""
    page_size, hq, hkv, q_len = 32, 16, 2, 2
    capacity = [16384, 2048, 1024, 512, 300, 64]
    steps = [
        [40, 2048, 700, 2, 300, 64],
        [16384, 1500, 1024, 512, 3, 33],   # the long request: the split changes
        [2, 0, 1024, 100, 300, 64],        # a kv_len == 0 request
        [9000, 2048, 2, 512, 299, 2],
    ]
    batch = len(capacity)
    k, v, pt = make_paged_kv(gen, batch, capacity, page_size, hkv, D, layout="NHD", table_pad=4)
    kv_lens = _lens_tensor(steps[0])
    q = make_q(gen, batch * q_len, hq, D)
    out = poisoned((batch * q_len, hq, D), BF16)
    lse = poisoned((batch * q_len, hq), F32)
    plan = hpc_ops.plan_decode_attention(kv_lens, num_q_heads=hq, num_kv_heads=hkv, head_dim=D,
                                         q_len=q_len)

    def step():
        plan.update(kv_lens)
        hpc_ops.decode_attention(q, k, v, pt, kv_lens, q_len=q_len, plan=plan, out=out,
                                 return_lse=True, lse_out=lse)

    fill_paged_kv_(gen, k, v, pt, steps[0])
    graph, _ = capture_graph(step)

    for i, lens in enumerate(steps):
        kv_lens.copy_(_lens_tensor(lens))
        fill_paged_kv_(gen, k, v, pt, lens)  # fresh tokens; NaN past the new lengths
        q.copy_(make_q(gen, batch * q_len, hq, D))
        poison_(out)
        poison_(lse)

        graph.replay()
        torch.cuda.synchronize()

        expected = decode_attention_ref(q, k, v, pt, lens, q_len)
        eager = hpc_ops.decode_attention(q, k, v, pt, kv_lens, q_len=q_len, return_lse=True)
        _check_replay(i, lens, (out, lse), expected, eager, plan, kv_lens, hq, hkv, q_len)


def test_cuda_graph_replay_fp8_with_new_lengths(gen):
    """test_cuda_graph_replay_with_new_lengths with an FP8 cache
    (qk_token_head__v_head) and an fp8 q: each replay also reads new per-token
    k scales (NaN past the new lengths), v scales and q scales, written into
    the captured scale tensors in place."""
    page_size, hq, hkv, q_len, scheme = 64, 32, 4, 4, QK
    capacity = [16384, 2048, 1024, 512, 300, 64]
    steps = [
        [40, 2048, 700, 4, 300, 64],
        [16384, 1500, 1024, 512, 5, 33],
        [4, 0, 1024, 100, 300, 64],
        [9000, 2048, 4, 512, 299, 4],
    ]
    batch, rows = len(capacity), len(capacity) * q_len
    k, v, pt, k_scale, v_scale = make_fp8_paged_kv(gen, batch, capacity, page_size, hkv, D,
                                                   layout="HND", scheme=scheme, table_pad=4)
    kv_lens = _lens_tensor(steps[0])
    q, q_scale = quantize_q(make_q(gen, rows, hq, D), per_token_head=True)
    scales = dict(q_scale=q_scale, k_scale=k_scale, v_scale=v_scale)
    out = poisoned((rows, hq, D), BF16)
    lse = poisoned((rows, hq), F32)
    plan = hpc_ops.plan_decode_attention(kv_lens, num_q_heads=hq, num_kv_heads=hkv, head_dim=D,
                                         q_len=q_len, kv_dtype=torch.float8_e4m3fn)

    def step():
        plan.update(kv_lens)
        hpc_ops.decode_attention(q, k, v, pt, kv_lens, q_len=q_len, scheme=scheme, **scales,
                                 plan=plan, out=out, return_lse=True, lse_out=lse)

    fill_fp8_paged_kv_(gen, k, v, k_scale, v_scale, pt, steps[0], scheme)
    graph, _ = capture_graph(step)

    for i, lens in enumerate(steps):
        kv_lens.copy_(_lens_tensor(lens))
        fill_fp8_paged_kv_(gen, k, v, k_scale, v_scale, pt, lens, scheme)
        new_q, new_q_scale = quantize_q(make_q(gen, rows, hq, D), per_token_head=True)
        q.copy_(new_q)
        q_scale.copy_(new_q_scale)
        poison_(out)
        poison_(lse)

        graph.replay()
        torch.cuda.synchronize()

        expected = decode_attention_ref(*dequantized(q, k, v, q_scale, k_scale, v_scale), pt,
                                        lens, q_len)
        eager = hpc_ops.decode_attention(q, k, v, pt, kv_lens, q_len=q_len, scheme=scheme,
                                         **scales, return_lse=True)
        _check_replay(i, lens, (out, lse), expected, eager, plan, kv_lens, hq, hkv, q_len)


def _attend(q, k, v, pt, kv_lens):
    q = q * 2  # exact in bf16, so eager and compiled inputs agree bit for bit
    out, lse = hpc_ops.decode_attention(q, k, v, pt, kv_lens, q_len=2, soft_cap=30.0,
                                        return_lse=True)
    return out, lse


def test_torch_compile_matches_eager(gen):
    case = C(4, 16, 16, 2, 2, "HND", lens=[300, 2, 4096, 77], cap=30.0)
    lens, inputs, _ = _build(gen, case)
    eager = _attend(*inputs)
    compiled = torch.compile(_attend, fullgraph=False)(*inputs)
    assert_bits_equal(compiled[0], eager[0], "compiled vs eager: out")
    assert_bits_equal(compiled[1], eager[1], "compiled vs eager: lse")
    q, k, v, pt, kv_lens = inputs
    expected, expected_lse = decode_attention_ref(q * 2, k, v, pt, kv_lens, 2, soft_cap=30.0)
    assert_attention_close(eager[0], expected, lens, 2, lse=eager[1], expected_lse=expected_lse)


def _attend_fp8(q, k, v, pt, kv_lens, q_scale, k_scale, v_scale):
    return hpc_ops.decode_attention(q, k, v, pt, kv_lens, q_len=2, scheme=QK, q_scale=q_scale,
                                    k_scale=k_scale, v_scale=v_scale, sliding_window=1000,
                                    return_lse=True)


def test_torch_compile_fp8_matches_eager(gen):
    """The FP8 arguments (scheme and three optional scale tensors) through the
    registered op under torch.compile."""
    case = C(4, 16, 16, 2, 2, "HND", lens=[300, 2, 4096, 77], window=1000, scheme=QK, q_fp8=True)
    lens, inputs, fp8 = _build(gen, case)
    scales = [fp8[n] for n in SCALE_NAMES]
    eager = _attend_fp8(*inputs, *scales)
    compiled = torch.compile(_attend_fp8, fullgraph=False)(*inputs, *scales)
    assert_bits_equal(compiled[0], eager[0], "compiled vs eager: out")
    assert_bits_equal(compiled[1], eager[1], "compiled vs eager: lse")
    expected, expected_lse = _reference(inputs, case, fp8)
    assert_attention_close(eager[0], expected, lens, 2, lse=eager[1], expected_lse=expected_lse)


# ----------------------------------------------------------------------------
# Argument errors with device tensors
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", invalid_call_names("cuda"))
def test_invalid_arguments(name):
    """Rejected with a ValueError naming the argument, before any launch: the
    NaN-filled outputs are bit-identical afterwards."""
    args, kwargs, match, buffers = build_invalid_call(name, "cuda")
    expect_rejected(lambda: hpc_ops.decode_attention(*args, **kwargs), match, buffers)
