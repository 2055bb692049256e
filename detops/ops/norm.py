"""rms_norm: docs/REDUCTION_ORDER.md §2–§3; its backward: §10 (dx row-local, dweight a token reduction)."""
from typing import Optional, Sequence, Tuple, Union

import torch

from .._lib import ops
from .gradients import autocast_off, refuse_double_backward, token_plan, token_sums

WEIGHT_MODES = ("plain", "cast_first", "offset")


def _shape(normalized_shape) -> list:
    if isinstance(normalized_shape, int):
        return [normalized_shape]
    return list(normalized_shape)


def _eps(input: torch.Tensor, eps: Optional[float]) -> float:
    # F.rms_norm's default: the machine epsilon of the input dtype. A non-float input gets a placeholder so
    # that the op itself refuses it with the reason (torch.finfo would raise an unrelated TypeError).
    if eps is None:
        return float(torch.finfo(input.dtype).eps) if input.is_floating_point() else 0.0
    return float(eps)


def rms_norm(input: torch.Tensor, normalized_shape: Union[int, Sequence[int]], weight: Optional[torch.Tensor] = None,
             eps: Optional[float] = None, *, weight_mode: str = "plain", compensated: bool = False,
             documents: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Batch-invariant RMSNorm over the trailing `normalized_shape` dims, like `F.rms_norm`.

    input: (..., *normalized_shape), float32/bfloat16/float16, CPU or CUDA. weight: normalized_shape or None.
    weight_mode: 'plain' (F.rms_norm: y = x*r*w, one rounding), 'cast_first' (Llama/Qwen/Mistral: round x*r
    to the input dtype, then * w; out dtype = promote(input, weight)), 'offset' (Gemma: x*r*(1+w) in fp32).
    compensated: Neumaier-compensated sum of squares. Returns a tensor shaped like input. documents: segment ids
    shaped like input's leading (token) dims, -1 = pad, for the weight's gradient (a sum over tokens,
    REDUCTION_ORDER.md §10); None: each row of a 3-D input is one document.
    """
    return ops.rms_norm(input, _shape(normalized_shape), weight, _eps(input, eps), weight_mode, compensated,
                        documents)


def add_rms_norm(input: torch.Tensor, residual: torch.Tensor, normalized_shape: Union[int, Sequence[int]],
                 weight: Optional[torch.Tensor] = None, eps: Optional[float] = None, *, weight_mode: str = "plain",
                 compensated: bool = False, documents: Optional[torch.Tensor] = None
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fused `x = input + residual` (rounded to input dtype) then rms_norm(x). Returns (normed, x)."""
    return ops.add_rms_norm(input, residual, _shape(normalized_shape), weight, _eps(input, eps), weight_mode,
                            compensated, documents)


def _out_dtype(input, weight, weight_mode):
    if weight_mode == "cast_first" and weight is not None:
        return torch.promote_types(input.dtype, weight.dtype)
    return input.dtype


@torch.library.register_fake("detops::rms_norm")
def _rms_norm_fake(input, normalized_shape, weight, eps, weight_mode, compensated, documents=None):
    return input.new_empty(input.shape, dtype=_out_dtype(input, weight, weight_mode))


@torch.library.register_fake("detops::add_rms_norm")
def _add_rms_norm_fake(input, residual, normalized_shape, weight, eps, weight_mode, compensated,
                       documents=None):
    return (input.new_empty(input.shape, dtype=_out_dtype(input, weight, weight_mode)),
            input.new_empty(input.shape))


# Backward (REDUCTION_ORDER.md §10 rule 2), one row kernel (detops::rms_norm_backward, csrc/ops/rms_norm/) per row
# of N = prod(normalized_shape) elements, in fp32:
#   r = the forward's 1 / sqrt(Σ x·x / N + eps) (its lanes: plain or compensated),  gw = g·w' (w' = w, 1 + w for
#   "offset", 1 without weight),  dx = r·gw - x·((r·r·r)·(Σ gw·x / N)) (+ the x_sum gradient of add_rms_norm),
#   dweight = Σ_tokens g·x̂ over the canonical token buffer (x̂ = x·r; "cast_first": rounded to the input dtype
#   first, as the forward multiplies that by w).

def _rms_norm_grads(x, weight, g, nd, eps, mode, compensated, documents, needs_x, needs_w, extra=None):
    N = 1
    for s in x.shape[x.dim() - nd:]:
        N *= s
    rows = x.shape[:x.dim() - nd]
    w = None
    if weight is not None:
        w = weight.reshape(N).float()
        w = 1.0 + w if mode == "offset" else w
    want_w = needs_w and weight is not None
    if not needs_x and not want_w:
        return None, None
    dx, gxhat = ops.rms_norm_backward(x.reshape(-1, N), g.reshape(-1, N), w,
                                      None if extra is None else extra.reshape(-1, N), eps, mode == "cast_first",
                                      compensated, want_w)
    gweight = None
    if want_w:
        plan = token_plan(documents, rows, x.device, "rms_norm")
        gweight = token_sums(gxhat, plan).to(weight.dtype).view(weight.shape)
    return (dx.view(x.shape) if needs_x else None), gweight


@torch.library.register_fake("detops::rms_norm_backward")
def _rms_norm_backward_fake(x, grad, weight, extra, eps, cast_first, compensated, gxhat):
    return x.new_empty(x.shape), x.new_empty(x.shape if gxhat else (0, 0), dtype=torch.float32)


def _rms_norm_setup(ctx, inputs, output):
    input, normalized_shape, weight, eps, weight_mode, compensated, *rest = inputs
    ctx.save_for_backward(input, weight)
    ctx.nd, ctx.eps, ctx.mode, ctx.documents = len(normalized_shape), eps, weight_mode, rest[0] if rest else None
    ctx.compensated = compensated


def _rms_norm_backward(ctx, g):
    refuse_double_backward("rms_norm")
    x, weight = ctx.saved_tensors
    gx, gw = _rms_norm_grads(x, weight, g, ctx.nd, ctx.eps, ctx.mode, ctx.compensated, ctx.documents,
                             ctx.needs_input_grad[0], ctx.needs_input_grad[2])
    return gx, None, gw, None, None, None, None


def _add_rms_norm_setup(ctx, inputs, output):
    input, residual, normalized_shape, weight, eps, weight_mode, compensated, *rest = inputs
    ctx.save_for_backward(output[1], weight)   # x = input + residual, as the forward rounded it
    ctx.nd, ctx.eps, ctx.mode, ctx.documents = len(normalized_shape), eps, weight_mode, rest[0] if rest else None
    ctx.compensated = compensated
    ctx.residual_dtype = residual.dtype


def _add_rms_norm_backward(ctx, g_y, g_x):
    refuse_double_backward("add_rms_norm")
    x, weight = ctx.saved_tensors
    needs_x = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
    needs_w = ctx.needs_input_grad[3] and g_y is not None   # only the sum used: the weight has no gradient
    if g_y is None:
        g_y = torch.zeros_like(x)
    gx, gw = _rms_norm_grads(x, weight, g_y, ctx.nd, ctx.eps, ctx.mode, ctx.compensated, ctx.documents, needs_x,
                             needs_w, extra=g_x)
    # d(input + residual) reaches both summands unchanged.
    g_in = gx if ctx.needs_input_grad[0] else None
    g_res = gx.to(ctx.residual_dtype) if ctx.needs_input_grad[1] else None
    return g_in, g_res, None, gw, None, None, None, None


torch.library.register_autograd("detops::rms_norm", autocast_off(_rms_norm_backward), setup_context=_rms_norm_setup)
torch.library.register_autograd("detops::add_rms_norm", autocast_off(_add_rms_norm_backward),
                                setup_context=_add_rms_norm_setup)
