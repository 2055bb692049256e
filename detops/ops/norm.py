"""rms_norm: docs/REDUCTION_ORDER.md §2–§3."""
from typing import Optional, Sequence, Tuple, Union

import torch

from .._lib import ops

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
             eps: Optional[float] = None, *, weight_mode: str = "plain", compensated: bool = False) -> torch.Tensor:
    """Batch-invariant RMSNorm over the trailing `normalized_shape` dims, like `F.rms_norm`.

    input: (..., *normalized_shape), float32/bfloat16/float16, CPU or CUDA. weight: normalized_shape or None.
    weight_mode: 'plain' (F.rms_norm: y = x*r*w, one rounding), 'cast_first' (Llama/Qwen/Mistral: round x*r
    to the input dtype, then * w; out dtype = promote(input, weight)), 'offset' (Gemma: x*r*(1+w) in fp32).
    compensated: Neumaier-compensated sum of squares. Returns a tensor shaped like input.
    """
    return ops.rms_norm(input, _shape(normalized_shape), weight, _eps(input, eps), weight_mode, compensated)


def add_rms_norm(input: torch.Tensor, residual: torch.Tensor, normalized_shape: Union[int, Sequence[int]],
                 weight: Optional[torch.Tensor] = None, eps: Optional[float] = None, *, weight_mode: str = "plain",
                 compensated: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fused `x = input + residual` (rounded to input dtype) then rms_norm(x). Returns (normed, x)."""
    return ops.add_rms_norm(input, residual, _shape(normalized_shape), weight, _eps(input, eps), weight_mode,
                            compensated)


def _out_dtype(input, weight, weight_mode):
    if weight_mode == "cast_first" and weight is not None:
        return torch.promote_types(input.dtype, weight.dtype)
    return input.dtype


@torch.library.register_fake("detops::rms_norm")
def _rms_norm_fake(input, normalized_shape, weight, eps, weight_mode, compensated):
    return input.new_empty(input.shape, dtype=_out_dtype(input, weight, weight_mode))


@torch.library.register_fake("detops::add_rms_norm")
def _add_rms_norm_fake(input, residual, normalized_shape, weight, eps, weight_mode, compensated):
    return (input.new_empty(input.shape, dtype=_out_dtype(input, weight, weight_mode)),
            input.new_empty(input.shape))
