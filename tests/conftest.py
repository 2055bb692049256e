"""Hypothesis profiles and device selection shared by every test file.

Profiles (DETOPS_HYPOTHESIS_PROFILE): 'ci' (default, fast), 'dev', 'gpu' (large, for the GPU box).
Devices: 'cpu' always; 'cuda' when torch sees a GPU and detops was built with CUDA kernels.
"""
import os

import pytest
import torch
from hypothesis import HealthCheck, settings

import detops

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
               derandomize=False, print_blob=True)
settings.register_profile("ci", max_examples=12, **_common)
settings.register_profile("dev", max_examples=40, **_common)
settings.register_profile("gpu", max_examples=200, **_common)
settings.load_profile(os.environ.get("DETOPS_HYPOTHESIS_PROFILE", "ci"))

HAS_CUDA = torch.cuda.is_available() and detops.has_cuda_kernels()
DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])


def pytest_generate_tests(metafunc):
    # Any test that takes `device` runs on every available device.
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", DEVICES)


requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and detops CUDA kernels")
