"""The two reductions every backward is built from (docs/REDUCTION_ORDER.md §10), and the document layouts.

- `row_dot(a, b)`: a row's sum of a·b (of a alone without b) in §2's lane order, the forward norms' and softmax's own
  order (`detops::row_dot`): L1-invariant, CPU == CUDA.
- `TokenPlan`: the canonical token buffer of a document layout (segment ids, -1 = pad): documents in ascending
  id, each starting at a multiple of `TOKEN_ALIGN`, zeros between, pads left out. `token_products(a, b, plan)`
  is the token reduction `aᵀ b` over that buffer (dW = dYᵀX), `token_sums(a, plan)` its column sums (db,
  dweight). Both give the same bits for the same documents in any layout, because the buffer is the same.
- `documents_from_mask / _from_cu_seqlens / _from_position_ids`: segment ids from the layouts Hugging Face uses.
"""
from typing import Optional, Sequence

import torch

from .._lib import constants_table, ops

TOKEN_ALIGN = constants_table()["kGradTokenAlign"]

__all__ = ["row_dot", "TokenPlan", "token_plan", "token_products", "token_sums", "per_element", "refuse_double_backward",
           "documents_from_mask", "documents_from_cu_seqlens", "documents_from_position_ids", "TOKEN_ALIGN"]


def _fail(op: str, msg: str):
    raise ValueError(f"detops.{op}: {msg}")


def row_dot(a: torch.Tensor, b: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(..., N) -> (...) float32: each row's sum of a·b (of a without b) over the last dim in §2's lane order
    (REDUCTION_ORDER.md §10 rule 2); a and b of any float dtype, widened exactly, each product rounded to fp32."""
    return ops.row_dot(a, b)


@torch.library.register_fake("detops::row_dot")
def _row_dot_fake(a, b=None):
    return a.new_empty(a.shape[:-1], dtype=torch.float32)


def per_element(fn: str, x: torch.Tensor) -> torch.Tensor:
    """exp / tanh of every element with bits that depend only on the element (§10, §8): torch's CUDA kernels
    already are; on the CPU torch's SIMD body and scalar tail differ, so detops' per-element function is used."""
    if x.device.type == "cpu":
        return ops.elementwise(x.contiguous(), fn)
    return getattr(torch, fn)(x)


_AUTOCAST_KEYS = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU) | \
    torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCUDA)


class _Unpacked:
    """A backward's ctx with its saved tensors already unpacked; every other attribute is the ctx's."""

    def __init__(self, ctx):
        self._ctx, self.saved_tensors = ctx, ctx.saved_tensors

    def __getattr__(self, name):
        return getattr(self._ctx, name)


def autocast_off(backward):
    """A backward runs in the dtypes of what the forward saved, whatever autocast region `loss.backward()` is called
    in (on the CPU the autograd engine runs it on the calling thread, inside that region): its row sums and token
    products are §10's orders in fp32, not the autocast dtype's. It also runs below the autograd dispatch keys: a
    backward records no graph (double backward is refused), so the detops ops it calls go straight to their
    kernels instead of through torch.library's Python autograd wrapper (~15 µs of host time per call). The saved
    tensors are unpacked first, above those keys: activation checkpointing recomputes the forward in that unpacking,
    and the recomputation must record as the forward did."""
    def run(ctx, *grads):
        unpacked = _Unpacked(ctx)  # unpacked once (checkpointing allows no second unpacking), with autograd on
        with torch._C._ExcludeDispatchKeyGuard(_AUTOCAST_KEYS), torch._C._AutoDispatchBelowAutograd():
            return backward(unpacked, *grads)
    run.__name__, run.__doc__ = backward.__name__, backward.__doc__
    return run


def refuse_double_backward(op: str) -> None:
    if torch.is_grad_enabled():
        raise RuntimeError(f"detops.{op}: double backward (create_graph=True) is not supported; the backward "
                           "itself is not differentiable")


class TokenPlan:
    """Where each token of a layout goes in the canonical buffer (§10). `source`: per buffer row, the flat token
    index it copies (a gap row: index 0, then filled); `gaps`: the buffer rows between documents; `length`: the
    buffer's rows (a multiple of TOKEN_ALIGN); `identity`: the buffer is the flattened tensor itself (no pads, every
    document already aligned), so no gather is needed. One row gather reads each token once and writes each buffer
    row once, then the gaps are filled: the buffer of a full fill followed by a scatter, in one pass instead of
    three."""

    def __init__(self, source, gaps, length: int, identity: bool = False):
        self.source, self.gaps, self.length, self.identity = source, gaps, length, identity

    def gather(self, t: torch.Tensor, fill=0) -> torch.Tensor:
        """t: (tokens, C) -> (length, C) canonical buffer; the gaps hold `fill`."""
        if self.identity:
            return t
        return t.index_select(0, self.source).index_fill_(0, self.gaps, fill)


def _aligned(n: torch.Tensor) -> torch.Tensor:
    return (n + TOKEN_ALIGN - 1) // TOKEN_ALIGN * TOKEN_ALIGN


def token_plan(documents: Optional[torch.Tensor], token_shape: Sequence[int], device, op: str) -> TokenPlan:
    """The canonical buffer of `documents` (segment ids shaped `token_shape`, -1 = pad), or of the default
    layout (no ids: each entry of the leading token dims is one document; a single token dim is one document)."""
    token_shape = tuple(token_shape)
    T = 1
    for s in token_shape:
        T *= s
    if documents is None:
        # Zeros after the last document change no bit (§10), so one document, or rows already a multiple of
        # TOKEN_ALIGN long, is its own buffer.
        L = token_shape[-1] if len(token_shape) >= 2 else T
        if L == 0 or T == L or L % TOKEN_ALIGN == 0:
            return TokenPlan(None, None, T, identity=True)
        Lp = -(-L // TOKEN_ALIGN) * TOKEN_ALIGN
        row = torch.arange(T // L * Lp, device=device)
        pos = row % Lp
        source = torch.where(pos < L, row // Lp * L + pos, 0)
        gaps = (torch.arange(T // L, device=device)[:, None] * Lp + torch.arange(L, Lp, device=device)).reshape(-1)
        return TokenPlan(source, gaps, T // L * Lp)
    if tuple(documents.shape) != token_shape:
        _fail(op, f"documents must have the token shape {token_shape}, got {tuple(documents.shape)}")
    # The plan depends only on the ids: computed once per layout (a patched model hands every layer the same ids
    # tensor) and kept on it, keyed by its version counter so that an in-place change recomputes it. Writes that
    # torch does not count (through .numpy(), DLPack or `.data =`) are not seen: ids are not to be edited so.
    try:
        key = (str(device), documents._version)
    except RuntimeError:   # an inference-mode tensor has no version counter: nothing to key a cache on
        return _documents_plan(documents, device, op)
    cached = getattr(documents, "_detops_token_plan", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    plan = _documents_plan(documents, device, op)
    documents._detops_token_plan = (key, plan)
    return plan


def _documents_plan(documents: torch.Tensor, device, op: str) -> TokenPlan:
    if documents.dtype not in (torch.int32, torch.int64):
        _fail(op, f"documents must be int32 or int64 segment ids, got {documents.dtype}")
    flat = documents.reshape(-1).to(device=device, dtype=torch.int64)
    if bool((flat < -1).any()):
        _fail(op, "documents ids must be >= 0 (a document) or -1 (a pad)")
    idx = (flat >= 0).nonzero().squeeze(1)
    ids, perm = torch.sort(flat[idx], stable=True)
    index = idx[perm]
    if bool(((ids[1:] == ids[:-1]) & (index[1:] - index[:-1] != 1)).any()):
        _fail(op, "each document's tokens must be contiguous in the flattened token order (no pad or other "
                  "document inside a document)")
    _, counts = torch.unique_consecutive(ids, return_counts=True)
    padded = _aligned(counts)
    starts = torch.cumsum(padded, 0) - padded
    first = torch.cumsum(counts, 0) - counts
    pos = torch.arange(index.numel(), device=device) - torch.repeat_interleave(first, counts)
    slot = torch.repeat_interleave(starts, counts) + pos
    length = int(padded.sum())
    source = torch.zeros(length, dtype=torch.int64, device=device)
    source[slot] = index
    covered = torch.zeros(length, dtype=torch.bool, device=device)
    covered[slot] = True
    return TokenPlan(source, (~covered).nonzero().squeeze(1), length)


def token_products(a: torch.Tensor, b: torch.Tensor, plan: TokenPlan, compensated: bool = False) -> torch.Tensor:
    """Σ_tokens a_tᵀ b_t over the canonical buffer: a (tokens, Ca), b (tokens, Cb) -> (Ca, Cb) in their dtype."""
    return ops.mm(plan.gather(a).t(), plan.gather(b), compensated)


def token_sums(a: torch.Tensor, plan: TokenPlan, compensated: bool = False) -> torch.Tensor:
    """Σ_tokens a_t over the canonical buffer: a (tokens, C) -> (C,) in a's dtype. §5's chain, as
    `mm(ones(1, T), buf)`: float32 by its own column kernel (`detops::token_sum`, the same bits without a GEMM
    doing a GEMV), bf16 / fp16 by the matmul (on CUDA the tensor cores' chain)."""
    buf = plan.gather(a)
    if buf.dtype == torch.float32:
        return ops.token_sum(buf, compensated)
    return ops.mm(buf.new_ones(1, buf.shape[0]), buf, compensated)[0]


@torch.library.register_fake("detops::token_sum")
def _token_sum_fake(a, compensated=False):
    return a.new_empty(a.shape[1:])


def _dense(ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Non-decreasing flat ids -> 0, 1, 2, ... in order of appearance on valid tokens, -1 elsewhere."""
    out = torch.full_like(ids, -1)
    if bool(valid.any()):
        out[valid] = torch.unique_consecutive(ids[valid], return_inverse=True)[1]
    return out


def documents_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) padding mask (1 / True = token) -> segment ids: each row's tokens one document, pads -1. Rows are
    numbered in order, skipping rows without a token; the tokens of a row must be contiguous (left or right
    padding)."""
    m = attention_mask.bool()
    if m.dim() != 2:
        raise ValueError(f"detops.documents_from_mask: attention_mask must be (B, L), got {tuple(m.shape)}")
    rows = torch.arange(m.shape[0], device=m.device)[:, None].expand_as(m)
    return _dense(rows.reshape(-1), m.reshape(-1)).view(m.shape)


def documents_from_cu_seqlens(cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Packed lengths [0, e0, e1, ...] -> (e_last,) segment ids 0, 1, ... (empty documents skipped)."""
    cu = cu_seqlens.to(torch.int64)
    if cu.dim() != 1 or cu.numel() < 1 or int(cu[0]) != 0 or bool((cu[1:] < cu[:-1]).any()):
        raise ValueError("detops.documents_from_cu_seqlens: cu_seqlens must be 1-D, start at 0 and be "
                         f"non-decreasing, got {cu_seqlens.tolist()}")
    i = torch.arange(int(cu[-1]), device=cu.device)
    doc = torch.searchsorted(cu, i, right=True) - 1
    return _dense(doc, torch.ones_like(doc, dtype=torch.bool))


def documents_from_position_ids(position_ids: torch.Tensor,
                                attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B, L) or (L,) position ids restarting at 0 for each packed document (DataCollatorWithFlattening) ->
    segment ids; a row also starts a document. attention_mask (optional, same shape): 0 marks pads (-1)."""
    pos = position_ids if position_ids.dim() == 2 else position_ids[None]
    start = pos == 0
    start[:, 0] = True
    ids = torch.cumsum(start.reshape(-1).to(torch.int64), 0)
    valid = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else \
        attention_mask.reshape(-1).bool()
    return _dense(ids, valid).view(position_ids.shape)
