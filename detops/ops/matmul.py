"""mm / bmm / linear / addmm with a fixed per-element summation order: docs/REDUCTION_ORDER.md §5.

Every output element is `acc = 0; for each K block of 32 from k = 0: t = 0; t += a_k * b_k (ascending);
acc += t`, then `+ bias` once, then one rounding to the output dtype. fp32 accumulation for fp32/bf16/fp16
operands; the output has the operands' dtype. a and b must share dtype and device (no promotion). Any strides
are accepted without copies (e.g. nn.Linear's `weight.t()`). K = 0 gives zeros (+ bias).
On CUDA, bf16/fp16 run on tensor cores (§5: the hardware's MMA chain, not the CPU's bits).

`compensated=True` (every op; default False, the fast order): §5's compensated order. The in-block chain is
kept, but the K-block sums are added with Neumaier compensation (`acc = s + c`), which removes the error of
the sum across blocks (large when block sums cancel or differ in magnitude). It runs on CUDA cores for every
dtype (never the tensor cores; bf16/fp16 are widened exactly, their products are exact in fp32), so its bits
are the same on CPU and CUDA (L5). Accuracy gain and speed cost: docs/ops/matmul.md.
"""
from typing import Optional

import torch

from .._lib import ops

# The overloads themselves: calling them skips the packet's overload resolution on every call (decode-sized
# matmuls are host-bound, docs/ops/matmul.md).
_mm = ops.mm.default
_bmm = ops.bmm.default
_linear = ops.linear.default
_addmm = ops.addmm.default


def mm(a: torch.Tensor, b: torch.Tensor, compensated: bool = False) -> torch.Tensor:
    """Batch-invariant `torch.mm`. a: (M, K), b: (K, N) -> (M, N)."""
    return _mm(a, b, compensated)


def bmm(a: torch.Tensor, b: torch.Tensor, compensated: bool = False) -> torch.Tensor:
    """Batch-invariant `torch.bmm`. a: (B, M, K), b: (B, K, N) -> (B, M, N); bmm(a, b)[i] == mm(a[i], b[i])."""
    return _bmm(a, b, compensated)


def linear(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
           compensated: bool = False) -> torch.Tensor:
    """Batch-invariant `F.linear`: input @ weight.T + bias. input: (..., K), weight: (N, K), bias: (N,) or None
    -> (..., N)."""
    return _linear(input, weight, bias, compensated)


def addmm(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor, compensated: bool = False) -> torch.Tensor:
    """Batch-invariant `torch.addmm(bias, a, b)` with beta = alpha = 1. bias: (N,), a: (M, K), b: (K, N)
    -> (M, N). Only the (N,) bias that nn.Linear passes is supported; other shapes raise."""
    return _addmm(bias, a, b, compensated)


@torch.library.register_fake("detops::mm")
def _mm_fake(a, b, compensated=False):
    torch._check(a.dim() == 2 and b.dim() == 2, lambda: "detops.mm: a and b must be 2-D")
    torch._check(a.shape[1] == b.shape[0], lambda: "detops.mm: a.shape[1] != b.shape[0]")
    return a.new_empty((a.shape[0], b.shape[1]))


@torch.library.register_fake("detops::bmm")
def _bmm_fake(a, b, compensated=False):
    torch._check(a.dim() == 3 and b.dim() == 3, lambda: "detops.bmm: a and b must be 3-D")
    torch._check(a.shape[0] == b.shape[0] and a.shape[2] == b.shape[1], lambda: "detops.bmm: shapes differ")
    return a.new_empty((a.shape[0], a.shape[1], b.shape[2]))


@torch.library.register_fake("detops::linear")
def _linear_fake(input, weight, bias, compensated=False):
    torch._check(weight.dim() == 2 and input.shape[-1] == weight.shape[1],
                 lambda: "detops.linear: input.shape[-1] != weight.shape[1]")
    return input.new_empty((*input.shape[:-1], weight.shape[0]))


@torch.library.register_fake("detops::addmm")
def _addmm_fake(bias, a, b, compensated=False):
    torch._check(a.dim() == 2 and b.dim() == 2, lambda: "detops.addmm: a and b must be 2-D")
    torch._check(a.shape[1] == b.shape[0], lambda: "detops.addmm: a.shape[1] != b.shape[0]")
    return a.new_empty((a.shape[0], b.shape[1]))
