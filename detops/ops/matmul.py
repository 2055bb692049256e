"""mm / bmm / linear / addmm with a fixed per-element summation order: docs/REDUCTION_ORDER.md §5; their
backward: §10 (dX: the same matmul order, row-local; dW and db: token reductions over the canonical buffer of
`documents`).

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
from .gradients import autocast_off, refuse_double_backward, token_plan, token_products, token_sums

# The overloads themselves: calling them skips the packet's overload resolution on every call (decode-sized
# matmuls are host-bound, docs/ops/matmul.md).
_mm = ops.mm.default
_bmm = ops.bmm.default
_linear = ops.linear.default
_addmm = ops.addmm.default


def mm(a: torch.Tensor, b: torch.Tensor, compensated: bool = False,
       documents: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Batch-invariant `torch.mm`. a: (M, K), b: (K, N) -> (M, N). documents: (M,) segment ids of a's rows
    (-1 = pad) for b's gradient, a sum over rows (REDUCTION_ORDER.md §10); None: all rows one document."""
    return _mm(a, b, compensated, documents)


def bmm(a: torch.Tensor, b: torch.Tensor, compensated: bool = False) -> torch.Tensor:
    """Batch-invariant `torch.bmm`. a: (B, M, K), b: (B, K, N) -> (B, M, N); bmm(a, b)[i] == mm(a[i], b[i])."""
    return _bmm(a, b, compensated)


def linear(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
           compensated: bool = False, documents: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Batch-invariant `F.linear`: input @ weight.T + bias. input: (..., K), weight: (N, K), bias: (N,) or None
    -> (..., N). documents: input.shape[:-1] segment ids (-1 = pad) for the weight and bias gradients (sums over
    tokens, REDUCTION_ORDER.md §10); None: each row of a 3-D input is one document."""
    return _linear(input, weight, bias, compensated, documents)


def addmm(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor, compensated: bool = False,
          documents: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Batch-invariant `torch.addmm(bias, a, b)` with beta = alpha = 1. bias: (N,), a: (M, K), b: (K, N)
    -> (M, N). Only the (N,) bias that nn.Linear passes is supported; other shapes raise. documents: as mm."""
    return _addmm(bias, a, b, compensated, documents)


@torch.library.register_fake("detops::mm")
def _mm_fake(a, b, compensated=False, documents=None):
    torch._check(a.dim() == 2 and b.dim() == 2, lambda: "detops.mm: a and b must be 2-D")
    torch._check(a.shape[1] == b.shape[0], lambda: "detops.mm: a.shape[1] != b.shape[0]")
    return a.new_empty((a.shape[0], b.shape[1]))


@torch.library.register_fake("detops::bmm")
def _bmm_fake(a, b, compensated=False):
    torch._check(a.dim() == 3 and b.dim() == 3, lambda: "detops.bmm: a and b must be 3-D")
    torch._check(a.shape[0] == b.shape[0] and a.shape[2] == b.shape[1], lambda: "detops.bmm: shapes differ")
    return a.new_empty((a.shape[0], a.shape[1], b.shape[2]))


@torch.library.register_fake("detops::linear")
def _linear_fake(input, weight, bias, compensated=False, documents=None):
    torch._check(weight.dim() == 2 and input.shape[-1] == weight.shape[1],
                 lambda: "detops.linear: input.shape[-1] != weight.shape[1]")
    return input.new_empty((*input.shape[:-1], weight.shape[0]))


@torch.library.register_fake("detops::addmm")
def _addmm_fake(bias, a, b, compensated=False, documents=None):
    torch._check(a.dim() == 2 and b.dim() == 2, lambda: "detops.addmm: a and b must be 2-D")
    torch._check(a.shape[1] == b.shape[0], lambda: "detops.addmm: a.shape[1] != b.shape[0]")
    return a.new_empty((a.shape[0], b.shape[1]))


# Backward (REDUCTION_ORDER.md §10). dX = dY @ W in the forward's order (row-local, L1); dW = Σ_tokens dYᵀ X and
# db = Σ_tokens dY over the canonical token buffer of `documents` (token_plan).

def _save(ctx, tensors, compensated, documents=None):
    ctx.save_for_backward(*tensors)
    ctx.compensated, ctx.documents = compensated, documents


def _mm_setup(ctx, inputs, output):
    a, b, compensated, *rest = inputs
    _save(ctx, (a, b), compensated, rest[0] if rest else None)


def _product_grads(ctx, op, g, need_a, need_b, need_bias):
    """(da, db, dbias) of `a @ b (+ bias)`: da = g @ bᵀ (row-local), db = Σ_rows aᵀ g and dbias = Σ_rows g over the
    canonical buffer of ctx.documents (one plan for both)."""
    a, b = ctx.saved_tensors
    ga = _mm(g, b.t(), ctx.compensated) if need_a else None
    gb = gbias = None
    if need_b or need_bias:
        plan = token_plan(ctx.documents, a.shape[:1], a.device, op)
        gb = token_products(a, g, plan, ctx.compensated) if need_b else None
        gbias = token_sums(g, plan, ctx.compensated) if need_bias else None
    return ga, gb, gbias


def _mm_backward(ctx, g):
    refuse_double_backward("mm")
    ga, gb, _ = _product_grads(ctx, "mm", g, ctx.needs_input_grad[0], ctx.needs_input_grad[1], False)
    return ga, gb, None, None


def _addmm_setup(ctx, inputs, output):
    bias, a, b, compensated, *rest = inputs
    _save(ctx, (a, b), compensated, rest[0] if rest else None)


def _addmm_backward(ctx, g):
    refuse_double_backward("addmm")
    ga, gb, gbias = _product_grads(ctx, "addmm", g, ctx.needs_input_grad[1], ctx.needs_input_grad[2],
                                   ctx.needs_input_grad[0])
    return gbias, ga, gb, None, None


def _bmm_setup(ctx, inputs, output):
    a, b, compensated = inputs
    _save(ctx, (a, b), compensated)


def _bmm_backward(ctx, g):
    # No token layout: each batch entry is its own product; dB sums over its M rows from row 0 (§10).
    refuse_double_backward("bmm")
    a, b = ctx.saved_tensors
    ga = _bmm(g, b.transpose(1, 2), ctx.compensated) if ctx.needs_input_grad[0] else None
    gb = _bmm(a.transpose(1, 2), g, ctx.compensated) if ctx.needs_input_grad[1] else None
    return ga, gb, None


def _linear_setup(ctx, inputs, output):
    input, weight, bias, compensated, *rest = inputs
    _save(ctx, (input, weight), compensated, rest[0] if rest else None)


def _linear_backward(ctx, g):
    refuse_double_backward("linear")
    x, w = ctx.saved_tensors
    N, K = w.shape
    T = x.shape[:-1].numel()
    gx = _linear(g, w.t(), None, ctx.compensated) if ctx.needs_input_grad[0] else None
    gw = gbias = None
    if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
        plan = token_plan(ctx.documents, x.shape[:-1], x.device, "linear")
        g2 = g.reshape(T, N)
        gw = token_products(g2, x.reshape(T, K), plan, ctx.compensated) if ctx.needs_input_grad[1] else None
        gbias = token_sums(g2, plan, ctx.compensated) if ctx.needs_input_grad[2] else None
    return gx, gw, gbias, None, None


torch.library.register_autograd("detops::mm", autocast_off(_mm_backward), setup_context=_mm_setup)
torch.library.register_autograd("detops::addmm", autocast_off(_addmm_backward), setup_context=_addmm_setup)
torch.library.register_autograd("detops::bmm", autocast_off(_bmm_backward), setup_context=_bmm_setup)
torch.library.register_autograd("detops::linear", autocast_off(_linear_backward), setup_context=_linear_setup)
