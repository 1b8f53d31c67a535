"""Plain-torch reference and input builders for hpc_ops.decode_attention.

Reference
    decode_attention_ref computes paged decode attention request by request
    with a plain loop: gather the request's kv_len tokens from its pages, repeat
    each kv head for its `group` query heads (query head h reads kv head
    h // group), then masked softmax and the weighted sum of V in float64. It
    returns float32 out [B*q_len, Hq, D] and lse [B*q_len, Hq]. Rows without a
    visible token (kv_len == 0) give zeros and lse = -inf.

Masking (per request b with L = kv_lens[b]): query i of the request sits at
position p = L - q_len + i and sees tokens t with t <= p, and with a sliding
window W also t > p - W (W tokens, itself included).

Paged caches
    make_paged_kv builds k_cache / v_cache [num_pages, page_size, Hkv, D] in
    the NHD, HND or interleaved layout and a page_table whose requests own a
    random permutation of the physical pages. Everything a kernel must not read
    is garbage: the slots past kv_len in a request's last page and the pages
    nobody owns hold NaN (or large values), and the page-table entries past a
    request's pages hold -1 or random, valid-looking page ids. A kernel that
    lets any of it into a result gives NaN (or a huge error) there.

FP8 caches
    quantize_paged_kv turns such a (bf16) paged cache into float8_e4m3fn codes
    of the same layout plus the scales of an FP8 scheme (float32 dequantization
    multipliers, real = fp8 * scale, amax / 448 over the tokens the scale
    covers):
      per_tensor, q_token_head__kv_tensor   k_scale, v_scale one element each;
      qk_token_head__v_head                 k_scale [num_pages, page_size, Hkv]
                                            (one per token and kv head), v_scale
                                            [Hkv].
    The garbage stays garbage: NaN slots become fp8 NaN, and a per-token
    k_scale is NaN in every slot without a token, so a kernel that reads the
    scale (or the code) of a slot it must skip gives NaN. quantize_q makes an
    fp8 q with one scale or one per (row, head). make_fp8_paged_kv builds a
    cache with token and head magnitudes spread over a few octaves (so that a
    scale applied to the wrong token or head shows) and quantizes it.
    dequantized() gives the float32 values the kernel must attend over, to be
    handed to decode_attention_ref unchanged.

Invalid calls
    INVALID_CALLS lists argument errors shared by the CPU and GPU tests; each
    builds the call's arguments on a given device (BF16 cache, or an FP8 one
    with the scales of a scheme).
"""
from __future__ import annotations

import math

import torch

from reference import FP8, FP8_MAX, to_fp8_saturating

BF16 = torch.bfloat16
F32 = torch.float32
INT32 = torch.int32

LAYOUTS = ("NHD", "HND", "interleaved")
# hpc_ops.Fp8Scheme values.
PER_TENSOR = "per_tensor"
Q_TOKEN_HEAD = "q_token_head__kv_tensor"
QK_TOKEN_HEAD = "qk_token_head__v_head"
FP8_SCHEMES = (PER_TENSOR, Q_TOKEN_HEAD, QK_TOKEN_HEAD)
PAGE_SIZES = (1, 16, 32, 64, 128)
HEAD_DIM = 128

# Values written where a kernel must not read: (for K, for V).
GARBAGE = {"nan": (float("nan"), float("nan")), "large": (1e4, -1e4)}


def _as_list(kv_lens) -> list[int]:
    if torch.is_tensor(kv_lens):
        return [int(x) for x in kv_lens.tolist()]
    return [int(x) for x in kv_lens]


def pages_needed(kv_len: int, page_size: int) -> int:
    return (kv_len + page_size - 1) // page_size


# ----------------------------------------------------------------------------
# Reference
# ----------------------------------------------------------------------------
def visible_mask(kv_len: int, q_len: int, sliding_window=None, device="cuda") -> torch.Tensor:
    """bool [q_len, kv_len]: which tokens each of the request's queries sees."""
    pos = kv_len - q_len + torch.arange(q_len, device=device)
    t = torch.arange(kv_len, device=device)
    visible = t[None, :] <= pos[:, None]
    if sliding_window is not None:
        visible &= t[None, :] > pos[:, None] - sliding_window
    return visible


def gather_tokens(cache: torch.Tensor, page_table: torch.Tensor, b: int, kv_len: int):
    """The first kv_len tokens of request b: [kv_len, Hkv, D] (same dtype as cache)."""
    page_size = cache.shape[1]
    n = pages_needed(kv_len, page_size)
    pages = page_table[b, :n].long()
    tokens = cache[pages].reshape(n * page_size, *cache.shape[2:])
    return tokens[:kv_len]


def decode_attention_ref(q, k_cache, v_cache, page_table, kv_lens, q_len, softmax_scale=None,
                         sliding_window=None, soft_cap=None):
    """(out, lse), both float32: out [B*q_len, Hq, D], lse [B*q_len, Hq] (natural log)."""
    rows, hq, d = q.shape
    hkv = k_cache.shape[2]
    group = hq // hkv
    lens = _as_list(kv_lens)
    assert rows == len(lens) * q_len and hq == group * hkv
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else float(softmax_scale)
    out = torch.zeros(rows, hq, d, dtype=torch.float32, device=q.device)
    lse = torch.full((rows, hq), float("-inf"), dtype=torch.float32, device=q.device)
    for b, kv_len in enumerate(lens):
        if kv_len == 0:
            continue
        # GQA: kv head j serves query heads j*group .. j*group + group - 1.
        k = gather_tokens(k_cache, page_table, b, kv_len).double().repeat_interleave(group, dim=1)
        v = gather_tokens(v_cache, page_table, b, kv_len).double().repeat_interleave(group, dim=1)
        qb = q[b * q_len:(b + 1) * q_len].double()                      # [q_len, Hq, D]
        s = torch.einsum("ihd,thd->hit", qb, k) * scale                  # [Hq, q_len, L]
        if soft_cap is not None:
            s = soft_cap * torch.tanh(s / soft_cap)
        visible = visible_mask(kv_len, q_len, sliding_window, q.device)  # [q_len, L]
        s = s.masked_fill(~visible, float("-inf"))
        m = torch.logsumexp(s, dim=-1)                                   # [Hq, q_len]
        seen = torch.isfinite(m)
        p = torch.where(visible & seen[..., None], torch.exp(s - m[..., None]), 0.0)
        o = torch.einsum("hit,thd->ihd", p, v)                           # [q_len, Hq, D]
        out[b * q_len:(b + 1) * q_len] = o.float()
        lse[b * q_len:(b + 1) * q_len] = m.transpose(0, 1).float()
    return out, lse


# ----------------------------------------------------------------------------
# Random inputs
# ----------------------------------------------------------------------------
def make_q(gen, rows: int, num_heads: int, head_dim: int = HEAD_DIM, *, strided: bool = False):
    """bf16 [rows, Hq, D] queries, N(0, 1) times a per-head temperature in
    [0.5, 3]: flat softmaxes over many tokens in some heads, a few dominant
    tokens in others (so a wrong token or page shows up in out, not only in lse).
    strided: q is the first Hq heads of a wider [rows, Hq + 2, D] buffer (as
    sliced from a fused QKV projection); the two heads past it hold NaN."""
    temp = torch.exp2(torch.empty(num_heads, device="cuda").uniform_(-1.0, 1.6, generator=gen))
    vals = torch.randn(rows, num_heads, head_dim, generator=gen, device="cuda") * temp[:, None]
    if not strided:
        return vals.to(BF16)
    buf = torch.full((rows, (num_heads + 2) * head_dim), float("nan"), dtype=BF16, device="cuda")
    q = buf[:, :num_heads * head_dim].unflatten(1, (num_heads, head_dim))
    q.copy_(vals)
    return q


def draw_kv_lens(gen, batch: int, max_len: int, page_size: int, min_len: int = 1) -> list[int]:
    """kv_lens in min_len..max_len: uniform, with about a quarter rounded down to
    an exact page multiple and a quarter to one past a page boundary."""
    raw = torch.randint(min_len, max_len + 1, (batch,), generator=gen, device="cuda").tolist()
    kind = torch.randint(0, 4, (batch,), generator=gen, device="cuda").tolist()
    lens = []
    for n, k in zip(raw, kind):
        if k == 1:
            n = n // page_size * page_size
        elif k == 2:
            n = n // page_size * page_size + 1
        lens.append(min(max(n, min_len), max_len))
    return lens


def make_page_table(gen, kv_lens, page_size: int, *, extra_pages: int = 3, shuffle: bool = True,
                    table_pad: int = 0, spare_cols: int = 1, unused: str = "mixed"):
    """(page_table int32 [B, max_pages], num_pages).

    Request b owns pages_needed(kv_lens[b]) physical pages, taken in order from a
    random permutation of all num_pages pages (extra_pages of them owned by
    nobody). max_pages leaves spare_cols entries past the longest request.
    Entries past a request's pages hold garbage: -1 ("-1"), random page ids
    ("valid"), or either at random ("mixed"). table_pad > 0: the table is the
    first max_pages columns of a wider tensor, so its row stride exceeds
    max_pages; the extra columns hold garbage too."""
    lens = _as_list(kv_lens)
    needed = [pages_needed(n, page_size) for n in lens]
    num_pages = sum(needed) + extra_pages
    max_pages = max(max(needed, default=0) + spare_cols, 1)
    width = max_pages + table_pad
    perm = (torch.randperm(num_pages, generator=gen, device="cuda") if shuffle
            else torch.arange(num_pages, device="cuda"))
    table = torch.randint(0, max(num_pages, 1), (len(lens), width), generator=gen, device="cuda")
    if unused != "valid":
        minus_one = torch.randint(0, 2, table.shape, generator=gen, device="cuda").bool()
        if unused == "-1":
            minus_one[:] = True
        table[minus_one] = -1
    start = 0
    for b, n in enumerate(needed):
        table[b, :n] = perm[start:start + n]
        start += n
    return table.to(INT32)[:, :max_pages], num_pages


def alloc_kv(num_pages: int, page_size: int, num_kv_heads: int, head_dim: int, layout: str,
             dtype=BF16):
    """Uninitialized k_cache, v_cache [num_pages, page_size, Hkv, D] in the layout:
    NHD          each contiguous;
    HND          each x.transpose(1, 2).contiguous().transpose(1, 2) (heads outside slots);
    interleaved  kv[:, 0] and kv[:, 1] of one [num_pages, 2, page_size, Hkv, D] allocation."""
    shape = (num_pages, page_size, num_kv_heads, head_dim)
    if layout == "NHD":
        return (torch.empty(shape, dtype=dtype, device="cuda"),
                torch.empty(shape, dtype=dtype, device="cuda"))
    if layout == "HND":
        hnd = (num_pages, num_kv_heads, page_size, head_dim)
        return (torch.empty(hnd, dtype=dtype, device="cuda").transpose(1, 2),
                torch.empty(hnd, dtype=dtype, device="cuda").transpose(1, 2))
    if layout == "interleaved":
        kv = torch.empty(num_pages, 2, page_size, num_kv_heads, head_dim, dtype=dtype,
                         device="cuda")
        return kv[:, 0], kv[:, 1]
    raise ValueError(layout)


def token_slots(page_table, kv_lens, num_pages: int, page_size: int) -> torch.Tensor:
    """bool [num_pages, page_size]: the slots that hold a token below some kv_len."""
    valid = torch.zeros(num_pages, page_size, dtype=torch.bool, device=page_table.device)
    for b, n in enumerate(_as_list(kv_lens)):
        if n:
            t = torch.arange(n, device=page_table.device)
            pages = page_table[b, t // page_size].long()
            assert not bool(valid[pages, t % page_size].any()), "two tokens share a slot"
            valid[pages, t % page_size] = True
    return valid


def fill_paged_kv_(gen, k_cache, v_cache, page_table, kv_lens, *, garbage: str = "nan") -> None:
    """Writes fresh random tokens into the slots below each kv_len (K ~ N(0, 1);
    V ~ N(0, 1) plus an offset per (kv head, dim), so that flat softmaxes average
    to something nonzero) and garbage into every other slot, in place."""
    num_pages, page_size, hkv, d = k_cache.shape
    k_cache.copy_(torch.randn(k_cache.shape, generator=gen, device="cuda"))
    offset = torch.randn(hkv, d, generator=gen, device="cuda")
    v_cache.copy_(torch.randn(v_cache.shape, generator=gen, device="cuda") + offset)
    unused = ~token_slots(page_table, kv_lens, num_pages, page_size)
    k_bad, v_bad = GARBAGE[garbage]
    k_cache[unused] = k_bad
    v_cache[unused] = v_bad


def make_paged_kv(gen, batch: int, kv_lens, page_size: int, num_kv_heads: int,
                  head_dim: int = HEAD_DIM, layout: str = "NHD", shuffle: bool = True,
                  extra_pages: int = 3, *, garbage: str = "nan", table_pad: int = 0,
                  spare_cols: int = 1, unused: str = "mixed"):
    """(k_cache, v_cache, page_table) for the requests' kv_lens (a list of batch
    ints); see make_page_table, alloc_kv and fill_paged_kv_."""
    assert len(_as_list(kv_lens)) == batch
    page_table, num_pages = make_page_table(gen, kv_lens, page_size, extra_pages=extra_pages,
                                            shuffle=shuffle, table_pad=table_pad,
                                            spare_cols=spare_cols, unused=unused)
    k_cache, v_cache = alloc_kv(num_pages, page_size, num_kv_heads, head_dim, layout)
    fill_paged_kv_(gen, k_cache, v_cache, page_table, kv_lens, garbage=garbage)
    return k_cache, v_cache, page_table


# ----------------------------------------------------------------------------
# FP8 inputs
# ----------------------------------------------------------------------------
def _amax_scale(amax: torch.Tensor) -> torch.Tensor:
    """amax / 448 as float32 (an amax of 0 gives 1 / 448, never a zero scale);
    NaN stays NaN."""
    amax = amax.double()
    return (torch.where(amax == 0, 1.0, amax) / FP8_MAX).float()


def _amax(x: torch.Tensor) -> torch.Tensor:
    """|x| max over everything (0 for an empty x), a 0-d float32 tensor."""
    if x.numel() == 0:
        return torch.zeros((), dtype=F32, device=x.device)
    return x.float().abs().amax()


def _factor(scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A scale as a factor of x [..., D]: one element -> a 0-d tensor, otherwise
    [*scale.shape, 1] (q_scale [rows, Hq], k_scale [pages, slots, Hkv] and
    v_scale [Hkv] all line up with x's dims before D). Any strides."""
    if scale.numel() == 1:
        return scale.reshape(())
    assert scale.shape == x.shape[x.dim() - 1 - scale.dim():-1], \
        f"scale {tuple(scale.shape)} does not fit {tuple(x.shape)}"
    return scale[..., None]


def quantize_fp8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """float8_e4m3fn codes of x / scale (contiguous, shaped like x): rounded to
    nearest even, saturating at +-448; NaN in x or the scale gives NaN."""
    return to_fp8_saturating(x.double() / _factor(scale, x).double())


def dequantize_fp8(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """codes * scale (broadcast as in quantize_fp8), float32."""
    return codes.float() * _factor(scale, codes).float()


def _restrided(scale: torch.Tensor, one_element: bool) -> torch.Tensor:
    """The same scale values in another layout: a one-element scale as shape []
    (instead of [1]); a scale of 2+ dims as the transpose of a contiguous
    tensor (k_scale [pages, slots, Hkv] with slots innermost, q_scale [rows, Hq]
    column-major); v_scale [Hkv] as is."""
    if one_element:
        return scale.reshape(()).clone()
    if scale.dim() >= 2:
        return scale.transpose(-1, -2).contiguous().transpose(-1, -2)
    return scale


def kv_scales(k_cache, v_cache, page_table, kv_lens, scheme: str):
    """(k_scale, v_scale), float32, for the tokens below each kv_len under the
    scheme (amax / 448 of what each scale covers):
    per_tensor, q_token_head__kv_tensor  [1] and [1], over all tokens;
    qk_token_head__v_head                k_scale [num_pages, page_size, Hkv], over
                                         D per (slot, kv head), NaN in every slot
                                         without a token; v_scale [Hkv], over all
                                         tokens and D of each kv head."""
    num_pages, page_size, hkv, _ = k_cache.shape
    slots = token_slots(page_table, kv_lens, num_pages, page_size)   # [num_pages, page_size]
    k_tokens, v_tokens = k_cache[slots], v_cache[slots]               # [T, Hkv, D]
    if scheme in (PER_TENSOR, Q_TOKEN_HEAD):
        return _amax_scale(_amax(k_tokens)).reshape(1), _amax_scale(_amax(v_tokens)).reshape(1)
    if scheme == QK_TOKEN_HEAD:
        k_scale = _amax_scale(k_cache.float().abs().amax(dim=-1))    # [num_pages, page_size, Hkv]
        k_scale[~slots] = float("nan")
        if v_tokens.shape[0]:
            v_amax = v_tokens.float().abs().amax(dim=2).amax(dim=0)  # [Hkv]
        else:
            v_amax = torch.zeros(hkv, dtype=F32, device=v_cache.device)
        return k_scale, _amax_scale(v_amax)
    raise ValueError(scheme)


def quantize_paged_kv(k_cache, v_cache, page_table, kv_lens, scheme: str, layout: str = "NHD",
                      *, strided_scales: bool = False):
    """(k_fp8, v_fp8, k_scale, v_scale): a paged cache (bf16 or float, e.g. from
    make_paged_kv) as float8_e4m3fn codes in a new allocation of the given
    layout, with the scheme's scales (kv_scales). Garbage stays garbage: NaN
    becomes fp8 NaN, and so does every slot of a NaN per-token scale.
    strided_scales: one-element scales as shape [], per-token k scales with
    the slots innermost (see _restrided)."""
    k_scale, v_scale = kv_scales(k_cache, v_cache, page_table, kv_lens, scheme)
    num_pages, page_size, hkv, d = k_cache.shape
    k8, v8 = alloc_kv(num_pages, page_size, hkv, d, layout, dtype=FP8)
    k8.copy_(quantize_fp8(k_cache, k_scale))
    v8.copy_(quantize_fp8(v_cache, v_scale))
    if strided_scales:
        one = scheme != QK_TOKEN_HEAD
        k_scale, v_scale = _restrided(k_scale, one), _restrided(v_scale, one)
    return k8, v8, k_scale, v_scale


def spread_kv_magnitudes_(gen, k_cache, v_cache, spread: float = 1.0) -> None:
    """Multiplies K by 2**(spread * N(0, 1)) per (page, slot, kv head) and V by
    2**(spread * N(0, 1)) per kv head, in place, so that per-token and per-head
    scales differ (garbage stays NaN or large)."""
    num_pages, page_size, hkv, _ = k_cache.shape
    k_f = torch.exp2(spread * torch.randn(num_pages, page_size, hkv, 1, generator=gen,
                                          device="cuda"))
    v_f = torch.exp2(spread * torch.randn(hkv, 1, generator=gen, device="cuda"))
    k_cache.copy_(k_cache.float() * k_f)
    v_cache.copy_(v_cache.float() * v_f)


def fill_fp8_paged_kv_(gen, k_cache, v_cache, k_scale, v_scale, page_table, kv_lens,
                       scheme: str, *, garbage: str = "nan", spread: float = 1.0) -> None:
    """fill_paged_kv_ for an FP8 cache: fresh random tokens (magnitudes spread,
    see spread_kv_magnitudes_), quantized under the scheme, written into the
    given fp8 caches and float32 scales in place (any layouts)."""
    k = torch.empty(k_cache.shape, dtype=BF16, device=k_cache.device)
    v = torch.empty(v_cache.shape, dtype=BF16, device=v_cache.device)
    fill_paged_kv_(gen, k, v, page_table, kv_lens, garbage=garbage)
    spread_kv_magnitudes_(gen, k, v, spread)
    ks, vs = kv_scales(k, v, page_table, kv_lens, scheme)
    k_cache.copy_(quantize_fp8(k, ks))
    v_cache.copy_(quantize_fp8(v, vs))
    k_scale.copy_(ks.reshape(k_scale.shape))
    v_scale.copy_(vs.reshape(v_scale.shape))


def make_fp8_paged_kv(gen, batch: int, kv_lens, page_size: int, num_kv_heads: int,
                      head_dim: int = HEAD_DIM, layout: str = "NHD", scheme: str = PER_TENSOR,
                      *, strided_scales: bool = False, spread: float = 1.0, **kw):
    """(k_cache, v_cache, page_table, k_scale, v_scale): make_paged_kv's cache
    and page table (**kw go to it), magnitudes spread (spread_kv_magnitudes_),
    quantized with quantize_paged_kv into float8_e4m3fn caches of the layout."""
    k, v, page_table = make_paged_kv(gen, batch, kv_lens, page_size, num_kv_heads, head_dim,
                                     layout="NHD", **kw)
    spread_kv_magnitudes_(gen, k, v, spread)
    k8, v8, k_scale, v_scale = quantize_paged_kv(k, v, page_table, kv_lens, scheme, layout,
                                                 strided_scales=strided_scales)
    return k8, v8, page_table, k_scale, v_scale


def quantize_q(q: torch.Tensor, per_token_head: bool = False, *, strided_scale: bool = False):
    """(q_fp8, q_scale) of a bf16 q [rows, Hq, D]: q_scale [1] (amax over q /
    448) or, per_token_head, [rows, Hq] (amax over D / 448). A strided q (the
    first Hq heads of a wider buffer, make_q(strided=True)) gives an fp8 q
    strided the same way, NaN in the heads past it. strided_scale: [] instead
    of [1], a column-major [rows, Hq]."""
    rows, hq, d = q.shape
    if per_token_head:
        scale = _amax_scale(q.float().abs().amax(dim=-1))
    else:
        scale = _amax_scale(_amax(q)).reshape(1)
    codes = quantize_fp8(q, scale)
    if q.is_contiguous():
        q8 = codes
    else:
        assert q.stride(1) == d and q.stride(0) % d == 0, "q: heads of a wider row expected"
        buf = torch.full((rows, q.stride(0) // d, d), float("nan"), device=q.device).to(FP8)
        q8 = buf[:, :hq]
        q8.copy_(codes)
    if strided_scale:
        scale = _restrided(scale, not per_token_head)
    return q8, scale


def dequantized(q, k_cache, v_cache, q_scale=None, k_scale=None, v_scale=None):
    """(q, k_cache, v_cache) as the real values attention runs over, float32:
    fp8 codes times their scales (any scheme, any strides; NaN garbage stays
    NaN), bf16 tensors as they are. Hand them to decode_attention_ref."""
    def real(x, scale):
        if x.dtype != FP8:
            return x.float()
        assert scale is not None, "an fp8 tensor needs its scale"
        return dequantize_fp8(x, scale)
    return real(q, q_scale), real(k_cache, k_scale), real(v_cache, v_scale)


# ----------------------------------------------------------------------------
# Invalid calls
# ----------------------------------------------------------------------------
# A valid small call: B = 2, q_len = 1, Hq = 8, Hkv = 2, D = 128, page_size 16,
# 4 pages, 2 table columns, kv_lens 5, BF16 cache (_fp8: an FP8 one). Each case
# changes one thing; values are zeros and ones (a call is rejected before
# anything runs). `match` names the argument.
def _valid_call(device):
    z = dict(device=device)
    return {
        "q": torch.zeros(2, 8, 128, dtype=BF16, **z),
        "k_cache": torch.zeros(4, 16, 2, 128, dtype=BF16, **z),
        "v_cache": torch.zeros(4, 16, 2, 128, dtype=BF16, **z),
        "page_table": torch.tensor([[0, 1], [2, 3]], dtype=INT32, **z),
        "kv_lens": torch.full((2,), 5, dtype=INT32, **z),
    }


def _kv(device, num_pages=4, page_size=16, hkv=2, d=128, dtype=BF16):
    return torch.zeros(num_pages, page_size, hkv, d, dtype=dtype, device=device)


def _set(**changes):
    """A case that replaces arguments; a callable value is called with the device."""
    def apply(args, device):
        for name, value in changes.items():
            args[name] = value(device) if callable(value) else value
    return apply


def _heads(hq, hkv, d=128, rows=2):
    return _set(q=lambda dev: torch.zeros(rows, hq, d, dtype=BF16, device=dev),
                k_cache=lambda dev: _kv(dev, hkv=hkv, d=d),
                v_cache=lambda dev: _kv(dev, hkv=hkv, d=d))


def _page_size(ps):
    return _set(k_cache=lambda dev: _kv(dev, page_size=ps),
                v_cache=lambda dev: _kv(dev, page_size=ps))


def _strided_last(shape, dtype=BF16):
    return lambda dev: torch.zeros(*shape[:-1], 2 * shape[-1], dtype=dtype, device=dev)[..., ::2]


def _on_cpu(name):
    def apply(args, device):
        args[name] = args[name].cpu()
    return apply


def _nan(shape, dtype, device):
    return torch.full(shape, float("nan"), dtype=dtype, device=device)


def _ones(*shape, dtype=F32):
    return lambda dev: torch.ones(shape, dtype=dtype, device=dev)


def _fp8(scheme=PER_TENSOR, q_fp8=False, **changes):
    """A case on a valid FP8 call: float8_e4m3fn caches with the scheme and its
    scales (k_scale [1] or [4, 16, 2], v_scale [1] or [2]), with q_fp8 an fp8 q
    and its q_scale ([1] or [2, 8]); then `changes` replace arguments as in _set."""
    def apply(args, device):
        per_token_kv = scheme == QK_TOKEN_HEAD
        args.update(k_cache=_kv(device, dtype=FP8), v_cache=_kv(device, dtype=FP8), scheme=scheme,
                    k_scale=(_ones(4, 16, 2) if per_token_kv else _ones(1))(device),
                    v_scale=(_ones(2) if per_token_kv else _ones(1))(device))
        if q_fp8:
            args["q"] = torch.zeros(2, 8, 128, dtype=FP8, device=device)
            args["q_scale"] = (_ones(1) if scheme == PER_TENSOR else _ones(2, 8))(device)
        _set(**changes)(args, device)
    return apply


def _then(*steps):
    def apply(args, device):
        for step in steps:
            step(args, device)
    return apply


HEAD_DIM_MATCH = r"head.?dim|q\.shape\[2\]|k_cache\.shape\[3\]"

# name -> (change to the valid call, regex the ValueError must match)
INVALID_CALLS = {
    "q_float16": (_set(q=lambda dev: torch.zeros(2, 8, 128, dtype=torch.float16, device=dev)),
                  r"\bq\b.*(bfloat16|float16)"),
    "q_float32": (_set(q=lambda dev: torch.zeros(2, 8, 128, device=dev)),
                  r"\bq\b.*(bfloat16|float32)"),
    "k_cache_float16": (_set(k_cache=lambda dev: _kv(dev, dtype=torch.float16)),
                        r"k_cache.*(bfloat16|float16)"),
    "v_cache_float32": (_set(v_cache=lambda dev: _kv(dev, dtype=torch.float32)),
                        r"v_cache.*(bfloat16|float32)"),
    "page_table_int64": (_set(page_table=lambda dev: torch.tensor([[0, 1], [2, 3]], device=dev)),
                         r"page_table.*int"),
    "kv_lens_float32": (_set(kv_lens=lambda dev: torch.full((2,), 5.0, device=dev)),
                        r"kv_lens.*(int32|float)"),
    "kv_lens_int64": (_set(kv_lens=lambda dev: torch.full((2,), 5, device=dev)),
                      r"kv_lens.*int"),
    "heads_not_divisible": (_heads(6, 4), r"head|group|Hq|Hkv"),
    "group_17": (_heads(17, 1), r"group|head|Hq|Hkv"),
    "group_32": (_heads(64, 2), r"group|head|Hq|Hkv"),
    "head_dim_64": (_heads(8, 2, d=64), HEAD_DIM_MATCH),
    "head_dim_256": (_heads(8, 2, d=256), HEAD_DIM_MATCH),
    "v_cache_head_dim_differs": (_set(v_cache=lambda dev: _kv(dev, d=64)), r"v_cache|k_cache"),
    "k_v_pages_differ": (_set(v_cache=lambda dev: _kv(dev, num_pages=5)), r"v_cache|k_cache"),
    "k_v_heads_differ": (_set(v_cache=lambda dev: _kv(dev, hkv=4)), r"v_cache|k_cache"),
    "page_size_8": (_page_size(8), r"page_size|k_cache"),
    "page_size_48": (_page_size(48), r"page_size|k_cache"),
    "page_size_256": (_page_size(256), r"page_size|k_cache"),
    "q_rows_not_multiple_of_q_len": (_set(q_len=2, q=lambda dev: torch.zeros(
        3, 8, 128, dtype=BF16, device=dev)), r"q_len|q\.shape\[0\]|rows"),
    "q_rows_not_batch_times_q_len": (_set(q=lambda dev: torch.zeros(
        3, 8, 128, dtype=BF16, device=dev)), r"q\.shape\[0\]|rows|batch|kv_lens|page_table"),
    "page_table_rows_not_batch": (_set(page_table=lambda dev: torch.zeros(
        3, 2, dtype=INT32, device=dev)), r"page_table|kv_lens|batch"),
    "kv_lens_2d": (_set(kv_lens=lambda dev: torch.full((2, 1), 5, dtype=INT32, device=dev)),
                   r"kv_lens"),
    "page_table_1d": (_set(page_table=lambda dev: torch.zeros(4, dtype=INT32, device=dev)),
                      r"page_table"),
    "q_2d": (_set(q=lambda dev: torch.zeros(2, 8 * 128, dtype=BF16, device=dev)), r"\bq\b"),
    "k_cache_3d": (_set(k_cache=lambda dev: torch.zeros(4, 16, 256, dtype=BF16, device=dev)),
                   r"k_cache"),
    "q_last_dim_strided": (_set(q=_strided_last((2, 8, 128))), r"\bq\b.*(stride|contiguous)"),
    "k_cache_last_dim_strided": (_set(k_cache=_strided_last((4, 16, 2, 128))),
                                 r"k_cache.*(stride|contiguous)"),
    "v_cache_last_dim_strided": (_set(v_cache=_strided_last((4, 16, 2, 128))),
                                 r"v_cache.*(stride|contiguous)"),
    "page_table_last_dim_strided": (_set(page_table=_strided_last((2, 2), INT32)),
                                    r"page_table.*(stride|contiguous)"),
    "q_len_0": (_set(q_len=0), r"q_len"),
    "q_len_9": (_set(q_len=9, q=lambda dev: torch.zeros(18, 8, 128, dtype=BF16, device=dev)),
                r"q_len"),
    "sliding_window_0": (_set(sliding_window=0), r"sliding_window"),
    "sliding_window_negative": (_set(sliding_window=-5), r"sliding_window"),
    "soft_cap_0": (_set(soft_cap=0.0), r"soft_cap"),
    "soft_cap_negative": (_set(soft_cap=-30.0), r"soft_cap"),
    "out_wrong_shape": (_set(out=lambda dev: _nan((2, 8, 64), BF16, dev)), r"\bout\b"),
    "out_wrong_rows": (_set(out=lambda dev: _nan((3, 8, 128), BF16, dev)), r"\bout\b"),
    "out_float32": (_set(out=lambda dev: _nan((2, 8, 128), torch.float32, dev)),
                    r"\bout\b.*(bfloat16|float32)"),
    "lse_out_wrong_shape": (_set(return_lse=True,
                                 lse_out=lambda dev: _nan((2, 4), torch.float32, dev)), r"lse"),
    "lse_out_bfloat16": (_set(return_lse=True, lse_out=lambda dev: _nan((2, 8), BF16, dev)),
                         r"lse.*(float32|bfloat16)"),
    # FP8: the scheme, which scales a call needs or must not have, their shapes and dtype.
    "scheme_unknown": (_fp8(scheme="per_block"), r"scheme"),
    "scheme_with_bf16_cache": (_set(scheme=QK_TOKEN_HEAD), r"scheme"),
    "k_scale_with_bf16_cache": (_set(k_scale=_ones(1)), r"k_scale"),
    "k_scale_missing": (_fp8(k_scale=None), r"k_scale"),
    "v_scale_missing": (_fp8(QK_TOKEN_HEAD, v_scale=None), r"v_scale"),
    "q_scale_missing": (_fp8(q_fp8=True, q_scale=None), r"q_scale"),
    "q_scale_with_bf16_q": (_fp8(q_scale=_ones(1)), r"q_scale"),
    "k_scale_per_tensor_2_elements": (_fp8(k_scale=_ones(2)), r"k_scale"),
    "k_scale_per_token_wrong_heads": (_fp8(QK_TOKEN_HEAD, k_scale=_ones(4, 16, 3)), r"k_scale"),
    "k_scale_per_token_one_element": (_fp8(QK_TOKEN_HEAD, k_scale=_ones(1)), r"k_scale"),
    "v_scale_per_head_wrong_heads": (_fp8(QK_TOKEN_HEAD, v_scale=_ones(3)), r"v_scale"),
    "q_scale_per_token_transposed": (_fp8(Q_TOKEN_HEAD, q_fp8=True, q_scale=_ones(8, 2)),
                                     r"q_scale"),
    "k_scale_float16": (_fp8(k_scale=_ones(1, dtype=torch.float16)), r"k_scale"),
    "q_fp8_with_bf16_cache": (_set(q=lambda dev: torch.zeros(2, 8, 128, dtype=FP8, device=dev)),
                              r"\bq\b|k_cache"),
    "k_fp8_v_bf16": (_fp8(v_cache=lambda dev: _kv(dev)), r"v_cache|k_cache"),
}

# Tensors on the host while the others are on the GPU (only meaningful on a GPU).
DEVICE_NAMES = ("q", "k_cache", "v_cache", "page_table", "kv_lens", "out", "lse_out")
INVALID_CALLS_GPU_ONLY = {
    f"{name}_on_cpu": (_on_cpu(name), rf"{name}.*(CUDA|cuda|device|cpu)") for name in DEVICE_NAMES
}
# The scales of an FP8 call (fp8 q, per-token scales) on the host.
INVALID_CALLS_GPU_ONLY.update({
    f"{name}_on_cpu": (_then(_fp8(QK_TOKEN_HEAD, q_fp8=True), _on_cpu(name)),
                       rf"{name}.*(CUDA|cuda|device|cpu)")
    for name in ("q_scale", "k_scale", "v_scale")
})

POSITIONAL = ("q", "k_cache", "v_cache", "page_table", "kv_lens")


def invalid_call_names(device: str) -> list[str]:
    names = list(INVALID_CALLS)
    return names + list(INVALID_CALLS_GPU_ONLY) if device == "cuda" else names


def build_invalid_call(name: str, device: str):
    """(args, kwargs, match, buffers): the call's positional and keyword arguments,
    the regex its ValueError must match, and the NaN-filled outputs handed to it
    (which must stay untouched)."""
    change, match = {**INVALID_CALLS, **INVALID_CALLS_GPU_ONLY}[name]
    args = _valid_call(device)
    args["out"] = _nan((2, 8, 128), BF16, device)
    if name.startswith("lse_out"):
        args["return_lse"] = True
        args["lse_out"] = _nan((2, 8), torch.float32, device)
    change(args, device)
    q = args["q"]
    if q.dim() == 3 and name not in ("out_wrong_shape", "out_wrong_rows", "out_float32",
                                     "out_on_cpu"):
        args["out"] = _nan(tuple(q.shape), BF16, q.device)  # out fits q: only the change is wrong
    positional = tuple(args.pop(n) for n in POSITIONAL)
    buffers = [args[n] for n in ("out", "lse_out") if args.get(n) is not None]
    return positional, args, match, buffers
