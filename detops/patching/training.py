"""Training through a patched model: the document layout of each forward, and HF's loss through detops.

The gradients that sum over tokens (REDUCTION_ORDER.md §10) need the batch's document layout. A patched model
derives it from what it already receives — `position_ids` restarting at 0 start a document (packing, as
`DataCollatorWithFlattening` makes it), a 2-D `attention_mask` marks pads — and every patched module passes it
to its detops op as `documents`. So the same documents in the same order give the same loss, gradients and
weights whether they come right-padded, left-padded, packed in one row or packed into several rows.

- `layout_pre_hook` / `layout_post_hook` (on the top-level model) hold the layout in a context variable for the
  forward; `documents_for(shape)` is what the patched modules call.
- Gradient checkpointing replays a layer during the backward, outside the forward: each layer's checkpoint
  function is wrapped so that the replay sees the layout (and the aten mode) its forward saw.
- `causal_lm_loss` is transformers' `ForCausalLMLoss` with `detops.cross_entropy`.
"""
import contextvars
import functools
from typing import Optional

import torch
import torch.nn.functional as F

from .. import aten_mode
from ..ops import cross_entropy, documents_from_position_ids

__all__ = ["documents_for", "layout_pre_hook", "layout_post_hook", "causal_lm_loss", "layout_of", "trainer_loss",
           "trainer_compute_loss"]

_documents: contextvars.ContextVar = contextvars.ContextVar("detops_documents", default=None)


def layout_of(input_shape, attention_mask=None, position_ids=None) -> Optional[torch.Tensor]:
    """(B, L) segment ids of a forward's tokens (-1 = pad), or None when every row is one whole document.
    A document starts where the position ids restart at 0 (and at each row's start); a 2-D attention mask's
    zeros are pads."""
    mask = attention_mask if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2 else None
    if position_ids is None and mask is None:
        return None
    B, L = input_shape
    if mask is not None and tuple(mask.shape) != (B, L):
        # a cache's mask covers the past too: its last L columns are this forward's tokens; any other shape
        # says nothing this function can read
        mask = mask[:, -L:] if mask.shape[0] == B and mask.shape[1] >= L else None
    if position_ids is None:
        if mask is None:
            return None
        position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
    pos = position_ids if position_ids.dim() == 2 else position_ids[None]
    if pos.shape[-1] != L or pos.shape[0] not in (1, B):
        return None
    pos = pos.expand(B, L)
    return documents_from_position_ids(pos, mask)


def documents_for(token_shape, tensor: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
    """The layout's segment ids shaped for an op whose token dims are `token_shape` ((B, L), (B, L, heads...),
    (B, heads..., L), or (B, k) for the last k tokens as `logits_to_keep` gives the lm_head), or None outside a
    layout-carrying forward or without grad. `tensor` (the op's input) settles (B, X, X) with X == L == heads:
    the sequence dim is the one with the larger stride (transformers' q/k norms see (B, L, H, D) views, or
    (B, H, L, D) views transposed from them)."""
    if torch.compiler.is_compiling():   # training inside torch.compile is not supported (CONTRACT.md)
        return None
    docs = _documents.get()
    if docs is None or not torch.is_grad_enabled():
        return None
    token_shape = tuple(token_shape)
    B, L = docs.shape
    if token_shape == (B, L):
        return docs
    # Derived ids are kept on the layout's tensor (one per shape and reading), so that every layer gets the same
    # ids object and its token plan is computed once (detops/ops/gradients.py).
    views = docs.__dict__.setdefault("_detops_views", {})
    ambiguous = len(token_shape) >= 3 and token_shape[:2] == (B, L) and token_shape[-1] == L
    key = (token_shape, bool(tensor.stride(1) >= tensor.stride(len(token_shape) - 1))
           if ambiguous and tensor is not None else None)
    if key not in views:
        views[key] = _derived_ids(docs, token_shape, tensor)
    return views[key]


def _derived_ids(docs: torch.Tensor, token_shape: tuple, tensor: Optional[torch.Tensor]) -> torch.Tensor:
    B, L = docs.shape
    if len(token_shape) == 2 and token_shape[0] == B and token_shape[1] < L:   # logits_to_keep = k
        return docs[:, L - token_shape[1]:]
    heads_last = token_shape[:2] == (B, L)
    heads_first = len(token_shape) >= 3 and token_shape[0] == B and token_shape[-1] == L
    if heads_last and heads_first and tensor is not None:
        heads_last = tensor.stride(1) >= tensor.stride(len(token_shape) - 1)
    if heads_last:     # (B, L, heads...): a token's heads stay in its document
        return docs.view(B, L, *(1,) * (len(token_shape) - 2)).expand(token_shape)
    if heads_first:
        # (B, heads..., L), e.g. a q/k norm after the heads were moved forward: each (document, head) is its own
        # document (a document must be contiguous in the flattened order), numbered document-major.
        M = 1
        for s in token_shape[1:-1]:
            M *= s
        m = torch.arange(M, device=docs.device).view(1, M, 1)
        ids = torch.where(docs[:, None, :] >= 0, docs[:, None, :] * M + m, -1)
        return ids.view(token_shape)
    raise ValueError(f"detops.patch: a module's input has token dims {token_shape}, which the batch's document "
                     f"layout {tuple(docs.shape)} (batch, sequence) does not describe; its gradient would not know "
                     f"the documents")


def _wrap_checkpointing(model) -> None:
    """Make every layer's checkpoint replay run under the layout of the forward that recorded it."""
    for module in model.modules():
        fn = module.__dict__.get("_gradient_checkpointing_func")
        if fn is None or getattr(fn, "_detops_layout", False):
            continue

        @functools.wraps(fn)
        def checkpoint(run, *args, _inner=fn, **kwargs):
            docs, routed = _documents.get(), aten_mode.is_enabled()

            def replayable(*a, **k):
                # The replay runs during the backward, after the forward's aten mode was turned off: turn it on
                # again, or the replayed SiLU / RoPE would take torch's kernels and differ from the forward.
                token = _documents.set(docs)
                if routed:
                    aten_mode.enable()
                try:
                    return run(*a, **k)
                finally:
                    if routed:
                        aten_mode.disable()
                    _documents.reset(token)
            return _inner(replayable, *args, **kwargs)
        checkpoint._detops_layout = True
        module._gradient_checkpointing_func = checkpoint


def layout_pre_hook(module, args, kwargs):
    """Top-level forward pre-hook (with kwargs, after the position-id hook): the forward's layout, when grad is on.
    Inside torch.compile both hooks do nothing (a compiled graph cannot hold the context variable)."""
    if torch.compiler.is_compiling():
        return
    docs = None
    if torch.is_grad_enabled():
        if kwargs.get("fused_lm_head"):
            raise RuntimeError(
                "detops: fused_lm_head=True (TRL's fused LM head, the default loss of its trainers) computes the LM "
                "head, the log-probabilities and their gradient with TRL's own chunked kernel, outside detops: its "
                "lm_head gradient sums tokens in chunks of the flattened batch, so padding and packing change it. "
                "For SFTTrainer, give it detops' loss: subclass it with `compute_loss = "
                "detops.trainer_compute_loss` (or pass compute_loss_func=detops.trainer_loss). TRL's RL and "
                "preference trainers (GRPO, RLOO, DPO, KTO) build their losses from the fused head and are not "
                "supported.")
        ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        ref = ids if isinstance(ids, torch.Tensor) else embeds
        if isinstance(ref, torch.Tensor) and ref.dim() >= 2:
            # (input_ids, attention_mask, position_ids, ...): the causal LMs' positional order
            docs = layout_of(tuple(ref.shape[:2]), kwargs.get("attention_mask", args[1] if len(args) > 1 else None),
                             kwargs.get("position_ids", args[2] if len(args) > 2 else None))
            if docs is None:   # each row one document: explicit, so that a checkpoint replay sees the same
                docs = torch.arange(ref.shape[0], device=ref.device)[:, None].expand(ref.shape[:2])
        _wrap_checkpointing(module)
    module._detops_layout_tokens = getattr(module, "_detops_layout_tokens", []) + [_documents.set(docs)]


def layout_post_hook(module, args, kwargs, output):
    if torch.compiler.is_compiling():
        return
    tokens = getattr(module, "_detops_layout_tokens", [])
    if tokens:
        _documents.reset(tokens.pop())


def causal_lm_loss(logits, labels, vocab_size: int, num_items_in_batch=None, ignore_index: int = -100,
                   shift_labels=None, **kwargs):
    """transformers' `ForCausalLMLoss` with detops' cross-entropy (REDUCTION_ORDER.md §10 rule 4): the loss sum
    runs over the supervised tokens in order, so padding and packing do not change its bits."""
    logits = logits.float()
    if shift_labels is None:
        labels = F.pad(labels, (0, 1), value=ignore_index)
        shift_labels = labels[..., 1:]
    logits = logits.reshape(-1, vocab_size)
    shift_labels = shift_labels.reshape(-1).to(logits.device)
    if num_items_in_batch is None:
        return cross_entropy(logits, shift_labels, ignore_index, "mean")
    loss = cross_entropy(logits, shift_labels, ignore_index, "sum")
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(loss.device)
    return loss / num_items_in_batch


def trainer_compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
    """`Trainer.compute_loss` for a subclass of transformers' `Trainer` or TRL's `SFTTrainer`
    (`compute_loss = detops.trainer_compute_loss`): the model's logits, then `trainer_loss`. Unlike TRL's own
    compute_loss, no fused LM head and no extra metrics forward."""
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    outputs = model(**inputs)
    loss = trainer_loss(outputs, labels, num_items_in_batch)
    return (loss, outputs) if return_outputs else loss


def trainer_loss(outputs, labels, num_items_in_batch=None):
    """`compute_loss_func` for transformers' `Trainer` and TRL's `SFTTrainer`: the causal-LM loss of the model's
    logits through detops' cross-entropy (the same function the patch gives the model as `loss_function`). TRL's
    default fused LM head bypasses detops; with this loss it runs only without gradients, for its metrics."""
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
    return causal_lm_loss(logits, labels, logits.shape[-1], num_items_in_batch=num_items_in_batch)
