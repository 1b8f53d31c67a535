# SPDX-License-Identifier: Apache-2.0
"""RoPE + optional per-head QK RMSNorm + paged KV-cache write (BF16 or FP8)
in one kernel: what runs before attention in every layer."""
from __future__ import annotations

from typing import Optional, Union

import torch

from . import _C, _ops
from ._tensor import FP8, as_optional_tensor, as_tensor, choice, desc, desc_or_none, direct_call_ok
from ._tensor import int_arg, stream_of
from .attention import Fp8Scheme, _scheme_code

_STYLES = {"neox": 0, "interleaved": 1}
_NORM_ORDERS = {"norm_then_rope": 0, "rope_then_norm": 1}



def split_qkv(qkv, num_q_heads: int, num_kv_heads: int, head_dim: int):
    """Views q ``[rows, Hq, D]``, k and v ``[rows, Hkv, D]`` of a packed
    ``qkv [rows, (Hq + 2 * Hkv) * D]`` (no copy)."""
    op = "split_qkv"
    qkv = as_tensor(qkv, op, "qkv")
    width = (num_q_heads + 2 * num_kv_heads) * head_dim
    if qkv.dim() != 2 or qkv.shape[1] != width:
        raise ValueError(f"hpc_ops.{op}: qkv must be [rows, (num_q_heads + 2 * num_kv_heads) * "
                         f"head_dim] = [rows, {width}], got shape {list(qkv.shape)}")
    q_end = num_q_heads * head_dim
    k_end = q_end + num_kv_heads * head_dim
    q = qkv[:, :q_end].unflatten(1, (num_q_heads, head_dim))
    k = qkv[:, q_end:k_end].unflatten(1, (num_kv_heads, head_dim))
    v = qkv[:, k_end:].unflatten(1, (num_kv_heads, head_dim))
    return q, k, v


def rope_qk_norm_kv_write(q, k, v, cos_sin_cache, k_cache, v_cache, page_table, kv_lens,
                          cu_seqlens, *, positions=None, rotary_dim: Optional[int] = None,
                          style: str = "neox", q_norm_weight=None, k_norm_weight=None,
                          norm_order: str = "norm_then_rope", eps: float = 1e-6,
                          kv_scheme: Union[Fp8Scheme, str, None] = None, k_scale=None,
                          v_scale=None, q_out_dtype: torch.dtype = torch.bfloat16,
                          q_scale=None, out_q=None):
    """Rotate q and k (optionally RMS-normalize each head first or after),
    write k and v into the paged cache, return q.

    Rows are this step's tokens of B requests laid end to end (prefill chunks
    and decode tokens mixed): request b owns rows ``cu_seqlens[b] ..
    cu_seqlens[b+1] - 1``; its row i sits at cache position
    ``p = kv_lens[b] - n_b + i`` (n_b = its row count; kv_lens counts this
    step's tokens, as decode_attention's does) and is rotated by position
    ``positions[row]`` when given, else p.

    Parameters
    ----------
    q, k, v : bfloat16 ``[rows, Hq, D]``, ``[rows, Hkv, D]``, ``[rows, Hkv, D]``,
        last dim contiguous, any other strides (views of a packed qkv: see
        :func:`split_qkv`). D in {64, 128, 256}. Passing ``k=None, v=None``
        makes q the packed ``qkv [rows, (Hq + 2 * Hkv) * D]`` (Hkv and D
        taken from k_cache).
    cos_sin_cache : float32 or bfloat16 ``[max_position, rotary_dim]``: cos of
        the rotary_dim/2 frequencies, then their sin.
    k_cache, v_cache : ``[num_pages, page_size, Hkv, D]``, both bfloat16 or
        both float8_e4m3fn, last dim contiguous, any other strides (NHD, HND,
        or views of one interleaved allocation); any page_size >= 1.
    page_table : int32 ``[B, max_pages]`` (row stride may exceed max_pages).
    kv_lens : int32 ``[B]``; cu_seqlens : int32 ``[B + 1]``, starting at 0,
        non-decreasing, ``cu_seqlens[B] <= rows``.
    positions : optional int32 or int64 ``[rows]``: rotation positions.
    rotary_dim : rotated leading dims of each head (default D); a multiple of
        16 for ``"neox"``, of 8 for ``"interleaved"``; the rest pass through.
    style : ``"neox"`` (pairs i, i + rotary_dim/2) or ``"interleaved"``
        (GPT-J: pairs 2i, 2i+1).
    q_norm_weight, k_norm_weight : optional ``[D]`` bfloat16 or float32, both
        or neither: per-head RMSNorm ``x * rsqrt(mean(x^2) + eps) * w``,
        before the rotation (``norm_order="norm_then_rope"``, Qwen3) or after
        (``"rope_then_norm"``).
    kv_scheme, k_scale, v_scale : FP8 caches only, float32 dequantization
        scales (real = fp8 * scale) as decode_attention reads them:
        ``per_tensor`` / ``q_token_head__kv_tensor``: k_scale and v_scale one
        element each (inputs; k and v are stored as ``k / k_scale``);
        ``qk_token_head__v_head``: k_scale ``[num_pages, page_size, Hkv]`` is
        an output (``amax(k head) / 448`` written at the token's slot, like
        the cache) and v_scale ``[Hkv]`` an input.
    q_out_dtype : bfloat16, or float8_e4m3fn (FP8 caches only) with q_scale:
        ``per_tensor``: one element, an input; the other schemes: float32
        ``[rows, Hq]``, an output (``amax / 448`` per token and head;
        allocated when not given).
    out_q : optional output ``[rows, Hq, D]`` of q_out_dtype (any strides,
        last dim contiguous).

    Rows past cu_seqlens[B] are padding: their q output is zero and nothing
    is written to the cache. A row whose page-table entry is negative (a
    padded request in a CUDA graph) or whose cache position falls outside
    ``[0, max_pages * page_size)`` writes nothing to the cache. A rotation
    position outside ``[0, max_position)`` gives NaN in that row's q output
    (and no cache write), never an out-of-bounds read. Cache slots of other
    tokens are never touched.

    Returns ``q_out``, or ``(q_out, q_scale)`` when q is FP8 with per-token
    scales. One kernel; no synchronization; CUDA-graph capturable.
    """
    op = "rope_qk_norm_kv_write"
    q = as_tensor(q, op, "q" if k is not None else "qkv")
    k_cache = as_tensor(k_cache, op, "k_cache")
    v_cache = as_tensor(v_cache, op, "v_cache")
    if k is None and v is None:
        if k_cache.dim() != 4:
            raise ValueError(f"hpc_ops.{op}: k_cache must be [num_pages, page_size, num_kv_heads, "
                             f"head_dim], got shape {list(k_cache.shape)}")
        hkv, d = k_cache.shape[2], k_cache.shape[3]
        if q.dim() != 2 or d == 0 or q.shape[1] % d != 0 or q.shape[1] // d <= 2 * hkv:
            raise ValueError(f"hpc_ops.{op}: with k=None and v=None, q is the packed qkv "
                             f"[rows, (Hq + 2 * Hkv) * D] with Hkv={hkv}, D={d} from k_cache; "
                             f"got shape {list(q.shape)}")
        q, k, v = split_qkv(q, q.shape[1] // d - 2 * hkv, hkv, d)
    elif k is None or v is None:
        raise ValueError(f"hpc_ops.{op}: pass k and v both, or neither (packed qkv)")
    k = as_tensor(k, op, "k")
    v = as_tensor(v, op, "v")
    cos_sin_cache = as_tensor(cos_sin_cache, op, "cos_sin_cache")
    page_table = as_tensor(page_table, op, "page_table")
    kv_lens = as_tensor(kv_lens, op, "kv_lens")
    cu_seqlens = as_tensor(cu_seqlens, op, "cu_seqlens")
    positions = as_optional_tensor(positions, op, "positions")
    q_norm_weight = as_optional_tensor(q_norm_weight, op, "q_norm_weight")
    k_norm_weight = as_optional_tensor(k_norm_weight, op, "k_norm_weight")
    k_scale = as_optional_tensor(k_scale, op, "k_scale")
    v_scale = as_optional_tensor(v_scale, op, "v_scale")
    q_scale = as_optional_tensor(q_scale, op, "q_scale")
    style_code = choice(op, "style", style, _STYLES)
    order_code = choice(op, "norm_order", norm_order, _NORM_ORDERS)
    scheme_code = _scheme_code(op, kv_scheme)
    if rotary_dim is None:
        rot = q.shape[-1] if q.dim() == 3 else 0
    else:
        rot = int_arg(op, "rotary_dim", rotary_dim)
    if q_out_dtype not in (torch.bfloat16, FP8):
        raise ValueError(f"hpc_ops.{op}: q_out_dtype = {q_out_dtype}, expected torch.bfloat16 or "
                         "torch.float8_e4m3fn")
    if out_q is None:
        out_q = torch.empty(q.shape, dtype=q_out_dtype, device=q.device)
    else:
        out_q = as_tensor(out_q, op, "out_q")
    dynamic_q = out_q.dtype == FP8 and scheme_code != 0
    return_scale = dynamic_q
    if dynamic_q and q_scale is None and q.dim() == 3:
        q_scale = torch.empty(q.shape[:2], dtype=torch.float32, device=q.device)
    args = (q, k, v, cos_sin_cache, k_cache, v_cache, page_table, kv_lens, cu_seqlens, positions,
            q_norm_weight, k_norm_weight, k_scale, v_scale, q_scale, out_q)
    if direct_call_ok(q):
        _C.rope_qk_norm_kv_write(*(desc_or_none(t) for t in args[:-1]), desc(out_q), rot,
                                 style_code, order_code, float(eps), scheme_code, stream_of(q))
    else:
        _ops.rope_qk_norm_kv_write_op(*args, rot, style_code, order_code, float(eps), scheme_code)
    return (out_q, q_scale) if return_scale else out_q
