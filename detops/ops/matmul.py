"""mm / bmm / linear / addmm: docs/REDUCTION_ORDER.md §5. (Owner: matmul work; placeholder.)"""
import torch

from .._lib import ops


def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ops.mm(a, b)


def bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ops.bmm(a, b)


def linear(input: torch.Tensor, weight: torch.Tensor, bias=None) -> torch.Tensor:
    return ops.linear(input, weight, bias)


def addmm(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ops.addmm(bias, a, b)
