# SPDX-License-Identifier: Apache-2.0
"""Tensor-parallel all-reduce fused with the residual add and RMSNorm that follow it.

``TpCommunicator(group, hidden=...)`` sets up, once, a peer buffer on every
rank of a ``torch.distributed`` group on one node (CUDA IPC; no NVLink
multicast). ``fused_allreduce_residual_rmsnorm(x, residual, weight, eps, comm)``
then returns ``rms_norm(sum_over_ranks(x) + residual)`` and the new residual:

- up to ``max_tokens`` rows: the peer-memory all-reduce (one-shot for small
  messages, two-shot above; ``hpc_ops.comm.path_for``), then the fused add +
  RMSNorm kernel, launched so that it is resident when the sum lands;
- larger calls, ranks on several nodes, or GPUs without peer access: NCCL's
  all-reduce (through ``torch.distributed``) and ``fused_add_rms_norm``.

Every rank must make the same calls with the same number of rows. Calls never
synchronize or allocate on the peer path, so they can be captured in a CUDA
graph. ``HPC_OPS_DEBUG_CHECKS=1`` bounds every wait by 10 s and checks after
each call, so ranks whose calls do not match get an error instead of a hang.
"""
from __future__ import annotations

import atexit
import os
import socket
import weakref

import torch

from . import _C
from ._tensor import as_tensor, desc, desc_or_none, int_arg, rows_view, stream_of
from .norm import add_norm_operands, add_norm_result, fused_add_rms_norm

PATHS = ("one_shot", "two_shot", "nccl")
_LIVE = weakref.WeakSet()  # communicators whose buffers are released at exit


@atexit.register
def _release_all():
    """Frees the peer buffers while CUDA is still up (before interpreter teardown)."""
    for c in list(_LIVE):
        c._comm = None


MAX_PEER_WORLD = 8


def _failure(e: Exception) -> tuple:
    """One rank's set-up error as sent to every rank: (a ValueError?, message)."""
    return (isinstance(e, ValueError), str(e))


def _raise_first_failure(op: str, failures: list) -> None:
    """Raises the first rank's set-up error on every rank (each sees the same list)."""
    for r, failure in enumerate(failures):
        if failure is not None:
            is_value_error, message = failure
            raise (ValueError if is_value_error else RuntimeError)(
                f"hpc_ops.{op}: set-up failed on rank {r}: {message}")


class TpCommunicator:
    """One rank's side of the fused all-reduce (create it on every rank of ``group``).

    Parameters
    ----------
    group : a ``torch.distributed`` process group (None: the default group), initialized
    hidden : the hidden size of every call (a multiple of 8)
    max_tokens : rows the peer buffers hold (default 512); larger calls use NCCL.
        The buffers take 5 (7 for two ranks) times ``max_tokens * hidden`` bf16 elements
        of the device's memory: two alternating sets of receive slots and a gather
        region, and the staging buffer the norm reads.
    device : the CUDA device of this rank (default: the current one)
    max_ctas : CTAs per call at most (0: one per multiprocessor)
    timeout_ms : > 0 bounds every wait for a peer's data (then the communicator fails
        and the outputs are NaN); 0 waits without limit (10 s with HPC_OPS_DEBUG_CHECKS=1)

    Set-up is collective: every rank must create its communicator with the same
    ``hidden`` and ``max_tokens``, else every rank raises ValueError; when one
    rank's set-up fails (a bad argument, an allocation or a CUDA error), every
    rank raises, so none is left waiting for the others.
    """

    def __init__(self, group=None, *, hidden: int, max_tokens: int = 512, device=None,
                 max_ctas: int = 0, timeout_ms: int = 0, _local=None):
        op = "TpCommunicator"
        int_arg(op, "hidden", hidden, 8)
        int_arg(op, "max_tokens", max_tokens, 1)
        int_arg(op, "max_ctas", max_ctas, 0)
        int_arg(op, "timeout_ms", timeout_ms, 0)
        self.hidden = hidden
        self.max_tokens = max_tokens
        if _local is not None:  # a member of local_group()
            self._comm = _local
            self.group = None
            self.rank, self.world = _local.rank, _local.world
            self.device = torch.device("cuda", _local.device)
            self.peer_access, self.reason = True, ""
            self.local = True
            _LIVE.add(self)
            return
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError(f"hpc_ops.{op}: torch.distributed is not initialized; call "
                             "init_process_group first (or use TpCommunicator.local_group on one GPU)")
        self.group = group
        self.local = False
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        index = torch.cuda.current_device() if device is None else torch.device(device).index
        self.device = torch.device("cuda", index)
        self._comm = None
        error = None
        try:
            if self.world <= MAX_PEER_WORLD:
                self._comm = _C.TpCommunicator(self.rank, self.world, index, hidden, max_tokens,
                                               max_ctas, timeout_ms)
                handle = self._comm.export_handle()
            else:
                handle = None
        except (ValueError, RuntimeError) as e:
            error = _failure(e)
            self._comm, handle = None, None
        _LIVE.add(self)
        info = {"host": socket.gethostname(), "hidden": hidden, "max_tokens": max_tokens,
                "handle": handle, "error": error}
        infos = [None] * self.world
        dist.all_gather_object(infos, info, group=group)
        _raise_first_failure(op, [other["error"] for other in infos])
        first = infos[0]
        for r, other in enumerate(infos):  # every rank sees the same list: all raise alike
            if (other["hidden"], other["max_tokens"]) != (first["hidden"], first["max_tokens"]):
                raise ValueError(
                    f"hpc_ops.{op}: rank {r} was created with hidden={other['hidden']}, "
                    f"max_tokens={other['max_tokens']}; rank 0 with hidden={first['hidden']}, "
                    f"max_tokens={first['max_tokens']} (every rank must pass the same values)")
        reason, error = "", None
        if self._comm is None:
            reason = f"{self.world} ranks (the peer path takes at most {MAX_PEER_WORLD})"
        elif len({other["host"] for other in infos}) > 1:
            reason = "the ranks are on more than one node"
        else:
            try:
                self._comm.connect([other["handle"] for other in infos])
            except ValueError as e:  # no peer access between some GPUs
                reason = str(e)
            except RuntimeError as e:
                error = _failure(e)
        answers = [None] * self.world
        dist.all_gather_object(answers, (reason, error), group=group)
        _raise_first_failure(op, [e for _, e in answers])
        failed = [(r, why) for r, (why, _) in enumerate(answers) if why]
        self.peer_access = not failed
        self.reason = "" if not failed else f"rank {failed[0][0]}: {failed[0][1]}"

    @classmethod
    def local_group(cls, world: int, *, hidden: int, max_tokens: int = 512, device=None,
                    max_ctas: int = 0, timeout_ms: int = 0) -> list["TpCommunicator"]:
        """``world`` connected communicators of this process on one GPU, for testing
        the protocol without several GPUs: call rank r's operator on its own stream
        (the ranks' kernels must run at the same time; each uses at most
        multiprocessors / world CTAs)."""
        int_arg("TpCommunicator.local_group", "world", world, 1, MAX_PEER_WORLD)
        int_arg("TpCommunicator.local_group", "hidden", hidden, 8)
        int_arg("TpCommunicator.local_group", "max_tokens", max_tokens, 1)
        index = torch.cuda.current_device() if device is None else torch.device(device).index
        comms = _C.tp_local_group(world, index, hidden, max_tokens, max_ctas, timeout_ms)
        return [cls(hidden=hidden, max_tokens=max_tokens, _local=c) for c in comms]

    def path_for(self, tokens: int) -> str:
        """The path a call of ``tokens`` rows takes: "one_shot", "two_shot" or "nccl"
        (``HPC_OPS_ALLREDUCE_PATH`` overrides it where the call fits)."""
        if not self.peer_access or tokens > self.max_tokens:
            return "nccl"
        if not self.local and os.environ.get("HPC_OPS_ALLREDUCE_PATH") == "nccl":
            return "nccl"
        return PATHS[self._comm.path_for(tokens)]

    def device_error(self) -> str:
        """Synchronizes; the message of a call that timed out waiting for a peer, or ""."""
        return self._comm.device_error() if self._comm is not None else ""

    def __repr__(self):
        return (f"TpCommunicator(rank={self.rank}, world={self.world}, hidden={self.hidden}, "
                f"max_tokens={self.max_tokens}, peer_access={self.peer_access}"
                + (f", reason={self.reason!r}" if self.reason else "") + ")")


@torch.compiler.disable
def fused_allreduce_residual_rmsnorm(x, residual, weight, eps: float, comm: TpCommunicator, *,
                                     quant=None, scale=None, out=None, residual_out=None,
                                     scale_out=None):
    """All-reduce of x over ``comm``'s ranks, residual add, RMSNorm, in one call.

    ``s = bfloat16(sum over ranks of x)`` (float32 sums in rank order on the peer
    path: every rank gets the same bits), ``residual_out = bfloat16(s + residual)``,
    ``out = rms_norm(residual_out) * weight``.

    Parameters
    ----------
    x : bfloat16 ``[..., hidden]``, this rank's partial output (not modified)
    residual : bfloat16, same shape; ``residual_out=residual`` updates it in place
    weight : bfloat16 ``[hidden]``
    eps : float
    comm : a ``TpCommunicator`` of this rank
    quant, scale, out, scale_out : FP8 output as in ``rms_norm``

    Returns
    -------
    ``(out, residual_out)``, or ``(out, residual_out, scale)`` with ``quant``.
    """
    op = "fused_allreduce_residual_rmsnorm"
    if not isinstance(comm, TpCommunicator):
        raise ValueError(f"hpc_ops.{op}: comm must be a TpCommunicator, got {type(comm).__name__}")
    x = as_tensor(x, op, "x")
    x2 = rows_view(x, op)
    if x2.dim() != 2 or x2.shape[-1] != comm.hidden:
        raise ValueError(f"hpc_ops.{op}: x has shape {list(x.shape)}, expected [..., {comm.hidden}] "
                         "(the communicator's hidden size)")
    path = comm.path_for(x2.shape[0])
    if path == "nccl":
        if comm.local:
            raise ValueError(f"hpc_ops.{op}: x has {x2.shape[0]} rows, more than the local "
                             f"group's max_tokens = {comm.max_tokens}")
        import torch.distributed as dist
        summed = x2.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(summed, group=comm.group)
        return fused_add_rms_norm(summed.view(x.shape), residual, weight, eps, quant=quant,
                                  scale=scale, out=out, residual_out=residual_out,
                                  scale_out=scale_out)
    r2, weight, scale, code, out, residual_out, scale_out = add_norm_operands(
        op, x2, residual, weight, quant, scale, out, residual_out, scale_out)
    _C.fused_allreduce_residual_rmsnorm(
        comm._comm, desc(x2), desc(r2), desc(weight), eps, desc(out), desc(residual_out), code,
        desc_or_none(scale if scale is not None else scale_out), stream_of(x))
    return add_norm_result(x, out, residual_out, code, scale, scale_out)
