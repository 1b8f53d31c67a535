"""pytest configuration of the Python test suite.

Tests marked ``gpu`` (every GPU test module sets ``pytestmark = pytest.mark.gpu``)
need a CUDA device of compute capability 9.x (hpc_ops is built for sm_90a
only). Without one they are skipped, with the reason printed by ``-rs``; tests
without the marker (argument validation on the CPU) always run.

Fixture ``gen``: a CUDA torch.Generator seeded from the test's node id, so each
parametrization gets its own reproducible random data.
"""
from __future__ import annotations

import zlib

import pytest
import torch

NO_GPU_REASON = "no CUDA GPU: GPU tests need an sm_90 device"


def gpu_skip_reason():
    """None when the GPU tests can run here, else why not."""
    if not torch.cuda.is_available():
        return NO_GPU_REASON
    major, minor = torch.cuda.get_device_capability(0)
    if major != 9:
        name = torch.cuda.get_device_name(0)
        return (f"GPU tests need an sm_90 device (compute capability 9.x; hpc_ops is built for "
                f"sm_90a only), but cuda:0 is {name} with compute capability {major}.{minor}")
    return None


def pytest_configure(config):
    # Also declared in pyproject.toml; repeated so the suite works from any rootdir.
    config.addinivalue_line("markers",
                            "gpu: needs a CUDA GPU (skipped with a reason when none is present)")


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    reason = gpu_skip_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture
def gen(request) -> torch.Generator:
    seed = zlib.crc32(request.node.nodeid.encode())
    request.node.user_properties.append(("seed", seed))
    g = torch.Generator(device="cuda")
    g.manual_seed(seed)
    return g
