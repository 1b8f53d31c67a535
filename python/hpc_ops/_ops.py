# SPDX-License-Identifier: Apache-2.0
"""torch.library registrations: one custom op per C++ entry point, in
destination-passing form (outputs are mutated arguments, the op returns
nothing), with fake implementations so torch.compile can trace and CUDA graphs
can capture them. Eager calls on plain tensors skip this layer (see
_tensor.direct_call_ok) because the custom-op dispatcher adds ~10 us per call.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from . import _C
from ._tensor import UINT64_MASK, desc, desc_or_none, stream_of


def _scale_arg(scale, scale_out):
    return desc_or_none(scale if scale is not None else scale_out)


@torch.library.custom_op("hpc_ops::rms_norm", mutates_args=("out", "scale_out"))
def rms_norm_op(x: Tensor, weight: Tensor, eps: float, out: Tensor, scaling: int,
                scale: Optional[Tensor], scale_out: Optional[Tensor]) -> None:
    _C.rms_norm(desc(x), desc(weight), eps, desc(out), scaling, _scale_arg(scale, scale_out),
                stream_of(x))


@rms_norm_op.register_fake
def _(x, weight, eps, out, scaling, scale, scale_out):
    return None


@torch.library.custom_op("hpc_ops::fused_add_rms_norm",
                         mutates_args=("out", "residual_out", "scale_out"))
def fused_add_rms_norm_op(x: Tensor, residual: Tensor, weight: Tensor, eps: float, out: Tensor,
                          residual_out: Tensor, scaling: int, scale: Optional[Tensor],
                          scale_out: Optional[Tensor]) -> None:
    _C.fused_add_rms_norm(desc(x), desc(residual), desc(weight), eps, desc(out),
                          desc(residual_out), scaling, _scale_arg(scale, scale_out), stream_of(x))


@fused_add_rms_norm_op.register_fake
def _(x, residual, weight, eps, out, residual_out, scaling, scale, scale_out):
    return None


@torch.library.custom_op("hpc_ops::act_and_mul", mutates_args=("out", "scale_out"))
def act_and_mul_op(act: int, x: Tensor, out: Tensor, scaling: int, scale: Optional[Tensor],
                   scale_out: Optional[Tensor]) -> None:
    _C.act_and_mul(act, desc(x), desc(out), scaling, _scale_arg(scale, scale_out), stream_of(x))


@act_and_mul_op.register_fake
def _(act, x, out, scaling, scale, scale_out):
    return None


@torch.library.custom_op("hpc_ops::act_and_mul_masked", mutates_args=("out", "scale_out"))
def act_and_mul_masked_op(act: int, x: Tensor, row_counts: Tensor, out: Tensor, scaling: int,
                          scale: Optional[Tensor], scale_out: Optional[Tensor]) -> None:
    _C.act_and_mul_masked(act, desc(x), desc(row_counts), desc(out), scaling,
                          _scale_arg(scale, scale_out), stream_of(x))


@act_and_mul_masked_op.register_fake
def _(act, x, row_counts, out, scaling, scale, scale_out):
    return None


@torch.library.custom_op("hpc_ops::quantize_fp8", mutates_args=("out", "scale_out"))
def quantize_fp8_op(x: Tensor, out: Tensor, scaling: int, scale: Optional[Tensor],
                    scale_out: Optional[Tensor]) -> None:
    _C.quantize_fp8(desc(x), desc(out), scaling, _scale_arg(scale, scale_out), stream_of(x))


@quantize_fp8_op.register_fake
def _(x, out, scaling, scale, scale_out):
    return None


@torch.library.custom_op("hpc_ops::plan_decode_attention", mutates_args=("workspace",))
def plan_decode_attention_op(kv_lens: Tensor, info: List[int], workspace: Tensor) -> None:
    _C.plan_decode_attention(desc(kv_lens), tuple(info), desc(workspace), stream_of(kv_lens))


@plan_decode_attention_op.register_fake
def _(kv_lens, info, workspace):
    return None


@torch.library.custom_op("hpc_ops::decode_attention", mutates_args=("out", "lse"))
def decode_attention_op(q: Tensor, k_cache: Tensor, v_cache: Tensor, page_table: Tensor,
                        kv_lens: Tensor, info: List[int], workspace: Tensor, softmax_scale: float,
                        soft_cap: float, scheme: int, q_scale: Optional[Tensor],
                        k_scale: Optional[Tensor], v_scale: Optional[Tensor], out: Tensor,
                        lse: Optional[Tensor]) -> None:
    _C.decode_attention(desc(q), desc(k_cache), desc(v_cache), desc(page_table), desc(kv_lens),
                        tuple(info), desc(workspace), softmax_scale, soft_cap, scheme,
                        desc_or_none(q_scale), desc_or_none(k_scale), desc_or_none(v_scale),
                        desc(out), desc_or_none(lse), stream_of(q))


@decode_attention_op.register_fake
def _(q, k_cache, v_cache, page_table, kv_lens, info, workspace, softmax_scale, soft_cap, scheme,
      q_scale, k_scale, v_scale, out, lse):
    return None


@torch.library.custom_op("hpc_ops::rope_qk_norm_kv_write",
                         mutates_args=("k_cache", "v_cache", "k_scale", "q_scale", "out_q"))
def rope_qk_norm_kv_write_op(q: Tensor, k: Tensor, v: Tensor, cos_sin_cache: Tensor,
                             k_cache: Tensor, v_cache: Tensor, page_table: Tensor,
                             kv_lens: Tensor, cu_seqlens: Tensor, positions: Optional[Tensor],
                             q_norm_weight: Optional[Tensor], k_norm_weight: Optional[Tensor],
                             k_scale: Optional[Tensor], v_scale: Optional[Tensor],
                             q_scale: Optional[Tensor], out_q: Tensor, rotary_dim: int,
                             style: int, norm_order: int, eps: float, kv_scheme: int) -> None:
    tensors = (q, k, v, cos_sin_cache, k_cache, v_cache, page_table, kv_lens, cu_seqlens,
               positions, q_norm_weight, k_norm_weight, k_scale, v_scale, q_scale)
    _C.rope_qk_norm_kv_write(*(desc_or_none(t) for t in tensors), desc(out_q), rotary_dim, style,
                             norm_order, eps, kv_scheme, stream_of(q))


@rope_qk_norm_kv_write_op.register_fake
def _(q, k, v, cos_sin_cache, k_cache, v_cache, page_table, kv_lens, cu_seqlens, positions,
      q_norm_weight, k_norm_weight, k_scale, v_scale, q_scale, out_q, rotary_dim, style,
      norm_order, eps, kv_scheme):
    return None


@torch.library.custom_op("hpc_ops::grouped_gemm", mutates_args=("out",))
def grouped_gemm_op(x: Tensor, w: Tensor, cu_seqlens: Optional[Tensor],
                    rows_per_group: Optional[Tensor], row_index: Optional[Tensor],
                    x_scale: Optional[Tensor], w_scale: Optional[Tensor], out: Tensor,
                    layout: int, scaling: int, expected_rows_per_group: int) -> None:
    tensors = (x, w, cu_seqlens, rows_per_group, row_index, x_scale, w_scale)
    _C.grouped_gemm(*(desc_or_none(t) for t in tensors), desc(out), layout, scaling,
                    expected_rows_per_group, stream_of(x))


@grouped_gemm_op.register_fake
def _(x, w, cu_seqlens, rows_per_group, row_index, x_scale, w_scale, out, layout, scaling,
      expected_rows_per_group):
    return None


@torch.library.custom_op("hpc_ops::router_gemm", mutates_args=("out", "workspace"))
def router_gemm_op(x: Tensor, w_parts: Tensor, out: Tensor, workspace: Optional[Tensor]) -> None:
    if workspace is None and x.is_cuda:
        from .router_gemm import shared_workspace
        workspace = shared_workspace(x.device)
    _C.router_gemm(desc(x), desc(w_parts), desc(out), desc_or_none(workspace), stream_of(x))


@router_gemm_op.register_fake
def _(x, w_parts, out, workspace):
    return None


@torch.library.custom_op("hpc_ops::split_router_weight", mutates_args=("out",))
def split_router_weight_op(w: Tensor, out: Tensor) -> None:
    _C.split_router_weight(desc(w), desc(out), stream_of(w))


@split_router_weight_op.register_fake
def _(w, out):
    return None


def sampling_c_args(values, tensors, masks, seed_values, seed_tensors):
    """The (params, masks, seeds) tuples _C.sample / _C.verify_speculative
    take: (value, descriptor or None) per parameter, mask descriptors, and the
    seed / offset scalars as ints in [0, 2^64) with their tensors."""
    params = tuple((v, desc_or_none(t)) for v, t in zip(values, tensors))
    seeds = tuple((v & UINT64_MASK, desc_or_none(t)) for v, t in zip(seed_values, seed_tensors))
    return params, tuple(desc_or_none(m) for m in masks), seeds


@torch.library.custom_op("hpc_ops::sample", mutates_args=("out", "logprobs_out"))
def sample_op(logits: Tensor, values: List[float], tensors: List[Optional[Tensor]],
              seen_mask: Optional[Tensor], token_counts: Optional[Tensor],
              allowed_mask: Optional[Tensor], seed_values: List[int],
              seed_tensors: List[Optional[Tensor]], out: Tensor,
              logprobs_out: Optional[Tensor]) -> None:
    masks = (seen_mask, token_counts, allowed_mask)
    _C.sample(desc(logits), *sampling_c_args(values, tensors, masks, seed_values, seed_tensors),
              desc(out), desc_or_none(logprobs_out), stream_of(logits))


@sample_op.register_fake
def _(logits, values, tensors, seen_mask, token_counts, allowed_mask, seed_values, seed_tensors,
      out, logprobs_out):
    return None


@torch.library.custom_op("hpc_ops::verify_speculative", mutates_args=("accepted", "tokens"))
def verify_speculative_op(drafts: Tensor, draft_probs: Optional[Tensor], target: Tensor,
                          values: List[float], tensors: List[Optional[Tensor]],
                          seen_mask: Optional[Tensor], token_counts: Optional[Tensor],
                          allowed_mask: Optional[Tensor], seed_values: List[int],
                          seed_tensors: List[Optional[Tensor]], accepted: Tensor,
                          tokens: Tensor) -> None:
    masks = (seen_mask, token_counts, allowed_mask)
    _C.verify_speculative(desc(drafts), desc_or_none(draft_probs), desc(target),
                          *sampling_c_args(values, tensors, masks, seed_values, seed_tensors),
                          desc(accepted), desc(tokens), stream_of(target))


@verify_speculative_op.register_fake
def _(drafts, draft_probs, target, values, tensors, seen_mask, token_counts, allowed_mask,
      seed_values, seed_tensors, accepted, tokens):
    return None


@torch.library.custom_op("hpc_ops::update_seen_mask", mutates_args=("seen_mask",))
def update_seen_mask_op(seen_mask: Tensor, tokens: Tensor) -> None:
    _C.update_seen_mask(desc(seen_mask), desc(tokens), stream_of(seen_mask))


@update_seen_mask_op.register_fake
def _(seen_mask, tokens):
    return None


@torch.library.custom_op("hpc_ops::update_token_counts", mutates_args=("token_counts",))
def update_token_counts_op(token_counts: Tensor, tokens: Tensor) -> None:
    _C.update_token_counts(desc(token_counts), desc(tokens), stream_of(token_counts))


@update_token_counts_op.register_fake
def _(token_counts, tokens):
    return None
