"""embedding (a table lookup) whose weight gradient is a token reduction: docs/REDUCTION_ORDER.md §10 rule 1.

The forward copies rows (no arithmetic). The gradient of row v of the table is the sum of the upstream
gradients of the tokens whose id is v: torch sums them in an order that follows the tokens' places in the batch
(and on CUDA by atomics or by sorted segments whose boundaries move with the batch). detops sums them over the
canonical token buffer of `documents`, as `onehot(ids)ᵀ · dY` with §5's chain, so the same documents give the
same table gradient in any layout.
"""
from typing import Optional

import torch

from .gradients import autocast_off, refuse_double_backward, token_plan

# Vocabulary ids per one-hot matmul in the backward (bounds its memory; the chunks are independent rows).
_ID_CHUNK = 4096


def _fail(msg: str):
    raise ValueError(f"detops.embedding: {msg}")


def embedding(input: torch.Tensor, weight: torch.Tensor, padding_idx: Optional[int] = None,
              documents: Optional[torch.Tensor] = None) -> torch.Tensor:
    """`F.embedding(input, weight, padding_idx)`: input int64 ids (...), weight (V, H) -> (..., H). The row
    `padding_idx` gets no gradient, as in torch. documents: segment ids shaped like input (-1 = pad)."""
    if input.dtype not in (torch.int64, torch.int32):
        _fail(f"input must hold int64 token ids, got {input.dtype}")
    if weight.dim() != 2:
        _fail(f"weight must be 2-D (num_embeddings, dim), got shape {tuple(weight.shape)}")
    if input.device != weight.device:
        _fail(f"input is on {input.device} but weight is on {weight.device}")
    if not torch.compiler.is_compiling() and input.numel() and bool(((input < 0) | (input >= weight.shape[0])).any()):
        _fail(f"an id is outside [0, {weight.shape[0]})")
    if documents is not None and tuple(documents.shape) != tuple(input.shape):
        _fail(f"documents must have the ids' shape {tuple(input.shape)}, got {tuple(documents.shape)}")
    pad = -1 if padding_idx is None else int(padding_idx) % weight.shape[0]
    return torch.ops.detops.embedding(input.to(torch.int64), weight, pad, documents)


@torch.library.custom_op("detops::embedding", mutates_args=())
def _embedding(input: torch.Tensor, weight: torch.Tensor, padding_idx: int,
               documents: Optional[torch.Tensor]) -> torch.Tensor:
    return weight.index_select(0, input.reshape(-1)).view(*input.shape, weight.shape[1])


@_embedding.register_fake
def _(input, weight, padding_idx, documents):
    return weight.new_empty((*input.shape, weight.shape[1]))


def _setup(ctx, inputs, output):
    input, weight, padding_idx, documents = inputs
    ctx.save_for_backward(input)
    ctx.padding_idx, ctx.documents, ctx.weight_shape = padding_idx, documents, weight.shape


def _backward(ctx, g):
    refuse_double_backward("embedding")
    ids, = ctx.saved_tensors
    V, H = ctx.weight_shape
    plan = token_plan(ctx.documents, ids.shape, ids.device, "embedding")
    gbuf = plan.gather(g.reshape(-1, H))
    idbuf = plan.gather(ids.reshape(-1, 1), fill=-1)[:, 0]
    grad = g.new_zeros(V, H)
    present = torch.unique(idbuf[idbuf >= 0])
    if ctx.padding_idx >= 0:
        present = present[present != ctx.padding_idx]
    for start in range(0, present.numel(), _ID_CHUNK):
        rows = present[start:start + _ID_CHUNK]
        onehot = (idbuf[None, :] == rows[:, None]).to(g.dtype)     # (ids, buffer)
        grad[rows] = torch.ops.detops.mm(onehot, gbuf)
    return None, grad, None, None


torch.library.register_autograd("detops::embedding", autocast_off(_backward), setup_context=_setup)
