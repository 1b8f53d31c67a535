"""Plain-torch reference and input builders for hpc_ops.rope_qk_norm_kv_write.

Reference
    rope_qk_norm_kv_write_ref follows the docstring of
    python/hpc_ops/rope.py in float64 from the operator's inputs: row i of
    request b (rows cu_seqlens[b] .. cu_seqlens[b+1]-1, n_b of them) sits at
    cache position p = kv_lens[b] - n_b + i and is rotated by positions[row]
    (or p); optional per-head RMSNorm (reference.rms_norm_ref) before or after
    the rotation; q rows past cu_seqlens[B] are zero; a rotation position
    outside [0, max_position) gives a NaN q row and no cache write; a cache
    position outside [0, max_pages * page_size) or a negative page-table entry
    gives no cache write. It returns a RopeExpected: the exact q (float64,
    before rounding or quantization), the (page, slot) of every cache write
    with the exact k and v that go there, and per element an absolute bound
    on the error float32 evaluation of the formulas may carry (ref_err of
    tolerances.py). Dynamic FP8 scales follow from those exact values
    (reference.per_token_scale_ref: max(amax, 1e-10) / 448 per token and head).

Rotation
    cos_sin_cache [max_position, rotary_dim] holds cos(pos * f_i) in its first
    rotary_dim/2 columns and sin(pos * f_i) in the rest, f_i = theta**(-2i/rot).
    "neox" rotates the pairs (i, i + rot/2), "interleaved" the pairs (2i, 2i+1),
    both with frequency i: (a, b) -> (a cos - b sin, b cos + a sin). Dims past
    rotary_dim pass through. The reference reads the cache as given (float32
    or bfloat16 values), exactly as a kernel must.

Problems
    make_rope_problem builds a whole call: this step's rows for a list of
    (kv_len, n_new) requests (prefill chunks, decode tokens and empty requests
    mixed; rows past cu_seqlens[B] hold NaN inputs), q/k/v as views of one
    packed qkv or as separate tensors with unusual strides, magnitudes spread
    per (row, head) over a few octaves; a paged cache in the NHD, HND or
    interleaved layout (attention_reference.alloc_kv) with a shuffled,
    non-contiguous page table and unused pages (make_page_table); every cache
    slot poisoned (NaN, fp8 byte 0x7F, NaN per-token k scales) except the
    request's earlier tokens (positions below kv_len - n_new), which hold
    random values; cos_sin_cache from rope theta 1e6 for positions past every
    kv_len; poisoned outputs; FP8 input scales derived from the exact results
    (amax * clip / 448, so clip < 1 saturates). `like=` shares the cache,
    page table, cos_sin_cache, norm weights and scales of another problem
    (consecutive steps, CUDA-graph replays).

Invalid calls
    INVALID_CALLS lists argument errors shared by the CPU and GPU tests; each
    builds a call on a given device from a small valid one (BF16 cache, or an
    FP8 one with the scales of a scheme) and names the regex its ValueError
    must match.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch

import reference as ref
from attention_reference import (FP8_SCHEMES, LAYOUTS, PAGE_SIZES, PER_TENSOR, Q_TOKEN_HEAD,
                                 QK_TOKEN_HEAD, alloc_kv, make_page_table, token_slots)
from hpc_test_utils import norm_weight, poison_, poisoned, row_magnitudes, static_scale_for
from reference import FP8

BF16 = torch.bfloat16
F32 = torch.float32
INT32 = torch.int32
INT64 = torch.int64

STYLES = ("neox", "interleaved")
NORM_ORDERS = ("norm_then_rope", "rope_then_norm")
HEAD_DIMS = (64, 128, 256)
# How the call gets q, k and v: the packed qkv with k=None, v=None; views of a
# packed qkv (what split_qkv returns); separate tensors with other strides.
INPUT_FORMS = ("packed", "split", "separate")
ROPE_THETA = 1e6
DEFAULT_EPS = 1e-6

# Relative error (of the sum of the magnitudes of the terms) that float32
# evaluation of norm + rotation may carry: a few roundings of each product and
# sum, the rsqrt (2 ulps) and the mean of squares, with margin (16 ulps).
FP32_MATH_REL = 2.0 ** -20

__all__ = [
    "FP8_SCHEMES", "LAYOUTS", "PAGE_SIZES", "PER_TENSOR", "Q_TOKEN_HEAD", "QK_TOKEN_HEAD",
    "STYLES", "NORM_ORDERS", "HEAD_DIMS", "INPUT_FORMS", "RopeExpected", "RopeProblem",
    "make_cos_sin_cache", "rotate_ref", "rope_qk_norm_kv_write_ref", "make_rope_problem",
    "slot_values", "select_rows", "bits", "INVALID_CALLS", "invalid_call_names", "build_invalid_call",
]


# ----------------------------------------------------------------------------
# Reference
# ----------------------------------------------------------------------------
def make_cos_sin_cache(max_position: int, rotary_dim: int, theta: float = ROPE_THETA,
                       dtype=F32, device="cuda") -> torch.Tensor:
    """[max_position, rotary_dim]: cos(pos * f_i) for i < rotary_dim/2, then
    sin(pos * f_i), f_i = theta**(-2i / rotary_dim); computed in float64 and
    rounded once to dtype (float32 or bfloat16)."""
    half = rotary_dim // 2
    inv_freq = theta ** (-torch.arange(half, dtype=torch.float64, device=device) * 2.0
                         / rotary_dim)
    angles = torch.arange(max_position, dtype=torch.float64, device=device)[:, None] * inv_freq
    return torch.cat([angles.cos(), angles.sin()], dim=1).to(dtype)


def _pairs(x: torch.Tensor, rotary_dim: int, style: str):
    """Index views (a, b) of the rotated pairs of x [..., D], frequency i at [..., i]."""
    if style == "neox":
        half = rotary_dim // 2
        return x[..., :half], x[..., half:rotary_dim]
    if style == "interleaved":
        return x[..., 0:rotary_dim:2], x[..., 1:rotary_dim:2]
    raise ValueError(style)


def rotate_ref(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rotary_dim: int,
               style: str, *, magnitude: bool = False) -> torch.Tensor:
    """x [rows, H, D] (float64) rotated by cos, sin [rows, rotary_dim/2];
    dims past rotary_dim unchanged. magnitude: x holds magnitudes of values,
    and the result the magnitudes |a||cos| + |b||sin| of the terms of each
    output (for error bounds)."""
    c, s = cos[:, None, :], sin[:, None, :]
    sign = -1.0
    if magnitude:
        c, s, sign = c.abs(), s.abs(), 1.0
    out = x.clone()
    a, b = _pairs(x, rotary_dim, style)
    out_a, out_b = _pairs(out, rotary_dim, style)
    out_a.copy_(a * c + sign * b * s)
    out_b.copy_(b * c + a * s)
    return out


def _norm_rope(x, cos, sin, rotary_dim, style, weight, norm_order, eps):
    """(value, magnitude) of norm + rotation of x [rows, H, D], float64."""
    value = x.double()
    mag = value.abs()

    def norm(value, mag):
        inv_rms = torch.rsqrt(value.square().mean(dim=-1, keepdim=True) + eps)
        return ref.rms_norm_ref(value, weight, eps), mag * inv_rms * weight.double().abs()

    if weight is not None and norm_order == "norm_then_rope":
        value, mag = norm(value, mag)
    value, mag = (rotate_ref(value, cos, sin, rotary_dim, style),
                  rotate_ref(mag, cos, sin, rotary_dim, style, magnitude=True))
    if weight is not None and norm_order == "rope_then_norm":
        value, mag = norm(value, mag)
    return value, mag


@dataclass
class RopeExpected:
    """What one call must produce (float64 values before rounding)."""
    q: torch.Tensor          # [rows, Hq, D]: 0 on padding rows, NaN on rows rotated out of range
    q_err: torch.Tensor      # [rows, Hq, D]: allowed float32 evaluation error (ref_err)
    padding: torch.Tensor    # bool [rows]: rows past cu_seqlens[B]
    nan_rows: torch.Tensor   # bool [rows]: rotation position outside [0, max_position)
    rows: torch.Tensor       # int64 [n]: the rows written to the cache ...
    pages: torch.Tensor      # int64 [n]: ... into these pages ...
    slots: torch.Tensor      # int64 [n]: ... and slots
    k: torch.Tensor          # [n, Hkv, D]: k as written (normed, rotated)
    k_err: torch.Tensor      # [n, Hkv, D]
    v: torch.Tensor          # [n, Hkv, D]: v as given

    def written_mask(self, num_pages: int, page_size: int) -> torch.Tensor:
        """bool [num_pages, page_size]: the slots this call writes."""
        mask = torch.zeros(num_pages, page_size, dtype=torch.bool, device=self.q.device)
        mask[self.pages, self.slots] = True
        assert int(mask.sum()) == self.rows.numel(), "two rows write the same slot"
        return mask

    def q_scale(self) -> torch.Tensor:
        """float32 [rows, Hq]: the dynamic q scales (NaN on NaN rows)."""
        return ref.per_token_scale_ref(self.q)[..., 0]

    def k_scale(self) -> torch.Tensor:
        """float32 [n, Hkv]: the per-token k scales of qk_token_head__v_head."""
        return ref.per_token_scale_ref(self.k)[..., 0]


def rope_qk_norm_kv_write_ref(q, k, v, cos_sin_cache, page_table, kv_lens, cu_seqlens,
                              page_size: int, *, positions=None, rotary_dim=None,
                              style: str = "neox", q_norm_weight=None, k_norm_weight=None,
                              norm_order: str = "norm_then_rope",
                              eps: float = DEFAULT_EPS) -> RopeExpected:
    """The float64 result of rope_qk_norm_kv_write for these inputs (see the
    module docstring). q, k, v: [rows, H, D], any strides."""
    rows, hq, d = q.shape
    dev = q.device
    rot = d if rotary_dim is None else rotary_dim
    cu = [int(x) for x in cu_seqlens.tolist()]
    lens = [int(x) for x in kv_lens.tolist()]
    batch = len(lens)
    active = cu[batch]
    assert len(cu) == batch + 1 and cu[0] == 0 and active <= rows

    counts = torch.tensor([cu[b + 1] - cu[b] for b in range(batch)], dtype=INT64, device=dev)
    req = torch.repeat_interleave(torch.arange(batch, device=dev), counts)       # [active]
    start = torch.tensor(cu[:batch], dtype=INT64, device=dev)
    index = torch.arange(active, device=dev) - start[req]
    cache_pos = torch.tensor(lens, dtype=INT64, device=dev)[req] - counts[req] + index
    rot_pos = positions[:active].long() if positions is not None else cache_pos
    max_position = cos_sin_cache.shape[0]
    pos_ok = (rot_pos >= 0) & (rot_pos < max_position)

    cs = cos_sin_cache.double()[rot_pos.clamp(0, max_position - 1)]
    cos, sin = cs[:, :rot // 2], cs[:, rot // 2:rot]
    q_val, q_mag = _norm_rope(q[:active], cos, sin, rot, style, q_norm_weight, norm_order, eps)
    k_val, k_mag = _norm_rope(k[:active], cos, sin, rot, style, k_norm_weight, norm_order, eps)

    q_exp = torch.zeros(rows, hq, d, dtype=torch.float64, device=dev)
    q_err = torch.zeros_like(q_exp)
    q_exp[:active] = torch.where(pos_ok[:, None, None], q_val, float("nan"))
    q_err[:active] = FP32_MATH_REL * q_mag
    padding = torch.arange(rows, device=dev) >= active
    nan_rows = torch.zeros(rows, dtype=torch.bool, device=dev)
    nan_rows[:active] = ~pos_ok

    capacity = page_table.shape[1] * page_size
    in_cache = (cache_pos >= 0) & (cache_pos < capacity)
    column = cache_pos.clamp(0, max(capacity - 1, 0)) // page_size
    page = (page_table.long()[req, column] if capacity > 0
            else torch.full_like(cache_pos, -1))
    write = pos_ok & in_cache & (page >= 0)
    written = write.nonzero().flatten()
    return RopeExpected(q=q_exp, q_err=q_err, padding=padding, nan_rows=nan_rows,
                        rows=written, pages=page[written], slots=cache_pos[written] % page_size,
                        k=k_val[written], k_err=FP32_MATH_REL * k_mag[written],
                        v=v[:active][written].double())


def _int_view(t: torch.Tensor) -> torch.Tensor:
    """t viewed as integers of its element size (fp8 cannot be indexed everywhere)."""
    return t.view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: INT64}[t.element_size()])


def slot_values(cache: torch.Tensor, pages: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """cache[pages, slots] ([n, Hkv, D] of a cache, or [n, Hkv] of a per-token
    k_scale), any dtype including float8_e4m3fn."""
    return _int_view(cache)[pages, slots].view(cache.dtype)


def select_rows(t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """t[mask] for any dtype including float8_e4m3fn."""
    return _int_view(t)[mask].view(t.dtype)


def bits(t: torch.Tensor) -> torch.Tensor:
    """A copy of t as integers of its element size (bit comparisons under masks)."""
    return _int_view(t).clone()


# ----------------------------------------------------------------------------
# Problems
# ----------------------------------------------------------------------------
@dataclass
class RopeProblem:
    """Every argument of one rope_qk_norm_kv_write call (see make_rope_problem)."""
    lens: list                       # [(kv_len, n_new)] per request
    form: str
    qkv: Optional[torch.Tensor]      # packed [rows, (Hq + 2 Hkv) * D] (forms packed, split)
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    cos_sin_cache: torch.Tensor
    k_cache: torch.Tensor
    v_cache: torch.Tensor
    page_table: torch.Tensor
    kv_lens: torch.Tensor
    cu_seqlens: torch.Tensor
    positions: Optional[torch.Tensor]
    rotary_dim: Optional[int]
    style: str
    q_norm_weight: Optional[torch.Tensor]
    k_norm_weight: Optional[torch.Tensor]
    norm_order: str
    eps: float
    kv_scheme: Optional[str]
    k_scale: Optional[torch.Tensor]
    v_scale: Optional[torch.Tensor]
    q_scale: Optional[torch.Tensor]
    out_q: torch.Tensor
    out_q_base: torch.Tensor         # the allocation out_q is a view of
    capacity: list                   # per request: the kv_len its page-table row has pages for
    clip: float = 1.0

    @property
    def rows(self) -> int:
        return self.q.shape[0]

    @property
    def q_fp8(self) -> bool:
        return self.out_q.dtype == FP8

    @property
    def kv_fp8(self) -> bool:
        return self.k_cache.dtype == FP8

    @property
    def dynamic_q(self) -> bool:
        return self.q_fp8 and self.kv_scheme != PER_TENSOR

    @property
    def page_size(self) -> int:
        return self.k_cache.shape[1]

    def call(self, form: Optional[str] = None):
        """(args, kwargs) of the call, q/k/v passed in `form` (default: the problem's)."""
        form = form or self.form
        if form == "packed":
            qkv = (self.qkv, None, None)
        elif form in ("split", "separate"):
            qkv = (self.q, self.k, self.v)
        else:
            raise ValueError(form)
        args = (*qkv, self.cos_sin_cache, self.k_cache, self.v_cache, self.page_table,
                self.kv_lens, self.cu_seqlens)
        kwargs = dict(positions=self.positions, rotary_dim=self.rotary_dim, style=self.style,
                      q_norm_weight=self.q_norm_weight, k_norm_weight=self.k_norm_weight,
                      norm_order=self.norm_order, eps=self.eps, kv_scheme=self.kv_scheme,
                      k_scale=self.k_scale, v_scale=self.v_scale, q_out_dtype=self.out_q.dtype,
                      q_scale=self.q_scale, out_q=self.out_q)
        return args, kwargs

    def expected(self) -> RopeExpected:
        return rope_qk_norm_kv_write_ref(
            self.q, self.k, self.v, self.cos_sin_cache, self.page_table, self.kv_lens,
            self.cu_seqlens, self.page_size, positions=self.positions,
            rotary_dim=self.rotary_dim, style=self.style, q_norm_weight=self.q_norm_weight,
            k_norm_weight=self.k_norm_weight, norm_order=self.norm_order, eps=self.eps)

    def inputs(self) -> dict:
        """Every tensor the call only reads, by name."""
        named = {"qkv": self.qkv} if self.qkv is not None else {"q": self.q, "k": self.k,
                                                                "v": self.v}
        named.update(cos_sin_cache=self.cos_sin_cache, page_table=self.page_table,
                     kv_lens=self.kv_lens, cu_seqlens=self.cu_seqlens, positions=self.positions,
                     q_norm_weight=self.q_norm_weight, k_norm_weight=self.k_norm_weight,
                     v_scale=self.v_scale)
        if self.kv_scheme != QK_TOKEN_HEAD:
            named["k_scale"] = self.k_scale
        if self.q_fp8 and not self.dynamic_q:
            named["q_scale"] = self.q_scale
        return {n: t for n, t in named.items() if t is not None}

    def outputs(self) -> dict:
        """Every tensor the call may write, by name."""
        named = dict(out_q_base=self.out_q_base, k_cache=self.k_cache, v_cache=self.v_cache)
        if self.kv_scheme == QK_TOKEN_HEAD:
            named["k_scale"] = self.k_scale
        if self.dynamic_q:
            named["q_scale"] = self.q_scale
        return named

    def snapshot(self) -> dict:
        """Clones of every input and output, by name."""
        return {n: t.clone() for n, t in {**self.inputs(), **self.outputs()}.items()}

    def load_(self, other: "RopeProblem") -> "RopeProblem":
        """Copies other's per-step data (rows, lengths, positions; its caches,
        scales and tables are this problem's, see make_rope_problem(like=)) into
        this problem's tensors, and poisons the outputs: for CUDA graphs, which
        read the captured tensors. Returns this problem with other's lens."""
        assert other.k_cache is self.k_cache and other.rows == self.rows and other.form == self.form
        pairs = [(self.kv_lens, other.kv_lens), (self.cu_seqlens, other.cu_seqlens),
                 (self.positions, other.positions)]
        pairs += [(self.qkv, other.qkv)] if self.qkv is not None else [
            (self.q, other.q), (self.k, other.k), (self.v, other.v)]
        if self.q_fp8 and not self.dynamic_q:
            pairs.append((self.q_scale, other.q_scale))
        for dst, src in pairs:
            if dst is not None:
                dst.copy_(src)
        poison_(self.out_q_base)
        if self.dynamic_q:
            poison_(self.q_scale)
        return dataclasses.replace(self, lens=list(other.lens))


def _values(gen, rows: int, heads: int, d: int) -> torch.Tensor:
    """float32 N(0, 1) [rows, heads, d] times 2**N(0, 1) per (row, head), so
    per-token-head scales and norms differ."""
    x = torch.randn(rows, heads, d, generator=gen, device="cuda")
    return x * row_magnitudes(gen, (rows, heads), spread=1.0)


def _row_tensors(gen, rows: int, active: int, hq: int, hkv: int, d: int, form: str):
    """(qkv or None, q, k, v) bf16; rows past `active` hold NaN."""
    values = [_values(gen, rows, h, d) for h in (hq, hkv, hkv)]
    for x in values:
        x[active:] = float("nan")
    if form in ("packed", "split"):
        qkv = torch.cat([x.flatten(1) for x in values], dim=1).to(BF16)
        q_end, k_end = hq * d, (hq + hkv) * d
        return (qkv, qkv[:, :q_end].unflatten(1, (hq, d)),
                qkv[:, q_end:k_end].unflatten(1, (hkv, d)), qkv[:, k_end:].unflatten(1, (hkv, d)))
    if form == "separate":
        # q contiguous; k rows padded (the first Hkv heads of [rows, Hkv + 1, D]);
        # v head-major (a [Hkv, rows, D] allocation, transposed).
        q = values[0].to(BF16)
        k = torch.full((rows, hkv + 1, d), float("nan"), dtype=BF16, device="cuda")[:, :hkv]
        k.copy_(values[1])
        v = torch.empty(hkv, rows, d, dtype=BF16, device="cuda").transpose(0, 1)
        v.copy_(values[2])
        return None, q, k, v
    raise ValueError(form)


def _positions(gen, lens, rows: int, dtype, max_position: int):
    """Rotation positions [rows] of dtype: cache position + a random offset per
    request (0..2000, kept below max_position); -1 on padding rows."""
    pos = torch.full((rows,), -1, dtype=INT64, device="cuda")
    row = 0
    for kv_len, n in lens:
        room = max(0, min(2000, max_position - kv_len))
        offset = int(torch.randint(0, room + 1, (1,), generator=gen, device="cuda"))
        pos[row:row + n] = torch.arange(kv_len - n, kv_len, device="cuda") + offset
        row += n
    return pos.to(dtype)


def _fill_cache_(gen, problem: RopeProblem, lens) -> None:
    """Poisons the cache (and a per-token k_scale) and writes random earlier
    tokens (positions below kv_len - n_new) into their slots."""
    for t in (problem.k_cache, problem.v_cache):
        poison_(t)
    if problem.kv_scheme == QK_TOKEN_HEAD:
        poison_(problem.k_scale)
    num_pages, page_size, hkv, d = problem.k_cache.shape
    earlier = [max(kv_len - n, 0) for kv_len, n in lens]
    slots = token_slots(problem.page_table, earlier, num_pages, page_size)
    count = int(slots.sum())
    for cache in (problem.k_cache, problem.v_cache):
        values = _values(gen, count, hkv, d)
        if cache.dtype == FP8:
            _int_view(cache)[slots] = _int_view(ref.to_fp8_saturating(values * 64.0))
        else:
            cache[slots] = values.to(BF16)
    if problem.kv_scheme == QK_TOKEN_HEAD:
        problem.k_scale[slots] = row_magnitudes(gen, (count, hkv), spread=1.0)[..., 0] / 64.0


def _set_static_scales_(problem: RopeProblem, expected: RopeExpected) -> None:
    """The FP8 input scales from this call's exact results: amax * clip / 448
    (per kv head for v_scale of qk_token_head__v_head), written in place."""
    clip = problem.clip
    if problem.kv_fp8:
        if problem.kv_scheme != QK_TOKEN_HEAD:
            problem.k_scale.copy_(static_scale_for(expected.k, clip))
            problem.v_scale.copy_(static_scale_for(expected.v, clip))
        else:
            for h in range(problem.v_scale.shape[0]):
                problem.v_scale[h:h + 1].copy_(static_scale_for(expected.v[:, h], clip))
    if problem.q_fp8 and not problem.dynamic_q:
        live = ~(expected.padding | expected.nan_rows)
        problem.q_scale.copy_(static_scale_for(expected.q[live], clip))


def _round_up(n: int, multiple: int) -> int:
    return (n + multiple - 1) // multiple * multiple


def make_rope_problem(gen, lens, hq: int = 32, hkv: int = 8, d: int = 128, *,
                      page_size: int = 16, layout: str = "NHD", form: str = "split",
                      rotary_dim: Optional[int] = None, style: str = "neox",
                      norm_order: Optional[str] = None, norm_dtype=BF16, cos_sin_dtype=F32,
                      positions=None, eps: float = DEFAULT_EPS, scheme: Optional[str] = None,
                      q_fp8: bool = False, pad_rows: int = 0, rows: Optional[int] = None,
                      clip: float = 1.0, out_strided: bool = False, table_pad: int = 0,
                      capacity=None, max_position: Optional[int] = None,
                      like: Optional[RopeProblem] = None, keep_cache: bool = False,
                      keep_scales: bool = False) -> RopeProblem:
    """A RopeProblem for requests `lens` = [(kv_len, n_new), ...].

    rows: total rows (default sum(n_new) + pad_rows; the rest are padding).
    norm_order: None (no QK norm) or one of NORM_ORDERS; norm_dtype: the
    weights' dtype. positions: None or the dtype of explicit positions (cache
    position + a random offset per request). scheme: None (BF16 cache) or an
    FP8 scheme; q_fp8: q_out float8_e4m3fn (dynamic schemes: a poisoned
    q_scale output). clip: FP8 input scales are amax * clip / 448.
    out_strided: out_q is a view of a wider allocation. capacity: per-request
    kv lengths the page table is made for (default the kv_lens). like: share
    its cache, page table, cos_sin_cache, norm weights and FP8 input scales
    (their shapes win over the arguments here); keep_cache: leave the cache as
    it is (else it is poisoned and the earlier tokens refilled); keep_scales:
    leave the FP8 input scales as they are (else set from this call).
    """
    lens = [(int(a), int(b)) for a, b in lens]
    for kv_len, n in lens:
        assert kv_len >= 0 and n >= 0
    active = sum(n for _, n in lens)
    rows = active + pad_rows if rows is None else rows
    assert rows >= active
    kv_lens = torch.tensor([kv_len for kv_len, _ in lens], dtype=INT32, device="cuda")
    cu = [0]
    for _, n in lens:
        cu.append(cu[-1] + n)
    cu_seqlens = torch.tensor(cu, dtype=INT32, device="cuda")

    if like is not None:
        hkv, d = like.k_cache.shape[2], like.k_cache.shape[3]
        hq = like.q.shape[1]
        scheme, rotary_dim, style = like.kv_scheme, like.rotary_dim, like.style
        norm_order, eps = like.norm_order if like.q_norm_weight is not None else None, like.eps
        k_cache, v_cache, page_table = like.k_cache, like.v_cache, like.page_table
        cos_sin_cache = like.cos_sin_cache
        q_w, k_w = like.q_norm_weight, like.k_norm_weight
        k_scale, v_scale = like.k_scale, like.v_scale
        max_position = cos_sin_cache.shape[0]
        cap_lens = like.capacity
        assert len(cap_lens) == len(lens) and all(
            kv_len <= cap for (kv_len, _), cap in zip(lens, cap_lens)), \
            f"lens {lens} exceed the pages of the shared page table ({cap_lens})"
    else:
        cap_lens = [kv_len for kv_len, _ in lens] if capacity is None else list(capacity)
        page_table, num_pages = make_page_table(gen, cap_lens, page_size, table_pad=table_pad)
        kv_dtype = BF16 if scheme is None else FP8
        k_cache, v_cache = alloc_kv(num_pages, page_size, hkv, d, layout, dtype=kv_dtype)
        rot = d if rotary_dim is None else rotary_dim
        if max_position is None:
            longest = max([kv_len for kv_len, _ in lens] + cap_lens + [1])
            max_position = _round_up(longest + (2000 if positions is not None else 0) + 1, 64)
        cos_sin_cache = make_cos_sin_cache(max_position, rot, dtype=cos_sin_dtype)
        q_w = k_w = None
        if norm_order is not None:
            q_w = norm_weight(gen, d).to(norm_dtype)
            k_w = norm_weight(gen, d).to(norm_dtype)
            if norm_dtype == F32:  # not bf16 values: a kernel that rounds them shows
                q_w = q_w * (1 + 2.0 ** -12 * torch.randn(d, generator=gen, device="cuda"))
                k_w = k_w * (1 + 2.0 ** -12 * torch.randn(d, generator=gen, device="cuda"))
        k_scale = v_scale = None
        if scheme == QK_TOKEN_HEAD:
            k_scale = poisoned((num_pages, page_size, hkv), F32)
            v_scale = torch.ones(hkv, dtype=F32, device="cuda")
        elif scheme is not None:
            k_scale = torch.ones(1, dtype=F32, device="cuda")
            v_scale = torch.ones(1, dtype=F32, device="cuda")

    assert q_fp8 is False or scheme is not None, "an fp8 q_out needs an FP8 cache"
    qkv, q, k, v = _row_tensors(gen, rows, active, hq, hkv, d, form)
    pos = None if positions is None else _positions(gen, lens, rows, positions, max_position)

    q_dtype = FP8 if q_fp8 else BF16
    if out_strided:
        out_q_base = poisoned((rows, hq + 1, d), q_dtype)
        out_q = out_q_base[:, 1:]
    else:
        out_q_base = out_q = poisoned((rows, hq, d), q_dtype)
    q_scale = None
    if q_fp8:
        q_scale = (torch.ones(1, dtype=F32, device="cuda") if scheme == PER_TENSOR
                   else poisoned((rows, hq), F32))

    problem = RopeProblem(
        lens=lens, form=form, qkv=qkv, q=q, k=k, v=v, cos_sin_cache=cos_sin_cache,
        k_cache=k_cache, v_cache=v_cache, page_table=page_table, kv_lens=kv_lens,
        cu_seqlens=cu_seqlens, positions=pos, rotary_dim=rotary_dim, style=style,
        q_norm_weight=q_w, k_norm_weight=k_w, norm_order=norm_order or "norm_then_rope",
        eps=eps, kv_scheme=scheme, k_scale=k_scale, v_scale=v_scale, q_scale=q_scale,
        out_q=out_q, out_q_base=out_q_base, capacity=cap_lens, clip=clip)
    if not keep_cache:
        _fill_cache_(gen, problem, lens)
    expected = problem.expected()
    if keep_scales:
        if q_fp8 and not problem.dynamic_q:  # a new q_scale for this call's own q
            live = ~(expected.padding | expected.nan_rows)
            problem.q_scale.copy_(static_scale_for(expected.q[live], clip))
    else:
        _set_static_scales_(problem, expected)
    return problem


# ----------------------------------------------------------------------------
# Invalid calls
# ----------------------------------------------------------------------------
# A valid small call: B = 2 requests of 4 and 1 rows plus one padding row
# (rows = 6, cu_seqlens [0, 4, 5]), Hq = 8, Hkv = 2, D = 128, page_size 16,
# 4 pages, 2 table columns, kv_lens [20, 5], cos_sin_cache [64, 128] float32,
# BF16 cache, separate q/k/v (_fp8: an FP8 cache with a scheme's scales).
# Each case changes one thing; values are zeros and ones (a call is rejected
# before anything runs). `match` names the argument.
ROWS, HQ, HKV, D = 6, 8, 2, 128
NUM_PAGES, PAGE = 4, 16
POSITIONAL = ("q", "k", "v", "cos_sin_cache", "k_cache", "v_cache", "page_table", "kv_lens",
              "cu_seqlens")


def _zeros(*shape, dtype=BF16):
    return lambda dev: torch.zeros(shape, dtype=dtype, device=dev)


def _ones(*shape, dtype=F32):
    return lambda dev: torch.ones(shape, dtype=dtype, device=dev)


def _nan(shape, dtype, device):
    t = torch.empty(shape, dtype=dtype, device=device)
    if dtype == FP8:
        t.view(torch.uint8).fill_(0x7F)
    else:
        t.fill_(float("nan"))
    return t


def _kv(num_pages=NUM_PAGES, page_size=PAGE, hkv=HKV, d=D, dtype=BF16):
    return _zeros(num_pages, page_size, hkv, d, dtype=dtype)


def _int32(values):
    return lambda dev: torch.tensor(values, dtype=INT32, device=dev)


def _valid_call(device):
    return {
        "q": torch.zeros(ROWS, HQ, D, dtype=BF16, device=device),
        "k": torch.zeros(ROWS, HKV, D, dtype=BF16, device=device),
        "v": torch.zeros(ROWS, HKV, D, dtype=BF16, device=device),
        "cos_sin_cache": torch.ones(64, D, dtype=F32, device=device),
        "k_cache": _kv()(device),
        "v_cache": _kv()(device),
        "page_table": _int32([[0, 1], [2, 3]])(device),
        "kv_lens": _int32([20, 5])(device),
        "cu_seqlens": _int32([0, 4, 5])(device),
    }


class _Change:
    """A change to the valid call: apply(args, device); `sets` names the
    arguments it replaces (an out_q it does not set is remade to fit q)."""

    def __init__(self, apply, sets=()):
        self.apply, self.sets = apply, set(sets)

    def __call__(self, args, device):
        self.apply(args, device)


def _set(**changes):
    """A case that replaces arguments; a callable value is called with the device."""
    def apply(args, device):
        for name, value in changes.items():
            args[name] = value(device) if callable(value) else value
    return _Change(apply, changes)


def _then(*steps):
    def apply(args, device):
        for step in steps:
            step(args, device)
    return _Change(apply, set().union(*(s.sets for s in steps)))


def _fp8(scheme=PER_TENSOR, q_fp8=False, **changes):
    """A case on a valid FP8 call: float8_e4m3fn caches with the scheme and its
    scales (k_scale [1] or [4, 16, 2], v_scale [1] or [2]), with q_fp8 an fp8
    q_out and its q_scale ([1] or [6, 8]); then `changes` as in _set."""
    def apply(args, device):
        per_token_kv = scheme == QK_TOKEN_HEAD
        args.update(k_cache=_kv(dtype=FP8)(device), v_cache=_kv(dtype=FP8)(device),
                    kv_scheme=scheme,
                    k_scale=(_ones(NUM_PAGES, PAGE, HKV) if per_token_kv else _ones(1))(device),
                    v_scale=(_ones(HKV) if per_token_kv else _ones(1))(device))
        if q_fp8:
            args["q_out_dtype"] = FP8
            args["q_scale"] = (_ones(1) if scheme == PER_TENSOR else _ones(ROWS, HQ))(device)
        _set(**changes)(args, device)
    return _Change(apply, changes)


def _packed(**changes):
    """The packed call: q is qkv [6, (8 + 2 * 2) * 128], k = v = None."""
    def apply(args, device):
        args.update(q=_zeros(ROWS, (HQ + 2 * HKV) * D)(device), k=None, v=None)
        _set(**changes)(args, device)
    return _Change(apply, changes)


def _heads(q_heads=HQ, kv_heads=HKV, q_d=D, k_d=D, v_d=D, cache_d=D, cache_heads=None):
    """q, k, v and the caches with the given head counts and dims."""
    cache_heads = kv_heads if cache_heads is None else cache_heads
    return _set(q=_zeros(ROWS, q_heads, q_d), k=_zeros(ROWS, kv_heads, k_d),
                v=_zeros(ROWS, kv_heads, v_d), k_cache=_kv(hkv=cache_heads, d=cache_d),
                v_cache=_kv(hkv=cache_heads, d=cache_d))


def _head_dim(d):
    """Everything with head dim d (cos_sin_cache [64, d])."""
    return _then(_heads(q_d=d, k_d=d, v_d=d, cache_d=d), _set(cos_sin_cache=_ones(64, d)))


def _rotary(rot, style="neox"):
    return _set(rotary_dim=rot, style=style, cos_sin_cache=_ones(64, max(rot, 1)))


def _strided_last(*shape, dtype=BF16):
    return lambda dev: torch.zeros(*shape[:-1], 2 * shape[-1], dtype=dtype, device=dev)[..., ::2]


def _on_cpu(name):
    def apply(args, device):
        args[name] = args[name].cpu()
    return _Change(apply, {name})


HEAD_DIM = r"head.?dim|\bD\b|shape\[(2|3)\]"
Q_NAME, K_NAME, V_NAME = r"\bq\b", r"\bk\b", r"\bv\b"
WEIGHTS = r"(q|k)_norm_weight"

# name -> (change to the valid call, regex the ValueError must match)
INVALID_CALLS = {
    # q, k, v: dtype, rank, rows, heads, head dims
    "q_float16": (_set(q=_zeros(ROWS, HQ, D, dtype=torch.float16)),
                  Q_NAME + r".*(bfloat16|float16)"),
    "q_float32": (_set(q=_zeros(ROWS, HQ, D, dtype=F32)), Q_NAME + r".*(bfloat16|float32)"),
    "q_fp8": (_set(q=_zeros(ROWS, HQ, D, dtype=FP8)), Q_NAME + r".*(bfloat16|float8)"),
    "k_float32": (_set(k=_zeros(ROWS, HKV, D, dtype=F32)), K_NAME + r".*(bfloat16|float32)"),
    "v_float16": (_set(v=_zeros(ROWS, HKV, D, dtype=torch.float16)),
                  V_NAME + r".*(bfloat16|float16)"),
    "q_2d": (_set(q=_zeros(ROWS, HQ * D)), Q_NAME),
    "k_4d": (_set(k=_zeros(ROWS, HKV, 1, D)), K_NAME),
    "v_2d": (_set(v=_zeros(ROWS, HKV * D)), V_NAME),
    "k_rows_differ": (_set(k=_zeros(ROWS - 1, HKV, D)), K_NAME + r"|rows"),
    "v_rows_differ": (_set(v=_zeros(ROWS + 1, HKV, D)), V_NAME + r"|rows"),
    "k_v_heads_differ": (_set(v=_zeros(ROWS, HKV + 1, D)), r"\b[kv]\b|head"),
    "kv_heads_not_cache_heads": (_heads(kv_heads=4, cache_heads=HKV),
                                 r"\b[kv]\b|k_cache|head"),
    "cache_heads_not_kv_heads": (_heads(kv_heads=HKV, cache_heads=4),
                                 r"\b[kv]\b|k_cache|v_cache|head"),
    # (q's head dim is the default rotary_dim: rotary_dim and cos_sin_cache fit it)
    "q_head_dim_differs": (_then(_heads(q_d=64), _rotary(64)), Q_NAME + "|" + HEAD_DIM),
    "k_head_dim_differs": (_heads(k_d=256), K_NAME + "|" + HEAD_DIM),
    "v_head_dim_differs": (_heads(v_d=64), V_NAME + "|" + HEAD_DIM),
    "cache_head_dim_differs": (_heads(cache_d=256), r"k_cache|v_cache|" + HEAD_DIM),
    "head_dim_32": (_head_dim(32), Q_NAME + "|" + HEAD_DIM),
    "head_dim_96": (_head_dim(96), Q_NAME + "|" + HEAD_DIM),
    "head_dim_512": (_head_dim(512), Q_NAME + "|" + HEAD_DIM),
    "q_last_dim_strided": (_set(q=_strided_last(ROWS, HQ, D)), Q_NAME + r".*(stride|contiguous)"),
    "k_last_dim_strided": (_set(k=_strided_last(ROWS, HKV, D)), K_NAME + r".*(stride|contiguous)"),
    # the packed form (k = v = None) and split_qkv's shape rule
    "packed_width_wrong": (_packed(q=_zeros(ROWS, (HQ + 2 * HKV) * D + D // 2)), r"qkv"),
    "packed_3d": (_packed(q=_zeros(ROWS, HQ + 2 * HKV, D)), r"qkv"),
    "packed_no_q_heads": (_packed(q=_zeros(ROWS, 2 * HKV * D)), r"qkv"),
    "k_without_v": (_set(v=None), r"\bk\b|\bv\b|both"),
    "v_without_k": (_set(k=None), r"\bk\b|\bv\b|both"),
    "q_not_a_tensor": (_set(q=[[0.0]]), Q_NAME),
    # cos_sin_cache and the rotation
    "cos_sin_float16": (_set(cos_sin_cache=_ones(64, D, dtype=torch.float16)),
                        r"cos_sin_cache.*(float32|bfloat16|float16)"),
    "cos_sin_float64": (_set(cos_sin_cache=_ones(64, D, dtype=torch.float64)),
                        r"cos_sin_cache.*(float32|bfloat16|float64)"),
    "cos_sin_1d": (_set(cos_sin_cache=_ones(64 * D)), r"cos_sin_cache"),
    "cos_sin_3d": (_set(cos_sin_cache=_ones(64, 1, D)), r"cos_sin_cache"),
    "cos_sin_width_not_rotary_dim": (_set(cos_sin_cache=_ones(64, D // 2)),
                                     r"cos_sin_cache|rotary_dim"),
    "cos_sin_width_not_explicit_rotary_dim": (_set(rotary_dim=64), r"cos_sin_cache|rotary_dim"),
    "rotary_dim_negative": (_rotary(-16), r"rotary_dim"),
    "rotary_dim_above_head_dim": (_rotary(2 * D), r"rotary_dim"),
    "rotary_dim_odd": (_rotary(63, "interleaved"), r"rotary_dim"),
    "rotary_dim_neox_not_multiple_of_16": (_rotary(72), r"rotary_dim"),
    "rotary_dim_interleaved_not_multiple_of_8": (_rotary(60, "interleaved"), r"rotary_dim"),
    "rotary_dim_float": (_set(rotary_dim=64.0), r"rotary_dim"),
    "rotary_dim_bool": (_set(rotary_dim=True), r"rotary_dim"),
    "style_unknown": (_set(style="gptj"), r"style"),
    "style_none": (_set(style=None), r"style"),
    "norm_order_unknown": (_set(norm_order="pre", q_norm_weight=_ones(D, dtype=BF16),
                                k_norm_weight=_ones(D, dtype=BF16)), r"norm_order"),
    # QK norm weights
    "q_norm_weight_only": (_set(q_norm_weight=_ones(D, dtype=BF16)), WEIGHTS),
    "k_norm_weight_only": (_set(k_norm_weight=_ones(D)), WEIGHTS),
    "q_norm_weight_short": (_set(q_norm_weight=_ones(D // 2, dtype=BF16),
                                 k_norm_weight=_ones(D, dtype=BF16)), r"q_norm_weight"),
    "k_norm_weight_2d": (_set(q_norm_weight=_ones(D, dtype=BF16),
                              k_norm_weight=_ones(1, D, dtype=BF16)), r"k_norm_weight"),
    "q_norm_weight_float16": (_set(q_norm_weight=_ones(D, dtype=torch.float16),
                                   k_norm_weight=_ones(D, dtype=BF16)),
                              r"q_norm_weight.*(bfloat16|float32|float16)"),
    "k_norm_weight_float64": (_set(q_norm_weight=_ones(D),
                                   k_norm_weight=_ones(D, dtype=torch.float64)),
                              r"k_norm_weight.*(bfloat16|float32|float64)"),
    # the caches
    "k_cache_float16": (_set(k_cache=_kv(dtype=torch.float16), v_cache=_kv(dtype=torch.float16)),
                        r"k_cache.*(bfloat16|float16|float8)"),
    "v_cache_float32": (_set(v_cache=_kv(dtype=F32)),
                        r"v_cache.*(bfloat16|float32|float8)|k_cache"),
    "k_fp8_v_bf16": (_fp8(v_cache=_kv()), r"v_cache|k_cache"),
    "k_bf16_v_fp8": (_set(v_cache=_kv(dtype=FP8)), r"v_cache|k_cache"),
    "caches_pages_differ": (_set(v_cache=_kv(num_pages=NUM_PAGES + 1)), r"v_cache|k_cache"),
    "caches_page_sizes_differ": (_set(v_cache=_kv(page_size=2 * PAGE)), r"v_cache|k_cache"),
    "k_cache_3d": (_set(k_cache=_zeros(NUM_PAGES, PAGE, HKV * D)), r"k_cache"),
    "v_cache_5d": (_set(v_cache=_zeros(NUM_PAGES, 1, PAGE, HKV, D)), r"v_cache"),
    "k_cache_last_dim_strided": (_set(k_cache=_strided_last(NUM_PAGES, PAGE, HKV, D)),
                                 r"k_cache.*(stride|contiguous)"),
    # page table, lengths, positions
    "page_table_int64": (_set(page_table=lambda dev: torch.tensor([[0, 1], [2, 3]], device=dev)),
                         r"page_table.*int"),
    "page_table_1d": (_set(page_table=_int32([0, 1, 2, 3])), r"page_table"),
    "page_table_rows_not_batch": (_set(page_table=_int32([[0, 1], [2, 3], [0, 0]])),
                                  r"page_table|kv_lens|cu_seqlens|batch"),
    "kv_lens_int64": (_set(kv_lens=lambda dev: torch.tensor([20, 5], device=dev)),
                      r"kv_lens.*int"),
    "kv_lens_float32": (_set(kv_lens=lambda dev: torch.tensor([20.0, 5.0], device=dev)),
                        r"kv_lens.*(int32|float)"),
    "kv_lens_2d": (_set(kv_lens=_int32([[20, 5]])), r"kv_lens"),
    "cu_seqlens_int64": (_set(cu_seqlens=lambda dev: torch.tensor([0, 4, 5], device=dev)),
                         r"cu_seqlens.*int"),
    "cu_seqlens_not_batch_plus_1": (_set(cu_seqlens=_int32([0, 4])),
                                    r"cu_seqlens|kv_lens|page_table|batch"),
    "cu_seqlens_2d": (_set(cu_seqlens=_int32([[0, 4, 5]])), r"cu_seqlens"),
    "positions_float32": (_set(positions=_zeros(ROWS, dtype=F32)),
                          r"positions.*(int32|int64|float)"),
    "positions_int16": (_set(positions=_zeros(ROWS, dtype=torch.int16)),
                        r"positions.*(int32|int64|int16)"),
    "positions_wrong_rows": (_set(positions=_zeros(ROWS - 1, dtype=INT32)), r"positions"),
    "positions_2d": (_set(positions=_zeros(ROWS, 1, dtype=INT64)), r"positions"),
    "positions_not_a_tensor": (_set(positions=[0] * ROWS), r"positions"),
    # out_q and q_out_dtype
    "out_q_wrong_head_dim": (_set(out_q=lambda dev: _nan((ROWS, HQ, D // 2), BF16, dev)),
                             r"out_q"),
    "out_q_wrong_rows": (_set(out_q=lambda dev: _nan((ROWS - 1, HQ, D), BF16, dev)), r"out_q"),
    "out_q_wrong_heads": (_set(out_q=lambda dev: _nan((ROWS, HQ + 1, D), BF16, dev)), r"out_q"),
    "out_q_float32": (_set(out_q=lambda dev: _nan((ROWS, HQ, D), F32, dev)),
                      r"out_q.*(bfloat16|float8|float32)"),
    "out_q_last_dim_strided": (_set(out_q=lambda dev: _nan((ROWS, HQ, 2 * D), BF16, dev)[..., ::2]),
                               r"out_q.*(stride|contiguous)"),
    "q_out_dtype_float16": (_set(q_out_dtype=torch.float16), r"q_out_dtype"),
    "q_out_fp8_with_bf16_cache": (_set(q_out_dtype=FP8, q_scale=_ones(1)),
                                  r"out_q|q_out|k_cache|q_scale"),
    "out_q_fp8_with_bf16_cache": (_set(q_scale=_ones(1),
                                       out_q=lambda dev: _nan((ROWS, HQ, D), FP8, dev)),
                                  r"out_q|q_out|k_cache|q_scale"),
    # FP8: the scheme, which scales a call needs or must not have, their shapes and dtype
    "kv_scheme_unknown": (_fp8(kv_scheme="per_block"), r"scheme"),
    "k_scale_with_bf16_cache": (_set(k_scale=_ones(1)), r"k_scale"),
    "v_scale_with_bf16_cache": (_set(v_scale=_ones(1)), r"v_scale"),
    "k_scale_missing": (_fp8(k_scale=None), r"k_scale"),
    "v_scale_missing": (_fp8(v_scale=None), r"v_scale"),
    "k_scale_missing_qk": (_fp8(QK_TOKEN_HEAD, k_scale=None), r"k_scale"),
    "v_scale_missing_qk": (_fp8(QK_TOKEN_HEAD, v_scale=None), r"v_scale"),
    "k_scale_float16": (_fp8(k_scale=_ones(1, dtype=torch.float16)), r"k_scale"),
    "v_scale_bfloat16": (_fp8(Q_TOKEN_HEAD, v_scale=_ones(1, dtype=BF16)), r"v_scale"),
    "k_scale_per_token_float64": (_fp8(QK_TOKEN_HEAD, k_scale=_ones(NUM_PAGES, PAGE, HKV,
                                                                   dtype=torch.float64)),
                                  r"k_scale"),
    "k_scale_per_tensor_2_elements": (_fp8(k_scale=_ones(2)), r"k_scale"),
    "v_scale_per_tensor_2_elements": (_fp8(Q_TOKEN_HEAD, v_scale=_ones(HKV)), r"v_scale"),
    "k_scale_per_token_wrong_heads": (_fp8(QK_TOKEN_HEAD, k_scale=_ones(NUM_PAGES, PAGE, HKV + 1)),
                                      r"k_scale"),
    "k_scale_per_token_wrong_page_size": (_fp8(QK_TOKEN_HEAD, k_scale=_ones(NUM_PAGES, PAGE // 2,
                                                                           HKV)), r"k_scale"),
    "k_scale_per_token_one_element": (_fp8(QK_TOKEN_HEAD, k_scale=_ones(1)), r"k_scale"),
    "v_scale_per_head_wrong_heads": (_fp8(QK_TOKEN_HEAD, v_scale=_ones(HKV + 1)), r"v_scale"),
    "v_scale_per_head_one_element": (_fp8(QK_TOKEN_HEAD, v_scale=_ones(1)), r"v_scale"),
    "q_scale_with_bf16_q_out": (_fp8(q_scale=_ones(1)), r"q_scale"),
    "q_scale_with_bf16_q_out_qk": (_fp8(QK_TOKEN_HEAD, q_scale=_ones(ROWS, HQ)), r"q_scale"),
    "q_scale_missing_per_tensor": (_fp8(q_fp8=True, q_scale=None), r"q_scale"),
    "q_scale_per_tensor_2_elements": (_fp8(q_fp8=True, q_scale=_ones(2)), r"q_scale"),
    "q_scale_float64": (_fp8(q_fp8=True, q_scale=_ones(1, dtype=torch.float64)), r"q_scale"),
    "q_scale_dynamic_transposed": (_fp8(Q_TOKEN_HEAD, q_fp8=True, q_scale=_ones(HQ, ROWS)),
                                   r"q_scale"),
    "q_scale_dynamic_1d": (_fp8(QK_TOKEN_HEAD, q_fp8=True, q_scale=_ones(ROWS)), r"q_scale"),
    "q_scale_dynamic_wrong_rows": (_fp8(QK_TOKEN_HEAD, q_fp8=True, q_scale=_ones(ROWS - 1, HQ)),
                                   r"q_scale"),
    "q_scale_dynamic_bfloat16": (_fp8(Q_TOKEN_HEAD, q_fp8=True,
                                      q_scale=_ones(ROWS, HQ, dtype=BF16)),
                                 r"q_scale"),
}

# Tensors on the host while the others are on the GPU (only meaningful on a GPU).
DEVICE_NAMES = POSITIONAL + ("positions", "q_norm_weight", "k_norm_weight", "out_q")
# (Both weights of one dtype: whether they may differ is not specified.)
_WITH_OPTIONALS = _set(positions=_zeros(ROWS, dtype=INT32), q_norm_weight=_ones(D),
                       k_norm_weight=_ones(D))
INVALID_CALLS_GPU_ONLY = {
    f"{name}_on_cpu": (_then(_WITH_OPTIONALS, _on_cpu(name)), rf"{name}.*(CUDA|cuda|device|cpu)")
    for name in DEVICE_NAMES
}
# The scales of an FP8 call (fp8 q_out, per-token scales) on the host.
INVALID_CALLS_GPU_ONLY.update({
    f"{name}_on_cpu": (_then(_fp8(QK_TOKEN_HEAD, q_fp8=True), _on_cpu(name)),
                       rf"{name}.*(CUDA|cuda|device|cpu)")
    for name in ("q_scale", "k_scale", "v_scale")
})
INVALID_CALLS_GPU_ONLY["qkv_on_cpu"] = (_then(_packed(), _on_cpu("q")),
                                        r"(qkv|\bq\b).*(CUDA|cuda|device|cpu)")


def invalid_call_names(device: str) -> list:
    names = list(INVALID_CALLS)
    return names + list(INVALID_CALLS_GPU_ONLY) if device == "cuda" else names


def build_invalid_call(name: str, device: str):
    """(args, kwargs, match, buffers): the call's positional and keyword
    arguments, the regex its ValueError must match, and the outputs handed to
    it (NaN-filled out_q and dynamic q_scale, zero caches, a per-token
    k_scale), which must stay untouched."""
    change, match = {**INVALID_CALLS, **INVALID_CALLS_GPU_ONLY}[name]
    args = _valid_call(device)
    args["out_q"] = _nan((ROWS, HQ, D), BF16, device)
    change(args, device)
    if "out_q" not in change.sets:
        # out_q fits q (the packed form: its q part) so that only the change is wrong.
        q = args["q"]
        shape = tuple(q.shape) if torch.is_tensor(q) and q.dim() == 3 else (ROWS, HQ, D)
        dtype = args.get("q_out_dtype", BF16)
        args["out_q"] = _nan(shape, dtype if dtype in (BF16, FP8) else BF16, device)
    positional = tuple(args.pop(n) for n in POSITIONAL)
    buffers = [args["out_q"], positional[4], positional[5]]
    q_scale, k_scale = args.get("q_scale"), args.get("k_scale")
    if (args.get("kv_scheme") in (Q_TOKEN_HEAD, QK_TOKEN_HEAD) and torch.is_tensor(q_scale)
            and q_scale.dtype == F32 and q_scale.dim() == 2):
        q_scale.fill_(float("nan"))  # a dynamic q_scale is an output
        buffers.append(q_scale)
    if args.get("kv_scheme") == QK_TOKEN_HEAD and torch.is_tensor(k_scale):
        buffers.append(k_scale)       # a per-token k_scale is an output
    return positional, args, match, [b for b in buffers if torch.is_tensor(b)]
