"""cross_entropy over the vocabulary with a fixed-order loss sum: docs/REDUCTION_ORDER.md §10 rule 4.

The per-token loss is `-log_softmax(x)[target]` (§4, fp32); tokens whose target is `ignore_index` are skipped
(never added), and the rest are summed in §5's chain in their flattened order, so the same supervised tokens in
the same order give the same loss bits however they are padded or packed. The gradient is row-local:
`(softmax(x) - onehot(target)) · g` (g divided by the count for "mean"), zeros on ignored rows. Both per-token
parts are row kernels (`detops::cross_entropy_nll` / `cross_entropy_backward`, csrc/ops/cross_entropy/): one read
of the logits per pass, no (tokens, V) float32 softmax in memory.
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
    return torch.ops.detops.cross_entropy(input, target.to(torch.int64), int(ignore_index), reduction, compensated,
                                          False)


@torch.library.custom_op("detops::cross_entropy", mutates_args=())
def _cross_entropy(input: torch.Tensor, target: torch.Tensor, ignore_index: int, reduction: str,
                   compensated: bool, float_output: bool) -> torch.Tensor:
    """float_output: the loss in float32 whatever the logits' dtype (autocast's policy for the loss, without a
    float32 copy of the logits: the kernels widen each logit exactly, so the bits are those of the cast input)."""
    out_dtype = torch.float32 if float_output else input.dtype
    nll = ops.cross_entropy_nll(input, target, ignore_index, compensated)   # fp32, +0 on ignored tokens
    if reduction == "none":
        return nll.to(out_dtype)
    kept = nll.reshape(-1)[target.reshape(-1) != ignore_index]       # the supervised tokens, in flat order
    total = ops.token_sum(kept[:, None])[0]                           # §5's chain over them (§10 rule 1)
    if reduction == "mean":   # the IEEE division on every device (CUDA's tensor / Python number is x · (1/n))
        total = total / total.new_tensor(float(kept.numel()))
    return total.to(out_dtype)


@_cross_entropy.register_fake
def _(input, target, ignore_index, reduction, compensated, float_output):
    dtype = torch.float32 if float_output else input.dtype
    if reduction == "none":
        return input.new_empty(target.shape, dtype=dtype)
    return input.new_empty((), dtype=dtype)


def _setup(ctx, inputs, output):
    input, target, ignore_index, reduction, compensated, _ = inputs
    ctx.save_for_backward(input, target)
    ctx.ignore_index, ctx.reduction, ctx.compensated = ignore_index, reduction, compensated


def _backward(ctx, g):
    refuse_double_backward("cross_entropy")
    input, target = ctx.saved_tensors
    scale = g.float()
    if ctx.reduction == "mean":   # g / count: the IEEE division of two tensors on every device, no host sync
        scale = scale / (target != ctx.ignore_index).sum().float()
    gx = ops.cross_entropy_backward(input, target, scale, ctx.ignore_index, ctx.compensated)
    return gx, None, None, None, None, None


@torch.library.register_fake("detops::cross_entropy_nll")
def _nll_fake(input, target, ignore_index, compensated):
    return input.new_empty(target.shape, dtype=torch.float32)


@torch.library.register_fake("detops::cross_entropy_backward")
def _backward_fake(input, target, grad, ignore_index, compensated):
    return torch.empty_like(input, memory_format=torch.contiguous_format)


torch.library.register_autograd("detops::cross_entropy", autocast_off(_backward), setup_context=_setup)
