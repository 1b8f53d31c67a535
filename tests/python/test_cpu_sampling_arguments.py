"""Argument validation of hpc_ops.sample, verify_speculative,
update_seen_mask and update_token_counts with host tensors, no GPU needed
(skipped when the 'sampling' family is not built).

Host tensors reach every structural check (dtypes, ranks, shapes, the
penalty / mask pairing, scalar ranges) before the device check, so each
message naming a bad argument is tested here; a call that is valid except
for living on the host is rejected naming logits (or the state) and the
device. Rejected calls leave the poisoned outputs untouched."""
from __future__ import annotations

import pytest
import torch

import hpc_ops
from hpc_test_utils import expect_rejected, needs_family

pytestmark = needs_family("sampling")

B, V = 4, 1000
W = (V + 31) // 32
I32, I64 = torch.int32, torch.int64


def base():
    return dict(logits=torch.zeros(B, V), temperature=0.75, seeds=torch.zeros(B, dtype=I64),
                offsets=torch.zeros(B, dtype=I64), out=torch.full((B,), -7, dtype=I32))


CASES = {
    "logits_int": (dict(logits=torch.zeros(B, V, dtype=I32)), "logits must be one of"),
    "logits_rank": (dict(logits=torch.zeros(V)), r"logits must be 2-D \[B, V\]"),
    "logits_empty_vocab": (dict(logits=torch.zeros(B, 0)), "logits.shape.1. = 0"),
    "logits_strided": (dict(logits=torch.zeros(B, 2 * V)[:, ::2]), r"logits\.stride\(1\)"),
    "temperature": (dict(temperature=-1.0), r"temperature = -1, expected a finite value >= 0"),
    "temperature_tensor_dtype": (dict(temperature=torch.ones(B, dtype=torch.float64)),
                                 "temperature must be float32"),
    "temperature_tensor_batch": (dict(temperature=torch.ones(B + 1)),
                                 r"temperature\.shape\[0\] = 5, expected 4"),
    "top_k_fraction": (dict(top_k=2.5), "top_k = 2.5, expected an integer"),
    "top_k_above_vocab": (dict(top_k=V + 1), "top_k = 1001, expected at most"),
    "top_k_tensor_dtype": (dict(top_k=torch.ones(B)), "top_k must be int32"),
    "top_p": (dict(top_p=0.0), r"top_p = 0, expected a value in \(0, 1\]"),
    "min_p": (dict(min_p=1.0), r"min_p = 1, expected a value in \[0, 1\)"),
    "repetition_zero": (dict(repetition_penalty=0.0, seen_mask=torch.zeros(B, W, dtype=I32)),
                        "repetition_penalty = 0"),
    "presence_inf": (dict(presence_penalty=float("inf"), seen_mask=torch.zeros(B, W, dtype=I32)),
                     "presence_penalty = inf"),
    "repetition_needs_seen": (dict(repetition_penalty=1.2), "seen_mask is required"),
    "presence_tensor_needs_seen": (dict(presence_penalty=torch.zeros(B)), "seen_mask is required"),
    "frequency_needs_counts": (dict(frequency_penalty=0.5), "token_counts is required"),
    "seen_words": (dict(repetition_penalty=1.2, seen_mask=torch.zeros(B, W + 1, dtype=I32)),
                   r"seen_mask\.shape\[1\] = 33, expected 32"),
    "seen_dtype": (dict(repetition_penalty=1.2, seen_mask=torch.zeros(B, W, dtype=I64)),
                   "seen_mask must be int32"),
    "counts_vocab": (dict(frequency_penalty=0.5, token_counts=torch.zeros(B, V - 1, dtype=I32)),
                     r"token_counts\.shape\[1\] = 999, expected 1000"),
    "allowed_batch": (dict(allowed_mask=torch.zeros(B + 1, W, dtype=I32)),
                      r"allowed_mask\.shape\[0\] = 5, expected 4"),
    "seeds_dtype": (dict(seeds=torch.zeros(B, dtype=I32)), "seeds must be int64"),
    "offsets_batch": (dict(offsets=torch.zeros(B + 1, dtype=I64)),
                      r"offsets\.shape\[0\] = 5, expected 4"),
    "seeds_missing": (dict(seeds=None), "seeds and offsets are required"),
    "out_dtype": (dict(out=torch.zeros(B, dtype=I64)), "out must be int32"),
    "out_shape": (dict(out=torch.zeros(B + 1, dtype=I32)), r"out\.shape\[0\] = 5, expected 4"),
    "bool_parameter": (dict(top_p=True), "top_p must be a number or a tensor"),
    "on_host": (dict(), "logits must be on a CUDA device, got cpu"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_sample_rejects(name):
    call = base()
    change, match = CASES[name]
    call.update(change)
    logits = call.pop("logits")
    buffers = [call["out"]] if call["out"].dtype == I32 and call["out"].shape == (B,) else []
    expect_rejected(lambda: hpc_ops.sample(logits, **call), match, buffers)


def test_greedy_needs_no_seeds():
    """temperature=0 needs no seeds; the host tensors then fail the device check only."""
    expect_rejected(lambda: hpc_ops.sample(torch.zeros(B, V), temperature=0.0),
                    "logits must be on a CUDA device")


VERIFY = {
    "drafts_dtype": (dict(draft_token_ids=torch.zeros(B, 2)), "draft_token_ids must be int32"),
    "k_too_large": (dict(draft_token_ids=torch.zeros(B, 32, dtype=I32),
                         target_logits=torch.zeros(B, 33, V)), "expected 1..31 draft tokens"),
    "target_positions": (dict(target_logits=torch.zeros(B, 4, V)),
                         r"target_logits\.shape\[1\] = 4, expected 3"),
    "target_batch": (dict(target_logits=torch.zeros(B + 1, 3, V)),
                     r"target_logits\.shape\[0\] = 5, expected 4"),
    "probs_vocab": (dict(draft_probs=torch.zeros(B, 2, V + 1)),
                    r"draft_probs\.shape\[2\] = 1001, expected 1000"),
    "probs_dtype": (dict(draft_probs=torch.zeros(B, 2, V, dtype=torch.bfloat16)),
                    "draft_probs must be float32"),
    "seen_positions": (dict(repetition_penalty=1.2, seen_mask=torch.zeros(B, 2, W, dtype=I32)),
                       r"seen_mask\.shape\[1\] = 2, expected 3"),
    "on_host": (dict(), "target_logits must be on a CUDA device"),
}


@pytest.mark.parametrize("name", list(VERIFY))
def test_verify_speculative_rejects(name):
    call = dict(draft_token_ids=torch.zeros(B, 2, dtype=I32), draft_probs=torch.zeros(B, 2, V),
                target_logits=torch.zeros(B, 3, V), temperature=1.0,
                seeds=torch.zeros(B, dtype=I64), offsets=torch.zeros(B, dtype=I64))
    change, match = VERIFY[name]
    call.update(change)
    args = [call.pop(n) for n in ("draft_token_ids", "draft_probs", "target_logits")]
    expect_rejected(lambda: hpc_ops.verify_speculative(*args, **call), match)


@pytest.mark.parametrize("fn,state", [(hpc_ops.update_seen_mask, torch.zeros(B, W, dtype=I32)),
                                      (hpc_ops.update_token_counts, torch.zeros(B, V, dtype=I32))])
def test_state_updates_reject(fn, state):
    expect_rejected(lambda: fn(state, torch.zeros(B + 1, dtype=I32)),
                    r"tokens\.shape\[0\] = 5, expected 4", [state])
    expect_rejected(lambda: fn(state, torch.zeros(B)), "tokens must be int32", [state])
    expect_rejected(lambda: fn(state.to(I64), torch.zeros(B, dtype=I32)), "must be int32")
    expect_rejected(lambda: fn(state, torch.zeros(B, dtype=I32)), "must be on a CUDA device",
                    [state])
