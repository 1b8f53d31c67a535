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

Invalid calls
    INVALID_CALLS lists argument errors shared by the CPU and GPU tests; each
    builds the call's arguments on a given device.
"""
from __future__ import annotations

import math

import torch

BF16 = torch.bfloat16
INT32 = torch.int32

LAYOUTS = ("NHD", "HND", "interleaved")
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


def alloc_kv(num_pages: int, page_size: int, num_kv_heads: int, head_dim: int, layout: str):
    """Uninitialized k_cache, v_cache [num_pages, page_size, Hkv, D] in the layout:
    NHD          each contiguous;
    HND          each x.transpose(1, 2).contiguous().transpose(1, 2) (heads outside slots);
    interleaved  kv[:, 0] and kv[:, 1] of one [num_pages, 2, page_size, Hkv, D] allocation."""
    shape = (num_pages, page_size, num_kv_heads, head_dim)
    if layout == "NHD":
        return (torch.empty(shape, dtype=BF16, device="cuda"),
                torch.empty(shape, dtype=BF16, device="cuda"))
    if layout == "HND":
        hnd = (num_pages, num_kv_heads, page_size, head_dim)
        return (torch.empty(hnd, dtype=BF16, device="cuda").transpose(1, 2),
                torch.empty(hnd, dtype=BF16, device="cuda").transpose(1, 2))
    if layout == "interleaved":
        kv = torch.empty(num_pages, 2, page_size, num_kv_heads, head_dim, dtype=BF16,
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
# Invalid calls
# ----------------------------------------------------------------------------
# A valid small call: B = 2, q_len = 1, Hq = 8, Hkv = 2, D = 128, page_size 16,
# 4 pages, 2 table columns, kv_lens 5. Each case changes one thing; values are
# zeros (a call is rejected before anything runs). `match` names the argument.
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
}

# Tensors on the host while the others are on the GPU (only meaningful on a GPU).
DEVICE_NAMES = ("q", "k_cache", "v_cache", "page_table", "kv_lens", "out", "lse_out")
INVALID_CALLS_GPU_ONLY = {
    f"{name}_on_cpu": (_on_cpu(name), rf"{name}.*(CUDA|cuda|device|cpu)") for name in DEVICE_NAMES
}

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
