# SPDX-License-Identifier: Apache-2.0
"""Family "allreduce": the fused all-reduce + residual add + RMSNorm on 2, 4 and 8
GPUs of one node, side by side in the same processes with

- "nccl+torch": NCCL's all-reduce (torch.distributed) then the residual add and
  F.rms_norm as separate PyTorch kernels (the baseline of the bar: >= 1.5x up to
  512 tokens, never slower above);
- "nccl+fused_add_rms_norm": NCCL's all-reduce then hpc_ops' fused add + RMSNorm
  (what TpCommunicator runs past max_tokens).

One process per GPU (spawned), NCCL_NVLS_ENABLE=0. Each implementation is
captured in a CUDA graph of CALLS back-to-back calls on every rank; the ranks
replay together after a barrier and the time per call is the slowest rank's.
Bus bandwidth: x's bytes x 2 (world - 1) / world per call. Needs >= 2 GPUs;
with fewer it says so and writes nothing.
"""
from __future__ import annotations

import json
import os
import statistics
import time

import torch

WORLDS = (2, 4, 8)
HIDDENS = (7168, 4096)
TOKENS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
TOKENS_QUICK = (1, 16, 128, 512, 4096)
CALLS = 10
REPLAYS = 20
EPS = 1e-6
PEER_MAX_TOKENS = 512


def _time_graph(fn, barrier):
    """us per call of fn: CALLS calls captured in a graph, REPLAYS timed replays
    (median), all ranks starting each replay together."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(CALLS):
            fn()
    g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(REPLAYS):
        barrier()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        g.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / CALLS)
    return statistics.median(times)


def _rank_main(rank, world, init_file, quick, q):
    os.environ["NCCL_NVLS_ENABLE"] = "0"
    import torch.distributed as dist
    import torch.nn.functional as F

    import hpc_ops
    try:
        torch.cuda.set_device(rank)
        dist.init_process_group("nccl", init_method=f"file://{init_file}", rank=rank,
                                world_size=world)
        barrier = lambda: dist.barrier(device_ids=[rank])  # noqa: E731
        records = []
        for hidden in HIDDENS:
            comm = hpc_ops.TpCommunicator(hidden=hidden, max_tokens=PEER_MAX_TOKENS)
            w = (1 + 0.1 * torch.randn(hidden, device="cuda")).to(torch.bfloat16)
            for tokens in (TOKENS_QUICK if quick else TOKENS):
                x = (torch.randn(tokens, hidden, device="cuda") * 0.01).to(torch.bfloat16)
                residual = torch.randn(tokens, hidden, device="cuda").to(torch.bfloat16)
                out, res_out = torch.empty_like(x), torch.empty_like(x)
                xb = x.clone()

                def ours():
                    hpc_ops.fused_allreduce_residual_rmsnorm(x, residual, w, EPS, comm, out=out,
                                                             residual_out=res_out)

                def nccl_torch():
                    dist.all_reduce(xb)
                    r = xb + residual
                    F.rms_norm(r, (hidden,), w, EPS)

                def nccl_fused():
                    dist.all_reduce(xb)
                    hpc_ops.fused_add_rms_norm(xb, residual, w, EPS, out=out, residual_out=res_out)

                row = {"world": world, "hidden": hidden, "tokens": tokens,
                       "path": comm.path_for(tokens)}
                for name, fn in (("hpc_ops", ours), ("nccl+torch", nccl_torch),
                                 ("nccl+fused_add_rms_norm", nccl_fused)):
                    t = torch.tensor([_time_graph(fn, barrier)], device="cuda")
                    dist.all_reduce(t, op=dist.ReduceOp.MAX)
                    row[name + "_us"] = float(t)
                    xb.copy_(x)
                records.append(row)
        q.put((rank, "ok", records))
        dist.destroy_process_group()
    except BaseException:
        import traceback
        q.put((rank, "error", traceback.format_exc()))


def run(quick: bool, out_dir: str) -> list:
    """Runs every world size the machine has GPUs for; returns the records."""
    import multiprocessing as mp
    import tempfile

    have = torch.cuda.device_count()
    worlds = [w for w in WORLDS if w <= have]
    if not worlds:
        print(f"allreduce: skipped: needs at least 2 GPUs of one node, this machine has {have}",
              flush=True)
        return []
    ctx = mp.get_context("spawn")
    records = []
    for world in worlds:
        q = ctx.Queue()
        with tempfile.TemporaryDirectory() as tmp:
            init_file = os.path.join(tmp, "init")
            procs = [ctx.Process(target=_rank_main, args=(r, world, init_file, quick, q))
                     for r in range(world)]
            for p in procs:
                p.start()
            answers = [q.get(timeout=1800) for _ in range(world)]
            for p in procs:
                p.join()
        for rank, status, payload in answers:
            if status != "ok":
                raise RuntimeError(f"allreduce benchmark, world {world}, rank {rank}:\n{payload}")
        records += next(payload for rank, _, payload in answers if rank == 0)
    _report(records, out_dir)
    return records


def _report(records, out_dir):
    print(f"{'world':>5} {'hidden':>6} {'tokens':>6} {'path':>9} {'hpc_ops us':>10} "
          f"{'nccl+torch':>10} {'nccl+fused':>10} {'vs base':>8} {'bus GB/s':>8}")
    for r in records:
        ratio = r["nccl+torch_us"] / r["hpc_ops_us"]
        bus = r["tokens"] * r["hidden"] * 2 * 2 * (r["world"] - 1) / r["world"] / r["hpc_ops_us"] / 1e3
        r["ratio_vs_nccl_torch"] = ratio
        r["bus_gbps"] = bus
        print(f"{r['world']:>5} {r['hidden']:>6} {r['tokens']:>6} {r['path']:>9} "
              f"{r['hpc_ops_us']:>10.2f} {r['nccl+torch_us']:>10.2f} "
              f"{r['nccl+fused_add_rms_norm_us']:>10.2f} {ratio:>7.2f}x {bus:>8.1f}")
    os.makedirs(out_dir, exist_ok=True)
    stamp = time.strftime("%Y%m%d_%H%M%S")
    for name in (f"allreduce_{stamp}.json", "allreduce_latest.json"):
        with open(os.path.join(out_dir, name), "w") as f:
            json.dump(records, f, indent=1)
