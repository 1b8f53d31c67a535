# SPDX-License-Identifier: Apache-2.0
"""Fused decode sampling (penalties, temperature, top-k, top-p, min-p, a
seeded draw per request) in one kernel, speculative-decoding verification,
and the seen-token state updates. The exact semantics are those of
include/hpc_ops/sampling.h (and the float64 mirror of the tests)."""
from __future__ import annotations

import numbers

import torch

from . import _C, _ops
from ._tensor import UINT64_MASK, as_optional_tensor, as_tensor, desc, desc_or_none
from ._tensor import direct_call_ok, stream_of

# (name, value meaning "off") in the order of hpc_ops::SamplingOptions.
_PARAMS = (("temperature", 1.0), ("top_k", 0), ("top_p", 1.0), ("min_p", 0.0),
           ("repetition_penalty", 1.0), ("presence_penalty", 0.0), ("frequency_penalty", 0.0))


def _param(op: str, name: str, value, off):
    """(scalar, tensor or None) of a per-request parameter: None means off, a
    Python number applies to every row, a tensor ([B]) gives one value per row."""
    if value is None:
        return float(off), None
    if isinstance(value, bool):
        raise ValueError(f"hpc_ops.{op}: {name} must be a number or a tensor, got a bool")
    if isinstance(value, numbers.Real):
        return float(value), None
    return float(off), as_tensor(value, op, name)


def _seed(op: str, name: str, value):
    """(uint64 scalar as a signed int64, tensor or None) of a seed or offset."""
    if isinstance(value, bool):
        raise ValueError(f"hpc_ops.{op}: {name} must be an int or an int64 tensor, got a bool")
    if isinstance(value, numbers.Integral):
        v = int(value) & UINT64_MASK
        return (v - (1 << 64) if v >= 1 << 63 else v), None
    return 0, as_tensor(value, op, name)


def _inputs(op, params: dict, masks: dict, seeds, offsets, seeds_needed: bool):
    """(values, tensors, masks, seed_values, seed_tensors): the parameters in
    SamplingOptions order as scalars and optional tensors, the masks as
    optional tensors, seeds and offsets as signed int64 scalars (torch.library
    int) and optional tensors."""
    values, tensors = [], []
    for name, off in _PARAMS:
        v, t = _param(op, name, params[name], off)
        values.append(v)
        tensors.append(t)
    if seeds is None or offsets is None:
        if seeds_needed:
            raise ValueError(f"hpc_ops.{op}: seeds and offsets are required for sampled rows "
                             "(ints or int64 [B] tensors; only temperature=0 needs none)")
        seeds = 0 if seeds is None else seeds
        offsets = 0 if offsets is None else offsets
    seed_values, seed_tensors = zip(_seed(op, "seeds", seeds), _seed(op, "offsets", offsets))
    mask_tensors = [as_optional_tensor(t, op, name) for name, t in masks.items()]
    return values, tensors, mask_tensors, list(seed_values), list(seed_tensors)


def sample(logits, *, temperature=1.0, top_k=None, top_p=None, min_p=None,
           repetition_penalty=None, presence_penalty=None, frequency_penalty=None,
           seen_mask=None, token_counts=None, allowed_mask=None, seeds=None, offsets=None,
           return_logprobs: bool = False, out=None, logprobs_out=None):
    """One decode sampling step: a token per row of ``logits``.

    Parameters
    ----------
    logits : float32 or bfloat16 ``[B, V]``, any V >= 1, last dim contiguous,
        any row stride. Finite values or -inf.
    temperature, top_k, top_p, min_p, repetition_penalty, presence_penalty,
    frequency_penalty : each ``None`` (off), a Python number (every row) or a
        ``[B]`` tensor (float32; top_k int32) with a value per request.
        temperature >= 0 (0: greedy, the argmax of the penalized logits, ties
        to the smallest id; truncation ignored); top_k 0 or >= V: off; top_p
        in (0, 1], 1: off; min_p in [0, 1), 0: off; repetition_penalty > 0
        (seen tokens: l > 0 -> l / r, else l * r); presence_penalty (seen
        tokens: l - p); frequency_penalty (l - f * count). Values inside
        tensors are not checked (no synchronization).
    seen_mask : int32 ``[B, ceil(V / 32)]``, bit ``t % 32`` of word ``t // 32``
        set when token t was seen; needed by the repetition and presence
        penalties (see :func:`update_seen_mask`).
    token_counts : int32 ``[B, V]``, needed by the frequency penalty.
    allowed_mask : int32 ``[B, ceil(V / 32)]``: only tokens whose bit is set
        may be drawn (bits past V ignored).
    seeds, offsets : ints or int64 ``[B]`` tensors (read as uint64), required
        unless temperature is 0. A row's draw is a pure function of its
        logits, parameters, seed and offset (Philox4x32-10, stream 0, one
        uniform per token id): the same on every run and in any batch.
        Requests sharing a seed need different offsets (e.g. the step count).
    return_logprobs : also return float32 ``[B]``: log_softmax of the
        penalized, temperature-scaled logits at the chosen token (before
        truncation; greedy rows use temperature 1); NaN for rows with no token.
    out, logprobs_out : optional int32 / float32 ``[B]`` outputs.

    Truncation keeps every token tied with a threshold: top-k keeps
    ``p >= (k-th largest p)``, top-p (applied to the top-k survivors) keeps
    tokens whose strictly-larger mass is below ``top_p * (top-k mass)``,
    min-p keeps ``p >= min_p * max(p)``. The token is drawn exactly from the
    renormalized survivors (the exponential race). A row whose logits are all
    -inf (or all disallowed) gives token -1.

    Returns int32 ``[B]`` tokens, or ``(tokens, logprobs)`` with
    ``return_logprobs``. One kernel, no synchronization, no allocation beyond
    the returned outputs; CUDA-graph capturable.
    """
    op = "sample"
    logits = as_tensor(logits, op, "logits")
    params = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                  repetition_penalty=repetition_penalty, presence_penalty=presence_penalty,
                  frequency_penalty=frequency_penalty)
    masks = dict(seen_mask=seen_mask, token_counts=token_counts, allowed_mask=allowed_mask)
    greedy = isinstance(temperature, numbers.Real) and not isinstance(temperature, bool) \
        and float(temperature) == 0.0
    values, tensors, masks, seed_values, seed_tensors = _inputs(op, params, masks, seeds, offsets,
                                                                not greedy)
    batch = logits.shape[0] if logits.dim() >= 1 else 0
    out = torch.empty(batch, dtype=torch.int32, device=logits.device) if out is None \
        else as_tensor(out, op, "out")
    if logprobs_out is None and return_logprobs:
        logprobs_out = torch.empty(batch, dtype=torch.float32, device=logits.device)
    elif logprobs_out is not None:
        logprobs_out = as_tensor(logprobs_out, op, "logprobs_out")
    if direct_call_ok(logits):
        args = _ops.sampling_c_args(values, tensors, masks, seed_values, seed_tensors)
        _C.sample(desc(logits), *args, desc(out), desc_or_none(logprobs_out), stream_of(logits))
    else:
        _ops.sample_op(logits, values, tensors, *masks, seed_values, seed_tensors, out,
                       logprobs_out)
    return (out, logprobs_out) if return_logprobs else out


def verify_speculative(draft_token_ids, draft_probs, target_logits, *, temperature=1.0,
                       top_k=None, top_p=None, min_p=None, repetition_penalty=None,
                       presence_penalty=None, frequency_penalty=None, seen_mask=None,
                       token_counts=None, allowed_mask=None, seeds=None, offsets=None,
                       accepted_out=None, tokens_out=None):
    """Verify k draft tokens per request against the target model's k+1
    positions (speculative decoding / MTP).

    Parameters
    ----------
    draft_token_ids : int32 ``[B, k]``, 1 <= k <= 31.
    draft_probs : float32 ``[B, k, V]``, the distributions the drafts were
        drawn from (rejection sampling), or ``None`` for greedy verification
        (accept while the draft equals the argmax of the penalized target
        logits; temperature and truncation unused).
    target_logits : float32 or bfloat16 ``[B, k+1, V]``.
    temperature ... allowed_mask : as in :func:`sample`, per request; the
        masks and counts may also be given per position ``[B, k+1, ...]``.
    seeds, offsets : as in :func:`sample` (required with draft_probs).

    Draft i is accepted iff ``a_i * P_i[d_i] < Q_i[d_i]`` (Q_i: position i's
    truncated renormalized distribution, one-hot for greedy rows; a_i:
    Philox stream 0xffffffff, index i). At the first rejection the recovered
    token is drawn from ``max(0, Q_i - P_i)`` (race uniforms of stream 1 + i);
    with all k accepted, a bonus token is drawn from Q_k (stream 1 + k). The
    emitted tokens follow the target distribution exactly.

    Returns ``(accepted, tokens)``: int32 ``[B]`` (0..k) and int32
    ``[B, k+1]``: the accepted drafts, then the recovered or bonus token,
    then -1 (a position with no token left emits -1). Three launches (a
    memset, the sampler over B * (k+1) rows, a finalize); no synchronization.
    """
    op = "verify_speculative"
    drafts = as_tensor(draft_token_ids, op, "draft_token_ids")
    draft_probs = as_optional_tensor(draft_probs, op, "draft_probs")
    target = as_tensor(target_logits, op, "target_logits")
    params = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                  repetition_penalty=repetition_penalty, presence_penalty=presence_penalty,
                  frequency_penalty=frequency_penalty)
    masks = dict(seen_mask=seen_mask, token_counts=token_counts, allowed_mask=allowed_mask)
    values, tensors, masks, seed_values, seed_tensors = _inputs(op, params, masks, seeds, offsets,
                                                                draft_probs is not None)
    batch = drafts.shape[0] if drafts.dim() >= 1 else 0
    k = drafts.shape[1] if drafts.dim() == 2 else 0
    accepted = torch.empty(batch, dtype=torch.int32, device=target.device) \
        if accepted_out is None else as_tensor(accepted_out, op, "accepted_out")
    tokens = torch.empty(batch, k + 1, dtype=torch.int32, device=target.device) \
        if tokens_out is None else as_tensor(tokens_out, op, "tokens_out")
    if direct_call_ok(target):
        args = _ops.sampling_c_args(values, tensors, masks, seed_values, seed_tensors)
        _C.verify_speculative(desc(drafts), desc_or_none(draft_probs), desc(target), *args,
                              desc(accepted), desc(tokens), stream_of(target))
    else:
        _ops.verify_speculative_op(drafts, draft_probs, target, values, tensors, *masks,
                                   seed_values, seed_tensors, accepted, tokens)
    return accepted, tokens


def update_seen_mask(seen_mask, tokens):
    """Sets bit ``tokens[b]`` (or every ``tokens[b, j]``) of ``seen_mask[b]``
    (int32 ``[B, ceil(V / 32)]``) in place; tokens int32 ``[B]`` or
    ``[B, n]``, entries < 0 skipped (tokens >= V are the caller's error).
    Returns seen_mask. One small kernel, no synchronization."""
    return _update("update_seen_mask", "seen_mask", seen_mask, tokens)


def update_token_counts(token_counts, tokens):
    """Adds one to ``token_counts[b, tokens[b]]`` (int32 ``[B, V]``) for each
    token (``[B]`` or ``[B, n]``; entries < 0 skipped), in place. Returns
    token_counts."""
    return _update("update_token_counts", "token_counts", token_counts, tokens)


def _update(op: str, name: str, state, tokens):
    """An in-place state update (seen mask or counts) by tokens; returns the state."""
    state = as_tensor(state, op, name)
    tokens = as_tensor(tokens, op, "tokens")
    if direct_call_ok(state):
        getattr(_C, op)(desc(state), desc(tokens), stream_of(state))
    else:
        getattr(_ops, op + "_op")(state, tokens)
    return state
