# SPDX-License-Identifier: Apache-2.0
"""Paged decode attention (BF16 or FP8 KV cache) with MTP query tokens, GQA,
split-KV and a load-balancing plan that can be refreshed inside a CUDA graph."""
from __future__ import annotations

import enum
import math
from typing import Optional, Union

import torch

from . import _C, _ops
from ._tensor import _DTYPE_CODES, _UNKNOWN_DTYPE, as_tensor, desc, desc_or_none, direct_call_ok
from ._tensor import int_arg, stream_of

_HEAD_DIM = 128


def _window_code(op, sliding_window):
    return 0 if sliding_window is None else int_arg(op, "sliding_window", sliding_window, 1)


def _positive_float(op, name, value):
    if value is None:
        return 0.0
    v = float(value)
    if not math.isfinite(v) or v <= 0.0:
        raise ValueError(f"hpc_ops.{op}: {name} = {value}, expected a finite value > 0")
    return v


class Fp8Scheme(str, enum.Enum):
    """How an FP8 KV cache (and an FP8 q) is scaled; scales are float32
    dequantization multipliers (real = fp8 * scale) on the GPU.

    ============================  ==========================  ==================  ============
    scheme                        q_scale (FP8 q only)        k_scale             v_scale
    ============================  ==========================  ==================  ============
    ``per_tensor``                one element                 one element         one element
    ``q_token_head__kv_tensor``   ``[B * q_len, Hq]``         one element         one element
    ``qk_token_head__v_head``     ``[B * q_len, Hq]``         ``[num_pages,       ``[Hkv]``
                                                              page_size, Hkv]``
    ============================  ==========================  ==================  ============

    "One element" is shape ``[]`` or ``[1]``. Per-token k scales are indexed
    like the cache (any strides). A bf16 q takes no q_scale.
    """

    PER_TENSOR = "per_tensor"
    Q_TOKEN_HEAD__KV_TENSOR = "q_token_head__kv_tensor"
    QK_TOKEN_HEAD__V_HEAD = "qk_token_head__v_head"


_SCHEME_CODES = {Fp8Scheme.PER_TENSOR: 0, Fp8Scheme.Q_TOKEN_HEAD__KV_TENSOR: 1,
                 Fp8Scheme.QK_TOKEN_HEAD__V_HEAD: 2}


def _scheme_code(op, scheme) -> int:
    if scheme is None:
        return 0
    try:
        return _SCHEME_CODES[Fp8Scheme(scheme)]
    except ValueError:
        names = ", ".join(s.value for s in Fp8Scheme)
        raise ValueError(f"hpc_ops.{op}: scheme = {scheme!r}, expected one of {names}") from None


class DecodePlan:
    """A decode-attention schedule and its workspace on the GPU.

    Made by :func:`plan_decode_attention` for one batch size, head layout,
    q_len, sliding window and KV-cache dtype (``kv_dtype``). ``update(kv_lens)`` recomputes the schedule on the
    GPU (one small kernel, no host synchronization), so capturing
    ``plan.update(kv_lens); decode_attention(..., plan=plan)`` in a CUDA graph
    serves every step whatever the lengths. Workspace:
    ``workspace_bytes`` = the schedule (4 * ``schedule_words`` bytes, rounded
    up to 256) + 2 * num_bins partial results of q_len * group rows x 128
    fp32 and their log-sum-exps.
    """

    def __init__(self, info: tuple, workspace: torch.Tensor):
        self.info = tuple(int(v) for v in info)
        (self.batch, self.num_q_heads, self.num_kv_heads, self.head_dim, self.q_len,
         self.sliding_window, self.num_bins, self.num_slots, self.workspace_bytes,
         self.schedule_words, self.kv_dtype_code) = self.info
        self.workspace = workspace

    def update(self, kv_lens) -> "DecodePlan":
        kv_lens = as_tensor(kv_lens, "plan_decode_attention", "kv_lens")
        if direct_call_ok(kv_lens):
            _C.plan_decode_attention(desc(kv_lens), self.info, desc(self.workspace),
                                     stream_of(kv_lens))
        else:
            _ops.plan_decode_attention_op(kv_lens, list(self.info), self.workspace)
        return self

    def schedule(self) -> torch.Tensor:
        """The schedule words on the host (synchronizes; for tests and debugging)."""
        return self.workspace[: 4 * self.schedule_words].view(torch.int32).cpu()

    def __repr__(self):
        return (f"DecodePlan(batch={self.batch}, heads={self.num_q_heads}/{self.num_kv_heads}, "
                f"q_len={self.q_len}, window={self.sliding_window}, kv_dtype code "
                f"{self.kv_dtype_code}, bins={self.num_bins}, "
                f"workspace={self.workspace_bytes} B)")


def _plannable(dtype):
    """A cache dtype a plan can be made for (others are the call's error to name)."""
    return dtype if dtype in (torch.bfloat16, torch.float8_e4m3fn) else torch.bfloat16


def _kv_dtype_code(kv_dtype) -> int:
    return _DTYPE_CODES.get(kv_dtype, _UNKNOWN_DTYPE)


def plan_decode_attention(kv_lens, *, num_q_heads: int, num_kv_heads: int, head_dim: int = 128,
                          q_len: int = 1, sliding_window: Optional[int] = None,
                          kv_dtype: torch.dtype = torch.bfloat16) -> DecodePlan:
    """Allocate a :class:`DecodePlan` for ``kv_lens`` (int32 [B] on the GPU)
    and compute its schedule. ``kv_dtype``: the cache's dtype (bfloat16 or
    float8_e4m3fn; the FP8 kernel runs more CTAs per SM, so it gets more
    bins). Reuse the plan across layers and steps with
    ``plan.update(new_kv_lens)``."""
    op = "plan_decode_attention"
    kv_lens = as_tensor(kv_lens, op, "kv_lens")
    if kv_lens.dim() != 1:
        raise ValueError(f"hpc_ops.{op}: kv_lens must be 1-D [batch], got shape {list(kv_lens.shape)}")
    if not kv_lens.is_cuda:
        raise ValueError(f"hpc_ops.{op}: kv_lens must be on a CUDA device, got {kv_lens.device}")
    int_arg(op, "num_q_heads", num_q_heads, 1)
    int_arg(op, "num_kv_heads", num_kv_heads, 1)
    int_arg(op, "head_dim", head_dim, 1)
    int_arg(op, "q_len", q_len, 1)
    window = _window_code(op, sliding_window)
    info = _C.make_decode_plan_info(kv_lens.shape[0], num_q_heads, num_kv_heads, head_dim, q_len,
                                    window, kv_lens.get_device(), _kv_dtype_code(kv_dtype))
    workspace = torch.empty(info[8], dtype=torch.uint8, device=kv_lens.device)
    return DecodePlan(info, workspace).update(kv_lens)


def decode_schedule_cpu(kv_lens, *, num_q_heads: int, num_kv_heads: int, head_dim: int = 128,
                        q_len: int = 1, sliding_window: Optional[int] = None,
                        num_bins: int) -> torch.Tensor:
    """The schedule computed on the CPU (int32 host tensor), word for word what
    ``plan.update`` computes on the GPU for the same arguments and bins."""
    op = "decode_schedule_cpu"
    kv_lens = as_tensor(kv_lens, op, "kv_lens").cpu()
    int_arg(op, "num_bins", num_bins, 1)
    batch = kv_lens.shape[0] if kv_lens.dim() >= 1 else 0
    # Validates heads, head_dim, q_len and window; then takes the given bins.
    info = _C.make_decode_plan_info(batch, num_q_heads, num_kv_heads, head_dim, q_len,
                                    _window_code(op, sliding_window), -1, 2)
    info = _C.with_decode_bins(info, num_bins)
    schedule = torch.empty(info[9], dtype=torch.int32)
    _C.decode_attention_schedule_host(desc(kv_lens), tuple(info), desc(schedule))
    return schedule


def decode_attention(q, k_cache, v_cache, page_table, kv_lens, *, q_len: int = 1,
                     scheme: Union[Fp8Scheme, str, None] = None, q_scale=None, k_scale=None,
                     v_scale=None,
                     softmax_scale: Optional[float] = None, sliding_window: Optional[int] = None,
                     soft_cap: Optional[float] = None, plan: Optional[DecodePlan] = None,
                     out=None, return_lse: bool = False, lse_out=None):
    """Attention of this step's query tokens over a paged BF16 or FP8 KV cache.

    Parameters
    ----------
    q : bfloat16 ``[B * q_len, Hq, 128]`` (float8_e4m3fn with an FP8 cache);
        rows ``b*q_len .. b*q_len + q_len - 1`` are request b's query tokens,
        its last q_len positions (causal among themselves). ``q_len`` 1..8.
    k_cache, v_cache : both bfloat16 or both float8_e4m3fn
        ``[num_pages, page_size, Hkv, 128]``, last dim contiguous, any strides
        otherwise (NHD, HND, or views of one interleaved allocation).
        page_size in {1, 16, 32, 64, 128}; Hq = group * Hkv with group 1..16.
    scheme, q_scale, k_scale, v_scale : FP8 caches only: the scaling scheme
        (:class:`Fp8Scheme` or its name; default ``per_tensor``) and float32
        dequantization scales on the GPU, shaped as that class lists. Logits
        are ``softmax_scale * (q * q_scale) . (k * k_scale)`` and the output
        ``sum(p * v * v_scale)``. K and V enter the tensor cores as exact
        fp16, P as fp16; a bf16 q is rounded to fp16 (saturating at 65504).
    page_table : int32 ``[B, max_pages]`` (row stride may exceed max_pages):
        token t of request b is in page ``page_table[b, t // page_size]``.
    kv_lens : int32 ``[B]`` on the GPU: tokens in the cache per request, this
        step's included; 0 gives zeros (and lse -inf). Entries of the page
        table past a request's length are never read.
    softmax_scale : default ``1 / sqrt(128)``.
    sliding_window : attend to the last W positions (self included) only.
    soft_cap : logits become ``soft_cap * tanh(logits / soft_cap)``.
    plan : a :class:`DecodePlan` made for these kv_lens (see
        :func:`plan_decode_attention`); without one a plan is made here.
    out : optional bfloat16 output like q.
    return_lse, lse_out : also return the natural-log log-sum-exp of the final
        logits, float32 ``[B * q_len, Hq]``.

    Returns ``out``, or ``(out, lse)``. Runs on the current CUDA stream, never
    synchronizes; with a plan it allocates nothing but the outputs it returns.
    """
    op = "decode_attention"
    q = as_tensor(q, op, "q")
    k_cache = as_tensor(k_cache, op, "k_cache")
    v_cache = as_tensor(v_cache, op, "v_cache")
    page_table = as_tensor(page_table, op, "page_table")
    kv_lens = as_tensor(kv_lens, op, "kv_lens")
    int_arg(op, "q_len", q_len, 1, 8)
    window = _window_code(op, sliding_window)
    scale = _positive_float(op, "softmax_scale", softmax_scale)
    cap = _positive_float(op, "soft_cap", soft_cap)
    scheme_code = _scheme_code(op, scheme)
    scales = [None if s is None else as_tensor(s, op, name)
              for s, name in ((q_scale, "q_scale"), (k_scale, "k_scale"), (v_scale, "v_scale"))]
    if q.dim() != 3 or k_cache.dim() != 4:
        raise ValueError(f"hpc_ops.{op}: q must be [batch * q_len, num_q_heads, head_dim] and "
                         f"k_cache [num_pages, page_size, num_kv_heads, head_dim], got q "
                         f"{list(q.shape)} and k_cache {list(k_cache.shape)}")
    if out is None:
        out = torch.empty(q.shape, dtype=torch.bfloat16, device=q.device)
    else:
        out = as_tensor(out, op, "out")
    lse = None
    if lse_out is not None:
        lse = as_tensor(lse_out, op, "lse_out")
    elif return_lse:
        lse = torch.empty(q.shape[:2], dtype=torch.float32, device=q.device)
    if plan is None:
        usable = q.is_cuda and kv_lens.is_cuda and kv_lens.dim() == 1 and kv_lens.dtype == torch.int32
        if usable:
            plan = plan_decode_attention(kv_lens, num_q_heads=q.shape[1],
                                         num_kv_heads=k_cache.shape[2], head_dim=q.shape[2],
                                         q_len=q_len, sliding_window=sliding_window,
                                         kv_dtype=_plannable(k_cache.dtype))
        else:
            # No plan can be made: a device-free description lets the core
            # name what is wrong (it raises before any launch).
            batch = kv_lens.shape[0] if kv_lens.dim() >= 1 else 0
            info = _C.make_decode_plan_info(batch, q.shape[1], k_cache.shape[2], q.shape[2],
                                            q_len, window, -1,
                                            _kv_dtype_code(_plannable(k_cache.dtype)))
            plan = DecodePlan(info, torch.empty(info[8], dtype=torch.uint8))
    elif not isinstance(plan, DecodePlan):
        raise ValueError(f"hpc_ops.{op}: plan must be a DecodePlan, got {type(plan).__name__}")
    if plan.q_len != q_len or plan.sliding_window != window:
        raise ValueError(f"hpc_ops.{op}: plan was made for q_len={plan.q_len}, sliding_window="
                         f"{plan.sliding_window or None}; this call has q_len={q_len}, "
                         f"sliding_window={sliding_window}")
    if direct_call_ok(q):
        _C.decode_attention(desc(q), desc(k_cache), desc(v_cache), desc(page_table), desc(kv_lens),
                            plan.info, desc(plan.workspace), scale, cap, scheme_code,
                            *(desc_or_none(s) for s in scales), desc(out), desc_or_none(lse),
                            stream_of(q))
    else:
        _ops.decode_attention_op(q, k_cache, v_cache, page_table, kv_lens, list(plan.info),
                                 plan.workspace, scale, cap, scheme_code, *scales, out, lse)
    return (out, lse) if lse is not None and (return_lse or lse_out is not None) else out
