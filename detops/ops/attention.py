"""scaled_dot_product_attention: docs/REDUCTION_ORDER.md §6.

The kernel (`torch.ops.detops.attention`) takes, per query row, a descriptor `(anchor, lo, hi)`: the row attends
keys `lo <= j < hi`, and its key blocks/chunks are measured from `anchor`, the key index of the row's sequence
position 0. This module turns SDPA's arguments (boolean/additive masks, `is_causal`) and the packing/position
information Hugging Face has (`position_ids`, `cu_seqlens`, `sliding_window`) into that descriptor, and refuses
any mask that is not one contiguous interval per row.
"""
import math
from typing import Optional

import torch

from .._lib import ops

__all__ = ["scaled_dot_product_attention", "attention_rows"]


def _fail(msg: str):
    raise ValueError(f"detops.scaled_dot_product_attention: {msg}")


def _mask_to_bool(attn_mask: torch.Tensor) -> torch.Tensor:
    if attn_mask.dtype == torch.bool:
        return attn_mask
    if attn_mask.is_floating_point():
        zero = attn_mask == 0
        if not bool((zero | (attn_mask == float("-inf"))).all()):
            _fail("a float attn_mask may only hold 0 (attend) and -inf (masked); additive biases are not "
                  "supported")
        return zero
    _fail(f"attn_mask must be bool or float, got {attn_mask.dtype}")


def _mask_intervals(attn_mask: torch.Tensor, B: int, Hq: int, Q: int, K: int):
    """(lo, hi) int64 (B, Q) from a mask broadcastable to (B, Hq, Q, K); raises unless each row is one interval."""
    m = _mask_to_bool(attn_mask)
    if m.dim() == 2:
        m = m[None, None]
    elif m.dim() == 3:
        m = m[:, None]
    elif m.dim() != 4:
        _fail(f"attn_mask must be 2-D (Q, K), 3-D (B, Q, K) or 4-D (B, H, Q, K), got shape {tuple(attn_mask.shape)}")
    try:
        torch.broadcast_shapes(m.shape, (B, Hq, Q, K))
    except RuntimeError:
        _fail(f"attn_mask of shape {tuple(attn_mask.shape)} does not broadcast to (B, Hq, Q, K) = {(B, Hq, Q, K)}")
    if m.shape[1] > 1:
        if not bool((m == m[:, :1]).all()):
            _fail("attn_mask differs across heads; detops supports one key interval per query row for all heads")
    m = m[:, 0].expand(B, Q, K)
    if K == 0:
        z = torch.zeros(B, Q, dtype=torch.int64, device=m.device)
        return z, z
    m8 = m.to(torch.uint8)
    count = m8.sum(-1, dtype=torch.int64)
    lo = m8.argmax(-1)                             # first attended key (argmax returns the first maximum)
    hi = K - m8.flip(-1).argmax(-1)                # one past the last attended key
    has = count > 0
    bad = has & (hi - lo != count)
    if bool(bad.any()):
        b, i = (int(x) for x in bad.nonzero()[0])
        _fail(f"mask pattern cannot be anchored: row {i} of batch {b} is not one contiguous interval of keys "
              f"(it attends {int(count[b, i])} keys between {int(lo[b, i])} and {int(hi[b, i])}); detops "
              "attention needs each query row to attend one interval lo <= j < hi")
    zero = torch.zeros_like(lo)
    return torch.where(has, lo, zero), torch.where(has, hi, zero)


def attention_rows(B: int, Hq: int, Q: int, K: int, device, attn_mask=None, is_causal=False, position_ids=None,
                   cu_seqlens=None, sliding_window=None) -> torch.Tensor:
    """The (B, Q, 3) int32 descriptor [anchor, lo, hi] of REDUCTION_ORDER.md §6 for SDPA-style arguments.

    Intervals: all keys [0, K) by default; `is_causal`: row i attends [0, i+1) (torch's top-left alignment);
    `attn_mask`: each row's attended keys, verified to be one interval; `cu_seqlens` (packed, B == 1, Q == K):
    [doc_start, i+1); `sliding_window` W: at most the last W keys, [hi - W, hi). Several sources intersect.
    Anchor: `hi - 1 - position_ids` when `position_ids` is given (the key index of position 0: the last attended
    key is the query itself), else the document start with `cu_seqlens`, else `lo`.
    """
    if attn_mask is not None and is_causal:
        _fail("pass either attn_mask or is_causal=True, not both (as torch's SDPA)")
    if sliding_window is not None and position_ids is None and cu_seqlens is None:
        _fail("sliding_window needs position_ids (or cu_seqlens): with a window the first attended key is not "
              "the sequence start, so the key blocks cannot be anchored at position 0 without the positions")
    i = torch.arange(Q, device=device, dtype=torch.int64)
    lo = torch.zeros(B, Q, dtype=torch.int64, device=device)
    hi = torch.full((B, Q), K, dtype=torch.int64, device=device)
    anchor = None
    if is_causal:
        hi = torch.minimum(hi, (i + 1).expand(B, Q))
    if attn_mask is not None:
        if attn_mask.device != torch.device(device):
            _fail(f"attn_mask is on {attn_mask.device} but query is on {device}")
        m_lo, m_hi = _mask_intervals(attn_mask, B, Hq, Q, K)
        lo, hi = torch.maximum(lo, m_lo), torch.minimum(hi, m_hi)
    if cu_seqlens is not None:
        if B != 1 or Q != K:
            _fail(f"cu_seqlens describes one packed row with Q == K; got B={B}, Q={Q}, K={K}")
        if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2 or cu_seqlens.dtype not in (torch.int32, torch.int64):
            _fail("cu_seqlens must be a 1-D int32 tensor [0, end_0, end_1, ...] with a leading 0")
        cu = cu_seqlens.to(device=device, dtype=torch.int64)
        if int(cu[0]) != 0 or int(cu[-1]) != Q or bool((cu[1:] < cu[:-1]).any()):
            _fail(f"cu_seqlens must start at 0, be non-decreasing and end at the packed length {Q}; "
                  f"got {cu_seqlens.tolist()}")
        doc_start = cu[torch.searchsorted(cu, i, right=True) - 1].expand(B, Q)
        lo, hi = torch.maximum(lo, doc_start), torch.minimum(hi, (i + 1).expand(B, Q))
        anchor = doc_start
    if sliding_window is not None:
        if int(sliding_window) < 1:
            _fail(f"sliding_window must be >= 1, got {sliding_window}")
        lo = torch.maximum(lo, hi - int(sliding_window))
    if position_ids is not None:
        pos = position_ids.to(device=device, dtype=torch.int64)
        if pos.dim() == 1:
            pos = pos[None]
        if pos.dim() != 2 or pos.shape[-1] != Q or pos.shape[0] not in (1, B):
            _fail(f"position_ids must have shape (B, Q) = {(B, Q)} or (Q,), got {tuple(position_ids.shape)}")
        anchor = hi - 1 - pos.expand(B, Q)
    if anchor is None:
        anchor = lo
    empty = lo >= hi
    zero = torch.zeros_like(lo)
    lo, hi, anchor = torch.where(empty, zero, lo), torch.where(empty, zero, hi), torch.where(empty, zero, anchor)
    return torch.stack([anchor, lo, hi], dim=-1).to(torch.int32).contiguous()


def scaled_dot_product_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                 attn_mask: Optional[torch.Tensor] = None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: Optional[float] = None, enable_gqa: bool = False, *,
                                 position_ids: Optional[torch.Tensor] = None, cu_seqlens: Optional[torch.Tensor] = None,
                                 sliding_window: Optional[int] = None,
                                 softcap: Optional[float] = None) -> torch.Tensor:
    """Batch-, padding-, packing- and chunking-invariant `F.scaled_dot_product_attention`.

    query (B, Hq, Q, D) or (Hq, Q, D); key (.., Hk, K, D); value (.., Hk, K, Dv); float32/bfloat16/float16, one
    dtype, CPU or CUDA. Returns (.., Hq, Q, Dv) in the query's dtype. Every query row must attend one
    contiguous interval of keys (bool mask, or a float mask of 0/-inf, broadcastable to (B, Hq, Q, K), the same
    for every head); a row that attends no key gives zeros (SDPA gives NaN). GQA (Hq a multiple of Hk) needs
    `enable_gqa=True`, as in SDPA; K/V are not expanded.

    Invariance arguments (REDUCTION_ORDER.md §6, CONTRACT.md L2–L4): `position_ids` (B, Q) anchors each row's
    key blocks at its sequence's position 0 (needed with padding + sliding windows, and for decode with a
    rolling cache); `cu_seqlens` (int32 [0, e0, e1, ...]) packs documents in one row (B == 1, Q == K,
    document-causal); `sliding_window` W keeps the last W keys of each row (requires position_ids); `softcap`
    c applies s = c * tanh(s / c) to the scaled scores (Gemma 2).
    """
    if dropout_p != 0.0:
        _fail(f"dropout_p must be 0 (dropout is random, detops is deterministic), got {dropout_p}")
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, torch.Tensor):
            _fail(f"{name} must be a tensor")
    if not (query.dim() == key.dim() == value.dim() and query.dim() in (3, 4)):
        _fail(f"query, key and value must all be 4-D (B, H, L, D) or all 3-D (H, L, D); got shapes "
              f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
    if query.dtype != key.dtype or query.dtype != value.dtype:
        _fail(f"query, key and value must have one dtype, got {query.dtype}, {key.dtype}, {value.dtype}")
    unbatched = query.dim() == 3
    if unbatched:
        query, key, value = query[None], key[None], value[None]
        if position_ids is not None and position_ids.dim() == 1:
            position_ids = position_ids[None]
    B, Hq, Q, D = query.shape
    Hk, K = key.shape[1], key.shape[2]
    if key.shape[0] != B or value.shape[0] != B:
        _fail(f"batch sizes differ: query {B}, key {key.shape[0]}, value {value.shape[0]}")
    if Hq != Hk:
        if not enable_gqa:
            _fail(f"query has {Hq} heads but key/value have {Hk}; pass enable_gqa=True for grouped-query attention")
        if Hk == 0 or Hq % Hk != 0:
            _fail(f"query heads ({Hq}) must be a multiple of key/value heads ({Hk})")
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    cap = 0.0 if softcap is None else float(softcap)
    if softcap is not None and not cap > 0.0:
        _fail(f"softcap must be > 0 (or None), got {softcap}")
    rows = attention_rows(B, Hq, Q, K, query.device, attn_mask=attn_mask, is_causal=is_causal,
                          position_ids=position_ids, cu_seqlens=cu_seqlens, sliding_window=sliding_window)
    out = ops.attention(query, key, value, rows, scale, cap)
    return out[0] if unbatched else out


@torch.library.register_fake("detops::attention")
def _attention_fake(q, k, v, rows, scale, softcap):
    return q.new_empty((q.shape[0], q.shape[1], q.shape[2], v.shape[3]))
