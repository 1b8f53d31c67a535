# SPDX-License-Identifier: Apache-2.0
"""Family "rope": rope_qk_norm_kv_write (optional per-head QK RMSNorm, RoPE,
paged KV-cache write, q out) against the unfused PyTorch sequence, eager and
under torch.compile, and FlashInfer's RoPE + append_paged_kv_cache when
flashinfer is importable.

Ops: ``rope_bf16`` (BF16 cache, bf16 q out), ``rope_fp8`` (FP8 cache, scheme
per_tensor with static k and v scales, bf16 q out) and ``rope_fp8qk`` (FP8
cache, scheme qk_token_head__v_head: a k scale per token and kv head written
next to the cache, a static v scale per kv head, fp8 q out with a scale per
row and head). Shapes (Hq/Hkv, D 128): qwen3-235b 64/4 with QK norm before the
rotation, qwen3-30b 32/4 with QK norm (fewer than 64 q heads: the streaming
kernel deals them in pairs over its 32 lane groups), llama-70b 64/8, llama-8b
32/8 (neox), partial-r64 32/8 rotating the first 64 dims interleaved (GPT-J
style). Batches: decode B in {1, 16, 64, 256},
one new token per request at kv_len ~4096 (drawn per input set in
4096 +- 256, so the slots land anywhere in their pages); prefill chunks of 2K,
4K and 16K tokens of one request after a 2K-token cache, and 8K tokens as 4
requests of 2K new tokens after caches of 2048, 1000, 0 and 3001 tokens
(chunks starting mid-page, one fresh request).

Inputs per set: a packed qkv [rows, (Hq + 2 Hkv) * 128] (q, k, v are its
views, as a QKV GEMM leaves them), a float32 cos | sin table of 32768
positions (one per model, shared by the sets), page size 16, NHD caches
holding only the pages this step's tokens land in, random old contents, and a
page table of fixed width 2048 whose entries for those pages are a random
permutation (earlier entries point anywhere in the pool; they are never
used). Ours gets positions=None (positions from kv_lens and cu_seqlens). The
baselines get each row's position and request index precomputed, as per-step
metadata shared by all layers, and compute (page, slot) from the page table.

Correctness: q out and the written cache slots are compared with a float32
reference (complex-number rotation of the float32 RMS-normalized inputs);
rotated values are judged against the magnitude of their rotation pair (a
rotation moves errors between the two elements of a pair), bf16 with
atol 1e-2 + rtol 2e-2 of it, fp8 dequantized with 0.13 * |ref| + two
subnormal steps of the scale + 2^-7 of it. Every other slot of the touched
pages (and of the k-scale cache) must be bit-identical afterwards.

Bytes counted (rows = this step's tokens, D = 128, rot = rotary dims):
  read q, k, v           rows * (Hq + 2 * Hkv) * D * 2
  read cos | sin rows    rows * rot * 4            (float32 table)
  read norm weights      2 * D * 2                 (QK norm only)
  write q out            rows * Hq * D * (2 bf16 | 1 fp8)
                         + rows * Hq * 4           (fp8 q with per-row-head scales)
  write k, v slots       rows * 2 * Hkv * D * (2 bf16 | 1 fp8)
                         + rows * Hkv * 4          (qk_token_head__v_head k scales)
  read static scales     2 * 4 (per_tensor) | Hkv * 4 (v scale of qk_token_head__v_head)
Metadata (kv_lens, cu_seqlens, the page-table entries used) is not counted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .common import (BF16, EPS, F32, FP8, FP8_ATOL_STEPS, FP8_MAX, FP8_RTOL, BF16_ATOL,
                     BF16_RTOL, Case, Check, Impl, _finish, compiled, fp8_quant_ref,
                     mark_rows, merge_checks, randn)

FP8_DT = torch.float8_e4m3fn
HEAD_DIM = 128
PAGE = 16
MAX_POS = 32768                  # rows of the cos | sin table
MAX_PAGES = MAX_POS // PAGE      # page-table width (row stride), the same for every case
PAIR_RTOL = 2.0 ** -7            # fp8: bf16 roundings of a pair before quantization

PER_TENSOR = "per_tensor"
QK_TOKEN_HEAD = "qk_token_head__v_head"


@dataclass(frozen=True)
class Model:
    name: str
    hq: int
    hkv: int
    rotary_dim: int
    style: str          # "neox" or "interleaved"
    norm: bool          # per-head QK RMSNorm before the rotation
    rope_base: float


MODELS = {m.name: m for m in (
    Model("qwen3-235b", 64, 4, 128, "neox", True, 1e6),
    Model("qwen3-30b", 32, 4, 128, "neox", True, 1e6),
    Model("llama-70b", 64, 8, 128, "neox", False, 5e5),
    Model("llama-8b", 32, 8, 128, "neox", False, 5e5),
    Model("partial-r64", 32, 8, 64, "interleaved", False, 1e4),
)}

# (label, (cached tokens, new tokens) per request); largest row count first, so
# the dynamic-rows compile of a baseline happens at 16K rows (see common.grid).
PREFILL = [("1x16K", [(2048, 16384)]),
           ("4x2K", [(2048, 2048), (1000, 2048), (0, 2048), (3001, 2048)]),
           ("1x4K", [(2048, 4096)]),
           ("1x2K", [(2048, 2048)])]
DECODE = [("B=256", 256), ("B=64", 64), ("B=16", 16), ("B=1", 1)]
DECODE_KV, DECODE_JITTER = 4096, 256

# (op, model, FP8 scheme or None for a BF16 cache, fp8 q out)
VARIANTS = [
    ("rope_bf16", "qwen3-235b", None, False),
    ("rope_fp8", "qwen3-235b", PER_TENSOR, False),
    ("rope_fp8qk", "qwen3-235b", QK_TOKEN_HEAD, True),
    ("rope_bf16", "qwen3-30b", None, False),
    ("rope_bf16", "llama-70b", None, False),
    ("rope_bf16", "llama-8b", None, False),
    ("rope_bf16", "partial-r64", None, False),
]
QUICK = {("rope_bf16", "qwen3-235b", "1x16K"), ("rope_bf16", "qwen3-235b", "B=256"),
         ("rope_bf16", "qwen3-235b", "B=1"), ("rope_bf16", "partial-r64", "1x4K"),
         ("rope_fp8", "qwen3-235b", "B=64"), ("rope_fp8qk", "qwen3-235b", "1x4K")}


def _split(qkv, hq, hkv, d):
    """Views q [rows, Hq, D], k and v [rows, Hkv, D] of a packed qkv (no copy)."""
    q = qkv[:, :hq * d].unflatten(1, (hq, d))
    k = qkv[:, hq * d:(hq + hkv) * d].unflatten(1, (hkv, d))
    v = qkv[:, (hq + hkv) * d:].unflatten(1, (hkv, d))
    return q, k, v


# ---------------------------------------------------------------------------
# baseline: the plain PyTorch sequence (run eager and under torch.compile)

def _rotate(x, cos, sin, interleaved):
    """RoPE on the leading 2 * cos.shape[-1] dims of x [rows, H, D], float32 out,
    written as x * cos + rotate_half(x) * sin (HF transformers' form for neox,
    rotate_every_two for GPT-J's interleaved pairs). Under torch.compile this
    form beat (x1 cos - x2 sin, x2 cos + x1 sin) on an H200 at 16K rows: 1.4x
    with QK norm or interleaved partial rotary, about even for llama-70b."""
    rot = 2 * cos.shape[-1]
    xr = x[..., :rot].float()
    if interleaved:
        cos, sin = cos.repeat_interleave(2, dim=-1), sin.repeat_interleave(2, dim=-1)
        turned = torch.stack((-xr[..., 1::2], xr[..., 0::2]), dim=-1).flatten(-2)
    else:
        cos, sin = torch.cat((cos, cos), dim=-1), torch.cat((sin, sin), dim=-1)
        turned = torch.cat((-xr[..., rot // 2:], xr[..., :rot // 2]), dim=-1)
    y = xr * cos + turned * sin
    if rot < x.shape[-1]:
        y = torch.cat((y, x[..., rot:].float()), dim=-1)
    return y


def _dynamic_scale(x):
    """Per (row, head) scale of float32 x [rows, H, D]: max(amax, 1e-10) / 448."""
    return x.abs().amax(-1, keepdim=True).clamp(min=1e-10) / FP8_MAX


def _to_fp8(x, scale):
    return (x / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DT)


def base_rope_kv_write(qkv, cos_sin, k_cache, v_cache, page_table_flat, positions, row_req,
                       q_w, k_w, k_scale, v_scale, hq: int, max_pages: int, interleaved: bool,
                       mode: str):
    """mode: "bf16", PER_TENSOR or QK_TOKEN_HEAD. page_table_flat is the page
    table [B, max_pages] flattened (one compile serves every batch size).
    Returns (q_out, q_scale, k_cache, v_cache, k_scale cache)."""
    page, hkv, d = k_cache.shape[1], k_cache.shape[2], k_cache.shape[3]
    q, k, v = _split(qkv, hq, hkv, d)
    if q_w is not None:
        q = F.rms_norm(q, (d,), q_w, EPS)
        k = F.rms_norm(k, (d,), k_w, EPS)
    cs = cos_sin[positions]                                   # [rows, rot] float32
    half = cs.shape[1] // 2
    cos, sin = cs[:, None, :half], cs[:, None, half:]
    q = _rotate(q, cos, sin, interleaved)
    k = _rotate(k, cos, sin, interleaved)
    pages = page_table_flat[row_req * max_pages + positions // page].long()
    slots = positions % page
    if mode == "bf16":
        k_cache[pages, slots] = k.to(k_cache.dtype)
        v_cache[pages, slots] = v
        return q.to(torch.bfloat16), None, k_cache, v_cache, None
    if mode == PER_TENSOR:
        k_cache[pages, slots] = _to_fp8(k, k_scale)
        v_cache[pages, slots] = _to_fp8(v.float(), v_scale)
        return q.to(torch.bfloat16), None, k_cache, v_cache, None
    ks = _dynamic_scale(k)                                    # [rows, Hkv, 1]
    k_cache[pages, slots] = _to_fp8(k, ks)
    k_scale[pages, slots] = ks.squeeze(-1)
    v_cache[pages, slots] = _to_fp8(v.float(), v_scale.view(1, -1, 1))
    qs = _dynamic_scale(q)
    return _to_fp8(q, qs), qs.squeeze(-1), k_cache, v_cache, k_scale


def _mode(scheme):
    return "bf16" if scheme is None else scheme


def _base_args(s, m, scheme):
    return (s["qkv"], s["cos_sin"], s["k_cache"], s["v_cache"], s["page_table"].view(-1),
            s["positions"], s["row_req"], s.get("q_w"), s.get("k_w"), s.get("k_scale"),
            s.get("v_scale"), m.hq, MAX_PAGES, m.style == "interleaved", _mode(scheme))


def _compiled_base(m, scheme):
    """torch.compile of the baseline; rows, pages and the flattened page table
    dynamic (common.mark_rows), so one compile serves every row count >= 2."""
    cfn = compiled(base_rope_kv_write)
    per_token_k = scheme == QK_TOKEN_HEAD

    def run(s):
        args = _base_args(s, m, scheme)
        dyn = [args[i] for i in (0, 2, 3, 4, 5, 6)]   # qkv, caches, table, positions, row_req
        if per_token_k:
            dyn.append(args[9])                            # k scale cache [pages, PAGE, Hkv]
        mark_rows(*dyn)
        return cfn(*args)

    return Impl("torch.compile", run)


# ---------------------------------------------------------------------------
# ours

def _ours(m, scheme, q_fp8):
    # The public hpc_ops.rope_qk_norm_kv_write is this function.
    from hpc_ops.rope import rope_qk_norm_kv_write

    def run(s):
        q, k, v = _split(s["qkv"], m.hq, m.hkv, HEAD_DIM)
        kwargs = {}
        if m.norm:
            kwargs.update(q_norm_weight=s["q_w"], k_norm_weight=s["k_w"],
                          norm_order="norm_then_rope")
        if scheme is not None:
            kwargs.update(kv_scheme=scheme, k_scale=s["k_scale"], v_scale=s["v_scale"])
        if q_fp8:
            kwargs["q_out_dtype"] = FP8_DT
        res = rope_qk_norm_kv_write(q, k, v, s["cos_sin"], s["k_cache"], s["v_cache"],
                                    s["page_table"], s["kv_lens"], s["cu_seqlens"],
                                    rotary_dim=m.rotary_dim, style=m.style, eps=EPS, **kwargs)
        q_out, q_scale = res if isinstance(res, tuple) else (res, None)
        return (q_out, q_scale, s["k_cache"], s["v_cache"],
                s["k_scale"] if scheme == QK_TOKEN_HEAD else None)
    return run


# ---------------------------------------------------------------------------
# FlashInfer (optional): rmsnorm + RoPE from the cos | sin table + append to
# the paged cache, BF16 caches only

def _flashinfer_available() -> bool:
    from .cases_attention import _flashinfer_available as available
    return available()


def _flashinfer_meta(reqs, page_table, positions, row_req):
    """CSR page lists of the requests after this step, and int32 positions and
    request indices, as append_paged_kv_cache takes them (all tensors, so the
    input set stays clonable)."""
    indices, indptr, last = [], [0], []
    for b, (cached, new) in enumerate(reqs):
        n_pages = (cached + new + PAGE - 1) // PAGE
        indices.append(page_table[b, :n_pages])
        indptr.append(indptr[-1] + n_pages)
        last.append((cached + new - 1) % PAGE + 1)
    return {"fi_indices": torch.cat(indices).cuda(),
            "fi_indptr": torch.tensor(indptr, dtype=torch.int32, device="cuda"),
            "fi_last": torch.tensor(last, dtype=torch.int32, device="cuda"),
            "fi_pos": positions.int(), "fi_req": row_req.int()}


def _flashinfer_run(m):
    def run(s):
        import flashinfer
        rows, d = s["qkv"].shape[0], HEAD_DIM
        q, k, v = _split(s["qkv"], m.hq, m.hkv, d)
        if m.norm:
            q = flashinfer.norm.rmsnorm(q.reshape(-1, d), s["q_w"], EPS)
            k = flashinfer.norm.rmsnorm(k.reshape(-1, d), s["k_w"], EPS)
        q, k = flashinfer.rope.apply_rope_with_cos_sin_cache(
            s["positions"], q.reshape(rows, -1), k.reshape(rows, -1), d, s["cos_sin"],
            is_neox=m.style == "neox")
        flashinfer.page.append_paged_kv_cache(
            k.view(rows, m.hkv, d), v, s["fi_req"], s["fi_pos"],
            (s["k_cache"], s["v_cache"]), s["fi_indices"], s["fi_indptr"], s["fi_last"],
            kv_layout="NHD")
        return q.view(rows, m.hq, d), None, s["k_cache"], s["v_cache"], None
    return run


def _impls(m, scheme, q_fp8, use_fi):
    impls = [Impl("hpc_ops", _ours(m, scheme, q_fp8), baseline=False),
             Impl("torch", lambda s: base_rope_kv_write(*_base_args(s, m, scheme))),
             _compiled_base(m, scheme)]
    if use_fi and _flashinfer_available():
        impls.append(Impl("flashinfer", _flashinfer_run(m), note="rope + append_paged_kv"))
    return impls


# ---------------------------------------------------------------------------
# inputs

_cos_sin_tables: dict = {}


def _cos_sin(rot, base):
    """float32 [MAX_POS, rot]: cos of the rot/2 frequencies, then their sin
    (one GPU table per (rot, base), shared by every input set)."""
    key = (rot, base)
    if key not in _cos_sin_tables:
        inv_freq = base ** -(torch.arange(0, rot, 2, dtype=torch.float64) / rot)
        angle = torch.arange(MAX_POS, dtype=torch.float64)[:, None] * inv_freq[None, :]
        _cos_sin_tables[key] = torch.cat((angle.cos(), angle.sin()), 1).float().cuda()
    return _cos_sin_tables[key]


def _decode_reqs(b):
    kv = torch.randint(DECODE_KV - DECODE_JITTER, DECODE_KV + DECODE_JITTER, (b,)).tolist()
    return [(n - 1, 1) for n in kv]


def _inputs(m, reqs_of, scheme, flashinfer):
    """Factory of one input set; reqs_of() gives (cached, new) per request."""
    def make(slot):
        reqs = reqs_of()
        b = len(reqs)
        first = [c // PAGE for c, _ in reqs]                  # pages this step writes
        last = [(c + n - 1) // PAGE for c, n in reqs]
        pool = sum(hi - lo + 1 for lo, hi in zip(first, last))
        perm = torch.randperm(pool).to(torch.int32)
        table = torch.zeros(b, MAX_PAGES, dtype=torch.int32)
        at = 0
        for i, (lo, hi) in enumerate(zip(first, last)):
            table[i, :lo] = torch.randint(0, pool, (lo,), dtype=torch.int32)
            table[i, lo:hi + 1] = perm[at:at + hi - lo + 1]
            at += hi - lo + 1
        news = torch.tensor([n for _, n in reqs])
        rows = int(news.sum())
        kv_dtype = torch.bfloat16 if scheme is None else FP8_DT
        s = {"qkv": randn(rows, (m.hq + 2 * m.hkv) * HEAD_DIM),
             "cos_sin": _cos_sin(m.rotary_dim, m.rope_base),
             "k_cache": torch.randn(pool, PAGE, m.hkv, HEAD_DIM, device="cuda").to(kv_dtype),
             "v_cache": torch.randn(pool, PAGE, m.hkv, HEAD_DIM, device="cuda").to(kv_dtype),
             "page_table": table.cuda(),
             "kv_lens": torch.tensor([c + n for c, n in reqs], dtype=torch.int32,
                                     device="cuda"),
             "cu_seqlens": torch.cat((torch.zeros(1, dtype=torch.int32),
                                      news.cumsum(0).to(torch.int32))).cuda(),
             # per-step metadata of the baselines
             "positions": torch.cat([torch.arange(c, c + n) for c, n in reqs]).cuda(),
             "row_req": torch.repeat_interleave(torch.arange(b), news).cuda()}
        if m.norm:
            s["q_w"], s["k_w"] = randn(HEAD_DIM), randn(HEAD_DIM)
        v = _split(s["qkv"], m.hq, m.hkv, HEAD_DIM)[2]
        if scheme == PER_TENSOR:  # realistic static scales: this input set's amax / 448
            k_ref = _ref_rope(s, m)[1][0]
            s["k_scale"] = (k_ref.abs().amax().clamp(min=1e-10) / FP8_MAX).reshape(1)
            s["v_scale"] = (v.float().abs().amax().clamp(min=1e-10) / FP8_MAX).reshape(1)
        elif scheme == QK_TOKEN_HEAD:
            # k scales of the tokens already cached, then a static v scale per kv head
            s["k_scale"] = torch.rand(pool, PAGE, m.hkv, device="cuda") * 0.01 + 1e-3
            s["v_scale"] = v.float().abs().amax(dim=(0, 2)).clamp(min=1e-10) / FP8_MAX
        if flashinfer and _flashinfer_available():
            s.update(_flashinfer_meta(reqs, table, s["positions"], s["row_req"]))
        return s
    return make


# ---------------------------------------------------------------------------
# reference and check

def _ref_rows(s):
    """(request, cache position) of every row, from kv_lens and cu_seqlens."""
    cu = s["cu_seqlens"].long()
    n = cu[1:] - cu[:-1]
    req = torch.repeat_interleave(torch.arange(n.numel(), device=cu.device), n)
    i = torch.arange(req.numel(), device=cu.device) - cu[req]
    return req, s["kv_lens"].long()[req] - n[req] + i


def _ref_rotate(x, cos, sin, interleaved):
    """float32 x [rows, H, D] rotated as complex numbers (pair * e^(i theta));
    also the magnitude of each element's pair (|x| past the rotary dims)."""
    rot = 2 * cos.shape[-1]
    e = torch.complex(cos, sin)
    if interleaved:
        z = torch.view_as_complex(x[..., :rot].unflatten(-1, (rot // 2, 2)).contiguous()) * e
        y = torch.view_as_real(z).flatten(-2)
        mag = z.abs().repeat_interleave(2, dim=-1)
    else:
        z = torch.complex(x[..., :rot // 2], x[..., rot // 2:rot]) * e
        y = torch.cat((z.real, z.imag), dim=-1)
        mag = torch.cat((z.abs(), z.abs()), dim=-1)
    tail = x[..., rot:]
    return torch.cat((y, tail), dim=-1), torch.cat((mag, tail.abs()), dim=-1)


def _ref_rope(s, m):
    """((q, |pair|), (k, |pair|)) in float32 from the bf16 inputs."""
    q, k, _ = _split(s["qkv"], m.hq, m.hkv, HEAD_DIM)
    q, k = q.float(), k.float()
    if m.norm:
        q = q * torch.rsqrt(q.pow(2).mean(-1, keepdim=True) + EPS) * s["q_w"].float()
        k = k * torch.rsqrt(k.pow(2).mean(-1, keepdim=True) + EPS) * s["k_w"].float()
    _, pos = _ref_rows(s)
    cs = s["cos_sin"][pos]
    half = m.rotary_dim // 2
    cos, sin = cs[:, None, :half].float(), cs[:, None, half:].float()
    il = m.style == "interleaved"
    return _ref_rotate(q, cos, sin, il), _ref_rotate(k, cos, sin, il)


def _reference(m, scheme):
    def ref(s):
        (q, q_mag), (k, k_mag) = _ref_rope(s, m)
        v = _split(s["qkv"], m.hq, m.hkv, HEAD_DIM)[2].float()
        req, pos = _ref_rows(s)
        page = s["page_table"][req, pos // PAGE].long()
        slot = pos % PAGE
        written = torch.zeros(s["k_cache"].shape[:2], dtype=torch.bool, device=page.device)
        written[page, slot] = True
        r = {"q": q, "q_mag": q_mag, "k": k, "k_mag": k_mag, "v": v, "page": page,
             "slot": slot, "written": written, "k_cache0": s["k_cache"].clone(),
             "v_cache0": s["v_cache"].clone()}
        if scheme == PER_TENSOR:
            r["k"] = fp8_quant_ref(k, "static", s["k_scale"])
            r["v"] = fp8_quant_ref(v, "static", s["v_scale"])
            r["k_scale"] = s["k_scale"].float().view(1, 1, 1)
            r["v_scale"] = s["v_scale"].float().view(1, 1, 1)
        elif scheme == QK_TOKEN_HEAD:
            r["v"] = fp8_quant_ref(v, "static", s["v_scale"].view(1, -1, 1))
            r["v_scale"] = s["v_scale"].float().view(1, -1, 1)
            r["k_scale0"] = s["k_scale"].clone()
        return r
    return ref


def _close_bf16(out, ref, mag, what):
    if out is None or out.dtype != torch.bfloat16 or out.shape != ref.shape:
        got = "nothing" if out is None else f"{out.dtype} {list(out.shape)}"
        return Check(math.inf, math.inf, False, f"{what}: got {got}, want bfloat16 "
                                                 f"{list(ref.shape)}")
    return _finish((out.float() - ref).abs(), BF16_ATOL + BF16_RTOL * mag, what)


def _close_fp8(codes, scale, ref, mag, what):
    """fp8 codes dequantized with scale (broadcast to ref's shape)."""
    if codes is None or codes.dtype != FP8_DT or codes.shape != ref.shape or scale is None:
        got = "nothing" if codes is None else f"{codes.dtype} {list(codes.shape)}"
        return Check(math.inf, math.inf, False, f"{what}: got {got} (scale "
                                                 f"{'missing' if scale is None else 'given'}), "
                                                 f"want float8_e4m3fn {list(ref.shape)}")
    scale = scale.float()
    tol = FP8_RTOL * ref.abs() + FP8_ATOL_STEPS * scale.abs() + PAIR_RTOL * mag + 1e-6
    return _finish((codes.float() * scale - ref).abs(), tol, what)


def _slots(cache, page, slot):
    """cache[page, slot] (FP8 gathered through a byte view)."""
    if cache.dtype == FP8_DT:
        return cache.view(torch.uint8)[page, slot].view(FP8_DT)
    return cache[page, slot]


def _untouched(cache, before, written, what):
    """Every slot not written by this step is bit-identical to before."""
    changed = cache.view(torch.uint8).ne(before.view(torch.uint8)).flatten(2).any(-1)
    bad = int((changed & ~written).sum())
    return Check(0.0, 0.0, True) if bad == 0 else Check(
        math.inf, math.inf, False, f"{what}: {bad} slots of other tokens changed")


def _check(scheme, q_fp8):
    def check(ref, out):
        q_out, q_scale, k_cache, v_cache, k_scale = out
        page, slot = ref["page"], ref["slot"]
        if q_fp8:
            qs = None if q_scale is None else q_scale.float()[..., None]
            checks = [_close_fp8(q_out, qs, ref["q"], ref["q_mag"], "q_out")]
        else:
            checks = [_close_bf16(q_out, ref["q"], ref["q_mag"], "q_out")]
        k, v = _slots(k_cache, page, slot), _slots(v_cache, page, slot)
        v_mag = ref["v"].abs()
        if scheme is None:
            checks += [_close_bf16(k, ref["k"], ref["k_mag"], "k_cache"),
                       _close_bf16(v, ref["v"], v_mag, "v_cache")]
        else:
            if scheme == PER_TENSOR:
                ks = ref["k_scale"]
            else:
                ks = None if k_scale is None else k_scale[page, slot].float()[..., None]
                checks.append(_untouched(k_scale, ref["k_scale0"], ref["written"], "k_scale"))
            checks += [_close_fp8(k, ks, ref["k"], ref["k_mag"], "k_cache"),
                       _close_fp8(v, ref["v_scale"], ref["v"], v_mag, "v_cache")]
        checks += [_untouched(k_cache, ref["k_cache0"], ref["written"], "k_cache"),
                   _untouched(v_cache, ref["v_cache0"], ref["written"], "v_cache")]
        return merge_checks(*checks)
    return check


# ---------------------------------------------------------------------------
# the cases

def _bytes(m, rows, scheme, q_fp8) -> int:
    """Minimal HBM traffic of one call (formula in the module docstring)."""
    d = HEAD_DIM
    n = rows * (m.hq + 2 * m.hkv) * d * BF16                 # read q, k, v
    n += rows * m.rotary_dim * F32                           # read cos | sin rows
    n += 2 * d * BF16 if m.norm else 0                       # read q, k norm weights
    n += rows * m.hq * d * (FP8 if q_fp8 else BF16)          # write q out
    n += rows * 2 * m.hkv * d * (BF16 if scheme is None else FP8)   # write k, v slots
    if scheme == PER_TENSOR:
        n += 2 * F32 + (F32 if q_fp8 else 0)                 # read k, v (and q) scales
    elif scheme == QK_TOKEN_HEAD:
        n += rows * m.hkv * F32 + m.hkv * F32                # write k scales, read v scales
        n += rows * m.hq * F32 if q_fp8 else 0               # write q scales
    return n


def _batches():
    """(label, kind, B, rows, reqs_of) in the order the cases run."""
    out = []
    for label, reqs in PREFILL:
        out.append((label, "prefill", len(reqs), sum(n for _, n in reqs),
                    lambda reqs=reqs: list(reqs)))
    for label, b in DECODE:
        out.append((label, "decode", b, b, lambda b=b: _decode_reqs(b)))
    return out


def cases(quick: bool) -> list:
    """Per (op, model): prefill then decode, rows largest first."""
    out = []
    for op, model, scheme, q_fp8 in VARIANTS:
        m = MODELS[model]
        for label, kind, b, rows, reqs_of in _batches():
            if quick and (op, model, label) not in QUICK:
                continue
            use_fi = scheme is None      # FlashInfer baseline: BF16 caches only
            params = {"model": model, "batch": label, "B": b, "rows": rows, "hq": m.hq,
                      "hkv": m.hkv, "head_dim": HEAD_DIM, "rotary_dim": m.rotary_dim,
                      "style": m.style, "qk_norm": m.norm, "page_size": PAGE,
                      "kv": "bf16" if scheme is None else "fp8", "scheme": scheme or "",
                      "q_dtype": "fp8" if q_fp8 else "bf16"}
            cached = ("~4K" if kind == "decode"
                      else "+".join(str(c) for c, _ in dict(PREFILL)[label]))
            out.append(Case(
                family="rope", op=op, label=f"{model} {label}", params=params,
                bytes=_bytes(m, rows, scheme, q_fp8),
                make_inputs=_inputs(m, reqs_of, scheme, use_fi),
                impls=lambda m=m, scheme=scheme, q_fp8=q_fp8, use_fi=use_fi:
                    _impls(m, scheme, q_fp8, use_fi),
                reference=_reference(m, scheme), check=_check(scheme, q_fp8),
                config_dims=None, inplace=True,
                config_text=lambda sms, b=b, cached=cached: f"B={b} cached={cached}",
                plot_group=f"{op} {model} {m.hq}/{m.hkv}", plot_x=float(rows)))
    return out
