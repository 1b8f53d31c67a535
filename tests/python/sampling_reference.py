"""Float64 mirror of fused decode sampling: THE definition of what the kernel
must produce, token for token, plus the helpers its tests need.

Everything here runs on the CPU in float64 (torch, and numpy for the
Philox integer arithmetic); inputs may live on any device and are copied to
the host. Every row is computed independently of the others.

Inputs of one call
    logits [B, V] (float32 or bfloat16; any strides, e.g. a row stride larger
    than V), converted exactly to float64. Logits are finite or -inf.
    Per-request parameters, each a Python scalar (all rows) or a tensor [B]:
      temperature         >= 0; 0 = greedy
      top_k               integer >= 0; 0 (or >= V) = off
      top_p               in (0, 1]; 1 = off
      min_p               in [0, 1); 0 = off
      repetition_penalty  > 0; 1 = off
      presence_penalty    any finite value; 0 = off
      frequency_penalty   any finite value; 0 = off
    seen_mask    int32 [B, ceil(V/32)]: bit t % 32 of word t // 32 set = token
                 t was seen (needed by the repetition and presence penalties)
    token_counts int32 [B, V]: occurrences of each token (frequency penalty)
    allowed_mask int32 [B, ceil(V/32)], same layout: bit set = token allowed
    seeds, offsets int64 [B] (read as uint64, two's complement), or
    noise        float64 [B, V] of uniforms in (0, 1) replacing the Philox
                 uniforms (exact tests).
    Bits of the last mask word past V are ignored.

Pipeline, per row, in this order
    1. allowed_mask: every token whose bit is clear becomes -inf.
    2. repetition penalty r on seen tokens: l > 0 -> l / r, otherwise l * r.
    3. presence penalty: seen tokens get l - presence.
    4. frequency penalty: every token gets l - frequency * count.
       (-inf stays -inf through steps 2-4.) The result is "the penalized
       logits" l.
    5. temperature T: T == 0 makes the row greedy: token = argmax of l, ties
       to the smallest token id; steps 6-8 do not apply (the truncation
       parameters are ignored). Otherwise s = l / T.
    6. p = softmax(s) over the whole vocabulary:
         m = max(s), e = exp(s - m), Z = sum(e), p = e / Z.
       logprob of the chosen token = log_softmax(s)[token]
       = s[token] - m - log(Z), i.e. after penalties and temperature and before
       truncation. Greedy rows report log_softmax(l)[token] (T taken as 1).
    7. Truncation. Every rule is a threshold on p, so tokens with equal p are
       always kept or dropped together:
         top-k (k > 0 and k < V): keep t iff p_t >= the k-th largest p
           (counting ties: sorted descending, the value at position k-1). All
           tokens tied with it survive, so more than k tokens may survive.
         top-p (top_p < 1), evaluated on the top-k survivors only: with
           Z_k = the sum of the survivors' p, keep survivor t iff
               S_t = (sum of the survivors' p_s with p_s > p_t) < top_p * Z_k.
           The most probable token always survives (S = 0); tied tokens share
           S_t, so they survive or go together.
         min-p: keep t iff p_t >= min_p * max(p) (max over the whole row).
       The survivors are the tokens with p_t > 0 that pass all three (top-p
       judged on the top-k survivors, min-p on the full p). Tokens with
       p == 0 (disallowed, -inf, or exp underflow in float64) never survive.
       Sums are accumulated in descending order of p (this matters only at the
       rounding level: a float32 kernel can legitimately disagree with the
       mirror on tokens whose p sits within rounding of a threshold, so exact
       tests keep thresholds away from such tokens).
       The renormalized truncated distribution is q = p * [survivor] / sum;
       for a greedy row q is one-hot at its token.
    8. Sampling by the exponential race (Gumbel-max):
           token = argmax over survivors t of  log(p_t) - log(-log(u_t)),
       ties to the smallest id, u_t the uniform of (row, token t). This draws
       t with probability q_t exactly (-log(u_t) / p_t are independent
       exponential arrival times with rates p_t; the first arrival wins).
       Scaling p by a per-row constant (e.g. using q, or exp(s) without the
       normalizer) changes no argmax, so a kernel may race with s_t directly.
    A row in which no token is left after steps 1-4 (everything -inf) gives
    token -1 and logprob NaN.

Uniforms: Philox4x32-10 (Random123; verified by the known-answer vectors of
its tests/kat_vectors and examples/kat_vectors, see the CPU tests)
    For row b with seed s and offset o (both uint64), uniform index j of
    stream c uses
        key     = (s & 0xffffffff, s >> 32)
        counter = (j >> 2, c, o & 0xffffffff, o >> 32)
    and takes output word j & 3, a uint32 x. The uniform is
        u = ((x >> 9) + 0.5) / 2**23 = (2 * (x >> 9) + 1) / 2**24,
    23 random bits. Its numerator is an odd integer below 2**24, so u is
    exactly representable in float32 and a GPU computes it exactly with one
    float32 multiply-add; it lies strictly inside (0, 1) (from 2**-24 to
    1 - 2**-24), so log(u) and log(-log(u)) are finite. (A 24-bit variant,
    ((x >> 8) + 0.5) / 2**24, needs 25 significant bits: for x >> 8 >= 2**23
    it is not a float32 value, and for the largest word it rounds to exactly
    1.0 in float32, where -log(u) = 0 and that token wins outright.)
    Stream 0 (SAMPLE_STREAM) gives the decode sampler its uniforms: index j =
    token id. Philox is a pure function of (key, counter), so a row's token
    depends only on its own logits, parameters, masks, seed and offset: the
    result is batch invariant (unchanged when other rows change, rows are
    reordered or the batch size changes). Requests that share a seed must use
    different offsets, or they draw the same uniforms.

Speculative verification (speculative_verify_ref)
    Draft tokens d [B, k], draft probabilities P [B, k, V] (the distributions
    the drafts were drawn from, used as given) or None, target logits
    [B, k+1, V]. Each target position i goes through steps 1-7 with the row's
    parameters (the masks and counts may be given per row [B, ...], shared by
    all positions, or per position [B, k+1, ...]) into its truncated
    renormalized distribution Q_i (one-hot for greedy rows).
    With draft probabilities (rejection sampling), for i = 0, 1, ...:
      accept d_i  iff  a_i * P_i[d_i] < Q_i[d_i]   (probability min(1, Q/P);
        a draft with Q_i[d_i] = 0 is always rejected, one with
        Q_i[d_i] >= P_i[d_i] and Q_i[d_i] > 0 always accepted, since a_i < 1);
      on the first rejection, at position i, emit the race (step 8) over the
        weights R = max(0, Q_i - P_i) (R normalized is the recovered
        distribution; normalization does not change the race) with the race
        uniforms of position i; if R is all zero (rounding), race over Q_i;
        and stop;
      if all k drafts are accepted, emit the bonus token: the race over Q_k
        with the race uniforms of position k.
    Uniforms, from the row's seed and offset:
      a_i (acceptance, i < k): stream SPEC_ACCEPT_STREAM = 0xffffffff,
        index j = i, i.e. counter (i >> 2, 0xffffffff, o_lo, o_hi), word i & 3;
      race uniforms of position i (i <= k): stream 1 + i (spec_race_stream),
        index j = token id.
    Without draft probabilities (greedy / exact-match variant; temperature and
    truncation are not used, every row is verified greedily): with g_i the
    argmax of position i's penalized logits (steps 1-4, ties to the smallest
    id), accept d_i while d_i == g_i; emit g_i at the first mismatch, or the
    bonus g_k when all match. (For a deterministic drafter verified
    stochastically, pass one-hot draft probabilities instead.)
    Result: accepted [B] (0..k) and tokens [B, k+1]: the accepted drafts, then
    the recovered / bonus token, then -1. A position with no token left
    (every logit -inf) emits -1.

Helpers
    pack_bitmask / unpack_bitmask (the mask layout above), penalize_ref
    (steps 1-4), truncate_ref (step 7 on given p), race_ref (step 8),
    truncated_distribution_ref (survivors and Q for distribution tests),
    update_seen_mask_ref / update_token_counts_ref (the state update after a
    step: set / count each row's emitted tokens, skipping tokens < 0), and
    chi_square_test (Pearson's statistic and p-value, bins with an expected
    count below 5 pooled; no scipy needed). SamplingResult.margin gives, per
    row, how far the winner is ahead of the runner-up, so a GPU test can tell
    a genuine mismatch from a float32 rounding tie.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

F64 = torch.float64
INT32 = torch.int32
INT64 = torch.int64
NEG_INF = float("-inf")

# Philox4x32 constants (Random123 philox.h): round multipliers and the Weyl
# sequence added to the key between rounds.
PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
PHILOX_ROUNDS = 10

UNIFORM_BITS = 23
SAMPLE_STREAM = 0
SPEC_ACCEPT_STREAM = 0xFFFFFFFF

_MASK32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)

__all__ = [
    "PHILOX_ROUNDS", "UNIFORM_BITS", "SAMPLE_STREAM", "SPEC_ACCEPT_STREAM", "spec_race_stream",
    "philox4x32_10", "philox_words", "uniform_from_words", "philox_uniforms",
    "bitmask_words", "pack_bitmask", "unpack_bitmask", "penalize_ref", "truncate_ref",
    "race_ref", "first_argmax", "SamplingResult", "sample_ref", "truncated_distribution_ref",
    "SpecResult", "speculative_verify_ref", "update_seen_mask_ref", "update_token_counts_ref",
    "ChiSquare", "chi_square_test",
]


# ----------------------------------------------------------------------------
# Philox4x32-10 and the uniforms
# ----------------------------------------------------------------------------
def spec_race_stream(position: int) -> int:
    """Philox stream (counter word 1) of the race uniforms of speculative position i."""
    return 1 + int(position)


def _as_u64(values) -> np.ndarray:
    """uint64 numpy array of values (Python ints, int64 tensors / arrays read as
    two's complement)."""
    if torch.is_tensor(values):
        arr = values.detach().to("cpu", INT64).numpy()
        return np.ascontiguousarray(arr).view(np.uint64).copy()
    arr = np.asarray(values)
    if arr.dtype == np.uint64:
        return arr.copy()
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64).view(np.uint64) if arr.dtype.kind == "i" else \
            arr.astype(np.uint64)
    # Python ints (possibly beyond int64): reduce modulo 2**64.
    flat = [int(v) & 0xFFFFFFFFFFFFFFFF for v in np.ravel(arr).tolist()]
    return np.array(flat, dtype=np.uint64).reshape(arr.shape)


def _philox_np(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 on broadcastable uint64 arrays holding 32-bit values.
    A round: (hi0, lo0) = M0 * c0, (hi1, lo1) = M1 * c2 (64-bit products, exact
    in uint64), c = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0); the key is bumped
    by the Weyl constants before every round but the first."""
    m0, m1 = np.uint64(PHILOX_M0), np.uint64(PHILOX_M1)
    w0, w1 = np.uint64(PHILOX_W0), np.uint64(PHILOX_W1)
    c0, c1, c2, c3 = (np.asarray(x, dtype=np.uint64) for x in (c0, c1, c2, c3))
    k0, k1 = np.asarray(k0, dtype=np.uint64), np.asarray(k1, dtype=np.uint64)
    for r in range(PHILOX_ROUNDS):
        if r:
            k0 = (k0 + w0) & _MASK32
            k1 = (k1 + w1) & _MASK32
        prod0 = c0 * m0
        prod1 = c2 * m1
        c0, c1, c2, c3 = ((prod1 >> _SHIFT32) ^ c1 ^ k0, prod1 & _MASK32,
                          (prod0 >> _SHIFT32) ^ c3 ^ k1, prod0 & _MASK32)
    return c0, c1, c2, c3


def philox4x32_10(counter, key) -> torch.Tensor:
    """Philox4x32-10 of counter [..., 4] and key [..., 2] (32-bit words, as
    ints, lists, arrays or tensors; broadcast): int64 [..., 4] of uint32 words."""
    c = _as_u64(counter) & _MASK32
    k = _as_u64(key) & _MASK32
    out = _philox_np(c[..., 0], c[..., 1], c[..., 2], c[..., 3], k[..., 0], k[..., 1])
    return torch.from_numpy(np.stack(out, axis=-1).astype(np.int64))


def _row_u64(values, batch: int, name: str) -> np.ndarray:
    """Seeds / offsets (a scalar or [B]; int64 read as uint64) as uint64 [B]."""
    arr = np.atleast_1d(_as_u64(values))
    if arr.shape == (1,):
        arr = np.repeat(arr, batch)
    if arr.shape != (batch,):
        raise ValueError(f"{name}: expected a scalar or shape [{batch}], got {arr.shape}")
    return arr


def philox_words(seeds, offsets, n: int, stream: int = SAMPLE_STREAM) -> torch.Tensor:
    """int64 [B, n]: the uint32 word x of index j = 0..n-1 of `stream` for each
    row (seeds, offsets: [B] or scalars, broadcast), per the module docstring."""
    s, o = np.broadcast_arrays(np.atleast_1d(_as_u64(seeds)), np.atleast_1d(_as_u64(offsets)))
    if s.ndim != 1:
        raise ValueError(f"seeds / offsets must be scalars or 1-D, got shape {s.shape}")
    if not 0 <= int(stream) <= 0xFFFFFFFF:
        raise ValueError(f"stream must be a 32-bit word, got {stream}")
    batch, blocks = s.shape[0], (int(n) + 3) // 4
    if blocks > 2 ** 32:
        raise ValueError("too many uniforms for one stream")
    c0 = np.arange(blocks, dtype=np.uint64)[None, :]
    c1 = np.uint64(int(stream))
    c2, c3 = (o & _MASK32)[:, None], (o >> _SHIFT32)[:, None]
    k0, k1 = (s & _MASK32)[:, None], (s >> _SHIFT32)[:, None]
    words = np.stack(_philox_np(c0, c1, c2, c3, k0, k1), axis=-1)   # [B, blocks, 4]
    words = words.reshape(batch, blocks * 4)[:, :n]
    return torch.from_numpy(words.astype(np.int64))


def uniform_from_words(words: torch.Tensor) -> torch.Tensor:
    """float64 u = ((x >> 9) + 0.5) / 2**23 of uint32 words x (int64 tensor):
    exactly a float32 value, strictly inside (0, 1)."""
    x = words.to(INT64) & 0xFFFFFFFF
    return ((x >> (32 - UNIFORM_BITS)).to(F64) + 0.5) * 2.0 ** -UNIFORM_BITS


def philox_uniforms(seeds, offsets, n: int, stream: int = SAMPLE_STREAM) -> torch.Tensor:
    """float64 [B, n]: the uniforms of indices 0..n-1 of `stream` per row."""
    return uniform_from_words(philox_words(seeds, offsets, n, stream))


# ----------------------------------------------------------------------------
# Bitmasks
# ----------------------------------------------------------------------------
def bitmask_words(vocab: int) -> int:
    """ceil(V / 32): int32 words per row of a token bitmask."""
    return (int(vocab) + 31) // 32


def pack_bitmask(mask: torch.Tensor) -> torch.Tensor:
    """bool [..., V] -> int32 [..., ceil(V/32)]: bit t % 32 of word t // 32 is
    mask[..., t] (bit 31 set gives a negative int32); padding bits are 0."""
    m = mask.detach().to("cpu", torch.bool)
    vocab = m.shape[-1]
    words = bitmask_words(vocab)
    padded = torch.nn.functional.pad(m.to(INT64), (0, words * 32 - vocab))
    bits = padded.reshape(*m.shape[:-1], words, 32) << torch.arange(32, dtype=INT64)
    packed = bits.sum(dim=-1)
    packed = torch.where(packed >= 2 ** 31, packed - 2 ** 32, packed)
    return packed.to(INT32)


def unpack_bitmask(words: torch.Tensor, vocab: int) -> torch.Tensor:
    """int32 [..., ceil(V/32)] -> bool [..., V] (bits past V ignored)."""
    w = words.detach().to("cpu", INT64) & 0xFFFFFFFF
    if w.shape[-1] != bitmask_words(vocab):
        raise ValueError(f"a bitmask of V = {vocab} tokens needs {bitmask_words(vocab)} words "
                         f"per row, got {w.shape[-1]}")
    bits = (w[..., None] >> torch.arange(32, dtype=INT64)) & 1
    return bits.reshape(*w.shape[:-1], w.shape[-1] * 32)[..., :vocab].bool()


# ----------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------
def _per_row(value, batch: int, name: str, dtype=F64) -> torch.Tensor:
    """A scalar or a [B] tensor as a [B] CPU tensor of dtype."""
    if torch.is_tensor(value):
        t = value.detach().to("cpu")
        if t.dim() == 0:
            t = t.expand(batch)
        if tuple(t.shape) != (batch,):
            raise ValueError(f"{name}: expected a scalar or shape [{batch}], got "
                             f"{tuple(value.shape)}")
        if dtype == INT64 and t.is_floating_point() and not torch.equal(t, t.round()):
            raise ValueError(f"{name}: expected integers")
        return t.to(dtype).clone()
    if dtype == INT64 and float(value) != int(value):
        raise ValueError(f"{name}: expected an integer, got {value}")
    return torch.full((batch,), value, dtype=dtype)


@dataclass
class _Params:
    temperature: torch.Tensor
    top_k: torch.Tensor
    top_p: torch.Tensor
    min_p: torch.Tensor
    repetition_penalty: torch.Tensor
    presence_penalty: torch.Tensor
    frequency_penalty: torch.Tensor


def _params(batch, temperature, top_k, top_p, min_p, repetition_penalty, presence_penalty,
            frequency_penalty) -> _Params:
    """Per-row parameters, checked against their domains (ValueError)."""
    p = _Params(_per_row(temperature, batch, "temperature"),
                _per_row(top_k, batch, "top_k", INT64),
                _per_row(top_p, batch, "top_p"),
                _per_row(min_p, batch, "min_p"),
                _per_row(repetition_penalty, batch, "repetition_penalty"),
                _per_row(presence_penalty, batch, "presence_penalty"),
                _per_row(frequency_penalty, batch, "frequency_penalty"))
    checks = [
        ("temperature", p.temperature, (p.temperature >= 0) & p.temperature.isfinite(),
         "finite and >= 0"),
        ("top_k", p.top_k, p.top_k >= 0, ">= 0"),
        ("top_p", p.top_p, (p.top_p > 0) & (p.top_p <= 1), "in (0, 1]"),
        ("min_p", p.min_p, (p.min_p >= 0) & (p.min_p < 1), "in [0, 1)"),
        ("repetition_penalty", p.repetition_penalty,
         (p.repetition_penalty > 0) & p.repetition_penalty.isfinite(), "finite and > 0"),
        ("presence_penalty", p.presence_penalty, p.presence_penalty.isfinite(), "finite"),
        ("frequency_penalty", p.frequency_penalty, p.frequency_penalty.isfinite(), "finite"),
    ]
    for name, values, ok, what in checks:
        if not bool(ok.all()):
            bad = values[~ok][0].item()
            raise ValueError(f"{name} must be {what}, got {bad}")
    return p


def _logits64(logits: torch.Tensor) -> torch.Tensor:
    if logits.dim() != 2:
        raise ValueError(f"logits must be [B, V], got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be floating point, got {logits.dtype}")
    return logits.detach().to("cpu", F64).clone()


# ----------------------------------------------------------------------------
# Pipeline steps
# ----------------------------------------------------------------------------
def first_argmax(x: torch.Tensor) -> torch.Tensor:
    """int64 [...]: the smallest index of the maximum over the last dim; -1
    where the maximum is -inf (nothing to choose)."""
    m = x.amax(dim=-1, keepdim=True)
    idx = torch.arange(x.shape[-1], dtype=INT64).expand_as(x)
    first = torch.where(x == m, idx, x.shape[-1]).amin(dim=-1)
    return torch.where(m.squeeze(-1) == NEG_INF, -1, first)


def _top2_gap(x: torch.Tensor) -> torch.Tensor:
    """float64 [...]: largest minus second largest over the last dim (inf when
    there is no finite runner-up, NaN when there is no finite maximum)."""
    if x.shape[-1] < 2:
        return torch.where(x[..., 0] > NEG_INF, math.inf, math.nan)
    top = torch.topk(x, 2, dim=-1).values
    gap = top[..., 0] - top[..., 1]
    gap = torch.where(top[..., 1] == NEG_INF, math.inf, gap)
    return torch.where(top[..., 0] == NEG_INF, math.nan, gap)


def penalize_ref(logits, *, repetition_penalty=1.0, presence_penalty=0.0,
                 frequency_penalty=0.0, seen_mask=None, token_counts=None,
                 allowed_mask=None) -> torch.Tensor:
    """Steps 1-4: the penalized logits, float64 [B, V]."""
    l = _logits64(logits)
    batch, vocab = l.shape
    rep = _per_row(repetition_penalty, batch, "repetition_penalty")[:, None]
    presence = _per_row(presence_penalty, batch, "presence_penalty")[:, None]
    frequency = _per_row(frequency_penalty, batch, "frequency_penalty")[:, None]
    if allowed_mask is not None:
        l = torch.where(unpack_bitmask(allowed_mask, vocab), l, NEG_INF)
    if bool((rep != 1).any() or (presence != 0).any()):
        if seen_mask is None:
            raise ValueError("repetition / presence penalties need seen_mask")
        seen = unpack_bitmask(seen_mask, vocab)
        l = torch.where(seen, torch.where(l > 0, l / rep, l * rep), l)
        l = torch.where(seen, l - presence, l)
    if bool((frequency != 0).any()):
        if token_counts is None:
            raise ValueError("the frequency penalty needs token_counts")
        counts = token_counts.detach().to("cpu", F64)
        if tuple(counts.shape) != (batch, vocab):
            raise ValueError(f"token_counts must be [{batch}, {vocab}], got "
                             f"{tuple(counts.shape)}")
        l = l - frequency * counts
    return l


def _softmax_parts(s: torch.Tensor):
    """(p, log_softmax) of s [B, V] by the formulas of step 6; rows without a
    finite value give p = 0 and log_softmax = NaN."""
    m = s.amax(dim=-1, keepdim=True)
    empty = m == NEG_INF
    m = torch.where(empty, 0.0, m)
    e = torch.exp(s - m)
    z = e.sum(dim=-1, keepdim=True)
    p = torch.where(empty, 0.0, e / torch.where(empty, 1.0, z))
    logp = torch.where(empty, math.nan, s - m - torch.log(z))
    return p, logp


def truncate_ref(probs, top_k=0, top_p=1.0, min_p=0.0) -> torch.Tensor:
    """Step 7: bool [B, V], the survivors of top-k, top-p (on the top-k
    survivors) and min-p for the distributions probs [B, V] (float64)."""
    p = probs.detach().to("cpu", F64)
    batch, vocab = p.shape
    k = _per_row(top_k, batch, "top_k", INT64)
    tp = _per_row(top_p, batch, "top_p")[:, None]
    mp = _per_row(min_p, batch, "min_p")[:, None]
    desc = torch.sort(p, dim=-1, descending=True).values
    k_eff = torch.where((k > 0) & (k < vocab), k, vocab)
    kth = desc.gather(1, (k_eff - 1)[:, None])
    keep_k = p >= kth
    # S_t = sum of the top-k survivors' p strictly above p_t, summed from the top.
    desc_k = torch.where(desc >= kth, desc, 0.0)
    prefix = torch.cat([torch.zeros(batch, 1, dtype=F64), desc_k.cumsum(dim=-1)], dim=-1)
    n_le = torch.searchsorted(desc_k.flip(-1).contiguous(), p.contiguous(), right=True)
    above = prefix.gather(1, vocab - n_le)
    z_k = prefix[:, vocab:]
    keep_p = (tp >= 1) | (above < tp * z_k)
    keep_min = p >= mp * desc[:, :1]
    return (p > 0) & keep_k & keep_p & keep_min


def race_ref(weights: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Step 8: int64 [...], argmax over w_t > 0 of log(w_t) - log(-log(u_t)),
    ties to the smallest id, -1 where no weight is positive."""
    return first_argmax(_race_scores(weights, uniforms))


def _race_scores(weights, uniforms):
    w = weights.to(F64)
    u = uniforms.detach().to("cpu", F64)
    return torch.where(w > 0, torch.log(w) - torch.log(-torch.log(u)), NEG_INF)


def _check_uniforms(u: torch.Tensor, shape, name: str) -> torch.Tensor:
    u = u.detach().to("cpu", F64)
    if tuple(u.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {list(shape)}, got {list(u.shape)}")
    if not bool(((u > 0) & (u < 1)).all()):
        raise ValueError(f"{name} must lie strictly inside (0, 1)")
    return u


@dataclass
class _Pipeline:
    logits: torch.Tensor     # [B, V] penalized logits (steps 1-4)
    greedy: torch.Tensor     # bool [B]
    scaled: torch.Tensor     # [B, V] l / T (l for greedy rows)
    probs: torch.Tensor      # [B, V] softmax(scaled)
    logp: torch.Tensor       # [B, V] log_softmax(scaled)
    survivors: torch.Tensor  # bool [B, V] (one-hot at the argmax for greedy rows)
    argmax: torch.Tensor     # int64 [B]: argmax of the penalized logits (-1: none)


def _pipeline(logits, temperature, top_k, top_p, min_p, repetition_penalty, presence_penalty,
              frequency_penalty, seen_mask, token_counts, allowed_mask) -> _Pipeline:
    """Steps 1-7 for every row."""
    batch = logits.shape[0]
    prm = _params(batch, temperature, top_k, top_p, min_p, repetition_penalty,
                  presence_penalty, frequency_penalty)
    l = penalize_ref(logits, repetition_penalty=prm.repetition_penalty,
                     presence_penalty=prm.presence_penalty,
                     frequency_penalty=prm.frequency_penalty, seen_mask=seen_mask,
                     token_counts=token_counts, allowed_mask=allowed_mask)
    greedy = prm.temperature == 0
    scale = torch.where(greedy, 1.0, prm.temperature)[:, None]
    s = l / scale
    p, logp = _softmax_parts(s)
    argmax = first_argmax(l)
    survivors = truncate_ref(p, prm.top_k, prm.top_p, prm.min_p)
    one_hot = torch.zeros_like(survivors)
    has = argmax >= 0
    one_hot[has.nonzero().squeeze(-1), argmax[has]] = True
    survivors = torch.where(greedy[:, None], one_hot, survivors)
    return _Pipeline(l, greedy, s, p, logp, survivors, argmax)


def _distribution(pipe: _Pipeline) -> torch.Tensor:
    """The renormalized truncated distribution q [B, V] (zeros for empty rows)."""
    w = torch.where(pipe.survivors, torch.where(pipe.greedy[:, None], 1.0, pipe.probs), 0.0)
    total = w.sum(dim=-1, keepdim=True)
    return torch.where(total > 0, w / torch.where(total > 0, total, 1.0), 0.0)


# ----------------------------------------------------------------------------
# Decode sampling
# ----------------------------------------------------------------------------
@dataclass
class SamplingResult:
    """What sample_ref computes (CPU tensors)."""
    tokens: torch.Tensor      # int64 [B]; -1 for rows with no token left
    logprobs: torch.Tensor    # float64 [B]: log_softmax(l / T)[token] (T = 1 if greedy)
    logits: torch.Tensor      # float64 [B, V]: penalized logits (steps 1-4)
    probs: torch.Tensor       # float64 [B, V]: p of step 6 (T = 1 for greedy rows)
    survivors: torch.Tensor   # bool [B, V]: step 7 (one-hot for greedy rows)
    greedy: torch.Tensor      # bool [B]
    uniforms: Optional[torch.Tensor]  # float64 [B, V] used by the race (None: all greedy)
    # float64 [B]: winner's race score minus the runner-up's among survivors
    # (greedy rows: top-1 minus top-2 penalized logit); inf with one candidate.
    # A kernel may pick a different token only where this is within its rounding.
    margin: torch.Tensor


def sample_ref(logits, *, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0,
               repetition_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0,
               seen_mask=None, token_counts=None, allowed_mask=None, seeds=None,
               offsets=None, noise=None) -> SamplingResult:
    """One decode sampling step for every row (steps 1-8 of the module docstring)."""
    pipe = _pipeline(logits, temperature, top_k, top_p, min_p, repetition_penalty,
                     presence_penalty, frequency_penalty, seen_mask, token_counts, allowed_mask)
    batch, vocab = pipe.logits.shape
    tokens = pipe.argmax.clone()
    margin = _top2_gap(pipe.logits)
    u = None
    if noise is not None:
        u = _check_uniforms(noise, (batch, vocab), "noise")
    elif not bool(pipe.greedy.all()):
        if seeds is None or offsets is None:
            raise ValueError("sampled rows need seeds and offsets (or noise)")
        u = philox_uniforms(_row_u64(seeds, batch, "seeds"),
                            _row_u64(offsets, batch, "offsets"), vocab, SAMPLE_STREAM)
    if u is not None:
        scores = _race_scores(torch.where(pipe.survivors, pipe.probs, 0.0), u)
        sampled = first_argmax(scores)
        tokens = torch.where(pipe.greedy, tokens, sampled)
        margin = torch.where(pipe.greedy, margin, _top2_gap(scores))
    valid = tokens >= 0
    logprobs = pipe.logp.gather(1, tokens.clamp_min(0)[:, None]).squeeze(1)
    logprobs = torch.where(valid, logprobs, math.nan)
    return SamplingResult(tokens, logprobs, pipe.logits, pipe.probs, pipe.survivors, pipe.greedy,
                          u, margin)


def truncated_distribution_ref(logits, *, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0,
                               repetition_penalty=1.0, presence_penalty=0.0,
                               frequency_penalty=0.0, seen_mask=None, token_counts=None,
                               allowed_mask=None):
    """(survivors bool [B, V], q float64 [B, V]): steps 1-7 and the
    distribution every sampled token of a row follows (one-hot for greedy
    rows, zeros for rows with no token left)."""
    pipe = _pipeline(logits, temperature, top_k, top_p, min_p, repetition_penalty,
                     presence_penalty, frequency_penalty, seen_mask, token_counts, allowed_mask)
    return pipe.survivors, _distribution(pipe)


# ----------------------------------------------------------------------------
# State updates
# ----------------------------------------------------------------------------
def _token_matrix(tokens) -> torch.Tensor:
    t = torch.as_tensor(tokens).detach().to("cpu", INT64)
    return t[:, None] if t.dim() == 1 else t


def update_seen_mask_ref(seen_mask: torch.Tensor, tokens) -> torch.Tensor:
    """int32 [B, W]: seen_mask with the bit of every token of each row set;
    tokens [B] or [B, n]; entries < 0 are skipped (rows left untouched).
    Returns a new tensor (the input is not modified)."""
    words = seen_mask.shape[-1]
    bits = unpack_bitmask(seen_mask, words * 32).clone()
    t = _token_matrix(tokens)
    if t.shape[0] != bits.shape[0]:
        raise ValueError("tokens and seen_mask disagree on B")
    if bool((t >= words * 32).any()):
        raise ValueError("a token lies past the mask")
    rows, cols = (t >= 0).nonzero(as_tuple=True)
    bits[rows, t[rows, cols]] = True
    return pack_bitmask(bits)


def update_token_counts_ref(token_counts: torch.Tensor, tokens) -> torch.Tensor:
    """int32 [B, V]: token_counts plus one per occurrence of each row's tokens
    ([B] or [B, n]; entries < 0 skipped). Returns a new tensor."""
    counts = token_counts.detach().to("cpu", INT64).clone()
    t = _token_matrix(tokens)
    valid = t >= 0
    counts.scatter_add_(1, t.clamp_min(0), valid.to(INT64))
    return counts.to(INT32)


# ----------------------------------------------------------------------------
# Speculative verification
# ----------------------------------------------------------------------------
@dataclass
class SpecResult:
    """What speculative_verify_ref computes (CPU tensors)."""
    accepted: torch.Tensor      # int64 [B]: accepted drafts, 0..k
    tokens: torch.Tensor        # int64 [B, k+1]: drafts, recovered/bonus token, then -1
    target_probs: torch.Tensor  # float64 [B, k+1, V]: Q_i (truncated, renormalized)
    target_argmax: torch.Tensor  # int64 [B, k+1]: argmax of the penalized logits
    accept: Optional[torch.Tensor]  # bool [B, k]: each position's test (None: greedy variant)


def _positions(value, batch: int, positions: int, name: str, dtype=F64):
    """A per-row parameter for the flattened [B * (k+1)] rows."""
    return _per_row(value, batch, name, dtype).repeat_interleave(positions)


def _position_rows(x, batch: int, positions: int, name: str):
    """A mask / count tensor given per row [B, N] or per position [B, k+1, N]
    as [B * (k+1), N]."""
    if x is None:
        return None
    if x.dim() == 2 and x.shape[0] == batch:
        return x.detach().to("cpu").repeat_interleave(positions, dim=0)
    if x.dim() == 3 and tuple(x.shape[:2]) == (batch, positions):
        return x.detach().to("cpu").reshape(batch * positions, x.shape[2])
    raise ValueError(f"{name} must be [B, N] or [B, k+1, N], got {tuple(x.shape)}")


def speculative_verify_ref(draft_tokens, draft_probs, target_logits, *, temperature=1.0,
                           top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0,
                           presence_penalty=0.0, frequency_penalty=0.0, seen_mask=None,
                           token_counts=None, allowed_mask=None, seeds=None, offsets=None,
                           accept_uniforms=None, race_uniforms=None) -> SpecResult:
    """Verification of k draft tokens per row against k+1 target positions
    (module docstring, "Speculative verification"). accept_uniforms [B, k] and
    race_uniforms [B, k+1, V] replace the Philox uniforms when given."""
    if target_logits.dim() != 3:
        raise ValueError(f"target_logits must be [B, k+1, V], got {tuple(target_logits.shape)}")
    batch, positions, vocab = target_logits.shape
    k = positions - 1
    drafts = torch.as_tensor(draft_tokens).detach().to("cpu", INT64)
    if tuple(drafts.shape) != (batch, k):
        raise ValueError(f"draft_tokens must be [{batch}, {k}], got {tuple(drafts.shape)}")
    if bool(((drafts < 0) | (drafts >= vocab)).any()):
        raise ValueError("draft tokens must lie in [0, V)")
    flat = target_logits.reshape(batch * positions, vocab)
    pipe = _pipeline(flat, _positions(temperature, batch, positions, "temperature"),
                     _positions(top_k, batch, positions, "top_k", INT64),
                     _positions(top_p, batch, positions, "top_p"),
                     _positions(min_p, batch, positions, "min_p"),
                     _positions(repetition_penalty, batch, positions, "repetition_penalty"),
                     _positions(presence_penalty, batch, positions, "presence_penalty"),
                     _positions(frequency_penalty, batch, positions, "frequency_penalty"),
                     _position_rows(seen_mask, batch, positions, "seen_mask"),
                     _position_rows(token_counts, batch, positions, "token_counts"),
                     _position_rows(allowed_mask, batch, positions, "allowed_mask"))
    q = _distribution(pipe).reshape(batch, positions, vocab)
    argmax = pipe.argmax.reshape(batch, positions)
    pos = torch.arange(positions, dtype=INT64)[None, :]

    if draft_probs is None:
        match = drafts == argmax[:, :k]
        accepted = match.to(INT64).cumprod(dim=1).sum(dim=1)
        tokens = torch.where(pos <= accepted[:, None], argmax, -1)
        return SpecResult(accepted, tokens, q, argmax, None)

    p = draft_probs.detach().to("cpu", F64)
    if tuple(p.shape) != (batch, k, vocab):
        raise ValueError(f"draft_probs must be [{batch}, {k}, {vocab}], got {tuple(p.shape)}")
    if accept_uniforms is None or race_uniforms is None:
        if seeds is None or offsets is None:
            raise ValueError("speculative sampling needs seeds and offsets (or uniforms)")
        seeds_b = _row_u64(seeds, batch, "seeds")
        offsets_b = _row_u64(offsets, batch, "offsets")
    if accept_uniforms is None:
        a = philox_uniforms(seeds_b, offsets_b, k, SPEC_ACCEPT_STREAM)
    else:
        a = _check_uniforms(accept_uniforms, (batch, k), "accept_uniforms")
    if race_uniforms is None:
        r = torch.stack([philox_uniforms(seeds_b, offsets_b, vocab, spec_race_stream(i))
                         for i in range(positions)], dim=1)
    else:
        r = _check_uniforms(race_uniforms, (batch, positions, vocab), "race_uniforms")

    p_d = p.gather(2, drafts[..., None]).squeeze(-1)
    q_d = q[:, :k].gather(2, drafts[..., None]).squeeze(-1)
    accept = a * p_d < q_d
    accepted = accept.to(INT64).cumprod(dim=1).sum(dim=1)
    residual = (q[:, :k] - p).clamp_min(0.0)
    residual = torch.where(residual.sum(dim=-1, keepdim=True) > 0, residual, q[:, :k])
    recovered = race_ref(residual, r[:, :k])          # [B, k]
    bonus = race_ref(q[:, k], r[:, k])                 # [B]
    last = torch.cat([recovered, bonus[:, None]], dim=1).gather(1, accepted[:, None])
    padded = torch.cat([drafts, torch.full((batch, 1), -1, dtype=INT64)], dim=1)
    tokens = torch.where(pos < accepted[:, None], padded, -1)
    tokens = torch.where(pos == accepted[:, None], last, tokens)
    return SpecResult(accepted, tokens, q, argmax, accept)


# ----------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------
@dataclass
class ChiSquare:
    statistic: float
    dof: int
    pvalue: float


def chi_square_test(counts, probs, min_expected: float = 5.0) -> ChiSquare:
    """Pearson's chi-square goodness of fit of observed counts [n] to
    probabilities probs [n] (normalized here). Bins with an expected count
    below min_expected are pooled into one bin (merged into the smallest other
    bin if the pool itself stays below it). A count in a bin of probability 0
    gives statistic inf and p-value 0. p-value = Q(dof / 2, stat / 2), the
    regularized upper incomplete gamma function (torch.special.gammaincc)."""
    c, pr = (x.detach().to("cpu", F64).flatten() if torch.is_tensor(x)
             else torch.tensor(x, dtype=F64).flatten() for x in (counts, probs))
    if c.shape != pr.shape:
        raise ValueError("counts and probs differ in length")
    if bool((pr < 0).any()) or not float(pr.sum()) > 0:
        raise ValueError("probs must be >= 0 with a positive sum")
    pr = pr / pr.sum()
    impossible = pr == 0
    if bool((c[impossible] > 0).any()):
        return ChiSquare(math.inf, int((~impossible).sum()) - 1, 0.0)
    c, expected = c[~impossible], pr[~impossible] * c.sum()
    small = expected < min_expected
    if bool(small.any()):
        pool_c, pool_e = c[small].sum(), expected[small].sum()
        c, expected = c[~small], expected[~small]
        if float(pool_e) >= min_expected or c.numel() == 0:
            c = torch.cat([c, pool_c[None]])
            expected = torch.cat([expected, pool_e[None]])
        else:
            j = int(expected.argmin())
            c[j] += pool_c
            expected[j] += pool_e
    dof = c.numel() - 1
    if dof <= 0:
        return ChiSquare(0.0, 0, 1.0)
    stat = float(((c - expected) ** 2 / expected).sum())
    pvalue = float(torch.special.gammaincc(torch.tensor(dof / 2.0, dtype=F64),
                                           torch.tensor(stat / 2.0, dtype=F64)))
    return ChiSquare(stat, dof, pvalue)
