# SPDX-License-Identifier: Apache-2.0
"""Family "overhead": host cost of one eager call for tiny problems, where the
GPU work (~2 us) is shorter than the Python + launch path, so the host is the
bottleneck. Each pair compares an hpc_ops call with the native PyTorch call
doing the same work; the target is ours / native <= 1.5."""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

import hpc_ops

from .common import EPS, randn

HIDDEN = 4096
INTER = 4096


def _pairs():
    """(op, ours, native) callables without arguments; inputs made once."""
    x = randn(1, HIDDEN)
    w = randn(HIDDEN)
    a = randn(1, 2 * INTER)
    gate, up = a[:, :INTER], a[:, INTER:]
    return [
        (f"rms_norm r=1 h={HIDDEN}", lambda: hpc_ops.rms_norm(x, w, EPS),
         "F.rms_norm", lambda: F.rms_norm(x, (HIDDEN,), w, EPS)),
        (f"silu_and_mul r=1 C={INTER}", lambda: hpc_ops.silu_and_mul(a),
         "F.silu(a)*b", lambda: F.silu(gate) * up),
    ]


def _host_us_per_call(fn, calls: int, trials: int) -> list:
    """Wall time per call of `calls` back-to-back calls with one synchronize at
    the end (included: it only waits for the last few kernels), one value per trial."""
    for _ in range(200):  # warm the caching allocator and any lazy init
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(trials):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        out.append((time.perf_counter() - t0) / calls * 1e6)
    return out


def run(quick: bool) -> list:
    calls, trials = (5000, 3) if quick else (20000, 5)
    records = []
    for op, ours, native_name, native in _pairs():
        # Alternate ours / native trial by trial so drift hits both alike.
        ours_t, native_t = [], []
        for _ in range(trials):
            ours_t += _host_us_per_call(ours, calls, 1)
            native_t += _host_us_per_call(native, calls, 1)
        o, n = statistics.median(ours_t), statistics.median(native_t)
        for impl, t, base in (("hpc_ops", o, False), (native_name, n, True)):
            records.append({"family": "overhead", "op": op, "impl": impl, "baseline": base,
                            "host_us_per_call": t, "calls": calls, "trials": trials,
                            "ratio_vs_native": o / n if not base else 1.0,
                            "target_ratio": 1.5, "meets_target": (o / n) <= 1.5})
        print(f"  {op:<28} hpc_ops {o:7.2f} us/call   {native_name} {n:7.2f} us/call   "
              f"ratio {o / n:5.2f} ({'ok' if o / n <= 1.5 else 'ABOVE'} target 1.5)", flush=True)
    return records
