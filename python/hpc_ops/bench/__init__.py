# SPDX-License-Identifier: Apache-2.0
"""hpc_ops benchmark harness: ``python -m hpc_ops.bench <family>|all [--quick] [--out DIR]``.

Families: ``norm``, ``activation``, ``quantization``, ``attention``, ``rope``,
``sampling`` (GPU time per call; a family runs when it is built) and
``overhead`` (host time per eager call). Method, per case:

1. Minimal HBM bytes: every input read once, every output written once
   (bf16 2 bytes, fp8 1, scales 4); achieved TB/s and % of the ceiling.
2. Correct first: each implementation is compared with a float32 torch
   reference before it is timed (bf16 rtol 2e-2; fp8 dequantized, 0.13*|ref|).
3. Timing: N calls captured in a CUDA graph (one replay >= ~200 us, N <= 100),
   replayed >= 100 times (30 with --quick), each replay timed with CUDA events;
   per-call time = median / N. Inputs rotate over several random sets so the
   working set exceeds 3x L2 (up to 256 sets; smaller cases are flagged L2*).
4. Ceiling in the same run: 1 GiB device copy and a 2 GiB read-only sum.
5. Baselines in the same process, interleaved: the PyTorch sequence eager and
   under torch.compile (rows dynamic, one compile per hidden size, made at the
   largest row count; whole-tensor reductions and --compile-static compile per
   shape). Speedup = best correct baseline / hpc_ops.

Comparing builds: ``--ours-only`` times hpc_ops alone (still checked; the
GPU-time families only); scripts/ab_compare.sh builds git revisions side by
side and runs them in alternating rounds, and ``python -m
hpc_ops.bench.compare`` tabulates the result files (each build's fastest
round, changes against the first).

Modules: timing (graphs, rotation, ceiling), report (table, JSON, CSV, PNG),
cases_norm / cases_activation / cases_quantization / cases_attention /
cases_rope / cases_sampling (the cases), overhead,
runner (per-case loop), common (case description, checks, compile helper),
compare (A/B tables of result files).
"""
