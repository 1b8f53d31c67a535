# SPDX-License-Identifier: Apache-2.0
"""Turning framework tensors into what the C++ core takes, fast.

A tensor crosses into hpc_ops._C as a descriptor tuple
``(data_ptr, dtype_code, shape, strides, device)`` (device -1 = host memory).
Building it costs five attribute reads, well under a microsecond; going through
``__dlpack__`` would cost several microseconds per tensor in eager mode.
"""
from __future__ import annotations

import torch

# Codes of hpc_ops::DType (include/hpc_ops/core/dtype.h). Never renumber.
_DTYPE_CODES = {
    torch.float32: 0,
    torch.float16: 1,
    torch.bfloat16: 2,
    torch.float8_e4m3fn: 3,
    torch.int32: 4,
    torch.int64: 5,
    torch.uint8: 6,
    torch.int8: 7,
    torch.float64: 8,
}
_UNKNOWN_DTYPE = 255

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0
UINT64_MASK = (1 << 64) - 1   # Python ints crossing as uint64 (seeds, offsets)

try:  # the raw-stream query avoids building a torch.cuda.Stream object per call
    _current_raw_stream = torch._C._cuda_getCurrentRawStream
except AttributeError:  # pragma: no cover - older or CPU-only torch builds
    def _current_raw_stream(index):
        return torch.cuda.current_stream(index).cuda_stream


def desc(t: torch.Tensor):
    """Descriptor tuple of a tensor for hpc_ops._C."""
    return (t.data_ptr(), _DTYPE_CODES.get(t.dtype, _UNKNOWN_DTYPE), t.shape, t.stride(),
            t.get_device())


def desc_or_none(t):
    return None if t is None else desc(t)


def stream_of(t: torch.Tensor) -> int:
    """The current CUDA stream of t's device (0 for host tensors, which the core rejects)."""
    index = t.get_device()
    return _current_raw_stream(index) if index >= 0 else 0


def as_tensor(obj, op: str, name: str) -> torch.Tensor:
    """A torch.Tensor view of obj: torch tensors pass through, DLPack arrays
    (CuPy, JAX, ...) are wrapped without a copy."""
    if isinstance(obj, torch.Tensor):
        return obj
    if hasattr(obj, "__dlpack__"):
        return torch.from_dlpack(obj)
    raise ValueError(f"hpc_ops.{op}: {name} must be a torch.Tensor or an array supporting "
                     f"DLPack, got {type(obj).__name__}")


def choice(op: str, name: str, value, table: dict):
    """table[value], or a ValueError naming the argument and the choices."""
    try:
        return table[value]
    except (KeyError, TypeError):
        raise ValueError(f"hpc_ops.{op}: {name} = {value!r}, expected one of "
                         f"{', '.join(repr(k) for k in table)}") from None


def int_arg(op: str, name: str, value, low=None, high=None) -> int:
    """value, checked to be a Python int (not a bool) within [low, high] (either
    bound may be None); ValueError naming hpc_ops.<op> and the argument."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"hpc_ops.{op}: {name} must be an int, got {type(value).__name__}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"<= {high}" if low is None else f"in {low}..{high}"
        raise ValueError(f"hpc_ops.{op}: {name} = {value}, expected {bounds}")
    return value


def as_optional_tensor(obj, op: str, name: str):
    return None if obj is None else as_tensor(obj, op, name)


def direct_call_ok(x) -> bool:
    """True when the op may call the C++ core directly (plain eager tensors).
    Under torch.compile, with tensor subclasses (fake/functional tensors) or
    meta/host tensors, the registered torch.library op is used instead, so
    tracing sees it (host tensors then fail the core's device check)."""
    return not torch.compiler.is_compiling() and type(x) is torch.Tensor and x.is_cuda


def rows_view(x: torch.Tensor, op: str) -> torch.Tensor:
    """[..., n] -> [rows, n] without a copy (leading dims flattened)."""
    if x.dim() <= 2:
        return x
    try:
        return x.view(-1, x.shape[-1])
    except RuntimeError:
        raise ValueError(f"hpc_ops.{op}: x with shape {list(x.shape)} and strides {list(x.stride())} "
                         "cannot be viewed as [rows, n] without a copy; pass a 2-D tensor") from None
