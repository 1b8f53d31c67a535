"""Shared helpers of the GPU tests: random inputs, poisoned output buffers and
scale storage in the layouts hpc_ops accepts.

Poison values: bf16 outputs are filled with NaN, fp8 outputs with the byte
0x7F (NaN in float8_e4m3fn), float32 scales with NaN. An element a kernel
forgot to write therefore stays NaN and fails the finiteness checks.
"""
from __future__ import annotations

import pytest
import torch

import hpc_ops
import reference as ref
from tolerances import assert_bits_equal

FP8_NAN_BYTE = 0x7F

# Widest row (hidden, C or n) the row-wise kernels take (README: "up to 65536";
# rowwise::kMaxCols = 16 vectors x 8 elements x 512 threads).
MAX_COLS = 65536
# Row widths that select the 8- and 16-vectors-per-thread kernels, up to the limit.
WIDE_COLS = [16384, 32776, MAX_COLS]


def needs_family(family: str):
    """Skip marker for tests of an operator family left out of this build
    (CMake option HPC_OPS_FAMILIES)."""
    built = hpc_ops.built_families()
    return pytest.mark.skipif(family not in built,
                              reason=f"hpc_ops was built without the '{family}' family "
                                     f"(built: {built})")


def expect_rejected(fn, match, buffers=()):
    """fn() raises ValueError matching `match` and leaves every buffer (outputs
    the call could have written) bit-identical."""
    before = [b.clone() for b in buffers]
    with pytest.raises(ValueError, match=match):
        fn()
    for b, b0 in zip(buffers, before):
        assert_bits_equal(b, b0, "a rejected call wrote to an output")


def quant_id(mode) -> str:
    return "bf16" if mode is None else mode


# ----------------------------------------------------------------------------
# Random inputs
# ----------------------------------------------------------------------------
def randn(gen: torch.Generator, *shape, dtype=torch.float32, scale: float = 1.0) -> torch.Tensor:
    t = torch.randn(*shape, generator=gen, device="cuda", dtype=torch.float32)
    return (t * scale).to(dtype)


def row_magnitudes(gen: torch.Generator, lead, spread: float = 1.5) -> torch.Tensor:
    """Per-row factors 2**N(0, spread) of shape [*lead, 1], so per-token scales differ."""
    return torch.exp2(spread * torch.randn(*lead, 1, generator=gen, device="cuda"))


def group_magnitudes(gen: torch.Generator, n: int, spread: float = 1.5) -> torch.Tensor:
    """Per-128-column factors of shape [n], so per-group scales within a row differ."""
    g = ref.num_groups(n)
    factors = torch.exp2(spread * torch.randn(g, generator=gen, device="cuda"))
    return factors.repeat_interleave(ref.GROUP)[:n]


def varied(gen: torch.Generator, *shape, dtype=torch.bfloat16, scale: float = 1.0) -> torch.Tensor:
    """N(0, 1) values times per-row and per-group magnitudes (spread over a few
    octaves), rounded to dtype. Shape [..., n]."""
    lead, n = shape[:-1], shape[-1]
    t = torch.randn(*shape, generator=gen, device="cuda") * scale
    if n:
        t = t * row_magnitudes(gen, lead) * group_magnitudes(gen, n)
    return t.to(dtype)


def norm_weight(gen: torch.Generator, hidden: int) -> torch.Tensor:
    """An RMSNorm weight around 1 whose magnitude changes between 128-column groups."""
    w = 1.0 + 0.3 * torch.randn(hidden, generator=gen, device="cuda")
    return (w * group_magnitudes(gen, hidden, spread=1.0)).to(torch.bfloat16)


# ----------------------------------------------------------------------------
# Poisoned outputs
# ----------------------------------------------------------------------------
def poisoned(shape, dtype) -> torch.Tensor:
    """A new CUDA tensor full of the poison value of dtype."""
    t = torch.empty(shape, dtype=dtype, device="cuda")
    return poison_(t)


def poison_(t: torch.Tensor) -> torch.Tensor:
    """Fills t (any strides) with its dtype's poison value, in place."""
    if t.dtype == ref.FP8:
        t.view(torch.uint8).fill_(FP8_NAN_BYTE)
    elif t.dtype.is_floating_point:
        t.fill_(float("nan"))
    else:
        t.fill_(-12345)
    return t


def out_dtype(mode):
    return torch.bfloat16 if mode is None else ref.FP8


def poisoned_out(shape, mode) -> torch.Tensor:
    return poisoned(shape, out_dtype(mode))


SCALE_LAYOUTS = ("mn_major", "contiguous", "strided")


def scale_storage(mode, lead, n: int, layout: str = "mn_major"):
    """Poisoned float32 storage for dynamic scales of an output [*lead, n].

    per_token: [*lead, 1]; per_group: [*lead, ceil(n/128)] as
      mn_major   -- what hpc_ops allocates: rows padded to a multiple of 4, strides (1, padded)
      contiguous -- row-major
      strided    -- a view into a larger buffer with gaps between rows and groups
    Returns None for bf16 and static per-tensor outputs.
    """
    if mode is None or mode == "per_tensor":
        return None
    lead = tuple(lead)
    groups = 1 if mode == "per_token" else ref.num_groups(n)
    rows = lead[-1]
    if layout == "contiguous":
        return poisoned((*lead, groups), torch.float32)
    if layout == "mn_major":
        padded = (rows + 3) // 4 * 4
        storage = poisoned((*lead[:-1], groups, padded), torch.float32)
        return storage[..., :rows].transpose(-1, -2)
    if layout == "strided":
        storage = poisoned((*lead[:-1], rows + 3, 2 * groups + 1), torch.float32)
        return storage[..., 1:rows + 1, 1::2][..., :groups]
    raise ValueError(layout)


def static_scale_for(y: torch.Tensor, clip_at: float = 1.0) -> torch.Tensor:
    """A static per-tensor scale for result y: amax * clip_at / 448, float32 [1].
    With clip_at < 1 the values above clip_at * amax saturate to +-448."""
    amax = float(y.abs().amax()) if y.numel() else 1.0
    return torch.tensor([max(amax, 1e-6) * clip_at / ref.FP8_MAX], dtype=torch.float32,
                        device="cuda")


def capture_graph(fn):
    """(graph, fn's result): fn run once on a side stream (warm-up outside the
    capture, as torch recommends), then captured into a CUDA graph."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        result = fn()
    torch.cuda.synchronize()
    return graph, result
