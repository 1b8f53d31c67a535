# SPDX-License-Identifier: Apache-2.0
"""Environment facts and result output: the stdout table, JSON, CSV and one
PNG plot per family under bench/results/ (or --out)."""
from __future__ import annotations

import csv
import json
import math
import os
import platform
import shutil
import subprocess
import time

import torch

# ---------------------------------------------------------------------------
# environment


def _run(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return r.stdout.strip() if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def read_sm_clock():
    """Current SM clock in MHz, best effort: torch (via NVML), else nvidia-smi."""
    try:
        return int(torch.cuda.clock_rate())
    except Exception:  # pynvml missing or NVML unavailable
        pass
    out = _run(["nvidia-smi", "--query-gpu=clocks.sm", "--format=csv,noheader,nounits", "-i", "0"])
    try:
        return int(out.splitlines()[0]) if out else None
    except ValueError:
        return None


def environment() -> dict:
    import hpc_ops

    props = torch.cuda.get_device_properties(0)
    commit = _run(["git", "rev-parse", "HEAD"])  # of the current directory, best effort
    max_clock = _run(["nvidia-smi", "--query-gpu=clocks.max.sm", "--format=csv,noheader,nounits",
                      "-i", "0"])
    return {
        "device": torch.cuda.get_device_name(0),
        "sm_count": props.multi_processor_count,
        "l2_bytes": props.L2_cache_size,
        "capability": "%d.%d" % (props.major, props.minor),
        "sm_clock_max_mhz": int(max_clock.splitlines()[0]) if max_clock and
        max_clock.splitlines()[0].isdigit() else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "hpc_ops": hpc_ops.__version__,
        "hpc_ops_families": " ".join(hpc_ops.built_families()),
        "git_commit": commit,
        "git_dirty": None if commit is None else
        bool(_run(["git", "status", "--porcelain", "--untracked-files=no"])),
        # Programmatic dependent launch between consecutive kernels (on unless
        # HPC_OPS_PDL=0; the graph of N calls lets each call overlap the last).
        "pdl": os.environ.get("HPC_OPS_PDL", "1") != "0",
        "python": platform.python_version(),
        "host": platform.node(),
    }


# ---------------------------------------------------------------------------
# stdout table

COLS = [("op", 33), ("shape", 19), ("impl", 18), ("us", 9), ("TB/s", 6), ("%ceil", 6),
        ("speedup", 7), ("max_err", 8), ("check", 5), ("config", 20)]


def header() -> str:
    line = " ".join(f"{n:<{w}}" if i < 3 else f"{n:>{w}}" for i, (n, w) in enumerate(COLS[:-1]))
    return line + "  " + COLS[-1][0]


def _fmt(v, spec, na="-"):
    return na if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def short_config(cfg: str) -> str:
    """'vecs_per_thread=2 threads_per_row=256 rows_per_cta=1 grid=128' -> 'v2 t256 r1 g128'."""
    if not cfg:
        return ""
    keys = {"vecs_per_thread": "v", "threads_per_row": "t", "rows_per_cta": "r", "grid": "g"}
    parts = []
    for item in cfg.split():
        k, _, v = item.partition("=")
        parts.append(keys.get(k, k + "=") + v)
    return " ".join(parts)


def row_line(rec: dict) -> str:
    w = dict(COLS)
    cells = [
        f"{rec['op'][:w['op']]:<{w['op']}}",
        f"{rec['shape']:<{w['shape']}}",
        f"{rec['impl'][:w['impl']]:<{w['impl']}}",
        f"{_fmt(rec.get('time_us'), '.2f'):>{w['us']}}",
        f"{_fmt(rec.get('tbps'), '.2f'):>{w['TB/s']}}",
        f"{_fmt(rec.get('pct_ceiling'), '.1f'):>{w['%ceil']}}",
        f"{_fmt(rec.get('speedup'), '.2f', ''):>{w['speedup']}}",
        f"{_fmt(rec.get('max_err'), '.2g'):>{w['max_err']}}",
        f"{rec.get('check', ''):>{w['check']}}",
    ]
    tail = short_config(rec.get("rowwise_config", "")) if not rec.get("baseline") else ""
    if rec.get("tflops"):
        dense = f" ({rec['pct_dense']:.0f}% dense)" if rec.get("pct_dense") else ""
        tail = (tail + "  " if tail else "") + f"{rec['tflops']:.0f} TFLOP/s{dense}"
    if rec.get("note"):
        tail = (tail + "  " if tail else "") + rec["note"]
    return " ".join(cells) + "  " + tail


# ---------------------------------------------------------------------------
# files

def write_outputs(family: str, records: list, meta: dict, out_dir: str) -> list:
    """<family>_<timestamp>.{json,csv,png} plus <family>_latest.* copies."""
    os.makedirs(out_dir, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = os.path.join(out_dir, f"{family}_{stamp}")
    # Every record carries the environment and ceilings (flat, so the CSV has them too).
    flat_meta = {k: v for k, v in meta.items() if not isinstance(v, (dict, list))}
    full = [_no_nan({**flat_meta, **r}) for r in records]
    written = []
    with open(base + ".json", "w") as f:
        json.dump({"family": family, "meta": meta, "records": full}, f, indent=1, default=str)
    written.append(base + ".json")
    keys = []
    for r in full:
        keys.extend(k for k in r if k not in keys)
    with open(base + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(full)
    written.append(base + ".csv")
    png = plot(family, records, meta, base + ".png")
    if png:
        written.append(png)
    for path in list(written):
        ext = os.path.splitext(path)[1]
        latest = os.path.join(out_dir, f"{family}_latest{ext}")
        shutil.copyfile(path, latest)
    return written


def _no_nan(rec: dict) -> dict:
    """NaN/inf -> None, so the JSON is strict (json.dump would write NaN)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in rec.items()}


def plot(family: str, records: list, meta: dict, path: str):
    """One subplot per plot group (op and hidden size): achieved TB/s against
    the group's x (rows) for each implementation, with the ceiling dashed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  (matplotlib is not installed: no PNG plot)", flush=True)
        return None
    if family == "overhead":
        return _plot_overhead(plt, records, meta, path)
    groups = {}
    for r in records:
        if r.get("tbps") is not None and not math.isnan(r["tbps"]):
            groups.setdefault(r["plot_group"], []).append(r)
    if not groups:
        return None
    ncols = min(4, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    ceiling = meta.get("ceiling_tbps")
    for ax, (group, recs) in zip(axes.flat, groups.items()):
        impls = []
        for r in recs:
            if r["impl"] not in impls:
                impls.append(r["impl"])
        for impl in impls:
            pts = sorted((r["plot_x"], r["tbps"]) for r in recs if r["impl"] == impl)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=impl,
                    lw=2.0 if impl == "hpc_ops" else 1.0)
        if ceiling:
            ax.axhline(ceiling, ls="--", color="gray", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_title(group, fontsize=9)
        ax.set_xlabel(recs[0].get("plot_xlabel", "rows"), fontsize=8)
        ax.set_ylabel("TB/s", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    fig.suptitle(f"hpc_ops {family} on {meta.get('device', '?')}  (ceiling {ceiling or 0:.2f} TB/s "
                 "dashed)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_overhead(plt, records, meta, path):
    labels = [f"{r['op']}\n{r['impl']}" for r in records]
    vals = [r["host_us_per_call"] for r in records]
    fig, ax = plt.subplots(figsize=(1.6 * max(len(vals), 2) + 1, 3.5))
    ax.bar(range(len(vals)), vals, color=["C0" if not r["baseline"] else "C1" for r in records])
    ax.set_xticks(range(len(vals)))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("host us / call")
    ax.set_title(f"eager call overhead on {meta.get('device', '?')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
