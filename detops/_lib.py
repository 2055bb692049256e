"""Loads the compiled extension (which registers torch.ops.detops.*) and exposes its build facts."""
import json
from functools import lru_cache

import torch

from . import _C  # noqa: F401  (loading the library registers the ops)

ops = torch.ops.detops


@lru_cache(maxsize=None)
def build_info() -> dict:
    """Version, numerics flags, whether CUDA kernels were built, and the REDUCTION_ORDER.md constants."""
    return json.loads(ops.build_info())


def constant(name: str) -> int:
    return build_info()["constants"][name]


@lru_cache(maxsize=None)
def constants_table() -> dict:
    """Every constant of csrc/common/constants.h by its C++ name (arrays: "name[i]"), from the compiled library."""
    return {str(k): int(v) for k, v in ops.constants().items()}


def has_cuda_kernels() -> bool:
    return bool(build_info()["cuda"])
