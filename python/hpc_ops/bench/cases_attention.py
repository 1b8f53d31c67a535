# SPDX-License-Identifier: Apache-2.0
"""Family "attention": paged decode attention (BF16 KV) against
F.scaled_dot_product_attention (cuDNN and FlashAttention backends) on a dense
KV holding the same data, padded to the longest request where lengths differ.

Bytes counted: K and V of every request's tokens (kv_len x Hkv x 128 x 2 x 2)
plus q and out; the plan and merge traffic is overhead, not counted.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

import hpc_ops

from .common import BF16, Case, Check, Impl

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


def _inputs(lens, hq, hkv, q_len):
    """Random KV in shuffled pages (ours) and the same data dense, padded (baselines)."""
    def make(slot):
        b = len(lens)
        lmax = max(lens)
        pages_per = [(n + PAGE - 1) // PAGE for n in lens]
        total_pages = sum(pages_per)
        k_dense = torch.randn(b, hkv, lmax, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
        v_dense = torch.randn(b, hkv, lmax, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
        perm = torch.randperm(total_pages, device="cuda").to(torch.int32)
        page_table = torch.zeros(b, max(pages_per), dtype=torch.int32, device="cuda")
        k_cache = torch.empty(total_pages, PAGE, hkv, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
        v_cache = torch.empty_like(k_cache)
        at = 0
        for i, n in enumerate(lens):
            ids = perm[at:at + pages_per[i]]
            at += pages_per[i]
            page_table[i, :pages_per[i]] = ids
            padded = pages_per[i] * PAGE
            kd = torch.zeros(hkv, padded, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
            vd = torch.zeros_like(kd)
            kd[:, :n] = k_dense[i, :, :n]
            vd[:, :n] = v_dense[i, :, :n]
            k_cache[ids.long()] = kd.view(hkv, pages_per[i], PAGE, HEAD_DIM).permute(1, 2, 0, 3)
            v_cache[ids.long()] = vd.view(hkv, pages_per[i], PAGE, HEAD_DIM).permute(1, 2, 0, 3)
        kv_lens = torch.tensor(lens, dtype=torch.int32, device="cuda")
        q = torch.randn(b * q_len, hq, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
        plan = hpc_ops.plan_decode_attention(kv_lens, num_q_heads=hq, num_kv_heads=hkv, q_len=q_len)
        # Baselines: q [B, Hq, q_len, D]; a boolean mask only where it matters.
        q_dense = q.view(b, q_len, hq, HEAD_DIM).transpose(1, 2)
        mask = None
        if q_len > 1 or len(set(lens)) > 1:
            pos = torch.arange(lmax, device="cuda")
            lens_t = kv_lens.long().view(b, 1, 1, 1)
            last = lens_t - q_len + torch.arange(q_len, device="cuda").view(1, 1, q_len, 1)
            mask = pos.view(1, 1, 1, lmax) <= last
        return {"q": q, "k_cache": k_cache, "v_cache": v_cache, "page_table": page_table,
                "kv_lens": kv_lens, "plan": plan, "q_dense": q_dense, "k_dense": k_dense,
                "v_dense": v_dense, "mask": mask}
    return make


def _reference(q_len):
    """float32, one request at a time over its own tokens (no padding)."""
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


def _ours(q_len):
    def run(s):
        return hpc_ops.decode_attention(s["q"], s["k_cache"], s["v_cache"], s["page_table"],
                                        s["kv_lens"], q_len=q_len, plan=s["plan"])
    return run


def _sdpa(backend):
    from torch.nn.attention import sdpa_kernel

    def run(s):
        with sdpa_kernel([backend]):
            o = F.scaled_dot_product_attention(s["q_dense"], s["k_dense"], s["v_dense"],
                                               attn_mask=s["mask"], enable_gqa=True)
        return o.transpose(1, 2).reshape(-1, o.shape[1], HEAD_DIM)
    return run


def _impls(q_len):
    from torch.nn.attention import SDPBackend
    return [Impl("hpc_ops", _ours(q_len), baseline=False),
            Impl("sdpa_cudnn", _sdpa(SDPBackend.CUDNN_ATTENTION)),
            Impl("sdpa_flash", _sdpa(SDPBackend.FLASH_ATTENTION)),
            Impl("sdpa_efficient", _sdpa(SDPBackend.EFFICIENT_ATTENTION))]


def cases(quick: bool) -> list:
    out = []
    for kind, grid in (("uniform", UNIFORM), ("skewed", SKEWED)):
        for label, lens in grid:
            if quick and label not in QUICK:
                continue
            for hq, hkv in HEADS:
                if quick and (hq, hkv) != (64, 8):
                    continue
                for q_len in ((1,) if quick else (1, 4)):
                    kv_bytes = sum(lens) * hkv * HEAD_DIM * BF16 * 2
                    qo_bytes = 2 * len(lens) * q_len * hq * HEAD_DIM * BF16
                    out.append(Case(
                        family="attention", op=f"decode_bf16_q{q_len}", label=f"{label} {hq}/{hkv}",
                        params={"lens": label, "hq": hq, "hkv": hkv, "q_len": q_len},
                        bytes=kv_bytes + qo_bytes, make_inputs=_inputs(lens, hq, hkv, q_len),
                        impls=lambda q_len=q_len: _impls(q_len), reference=_reference(q_len),
                        check=_check, config_dims=None,
                        config_text=lambda sms, kind=kind, lens=lens: f"{kind} B={len(lens)}",
                        plot_group=f"{kind} {hq}/{hkv} q{q_len}", plot_x=float(sum(lens)),
                        plot_xlabel="total KV tokens"))
    return out
