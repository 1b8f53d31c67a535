# SPDX-License-Identifier: Apache-2.0
"""Compares hpc_ops's times across benchmark result files (the JSON that
`python -m hpc_ops.bench` writes), for A/B runs of several builds:

    python -m hpc_ops.bench.compare TAG=FILE.json [TAG=FILE.json ...]

Files with the same TAG are rounds of one build; a build's time for a case is
its minimum over them (the least disturbed round). The first TAG is the base:
every other build's time is printed with its change against it. A case whose
check did not pass in some round of a build is marked "!" after the time.
scripts/ab_compare.sh builds git revisions side by side and calls this.
Needs no GPU; its own code is plain Python (importing it still loads the
hpc_ops package, and so torch)."""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass


@dataclass
class Result:
    time_us: float
    pct_ceiling: float | None
    ok: bool


def load(path: str) -> dict:
    """{'op shape': Result} of the hpc_ops records in one result file."""
    with open(path) as f:
        data = json.load(f)
    out = {}
    for r in data.get("records", []):
        if r.get("baseline"):
            continue
        t = r.get("time_us")
        out[f"{r['op']} {r['shape']}"] = Result(
            time_us=t if isinstance(t, (int, float)) else math.nan,
            pct_ceiling=r.get("pct_ceiling"),
            ok=r.get("check") == "ok")
    return out


def merge(runs: list) -> tuple:
    """runs: [(tag, {case: Result})]. Returns (tags in first-seen order,
    {case: {tag: Result}}), each tag's Result the fastest of its rounds with
    ok False if any round's check failed; cases in first-seen order."""
    tags, table = [], {}
    for tag, results in runs:
        if tag not in tags:
            tags.append(tag)
        for case, res in results.items():
            row = table.setdefault(case, {})
            prev = row.get(tag)
            if prev is None:
                row[tag] = res
                continue
            best = res if (res.time_us < prev.time_us or math.isnan(prev.time_us)) else prev
            row[tag] = Result(best.time_us, best.pct_ceiling, prev.ok and res.ok)
    return tags, table


CELL = 24  # time (9), change (7), % of the ceiling (6): "  1234.56! +123.4%  85.0%"


def format_table(tags: list, table: dict) -> str:
    base = tags[0]
    width = max([len("case")] + [len(c) for c in table])
    head = f"{'case':<{width}}" + "".join(f" {t:>{CELL}}" for t in tags)
    lines = [head, "-" * len(head)]
    for case, row in table.items():
        b = row.get(base)
        line = f"{case:<{width}}"
        for tag in tags:
            r = row.get(tag)
            if r is None or math.isnan(r.time_us):
                line += f" {'-':>{CELL}}"
                continue
            mark = "" if r.ok else "!"
            pct = f"{r.pct_ceiling:5.1f}%" if r.pct_ceiling is not None else "-"
            change = ""
            if tag != base and b is not None and not math.isnan(b.time_us):
                change = f"{100.0 * (r.time_us / b.time_us - 1.0):+.1f}%"
            line += f" {f'{r.time_us:.2f}{mark}':>9} {change:>7} {pct:>6}"
        lines.append(line)
    lines.append(f"(us; change against {base}; % of the ceiling measured in the run of the "
                 "fastest round; ! = a failed check)")
    return "\n".join(lines)


def parse_run(spec: str) -> tuple:
    tag, sep, path = spec.partition("=")
    if not sep or not tag or not path:
        raise ValueError(f"expected TAG=FILE.json, got {spec!r}")
    return tag, path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpc_ops.bench.compare",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="TAG=FILE.json")
    args = p.parse_args(argv)
    try:
        runs = [(tag, load(path)) for tag, path in map(parse_run, args.runs)]
    except (ValueError, OSError, KeyError, json.JSONDecodeError) as e:
        print(f"hpc_ops.bench.compare: {e}", file=sys.stderr)
        return 2
    tags, table = merge(runs)
    print(format_table(tags, table))
    return 0 if all(r.ok for row in table.values() for r in row.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
