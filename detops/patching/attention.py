"""The `detops` attention function for Hugging Face transformers (AttentionInterface), and its mask function.

transformers (>= 5.17) calls `fn(module, query (B,H,Q,D), key (B,Hk,K,D), value (B,Hk,K,Dv), attention_mask,
dropout=, scaling=, [sliding_window=], [softcap=], position_ids=, [cu_seq_lens_q/_k=, is_causal=], ...)` and
expects `(out (B,Q,H,Dv), None)`. K/V arrive un-expanded (GQA); the kernel reads kv head h // groups.

With the `sdpa_mask` contract (registered for "detops" in AttentionMaskInterface) the mask is None or a
(B,1,Q,K) bool tensor: None with Q > 1 means causal, top-left aligned (query i attends keys [0, i]); None with
Q == 1 means every key. Each query row becomes `(anchor, lo, hi)` (REDUCTION_ORDER.md §6) through
`detops.ops.attention.attention_rows`; the anchor is `last attended key - position_id`, the key index of the
row's position 0, so padding, packing, chunked prefill and a (rolling) KV cache leave the key blocks where
they are.

Packed documents: transformers builds a per-document mask only when there is no KV cache; an eval forward
creates a DynamicCache by default, so a packed row (position ids restarting at 0, `DataCollatorWithFlattening`)
arrives with mask None or a plain causal mask. A row's anchor is its document's first key, so clipping
`lo` to the anchor restores per-document attention whatever mask arrived.
"""
import torch

from .. import _lib
from ..ops.attention import attention_rows

__all__ = ["detops_attention_forward", "build_rows", "build_rows_sync_free", "NAME"]

NAME = "detops"  # a plain name: '/', ':', 'flash', 'sdpa' in it would trigger special paths in transformers


def _fail(msg):
    raise ValueError(f"detops attention (transformers): {msg}")


def _positions(position_ids, B, Q):
    if position_ids is None:
        return None
    if position_ids.dim() == 1:
        position_ids = position_ids[None]
    if position_ids.dim() != 2:
        _fail(f"position_ids must be (B, Q) or (1, Q), got shape {tuple(position_ids.shape)} (multi-axis "
              "position ids, e.g. mrope, are not supported)")
    if position_ids.shape[-1] != Q:
        _fail(f"position_ids cover {position_ids.shape[-1]} tokens but the query has {Q}")
    return position_ids.expand(B, Q) if position_ids.shape[0] == 1 else position_ids


def _cu_seqlens(cu_q, cu_k, B, Q, K):
    if cu_q is None and cu_k is None:
        return None
    cu = cu_q if cu_q is not None else cu_k
    if cu_q is not None and cu_k is not None and cu_q is not cu_k and not torch.compiler.is_compiling() \
            and not torch.equal(cu_q, cu_k):
        _fail("cu_seq_lens_q and cu_seq_lens_k differ (only packed self-attention without a cache is supported)")
    if B != 1 or Q != K:
        _fail(f"cu_seq_lens_* describe one packed row without a KV cache (B == 1, Q == K); got B={B}, Q={Q}, K={K}")
    return cu


def build_rows(B, H, Q, K, device, mask, causal, position_ids, cu_seqlens, sliding_window):
    """(B, Q, 3) int32 [anchor, lo, hi] for one HF attention call (see the module docstring)."""
    if mask is not None:
        if mask.dim() != 4:
            _fail(f"attention_mask must be None or 4-D (B, 1, Q, K) (the sdpa mask contract), got shape "
                  f"{tuple(mask.shape)}")
        is_causal = False
    else:
        # HF's contract for a missing mask: Q > 1 -> causal top-left (keys [0, i]); Q == 1 -> all keys.
        # (With K > Q, e.g. an empty StaticCache prefill, causal rows attend [0, i]: sdpa's crop to [0, Q).)
        is_causal = bool(causal) and Q > 1
    rows = attention_rows(B, H, Q, K, device, attn_mask=mask, is_causal=is_causal, position_ids=position_ids,
                          cu_seqlens=cu_seqlens, sliding_window=sliding_window)
    if position_ids is not None:
        # Packed documents under a cache / without a per-document mask: attend nothing before the row's
        # position 0 (its document start). A no-op wherever transformers already masked per document.
        anchor, lo, hi = rows.unbind(-1)
        lo = torch.maximum(lo, anchor)
        empty = lo >= hi
        zero = torch.zeros_like(lo)
        rows = torch.stack([torch.where(empty, zero, anchor), torch.where(empty, zero, lo),
                            torch.where(empty, zero, hi)], dim=-1).contiguous()
    return rows


class _RowsMemo:
    """The rows of the last few (mask, position_ids) pairs: transformers passes the same mask and position
    tensors to every layer of a forward, so the rows (and the mask check, a host sync) are built once per
    forward and per layer kind rather than once per layer. Entries hold the tensors themselves and compare by
    identity and version counter, so a reused or modified tensor is never mistaken for the old one."""

    def __init__(self, size=4):
        self.size = size
        self.entries = []

    @staticmethod
    def _sig(t):
        return None if t is None else (t, t._version)

    def get(self, key_tensors, key_scalars):
        for tensors, scalars, rows in self.entries:
            if scalars == key_scalars and all(
                    (a is None and b is None) or (a is not None and b is not None and a[0] is b[0] and a[1] == b[1])
                    for a, b in zip(tensors, key_tensors)):
                return rows
        return None

    def put(self, key_tensors, key_scalars, rows):
        self.entries.insert(0, (key_tensors, key_scalars, rows))
        del self.entries[self.size:]

    def clear(self):
        self.entries.clear()


_memo = _RowsMemo()


def detops_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                             sliding_window=None, softcap=None, position_ids=None, cu_seq_lens_q=None,
                             cu_seq_lens_k=None, is_causal=None, **kwargs):
    """AttentionInterface function "detops": returns (out (B, Q, H, Dv), None)."""
    if dropout:
        _fail(f"dropout must be 0 (got {dropout}); put the model in eval() mode")
    if kwargs.get("s_aux") is not None:
        _fail("attention sinks (s_aux, GPT-OSS) are not supported")
    if kwargs.get("position_bias") is not None:
        _fail("additive position biases are not supported")
    B, H, Q, D = query.shape
    K = key.shape[2]
    if key.shape[1] != H and H % key.shape[1] != 0:
        _fail(f"query heads ({H}) must be a multiple of key/value heads ({key.shape[1]})")
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    pos = _positions(position_ids, B, Q)
    cu = _cu_seqlens(cu_seq_lens_q, cu_seq_lens_k, B, Q, K)
    window = None if sliding_window is None or sliding_window <= 0 else int(sliding_window)
    scale = float(D ** -0.5 if scaling is None else scaling)
    cap = 0.0 if softcap is None else float(softcap)
    if softcap is not None and not cap > 0.0:
        _fail(f"softcap must be > 0 or None, got {softcap}")

    if torch.compiler.is_compiling():
        out = _compiled_attention(query, key, value, attention_mask, pos, cu, scale, cap,
                                  -1 if window is None else window, bool(causal))
    else:
        # keyed on the tensors transformers passes (the same objects for every layer), not on derived views
        tensors = (_RowsMemo._sig(attention_mask), _RowsMemo._sig(position_ids), _RowsMemo._sig(cu))
        scalars = (B, H, Q, K, str(query.device), bool(causal), window)
        rows = _memo.get(tensors, scalars)
        if rows is None:
            rows = build_rows(B, H, Q, K, query.device, attention_mask, causal, pos, cu, window)
            _memo.put(tensors, scalars, rows)
        out = _lib.ops.attention(query, key, value, rows, scale, cap)
    return out.transpose(1, 2).contiguous(), None


def build_rows_sync_free(B, Q, K, device, mask, causal, position_ids, cu_seqlens, sliding_window):
    """The same rows as `build_rows` (a test asserts it), without a host synchronisation, for compiled graphs and
    CUDA graph capture (transformers compiles the decode step with mode="reduce-overhead" when generate() uses
    a StaticCache on CUDA). Value checks become device-side asserts (`torch._assert_async`): a mask row that
    is not one interval still fails loudly, not silently."""
    i = torch.arange(Q, device=device, dtype=torch.int64)
    lo = torch.zeros(B, Q, dtype=torch.int64, device=device)
    hi = torch.full((B, Q), K, dtype=torch.int64, device=device)
    anchor = None
    if mask is None and causal and Q > 1:
        hi = torch.minimum(hi, (i + 1).expand(B, Q))
    if mask is not None:
        if mask.dim() != 4 or mask.shape[1] != 1 or mask.dtype != torch.bool or mask.shape[-2:] != (Q, K):
            _fail(f"attention_mask must be None or a (B, 1, Q, K) bool tensor (the sdpa mask contract), got "
                  f"{tuple(mask.shape)} {mask.dtype}")
        m8 = mask[:, 0].expand(B, Q, K).to(torch.uint8)
        count = m8.sum(-1, dtype=torch.int64)
        m_lo = m8.argmax(-1)
        m_hi = K - m8.flip(-1).argmax(-1)
        has = count > 0
        torch._assert_async((~has | (m_hi - m_lo == count)).all(),
                            "detops attention: a mask row is not one contiguous interval of keys")
        zero = torch.zeros_like(m_lo)
        lo, hi = torch.maximum(lo, torch.where(has, m_lo, zero)), torch.minimum(hi, torch.where(has, m_hi, zero))
    if cu_seqlens is not None:
        cu = cu_seqlens.to(device=device, dtype=torch.int64)
        torch._assert_async((cu[0] == 0) & (cu[-1] == Q) & (cu[1:] >= cu[:-1]).all(),
                            "detops attention: cu_seq_lens must start at 0, be non-decreasing and end at Q")
        doc_start = cu[torch.searchsorted(cu, i, right=True) - 1].expand(B, Q)
        lo, hi = torch.maximum(lo, doc_start), torch.minimum(hi, (i + 1).expand(B, Q))
        anchor = doc_start
    if sliding_window is not None:
        lo = torch.maximum(lo, hi - int(sliding_window))
    if position_ids is not None:
        anchor = hi - 1 - position_ids.to(device=device, dtype=torch.int64)
        lo = torch.maximum(lo, anchor)  # packed documents: see build_rows
    if anchor is None:
        anchor = lo
    empty = lo >= hi
    zero = torch.zeros_like(lo)
    return torch.stack([torch.where(empty, zero, anchor), torch.where(empty, zero, lo),
                        torch.where(empty, zero, hi)], dim=-1).to(torch.int32).contiguous()


# torch.compile: inside a compiled graph the whole function is one opaque custom op (Dynamo neither breaks the
# graph on the eager builder's host-side mask check nor traces the rows arithmetic).
@torch.library.custom_op("detops_hf::attention", mutates_args=())
def _compiled_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                        position_ids: torch.Tensor | None, cu_seqlens: torch.Tensor | None, scale: float,
                        softcap: float, sliding_window: int, causal: bool) -> torch.Tensor:
    B, _, Q, _ = query.shape
    rows = build_rows_sync_free(B, Q, key.shape[2], query.device, mask, causal, position_ids, cu_seqlens,
                                None if sliding_window < 0 else sliding_window)
    return _lib.ops.attention(query, key, value, rows, scale, softcap)


@_compiled_attention.register_fake
def _(query, key, value, mask, position_ids, cu_seqlens, scale, softcap, sliding_window, causal):
    return query.new_empty((query.shape[0], query.shape[1], query.shape[2], value.shape[3]))
