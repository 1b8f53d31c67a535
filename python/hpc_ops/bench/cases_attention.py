# SPDX-License-Identifier: Apache-2.0
"""Family "attention": paged decode attention (BF16 or FP8 KV) against
F.scaled_dot_product_attention (cuDNN and FlashAttention backends) on a dense
KV holding the same data, padded to the longest request where lengths differ.

Ops: ``decode_bf16_q*`` (BF16 cache), ``decode_fp8_q*`` (FP8 cache, scheme
per_tensor, bf16 q) and ``decode_fp8qk_q*`` (FP8 cache, scheme
qk_token_head__v_head: a k scale per token and kv head, a v scale per kv head,
and an fp8 q with a scale per row and head). FP8 scales are powers of two, so
the dequantized values (code x scale) are exact in bf16: the SDPA baselines
run on bf16 dense KV (and q) holding exactly those values (SDPA has no FP8),
and one float32 reference checks every implementation. FlashInfer's FP8
paged decode joins as a baseline of the per_tensor q_len 1 cases when
flashinfer is importable.

Bytes counted: K and V of every request's tokens (kv_len x Hkv x 128 x 2,
times 2 bytes for BF16, 1 for FP8, plus 4 per token and kv head for per-token
k scales), q (and its per-row scales) and out; the plan and merge traffic is
overhead, not counted. A baseline on bf16 KV reads twice the FP8 bytes but is
rated on the same count.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

import hpc_ops

from .common import BF16, F32, FP8, FP8_MAX, Case, Check, Impl

HEAD_DIM = 128
PAGE = 64
# (label, lengths)
UNIFORM = [("64x4K", [4096] * 64), ("128x1K", [1024] * 128), ("16x16K", [16384] * 16),
           ("1x64K", [65536]), ("1x1K", [1024])]
SKEWED = [("32x128+32x4K", [128] * 32 + [4096] * 32), ("1x16K+15x64", [16384] + [64] * 15),
          ("1x64K+31x4K", [65536] + [4096] * 31), ("1x128K+31x4K", [131072] + [4096] * 31),
          ("2x32K+30x4K", [32768] * 2 + [4096] * 30)]
HEADS = [(64, 8), (64, 4), (8, 1)]   # (Hq, Hkv): Qwen3-235B / Llama-70B TP1, TP8
QUICK = {"64x4K", "1x1K", "1x64K+31x4K", "1x16K+15x64"}

PER_TENSOR = "per_tensor"
QK_TOKEN_HEAD = "qk_token_head__v_head"
FP8_LABELS = {"64x4K", "128x1K", "16x16K", "1x64K"} | {label for label, _ in SKEWED}


# (op name part, scheme or None for BF16, fp8 q, labels, heads, labels in --quick)
VARIANTS = [
    ("bf16", None, False, None, HEADS, QUICK),
    ("fp8", PER_TENSOR, False, FP8_LABELS, HEADS, {"64x4K", "1x64K+31x4K"}),
    ("fp8qk", QK_TOKEN_HEAD, True, FP8_LABELS, [(64, 8)], {"64x4K"}),
]

_FP8_DTYPE = torch.float8_e4m3fn


def _pow2_scale(amax: torch.Tensor) -> torch.Tensor:
    """The smallest power of two s with amax / s <= 448, float32 (amax may be a tensor)."""
    return torch.exp2(torch.ceil(torch.log2(amax.float().clamp_min(1e-30) / FP8_MAX)))


def _abs_max(x: torch.Tensor, dim=None) -> torch.Tensor:
    """max |x| without an |x| copy of a large tensor."""
    if dim is None:
        return torch.maximum(x.max(), -x.min())
    return torch.maximum(x.amax(dim=dim), -x.amin(dim=dim))


def _quantize(x: torch.Tensor, scale: torch.Tensor):
    """(fp8 codes of x / scale, the dequantized values in x's dtype; exact for
    power-of-two scales). scale broadcasts against x."""
    codes = (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(_FP8_DTYPE)
    return codes, (codes.float() * scale).to(x.dtype)


def _page_in(cache: torch.Tensor, ids: torch.Tensor, x: torch.Tensor, n: int) -> None:
    """Writes tokens 0..n-1 of x [Hkv, L, *tail] into the pages ids of cache
    [num_pages, PAGE, Hkv, *tail] (token t in page ids[t // PAGE], slot t % PAGE)."""
    if cache.dtype == _FP8_DTYPE:  # indexing copies through same-size byte views
        cache, x = cache.view(torch.uint8), x.view(torch.uint8)
    hkv, tail = x.shape[0], tuple(x.shape[2:])
    buf = x.new_zeros((hkv, len(ids) * PAGE, *tail))
    buf[:, :n] = x[:, :n]
    cache[ids.long()] = buf.view(hkv, len(ids), PAGE, *tail).movedim(0, 2)


def _inputs(lens, hq, hkv, q_len, scheme=None, q_fp8=False, flashinfer=False):
    """Random KV in shuffled pages (ours) and the same data dense, padded
    (baselines). FP8: the dense KV and q hold the dequantized values.
    flashinfer: also a planned FlashInfer wrapper, if flashinfer imports."""
    def make(slot):
        b = len(lens)
        lmax = max(lens)
        pages_per = [(n + PAGE - 1) // PAGE for n in lens]
        total_pages = sum(pages_per)
        k_dense = torch.randn(b, hkv, lmax, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
        v_dense = torch.randn(b, hkv, lmax, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
        perm = torch.randperm(total_pages, device="cuda").to(torch.int32)
        page_table = torch.zeros(b, max(pages_per), dtype=torch.int32, device="cuda")
        kv_dtype = torch.bfloat16 if scheme is None else _FP8_DTYPE
        k_cache = torch.empty(total_pages, PAGE, hkv, HEAD_DIM, device="cuda", dtype=kv_dtype)
        v_cache = torch.empty_like(k_cache)
        per_token = scheme == QK_TOKEN_HEAD
        scales = {}
        if scheme is not None:
            if per_token:
                scales["k_scale"] = torch.zeros(total_pages, PAGE, hkv, device="cuda")
                v_s = _pow2_scale(_abs_max(v_dense, dim=(0, 2, 3))).view(hkv, 1, 1)
                scales["v_scale"] = v_s.flatten()
            else:
                k_s = _pow2_scale(_abs_max(k_dense))
                v_s = _pow2_scale(_abs_max(v_dense))
                scales["k_scale"], scales["v_scale"] = k_s.reshape(1), v_s.reshape(1)
        at = 0
        for i, n in enumerate(lens):
            ids = perm[at:at + pages_per[i]]
            at += pages_per[i]
            page_table[i, :pages_per[i]] = ids
            k_src, v_src = k_dense[i], v_dense[i]                 # [Hkv, lmax, D]
            if scheme is not None:   # one request at a time: float copies stay small
                if per_token:
                    k_s = _pow2_scale(_abs_max(k_src, dim=-1))     # [Hkv, lmax]
                    _page_in(scales["k_scale"], ids, k_s, n)
                    k_s = k_s[..., None]
                k_src, k_dense[i] = _quantize(k_src, k_s)
                v_src, v_dense[i] = _quantize(v_src, v_s)
            _page_in(k_cache, ids, k_src, n)
            _page_in(v_cache, ids, v_src, n)
        kv_lens = torch.tensor(lens, dtype=torch.int32, device="cuda")
        q = torch.randn(b * q_len, hq, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
        q_ours = q
        if q_fp8:
            q_s = _pow2_scale(_abs_max(q, dim=-1))                 # [B * q_len, Hq]
            q_ours, q = _quantize(q, q_s[..., None])
            scales["q_scale"] = q_s
        plan = hpc_ops.plan_decode_attention(kv_lens, num_q_heads=hq, num_kv_heads=hkv, q_len=q_len,
                                             kv_dtype=k_cache.dtype)
        # Baselines: q [B, Hq, q_len, D]; a boolean mask only where it matters.
        q_dense = q.view(b, q_len, hq, HEAD_DIM).transpose(1, 2)
        mask = None
        if q_len > 1 or len(set(lens)) > 1:
            pos = torch.arange(lmax, device="cuda")
            lens_t = kv_lens.long().view(b, 1, 1, 1)
            last = lens_t - q_len + torch.arange(q_len, device="cuda").view(1, 1, q_len, 1)
            mask = pos.view(1, 1, 1, lmax) <= last
        s = {"q": q_ours, "k_cache": k_cache, "v_cache": v_cache, "page_table": page_table,
             "kv_lens": kv_lens, "plan": plan, "q_dense": q_dense, "k_dense": k_dense,
             "v_dense": v_dense, "mask": mask, **scales}
        if flashinfer and _flashinfer_available():
            s["flashinfer"] = _flashinfer_plan(lens, page_table, hq, hkv)
            # Host copies: reading a device scalar is not allowed under graph capture.
            s["flashinfer_scales"] = (float(scales["k_scale"]), float(scales["v_scale"]))
        return s
    return make


def _reference(q_len):
    """float32, one request at a time over its own tokens (no padding); for FP8
    the dense tensors hold the dequantized values."""
    def ref(s):
        qd = s["q_dense"]                                  # [B, Hq, q_len, D]
        b, hq = qd.shape[0], qd.shape[1]
        hkv = s["k_dense"].shape[1]
        group = hq // hkv
        out = torch.empty(b, q_len, hq, HEAD_DIM, device="cuda", dtype=torch.float32)
        for i, n in enumerate(s["kv_lens"].tolist()):
            k = s["k_dense"][i, :, :n].float()             # [Hkv, n, D]
            v = s["v_dense"][i, :, :n].float()
            q = qd[i].float().reshape(hkv, group * q_len, HEAD_DIM)
            logits = q @ k.transpose(-1, -2) / math.sqrt(HEAD_DIM)
            qi = torch.arange(q_len, device="cuda").repeat(group)   # row = hi * q_len + qi
            visible = torch.arange(n, device="cuda").view(1, n) <= (n - q_len + qi).view(-1, 1)
            logits = logits.masked_fill(~visible, float("-inf"))
            o = torch.softmax(logits, dim=-1) @ v           # [Hkv, group * q_len, D]
            out[i] = o.view(hq, q_len, HEAD_DIM).transpose(0, 1)
        return out.reshape(b * q_len, hq, HEAD_DIM)
    return ref


def _check(ref, out):
    out = out.float()
    diff = (out - ref).abs()
    tol = 2e-2 + 2e-2 * ref.abs()
    bad = ~torch.isfinite(out)
    ratio = float((diff / tol).max()) if not bad.any() else math.inf
    return Check(float(diff.max()), ratio, ratio <= 1.0)


def _ours(q_len, scheme=None):
    fp8 = scheme is not None

    def run(s):
        kwargs = {}
        if fp8:
            kwargs = dict(scheme=scheme, q_scale=s.get("q_scale"), k_scale=s["k_scale"],
                          v_scale=s["v_scale"])
        return hpc_ops.decode_attention(s["q"], s["k_cache"], s["v_cache"], s["page_table"],
                                        s["kv_lens"], q_len=q_len, plan=s["plan"], **kwargs)
    return run


def _sdpa(backend):
    from torch.nn.attention import sdpa_kernel

    def run(s):
        with sdpa_kernel([backend]):
            o = F.scaled_dot_product_attention(s["q_dense"], s["k_dense"], s["v_dense"],
                                               attn_mask=s["mask"], enable_gqa=True)
        return o.transpose(1, 2).reshape(-1, o.shape[1], HEAD_DIM)
    return run


# ---------------------------------------------------------------------------
# FlashInfer (optional): FP8 paged decode, per-tensor scales, q_len 1

_flashinfer_workspace = None
_flashinfer_imports = None


def _flashinfer_available() -> bool:
    """Whether flashinfer imports (tried once, on first use: never for --list)."""
    global _flashinfer_imports
    if _flashinfer_imports is None:
        try:
            import flashinfer  # noqa: F401
            _flashinfer_imports = True
        except Exception:
            _flashinfer_imports = False
    return _flashinfer_imports


def _flashinfer_plan(lens, page_table, hq, hkv):
    """A planned FlashInfer decode wrapper for one input set (the plan reads
    lengths on the host, so it is made with the inputs, never under capture);
    None if planning fails. The float workspace is shared: calls never overlap."""
    global _flashinfer_workspace
    import flashinfer
    if _flashinfer_workspace is None:
        _flashinfer_workspace = torch.empty(128 * 2**20, dtype=torch.uint8, device="cuda")
    pages = [(n + PAGE - 1) // PAGE for n in lens]
    indptr = torch.tensor([0] + [sum(pages[:i + 1]) for i in range(len(pages))],
                          dtype=torch.int32, device="cuda")
    indices = torch.cat([page_table[i, :p] for i, p in enumerate(pages)])
    last = torch.tensor([n - (p - 1) * PAGE for n, p in zip(lens, pages)], dtype=torch.int32,
                        device="cuda")
    try:
        wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(_flashinfer_workspace, "NHD")
        wrapper.plan(indptr, indices, last, hq, hkv, HEAD_DIM, PAGE,
                     q_data_type=torch.bfloat16, kv_data_type=_FP8_DTYPE)
    except Exception as e:  # an older or newer API: the impl reports it
        return e
    return wrapper


def _flashinfer_run(s):
    wrapper = s["flashinfer"]
    if isinstance(wrapper, Exception):
        raise RuntimeError(f"flashinfer plan failed: {wrapper}")
    k_scale, v_scale = s["flashinfer_scales"]
    return wrapper.run(s["q"], (s["k_cache"], s["v_cache"]), k_scale=k_scale, v_scale=v_scale)


def _impls(q_len, scheme=None, flashinfer=False):
    from torch.nn.attention import SDPBackend
    note = "" if scheme is None else "bf16 dense KV"
    impls = [Impl("hpc_ops", _ours(q_len, scheme), baseline=False),
             Impl("sdpa_cudnn", _sdpa(SDPBackend.CUDNN_ATTENTION), note=note),
             Impl("sdpa_flash", _sdpa(SDPBackend.FLASH_ATTENTION), note=note),
             Impl("sdpa_efficient", _sdpa(SDPBackend.EFFICIENT_ATTENTION), note=note)]
    if flashinfer and _flashinfer_available():
        impls.append(Impl("flashinfer_fp8", _flashinfer_run, note="fp8 paged KV"))
    return impls


def _bytes(lens, hq, hkv, q_len, scheme, q_fp8) -> int:
    tokens, rows = sum(lens), len(lens) * q_len
    kv = tokens * hkv * HEAD_DIM * 2 * (BF16 if scheme is None else FP8)
    if scheme == QK_TOKEN_HEAD:
        kv += tokens * hkv * F32 + hkv * F32            # k per token and head, v per head
    elif scheme is not None:
        kv += 2 * F32
    q = rows * hq * HEAD_DIM * (FP8 if q_fp8 else BF16)
    if q_fp8:
        q += rows * hq * F32 if scheme == QK_TOKEN_HEAD else F32
    return kv + q + rows * hq * HEAD_DIM * BF16


def cases(quick: bool) -> list:
    """Per length grid: the BF16 case, then its FP8 variants (so that a time
    limit cuts whole grids, not every FP8 case)."""
    out = []
    for kind, grid in (("uniform", UNIFORM), ("skewed", SKEWED)):
        for label, lens in grid:
            for name, scheme, q_fp8, labels, heads, quick_labels in VARIANTS:
                if (labels is not None and label not in labels) or \
                        (quick and label not in quick_labels):
                    continue
                for hq, hkv in heads:
                    if quick and (hq, hkv) != (64, 8):
                        continue
                    for q_len in ((1,) if quick else (1, 4)):
                        # FlashInfer's FP8 decode: per-tensor scales, bf16 q, q_len 1.
                        use_fi = scheme == PER_TENSOR and not q_fp8 and q_len == 1
                        params = {"lens": label, "hq": hq, "hkv": hkv, "q_len": q_len,
                                  "kv": "bf16" if scheme is None else "fp8",
                                  "scheme": scheme or "", "q_dtype": "fp8" if q_fp8 else "bf16"}
                        out.append(Case(
                            family="attention", op=f"decode_{name}_q{q_len}",
                            label=f"{label} {hq}/{hkv}", params=params,
                            bytes=_bytes(lens, hq, hkv, q_len, scheme, q_fp8),
                            make_inputs=_inputs(lens, hq, hkv, q_len, scheme, q_fp8, use_fi),
                            impls=lambda q_len=q_len, scheme=scheme, use_fi=use_fi:
                                _impls(q_len, scheme, use_fi),
                            reference=_reference(q_len), check=_check, config_dims=None,
                            config_text=lambda sms, kind=kind, lens=lens: f"{kind} B={len(lens)}",
                            plot_group=f"{kind} {hq}/{hkv} q{q_len}"
                                       + ("" if scheme is None else f" {name}"),
                            plot_x=float(sum(lens)), plot_xlabel="total KV tokens"))
    return out
