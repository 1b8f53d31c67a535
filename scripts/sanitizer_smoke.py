# SPDX-License-Identifier: Apache-2.0
"""Calls every operator once on small odd shapes (ragged widths, partial 1x128
groups, masked experts with empty and full counts, strided rows) and checks the
results, so compute-sanitizer (memcheck, racecheck) sees every kernel variant
and path quickly. Exit code 0 when every result matches its reference.

Usage: python scripts/sanitizer_smoke.py [FAMILY ...] (default: every built
family; e.g. `rope attention` to check only those)."""
import itertools
import os
import sys

import torch

import hpc_ops

torch.manual_seed(0)
dev = "cuda"
BF16 = torch.bfloat16
failures = []
WANTED = set(sys.argv[1:])


def runs(family):
    """Whether this run checks `family`: built, and asked for (or none named)."""
    return family in hpc_ops.built_families() and (not WANTED or family in WANTED)


def check(name, got, ref, tol=3e-2, floor=1e-2):
    err = ((got.float() - ref).abs() / (ref.abs() + floor)).max().item() if got.numel() else 0.0
    if not err <= tol:
        failures.append(f"{name}: error {err}")


def rms_ref(x, w, eps=1e-6):
    xf = x.float()
    return xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * w.float()


if runs("norm"):
    for hidden in (8, 520, 8200, 20000):  # 1, 2, 8 and 16 vectors per thread
        for rows in (1, 7):
            buf = torch.randn(rows, hidden + 8, dtype=BF16, device=dev)
            x = buf[:, :hidden]  # strided rows
            w = torch.randn(hidden, dtype=BF16, device=dev)
            check(f"rms_norm {rows}x{hidden}", hpc_ops.rms_norm(x, w), rms_ref(x, w))
            res = torch.randn(rows, hidden, dtype=BF16, device=dev)
            r_new = (x.float() + res.float()).to(BF16)
            q, r_out, s = hpc_ops.fused_add_rms_norm(x, res, w, quant="per_group")
            check(f"add_rms_norm residual {rows}x{hidden}", r_out, r_new.float())
            deq = q.float() * s.repeat_interleave(128, dim=1)[:, :hidden]
            check(f"add_rms_norm fp8 {rows}x{hidden}", deq, rms_ref(r_new, w), tol=0.15)
            q, s = hpc_ops.rms_norm(x, w, quant="per_token")
            check(f"rms_norm per_token {rows}x{hidden}", q.float() * s, rms_ref(x, w), tol=0.15)

if runs("activation"):
    for c in (8, 520, 2048):
        x = torch.randn(7, 2 * c, dtype=BF16, device=dev)
        g, u = x[:, :c].float(), x[:, c:].float()
        check(f"silu_and_mul {c}", hpc_ops.silu_and_mul(x), torch.nn.functional.silu(g) * u)
        q, s = hpc_ops.gelu_tanh_and_mul(x, quant="per_tensor", scale=torch.ones(1, device=dev))
        gelu = torch.nn.functional.gelu(g, approximate="tanh")
        check(f"gelu fp8 {c}", q.float() * s, gelu * u, 0.15)
        xm = torch.randn(4, 9, 2 * c, dtype=BF16, device=dev)
        counts = torch.tensor([0, 9, 3, 20], dtype=torch.int32, device=dev)
        out = torch.zeros(4, 9, c, dtype=BF16, device=dev)
        hpc_ops.silu_and_mul_masked(xm, counts, out=out)
        ref = torch.nn.functional.silu(xm[..., :c].float()) * xm[..., c:].float()
        for e, n in enumerate([0, 9, 3, 9]):
            check(f"masked {c} expert {e}", out[e, :n], ref[e, :n])
            if n < 9 and out[e, n:].abs().max().item() != 0:
                failures.append(f"masked {c} expert {e}: rows past the count were written")

if runs("quantization"):
    for dtype in (BF16, torch.float16, torch.float32):
        x = torch.randn(7, 520, dtype=dtype, device=dev) * 10
        for quant in ("per_tensor", "per_token", "per_group"):
            q, s = hpc_ops.quantize_fp8(x, quant)
            scale = s.repeat_interleave(128, dim=1)[:, :520] if quant == "per_group" else s
            check(f"quantize {dtype} {quant}", q.float() * scale, x.float(), tol=0.15)

if runs("attention"):
    # Decode attention: ragged lengths (0, 1, page + 1, a cut long request), shuffled
    # pages of 16 tokens, GQA 4 and 16, q_len 1 to 8; the reference is float32 per
    # request. BF16 caches: GQA 4 and, at 64 rows, the wgmma kernel. FP8 caches with
    # per-token k and per-head v scales (tiles by cp.async): an fp8 q at 4 and 8
    # query rows, a bf16 q at 16 and 20 (both tokens-on-M variants and the mma.sync
    # rows-on-M kernel), the wgmma kernel at 48 rows (fp8 q) and 64. Per-tensor
    # scales (tiles by TMA): 8 rows (fp8 q), 16, and 128 on the wgmma kernel.
    FP8 = torch.float8_e4m3fn
    # (cache, q_len, lengths, group, fp8 q)
    for fp8, q_len, lens, group, q_fp8 in (
            (False, 1, [0, 1, 17, 700], 4, False), (False, 2, [2, 65, 3000], 4, False),
            (False, 4, [4, 65, 700], 16, False),
            (True, 1, [0, 1, 17, 700], 4, True), (True, 2, [2, 65, 3000], 4, True),
            (True, 4, [4, 65, 3000], 4, False), (True, 5, [9, 300], 4, False),
            (True, 3, [3, 130], 16, True), (True, 4, [4, 65, 700], 16, False),
            ("per_tensor", 8, [8, 300], 16, False),
            ("per_tensor", 2, [2, 65, 3000], 4, True), ("per_tensor", 4, [0, 4, 17, 700], 4, False)):
        hkv, page = 2, 16
        pages = [(n + page - 1) // page for n in lens]
        kc = torch.randn(sum(pages) + 3, page, hkv, 128, dtype=BF16, device=dev)
        vc = torch.randn_like(kc)
        perm = torch.randperm(sum(pages) + 3, device=dev)[:sum(pages)].to(torch.int32)
        table = torch.full((len(lens), max(pages) + 1), -1, dtype=torch.int32, device=dev)
        at = 0
        for b, n in enumerate(pages):
            table[b, :n] = perm[at:at + n]
            at += n
        kv_lens = torch.tensor(lens, dtype=torch.int32, device=dev)
        q = torch.randn(len(lens) * q_len, hkv * group, 128, dtype=BF16, device=dev)
        if fp8 == "per_tensor":
            # fixed scales (torch's multi-dim amax trips racecheck inside torch itself)
            k_scale, v_scale, q_scale = (torch.tensor(c / 448, device=dev) for c in (6.0, 7.0, 8.0))
            kq = (kc.float() / k_scale).to(FP8)
            vq = (vc.float() / v_scale).to(FP8)
            qq = (q.float() / q_scale).to(FP8) if q_fp8 else q
            out = hpc_ops.decode_attention(qq, kq, vq, table, kv_lens, q_len=q_len,
                                           scheme="per_tensor", q_scale=q_scale if q_fp8 else None,
                                           k_scale=k_scale, v_scale=v_scale)
            kc, vc = kq.float() * k_scale, vq.float() * v_scale
            q = qq.float() * q_scale if q_fp8 else q
        elif fp8:
            k_scale = kc.float().abs().amax(-1) / 448 + 1e-6            # [pages, page, Hkv]
            # [Hkv]; fixed (torch's multi-dim amax trips racecheck inside torch itself)
            v_scale = torch.tensor([8.0, 16.0], device=dev) / 448
            q_scale = q.float().abs().amax(-1) / 448 + 1e-6             # [rows, Hq]
            kq = (kc.float() / k_scale[..., None]).to(FP8)
            vq = (vc.float() / v_scale[:, None]).to(FP8)
            qq = (q.float() / q_scale[..., None]).to(FP8) if q_fp8 else q
            out = hpc_ops.decode_attention(qq, kq, vq, table, kv_lens, q_len=q_len,
                                           scheme="qk_token_head__v_head",
                                           q_scale=q_scale if q_fp8 else None,
                                           k_scale=k_scale, v_scale=v_scale)
            kc = (kq.float() * k_scale[..., None])
            vc = (vq.float() * v_scale[:, None])
            q = qq.float() * q_scale[..., None] if q_fp8 else q
        else:
            out = hpc_ops.decode_attention(q, kc, vc, table, kv_lens, q_len=q_len)
        for b, n in enumerate(lens):
            if n == 0:
                continue
            idx = table[b, :pages[b]].long()
            k = kc[idx].reshape(-1, hkv, 128)[:n].float().repeat_interleave(group, 1)
            v = vc[idx].reshape(-1, hkv, 128)[:n].float().repeat_interleave(group, 1)
            qb = q[b * q_len:(b + 1) * q_len].float()
            logits = torch.einsum("qhd,khd->hqk", qb, k) / 128 ** 0.5
            visible = torch.arange(n, device=dev).view(1, n) <= (n - q_len + torch.arange(q_len, device=dev)).view(-1, 1)
            p = torch.softmax(logits.masked_fill(~visible, float("-inf")), -1)
            kind = {False: "bf16", True: "fp8 qk_token_head", "per_tensor": "fp8 per_tensor"}[fp8]
            check(f"decode_attention {kind} q_len {q_len} request {b}",
                  out[b * q_len:(b + 1) * q_len], torch.einsum("hqk,khd->qhd", p, v), tol=0.04,
                  floor=0.5)  # P is bf16 / fp16 in P @ V

if runs("rope"):
    # RoPE + QK norm + KV write: two requests (5 new rows over 3 cached, 1 decode
    # row), a padding row, head dims 64/128/256, NeoX with norm and partial
    # interleaved rotation, BF16 and FP8 (per-token-head k scales, fp8 q) caches;
    # each with both kernels (HPC_OPS_ROPE_KERNEL forces one): the per-row
    # kernel and the streaming one (a producer warp, bulk copies, mbarriers).
    FP8 = torch.float8_e4m3fn
    for kernel, (d, style, rot, fp8) in itertools.product(
            ("per_row", "stream"), ((64, "neox", 64, False), (128, "interleaved", 64, False),
                                    (256, "neox", 256, True), (128, "neox", 128, True))):
        os.environ["HPC_OPS_ROPE_KERNEL"] = kernel
        hq, hkv, page, rows = 6, 2, 16, 7
        kv_lens = torch.tensor([8, 20], dtype=torch.int32, device=dev)
        cu = torch.tensor([0, 5, 6], dtype=torch.int32, device=dev)
        table = torch.tensor([[3, -1], [0, 2]], dtype=torch.int32, device=dev)
        q = torch.randn(rows, hq, d, dtype=BF16, device=dev)
        k = torch.randn(rows, hkv, d, dtype=BF16, device=dev)
        v = torch.randn(rows, hkv, d, dtype=BF16, device=dev)
        pos = torch.arange(64, device=dev, dtype=torch.float32)[:, None]
        freq = 1e4 ** (-torch.arange(rot // 2, device=dev) / (rot // 2))
        cos_sin = torch.cat([torch.cos(pos * freq), torch.sin(pos * freq)], -1)
        wq = torch.rand(d, device=dev) + 0.5
        wk = torch.rand(d, device=dev) + 0.5
        kc = torch.zeros(4, page, hkv, d, dtype=FP8 if fp8 else BF16, device=dev)
        vc = torch.zeros_like(kc)
        kw = {}
        if fp8:
            kw = dict(kv_scheme="qk_token_head__v_head", v_scale=torch.tensor([0.01, 0.02], device=dev),
                      k_scale=torch.zeros(4, page, hkv, device=dev), q_out_dtype=FP8)
        out = hpc_ops.rope_qk_norm_kv_write(q, k, v, cos_sin, kc, vc, table, kv_lens, cu,
                                            rotary_dim=rot, style=style, q_norm_weight=wq,
                                            k_norm_weight=wk, **kw)
        qo, qs = out if fp8 else (out, None)

        def rotate(x, p, w):  # norm (weight included), then rotation
            x = x.float()
            x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w
            c, s_ = cos_sin[p, : rot // 2][:, None], cos_sin[p, rot // 2:][:, None]
            r, rest = x[..., :rot], x[..., rot:]
            if style == "neox":
                a, b = r[..., : rot // 2], r[..., rot // 2:]
                r = torch.cat([a * c - b * s_, b * c + a * s_], -1)
            else:
                a, b = r[..., 0::2], r[..., 1::2]
                r = torch.stack([a * c - b * s_, b * c + a * s_], -1).flatten(-2)
            return torch.cat([r, rest], -1)

        positions = torch.tensor([3, 4, 5, 6, 7, 19], device=dev)
        q_ref = rotate(q[:6], positions, wq)
        got = qo[:6].float() * (qs[:6, :, None] if fp8 else 1)
        check(f"rope {kernel} q d={d} {style} fp8={fp8}", got, q_ref, tol=0.15 if fp8 else 3e-2)
        check(f"rope padding row d={d}", qo[6:].float(), torch.zeros_like(qo[6:].float()))
        k_ref = rotate(k[:6], positions, wk)
        for r, (pg, slot) in enumerate([(3, 3), (3, 4), (3, 5), (3, 6), (3, 7), (2, 3)]):
            kk = kc[pg, slot].float() * (kw["k_scale"][pg, slot][:, None] if fp8 else 1)
            vv = vc[pg, slot].float() * (kw["v_scale"][:, None] if fp8 else 1)
            check(f"rope k row {r} d={d} fp8={fp8}", kk, k_ref[r], tol=0.15 if fp8 else 3e-2)
            check(f"rope v row {r} d={d} fp8={fp8}", vv, v[r].float(), tol=0.15 if fp8 else 3e-2)

    # 3000 rows of a prefill: every streaming CTA refills its stages several
    # times; both kernels must give the same bits.
    rows, hq, hkv, d, page = 3000, 6, 2, 128, 16
    q = torch.randn(rows, hq, d, dtype=BF16, device=dev)
    k = torch.randn(rows, hkv, d, dtype=BF16, device=dev)
    v = torch.randn(rows, hkv, d, dtype=BF16, device=dev)
    kv_lens = torch.tensor([3100], dtype=torch.int32, device=dev)
    cu = torch.tensor([0, rows - 2], dtype=torch.int32, device=dev)  # 2 padding rows
    table = torch.randperm(200, device=dev).to(torch.int32)[None]
    pos = torch.arange(4096, device=dev, dtype=torch.float32)[:, None]
    freq = 1e4 ** (-torch.arange(d // 2, device=dev) / (d // 2))
    cos_sin = torch.cat([torch.cos(pos * freq), torch.sin(pos * freq)], -1)
    outs = []
    for kernel in ("per_row", "stream"):
        os.environ["HPC_OPS_ROPE_KERNEL"] = kernel
        kc = torch.zeros(200, page, hkv, d, dtype=BF16, device=dev)
        vc = torch.zeros_like(kc)
        qo = hpc_ops.rope_qk_norm_kv_write(q, k, v, cos_sin, kc, vc, table, kv_lens, cu)
        outs.append((qo, kc, vc))
    for name, a, b in zip(("q_out", "k_cache", "v_cache"), outs[0], outs[1]):
        if not torch.equal(a.view(torch.int16), b.view(torch.int16)):
            failures.append(f"rope stream vs per_row {name}: different bits")
    del os.environ["HPC_OPS_ROPE_KERNEL"]

if runs("gemm"):
    # Every layout and scaling once, ragged groups (0, 1, 19 rows), N and K tails.
    FP8 = torch.float8_e4m3fn

    def unit_scales(scaling, x_rows, n, k):
        """Scales of 1 in the shapes `scaling` takes (3 groups)."""
        if scaling == "per_tensor":
            return dict(x_scale=torch.ones(1, device=dev), w_scale=torch.ones(3, device=dev))
        if scaling == "per_row":
            return dict(x_scale=torch.ones(x_rows, device=dev), w_scale=torch.ones(3, n, device=dev))
        if scaling == "block":
            return dict(x_scale=torch.ones(*x_rows, k // 128, device=dev),
                        w_scale=torch.ones(3, n // 128, k // 128, device=dev))
        return {}

    counts = [0, 1, 19]
    for scaling, n, k in ((None, 144, 208), ("per_tensor", 144, 208), ("per_row", 256, 128),
                          ("block", 256, 256)):
        dt = BF16 if scaling is None else FP8
        w = (torch.randn(3, n, k, device=dev) * 0.1).to(dt)
        for layout in ("contiguous", "masked", "gathered"):
            src = 11
            if layout == "masked":
                x = torch.randn(3, 20, k, device=dev).to(dt)
                rows, kw = 20, dict(rows_per_group=torch.tensor(counts, dtype=torch.int32,
                                                                device=dev))
                x_rows = (3, 20)
            else:
                cu = torch.tensor([0, 0, 1, 20], dtype=torch.int32, device=dev)
                kw = dict(cu_seqlens=cu)
                if layout == "gathered":
                    x = torch.randn(src, k, device=dev).to(dt)
                    kw["row_index"] = torch.randint(0, src, (21,), dtype=torch.int32, device=dev)
                    x_rows = (src,)
                else:
                    x = torch.randn(21, k, device=dev).to(dt)
                    x_rows = (21,)
            kw.update(unit_scales(scaling, x_rows, n, k))
            for tile_hint in (1, 100):
                y = hpc_ops.grouped_gemm(x, w, layout=layout, scaling=scaling,
                                         expected_rows_per_group=tile_hint, **kw)
                for g, c in enumerate(counts):
                    if layout == "masked":
                        xg, yg = x[g, :c], y[g, :c]
                    else:
                        lo, hi = int(kw["cu_seqlens"][g]), int(kw["cu_seqlens"][g + 1])
                        xg = x[kw["row_index"][lo:hi].long()] if layout == "gathered" else x[lo:hi]
                        yg = y[lo:hi]
                    check(f"grouped_gemm {layout} {scaling} g{g} tile_hint={tile_hint}", yg,
                          xg.float() @ w[g].float().T, tol=3e-2, floor=0.5)

    # Whole 128-row tiles (the TMA stores of y; block scales with the rows on
    # wgmma's M side) next to partial ones, over 9 FP8 k-tiles (K = 1152);
    # contiguous and masked. 200 rows: a last tile whose first 64 rows go by
    # TMA and the rest by the threads when the rows are on M.
    counts, k = [130, 0, 200], 1152
    for scaling in (None, "per_row", "block"):
        dt = BF16 if scaling is None else FP8
        n = 256 if scaling == "block" else 144  # block scales need N % 128 == 0
        w = (torch.randn(3, n, k, device=dev) * 0.1).to(dt)
        for layout in ("contiguous", "masked"):
            if layout == "masked":
                x = torch.randn(3, 200, k, device=dev).to(dt)
                kw = dict(rows_per_group=torch.tensor(counts, dtype=torch.int32, device=dev))
                x_rows = (3, 200)
            else:
                x = torch.randn(sum(counts), k, device=dev).to(dt)
                kw = dict(cu_seqlens=torch.tensor([0, 130, 130, 330], dtype=torch.int32,
                                                  device=dev))
                x_rows = (sum(counts),)
            kw.update(unit_scales(scaling, x_rows, n, k))
            y = hpc_ops.grouped_gemm(x, w, layout=layout, scaling=scaling,
                                     expected_rows_per_group=128, **kw)
            for g, c in enumerate(counts):
                if layout == "masked":
                    xg, yg = x[g, :c], y[g, :c]
                else:
                    lo = sum(counts[:g])
                    xg, yg = x[lo:lo + c], y[lo:lo + c]
                check(f"grouped_gemm {layout} {scaling} whole tiles g{g}", yg,
                      xg.float() @ w[g].float().T, tol=3e-2, floor=0.5)

    # Router GEMM: a split-K launch (the arrival counters and partial tiles)
    # and an unsplit one, 2 and 3 parts, tails of M, N and K; the weight split.
    for m, n, k in ((3, 144, 208), (130, 256, 4096)):
        w = torch.randn(n, k, device=dev) * 0.02
        x = torch.randn(m, k, device=dev).to(BF16)
        for parts in (2, 3):
            y = hpc_ops.router_gemm(x, hpc_ops.split_router_weight(w, parts))
            check(f"router_gemm m={m} n={n} k={k} parts={parts}", y, x.float() @ w.T,
                  tol=1e-3, floor=0.1)  # outputs ~1; two parts are off by ~1e-5

if runs("sampling"):
    # One CTA and multi-CTA rows (8 and 16 CTAs), a row stride wider than V, a
    # vocabulary whose slices exceed the shared-memory cache (re-read path),
    # every mode.
    I32, I64 = torch.int32, torch.int64
    for vocab, dtype, pad in ((1000, torch.float32, 0), (50257, BF16, 3), (500000, torch.float32, 0)):
        rows = 3
        logits = (torch.randn(rows, vocab + pad, device=dev) * 3).to(dtype)[:, :vocab]
        seen = torch.randint(-2 ** 31, 2 ** 31, (rows, (vocab + 31) // 32), dtype=I32, device=dev)
        counts = torch.randint(0, 3, (rows, vocab), dtype=I32, device=dev)
        seeds = torch.arange(rows, dtype=I64, device=dev)
        common = dict(repetition_penalty=1.1, presence_penalty=0.2, frequency_penalty=0.1,
                      seen_mask=seen, token_counts=counts, seeds=seeds, offsets=seeds + 5)
        argmax = hpc_ops.sample(logits, temperature=0.0, **common)
        top1 = hpc_ops.sample(logits, temperature=0.7, top_k=1, **common)
        if not torch.equal(argmax, top1):
            failures.append(f"sample V={vocab}: top_k=1 differs from greedy")
        tok, lp = hpc_ops.sample(logits, temperature=0.8, top_k=50, top_p=0.9, min_p=0.01,
                                 return_logprobs=True, **common)
        if not bool(((tok >= 0) & (tok < vocab)).all() and lp.isfinite().all()):
            failures.append(f"sample V={vocab}: tokens {tok.tolist()} logprobs {lp.tolist()}")
        # Temperature only on <= 4 rows: the wide cluster split, with the logprob pass.
        tok, lp = hpc_ops.sample(logits, temperature=0.8, return_logprobs=True, **common)
        if not bool(((tok >= 0) & (tok < vocab)).all() and lp.isfinite().all()):
            failures.append(f"sample V={vocab} temperature only: {tok.tolist()} {lp.tolist()}")
        k = 2
        target = (torch.randn(rows, k + 1, vocab, device=dev) * 3).to(dtype)
        drafts = torch.randint(0, vocab, (rows, k), dtype=I32, device=dev)
        probs = torch.softmax(torch.randn(rows, k, vocab, device=dev), dim=-1)
        for dp in (probs, None):
            acc, toks = hpc_ops.verify_speculative(drafts, dp, target, temperature=0.9, top_k=20,
                                                   seeds=seeds, offsets=seeds)
            last = toks.gather(1, acc.long()[:, None])
            if not bool(((acc >= 0) & (acc <= k)).all() and (last >= 0).all()):
                failures.append(f"verify_speculative V={vocab}: {acc.tolist()} {toks.tolist()}")
        hpc_ops.update_seen_mask(seen, tok)
        hpc_ops.update_token_counts(counts, tok)

torch.cuda.synchronize()
if runs("comm"):
    # The sanitizer runs kernels one at a time, and the ranks of a local group
    # wait for each other, so one rank by default: both paths' addressing
    # (pushes, waits, resets, the gather) still runs, into its own buffer.
    # HPC_OPS_SANITIZER_COMM_WORLD=2 tries two ranks (with a 5 s timeout).
    from hpc_ops.comm import TpCommunicator, fused_allreduce_residual_rmsnorm
    world = int(os.environ.get("HPC_OPS_SANITIZER_COMM_WORLD", "1"))
    for path in ("oneshot", "twoshot"):
        os.environ["HPC_OPS_ALLREDUCE_PATH"] = path
        comms = TpCommunicator.local_group(world, hidden=520, max_tokens=9, timeout_ms=5000)
        streams = [torch.cuda.Stream() for _ in comms]
        for rows in (1, 9, 4):
            xs = [torch.randn(rows, 520, dtype=BF16, device=dev) for _ in comms]
            res = torch.randn(rows, 520, dtype=BF16, device=dev)
            w = torch.randn(520, dtype=BF16, device=dev)
            results = []
            for r, c in enumerate(comms):
                streams[r].wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(streams[r]):
                    results.append(fused_allreduce_residual_rmsnorm(xs[r], res, w, 1e-6, c))
            torch.cuda.synchronize()
            total = sum(x.float() for x in xs).to(BF16)
            r_new = (total.float() + res.float()).to(BF16)
            for r, (out, r_out) in enumerate(results):
                check(f"allreduce {path} rank {r} residual {rows}", r_out, r_new.float())
                check(f"allreduce {path} rank {r} out {rows}", out, rms_ref(r_new, w))
        errors = [c.device_error() for c in comms]
        if any(errors):
            failures.append(f"allreduce {path}: {errors}")
    os.environ.pop("HPC_OPS_ALLREDUCE_PATH")

print("\n".join(failures) if failures else "all sanitizer smoke checks matched")
print(f"{0 if failures else 1} passed, {1 if failures else 0} failed")
sys.exit(1 if failures else 0)
