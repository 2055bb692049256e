"""The `detops` attention function for Hugging Face transformers (AttentionInterface), and its mask function.

transformers (>= 5.17) calls `fn(module, query (B,H,Q,D), key (B,Hk,K,D), value (B,Hk,K,Dv), attention_mask,
dropout=, scaling=, [sliding_window=], [softcap=], position_ids=, [cu_seq_lens_q/_k=, is_causal=], ...)` and
expects `(out (B,Q,H,Dv), weights or None)`. K/V arrive un-expanded (GQA); the kernel reads kv head h // groups.
Weights are computed (in detops' order, `attention_weights`) only when the caller asked for them
(`output_attentions=True`).

With the `sdpa_mask` contract (registered for "detops" in AttentionMaskInterface) the mask is None or a
(B,1,Q,K) bool tensor: None with Q > 1 means causal, top-left aligned (query i attends keys [0, i]); None with
Q == 1 means every key. Each query row becomes `(anchor, lo, hi)` (docs/REDUCTION_ORDER.md §6) through
`detops.ops.attention.row_descriptors`, the one row rule (a padding mask with holes first orders the keys by
rank, `rank_order`: eager mode only); the anchor is `last attended key - position_id`, the key index of the
row's position 0, so padding, packing, chunked prefill and a (rolling) KV cache leave the key blocks where
they are.

Packed documents: transformers builds a per-document mask only when there is no KV cache; an eval forward
creates a DynamicCache by default, so a packed row (position ids restarting at 0, `DataCollatorWithFlattening`)
arrives with mask None or a plain causal mask. A row's anchor is its document's first key, so clipping
`lo` to the anchor restores per-document attention whatever mask arrived.
"""
import torch

from .. import _lib
from ..ops.attention import gather_keys, rank_order, row_descriptors
from ..ops.matmul import bmm as _bmm
from ..ops.autocast import register_lower_precision
from ..ops.no_backward import refuse_backward
from ..ops.softmax import softmax as _softmax
from .training import documents_for

__all__ = ["detops_attention_forward", "build_rows", "attention_weights", "NAME"]

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
    """(rows (B, Q, 3) int32 [anchor, lo, hi], order) for one HF attention call, eager (host checks allowed).

    order is None, or (B, Kc) key indices when the mask has holes (keys ordered by rank: gather K/V by it)."""
    m, order = None, None
    if mask is not None:
        if mask.dim() != 4 or mask.shape[1] != 1 or mask.dtype != torch.bool or tuple(mask.shape[-2:]) != (Q, K):
            _fail(f"attention_mask must be None or a (B, 1, Q, K) bool tensor (the sdpa mask contract), got "
                  f"{tuple(mask.shape)} {mask.dtype}")
        m, order = rank_order(mask[:, 0].expand(B, Q, K))
        K = m.shape[-1]
    return row_descriptors(B, Q, K, device, mask=m, is_causal=_causal(mask, causal, Q), position_ids=position_ids,
                           cu_seqlens=cu_seqlens, sliding_window=sliding_window,
                           clip_to_anchor=position_ids is not None), order


def _causal(mask, causal, Q):
    # HF's contract for a missing mask: Q > 1 -> causal top-left (keys [0, i]); Q == 1 -> all keys. (With K > Q,
    # e.g. an empty StaticCache prefill, causal rows attend [0, i]: sdpa's crop to [0, Q).) A mask says it all.
    return mask is None and bool(causal) and Q > 1


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

    @staticmethod
    def cacheable(*tensors):
        # inference-mode tensors have no version counter, so a change in place could not be seen: not cached
        return not any(t is not None and t.is_inference() for t in tensors)

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
    """AttentionInterface function "detops": returns (out (B, Q, H, Dv), weights (B, H, Q, K) when the caller
    asked for them with output_attentions=True, else None)."""
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
        if _weights_requested():
            _fail("output_attentions=True is computed in eager mode only (not inside a torch.compile graph)")
        out = _compiled_attention(query, key, value, attention_mask, pos, cu, scale, cap,
                                  -1 if window is None else window, bool(causal))
    else:
        # keyed on the tensors transformers passes (the same objects for every layer), not on derived views
        built = None
        cacheable = _RowsMemo.cacheable(attention_mask, position_ids, cu)
        if cacheable:
            tensors = (_RowsMemo._sig(attention_mask), _RowsMemo._sig(position_ids), _RowsMemo._sig(cu))
            scalars = (B, H, Q, K, str(query.device), bool(causal), window)
            built = _memo.get(tensors, scalars)
        if built is None:
            built = build_rows(B, H, Q, K, query.device, attention_mask, causal, pos, cu, window)
            if cacheable:
                _memo.put(tensors, scalars, built)
        rows, order = built
        key, value = gather_keys(key, order), gather_keys(value, order)
        out = _lib.ops.attention(query, key, value, rows, scale, cap, _documents(query, key))
        if _weights_requested():
            return out.transpose(1, 2).contiguous(), attention_weights(query, key, rows, scale, cap, order, K)
    return out.transpose(1, 2).contiguous(), None


def _documents(query, key):
    """The batch's document layout for the backward (training.py), when the keys are the queries' own tokens."""
    if query.shape[2] != key.shape[2]:
        return None
    return documents_for(query.shape[0:1] + query.shape[2:3])


def _weights_requested() -> bool:
    """Whether the caller asked for attention weights (`output_attentions=True`). transformers records them from
    each attention module's second output while its output collector holds an "attentions" list; a test
    (tests/test_hf_usage.py::test_output_attentions) fails loudly if this internal moves."""
    from transformers.utils.output_capturing import _active_collector
    collected = _active_collector.get()
    return collected is not None and "attentions" in collected


def attention_weights(query, key, rows, scale, softcap, order=None, K=None):
    """The attention probabilities (B, H, Q, K) that `output_attentions=True` returns, in detops' order: scores by
    detops.bmm (§5), scaled, soft-capped, then detops.softmax (§4) in fp32 over exactly the row's keys
    [lo, hi) (gathered to the front: a softmax row's order depends on its length and on where its values sit,
    so rows of one length are normalised together and the result does not depend on padding or batch-mates),
    returned in the query's dtype as eager attention returns them. A row attending no key gets zeros. `order`
    (rank_order): `key` holds the keys in that order; the weights are scattered back to the K original keys.
    A slow path (one softmax call per distinct row length), for inspection."""
    B, H, Q, D = query.shape
    Hk, Kc = key.shape[1], key.shape[2]
    k = key.repeat_interleave(H // Hk, dim=1) if Hk != H else key
    scores = _bmm(query.reshape(B * H, Q, D), k.reshape(B * H, Kc, D).transpose(1, 2)).view(B, H, Q, Kc).float()
    scores = scores * scale
    if softcap:
        scores = softcap * torch.tanh(scores / softcap)
    lo, n = rows[..., 1].long(), (rows[..., 2] - rows[..., 1]).long()          # (B, Q)
    probs = scores.new_zeros(B, H, Q, Kc)
    for length in torch.unique(n[n > 0]).tolist():
        b, q = (n == length).nonzero(as_tuple=True)
        cols = lo[b, q][:, None] + torch.arange(length, device=query.device)   # (S, length)
        picked = scores[b, :, q].gather(-1, cols[:, None, :].expand(-1, H, length))
        probs[b, :, q] = probs[b, :, q].scatter(-1, cols[:, None, :].expand(-1, H, length), _softmax(picked, -1))
    probs = probs.to(query.dtype)
    if order is None:
        return probs
    full = probs.new_zeros(B, H, Q, K)
    return full.scatter_(-1, order[:, None, None, :].expand(B, H, Q, order.shape[1]), probs)


# torch.compile: inside a compiled graph the whole function is one opaque custom op (Dynamo neither breaks the
# graph on the eager builder's host-side mask check nor traces the rows arithmetic).
@torch.library.custom_op("detops_hf::attention", mutates_args=())
def _compiled_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                        position_ids: torch.Tensor | None, cu_seqlens: torch.Tensor | None, scale: float,
                        softcap: float, sliding_window: int, causal: bool) -> torch.Tensor:
    B, _, Q, _ = query.shape
    K = key.shape[2]
    m = None if mask is None else mask[:, 0].expand(B, Q, K)   # holes: refused (device assert), eager mode only
    rows = row_descriptors(B, Q, K, query.device, mask=m, is_causal=_causal(mask, causal, Q),
                           position_ids=position_ids, cu_seqlens=cu_seqlens,
                           sliding_window=None if sliding_window < 0 else sliding_window,
                           clip_to_anchor=position_ids is not None)
    return _lib.ops.attention(query, key, value, rows, scale, softcap)


refuse_backward("detops_hf::attention")
register_lower_precision("detops_hf::attention")   # as detops::attention under torch.autocast, also when compiled


@_compiled_attention.register_fake
def _(query, key, value, mask, position_ids, cu_seqlens, scale, softcap, sliding_window, causal):
    return query.new_empty((query.shape[0], query.shape[1], query.shape[2], value.shape[3]))
