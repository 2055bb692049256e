"""cross_entropy over the vocabulary with a fixed-order loss sum: docs/REDUCTION_ORDER.md §10 rule 4.

The per-token loss is `-log_softmax(x)[target]` (§4, fp32); tokens whose target is `ignore_index` are skipped
(never added), and the rest are summed in §5's chain in their flattened order, so the same supervised tokens in
the same order give the same loss bits however they are padded or packed. The gradient is row-local:
`(softmax(x) - onehot(target)) · g` (g divided by the count for "mean"), zeros on ignored rows.
"""
import torch

from .._lib import ops
from .gradients import autocast_off, refuse_double_backward

REDUCTIONS = ("mean", "sum", "none")


def _fail(msg: str):
    raise ValueError(f"detops.cross_entropy: {msg}")


def cross_entropy(input: torch.Tensor, target: torch.Tensor, ignore_index: int = -100, reduction: str = "mean", *,
                  compensated: bool = False) -> torch.Tensor:
    """`F.cross_entropy` for logits with the classes LAST: input (..., V) float32/bfloat16/float16, target (...)
    int64 class indices (or `ignore_index`). For 2-D input this is torch's (N, V) layout. reduction 'mean'
    (over non-ignored tokens; NaN if there are none, as torch), 'sum' or 'none' (per token, 0 where ignored).
    The result has the input's dtype. No label smoothing or class weights."""
    if not isinstance(input, torch.Tensor) or not isinstance(target, torch.Tensor):
        _fail("input and target must be tensors")
    if reduction not in REDUCTIONS:
        _fail(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if input.dim() < 1 or tuple(target.shape) != tuple(input.shape[:-1]):
        _fail(f"target must have the shape of input without its last (class) dim: input {tuple(input.shape)}, "
              f"target {tuple(target.shape)}")
    if target.dtype not in (torch.int64, torch.int32):
        _fail(f"target must hold int64 class indices, got {target.dtype}")
    if target.device != input.device:
        _fail(f"target is on {target.device} but input is on {input.device}")
    V = input.shape[-1]
    t = target.reshape(-1)
    bad = (t != ignore_index) & ((t < 0) | (t >= V))
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        _fail(f"target {int(t[i])} at flat index {i} is out of range for {V} classes (and not ignore_index "
              f"{ignore_index})")
    return torch.ops.detops.cross_entropy(input, target.to(torch.int64), int(ignore_index), reduction, compensated)


@torch.library.custom_op("detops::cross_entropy", mutates_args=())
def _cross_entropy(input: torch.Tensor, target: torch.Tensor, ignore_index: int, reduction: str,
                   compensated: bool) -> torch.Tensor:
    V = input.shape[-1]
    x, t = input.reshape(-1, V), target.reshape(-1)
    lp = ops.log_softmax(x, -1, torch.float32, compensated)
    valid = t != ignore_index
    nll = -lp.gather(1, torch.where(valid, t, 0)[:, None])[:, 0]
    if reduction == "none":
        return torch.where(valid, nll, 0.0).to(input.dtype).view(target.shape)
    kept = nll[valid]                                       # the supervised tokens, in flat order
    total = ops.mm(kept.new_ones(1, kept.numel()), kept[:, None])[0, 0]
    if reduction == "mean":
        total = total / kept.numel()
    return total.to(input.dtype)


@_cross_entropy.register_fake
def _(input, target, ignore_index, reduction, compensated):
    if reduction == "none":
        return input.new_empty(target.shape)
    return input.new_empty(())


def _setup(ctx, inputs, output):
    input, target, ignore_index, reduction, compensated = inputs
    ctx.save_for_backward(input, target)
    ctx.ignore_index, ctx.reduction, ctx.compensated = ignore_index, reduction, compensated


def _backward(ctx, g):
    refuse_double_backward("cross_entropy")
    input, target = ctx.saved_tensors
    V = input.shape[-1]
    x, t = input.reshape(-1, V), target.reshape(-1)
    valid = t != ctx.ignore_index
    p = ops.softmax(x, -1, torch.float32, ctx.compensated)
    rows = valid.nonzero()[:, 0]
    p[rows, t[rows]] = p[rows, t[rows]] - 1.0
    if ctx.reduction == "none":
        scale = g.reshape(-1, 1).float()
    else:
        scale = g.float()
        if ctx.reduction == "mean":
            scale = scale / rows.numel()
    gx = torch.where(valid[:, None], p * scale, 0.0)
    return gx.to(input.dtype).view(input.shape), None, None, None, None


torch.library.register_autograd("detops::cross_entropy", autocast_off(_backward), setup_context=_setup)
