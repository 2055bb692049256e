"""Elementwise functions evaluated one element at a time on the CPU: docs/REDUCTION_ORDER.md §8.

Not a reduction, but torch's CPU kernels give an element different bits in the SIMD body of a tensor and in
its scalar tail, so SiLU / GELU / RoPE's cos and sin of one token depend on where the token sits in the batch.
The aten mode routes those CPU calls here. CUDA tensors are refused: torch's CUDA kernels are already
position-independent.
"""
import torch

from .._lib import ops

FUNCTIONS = ("exp", "sin", "cos", "tanh", "sigmoid", "silu", "gelu", "gelu_tanh")


def elementwise(input: torch.Tensor, fn: str) -> torch.Tensor:
    """`fn(input)` for fn in FUNCTIONS (gelu_tanh = F.gelu(approximate='tanh')), computed in float (double
    for float64) per element and rounded once to input's dtype."""
    return ops.elementwise(input, fn)


@torch.library.register_fake("detops::elementwise")
def _elementwise_fake(input, fn):
    return torch.empty_like(input, memory_format=torch.contiguous_format)
