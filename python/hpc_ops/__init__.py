# SPDX-License-Identifier: Apache-2.0
"""hpc_ops: LLM-inference operators for NVIDIA Hopper GPUs (sm_90a).

Every function takes torch tensors (or any DLPack array), allocates missing
outputs with torch, runs on the current CUDA stream, raises ValueError for bad
arguments (before any launch) and RuntimeError for CUDA failures, and is
registered as a torch.library op (``torch.ops.hpc_ops.*``) so torch.compile and
CUDA-graph capture work.
"""
from __future__ import annotations

try:
    from . import _C
except ImportError as e:  # pragma: no cover - a broken install
    raise ImportError("hpc_ops: the compiled module hpc_ops._C is missing or does not load "
                      f"({e}); reinstall with `pip install .` from the repository") from e

from .comm import TpCommunicator, fused_allreduce_residual_rmsnorm
from .attention import DecodePlan, Fp8Scheme, decode_attention, decode_schedule_cpu, plan_decode_attention
from .activation import gelu_tanh_and_mul, gelu_tanh_and_mul_masked, silu_and_mul
from .activation import silu_and_mul_masked
from .grouped_gemm import grouped_gemm
from .router_gemm import router_gemm, router_gemm_workspace, split_router_weight
from .norm import fused_add_rms_norm, rms_norm
from .quantization import quantize_fp8
from .rope import rope_qk_norm_kv_write, split_qkv
from .sampling import sample, update_seen_mask, update_token_counts, verify_speculative

__version__ = _C.__version__

__all__ = [
    "rms_norm",
    "fused_add_rms_norm",
    "silu_and_mul",
    "gelu_tanh_and_mul",
    "silu_and_mul_masked",
    "gelu_tanh_and_mul_masked",
    "quantize_fp8",
    "decode_attention",
    "plan_decode_attention",
    "decode_schedule_cpu",
    "DecodePlan",
    "Fp8Scheme",
    "rope_qk_norm_kv_write",
    "split_qkv",
    "grouped_gemm",
    "router_gemm",
    "router_gemm_workspace",
    "split_router_weight",
    "TpCommunicator",
    "fused_allreduce_residual_rmsnorm",
    "sample",
    "verify_speculative",
    "update_seen_mask",
    "update_token_counts",
    "built_families",
]


def built_families() -> list[str]:
    """Operator families compiled into this build (CMake option HPC_OPS_FAMILIES)."""
    return _C.families().split()
