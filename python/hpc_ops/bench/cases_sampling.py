# SPDX-License-Identifier: Apache-2.0
"""Family "sampling": one fused decode-sampling step (hpc_ops.sample) against
the sampler as engines write it in plain PyTorch, eager and under
torch.compile, and FlashInfer's sampling kernels (flashinfer.sampling) when
flashinfer is importable.

Ops (float32 logits [B, V], every parameter a per-row [B] tensor as an engine
batch carries them, seeds and offsets int64 [B]):
  ``sample_temp``       temperature 0.8 only (softmax and the race, no truncation)
  ``sample_topk_topp``  temperature 0.8, top-k 50, top-p 0.9
  ``sample_full``       repetition 1.1 / presence 0.2 / frequency 0.1 penalties
                        (~2 % of the vocabulary seen, ~1 % counted 1..3 times),
                        temperature 0.8 with every 8th row greedy (temperature
                        0), top-k 50, top-p 0.9, min-p 0.05
Grid: V in {128256 (Llama 3), 151936 (Qwen)}, B in {512, 256, 128, 64, 32, 8,
1}, largest B first per (op, V) (the dynamic-rows compile of the baseline
happens at the first, largest call; see common.grid). Logits are N(0, 2.5^2).

Baselines:
  torch          penalties with a bool seen mask and the int32 counts; argmax
                 for greedy rows; logits / T; min-p as probs >= min_p * max(probs)
                 of the full softmax; top-k as a threshold at the k-th value of
                 torch.topk (ties kept); top-p by an ascending sort, softmax,
                 cumsum and dropping the tokens whose cumulative mass is
                 <= 1 - p (top-p judged on the top-k survivors, as in vLLM);
                 then the exponential race (probs / Exp(1) noise from torch's
                 RNG, argmax), which samples the truncated distribution exactly
  torch.compile  the same function (rows dynamic, one compile per V and row
                 count class). Inductor (torch 2.11) fails to generate the
                 top-p cumsum at most sizes ("SplitScan ... list indices"),
                 static shapes included; those cases report ERR
  flashinfer     temp: sampling_from_logits; topk_topp:
                 top_k_top_p_sampling_from_logits; full: the same torch
                 penalties, then top_k_mask_logits, softmax, top_p_renorm_probs
                 and min_p_sampling_from_probs (min-p on the renormalized top-k /
                 top-p survivors keeps the same tokens as min-p on the full
                 distribution), argmax for greedy rows
hpc_ops.sample is looked up at call time, so listing the cases needs neither a
GPU nor a build with the sampling family.

Correctness: the implementations draw different random numbers, so tokens are
not compared with each other. A float64 reference on the GPU (the mirror's
rules, tests/python/sampling_reference.py: penalties, temperature, threshold
top-k with ties, top-p on the top-k survivors with sums in descending order,
min-p on the full distribution) gives each row's survivor set, widened by a
relative 1e-4 at each threshold so float32 rounding at a boundary is no
failure; every sampled token must be a survivor, and every greedy row's token
a maximum of the penalized logits (within 1e-5 relative). Survivors also need
p >= 1e-12 * max(p): without truncation every token survives, and this still
rejects a sampler that returns e.g. the argmin, while a correct one draws such
a token with probability below V * 1e-12 per row (< 1e-4 per case at B = 512).
A check reports the number of rows that fail.

Bytes counted (B rows, V vocabulary; float32 logits, int32 words):
  read logits            B * V * 4
  read seen bitmask      B * ceil(V / 32) * 4     (full)
  read token counts      B * V * 4                (full)
  write tokens           B * 4
The per-row parameters, seeds and offsets (<= 44 bytes a row) are not counted.
The torch baseline reads a bool seen mask (B * V bytes) instead of the bitmask
but is rated on the same count.
"""
from __future__ import annotations

import math

import torch

from .common import F32, I32, Case, Check, Impl, compiled, mark_rows

VOCABS = (128256, 151936)
BATCHES = (512, 256, 128, 64, 32, 8, 1)
SCENARIOS = ("temp", "topk_topp", "full")
QUICK = {("temp", 151936, 1), ("temp", 151936, 64), ("topk_topp", 151936, 1),
         ("topk_topp", 151936, 64), ("full", 151936, 256), ("full", 151936, 8)}

LOGIT_STD = 2.5
TEMPERATURE, TOP_K, TOP_P, MIN_P = 0.8, 50, 0.9, 0.05
REPETITION, PRESENCE, FREQUENCY = 1.1, 0.2, 0.1
GREEDY_EVERY = 8
SEEN_FRACTION, COUNTED_FRACTION = 0.01, 0.01
THRESHOLD_RTOL = 1e-4     # survivor thresholds widened by this (float32 rounding)
ARGMAX_RTOL = 1e-5        # greedy: within this of the top penalized logit
PLAUSIBLE = 1e-12         # sampled tokens: p >= this * max(p) (see the module docstring)


def _words(v: int) -> int:
    return (v + 31) // 32


def _pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """bool [B, V] -> int32 [B, ceil(V/32)] (bit t % 32 of word t // 32), on the GPU."""
    b, v = mask.shape
    w = _words(v)
    padded = torch.nn.functional.pad(mask.to(torch.int64), (0, w * 32 - v))
    words = (padded.view(b, w, 32) << torch.arange(32, device=mask.device)).sum(dim=-1)
    return torch.where(words >= 2 ** 31, words - 2 ** 32, words).to(torch.int32)


# ---------------------------------------------------------------------------
# inputs

def _inputs(scenario: str, b: int, v: int):
    def make(slot):
        dev = "cuda"
        s = {"logits": torch.randn(b, v, device=dev) * LOGIT_STD,
             "temperature": torch.full((b,), TEMPERATURE, device=dev),
             "seeds": torch.randint(-2 ** 62, 2 ** 62, (b,), device=dev, dtype=torch.int64),
             "offsets": torch.randint(0, 2 ** 40, (b,), device=dev, dtype=torch.int64)}
        if scenario != "temp":
            s["top_k"] = torch.full((b,), TOP_K, device=dev, dtype=torch.int32)
            s["top_p"] = torch.full((b,), TOP_P, device=dev)
        if scenario == "full":
            s["temperature"][::GREEDY_EVERY] = 0.0
            s["min_p"] = torch.full((b,), MIN_P, device=dev)
            s["repetition"] = torch.full((b,), REPETITION, device=dev)
            s["presence"] = torch.full((b,), PRESENCE, device=dev)
            s["frequency"] = torch.full((b,), FREQUENCY, device=dev)
            counted = torch.rand(b, v, device=dev) < COUNTED_FRACTION
            counts = torch.randint(1, 4, (b, v), device=dev, dtype=torch.int32)
            s["counts"] = torch.where(counted, counts, 0).to(torch.int32)
            s["seen"] = counted | (torch.rand(b, v, device=dev) < SEEN_FRACTION)  # + prompt
            s["seen_bits"] = _pack_bits(s["seen"])
        return s
    return make


# ---------------------------------------------------------------------------
# ours

def _ours(scenario: str):
    def run(s):
        import hpc_ops
        kwargs = dict(temperature=s["temperature"], seeds=s["seeds"], offsets=s["offsets"])
        if scenario != "temp":
            kwargs.update(top_k=s["top_k"], top_p=s["top_p"])
        if scenario == "full":
            kwargs.update(min_p=s["min_p"], repetition_penalty=s["repetition"],
                          presence_penalty=s["presence"], frequency_penalty=s["frequency"],
                          seen_mask=s["seen_bits"], token_counts=s["counts"])
        return hpc_ops.sample(s["logits"], **kwargs)
    return run


# ---------------------------------------------------------------------------
# baseline: the plain PyTorch sampler (run eager and under torch.compile)

def _penalize(logits, rep, pres, freq, seen, counts):
    """Repetition (seen tokens: l > 0 -> l / r, else l * r), presence and
    frequency penalties, float32 out."""
    x = logits.float()
    r = rep[:, None]
    x = torch.where(seen, torch.where(x > 0, x / r, x * r), x)
    x = x - pres[:, None] * seen
    return x - freq[:, None] * counts


def torch_sample(logits, temperature, top_k, top_p, min_p, rep, pres, freq, seen, counts,
                 k_max: int):
    """Tokens (int64 [B]) of one decode step; None turns a stage off."""
    x = logits.float()
    if rep is not None:
        x = _penalize(x, rep, pres, freq, seen, counts)
    greedy = temperature == 0
    argmax = x.argmax(dim=-1)
    x = x / torch.where(greedy, 1.0, temperature)[:, None]
    if min_p is not None:
        probs = x.softmax(dim=-1)
        keep_min = probs >= min_p[:, None] * probs.amax(dim=-1, keepdim=True)
    if top_k is not None:
        kth = torch.topk(x, k_max, dim=-1).values.gather(1, (top_k.long() - 1)[:, None])
        x = x.masked_fill(x < kth, float("-inf"))
    if top_p is not None:
        sorted_x, idx = x.sort(dim=-1)
        cum = sorted_x.softmax(dim=-1).cumsum(dim=-1)
        drop = cum <= 1 - top_p[:, None]
        drop[:, -1] = False
        x = x.scatter(1, idx, sorted_x.masked_fill(drop, float("-inf")))
    if min_p is not None:
        x = x.masked_fill(~keep_min, float("-inf"))
    probs = x.softmax(dim=-1)
    noise = torch.empty_like(probs).exponential_()
    return torch.where(greedy, argmax, probs.div(noise).argmax(dim=-1))


def _base_args(s):
    return (s["logits"], s["temperature"], s.get("top_k"), s.get("top_p"), s.get("min_p"),
            s.get("repetition"), s.get("presence"), s.get("frequency"), s.get("seen"),
            s.get("counts"), TOP_K)


def _compiled_base():
    cfn = compiled(torch_sample)

    def run(s):
        args = _base_args(s)
        mark_rows(*[a for a in args[:10] if a is not None])
        return cfn(*args)

    return Impl("torch.compile", run)


# ---------------------------------------------------------------------------
# FlashInfer (optional)

def _flashinfer_available() -> bool:
    from .cases_attention import _flashinfer_available as available
    return available()


def _flashinfer_run(scenario: str):
    def run(s):
        from flashinfer import sampling as fs
        x = s["logits"]
        if scenario == "full":
            x = _penalize(x, s["repetition"], s["presence"], s["frequency"], s["seen"],
                          s["counts"])
        t = s["temperature"]
        greedy = t == 0
        argmax = x.argmax(dim=-1) if scenario == "full" else None
        x = x / torch.where(greedy, 1.0, t)[:, None]
        if scenario == "temp":
            return fs.sampling_from_logits(x)
        if scenario == "topk_topp":
            return fs.top_k_top_p_sampling_from_logits(x, s["top_k"], s["top_p"])
        x = fs.top_k_mask_logits(x, s["top_k"])
        probs = fs.top_p_renorm_probs(torch.softmax(x, dim=-1), s["top_p"])
        sampled = fs.min_p_sampling_from_probs(probs, s["min_p"])
        return torch.where(greedy, argmax, sampled.long())
    return run


def _impls(scenario: str):
    note = "bool seen mask" if scenario == "full" else ""
    impls = [Impl("hpc_ops", _ours(scenario), baseline=False),
             Impl("torch", lambda s: torch_sample(*_base_args(s)), note=note),
             _compiled_base()]
    impls[-1].note = note
    if _flashinfer_available():
        impls.append(Impl("flashinfer", _flashinfer_run(scenario),
                          note="torch penalties" if scenario == "full" else ""))
    return impls


# ---------------------------------------------------------------------------
# reference and check

def _survivors(p, top_k=None, top_p=None, min_p=None):
    """bool [B, V]: tokens of float64 probabilities p [B, V] that pass top-k
    (ties kept), top-p (on the top-k survivors, S_t = mass strictly above
    p_t < top_p * Z_k) and min-p, each threshold widened by THRESHOLD_RTOL."""
    keep = p >= PLAUSIBLE * p.amax(dim=-1, keepdim=True)
    if top_k is None and top_p is None and min_p is None:
        return keep
    b, v = p.shape
    desc = p.sort(dim=-1, descending=True).values
    kth = torch.zeros(b, 1, dtype=p.dtype, device=p.device)
    if top_k is not None:
        k = torch.where((top_k > 0) & (top_k < v), top_k, v).long()
        kth = desc.gather(1, (k - 1)[:, None])
        keep &= p >= kth * (1 - THRESHOLD_RTOL)
    if top_p is not None:
        desc_k = torch.where(desc >= kth, desc, 0.0)
        prefix = torch.cat([torch.zeros_like(kth), desc_k.cumsum(dim=-1)], dim=-1)
        n_le = torch.searchsorted(desc_k.flip(-1).contiguous(), p.contiguous(), right=True)
        above = prefix.gather(1, v - n_le)
        tp = top_p.double()[:, None]
        keep &= (tp >= 1) | (above < tp * prefix[:, v:] * (1 + THRESHOLD_RTOL))
    if min_p is not None:
        keep &= p >= min_p.double()[:, None] * desc[:, :1] * (1 - THRESHOLD_RTOL)
    return keep


def _reference(scenario: str):
    """bool [B, V]: the tokens each row may return (float64 on the GPU)."""
    def ref(s):
        l = s["logits"].double()
        if scenario == "full":
            r = s["repetition"].double()[:, None]
            seen = s["seen"]
            l = torch.where(seen, torch.where(l > 0, l / r, l * r), l)
            l = l - s["presence"].double()[:, None] * seen
            l = l - s["frequency"].double()[:, None] * s["counts"].double()
        t = s["temperature"].double()
        greedy = t == 0
        p = torch.softmax(l / torch.where(greedy, 1.0, t)[:, None], dim=-1)
        allowed = _survivors(p, s.get("top_k"), s.get("top_p"), s.get("min_p"))
        del p
        top = l.amax(dim=-1, keepdim=True)
        near_max = l >= top - ARGMAX_RTOL * top.abs().clamp_min(1.0)
        return torch.where(greedy[:, None], near_max, allowed)
    return ref


def _check(ref, out):
    """Every row's token is one the reference allows; max_err = failing rows."""
    b, v = ref.shape
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (b,):
        return Check(math.inf, math.inf, False,
                     f"tokens: got {getattr(out, 'shape', type(out))}, want [{b}]")
    t = out.long()
    legal = (t >= 0) & (t < v)
    ok = legal & ref.gather(1, t.clamp(0, v - 1)[:, None]).squeeze(1)
    bad = int((~ok).sum())
    if bad == 0:
        return Check(0.0, 0.0, True)
    return Check(float(bad), math.inf, False,
                 f"{bad} of {b} tokens are not survivors (greedy rows: not the argmax)")


# ---------------------------------------------------------------------------
# the cases

def _bytes(scenario: str, b: int, v: int) -> int:
    """Minimal HBM traffic of one call (formula in the module docstring)."""
    n = b * v * F32
    if scenario == "full":
        n += b * _words(v) * I32 + b * v * I32
    return n + b * I32


def cases(quick: bool) -> list:
    out = []
    for scenario in SCENARIOS:
        op = f"sample_{scenario}"
        for v in VOCABS:
            for b in BATCHES:
                if quick and (scenario, v, b) not in QUICK:
                    continue
                out.append(Case(
                    family="sampling", op=op, label=f"V={v} B={b}",
                    params={"scenario": scenario, "vocab": v, "rows": b, "logits": "float32"},
                    bytes=_bytes(scenario, b, v), make_inputs=_inputs(scenario, b, v),
                    impls=lambda scenario=scenario: _impls(scenario),
                    reference=_reference(scenario), check=_check, config_dims=None,
                    config_text=lambda sms, b=b, v=v: f"B={b} V={v}",
                    plot_group=f"{op} V={v}", plot_x=float(b), plot_xlabel="batch rows"))
    return out
