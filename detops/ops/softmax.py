"""softmax / log_softmax: docs/REDUCTION_ORDER.md §2, §4."""
from typing import Optional

import torch

from .._lib import ops


def softmax(input: torch.Tensor, dim: int = -1, dtype: Optional[torch.dtype] = None, *,
            compensated: bool = False) -> torch.Tensor:
    """Batch-invariant softmax along `dim`, like `F.softmax`. Any row length; -inf entries allowed
    (an all -inf row gives NaN, as torch). dtype: output dtype (computation is fp32 either way). For a
    widening dtype this is F.softmax's result; for a narrowing one (fp32 input, dtype=bf16) F.softmax casts
    the *input* to dtype first, detops rounds only the output (more accurate, not the same bits)."""
    return ops.softmax(input, dim, dtype, compensated)


def log_softmax(input: torch.Tensor, dim: int = -1, dtype: Optional[torch.dtype] = None, *,
                compensated: bool = False) -> torch.Tensor:
    """Batch-invariant log_softmax along `dim`, like `F.log_softmax`."""
    return ops.log_softmax(input, dim, dtype, compensated)


@torch.library.register_fake("detops::softmax")
def _softmax_fake(input, dim, dtype, compensated):
    return input.new_empty(input.shape, dtype=dtype or input.dtype)


@torch.library.register_fake("detops::log_softmax")
def _log_softmax_fake(input, dim, dtype, compensated):
    return input.new_empty(input.shape, dtype=dtype or input.dtype)
