# SPDX-License-Identifier: Apache-2.0
"""Runs the cases of a family: inputs, correctness check against the float32
reference, graph capture and interleaved timing of every implementation, and
one record per (case, implementation)."""
from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass

import torch

from . import report, timing
from .common import Case


@dataclass
class Context:
    quick: bool
    ceiling_tbps: float
    l2_bytes: int
    sm_count: int
    reps: int
    rounds: int
    deadline: float          # time.monotonic() value; math.inf for none
    compile_baselines: bool = True
    baselines: bool = True   # False: hpc_ops alone (--ours-only)


def _clone(inputs: dict) -> dict:
    return {k: v.clone() for k, v in inputs.items()}


def _error_text(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".replace("\n", " ")
    return text[:160]


def select_impls(impls: list, ctx: Context) -> list:
    """The implementations a run times: without the baselines (--ours-only)
    or without the torch.compile ones (--no-compile)."""
    if not ctx.baselines:
        impls = [i for i in impls if not i.baseline]
    if not ctx.compile_baselines:
        impls = [i for i in impls if "compile" not in i.name]
    return impls


def run_case(case: Case, ctx: Context) -> list:
    from hpc_ops import _C

    plan = timing.make_plan(case.bytes, ctx.l2_bytes, ctx.ceiling_tbps * 1e12)
    config = (_C.rowwise_config(case.config_dims[0], case.config_dims[1], ctx.sm_count)
              if case.config_dims is not None else case.config_text(ctx.sm_count))
    torch.manual_seed(zlib.crc32(f"{case.op} {case.label}".encode()))
    inputs = [case.make_inputs(i) for i in range(plan.slots)]
    ref = case.reference(inputs[0])
    impls = select_impls(case.impls(), ctx)

    # 1. correct first: every implementation on (a copy of) slot 0
    checks, errors = {}, {}
    for impl in impls:
        try:
            out = impl.fn(_clone(inputs[0]) if case.inplace else inputs[0])
            torch.cuda.synchronize()
            checks[impl.name] = case.check(ref, out)
            del out
        except Exception as e:  # e.g. a torch.compile failure: note it and go on
            errors[impl.name] = _error_text(e)
            print(f"    note: {impl.name} failed on {case.op} {case.label}: {errors[impl.name]}",
                  flush=True)
    del ref

    # 2. capture, then time all implementations interleaved
    sets = {}
    for impl in impls:
        if impl.name in errors:
            continue
        try:
            sets[impl.name] = timing.GraphSet(impl.fn, inputs, plan)
        except Exception as e:
            errors[impl.name] = "capture: " + _error_text(e)
            print(f"    note: {impl.name} could not be captured: {errors[impl.name]}", flush=True)
            try:
                torch.cuda.synchronize()
            except Exception:  # a sticky CUDA error: later cases will report it too
                pass
    times = timing.time_sets(sets, ctx.reps, ctx.rounds) if sets else {}
    for gs in sets.values():
        gs.release()
    del sets, inputs

    # 3. records
    med = {name: timing.median(t) for name, t in times.items()}
    spread = {name: timing.percentiles(t, (10, 90)) for name, t in times.items()}
    ok_base = [med[i.name] for i in impls
               if i.baseline and i.name in med and checks.get(i.name) and checks[i.name].ok]
    best_base = min(ok_base) if ok_base else math.nan
    records = []
    for impl in impls:
        t = med.get(impl.name, math.nan)
        chk = checks.get(impl.name)
        tbps = case.bytes / t / 1e12 if t == t else math.nan
        note = errors.get(impl.name, impl.note)
        if plan.l2_resident and not impl.baseline:
            note = ("L2*  " + note).strip()
        flops = case.params.get("flops", 0)
        tflops = flops / t / 1e12 if flops and t == t else None
        dense = case.params.get("dense_tflops")
        records.append({
            "family": case.family, "op": case.op, "shape": case.label, **case.params,
            "impl": impl.name, "baseline": impl.baseline,
            "time_us": t * 1e6, "bytes": case.bytes, "tbps": tbps,
            "time_us_p10": spread.get(impl.name, (math.nan,) * 2)[0] * 1e6,
            "time_us_p90": spread.get(impl.name, (math.nan,) * 2)[1] * 1e6,
            "pct_ceiling": 100.0 * tbps / ctx.ceiling_tbps,
            "tflops": tflops,
            "pct_dense": 100.0 * tflops / dense if tflops and dense else None,
            "speedup": (best_base / t) if not impl.baseline else None,
            "max_err": chk.max_err if chk else None,
            "err_over_tol": chk.ratio if chk else None,
            "check": ("ok" if chk.ok else "FAIL") if chk else ("ERR" if impl.name in errors
                                                              else "-"),
            "check_detail": chk.detail if chk else "",
            "rowwise_config": config,
            "calls_per_graph": plan.calls, "graphs": plan.graphs, "slots": plan.slots,
            "replays": len(times.get(impl.name, [])), "working_set_bytes": plan.working_set,
            "l2_resident": plan.l2_resident,
            "plot_group": case.plot_group, "plot_x": case.plot_x, "plot_xlabel": case.plot_xlabel,
            "note": note, "case_note": case.note,
        })
    return records


def run_family(name: str, cases: list, ctx: Context) -> list:
    """Run every case (until the deadline); print each record as it comes."""
    print(f"\n== {name}: {len(cases)} cases ==", flush=True)
    print(report.header(), flush=True)
    records = []
    for k, case in enumerate(cases, 1):
        if time.monotonic() > ctx.deadline:
            print(f"  [{name} {k}/{len(cases)}] time limit reached: skipping the remaining "
                  f"{len(cases) - k + 1} cases", flush=True)
            break
        t0 = time.monotonic()
        try:
            recs = run_case(case, ctx)
        except Exception as e:
            print(f"  [{name} {k}/{len(cases)}] {case.op} {case.label}: FAILED "
                  f"{_error_text(e)}", flush=True)
            torch.cuda.empty_cache()
            continue
        for r in recs:
            print(report.row_line(r), flush=True)
        print(f"  [{name} {k}/{len(cases)}] {time.monotonic() - t0:.1f} s", flush=True)
        records.extend(recs)
        torch.cuda.empty_cache()
    return records


def summary(name: str, records: list, ceiling: float) -> None:
    ours = [r for r in records if not r["baseline"]]
    fails = [r for r in records if r["check"] in ("FAIL", "ERR")]
    sp = [r["speedup"] for r in ours if r.get("speedup") and r["speedup"] == r["speedup"]]
    print(f"\n-- {name} summary: {len(ours)} cases, ceiling {ceiling:.2f} TB/s", flush=True)
    if sp:
        geo = math.exp(sum(math.log(s) for s in sp) / len(sp))
        print(f"   hpc_ops speedup vs best baseline: geomean {geo:.2f}x, min {min(sp):.2f}x, "
              f"max {max(sp):.2f}x", flush=True)
    big = [r for r in ours if not r["l2_resident"] and r["pct_ceiling"] == r["pct_ceiling"]]
    if big:
        print(f"   hpc_ops % of ceiling (cases larger than 3x L2): median "
              f"{sorted(r['pct_ceiling'] for r in big)[len(big) // 2]:.1f}%", flush=True)
    if fails:
        print(f"   {len(fails)} check failures/errors:", flush=True)
        for r in fails:
            print(f"     {r['op']} {r['shape']} {r['impl']}: {r['check']} "
                  f"{r['check_detail'] or r['note']}", flush=True)
    if any(r["l2_resident"] for r in ours):
        print("   L2* = working set below 3x L2 even with the maximum input rotation "
              f"({timing.MAX_SLOTS} sets): partly L2-resident, optimistic", flush=True)
