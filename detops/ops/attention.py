"""scaled_dot_product_attention: docs/REDUCTION_ORDER.md §6.

The kernel (`torch.ops.detops.attention`) takes, per query row, a descriptor `(anchor, lo, hi)`: the row attends
keys `lo <= j < hi`, and its key blocks/chunks are measured from `anchor`, the key index of the row's sequence
position 0. This module turns SDPA's arguments (boolean/additive masks, `is_causal`) and the packing/position
information Hugging Face has (`position_ids`, `cu_seqlens`, `sliding_window`) into that descriptor, and refuses
masks whose rows cannot be put in one key order (holes are ordered by rank: rank_order).

Backward: on CUDA bf16 / fp16 with D == Dv in {64, 128} the tensor-core kernels of §10b
(csrc/ops/attention/attention_backward_kernels.cu), blocks of 64 counted from each document's first token;
everywhere else §10 rule 3: each document is gathered into its own block, every index counted from its first
token, and dq / dk / dv are computed there in fp32 from detops matmuls and row sums. Either way a document's
gradients depend on that document alone.
"""
import math
from typing import Optional

import torch

from .._lib import constants_table, ops
from .gradients import autocast_off, TOKEN_ALIGN, per_element, refuse_double_backward, row_dot

__all__ = ["scaled_dot_product_attention", "attention_rows", "row_descriptors", "mask_rows", "rank_order",
           "gather_keys"]


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


def mask_rows(attn_mask: torch.Tensor, B: int, Hq: int, Q: int, K: int) -> torch.Tensor:
    """A mask broadcastable to (B, Hq, Q, K) (bool, or float of 0 / -inf) as a (B, Q, K) bool tensor of attended
    keys; raises if it differs across heads."""
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
    if m.shape[1] > 1 and not bool((m == m[:, :1]).all()):
        _fail("attn_mask differs across heads; detops supports one key order per query row for all heads")
    return m[:, 0].expand(B, Q, K)


def _intervals(m: torch.Tensor):
    """(lo, hi, count) int64 (B, Q) of a (B, Q, K) bool mask: first attended key, one past the last, how many.
    A row is one interval iff hi - lo == count (or count == 0). No host synchronisation."""
    m8 = m.to(torch.uint8)
    count = m8.sum(-1, dtype=torch.int64)
    if m.shape[-1] == 0:
        return count, count, count
    lo = m8.argmax(-1)                             # first attended key (argmax returns the first maximum)
    hi = m.shape[-1] - m8.flip(-1).argmax(-1)      # one past the last attended key
    has = count > 0
    zero = torch.zeros_like(lo)
    return torch.where(has, lo, zero), torch.where(has, hi, zero), count


def rank_order(m: torch.Tensor):
    """Masks with holes (REDUCTION_ORDER.md §6, "keys by rank"): rows whose attended keys are not one interval.

    m: (B, Q, K) bool. Returns (m, None) if every row is one interval. Otherwise each batch entry's keys are
    ordered by their rank among its valid keys (the keys any row of the entry attends): `order` (B, Kc) lists
    the valid keys in ascending order, and the returned (B, Q, Kc) mask gives each row the interval of its keys'
    ranks. Gathering K/V by `order` (gather_keys) then puts the same valid keys in the same order at the same
    ranks, so they give the same bits wherever the holes are. A row must attend the entry's valid keys within
    one interval (a padding mask with holes, combined with causality or a window); anything else has no rank
    order and is refused. Host synchronisations: one check and one length."""
    lo, hi, count = _intervals(m)
    holes = (count > 0) & (hi - lo != count)
    if not bool(holes.any()):
        return m, None
    B, Q, K = m.shape
    valid = m.any(dim=1)                                                   # (B, K): the entry's valid keys
    k = torch.arange(K, device=m.device)
    span = (k >= lo[..., None]) & (k < hi[..., None])                      # (B, Q, K)
    bad = (m != (valid[:, None] & span)).any(-1)
    if bool(bad.any()):
        b, i = (int(x) for x in bad.nonzero()[0])
        _fail(f"mask pattern cannot be ordered: row {i} of batch {b} attends keys that are neither one contiguous "
              f"interval nor the batch entry's valid keys within one interval (detops orders keys by their rank "
              f"among a batch entry's valid keys; a row may only cut that order to an interval)")
    valid64 = valid.to(torch.int64)
    before = valid64.cumsum(-1) - valid64                                  # valid keys before each key
    lo_c = before.gather(1, lo)
    hi_c = lo_c + count
    Kc = int(valid64.sum(-1).max())
    order = torch.sort((~valid).to(torch.uint8), dim=-1, stable=True).indices[:, :Kc]   # valid keys first
    r = torch.arange(Kc, device=m.device)
    return (r >= lo_c[..., None]) & (r < hi_c[..., None]), order


def gather_keys(t: torch.Tensor, order: Optional[torch.Tensor]) -> torch.Tensor:
    """K or V (B, Hk, K, D) with its keys in `order` (B, Kc) (rank_order); unchanged for order None."""
    if order is None:
        return t
    B, Hk, _, D = t.shape
    return t.gather(2, order[:, None, :, None].expand(B, Hk, order.shape[1], D))


def row_descriptors(B: int, Q: int, K: int, device, mask: Optional[torch.Tensor] = None, is_causal: bool = False,
                    position_ids: Optional[torch.Tensor] = None, cu_seqlens: Optional[torch.Tensor] = None,
                    sliding_window: Optional[int] = None, clip_to_anchor: bool = False) -> torch.Tensor:
    """THE attention row rule (REDUCTION_ORDER.md §6): the (B, Q, 3) int32 descriptor [anchor, lo, hi] of each
    query row. Free of host synchronisations (usable in compiled graphs and CUDA-graph capture): value checks
    are `torch._assert_async`; callers that want readable errors validate first (`attention_rows`).

    Intervals intersect: all keys [0, K); `is_causal`: [0, i+1) (torch's top-left alignment); `mask` (B, Q, K)
    bool, each row one interval (see rank_order); `cu_seqlens` (B == 1, Q == K): [doc_start, i+1);
    `sliding_window` W: [hi - W, hi). Anchor (the key index of the row's position 0): `hi - 1 - position_ids`
    when `position_ids` (B, Q) is given, else the document start with `cu_seqlens`, else `lo`.
    `clip_to_anchor`: attend nothing before the anchor (packed documents whose mask does not separate them:
    Hugging Face passes no per-document mask when a KV cache exists)."""
    i = torch.arange(Q, device=device, dtype=torch.int64)
    lo = torch.zeros(B, Q, dtype=torch.int64, device=device)
    hi = torch.full((B, Q), K, dtype=torch.int64, device=device)
    anchor = None
    if is_causal:
        hi = torch.minimum(hi, (i + 1).expand(B, Q))
    if mask is not None:
        m_lo, m_hi, count = _intervals(mask)
        torch._assert_async(((count == 0) | (m_hi - m_lo == count)).all(),
                            "detops attention: a mask row is not one contiguous interval of keys")
        lo, hi = torch.maximum(lo, m_lo), torch.minimum(hi, m_hi)
    if cu_seqlens is not None:
        cu = cu_seqlens.to(device=device, dtype=torch.int64)
        torch._assert_async((cu[0] == 0) & (cu[-1] == Q) & (cu[1:] >= cu[:-1]).all(),
                            "detops attention: cu_seqlens must start at 0, be non-decreasing and end at Q")
        doc_start = cu[torch.searchsorted(cu, i, right=True) - 1].expand(B, Q)
        lo, hi = torch.maximum(lo, doc_start), torch.minimum(hi, (i + 1).expand(B, Q))
        anchor = doc_start
    if sliding_window is not None:
        lo = torch.maximum(lo, hi - int(sliding_window))
    if position_ids is not None:
        anchor = hi - 1 - position_ids.to(device=device, dtype=torch.int64).expand(B, Q)
        if clip_to_anchor:
            lo = torch.maximum(lo, anchor)
    if anchor is None:
        anchor = lo
    empty = lo >= hi
    zero = torch.zeros_like(lo)
    return torch.stack([torch.where(empty, zero, anchor), torch.where(empty, zero, lo),
                        torch.where(empty, zero, hi)], dim=-1).to(torch.int32).contiguous()


def _check_mask_arguments(attn_mask, is_causal, device) -> None:
    if attn_mask is None:
        return
    if is_causal:
        _fail("pass either attn_mask or is_causal=True, not both (as torch's SDPA)")
    if attn_mask.device != torch.device(device):
        _fail(f"attn_mask is on {attn_mask.device} but query is on {device}")


def attention_rows(B: int, Hq: int, Q: int, K: int, device, attn_mask=None, is_causal=False, position_ids=None,
                   cu_seqlens=None, sliding_window=None) -> torch.Tensor:
    """`row_descriptors` for SDPA-style arguments, with every argument checked and a readable error (host
    synchronisations). A mask whose rows are not intervals is refused here: `scaled_dot_product_attention`
    orders such keys by rank first (rank_order), which needs the keys themselves."""
    _check_mask_arguments(attn_mask, is_causal, device)
    if sliding_window is not None and position_ids is None and cu_seqlens is None:
        _fail("sliding_window needs position_ids (or cu_seqlens): with a window the first attended key is not "
              "the sequence start, so the key blocks cannot be anchored at position 0 without the positions")
    if sliding_window is not None and int(sliding_window) < 1:
        _fail(f"sliding_window must be >= 1, got {sliding_window}")
    m = None
    if attn_mask is not None:
        m = mask_rows(attn_mask, B, Hq, Q, K)
        lo, hi, count = _intervals(m)
        bad = (count > 0) & (hi - lo != count)
        if bool(bad.any()):
            b, i = (int(x) for x in bad.nonzero()[0])
            _fail(f"mask pattern cannot be anchored: row {i} of batch {b} is not one contiguous interval of keys "
                  f"(it attends {int(count[b, i])} keys between {int(lo[b, i])} and {int(hi[b, i])}); pass the "
                  "keys to scaled_dot_product_attention, which orders such keys by rank")
    if cu_seqlens is not None:
        if B != 1 or Q != K:
            _fail(f"cu_seqlens describes one packed row with Q == K; got B={B}, Q={Q}, K={K}")
        if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2 or cu_seqlens.dtype not in (torch.int32, torch.int64):
            _fail("cu_seqlens must be a 1-D int32 tensor [0, end_0, end_1, ...] with a leading 0")
        cu = cu_seqlens.to(torch.int64)
        if int(cu[0]) != 0 or int(cu[-1]) != Q or bool((cu[1:] < cu[:-1]).any()):
            _fail(f"cu_seqlens must start at 0, be non-decreasing and end at the packed length {Q}; "
                  f"got {cu_seqlens.tolist()}")
    pos = None
    if position_ids is not None:
        pos = position_ids if position_ids.dim() == 2 else position_ids[None]
        if pos.dim() != 2 or pos.shape[-1] != Q or pos.shape[0] not in (1, B):
            _fail(f"position_ids must have shape (B, Q) = {(B, Q)} or (Q,), got {tuple(position_ids.shape)}")
    return row_descriptors(B, Q, K, device, mask=m, is_causal=is_causal, position_ids=pos, cu_seqlens=cu_seqlens,
                           sliding_window=sliding_window)


def scaled_dot_product_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                 attn_mask: Optional[torch.Tensor] = None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: Optional[float] = None, enable_gqa: bool = False, *,
                                 position_ids: Optional[torch.Tensor] = None, cu_seqlens: Optional[torch.Tensor] = None,
                                 sliding_window: Optional[int] = None,
                                 softcap: Optional[float] = None,
                                 documents: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Batch-, padding-, packing- and chunking-invariant `F.scaled_dot_product_attention`.

    query (B, Hq, Q, D) or (Hq, Q, D); key (.., Hk, K, D); value (.., Hk, K, Dv); float32/bfloat16/float16, one
    dtype, CPU or CUDA. Returns (.., Hq, Q, Dv) in the query's dtype. attn_mask: bool, or float of 0/-inf,
    broadcastable to (B, Hq, Q, K), the same for every head. Each row attends one interval of keys, or a batch
    entry's valid keys within one interval (a padding mask with holes: keys are then ordered by their rank
    among the valid keys, rank_order); a row that attends no key gives zeros (SDPA gives NaN). GQA (Hq a
    multiple of Hk) needs `enable_gqa=True`, as in SDPA; K/V are not expanded.

    Invariance arguments (docs/REDUCTION_ORDER.md §6, docs/CONTRACT.md L2–L4): `position_ids` (B, Q) anchors
    each row's key blocks at its sequence's position 0 (needed with padding + sliding windows, and for decode with a
    rolling cache); `cu_seqlens` (int32 [0, e0, e1, ...]) packs documents in one row (B == 1, Q == K,
    document-causal); `sliding_window` W keeps the last W keys of each row (requires position_ids); `softcap`
    c applies s = c * tanh(s / c) to the scaled scores (Gemma 2).

    Gradients (REDUCTION_ORDER.md §10): `documents` (B, Q) segment ids (-1 = pad) say which tokens form each
    sequence; every query may attend only keys of its own document (Q == K, no KV prefix). None: each batch row
    is one document starting at index 0.
    """
    if dropout_p != 0.0:
        _fail(f"dropout_p must be 0 (dropout is random, detops is deterministic), got {dropout_p}")
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, torch.Tensor):
            _fail(f"{name} must be a tensor")
    if not (query.dim() == key.dim() == value.dim() and query.dim() in (3, 4)):
        _fail(f"query, key and value must all be 4-D (B, H, L, D) or all 3-D (H, L, D); got shapes "
              f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
    # inside torch.autocast the op's autocast rule casts the three to one dtype (ops/autocast.py), as F.sdpa's
    if (query.dtype != key.dtype or query.dtype != value.dtype) and not torch.is_autocast_enabled(query.device.type):
        _fail(f"query, key and value must have one dtype, got {query.dtype}, {key.dtype}, {value.dtype}")
    unbatched = query.dim() == 3
    if unbatched:
        query, key, value = query[None], key[None], value[None]
        if position_ids is not None and position_ids.dim() == 1:
            position_ids = position_ids[None]
        if documents is not None and documents.dim() == 1:
            documents = documents[None]
    B, Hq, Q, D = query.shape
    Hk, K = key.shape[1], key.shape[2]
    if key.shape[0] != B or value.shape[0] != B:
        _fail(f"batch sizes differ: query {B}, key {key.shape[0]}, value {value.shape[0]}")
    if Hq != Hk:
        if not enable_gqa:
            _fail(f"query has {Hq} heads but key/value have {Hk}; pass enable_gqa=True for grouped-query attention")
        if Hk == 0 or Hq % Hk != 0:
            _fail(f"query heads ({Hq}) must be a multiple of key/value heads ({Hk})")
    if D == 0:
        _fail("the head dim (query.shape[-1]) is 0: the default scale 1/sqrt(D) is undefined and no score exists")
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    cap = 0.0 if softcap is None else float(softcap)
    if softcap is not None and not cap > 0.0:
        _fail(f"softcap must be > 0 (or None), got {softcap}")
    if attn_mask is not None:
        _check_mask_arguments(attn_mask, is_causal, query.device)
        attn_mask, order = rank_order(mask_rows(attn_mask, B, Hq, Q, K))
        key, value = gather_keys(key, order), gather_keys(value, order)
        K = key.shape[2]
    rows = attention_rows(B, Hq, Q, K, query.device, attn_mask=attn_mask, is_causal=is_causal,
                          position_ids=position_ids, cu_seqlens=cu_seqlens, sliding_window=sliding_window)
    out = ops.attention(query, key, value, rows, scale, cap, documents)
    return out[0] if unbatched else out


@torch.library.register_fake("detops::attention")
def _attention_fake(q, k, v, rows, scale, softcap, documents=None):
    return q.new_empty((q.shape[0], q.shape[1], q.shape[2], v.shape[3]))


# Backward (REDUCTION_ORDER.md §10 rule 3).

def _backward_fail(msg: str):
    raise ValueError(f"detops.scaled_dot_product_attention (backward): {msg}")


def _document_blocks(documents, rows, B: int, Q: int):
    """The documents' tokens: (index, doc, pos, counts, lo, hi) with `index` the flat (b * Q + i) indices of the
    documents' tokens in document order, `doc` / `pos` each token's document ordinal and position in it, `counts`
    the documents' lengths, and lo / hi each token's keys in document coordinates."""
    device = rows.device
    if documents is None:
        flat = torch.arange(B, device=device).repeat_interleave(Q)
    else:
        flat = documents.reshape(-1).to(device=device, dtype=torch.int64)
        if bool((flat < -1).any()):
            _backward_fail("documents ids must be >= 0 (a document) or -1 (a pad)")
    idx = (flat >= 0).nonzero()[:, 0]
    ids, perm = torch.sort(flat[idx], stable=True)
    index = idx[perm]
    same = ids[1:] == ids[:-1]
    if bool((same & (index[1:] - index[:-1] != 1)).any()) or bool((same & (index[1:] // Q != index[:-1] // Q)).any()):
        _backward_fail("each document's tokens must be contiguous within one batch row")
    _, counts = torch.unique_consecutive(ids, return_counts=True)
    n_docs = counts.numel()
    first = torch.cumsum(counts, 0) - counts
    pos = torch.arange(index.numel(), device=device) - torch.repeat_interleave(first, counts)
    doc = torch.repeat_interleave(torch.arange(n_docs, device=device), counts)
    start = (index - pos) % Q                                   # key index of the document's first token
    length = torch.repeat_interleave(counts, counts)
    r = rows.reshape(-1, 3).to(torch.int64)[index]
    anchor, lo, hi = r[:, 0], r[:, 1], r[:, 2]
    attends = lo < hi
    bad = attends & ((anchor != start) | (lo < start) | (hi > start + length))
    if bool(bad.any()):
        t = int(index[bad.nonzero()[0, 0]])
        _backward_fail(f"query {t % Q} of batch {t // Q} attends keys outside its document or is anchored elsewhere "
                       f"(its sequence must start at its document's first token): pass `documents` (segment ids, "
                       f"-1 for pads) that match the mask / positions; a query may attend only its own document")
    lo = torch.where(attends, lo - start, 0)
    hi = torch.where(attends, hi - start, 0)
    return index, doc, pos, counts, lo, hi


BLOCK_BUDGET_BYTES = 1 << 29   # fp32 scores of one group of documents in the backward (memory only, never bits)


def block_length(n: int) -> int:
    """A document's block length in the backward: n rounded up to a multiple of TOKEN_ALIGN and of an eighth of
    the power of two below n, so that documents of similar lengths share a length (few groups) while a block is
    at most ~1/8 longer than its document. Any multiple of TOKEN_ALIGN >= n gives the same bits (§10 rule 3)."""
    step = TOKEN_ALIGN
    while step * 16 <= n:
        step *= 2
    return max(step, -(-n // step) * step)


def _block_groups(counts: torch.Tensor, heads: int):
    """Documents grouped for the backward: [(documents, L)], documents of one block length L together, at most
    BLOCK_BUDGET_BYTES of fp32 scores (documents x heads x L x L) a group where one document fits (a longer
    document is a group of its own). Grouping is for memory and speed only: no bit depends on it."""
    by_L = {}
    for d, n in enumerate(counts.tolist()):
        by_L.setdefault(block_length(n), []).append(d)
    groups = []
    for L, docs in sorted(by_L.items()):
        per = max(1, BLOCK_BUDGET_BYTES // (heads * L * L * 4))
        groups += [(docs[i:i + per], L) for i in range(0, len(docs), per)]
    return groups


def _to_blocks(t, index, slot, n_docs, L):
    """(B, H, Q, D) -> (n_docs, H, L, D) fp32 per-document blocks, zeros past each document's end."""
    B, H, Q, D = t.shape
    tokens = t.permute(0, 2, 1, 3).reshape(B * Q, H, D)
    out = tokens.new_zeros(n_docs * L, H, D, dtype=torch.float32)
    out[slot] = tokens[index].float()
    return out.view(n_docs, L, H, D).permute(0, 2, 1, 3)


def _from_blocks(blocks, index, slot, out):
    """(n_docs, H, L, D) blocks -> rows `index` of out (B * Q, H, D)."""
    n_docs, H, L, D = blocks.shape
    out[index] = blocks.permute(0, 2, 1, 3).reshape(n_docs * L, H, D)[slot]


def _bmm_blocks(a, b):
    """(n, H, M, K) @ (n, H, K, N) with detops.bmm (fp32, §5)."""
    n, H, M, K = a.shape
    return ops.bmm(a.reshape(n * H, M, K), b.reshape(n * H, K, b.shape[-1])).view(n, H, M, b.shape[-1])


def _by_key_group(t, Hk, G):
    """(n, Hq, Lq, Lk) per query head -> (n, Hk, Lk, G * Lq): for each key, the group's heads in ascending order,
    each head's queries from position 0 (one chain, each head starting a block: L is a multiple of 32)."""
    n, _, Lq, Lk = t.shape
    return t.view(n, Hk, G, Lq, Lk).permute(0, 1, 4, 2, 3).reshape(n, Hk, Lk, G * Lq)


def _attention_setup(ctx, inputs, output):
    q, k, v, rows, scale, softcap, *rest = inputs
    ctx.save_for_backward(q, k, v, rows, output)
    ctx.scale, ctx.softcap, ctx.documents = scale, softcap, rest[0] if rest else None


def _score_tanh(x):
    """tanh by the forward kernels' formula (REDUCTION_ORDER.md §7 det_tanh, §10 rule 3): sign(x) ·
    (1 - 2 / (exp(2|x|) + 1)) with §10's exp: the forward's function (not its bits), which keeps the backward's
    probabilities close to the forward's (with torch's tanh the gradient's error against float64 was up to 1.7x
    stock's on CPU; with this formula at most 1.04x)."""
    t = 1.0 - 2.0 / (per_element("exp", 2.0 * x.abs()) + 1.0)
    return torch.where(x < 0, -t, torch.where(torch.isnan(x), x, t))


def _attention_block_grads(ctx, q, k, v, out, g, index, slot, n, L, lo, hi, G, need):
    """§10 rule 3 on n documents' blocks of L positions: (dq, dk, dv) blocks (None where not needed)."""
    Hk = k.shape[1]
    blocks = lambda t: _to_blocks(t, index, slot, n, L)  # noqa: E731
    qb, kb, vb, ob, gb = blocks(q), blocks(k), blocks(v), blocks(out), blocks(g)
    kx, vx = kb.repeat_interleave(G, dim=1), vb.repeat_interleave(G, dim=1)
    lo_b = lo.new_zeros(n * L).index_put_((slot,), lo).view(n, 1, L, 1)
    hi_b = hi.new_zeros(n * L).index_put_((slot,), hi).view(n, 1, L, 1)
    t = torch.arange(L, device=q.device)
    attended = (t >= lo_b) & (t < hi_b)                                 # (n, 1, Lq, Lk)
    s = _bmm_blocks(qb, kx.transpose(2, 3)) * ctx.scale
    if ctx.softcap > 0:
        th = _score_tanh(s / ctx.softcap)
        s = ctx.softcap * th
    s = s.masked_fill(~attended, float("-inf"))
    m = s.amax(-1, keepdim=True)
    e = per_element("exp", s - torch.where(m == float("-inf"), 0.0, m))
    l = row_dot(e)[..., None]
    p = torch.where(l > 0, e / l, 0.0)
    dp = _bmm_blocks(gb, vx.transpose(2, 3))
    ds = p * (dp - row_dot(gb, ob)[..., None])
    if ctx.softcap > 0:
        ds = ds * (1.0 - th * th)
    # exact zeros off the attended keys (finite inputs: already ±0, which add nothing; a non-finite value
    # elsewhere would make 0·inf = NaN there, so the positions past a document would matter)
    ds = torch.where(attended, ds, 0.0)
    dq = _bmm_blocks(ds, kx) * ctx.scale if need[0] else None
    dk = dv = None
    if need[1]:
        qg = qb.reshape(n, Hk, G * L, qb.shape[-1])
        dk = _bmm_blocks(_by_key_group(ds, Hk, G), qg) * ctx.scale
    if need[2]:
        gg = gb.reshape(n, Hk, G * L, gb.shape[-1])
        dv = _bmm_blocks(_by_key_group(p, Hk, G), gg)
    return dq, dk, dv


TC_BLOCK = constants_table()["kAttnBwdBlock"]   # §10b's query / key blocks (§6's key block)


def _tc_backward_applies(q, v) -> bool:
    """§10b runs on CUDA for bf16 / fp16 with D == Dv in {64, 128}, the forward's unpadded tensor-core dims; other
    head dims take rule 3 (dtype and head dim only, never the shapes of the batch)."""
    return (q.is_cuda and q.dtype in (torch.bfloat16, torch.float16) and q.shape[-1] == v.shape[-1]
            and q.shape[-1] in (64, 128))


class _BackwardPlan:
    """A layout's document blocks (`_document_blocks`) and, once asked, the tensor-core kernels' tables. Kept on
    the rows tensor: a patched model hands every layer the same rows and documents, so the host work (sorts,
    checks, host synchronisations) runs once per layout, not once per layer."""

    def __init__(self, blocks):
        self.blocks = blocks
        self.tc = None

    def tc_tables(self, B: int, Q: int):
        """(docs, work, span, keys) of csrc/ops/attention/attention_backward.h: blocks of TC_BLOCK queries / keys
        counted from each document's first token."""
        if self.tc is None:
            index, doc, pos, counts, lo, hi = self.blocks
            dev = index.device
            first = torch.cumsum(counts, 0) - counts
            tok0 = index[first]
            n_blk = (counts + TC_BLOCK - 1) // TC_BLOCK
            blk0 = torch.cumsum(n_blk, 0) - n_blk
            n_blocks = int(n_blk.sum())
            docs = torch.stack([tok0 // Q, tok0 % Q, counts, blk0], 1)
            work_doc = torch.repeat_interleave(torch.arange(counts.numel(), device=dev), n_blk, output_size=n_blocks)
            work = torch.stack([work_doc, torch.arange(n_blocks, device=dev) - blk0[work_doc]], 1)
            keys = torch.zeros(B * Q, 2, dtype=torch.int64, device=dev)
            keys[index] = torch.stack([lo, hi], 1)
            # each block's union of attended keys: its queries' [lo, hi) on a (block, position) grid, min / max
            slot = (blk0[doc] + pos // TC_BLOCK) * TC_BLOCK + pos % TC_BLOCK
            attends = lo < hi
            grid_lo = torch.full((n_blocks * TC_BLOCK,), 2 ** 31 - 1, dtype=torch.int64, device=dev)
            grid_hi = torch.zeros(n_blocks * TC_BLOCK, dtype=torch.int64, device=dev)
            grid_lo[slot] = torch.where(attends, lo, 2 ** 31 - 1)
            grid_hi[slot] = torch.where(attends, hi, 0)
            span_hi = grid_hi.view(n_blocks, TC_BLOCK).amax(1)
            span_lo = torch.where(span_hi > 0, grid_lo.view(n_blocks, TC_BLOCK).amin(1), 0)
            self.tc = tuple(t.to(torch.int32).contiguous() for t in (docs, work, torch.stack([span_lo, span_hi], 1),
                                                                     keys))
        return self.tc


def _backward_plan(documents, rows, B: int, Q: int) -> _BackwardPlan:
    """The plan of (documents, rows), kept on rows while neither tensor is changed in place."""
    key = (rows._version, None if documents is None else documents._version, B, Q)
    cached = getattr(rows, "_detops_backward_plan", None)
    if cached is not None and cached[0] is documents and cached[1] == key:
        return cached[2]
    plan = _BackwardPlan(_document_blocks(documents, rows, B, Q))
    rows._detops_backward_plan = (documents, key, plan)
    return plan


def _attention_backward_tc(ctx, q, k, v, out, g, plan: _BackwardPlan):
    """§10b: the two tensor-core kernels on the plan's tables; δ = Σ dO·O per query by row_dot (§10 rule 2)."""
    B, _, Q, _ = q.shape
    docs, work, span, keys = plan.tc_tables(B, Q)
    delta = row_dot(g, out).contiguous()
    return ops.attention_backward_tc(q, k, v, g, delta, docs, work, span, keys, float(ctx.scale),
                                     float(ctx.softcap))


def _attention_backward(ctx, g):
    refuse_double_backward("scaled_dot_product_attention")
    q, k, v, rows, out = ctx.saved_tensors
    if q.shape[2] != k.shape[2]:
        _backward_fail(f"the backward needs self-attention over the same tokens (as many keys as queries), got "
                       f"{q.shape[2]} queries and {k.shape[2]} keys: a KV cache prefix, cross-attention or a padding "
                       f"mask with holes (keys reordered by rank) have no backward")
    B, Hq, Q, _ = q.shape
    Hk = k.shape[1]
    G = Hq // Hk
    plan = _backward_plan(ctx.documents, rows, B, Q)
    index, doc, pos, counts, lo, hi = plan.blocks
    need = ctx.needs_input_grad[:3]
    if _tc_backward_applies(q, v):
        grads = _attention_backward_tc(ctx, q, k, v, out, g, plan)
        return tuple(t if n else None for t, n in zip(grads, need)) + (None, None, None, None)
    outs = [t.new_zeros(B * Q, t.shape[1], t.shape[3], dtype=torch.float32) if n else None
            for t, n in zip((q, k, v), need)]
    local = torch.full((counts.numel(),), -1, dtype=torch.int64, device=q.device)
    for docs, L in _block_groups(counts, Hq):
        members = torch.tensor(docs, device=q.device)
        local[members] = torch.arange(len(docs), device=q.device)
        sel = (local[doc] >= 0).nonzero()[:, 0]
        slot = local[doc[sel]] * L + pos[sel]
        grads = _attention_block_grads(ctx, q, k, v, out, g, index[sel], slot, len(docs), L, lo[sel], hi[sel], G,
                                       need)
        for buf, grad in zip(outs, grads):
            if buf is not None:
                _from_blocks(grad, index[sel], slot, buf)
        local[members] = -1
    dq, dk, dv = (None if buf is None else buf.view(B, Q, t.shape[1], t.shape[3]).permute(0, 2, 1, 3).to(t.dtype)
                  for buf, t in zip(outs, (q, k, v)))
    return dq, dk, dv, None, None, None, None


torch.library.register_autograd("detops::attention", autocast_off(_attention_backward), setup_context=_attention_setup)
