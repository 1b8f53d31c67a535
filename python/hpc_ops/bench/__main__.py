# SPDX-License-Identifier: Apache-2.0
"""Command line of the benchmark: python -m hpc_ops.bench <family>|all
[--quick] [--out DIR]. See python/hpc_ops/bench/__init__.py for the method."""
from __future__ import annotations

import argparse
import re
import math
import os
import sys
import time

FAMILIES = ("norm", "activation", "quantization", "attention", "rope", "gemm", "sampling",
            "overhead", "allreduce")
# Families that run their own processes and report (not the single-GPU case runner).
SELF_RUN = ("overhead", "allreduce")
NO_GPU = "hpc_ops.bench: no CUDA GPU available; the benchmark needs an sm_90 GPU"

# (timed replays per implementation, rounds they are split into for alternation)
REPS_FULL, ROUNDS_FULL = 120, 4
REPS_QUICK, ROUNDS_QUICK = 30, 2
QUICK_TIME_LIMIT_S = 170.0   # all --quick must stay under ~3 minutes


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m hpc_ops.bench",
        description="Memory-bandwidth benchmark of hpc_ops against PyTorch eager and "
                    "torch.compile baselines (CUDA-graph timing, L2 rotation, correctness "
                    "checks, ceiling measured in the same run).",
        epilog="Results: a table on stdout and <family>_<timestamp>.{json,csv,png} plus "
               "<family>_latest.* under --out. Exit status: 0, 1 if an hpc_ops result failed "
               "its check, 2 without a usable GPU.")
    p.add_argument("family", nargs="?", choices=[*FAMILIES, "all"], help="what to run")
    p.add_argument("--quick", action="store_true",
                   help="smaller grid and fewer repetitions (all --quick: under ~3 minutes)")
    p.add_argument("--out", default=os.path.join("bench", "results"),
                   help="output folder (default: bench/results under the current directory)")
    p.add_argument("--list", action="store_true", help="list the cases and exit (no GPU needed)")
    p.add_argument("--filter", default=None, help="only cases whose 'op label' (as --list prints them, e.g. "
                   "'rms_norm h=7168 r=4096') matches this regular expression")
    p.add_argument("--reps", type=int, default=None,
                   help=f"timed graph replays per implementation (default {REPS_FULL}, "
                        f"quick {REPS_QUICK})")
    p.add_argument("--time-limit", type=float, default=None,
                   help=f"seconds before remaining cases are skipped (default: "
                        f"{QUICK_TIME_LIMIT_S:.0f} with --quick, none otherwise; 0 = none)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile baselines")
    p.add_argument("--ours-only", action="store_true",
                   help="time hpc_ops alone (still checked against the reference; GPU-time "
                        "families only, overhead and allreduce ignore it): for A/B runs of two "
                        "builds, see scripts/ab_compare.sh")
    p.add_argument("--compile-static", action="store_true",
                   help="compile the baselines for each exact shape instead of once per hidden "
                        "size with dynamic rows (slower to run)")
    args = p.parse_args(argv)
    if args.family is None and not args.list:
        p.error("give a family (or 'all'), or --list")
    return args


def selected(args):
    if args.family in (None, "all"):
        return list(FAMILIES)
    return [args.family]


def family_cases(name: str, quick: bool, filt):
    from . import (cases_activation, cases_attention, cases_gemm, cases_norm, cases_quantization,
                   cases_rope, cases_sampling)
    make = {"norm": cases_norm.cases, "activation": cases_activation.cases,
            "quantization": cases_quantization.cases, "attention": cases_attention.cases,
            "rope": cases_rope.cases, "gemm": cases_gemm.cases, "sampling": cases_sampling.cases}[name]
    cases = make(quick)
    pattern = re.compile(filt) if filt else None
    return [c for c in cases if pattern is None or pattern.search(f"{c.op} {c.label}")]


def list_cases(args) -> int:
    for name in selected(args):
        if name == "overhead":
            from . import overhead
            print(f"overhead: host us/call of eager calls (rows=1): "
                  f"rms_norm h={overhead.HIDDEN}, silu_and_mul C={overhead.INTER}")
            continue
        if name == "allreduce":
            from . import allreduce
            tokens = allreduce.TOKENS_QUICK if args.quick else allreduce.TOKENS
            print(f"allreduce: worlds {allreduce.WORLDS} (as many GPUs as present), hidden "
                  f"{allreduce.HIDDENS}, tokens {tokens}")
            continue
        cases = family_cases(name, args.quick, args.filter)
        print(f"{name}: {len(cases)} cases")
        for c in cases:
            print(f"  {c.op:<36} {c.label:<22} {c.bytes / 1e6:10.3f} MB")
    return 0


def check_gpu() -> int:
    import torch
    if not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        return 2
    major, minor = torch.cuda.get_device_capability(0)
    if (major, minor) != (9, 0):
        print(f"hpc_ops.bench: found {torch.cuda.get_device_name(0)} (sm_{major}{minor}); "
              "the benchmark needs an sm_90 GPU", file=sys.stderr)
        return 2
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list:
        return list_cases(args)
    rc = check_gpu()
    if rc:
        return rc

    import torch

    import hpc_ops

    from . import common, overhead, report, runner, timing
    from .common import configure_dynamo

    start = time.monotonic()
    quick = args.quick
    reps = args.reps or (REPS_QUICK if quick else REPS_FULL)
    rounds = min(ROUNDS_QUICK if quick else ROUNDS_FULL, reps)
    limit = args.time_limit if args.time_limit is not None else (
        QUICK_TIME_LIMIT_S if quick else 0.0)
    end = start + limit if limit > 0 else math.inf
    families = selected(args)
    built = hpc_ops.built_families()
    for name in list(families):
        family = "comm" if name == "allreduce" else name
        if name != "overhead" and family not in built:
            print(f"hpc_ops.bench: family '{name}' is not in this build ({' '.join(built)}): "
                  "skipped", flush=True)
            families.remove(name)
    if "overhead" in families and "norm" not in built:
        families.remove("overhead")

    configure_dynamo()
    common.STATIC_COMPILE = args.compile_static
    env = report.environment()
    print(f"hpc_ops {env['hpc_ops']} on {env['device']} ({env['sm_count']} SMs, L2 "
          f"{env['l2_bytes'] / 2**20:.0f} MiB), torch {env['torch']}, CUDA {env['cuda']}, "
          f"git {env['git_commit'] or '?'}, PDL {'on' if env['pdl'] else 'off (HPC_OPS_PDL=0)'}",
          flush=True)
    print("measuring the bandwidth ceiling ...", flush=True)
    ceil = timing.measure_ceilings(20 if quick else 50, clock_reader=report.read_sm_clock)
    print(f"ceiling: copy {ceil['copy_tbps']:.2f} TB/s (1 GiB, read+write), read-only sum "
          f"{ceil['reduce_tbps']:.2f} TB/s (2 GiB bf16) -> {ceil['ceiling_tbps']:.2f} TB/s; "
          f"SM clock under load {ceil['sm_clock'] or '?'} MHz", flush=True)
    meta = {**env, **{k: v for k, v in ceil.items() if k != "sm_clock"},
            "sm_clock_mhz": ceil["sm_clock"], "quick": quick, "reps": reps, "rounds": rounds,
            "compile_rows": "static" if args.compile_static else "dynamic",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S")}

    any_fail = False
    gpu_families = [f for f in families if f not in SELF_RUN]
    for name in families:
        t0 = time.monotonic()
        if name == "overhead":  # a few seconds: runs even past the time limit
            print("\n== overhead: host time per eager call ==", flush=True)
            records = overhead.run(quick)
        elif name == "allreduce":  # spawns one process per GPU and writes its own files
            from . import allreduce
            print("\n== allreduce: fused all-reduce + residual add + RMSNorm ==", flush=True)
            allreduce.run(quick, args.out)
            continue
        else:
            # Share what is left of the time limit among the families still to run.
            left = gpu_families[gpu_families.index(name):]
            deadline = t0 + (end - t0) / len(left) if end != math.inf else math.inf
            ctx = runner.Context(quick=quick, ceiling_tbps=ceil["ceiling_tbps"],
                                 l2_bytes=env["l2_bytes"], sm_count=env["sm_count"], reps=reps,
                                 rounds=rounds, deadline=deadline,
                                 compile_baselines=not args.no_compile,
                                 baselines=not args.ours_only)
            records = runner.run_family(name, family_cases(name, quick, args.filter), ctx)
            runner.summary(name, records, ceil["ceiling_tbps"])
            any_fail |= any(r["check"] in ("FAIL", "ERR") for r in records if not r["baseline"])
        meta["sm_clock_mhz_end"] = report.read_sm_clock()
        if records:
            paths = report.write_outputs(name, records, meta, args.out)
            print(f"   wrote {', '.join(paths)} ({time.monotonic() - t0:.0f} s)", flush=True)
        torch.cuda.empty_cache()
    print(f"\ndone in {time.monotonic() - start:.0f} s", flush=True)
    return 1 if any_fail else 0


if __name__ == "__main__":
    sys.exit(main())
