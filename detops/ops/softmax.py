"""softmax / log_softmax: docs/REDUCTION_ORDER.md §2, §4; their backward: §10 (row-local)."""
from typing import Optional

import torch

from .._lib import ops
from .gradients import autocast_off, refuse_double_backward


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


# Backward (REDUCTION_ORDER.md §10 rule 2), one row kernel (detops::softmax_backward, csrc/ops/softmax/) along
# `dim`, in fp32, rounded once to the input's dtype:
#   softmax:     dx = y·(g - Σ g·y)              (y: the forward's output)
#   log_softmax: dx = g - p·Σ g                  (p: detops.softmax of the input, fp32)

@torch.library.register_fake("detops::softmax_backward")
def _softmax_backward_fake(a, grad, log, dtype):
    return a.new_empty(a.shape, dtype=dtype)


def _softmax_setup(ctx, inputs, output):
    input, dim, dtype, compensated = inputs
    ctx.save_for_backward(output)
    ctx.dim, ctx.in_dtype = dim, input.dtype


def _softmax_backward(ctx, g):
    refuse_double_backward("softmax")
    y, = ctx.saved_tensors
    gx = ops.softmax_backward(y.movedim(ctx.dim, -1), g.movedim(ctx.dim, -1), False, ctx.in_dtype)
    return gx.movedim(-1, ctx.dim), None, None, None


def _log_softmax_setup(ctx, inputs, output):
    input, dim, dtype, compensated = inputs
    ctx.save_for_backward(input)
    ctx.dim, ctx.compensated = dim, compensated


def _log_softmax_backward(ctx, g):
    refuse_double_backward("log_softmax")
    x, = ctx.saved_tensors
    p = ops.softmax(x, ctx.dim, torch.float32, ctx.compensated).movedim(ctx.dim, -1)
    gx = ops.softmax_backward(p, g.movedim(ctx.dim, -1), True, x.dtype)
    return gx.movedim(-1, ctx.dim), None, None, None


torch.library.register_autograd("detops::softmax", autocast_off(_softmax_backward), setup_context=_softmax_setup)
torch.library.register_autograd("detops::log_softmax", autocast_off(_log_softmax_backward),
                                setup_context=_log_softmax_setup)
