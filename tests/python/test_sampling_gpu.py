"""GPU tests of fused decode sampling: hpc_ops.sample, hpc_ops.update_seen_mask
and hpc_ops.verify_speculative against the float64 mirror
sampling_reference.py, whose module docstring is the specification (pipeline
order, threshold semantics with ties, Philox4x32-10 stream-0 uniforms from
seeds and offsets, the exponential race, -1 / NaN for rows without a token,
speculative verification). Skipped without an sm_90 GPU and in builds
without the 'sampling' family; the ops are looked up at call time.

Exact agreement. Given the same seeds and offsets the kernel draws the
mirror's uniforms, so its tokens must be the mirror's, row for row. A float32
kernel may differ from the float64 mirror only where float32 rounding can
change a decision, and sample_verdict marks such rows "undecided" from the
mirror alone (never from the kernel's output):
  * the race winner leads the best other candidate of the widest survivor
    set float32 could keep by less than MARGIN (the mirror's margin, over that
    set), or a greedy row's top penalized logit leads the next distinct value
    by less than MARGIN * max(1, |top|); exact ties between identical inputs
    stay decided: they must go to the smallest token id;
  * the winner is not a sure survivor: its probability (or the top-p mass
    above it) lies within THRESHOLD_RTOL of a top-k, top-p or min-p
    threshold. truncation_bounds gives a "tight" set float32 surely keeps and
    a "loose" set it may keep; a row is decided when its winner is tight and
    beats every loose rival.
An undecided row must still give a token some float32 evaluation could give
(a loose survivor; a near-argmax token for greedy rows). Each check allows at
most allowed_undecided(rows) undecided rows (5 % plus one from 8 rows up,
none below 8), so a test cannot pass by skipping everything; the count
depends on the data only, so it is the same for every kernel. Speculative
verification gets the same treatment (spec_verdict): acceptance tests
a * P[d] < Q[d] that sit within rounding of Q, and recovered / bonus races
with a tiny lead, are undecided.

Logprobs: |got - log p[token]| <= LOGPROB_ATOL + LOGPROB_RTOL * |log p| with
p the mirror's float64 softmax after penalties and temperature (T = 1 for
greedy rows), NaN exactly where the token is -1.

Outputs are poisoned before every call (tokens -12345, logprobs NaN), so a row
the kernel never wrote fails; the inputs (logits, masks, counts, parameter
tensors, seeds, offsets) must be bit-identical afterwards. Logits come as
float32 and bfloat16 rows of N(0, s^2) values (s in [1, 4] per row) with 8
boosted tokens, ~1 % -inf, and rows strided wider than V (the extra columns
hold NaN). Masks have their bits past V set (they must be ignored).

Coverage: every parameter alone and combined, greedy rows, every penalty,
allowed masks (a row with one allowed token, a row with none), parameters as
Python scalars, as [B] tensors and varied per row (mixed greedy and sampled
rows, top_k entries >= V meaning off), V in {1, 2, 31, 32, 33, 100, 1000,
32000, 50257, 128256, 151936, 256000}; ties at the top-k and top-p thresholds
and at the argmax; seeds and offsets as Python ints and tensors (negative
int64 seeds, offsets above 2**32); chi-square tests of the sampled
distribution (fixed seeds, varying offsets) against
truncated_distribution_ref at significance P_MIN; batch invariance; run-to-run
determinism; update_seen_mask; CUDA-graph capture and replay with new logits
and offsets (sample + update_seen_mask, and verify_speculative); torch.compile
(fullgraph) against eager; no host synchronization and no allocation besides
the outputs; argument errors (ValueError naming the argument, before any
launch, outputs untouched).

Not checked on the host (the API does not synchronize): the values inside
per-row parameter tensors, probabilities in draft_probs (the caller's data,
used as given; outside [0, 1] is undefined), draft token ids outside [0, V)
and tokens >= V given to update_seen_mask. The tests pass such values only
where the mirror defines them (top_k entries >= V: off).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import pytest
import torch

import hpc_ops
import sampling_reference as sr
from hpc_test_utils import capture_graph, expect_rejected, needs_family, poison_, poisoned
from tolerances import assert_bits_equal

pytestmark = [pytest.mark.gpu, needs_family("sampling")]

F32, BF16, F64 = torch.float32, torch.bfloat16, torch.float64
I32, I64 = torch.int32, torch.int64
NEG_INF = float("-inf")

MARGIN = 1e-3               # race scores (and greedy logits, relative) closer than this: undecided
THRESHOLD_RTOL = 1e-4       # p, sums and Q within this relative distance of a threshold: undecided
LOGPROB_ATOL, LOGPROB_RTOL = 2e-4, 2e-5
UNDECIDED_FRACTION = 0.05
P_MIN = 1e-3                # significance of the chi-square tests (fixed seeds: deterministic)
N_DRAWS = 20000

PARAMS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "presence_penalty",
          "frequency_penalty")
TRUNCATION_OFF = {"top_k": 0, "top_p": 1.0, "min_p": 0.0}


def sample(logits, **kwargs):
    """hpc_ops.sample, looked up at call time (a build without the 'sampling'
    family skips these tests instead of failing at import)."""
    return hpc_ops.sample(logits, **kwargs)


def update_seen_mask(seen_mask, tokens):
    return hpc_ops.update_seen_mask(seen_mask, tokens)


def verify_speculative(*args, **kwargs):
    return hpc_ops.verify_speculative(*args, **kwargs)


def allowed_undecided(rows: int) -> int:
    return int(UNDECIDED_FRACTION * rows) + (1 if rows >= 8 else 0)


# ----------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------
def make_logits(gen, rows, vocab, dtype=F32, pad=0, neg_inf=0.01):
    """[rows, vocab] logits on the GPU: N(0, s^2) with s in [1, 4] per row, 8
    boosted tokens (+4..8), a fraction neg_inf of -inf. pad > 0: a view into
    rows of vocab + pad elements whose extra columns hold NaN."""
    width = vocab + pad
    x = torch.randn(rows, width, generator=gen, device="cuda")
    x *= 1.0 + 3.0 * torch.rand(rows, 1, generator=gen, device="cuda")
    hot = min(8, vocab)
    idx = torch.randint(0, vocab, (rows, hot), generator=gen, device="cuda")
    x.scatter_add_(1, idx, 4.0 + 4.0 * torch.rand(rows, hot, generator=gen, device="cuda"))
    if neg_inf > 0:
        x.masked_fill_(torch.rand(rows, width, generator=gen, device="cuda") < neg_inf, NEG_INF)
    x = x.to(dtype)
    if pad:
        x[:, vocab:] = float("nan")
    return x[:, :vocab]


def set_padding_bits_(words: torch.Tensor, vocab: int) -> torch.Tensor:
    """Sets the bits past V of the last word of each row (to be ignored)."""
    rem = vocab % 32
    if rem:
        pad = (0xFFFFFFFF << rem) & 0xFFFFFFFF
        words[..., -1] |= pad - 2 ** 32 if pad >= 2 ** 31 else pad
    return words


def pack(mask: torch.Tensor) -> torch.Tensor:
    """bool [..., V] -> int32 [..., ceil(V/32)] on the GPU, padding bits set."""
    return set_padding_bits_(sr.pack_bitmask(mask).to("cuda"), mask.shape[-1])


def make_history(gen, logits):
    """(seen_mask, token_counts) for logits [rows, V]: ~3 % of the tokens seen
    and half of each row's 8 largest logits (so penalties move the top);
    counts 1..5 on ~70 % of the seen tokens, 0 elsewhere."""
    rows, vocab = logits.shape
    seen = torch.rand(rows, vocab, generator=gen, device="cuda") < 0.03
    top = logits.float().topk(min(8, vocab), dim=1).indices
    pick = torch.rand(top.shape, generator=gen, device="cuda") < 0.5
    seen.scatter_(1, top, seen.gather(1, top) | pick)
    counted = seen & (torch.rand(rows, vocab, generator=gen, device="cuda") < 0.7)
    counts = torch.randint(1, 6, (rows, vocab), generator=gen, device="cuda", dtype=I32)
    return pack(seen), torch.where(counted, counts, 0).to(I32)


def make_allowed(gen, logits, special=True):
    """(allowed_mask int32 [rows, W], bool [rows, V]): ~30 % of each row's
    tokens and half of its 8 largest logits allowed. special: row 0 allows
    everything, row 1 a single token, row 2 nothing (token -1)."""
    rows, vocab = logits.shape
    allowed = torch.rand(rows, vocab, generator=gen, device="cuda") < 0.3
    top = logits.float().topk(min(8, vocab), dim=1).indices
    allowed.scatter_(1, top, torch.rand(top.shape, generator=gen, device="cuda") < 0.5)
    allowed[:, 0] |= ~allowed.any(dim=1)          # no row left empty by chance
    if special:
        allowed[0] = True
        if rows > 1:
            allowed[1] = False
            allowed[1, int(torch.randint(0, vocab, (1,), generator=gen, device="cuda"))] = True
        if rows > 2:
            allowed[2] = False
    return pack(allowed), allowed


def row_pool(name: str, vocab: int) -> list:
    """Per-row values of each parameter: off, on, and boundary cases (top_k
    entries >= V mean off; a repetition penalty below 1 boosts)."""
    return {
        "temperature": [0.0, 0.5, 0.75, 1.0, 1.3],
        "top_k": [0, 1, 20, 50, vocab, vocab + 7],
        "top_p": [1.0, 0.5, 0.8, 0.9, 0.95],
        "min_p": [0.0, 0.01, 0.05, 0.1, 0.2],
        "repetition_penalty": [1.0, 0.8, 1.1, 1.3, 2.0],
        "presence_penalty": [0.0, -0.25, 0.3, 0.5, 1.0],
        "frequency_penalty": [0.0, -0.1, 0.1, 0.25, 0.5],
    }[name]


def make_params(gen, config: dict, form: str, rows: int, vocab: int) -> dict:
    """The parameters of config as the kernel takes them. form "scalar":
    Python numbers (values exact in float32, so the kernel and the mirror use
    the same numbers); "tensor": the same values as [rows] GPU tensors
    (top_k int32, the others float32); "rows": [rows] tensors of values varied
    per row (row_pool, every value used once rows >= the pool size)."""
    params = {}
    for name in PARAMS:
        if name not in config:
            continue
        dtype = I32 if name == "top_k" else F32
        if form == "scalar":
            params[name] = config[name]
        elif form == "tensor":
            params[name] = torch.full((rows,), config[name], dtype=dtype, device="cuda")
        elif form == "rows":
            pool = torch.tensor(row_pool(name, vocab), dtype=dtype)
            order = torch.randperm(rows, generator=gen, device="cuda").cpu()
            params[name] = pool[order % len(pool)].to("cuda")
        else:
            raise ValueError(form)
    return params


def make_seeds(gen, rows: int, as_ints: bool):
    """(seeds, offsets): Python ints, or int64 [rows] GPU tensors (seeds of
    either sign, offsets up to 2**40)."""
    if as_ints:
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=gen, device="cuda"))
        offset = int(torch.randint(0, 2 ** 40, (1,), generator=gen, device="cuda"))
        return seed, offset
    seeds = torch.randint(-2 ** 62, 2 ** 62, (rows,), generator=gen, device="cuda", dtype=I64)
    offsets = torch.randint(0, 2 ** 40, (rows,), generator=gen, device="cuda", dtype=I64)
    return seeds, offsets


class SamplingArgs:
    """The keyword arguments shared by sample and verify_speculative, built
    from a problem's params, masks, seeds and offsets attributes."""

    def masks(self) -> dict:
        named = (("seen_mask", self.seen_mask), ("token_counts", self.token_counts),
                 ("allowed_mask", self.allowed_mask))
        return {name: t for name, t in named if t is not None}

    def kwargs(self) -> dict:
        return dict(self.params, **self.masks(), seeds=self.seeds, offsets=self.offsets)

    def truncation(self) -> dict:
        return {name: self.params.get(name, off) for name, off in TRUNCATION_OFF.items()}


@dataclass
class Problem(SamplingArgs):
    """One call of hpc_ops.sample (every tensor on the GPU)."""
    logits: torch.Tensor
    params: dict
    seen_mask: Optional[torch.Tensor] = None
    token_counts: Optional[torch.Tensor] = None
    allowed_mask: Optional[torch.Tensor] = None
    seeds: object = 0
    offsets: object = 0

    @property
    def rows(self) -> int:
        return self.logits.shape[0]

    @property
    def vocab(self) -> int:
        return self.logits.shape[1]

    def tensors(self) -> list:
        values = [self.logits, *self.params.values(), *self.masks().values(), self.seeds,
                  self.offsets]
        return [t for t in values if torch.is_tensor(t)]

    def mirror(self) -> sr.SamplingResult:
        return sr.sample_ref(self.logits, **self.kwargs())

    def select(self, index: torch.Tensor) -> "Problem":
        """The rows index (a GPU index tensor) as a problem of their own."""
        def pick(v):
            return v[index] if torch.is_tensor(v) else v
        return Problem(self.logits[index], {n: pick(v) for n, v in self.params.items()},
                       pick(self.seen_mask), pick(self.token_counts), pick(self.allowed_mask),
                       pick(self.seeds), pick(self.offsets))


def cat_problems(a: Problem, b: Problem) -> Problem:
    """The rows of a, then those of b (every parameter a tensor in both)."""
    def cat(x, y):
        return None if x is None else torch.cat([x, y])
    return Problem(cat(a.logits, b.logits), {n: cat(v, b.params[n]) for n, v in a.params.items()},
                   cat(a.seen_mask, b.seen_mask), cat(a.token_counts, b.token_counts),
                   cat(a.allowed_mask, b.allowed_mask), cat(a.seeds, b.seeds),
                   cat(a.offsets, b.offsets))


def make_problem(gen, config: dict, vocab: int, rows: int, dtype=F32, form="scalar", pad=0):
    logits = make_logits(gen, rows, vocab, dtype, pad)
    params = make_params(gen, config, form, rows, vocab)
    seen = counts = allowed = None
    uses_seen = "repetition_penalty" in config or "presence_penalty" in config
    if uses_seen or "frequency_penalty" in config:
        seen, counts = make_history(gen, logits)
        seen = seen if uses_seen else None
        counts = counts if "frequency_penalty" in config else None
    if config.get("allowed"):
        allowed, _ = make_allowed(gen, logits)
    seeds, offsets = make_seeds(gen, rows, as_ints=form == "scalar")
    return Problem(logits, params, seen, counts, allowed, seeds, offsets)


# ----------------------------------------------------------------------------
# Which rows float32 rounding cannot change (from the mirror alone)
# ----------------------------------------------------------------------------
@dataclass
class Verdict:
    decided: torch.Tensor   # bool [B]: the kernel must give the mirror's token
    allowed: torch.Tensor   # bool [B, V]: tokens a float32 evaluation may give
    tight: torch.Tensor     # bool [B, V]: survivors float32 surely keeps (sampled rows)
    loose: torch.Tensor     # bool [B, V]: survivors float32 may keep


def _rows(value, rows: int, dtype=F64) -> torch.Tensor:
    return sr._per_row(value, rows, "parameter", dtype)


def truncation_bounds(probs: torch.Tensor, top_k, top_p, min_p):
    """(tight, loose) bool [B, V] around the mirror's survivors of step 7:
    tokens whose p lies within THRESHOLD_RTOL of the k-th largest p (unless
    all of them equal it exactly: identical inputs tie in float32 too), whose
    top-p sum lies within THRESHOLD_RTOL (plus the mass of those unsure top-k
    tokens) of top_p * Z_k, or whose p lies within THRESHOLD_RTOL of
    min_p * max(p) are in loose but not in tight."""
    p = probs
    rows, vocab = p.shape
    k = _rows(top_k, rows, I64)
    tp = _rows(top_p, rows)
    mp = _rows(min_p, rows)
    desc = torch.sort(p, dim=-1, descending=True).values
    k_on = (k > 0) & (k < vocab)
    kth = desc.gather(1, (torch.where(k_on, k, vocab) - 1)[:, None])
    band = ((p - kth).abs() <= THRESHOLD_RTOL * kth) & (p > 0) & k_on[:, None]
    only_exact = ~(band & (p != kth)).any(dim=1, keepdim=True)
    unsure_k = band & ~only_exact
    keep_k = p >= kth
    mass_k = (p * keep_k).sum(dim=1)
    slack = THRESHOLD_RTOL + (p * unsure_k).sum(dim=1) / mass_k.clamp_min(1e-300)
    slack = slack.clamp(max=0.5)
    p_on = tp < 1
    tp_tight = torch.where(p_on, tp * (1 - slack), 1.0)
    tp_loose = torch.where(p_on, (tp * (1 + slack)).clamp(max=1.0), 1.0)
    pass_p_tight = sr.truncate_ref(p, k, tp_tight, 0.0)
    pass_p_loose = sr.truncate_ref(p, k, tp_loose, 0.0) | unsure_k
    pass_m_tight = sr.truncate_ref(p, 0, 1.0, mp * (1 + THRESHOLD_RTOL))
    pass_m_loose = sr.truncate_ref(p, 0, 1.0, mp * (1 - THRESHOLD_RTOL))
    tight = pass_p_tight & ~unsure_k & pass_m_tight
    loose = (keep_k | unsure_k) & pass_p_loose & pass_m_loose & (p > 0)
    return tight, loose


def greedy_bounds(penalized: torch.Tensor, raw: torch.Tensor):
    """(decided [B], allowed [B, V]) of greedy rows: decided when no token
    other than those tied at the top lies within MARGIN * max(1, |top|) below
    it and the tied tokens have identical inputs (equal raw logits)."""
    top = penalized.amax(dim=1, keepdim=True)
    finite = top > NEG_INF
    tol = MARGIN * top.abs().clamp_min(1.0)
    near = (penalized >= top - tol) & (penalized > NEG_INF)
    at_top = (penalized == top) & finite
    first = sr.first_argmax(penalized).clamp_min(0)[:, None]
    same_input = ((raw == raw.gather(1, first)) | ~at_top).all(dim=1)
    decided = ((near == at_top).all(dim=1) & same_input) | ~finite.squeeze(1)
    return decided, near


def sample_verdict(res: sr.SamplingResult, raw: torch.Tensor, top_k=0, top_p=1.0,
                   min_p=0.0) -> Verdict:
    """Decided rows and possible tokens of a sample_ref result (see the module
    docstring); raw: the given logits as float64 [B, V]."""
    rows, vocab = res.probs.shape
    empty = res.tokens < 0
    tight, loose = truncation_bounds(res.probs, top_k, top_p, min_p)
    decided = torch.zeros(rows, dtype=torch.bool)
    allowed = loose.clone()
    if res.uniforms is not None:
        scores = torch.where(loose, torch.log(res.probs) - torch.log(-torch.log(res.uniforms)),
                             NEG_INF)
        tok = res.tokens.clamp_min(0)[:, None]
        own = scores.gather(1, tok).squeeze(1)
        rival = scores.scatter(1, tok, NEG_INF).amax(dim=1)
        decided = tight.gather(1, tok).squeeze(1) & (own - MARGIN > rival)
    if bool(res.greedy.any()):
        g_decided, g_allowed = greedy_bounds(res.logits, raw)
        decided = torch.where(res.greedy, g_decided, decided)
        allowed = torch.where(res.greedy[:, None], g_allowed, allowed)
    return Verdict(decided | empty, allowed & ~empty[:, None], tight, loose)


def problem_verdict(problem: Problem, res: sr.SamplingResult) -> Verdict:
    return sample_verdict(res, problem.logits.detach().to("cpu", F64), **problem.truncation())


# ----------------------------------------------------------------------------
# Running and checking
# ----------------------------------------------------------------------------
def run_sample(problem: Problem):
    """hpc_ops.sample into poisoned out / logprobs_out; (tokens, logprobs).
    The inputs must be bit-identical afterwards."""
    out = poisoned((problem.rows,), I32)
    logprobs_out = poisoned((problem.rows,), F32)
    before = [t.clone() for t in problem.tensors()]
    result = sample(problem.logits, **problem.kwargs(), return_logprobs=True, out=out,
                    logprobs_out=logprobs_out)
    torch.cuda.synchronize()
    assert isinstance(result, tuple) and len(result) == 2, \
        f"return_logprobs=True returns (tokens, logprobs), got {type(result)}"
    tokens, logprobs = result
    assert tokens is out and logprobs is logprobs_out, "the results must be the given out buffers"
    for t, t0 in zip(problem.tensors(), before):
        assert_bits_equal(t, t0, "an input of sample was modified")
    return tokens, logprobs


def check_tokens(res: sr.SamplingResult, verdict: Verdict, tokens: torch.Tensor,
                 what: str = "") -> torch.Tensor:
    """tokens (the kernel's, int32 [B] on the GPU) against the mirror; returns
    them as int64 on the CPU."""
    rows, vocab = res.probs.shape
    assert tokens.dtype == I32 and tokens.is_cuda and tuple(tokens.shape) == (rows,), \
        f"{what}tokens: {tokens.dtype}{tuple(tokens.shape)} on {tokens.device}, " \
        f"expected int32 [{rows}] on the GPU"
    got = tokens.detach().to("cpu", I64)
    want = res.tokens
    undecided = ~verdict.decided
    limit = allowed_undecided(rows)
    assert int(undecided.sum()) <= limit, (
        f"{what}{int(undecided.sum())} of {rows} rows are within float32 rounding of a decision "
        f"(at most {limit} allowed): the test data sits too close to ties")
    wrong = verdict.decided & (got != want)
    if bool(wrong.any()):
        b = int(wrong.nonzero()[0])
        raise AssertionError(
            f"{what}{int(wrong.sum())} of {rows} rows differ from the mirror; first row {b}: "
            f"got {int(got[b])}, mirror {int(want[b])} (greedy {bool(res.greedy[b])}, mirror "
            f"margin {float(res.margin[b]):.3g})")
    legal = (got >= 0) & (got < vocab)
    possible = legal & verdict.allowed.gather(1, got.clamp(0, vocab - 1)[:, None]).squeeze(1)
    bad = undecided & ~possible
    if bool(bad.any()):
        b = int(bad.nonzero()[0])
        raise AssertionError(
            f"{what}row {b} (within rounding of a tie, so not compared exactly) got token "
            f"{int(got[b])}, which no float32 evaluation of the pipeline gives (mirror "
            f"{int(want[b])})")
    return got


def check_logprobs(res: sr.SamplingResult, got: torch.Tensor, logprobs: torch.Tensor,
                   what: str = "") -> None:
    """logprobs (float32 [B]) = log_softmax after penalties and temperature at
    each row's token (got, the kernel's tokens), NaN where the token is -1."""
    rows = res.probs.shape[0]
    assert logprobs.dtype == F32 and logprobs.is_cuda and tuple(logprobs.shape) == (rows,), \
        f"{what}logprobs: {logprobs.dtype}{tuple(logprobs.shape)} on {logprobs.device}"
    lp = logprobs.detach().to("cpu", F64)
    valid = got >= 0
    assert bool(lp[~valid].isnan().all()), f"{what}rows without a token must report NaN logprobs"
    expect = torch.log(res.probs.gather(1, got.clamp_min(0)[:, None]).squeeze(1))
    close = (lp - expect).abs() <= LOGPROB_ATOL + LOGPROB_RTOL * expect.abs()
    bad = valid & ~close
    if bool(bad.any()):
        b = int(bad.nonzero()[0])
        raise AssertionError(
            f"{what}{int(bad.sum())} of {rows} logprobs are off; first row {b} (token "
            f"{int(got[b])}): got {float(lp[b])}, expected {float(expect[b])}")


def check_sample(problem: Problem, tokens, logprobs=None, res=None, verdict=None, what=""):
    """The kernel's outputs of problem against the mirror (computed here
    unless given); returns (tokens as int64 CPU, mirror result, verdict)."""
    res = problem.mirror() if res is None else res
    verdict = problem_verdict(problem, res) if verdict is None else verdict
    got = check_tokens(res, verdict, tokens, what)
    if logprobs is not None:
        check_logprobs(res, got, logprobs, what)
    return got, res, verdict


def run_and_check(problem: Problem, what=""):
    res = problem.mirror()
    verdict = problem_verdict(problem, res)
    tokens, logprobs = run_sample(problem)
    got, _, _ = check_sample(problem, tokens, logprobs, res, verdict, what)
    return got, tokens, logprobs, res, verdict


# ----------------------------------------------------------------------------
# Exact agreement with the mirror
# ----------------------------------------------------------------------------
# Values exact in float32 (a Python scalar means the same number to both).
CONFIGS = {
    "temperature": dict(temperature=0.75),
    "greedy": dict(temperature=0.0),
    "top_k": dict(temperature=1.0, top_k=50),
    "top_k1": dict(temperature=1.25, top_k=1),
    "top_p": dict(temperature=0.875, top_p=0.875),
    "min_p": dict(temperature=1.0, min_p=0.0625),
    "combined": dict(temperature=0.75, top_k=100, top_p=0.9375, min_p=0.015625),
    "repetition": dict(temperature=1.0, repetition_penalty=1.25),
    "repetition_boost": dict(temperature=0.875, top_k=40, repetition_penalty=0.75),
    "presence": dict(temperature=1.0, top_p=0.9375, presence_penalty=0.5),
    "frequency": dict(temperature=1.0, top_k=200, frequency_penalty=0.25),
    "penalties": dict(temperature=0.75, top_k=64, top_p=0.875, min_p=0.03125,
                      repetition_penalty=1.125, presence_penalty=0.25, frequency_penalty=0.125),
    "allowed": dict(temperature=1.0, top_p=0.9375, allowed=True),
    "greedy_everything": dict(temperature=0.0, top_k=5, top_p=0.5, min_p=0.25,
                              repetition_penalty=1.5, presence_penalty=0.5,
                              frequency_penalty=0.25, allowed=True),
    "everything": dict(temperature=0.875, top_k=50, top_p=0.9375, min_p=0.03125,
                       repetition_penalty=1.25, presence_penalty=0.375, frequency_penalty=0.125,
                       allowed=True),
}
DTYPE_IDS = {F32: "f32", BF16: "bf16"}


@dataclass(frozen=True)
class Case:
    config: str
    vocab: int = 32000
    rows: int = 16
    dtype: torch.dtype = F32
    form: str = "scalar"
    pad: int = 0

    @property
    def id(self) -> str:
        parts = [self.config, f"V{self.vocab}", f"B{self.rows}", DTYPE_IDS[self.dtype], self.form]
        return "-".join(parts + ([f"pad{self.pad}"] if self.pad else []))

    def build(self, gen) -> Problem:
        return make_problem(gen, CONFIGS[self.config], self.vocab, self.rows, self.dtype,
                            self.form, self.pad)


def _case_id(case: Case) -> str:
    return case.id


# Every configuration as float32 scalars and as bf16 [B] tensors over rows
# strided wider than V; per-row varied parameters (mixed greedy and sampled
# rows) for the combined configurations.
MAIN_CASES = (
    [Case(name) for name in CONFIGS]
    + [Case(name, dtype=BF16, form="tensor", pad=24) for name in CONFIGS]
    + [Case("everything", form="rows"),
       Case("everything", dtype=BF16, form="rows", pad=3),
       Case("penalties", form="rows", pad=1),
       Case("combined", dtype=BF16, form="rows"),
       Case("temperature", form="rows"),
       Case("allowed", dtype=BF16, form="rows", pad=64)]
)

# Production vocabularies (few rows: the mirror runs on the CPU).
VOCAB_CASES = [
    Case("penalties", vocab=v, rows=8 if v < 100000 else 4, dtype=dtype, form="rows",
         pad=0 if dtype == F32 else 5)
    for v in (32000, 50257, 128256, 151936, 256000) for dtype in (F32, BF16)
] + [Case("everything", vocab=151936, rows=4, form="rows", pad=128)]

# Tiny and odd vocabularies (mask words, a single token).
SMALL_VOCAB_CASES = [
    Case("everything", vocab=v, rows=8, dtype=BF16 if i % 2 else F32, form="rows")
    for i, v in enumerate((1, 2, 31, 32, 33, 100, 1000))
]


@pytest.mark.parametrize("case", MAIN_CASES, ids=_case_id)
def test_sample_matches_mirror(gen, case):
    run_and_check(case.build(gen))


@pytest.mark.parametrize("case", VOCAB_CASES, ids=_case_id)
def test_vocabulary_sizes(gen, case):
    run_and_check(case.build(gen))


@pytest.mark.parametrize("case", SMALL_VOCAB_CASES, ids=_case_id)
def test_small_vocabularies(gen, case):
    run_and_check(case.build(gen))


@pytest.mark.parametrize("dtype", [F32, BF16], ids=DTYPE_IDS.get)
def test_rows_without_any_token(gen, dtype):
    """Rows whose logits are all -inf, or all disallowed, give token -1 and a
    NaN logprob, greedy or sampled; a row with a single finite allowed logit
    gives that token (logprob 0: it holds all of p)."""
    rows, vocab = 8, 1000
    logits = make_logits(gen, rows, vocab, dtype)
    logits[0] = NEG_INF                       # sampled, nothing finite
    logits[2] = NEG_INF                       # greedy, nothing finite
    logits[4] = NEG_INF
    logits[4, 777] = 1.5                      # one finite logit
    _, allowed = make_allowed(gen, logits, special=False)
    allowed[1] = False                        # sampled, nothing allowed
    allowed[3] = False                        # greedy, nothing allowed
    allowed[5] = False
    allowed[5, 12] = True                     # greedy, one allowed token
    logits[5, 12] = 0.5
    allowed[4, 777] = True
    temperature = torch.tensor([1.0, 0.75, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0], device="cuda")
    seeds, offsets = make_seeds(gen, rows, as_ints=False)
    problem = Problem(logits, dict(temperature=temperature, top_p=0.875, top_k=20), None, None,
                      pack(allowed), seeds, offsets)
    got, _, _, res, _ = run_and_check(problem)
    assert res.tokens[:4].tolist() == [-1] * 4 and int(res.tokens[4]) == 777
    assert int(res.tokens[5]) == 12
    assert got[:4].tolist() == [-1] * 4 and got[4] == 777 and got[5] == 12


def test_greedy_ties_go_to_the_smallest_id(gen):
    """Three tokens share the largest logit: greedy picks the smallest id;
    the allowed mask, a repetition penalty and a negative presence penalty
    move the choice to the next tied token, the last one and a boosted one."""
    rows, vocab = 4, 5000
    logits = torch.randn(rows, vocab, generator=gen, device="cuda")
    tied = [7, 3000, vocab - 1]
    logits[:, tied] = 10.0
    allowed = torch.ones(rows, vocab, dtype=torch.bool)
    allowed[1, 7] = False
    seen = torch.zeros(rows, vocab, dtype=torch.bool)
    seen[2, [7, 3000]] = True
    seen[3, 3000] = True
    params = dict(temperature=0.0,
                  repetition_penalty=torch.tensor([1.0, 1.0, 2.0, 1.0], device="cuda"),
                  presence_penalty=torch.tensor([0.0, 0.0, 0.0, -0.5], device="cuda"))
    problem = Problem(logits, params, pack(seen), None, pack(allowed), 5, 9)
    got, _, _, res, verdict = run_and_check(problem)
    assert res.tokens.tolist() == [7, 3000, vocab - 1, 3000], res.tokens
    assert bool(verdict.decided.all())
    assert got.tolist() == [7, 3000, vocab - 1, 3000]


def _tie_logits(vocab: int) -> torch.Tensor:
    """One row: token 5 at 3.0, tokens 10 and 20 at 2.5, six tokens at 2.0,
    the rest at -2.0 (all exact in bf16)."""
    row = torch.full((vocab,), -2.0)
    row[5] = 3.0
    row[[10, 20]] = 2.5
    row[[1, 2, 30, 40, 50, vocab - 1]] = 2.0
    return row


@pytest.mark.parametrize("rule", ["top_k", "top_p"])
def test_threshold_ties_survive_together(gen, rule):
    """top_k = 4 lands on a value shared by six tokens, and a top_p threshold
    falls inside the mass of the same six: all nine tokens survive (a sort
    that cuts between tied tokens keeps fewer). Every survivor is drawn,
    nothing else is, and every draw equals the mirror's."""
    vocab, n = 64, 4000
    row = _tie_logits(vocab)
    if rule == "top_k":
        config = dict(temperature=1.0, top_k=4)
    else:
        p = torch.softmax(row.double(), dim=0)
        above = float(p[5] + p[10] + p[20])          # top-p mass above the tied group
        top_p = float(torch.tensor(above + 0.5 * float(p[1]), dtype=F32))
        config = dict(temperature=1.0, top_p=top_p)
    survivors = {5, 10, 20, 1, 2, 30, 40, 50, vocab - 1}
    surv, _ = sr.truncated_distribution_ref(row[None], **config)
    assert set(surv[0].nonzero().flatten().tolist()) == survivors
    logits = row[None].repeat(n, 1).to("cuda", BF16)
    offsets = torch.arange(n, dtype=I64, device="cuda") + 7
    problem = Problem(logits, config, seeds=2024, offsets=offsets)
    got, *_ = run_and_check(problem)
    drawn = set(got.tolist())
    assert drawn == survivors, f"drawn {sorted(drawn)}, survivors {sorted(survivors)}"


def test_scalars_and_tensors_agree(gen):
    """The same values as Python scalars and as [B] tensors (and seeds and
    offsets as ints and as filled tensors) give the same tokens."""
    rows, vocab = 16, 32000
    config = CONFIGS["everything"]
    problem = make_problem(gen, config, vocab, rows, F32, "scalar")
    got_scalar, *_ = run_and_check(problem, "scalars: ")
    as_tensors = Problem(problem.logits, make_params(gen, config, "tensor", rows, vocab),
                         problem.seen_mask, problem.token_counts, problem.allowed_mask,
                         torch.full((rows,), problem.seeds, dtype=I64, device="cuda"),
                         torch.full((rows,), problem.offsets, dtype=I64, device="cuda"))
    got_tensor, _, _, _, verdict = run_and_check(as_tensors, "tensors: ")
    same = got_scalar == got_tensor
    assert bool(same[verdict.decided].all()), "scalars and tensors disagree on decided rows"


def test_seed_and_offset_forms(gen):
    """Seeds and offsets as Python ints, as int64 tensors, negative int64
    seeds (read as uint64) and offsets past 2**32 (the counter's upper word):
    each matches the mirror, and an int equals a tensor filled with it."""
    rows, vocab = 8, 1000
    config = dict(temperature=1.0, top_k=200)
    base = make_problem(gen, config, vocab, rows, F32, "scalar")
    forms = {
        "ints": (123456789, 42),
        "int_seed_tensor_offsets": (987, torch.arange(rows, dtype=I64, device="cuda") * 3),
        "negative_seeds": (torch.tensor([-1, -2, -(2 ** 63), 5, -77, 2 ** 62, -3, 0], dtype=I64,
                                        device="cuda"), 11),
        "offsets_past_2_32": (torch.arange(rows, dtype=I64, device="cuda") + 1,
                              torch.tensor([2 ** 32, 2 ** 32 + 1, 2 ** 40, 2 ** 62, 0, 1, 2 ** 33,
                                            2 ** 63 - 1], dtype=I64, device="cuda")),
    }
    results = {}
    for name, (seeds, offsets) in forms.items():
        problem = Problem(base.logits, base.params, seeds=seeds, offsets=offsets)
        results[name], *_ = run_and_check(problem, f"{name}: ")
    filled = Problem(base.logits, base.params,
                     seeds=torch.full((rows,), 123456789, dtype=I64, device="cuda"),
                     offsets=torch.full((rows,), 42, dtype=I64, device="cuda"))
    tokens, _ = run_sample(filled)
    assert torch.equal(tokens.cpu().long(), results["ints"]), "an int and a filled tensor differ"


# ----------------------------------------------------------------------------
# Output forms, allocation, synchronization
# ----------------------------------------------------------------------------
def test_output_forms(gen):
    """return_logprobs=False returns the tokens alone (the same tokens);
    outputs are allocated when not given (int32 / float32 [B] on the GPU);
    out without logprobs_out works."""
    problem = make_problem(gen, CONFIGS["everything"], 32000, 16, BF16, "rows")
    got, tokens, logprobs, *_ = run_and_check(problem)
    alone = sample(problem.logits, **problem.kwargs())
    assert isinstance(alone, torch.Tensor), \
        f"return_logprobs=False returns the tokens alone, got {type(alone)}"
    assert alone.dtype == I32 and alone.is_cuda and tuple(alone.shape) == (problem.rows,)
    assert_bits_equal(alone, tokens, "tokens without logprobs")
    allocated = sample(problem.logits, **problem.kwargs(), return_logprobs=True)
    assert isinstance(allocated, tuple) and len(allocated) == 2
    assert_bits_equal(allocated[0], tokens, "allocated tokens")
    assert allocated[1].dtype == F32 and allocated[1].is_cuda
    assert_bits_equal(allocated[1], logprobs, "allocated logprobs")
    out = poisoned((problem.rows,), I32)
    result = sample(problem.logits, **problem.kwargs(), out=out)
    assert result is out
    assert_bits_equal(out, tokens, "tokens into out")


def test_no_synchronization_and_no_allocation(gen):
    """With out and logprobs_out given, a call allocates nothing (peak memory
    unchanged after a warm-up call) and does not synchronize with the host
    (torch's sync debug mode raises on a synchronizing call)."""
    problem = make_problem(gen, CONFIGS["everything"], 128256, 16, F32, "rows")
    out = poisoned((problem.rows,), I32)
    logprobs_out = poisoned((problem.rows,), F32)

    def call():
        return sample(problem.logits, **problem.kwargs(), return_logprobs=True, out=out,
                      logprobs_out=logprobs_out)

    call()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    torch.cuda.set_sync_debug_mode("error")
    try:
        call()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() == before, \
        f"a call allocated {torch.cuda.max_memory_allocated() - before} bytes beyond its outputs"
    check_sample(problem, out, logprobs_out)


# ----------------------------------------------------------------------------
# Distributions
# ----------------------------------------------------------------------------
DIST_LOGITS = [2.0, 1.5, 1.5, 1.0, 1.0, 1.0, 0.5, 0.0, -0.5, -1.0, -1.0, -1.5, -2.0, -3.0, -4.0,
               NEG_INF]
DIST_CONFIGS = {
    "temperature": (dict(temperature=0.75), F32),
    "top_k_ties": (dict(temperature=1.0, top_k=5), F32),   # ties at the 5th value: 6 survive
    "top_p": (dict(temperature=1.25, top_p=0.75), BF16),
    "min_p": (dict(temperature=1.0, min_p=0.125), F32),
    "penalties": (dict(temperature=1.25, top_k=8, top_p=0.875, min_p=0.0625,
                       repetition_penalty=1.5, presence_penalty=0.25, frequency_penalty=0.125,
                       masks=True), F32),
}


@pytest.mark.parametrize("name", list(DIST_CONFIGS))
def test_sampled_distribution(name):
    """N_DRAWS draws of one request over consecutive offsets (one seed, the
    decode steps of a request) follow the mirror's truncated renormalized
    distribution (chi-square, significance P_MIN, fixed seeds), and each draw
    equals the mirror's."""
    config, dtype = DIST_CONFIGS[name]
    config = dict(config)
    vocab = len(DIST_LOGITS)
    row = torch.tensor([DIST_LOGITS])
    masks = {}
    if config.pop("masks", False):
        seen = torch.zeros(1, vocab, dtype=torch.bool)
        seen[0, [0, 3, 6]] = True
        allowed = torch.ones(1, vocab, dtype=torch.bool)
        allowed[0, [2, 9]] = False
        masks = dict(seen_mask=pack(seen), allowed_mask=pack(allowed),
                     token_counts=torch.where(seen, 3, 0).to("cuda", I32))
    surv, q = sr.truncated_distribution_ref(row, **config, **masks)
    if name != "temperature":
        assert 1 < int(surv.sum()) < vocab - 1, "the configuration truncates nothing"
    n = N_DRAWS
    offsets = torch.arange(n, dtype=I64, device="cuda") * 3 + 1000 * len(name)
    problem = Problem(row.repeat(n, 1).to("cuda", dtype), config,
                      *(masks[m].repeat(n, 1) if m in masks else None
                        for m in ("seen_mask", "token_counts", "allowed_mask")),
                      seeds=31337 + len(name), offsets=offsets)
    got, *_ = run_and_check(problem, f"{name}: ")
    counts = torch.bincount(got.clamp_min(0), minlength=vocab)
    test = sr.chi_square_test(counts, q[0])
    assert test.pvalue > P_MIN, \
        f"{name}: chi2 {test.statistic:.1f} with {test.dof} dof, p = {test.pvalue:.2e}"


def test_sampled_distribution_large_vocabulary(gen):
    """A V = 151936 row drawn 2048 times (8 calls of 256 rows, one seed, new
    offsets each call) follows its truncated distribution over ~20
    survivors (top_k 24, top_p, temperature; one row of the mirror)."""
    vocab, rows, calls = 151936, 256, 8
    row = torch.randn(1, vocab, generator=gen, device="cuda")
    planted = torch.randperm(vocab, generator=gen, device="cuda")[:32]
    row[0, planted] = torch.linspace(9.0, 6.0, 32, device="cuda")   # the head of the row
    config = dict(temperature=0.875, top_k=24, top_p=0.9375)
    surv, q = sr.truncated_distribution_ref(row, **config)
    assert 4 < int(surv.sum()) <= 24
    logits = row.repeat(rows, 1)
    counts = torch.zeros(vocab, dtype=I64)
    out = poisoned((rows,), I32)
    for c in range(calls):
        poison_(out)
        offsets = torch.arange(rows, dtype=I64, device="cuda") + c * rows
        tokens = sample(logits, **config, seeds=777, offsets=offsets, out=out)
        torch.cuda.synchronize()
        got = tokens.cpu().long()
        assert bool(((got >= 0) & (got < vocab)).all()), "a token outside [0, V)"
        counts += torch.bincount(got, minlength=vocab)
    test = sr.chi_square_test(counts, q[0])
    assert test.pvalue > P_MIN, f"chi2 {test.statistic:.1f} with {test.dof} dof"


# ----------------------------------------------------------------------------
# Batch invariance and determinism
# ----------------------------------------------------------------------------
def test_batch_invariance(gen):
    """A row's token is the same alone, in its batch, with the rows
    reordered, and among 288 other rows; every parameter varies per row."""
    rows, vocab = 12, 50257
    problem = make_problem(gen, CONFIGS["everything"], vocab, rows, F32, "rows")
    full, *_ = run_and_check(problem, "batch: ")
    perm = torch.randperm(rows, generator=gen, device="cuda")
    permuted, _ = run_sample(problem.select(perm))
    assert torch.equal(permuted.cpu().long(), full[perm.cpu()]), "reordering rows changed tokens"
    for b in range(rows):
        alone, _ = run_sample(problem.select(torch.tensor([b], device="cuda")))
        assert int(alone.cpu()[0]) == int(full[b]), f"row {b} alone differs from its batch"
    others = make_problem(gen, CONFIGS["everything"], vocab, 288, F32, "rows")
    big = cat_problems(others, problem)
    mixed = big.select(torch.randperm(big.rows, generator=gen, device="cuda"))
    tokens, _ = run_sample(mixed)
    got = tokens.cpu().long()
    for b in range(rows):            # find row b of problem by its (unique) seed
        where = (mixed.seeds == problem.seeds[b]).nonzero().flatten().cpu()
        assert got[where].tolist() == [int(full[b])] * len(where), \
            f"row {b} among 300 rows differs from its batch of {rows}"


@pytest.mark.parametrize("config", ["temperature", "min_p", "repetition", "greedy"])
@pytest.mark.parametrize("vocab", [128256, 151936, 256000])
def test_split_invariance_with_logprobs(gen, config, vocab):
    """Up to 4 rows without top-k / top-p take wider clusters than a larger
    batch (sampling_config.h): each row alone, in pairs and among 12 rows gets
    the same token and the same logprob bits, and matches the mirror."""
    rows = 12
    problem = make_problem(gen, CONFIGS[config], vocab, rows, F32, "rows")
    _, full_t, full_l, *_ = run_and_check(problem, "split: ")
    for start, size in [(0, 1), (5, 1), (11, 1), (2, 2), (7, 4)]:
        part = problem.select(torch.arange(start, start + size, device="cuda"))
        tokens, logprobs = run_sample(part)
        assert_bits_equal(tokens, full_t[start:start + size], f"rows {start}..+{size}: tokens")
        assert_bits_equal(logprobs, full_l[start:start + size], f"rows {start}..+{size}: logprobs")


def test_split_invariance_of_verification(gen):
    """One request of k = 3 drafts (4 rows: the wide split) is verified the
    same alone as among 6 requests (24 rows)."""
    batch, k, vocab = 6, 3, 151936
    logits = make_logits(gen, batch * (k + 1), vocab).view(batch, k + 1, vocab)
    drafts = torch.randint(0, vocab, (batch, k), generator=gen, device="cuda", dtype=I32)
    drafts[:, 0] = logits[:, 0].argmax(-1).to(I32)  # some drafts are the likely token
    probs = torch.softmax(make_logits(gen, batch * k, vocab).view(batch, k, vocab), -1)
    seeds = torch.randint(0, 2 ** 62, (batch,), generator=gen, device="cuda", dtype=torch.int64)
    offsets = torch.randint(0, 2 ** 40, (batch,), generator=gen, device="cuda", dtype=torch.int64)
    for draft_probs in (None, probs):
        dp = lambda sel: None if draft_probs is None else draft_probs[sel]  # noqa: E731
        acc, tok = verify_speculative(drafts, dp(slice(None)), logits, temperature=0.75,
                                      seeds=seeds, offsets=offsets)
        for b in range(batch):
            sel = slice(b, b + 1)
            acc_b, tok_b = verify_speculative(drafts[sel], dp(sel), logits[sel], temperature=0.75,
                                              seeds=seeds[sel], offsets=offsets[sel])
            assert_bits_equal(acc_b, acc[sel], f"request {b}: accepted count")
            assert_bits_equal(tok_b, tok[sel], f"request {b}: tokens")


def test_determinism(gen):
    """Identical inputs give identical tokens and logprobs, bit for bit,
    call after call."""
    problem = make_problem(gen, CONFIGS["everything"], 151936, 64, BF16, "rows")
    tokens, logprobs = run_sample(problem)
    want_t, want_l = tokens.clone(), logprobs.clone()
    got = want_t.cpu().long()
    assert bool(((got >= -1) & (got < problem.vocab)).all())
    assert bool(logprobs[got >= 0].isfinite().all())
    for i in range(3):
        tokens, logprobs = run_sample(problem)
        assert_bits_equal(tokens, want_t, f"call {i + 2}: tokens")
        assert_bits_equal(logprobs, want_l, f"call {i + 2}: logprobs")


# ----------------------------------------------------------------------------
# update_seen_mask
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("rows,vocab", [(1, 1), (37, 33), (64, 32000), (512, 128256)],
                         ids=lambda v: str(v))
def test_update_seen_mask(gen, rows, vocab):
    """Sets each row's token bit in place (tokens < 0 leave the row alone);
    every other bit, padding bits past V included, is unchanged."""
    seen = pack(torch.rand(rows, vocab, generator=gen, device="cuda") < 0.1)
    tokens = torch.randint(0, vocab, (rows,), generator=gen, device="cuda", dtype=I32)
    tokens[torch.rand(rows, generator=gen, device="cuda") < 0.2] = -1
    if rows > 3:
        tokens[3] = -7
    before = seen.clone()
    expected = sr.update_seen_mask_ref(before, tokens)
    update_seen_mask(seen, tokens)
    torch.cuda.synchronize()
    assert_bits_equal(seen.cpu(), expected, "seen_mask after update_seen_mask")


# ----------------------------------------------------------------------------
# CUDA graphs and torch.compile
# ----------------------------------------------------------------------------
def test_cuda_graph_replay_with_new_logits_and_offsets(gen):
    """One capture of a decode step (sample into given outputs, then
    update_seen_mask with its tokens) replayed with new logits, offsets and
    seen masks copied into the captured tensors; each replay matches the
    mirror, its mask update, and an eager call bit for bit."""
    rows, vocab = 24, 32000
    config = CONFIGS["everything"]
    static = make_problem(gen, config, vocab, rows, F32, "rows", pad=16)
    out = poisoned((rows,), I32)
    logprobs_out = poisoned((rows,), F32)

    def step():
        result = sample(static.logits, **static.kwargs(), return_logprobs=True, out=out,
                        logprobs_out=logprobs_out)
        update_seen_mask(static.seen_mask, result[0])
        return result

    seen0 = static.seen_mask.clone()
    graph, (tokens, logprobs) = capture_graph(step)
    assert tokens is out and logprobs is logprobs_out
    for i in range(3):
        fresh = make_problem(gen, config, vocab, rows, F32, "rows")
        static.logits.copy_(fresh.logits)
        static.offsets.copy_(fresh.offsets)
        static.seen_mask.copy_(fresh.seen_mask if i else seen0)
        seen_before = static.seen_mask.clone()
        res = static.mirror()
        poison_(out)
        poison_(logprobs_out)
        graph.replay()
        torch.cuda.synchronize()
        got, _, _ = check_sample(static, out, logprobs_out, res, what=f"replay {i}: ")
        assert_bits_equal(static.seen_mask.cpu(), sr.update_seen_mask_ref(seen_before, got),
                          f"replay {i}: seen_mask update")
        replayed = (out.clone(), logprobs_out.clone(), static.seen_mask.clone())
        static.seen_mask.copy_(seen_before)
        poison_(out)
        poison_(logprobs_out)
        step()
        torch.cuda.synchronize()
        for a, b, name in zip((out, logprobs_out, static.seen_mask), replayed,
                              ("tokens", "logprobs", "seen_mask")):
            assert_bits_equal(a, b, f"replay {i}: eager vs replay {name}")


def test_cuda_graph_dependent_steps_match_eager(gen):
    """Four decode steps in one graph, each sampling with the seen mask that
    the previous step's update_seen_mask wrote and updating the token counts
    the next step reads. Under programmatic dependent launch every kernel may
    start before the previous one ends and must wait for its writes; the
    replay matches the same steps run eagerly, bit for bit."""
    rows, vocab, steps = 24, 32000, 4
    static = make_problem(gen, CONFIGS["everything"], vocab, rows, F32, "rows")
    seen0, counts0 = static.seen_mask.clone(), static.token_counts.clone()

    def run():
        results = []
        for i in range(steps):
            kwargs = dict(static.kwargs(), offsets=static.offsets + i)
            tokens, logprobs = sample(static.logits, **kwargs, return_logprobs=True)
            update_seen_mask(static.seen_mask, tokens)
            hpc_ops.update_token_counts(static.token_counts, tokens)
            results += [tokens, logprobs]
        return results

    eager = [t.clone() for t in run()] + [static.seen_mask.clone(), static.token_counts.clone()]
    static.seen_mask.copy_(seen0)
    static.token_counts.copy_(counts0)
    graph, outs = capture_graph(run)  # ran once more (warm-up) before the capture
    for t in outs:
        poison_(t)
    static.seen_mask.copy_(seen0)
    static.token_counts.copy_(counts0)
    graph.replay()
    torch.cuda.synchronize()
    replayed = list(outs) + [static.seen_mask, static.token_counts]
    names = [f"step {i // 2} {'tokens' if i % 2 == 0 else 'logprobs'}" for i in range(2 * steps)]
    for a, b, name in zip(replayed, eager, names + ["seen_mask", "token_counts"]):
        assert_bits_equal(a, b, f"graph vs eager {name}")
    # The steps depend on each other: later steps see the earlier tokens.
    assert not torch.equal(seen0, eager[-2]), "update_seen_mask changed nothing"


def _decode_step(logits_half, temperature, top_k, seen_mask, token_counts, seeds, offsets,
                 drafts, draft_probs, target):
    logits = logits_half * 2   # exact, so eager and compiled inputs agree bit for bit
    tokens, logprobs = hpc_ops.sample(logits, temperature=temperature, top_k=top_k, top_p=0.875,
                                      min_p=0.03125, repetition_penalty=1.25,
                                      frequency_penalty=0.25, seen_mask=seen_mask,
                                      token_counts=token_counts, seeds=seeds, offsets=offsets,
                                      return_logprobs=True)
    hpc_ops.update_seen_mask(seen_mask, tokens)
    accepted, spec_tokens = hpc_ops.verify_speculative(drafts, draft_probs, target,
                                                       temperature=temperature, top_k=top_k,
                                                       seeds=seeds, offsets=offsets + 1)
    return tokens, logprobs, accepted, spec_tokens


def test_torch_compile_matches_eager(gen):
    """A function calling sample, update_seen_mask and verify_speculative
    compiles with fullgraph=True and gives the eager bits (seen_mask updated
    in place included); eager matches the mirror."""
    rows, vocab, k = 12, 32000, 2
    logits = make_logits(gen, rows, vocab, BF16)
    params = make_params(gen, dict(temperature=1.0, top_k=1), "rows", rows, vocab)
    seen, counts = make_history(gen, logits)
    seeds, offsets = make_seeds(gen, rows, as_ints=False)
    spec = make_spec_problem(gen, rows, k, vocab, F32, "none")
    inputs = (logits / 2, params["temperature"], params["top_k"], seen, counts, seeds, offsets,
              spec.drafts, spec.draft_probs, spec.target)

    seen0 = seen.clone()
    eager = _decode_step(*inputs)
    torch.cuda.synchronize()
    seen_eager = seen.clone()
    scalars = dict(top_p=0.875, min_p=0.03125, repetition_penalty=1.25, frequency_penalty=0.25)
    problem = Problem(logits, dict(params, **scalars), seen0, counts, None, seeds, offsets)
    got, _, _ = check_sample(problem, eager[0], eager[1], what="eager: ")
    assert_bits_equal(seen_eager.cpu(), sr.update_seen_mask_ref(seen0, got), "eager seen_mask")
    spec_problem = SpecProblem(spec.drafts, spec.draft_probs, spec.target, params, seeds=seeds,
                               offsets=offsets + 1)
    check_spec(spec_problem, spec_problem.mirror(), eager[2], eager[3], "eager: ")

    seen.copy_(seen0)
    compiled = torch.compile(_decode_step, fullgraph=True)(*inputs)
    torch.cuda.synchronize()
    for name, a, b in zip(("tokens", "logprobs", "accepted", "spec tokens"), compiled, eager):
        assert_bits_equal(a, b, f"compiled vs eager: {name}")
    assert_bits_equal(seen, seen_eager, "compiled vs eager: seen_mask")


# ----------------------------------------------------------------------------
# Speculative verification
# ----------------------------------------------------------------------------
@dataclass
class SpecProblem(SamplingArgs):
    """One call of hpc_ops.verify_speculative (every tensor on the GPU; masks
    per row [B, N] or per position [B, k+1, N])."""
    drafts: torch.Tensor                   # int32 [B, k]
    draft_probs: Optional[torch.Tensor]    # float32 [B, k, V], None: greedy variant
    target: torch.Tensor                   # [B, k+1, V]
    params: dict
    seen_mask: Optional[torch.Tensor] = None
    token_counts: Optional[torch.Tensor] = None
    allowed_mask: Optional[torch.Tensor] = None
    seeds: Optional[torch.Tensor] = None   # int64 [B]
    offsets: Optional[torch.Tensor] = None

    @property
    def rows(self) -> int:
        return self.target.shape[0]

    @property
    def k(self) -> int:
        return self.target.shape[1] - 1

    @property
    def vocab(self) -> int:
        return self.target.shape[2]

    def masks_at(self, i: int) -> dict:
        return {name: t[:, i] if t.dim() == 3 else t for name, t in self.masks().items()}

    def mirror(self) -> sr.SpecResult:
        return sr.speculative_verify_ref(self.drafts, self.draft_probs, self.target,
                                         **self.kwargs())

    def run(self):
        """verify_speculative; (accepted, tokens). Inputs bit-identical afterwards."""
        inputs = [t for t in (self.drafts, self.draft_probs, self.target, *self.params.values(),
                              *self.masks().values(), self.seeds, self.offsets)
                  if torch.is_tensor(t)]
        before = [t.clone() for t in inputs]
        result = verify_speculative(self.drafts, self.draft_probs, self.target, **self.kwargs())
        torch.cuda.synchronize()
        assert isinstance(result, tuple) and len(result) == 2, \
            f"verify_speculative returns (accepted, tokens), got {type(result)}"
        for t, t0 in zip(inputs, before):
            assert_bits_equal(t, t0, "an input of verify_speculative was modified")
        return result


def make_spec_problem(gen, rows, k, vocab, dtype, masks="none", greedy=False):
    """Target logits [rows, k+1, V]; per-row temperature (some rows greedy),
    top_k, top_p, min_p (and penalties with masks); draft probabilities
    softmax(target + 0.5 N(0, 1)) over the 32 largest of those among the
    allowed tokens, drafts drawn from them; masks "none", "per_row" [B, N] or "per_position" [B, k+1, N]."""
    target = make_logits(gen, rows * (k + 1), vocab, dtype).view(rows, k + 1, vocab)
    config = dict(temperature=1.0, top_k=50, top_p=0.9, min_p=0.01)
    if masks != "none":
        config.update(repetition_penalty=1.2, presence_penalty=0.3, frequency_penalty=0.1)
    params = make_params(gen, config, "rows", rows, vocab)
    seen = counts = allowed = None
    allowed_bool = torch.ones(rows, k + 1, vocab, dtype=torch.bool, device="cuda")
    if masks != "none":
        lead = (rows,) if masks == "per_row" else (rows, k + 1)
        flat = target[:, 0] if masks == "per_row" else target.reshape(-1, vocab)
        seen, counts = make_history(gen, flat)
        allowed, a_bool = make_allowed(gen, flat, special=False)
        seen, counts, allowed = (t.reshape(*lead, -1) for t in (seen, counts, allowed))
        allowed_bool = a_bool.reshape(*lead, vocab)
        if masks == "per_row":
            allowed_bool = allowed_bool[:, None].expand(rows, k + 1, vocab)
    noisy = target[:, :k].float() + 0.5 * torch.randn(rows, k, vocab, generator=gen,
                                                      device="cuda")
    noisy = noisy.masked_fill(~allowed_bool[:, :k], NEG_INF)
    # A drafter keeps its own head (its 32 largest logits): drawn from the
    # whole noisy softmax of a large vocabulary, a draft lands outside the
    # target's top-k / top-p survivors so often that no draft is accepted.
    head = noisy.topk(min(32, vocab), dim=-1).values[..., -1:]
    noisy = noisy.masked_fill(noisy < head, NEG_INF)
    draft_probs = torch.softmax(noisy, dim=-1)
    drafts = torch.multinomial(draft_probs.reshape(-1, vocab), 1, generator=gen)
    drafts = drafts.reshape(rows, k).to(I32)
    seeds, offsets = make_seeds(gen, rows, as_ints=False)
    return SpecProblem(drafts, None if greedy else draft_probs, target, params, seen, counts,
                       allowed, seeds, offsets)


def _q_bounds(res: sr.SamplingResult, v: Verdict):
    """(q_lo, q_hi, known [B]): bounds on the truncated distribution Q a
    float32 kernel computes for each row of a sample_ref result."""
    p = res.probs
    mass_tight = (p * v.tight).sum(dim=1, keepdim=True)
    mass_loose = (p * v.loose).sum(dim=1, keepdim=True)
    q_lo = torch.where(v.tight, p / mass_loose.clamp_min(1e-300), 0.0) * (1 - THRESHOLD_RTOL)
    q_hi = torch.where(v.loose, p / mass_tight.clamp_min(1e-300), 0.0) * (1 + THRESHOLD_RTOL)
    known = mass_tight.squeeze(1) > 0
    has = res.tokens >= 0
    one_hot = torch.zeros_like(p)
    one_hot[has.nonzero().squeeze(1), res.tokens[has]] = 1.0
    greedy = res.greedy[:, None]
    q_lo = torch.where(greedy, one_hot, q_lo)
    q_hi = torch.where(greedy, one_hot, q_hi)
    known = torch.where(res.greedy, v.decided, known) | ~has
    return q_lo, q_hi, known


def _recovered_decided(q_lo, q_hi, p_draft, u, token, fallback_decided):
    """Whether the race over R = max(0, Q - P) (over Q when R is all zero)
    has the same winner, token, for every Q within [q_lo, q_hi]."""
    r_lo = (q_lo - p_draft).clamp_min(0.0)
    r_hi = (q_hi - p_draft).clamp_min(0.0)
    g = torch.log(-torch.log(u))
    lo, hi = torch.log(r_lo) - g, torch.log(r_hi) - g
    tok = token.clamp_min(0)[:, None]
    own = lo.gather(1, tok).squeeze(1)
    rival = hi.scatter(1, tok, NEG_INF).amax(dim=1)
    decided = (token >= 0) & (own - MARGIN > rival)
    return torch.where((r_hi == 0).all(dim=1), fallback_decided, decided)


def spec_verdict(problem: SpecProblem, res: sr.SpecResult) -> torch.Tensor:
    """bool [B]: rows whose result no float32 rounding can change (every
    acceptance test up to the first rejection clear of Q's rounding, the
    recovered or bonus race decided, greedy argmaxes decided)."""
    rows, k, vocab = problem.rows, problem.k, problem.vocab
    acc = res.accepted
    decided = torch.ones(rows, dtype=torch.bool)
    if problem.draft_probs is None:
        for i in range(k + 1):
            r = sr.sample_ref(problem.target[:, i], **dict(problem.params, temperature=0.0),
                              **problem.masks_at(i))
            v = sample_verdict(r, problem.target[:, i].detach().to("cpu", F64))
            decided &= (acc < i) | v.decided
        return decided
    a = sr.philox_uniforms(problem.seeds, problem.offsets, k, sr.SPEC_ACCEPT_STREAM)
    p_draft = problem.draft_probs.detach().to("cpu", F64)
    drafts = problem.drafts.detach().to("cpu", I64)
    for i in range(k + 1):
        u = sr.philox_uniforms(problem.seeds, problem.offsets, vocab, sr.spec_race_stream(i))
        r = sr.sample_ref(problem.target[:, i], **problem.params, **problem.masks_at(i), noise=u)
        v = sample_verdict(r, problem.target[:, i].detach().to("cpu", F64), **problem.truncation())
        if i == k:
            decided &= (acc < k) | v.decided
            break
        q_lo, q_hi, known = _q_bounds(r, v)
        d = drafts[:, i:i + 1]
        ap = a[:, i] * p_draft[:, i].gather(1, d).squeeze(1)
        sure = (ap < q_lo.gather(1, d).squeeze(1)) | (ap >= q_hi.gather(1, d).squeeze(1))
        decided &= (acc < i) | (sure & known)
        recovered = _recovered_decided(q_lo, q_hi, p_draft[:, i], u, res.tokens[:, i], v.decided)
        decided &= (acc != i) | recovered
    return decided


def check_spec(problem: SpecProblem, res: sr.SpecResult, accepted, tokens, what=""):
    """The kernel's (accepted, tokens) against the mirror on decided rows;
    on every row: 0 <= accepted <= k, the accepted drafts, one token in
    [-1, V), then -1. Returns (accepted, tokens) as int64 on the CPU."""
    rows, k, vocab = problem.rows, problem.k, problem.vocab
    assert accepted.dtype == I32 and accepted.is_cuda and tuple(accepted.shape) == (rows,), \
        f"{what}accepted: {accepted.dtype}{tuple(accepted.shape)} on {accepted.device}"
    assert tokens.dtype == I32 and tokens.is_cuda and tuple(tokens.shape) == (rows, k + 1), \
        f"{what}tokens: {tokens.dtype}{tuple(tokens.shape)} on {tokens.device}"
    acc, tok = accepted.cpu().long(), tokens.cpu().long()
    decided = spec_verdict(problem, res)
    limit = allowed_undecided(rows)
    assert int((~decided).sum()) <= limit, (
        f"{what}{int((~decided).sum())} of {rows} rows are within float32 rounding of a "
        f"decision (at most {limit} allowed)")
    wrong = decided & ((acc != res.accepted) | (tok != res.tokens).any(dim=1))
    if bool(wrong.any()):
        b = int(wrong.nonzero()[0])
        raise AssertionError(
            f"{what}{int(wrong.sum())} of {rows} rows differ from the mirror; first row {b}: got "
            f"accepted {int(acc[b])}, tokens {tok[b].tolist()}; mirror accepted "
            f"{int(res.accepted[b])}, tokens {res.tokens[b].tolist()}")
    assert bool(((acc >= 0) & (acc <= k)).all()), f"{what}accepted outside [0, k]"
    pos = torch.arange(k + 1)[None, :]
    padded = torch.cat([problem.drafts.cpu().long(), torch.full((rows, 1), -1)], dim=1)
    prefix = torch.where(pos < acc[:, None], tok == padded, True).all(dim=1)
    tail = torch.where(pos > acc[:, None], tok == -1, True).all(dim=1)
    last = tok.gather(1, acc[:, None]).squeeze(1)
    bad = ~(prefix & tail & (last >= -1) & (last < vocab))
    assert not bool(bad.any()), \
        f"{what}row {int(bad.nonzero()[0])}: tokens {tok[bad][0].tolist()} are not the accepted " \
        f"drafts, one token and -1 (accepted {int(acc[bad][0])})"
    return acc, tok


# (rows, k, V, dtype, masks)
SPEC_CASES = [
    (16, 3, 32000, F32, "none"),
    (16, 4, 32000, BF16, "per_row"),
    (12, 2, 50257, F32, "per_position"),
    (4, 3, 151936, BF16, "per_row"),
    (16, 1, 1000, F32, "per_position"),
    (8, 5, 128, BF16, "none"),
]


def _spec_id(case) -> str:
    rows, k, vocab, dtype, masks = case
    return f"B{rows}-k{k}-V{vocab}-{DTYPE_IDS[dtype]}-{masks}"


@pytest.mark.parametrize("case", SPEC_CASES, ids=_spec_id)
def test_verify_speculative_matches_mirror(gen, case):
    rows, k, vocab, dtype, masks = case
    problem = make_spec_problem(gen, rows, k, vocab, dtype, masks)
    res = problem.mirror()
    accepted, tokens = problem.run()
    check_spec(problem, res, accepted, tokens)
    assert int(res.accepted.sum()) > 0, "the mirror accepts no draft at all: a weak test"


@pytest.mark.parametrize("case", SPEC_CASES[:3], ids=_spec_id)
def test_verify_speculative_greedy_variant(gen, case):
    """draft_probs None: row b's drafts match the argmax of the penalized
    logits up to position b (all of them from row k on); accepted = the
    matching prefix, then the argmax at the first mismatch or the bonus."""
    rows, k, vocab, dtype, masks = case
    problem = make_spec_problem(gen, rows, k, vocab, dtype, masks, greedy=True)
    argmax = problem.mirror().target_argmax
    drafts = argmax[:, :k].clone()
    for b in range(min(rows, k)):
        drafts[b, b] = (argmax[b, b] + 1) % vocab
    problem.drafts = drafts.to("cuda", I32)
    res = problem.mirror()
    expected = [min(b, k) for b in range(rows)]
    assert res.accepted.tolist() == expected
    accepted, tokens = problem.run()
    acc, _ = check_spec(problem, res, accepted, tokens)
    undecided = ~spec_verdict(problem, res)
    assert acc[~undecided].tolist() == [e for e, u in zip(expected, undecided) if not u]


def test_verify_speculative_accepts_exact_drafts(gen):
    """Draft probabilities equal to the target's truncated distribution (as
    float32) and drafts drawn from it: every draft is accepted, the bonus
    token is the mirror's."""
    rows, k, vocab = 64, 4, 1000
    target = make_logits(gen, rows * (k + 1), vocab, F32)
    params = dict(temperature=0.75, top_k=10, top_p=0.875)
    _, q = sr.truncated_distribution_ref(target, **params)
    q = q.reshape(rows, k + 1, vocab)
    draft_probs = q[:, :k].to("cuda", F32).contiguous()
    drafts = torch.multinomial(draft_probs.reshape(-1, vocab), 1, generator=gen)
    seeds, offsets = make_seeds(gen, rows, as_ints=False)
    problem = SpecProblem(drafts.reshape(rows, k).to(I32), draft_probs,
                          target.reshape(rows, k + 1, vocab), params, seeds=seeds,
                          offsets=offsets)
    res = problem.mirror()
    assert bool((res.accepted == k).all()), "the mirror rejects an exact draft"
    accepted, tokens = problem.run()
    acc, tok = check_spec(problem, res, accepted, tokens)
    decided = spec_verdict(problem, res)
    assert bool((acc[decided] == k).all())
    assert bool((q[torch.arange(rows), k, tok[:, k].clamp_min(0)] > 0)[decided].all())


def test_verify_speculative_output_distribution():
    """Drafts drawn from P, verified against Q (N_DRAWS rows of one request,
    seeds varying): the first emitted token follows Q_0, the second (first
    draft accepted) Q_1, the bonus Q_2; the acceptance rate of position 0 is
    sum(min(P_0, Q_0)). P is sharper than Q on some tokens, so acceptance
    tests with probability strictly between 0 and 1 occur."""
    rows, k, vocab = N_DRAWS, 2, 8
    g = torch.Generator().manual_seed(14)
    target1 = torch.randn(1, k + 1, vocab, generator=g) * 1.5
    params = dict(temperature=1.125, top_k=7)
    _, q = sr.truncated_distribution_ref(target1[0], **params)
    noise = 0.7 * torch.randn(k, vocab, generator=g, dtype=F64)
    p = torch.softmax((target1[0, :k].double() + noise) / 0.8, dim=-1).float()
    drafts = torch.stack([torch.multinomial(p[i], rows, replacement=True, generator=g)
                          for i in range(k)], dim=1)
    problem = SpecProblem(drafts.to("cuda", I32), p.expand(rows, -1, -1).contiguous().cuda(),
                          target1.expand(rows, -1, -1).contiguous().cuda(), params,
                          seeds=torch.arange(rows, dtype=I64, device="cuda") + 77,
                          offsets=torch.full((rows,), 5, dtype=I64, device="cuda"))
    res = problem.mirror()
    accepted, tokens = problem.run()
    acc, tok = check_spec(problem, res, accepted, tokens)
    first = sr.chi_square_test(torch.bincount(tok[:, 0], minlength=vocab), q[0])
    assert first.pvalue > P_MIN, first
    second = sr.chi_square_test(torch.bincount(tok[acc >= 1, 1], minlength=vocab), q[1])
    assert second.pvalue > P_MIN, second
    bonus = sr.chi_square_test(torch.bincount(tok[acc == 2, 2], minlength=vocab), q[2])
    assert bonus.pvalue > P_MIN, bonus
    rate = float(torch.minimum(p[0].double(), q[0]).sum())
    observed = float((acc >= 1).double().mean())
    assert abs(observed - rate) < 4 * math.sqrt(rate * (1 - rate) / rows), (observed, rate)


def test_verify_speculative_cuda_graph(gen):
    """verify_speculative captured once, replayed with new target logits,
    drafts, draft probabilities and offsets; each replay matches the mirror
    and an eager call."""
    rows, k, vocab = 8, 3, 32000
    static = make_spec_problem(gen, rows, k, vocab, F32, "per_row")
    graph, (accepted, tokens) = capture_graph(
        lambda: verify_speculative(static.drafts, static.draft_probs, static.target,
                                   **static.kwargs()))
    for i in range(3):
        fresh = make_spec_problem(gen, rows, k, vocab, F32, "per_row")
        for name in ("drafts", "draft_probs", "target", "offsets"):
            getattr(static, name).copy_(getattr(fresh, name))
        res = static.mirror()
        poison_(accepted)
        poison_(tokens)
        graph.replay()
        torch.cuda.synchronize()
        check_spec(static, res, accepted, tokens, f"replay {i}: ")
        eager = static.run()
        assert_bits_equal(eager[0], accepted, f"replay {i}: eager vs replay accepted")
        assert_bits_equal(eager[1], tokens, f"replay {i}: eager vs replay tokens")


# ----------------------------------------------------------------------------
# Argument errors
# ----------------------------------------------------------------------------
B_BAD, V_BAD, K_BAD = 4, 1000, 2
W_BAD = sr.bitmask_words(V_BAD)


def _cuda(*shape, dtype=F32, fill=0):
    return torch.full(shape, fill, dtype=dtype, device="cuda")


def _base_sample_call() -> dict:
    """A valid call of sample (every optional input given, on the GPU)."""
    return dict(logits=torch.randn(B_BAD, V_BAD, device="cuda"), temperature=0.75,
                seeds=torch.arange(B_BAD, dtype=I64, device="cuda"),
                offsets=_cuda(B_BAD, dtype=I64), return_logprobs=True,
                out=poisoned((B_BAD,), I32), logprobs_out=poisoned((B_BAD,), F32))


def _with_penalty(**kw) -> dict:
    """Arguments of a repetition penalty with its mask (the mask is used)."""
    return dict(dict(repetition_penalty=1.25, seen_mask=_cuda(B_BAD, W_BAD, dtype=I32)), **kw)


def _with_counts(**kw) -> dict:
    return dict(dict(frequency_penalty=0.25, token_counts=_cuda(B_BAD, V_BAD, dtype=I32)), **kw)


# name -> (changes to the base call, regex the ValueError must match)
INVALID_SAMPLE = {
    "logits_float16": (lambda: dict(logits=torch.randn(B_BAD, V_BAD, device="cuda").half()),
                       "logits"),
    "logits_int32": (lambda: dict(logits=_cuda(B_BAD, V_BAD, dtype=I32)), "logits"),
    "logits_1d": (lambda: dict(logits=torch.randn(V_BAD, device="cuda")), "logits"),
    "logits_3d": (lambda: dict(logits=torch.randn(1, B_BAD, V_BAD, device="cuda")), "logits"),
    "logits_on_cpu": (lambda: dict(logits=torch.randn(B_BAD, V_BAD)), "logits"),
    "logits_last_dim_strided": (lambda: dict(logits=torch.randn(B_BAD, 2 * V_BAD,
                                                                device="cuda")[:, ::2]), "logits"),
    "logits_empty_vocab": (lambda: dict(logits=torch.randn(B_BAD, 0, device="cuda")), "logits"),
    "temperature_negative": (lambda: dict(temperature=-0.5), "temperature"),
    "temperature_tensor_float64": (lambda: dict(temperature=_cuda(B_BAD, dtype=F64, fill=1)),
                                   "temperature"),
    "temperature_tensor_int32": (lambda: dict(temperature=_cuda(B_BAD, dtype=I32, fill=1)),
                                 "temperature"),
    "temperature_tensor_wrong_batch": (lambda: dict(temperature=_cuda(B_BAD + 1, fill=1)),
                                       "temperature"),
    "temperature_tensor_2d": (lambda: dict(temperature=_cuda(B_BAD, 1, fill=1)), "temperature"),
    "temperature_tensor_on_cpu": (lambda: dict(temperature=torch.ones(B_BAD)), "temperature"),
    "top_k_above_vocab": (lambda: dict(top_k=V_BAD + 1), "top_k"),
    "top_k_negative": (lambda: dict(top_k=-1), "top_k"),
    "top_k_tensor_float32": (lambda: dict(top_k=_cuda(B_BAD, fill=5)), "top_k"),
    "top_k_tensor_wrong_batch": (lambda: dict(top_k=_cuda(B_BAD - 1, dtype=I32, fill=5)),
                                 "top_k"),
    "top_p_zero": (lambda: dict(top_p=0.0), "top_p"),
    "top_p_above_one": (lambda: dict(top_p=1.5), "top_p"),
    "top_p_tensor_int32": (lambda: dict(top_p=_cuda(B_BAD, dtype=I32, fill=1)), "top_p"),
    "min_p_one": (lambda: dict(min_p=1.0), "min_p"),
    "min_p_negative": (lambda: dict(min_p=-0.125), "min_p"),
    "min_p_tensor_on_cpu": (lambda: dict(min_p=torch.zeros(B_BAD)), "min_p"),
    "repetition_penalty_zero": (lambda: _with_penalty(repetition_penalty=0.0),
                                "repetition_penalty"),
    "repetition_penalty_negative": (lambda: _with_penalty(repetition_penalty=-1.25),
                                    "repetition_penalty"),
    "repetition_penalty_without_seen_mask": (lambda: dict(repetition_penalty=1.25), "seen_mask"),
    "repetition_penalty_tensor_without_seen_mask": (
        lambda: dict(repetition_penalty=_cuda(B_BAD, fill=1.25)), "seen_mask"),
    "presence_penalty_without_seen_mask": (lambda: dict(presence_penalty=0.5), "seen_mask"),
    "frequency_penalty_without_token_counts": (lambda: dict(frequency_penalty=0.25),
                                               "token_counts"),
    "seen_mask_wrong_words": (lambda: _with_penalty(seen_mask=_cuda(B_BAD, W_BAD + 1, dtype=I32)),
                              "seen_mask"),
    "seen_mask_wrong_batch": (lambda: _with_penalty(seen_mask=_cuda(B_BAD + 1, W_BAD, dtype=I32)),
                              "seen_mask"),
    "seen_mask_int64": (lambda: _with_penalty(seen_mask=_cuda(B_BAD, W_BAD, dtype=I64)),
                        "seen_mask"),
    "seen_mask_1d": (lambda: _with_penalty(seen_mask=_cuda(B_BAD * W_BAD, dtype=I32)),
                     "seen_mask"),
    "seen_mask_on_cpu": (lambda: _with_penalty(seen_mask=torch.zeros(B_BAD, W_BAD, dtype=I32)),
                         "seen_mask"),
    "token_counts_wrong_vocab": (lambda: _with_counts(token_counts=_cuda(B_BAD, V_BAD - 1,
                                                                         dtype=I32)),
                                 "token_counts"),
    "token_counts_wrong_batch": (lambda: _with_counts(token_counts=_cuda(B_BAD - 1, V_BAD,
                                                                         dtype=I32)),
                                 "token_counts"),
    "token_counts_float32": (lambda: _with_counts(token_counts=_cuda(B_BAD, V_BAD)),
                             "token_counts"),
    "allowed_mask_wrong_words": (lambda: dict(allowed_mask=_cuda(B_BAD, W_BAD - 1, dtype=I32,
                                                                 fill=-1)), "allowed_mask"),
    "allowed_mask_bool": (lambda: dict(allowed_mask=_cuda(B_BAD, V_BAD, dtype=torch.bool,
                                                          fill=True)), "allowed_mask"),
    "allowed_mask_on_cpu": (lambda: dict(allowed_mask=torch.full((B_BAD, W_BAD), -1,
                                                                 dtype=I32)), "allowed_mask"),
    "seeds_wrong_batch": (lambda: dict(seeds=_cuda(B_BAD + 1, dtype=I64)), "seeds"),
    "seeds_int32": (lambda: dict(seeds=_cuda(B_BAD, dtype=I32)), "seeds"),
    "seeds_2d": (lambda: dict(seeds=_cuda(B_BAD, 1, dtype=I64)), "seeds"),
    "seeds_on_cpu": (lambda: dict(seeds=torch.zeros(B_BAD, dtype=I64)), "seeds"),
    "offsets_float32": (lambda: dict(offsets=_cuda(B_BAD)), "offsets"),
    "offsets_wrong_batch": (lambda: dict(offsets=_cuda(B_BAD - 1, dtype=I64)), "offsets"),
    "offsets_on_cpu": (lambda: dict(offsets=torch.zeros(B_BAD, dtype=I64)), "offsets"),
    "out_int64": (lambda: dict(out=poisoned((B_BAD,), I64)), r"\bout\b"),
    "out_wrong_shape": (lambda: dict(out=poisoned((B_BAD + 1,), I32)), r"\bout\b"),
    "out_on_cpu": (lambda: dict(out=torch.full((B_BAD,), -12345, dtype=I32)), r"\bout\b"),
    "logprobs_out_float64": (lambda: dict(logprobs_out=poisoned((B_BAD,), F64)), "logprobs_out"),
    "logprobs_out_wrong_shape": (lambda: dict(logprobs_out=poisoned((B_BAD, 1), F32)),
                                 "logprobs_out"),
}


def _call_sample(call: dict):
    kwargs = dict(call)
    logits = kwargs.pop("logits")
    return lambda: sample(logits, **kwargs)


def test_invalid_argument_base_call_is_valid():
    """The call every sample rejection case changes one thing of runs."""
    call = _base_sample_call()
    call.update(_with_penalty(), **_with_counts(),
                allowed_mask=_cuda(B_BAD, W_BAD, dtype=I32, fill=-1), top_k=V_BAD, top_p=0.5,
                min_p=0.25)
    tokens, logprobs = _call_sample(call)()
    torch.cuda.synchronize()
    assert tokens is call["out"] and logprobs is call["logprobs_out"]
    assert bool(((tokens >= 0) & (tokens < V_BAD)).all())


@pytest.mark.parametrize("name", list(INVALID_SAMPLE))
def test_sample_invalid_arguments(name):
    """Rejected with a ValueError naming the argument before any launch: the
    poisoned outputs are bit-identical afterwards."""
    change, match = INVALID_SAMPLE[name]
    call = _base_sample_call()
    call.update(change())
    buffers = [call[n] for n in ("out", "logprobs_out")]
    expect_rejected(_call_sample(call), match, buffers)
    torch.cuda.synchronize()


def _base_verify_call() -> dict:
    return dict(draft_token_ids=_cuda(B_BAD, K_BAD, dtype=I32),
                draft_probs=_cuda(B_BAD, K_BAD, V_BAD, fill=1.0 / V_BAD),
                target_logits=torch.randn(B_BAD, K_BAD + 1, V_BAD, device="cuda"),
                temperature=0.75, seeds=torch.arange(B_BAD, dtype=I64, device="cuda"),
                offsets=_cuda(B_BAD, dtype=I64))


INVALID_VERIFY = {
    "draft_token_ids_float32": (lambda: dict(draft_token_ids=_cuda(B_BAD, K_BAD)),
                                "draft_token_ids"),
    "draft_token_ids_1d": (lambda: dict(draft_token_ids=_cuda(B_BAD * K_BAD, dtype=I32)),
                           "draft_token_ids"),
    "draft_token_ids_wrong_k": (lambda: dict(draft_token_ids=_cuda(B_BAD, K_BAD + 1, dtype=I32)),
                                "draft_token_ids|target_logits"),
    "draft_token_ids_on_cpu": (lambda: dict(draft_token_ids=torch.zeros(B_BAD, K_BAD, dtype=I32)),
                               "draft_token_ids"),
    "draft_probs_bfloat16": (lambda: dict(draft_probs=_cuda(B_BAD, K_BAD, V_BAD, dtype=BF16)),
                             "draft_probs"),
    "draft_probs_wrong_vocab": (lambda: dict(draft_probs=_cuda(B_BAD, K_BAD, V_BAD + 1)),
                                "draft_probs"),
    "draft_probs_wrong_k": (lambda: dict(draft_probs=_cuda(B_BAD, K_BAD + 1, V_BAD)),
                            "draft_probs"),
    "draft_probs_on_cpu": (lambda: dict(draft_probs=torch.zeros(B_BAD, K_BAD, V_BAD)),
                           "draft_probs"),
    "target_logits_2d": (lambda: dict(target_logits=torch.randn(B_BAD, V_BAD, device="cuda")),
                         "target_logits"),
    "target_logits_float16": (lambda: dict(target_logits=_cuda(B_BAD, K_BAD + 1, V_BAD,
                                                               dtype=torch.float16)),
                              "target_logits"),
    "target_logits_wrong_batch": (lambda: dict(target_logits=_cuda(B_BAD + 1, K_BAD + 1, V_BAD)),
                                  "target_logits|draft_token_ids"),
    "target_logits_on_cpu": (lambda: dict(target_logits=torch.zeros(B_BAD, K_BAD + 1, V_BAD)),
                             "target_logits"),
    "temperature_negative": (lambda: dict(temperature=-1.0), "temperature"),
    "top_k_above_vocab": (lambda: dict(top_k=V_BAD + 1), "top_k"),
    "top_p_zero": (lambda: dict(top_p=0.0), "top_p"),
    "repetition_penalty_without_seen_mask": (lambda: dict(repetition_penalty=1.25), "seen_mask"),
    "seen_mask_wrong_words": (lambda: _with_penalty(seen_mask=_cuda(B_BAD, W_BAD + 1, dtype=I32)),
                              "seen_mask"),
    "seeds_wrong_batch": (lambda: dict(seeds=_cuda(B_BAD - 1, dtype=I64)), "seeds"),
    "offsets_on_cpu": (lambda: dict(offsets=torch.zeros(B_BAD, dtype=I64)), "offsets"),
}


def _call_verify(call: dict):
    kwargs = dict(call)
    args = [kwargs.pop(n) for n in ("draft_token_ids", "draft_probs", "target_logits")]
    return lambda: verify_speculative(*args, **kwargs)


def test_invalid_verify_base_call_is_valid():
    accepted, tokens = _call_verify(_base_verify_call())()
    torch.cuda.synchronize()
    assert tuple(accepted.shape) == (B_BAD,) and tuple(tokens.shape) == (B_BAD, K_BAD + 1)


@pytest.mark.parametrize("name", list(INVALID_VERIFY))
def test_verify_speculative_invalid_arguments(name):
    change, match = INVALID_VERIFY[name]
    call = _base_verify_call()
    call.update(change())
    expect_rejected(_call_verify(call), match)
    torch.cuda.synchronize()


INVALID_UPDATE = {
    "seen_mask_int64": (lambda: dict(seen_mask=_cuda(B_BAD, W_BAD, dtype=I64)), "seen_mask"),
    "seen_mask_1d": (lambda: dict(seen_mask=_cuda(W_BAD, dtype=I32)), "seen_mask"),
    "seen_mask_on_cpu": (lambda: dict(seen_mask=torch.zeros(B_BAD, W_BAD, dtype=I32)),
                         "seen_mask"),
    "tokens_wrong_batch": (lambda: dict(tokens=_cuda(B_BAD + 1, dtype=I32)), "tokens"),
    "tokens_float32": (lambda: dict(tokens=_cuda(B_BAD)), "tokens"),
    "tokens_on_cpu": (lambda: dict(tokens=torch.zeros(B_BAD, dtype=I32)), "tokens"),
}


@pytest.mark.parametrize("name", list(INVALID_UPDATE))
def test_update_seen_mask_invalid_arguments(name):
    change, match = INVALID_UPDATE[name]
    call = dict(seen_mask=_cuda(B_BAD, W_BAD, dtype=I32, fill=5), tokens=_cuda(B_BAD, dtype=I32))
    call.update(change())
    expect_rejected(lambda: update_seen_mask(call["seen_mask"], call["tokens"]), match,
                    [call["seen_mask"]])
    torch.cuda.synchronize()
