# SPDX-License-Identifier: Apache-2.0
"""GPU timing: CUDA-graph capture of several calls, rotation of input sets so
small cases are not served from L2, interleaved replay of several
implementations, and the bandwidth ceiling (copy and read-only reduction)
measured in the same process.

Why graphs: a kernel of a few microseconds launched from Python is separated
from the next by launch gaps of similar size; timing eager calls would measure
the host. A graph of N calls replays them back to back, and the per-call time
is median(replay) / N.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

TARGET_REPLAY_S = 200e-6   # one replay should last at least this long ...
MAX_CALLS = 100            # ... with at most this many calls captured per graph
L2_FACTOR = 3              # rotate inputs until the working set is > 3x L2
MAX_SLOTS = 256            # cap on input sets (tiny cases stay partly L2-resident)


@dataclass
class Plan:
    slots: int          # distinct input sets
    calls: int          # calls captured per graph
    graphs: int         # graphs replayed round-robin, so a cycle visits every slot
    working_set: int    # bytes touched by one cycle (inputs + outputs of every slot)
    l2_resident: bool   # working set below L2_FACTOR x L2: numbers are optimistic


def make_plan(case_bytes: int, l2_bytes: int, ceiling_bps: float) -> Plan:
    """Choose slots, calls per graph and graph count for one case.

    calls: the case can run no faster than bytes / ceiling, so with
    ceil(TARGET / that) calls a replay lasts >= TARGET_REPLAY_S. All
    implementations of a case share the plan, so their graphs have the same shape.
    slots: enough distinct input sets that one cycle touches > 3x L2; when that
    needs more than MAX_SLOTS the case is flagged l2_resident.
    """
    case_bytes = max(int(case_bytes), 1)
    want = math.ceil(L2_FACTOR * l2_bytes / case_bytes) if case_bytes < L2_FACTOR * l2_bytes else 1
    slots = max(1, min(want, MAX_SLOTS))
    t_min = case_bytes / ceiling_bps
    calls = max(1, min(MAX_CALLS, math.ceil(TARGET_REPLAY_S / t_min)))
    graphs = math.ceil(slots / calls)
    working = case_bytes * max(slots, 1)
    return Plan(slots, calls, graphs, working, working < L2_FACTOR * l2_bytes)


class GraphSet:
    """The graphs of one implementation for one case. Outputs returned during
    capture are kept alive, so every captured call writes fresh memory (the
    allocator would otherwise hand each call the block the previous call just
    freed, which stays hot in L2)."""

    def __init__(self, fn: Callable, inputs: Sequence[dict], plan: Plan):
        self.graphs = []
        self._keep = []
        self.calls = plan.calls
        # Warm-up outside capture, on a side stream as torch recommends: compiles
        # (torch.compile), autotunes and allocates whatever first calls need.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                fn(inputs[0])
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        for g in range(plan.graphs):
            graph = torch.cuda.CUDAGraph()
            # thread_local: background threads (e.g. inductor's compile pool)
            # doing harmless CUDA queries do not invalidate this capture.
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                for i in range(plan.calls):
                    self._keep.append(fn(inputs[(g * plan.calls + i) % plan.slots]))
            self.graphs.append(graph)
        torch.cuda.synchronize()

    def replay(self, k: int) -> None:
        self.graphs[k % len(self.graphs)].replay()

    def release(self) -> None:
        self._keep.clear()
        for g in self.graphs:
            g.reset()
        self.graphs.clear()


def time_sets(sets: dict, reps: int, rounds: int, warmup: int = 3) -> dict:
    """Per-call times (seconds, one per replay) of several GraphSets, measured
    in alternating order: rounds of reps/rounds replays each, forward order on
    even rounds and reversed on odd ones, so clock or thermal drift does not
    favour whichever runs first. Each replay is bracketed by CUDA events; the
    host never waits inside a round, so the GPU runs replays back to back."""
    names = list(sets)
    for name in names:
        gs = sets[name]
        for k in range(max(warmup, len(gs.graphs))):
            gs.replay(k)
    torch.cuda.synchronize()
    per_round = max(1, math.ceil(reps / rounds))
    out = {name: [] for name in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            gs = sets[name]
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      for _ in range(per_round)]
            for k, (start, end) in enumerate(events):
                start.record()
                gs.replay(r * per_round + k)
                end.record()
            torch.cuda.synchronize()
            out[name].extend(s.elapsed_time(e) * 1e-3 / gs.calls for s, e in events)
    return out


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def percentiles(values: Sequence[float], pcts: Sequence[int]) -> tuple:
    """Nearest-rank percentiles (NaN for no values)."""
    if not values:
        return tuple(math.nan for _ in pcts)
    v = sorted(values)
    return tuple(v[min(len(v) - 1, max(0, round(p / 100 * (len(v) - 1))))] for p in pcts)


# ---------------------------------------------------------------------------
# bandwidth ceiling

def time_eager(fns: dict, reps: int, rounds: int = 2) -> dict:
    """Median seconds per call of large eager calls, timed with CUDA events
    around each call, alternating between the functions."""
    for fn in fns.values():
        for _ in range(3):
            fn()
    torch.cuda.synchronize()
    out = {name: [] for name in fns}
    per_round = max(1, math.ceil(reps / rounds))
    for r in range(rounds):
        for name in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      for _ in range(per_round)]
            for start, end in events:
                start.record()
                fns[name]()
                end.record()
            torch.cuda.synchronize()
            out[name].extend(s.elapsed_time(e) * 1e-3 for s, e in events)
    return {name: median(t) for name, t in out.items()}


def measure_ceilings(reps: int, clock_reader: Callable[[], object] = None) -> dict:
    """Device-to-device copy of 1 GiB (bytes read + written) and a read-only
    reduction (torch.sum over 2 GiB of bfloat16, which reads each byte once and
    writes one element). The ceiling is the faster of the two. Both are far
    larger than L2 and last ~0.5 ms, so they are timed eagerly: launch gaps are
    negligible, and a memcpy captured in a CUDA graph can become a copy-engine
    node, which is slower than the SM copy an eager copy_ gets.
    clock_reader, if given, is called while the GPU is busy (so it reads the
    loaded SM clock, not the idle one)."""
    gib = 1 << 30
    src = torch.randn(gib // 2, device="cuda", dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    big = torch.randn(gib, device="cuda", dtype=torch.bfloat16)
    fns = {"copy": lambda: dst.copy_(src), "reduce": lambda: torch.sum(big)}
    t = time_eager(fns, reps)
    clock = None
    if clock_reader is not None:
        for _ in range(200):  # ~100 ms of copies in flight while the clock is read
            dst.copy_(src)
        clock = clock_reader()
        torch.cuda.synchronize()
    res = {
        "copy_tbps": 2 * gib / t["copy"] / 1e12,
        "copy_us": t["copy"] * 1e6,
        "reduce_tbps": 2 * gib / t["reduce"] / 1e12,
        "reduce_us": t["reduce"] * 1e6,
        "sm_clock": clock,
    }
    res["ceiling_tbps"] = max(res["copy_tbps"], res["reduce_tbps"])
    del src, dst, big
    torch.cuda.empty_cache()
    return res
