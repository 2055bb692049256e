"""Tiny random-weight models of every supported family (tests, demo, verify; no hub weights needed).

2 layers, hidden 64, MLP 88 (not a multiple of the SIMD width: CPU elementwise tails are exercised, §8), 4 query
heads / 2 kv heads (head dim 16), vocab 128. Norm weights are randomised
(transformers initialises them to ones, or zeros for Gemma, which would hide weight-mode bugs); sliding
windows are small so the window masks and rolling caches are exercised by short sequences.
"""
import torch

FAMILIES = ("llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2", "gemma3")

_COMMON = dict(vocab_size=128, hidden_size=64, intermediate_size=88, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, head_dim=16, max_position_embeddings=512, rms_norm_eps=1e-6,
               tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)
SLIDING_WINDOW = 24


def tiny_config(family: str, **overrides):
    """The transformers config of the tiny `family` model (`overrides` replace sizes, e.g. a wider model)."""
    import transformers as tf
    c = dict(_COMMON, **overrides)
    if family == "llama":
        return tf.LlamaConfig(**c)
    if family == "qwen2":
        # bias on q/k/v; the second layer uses a sliding window (max_window_layers = 1).
        return tf.Qwen2Config(**c, use_sliding_window=True, sliding_window=SLIDING_WINDOW, max_window_layers=1)
    if family == "qwen3":
        return tf.Qwen3Config(**c)  # q_norm / k_norm over head_dim
    if family == "mistral":
        return tf.MistralConfig(**c, sliding_window=SLIDING_WINDOW)
    if family == "gemma":
        return tf.GemmaConfig(**c, hidden_activation="gelu_pytorch_tanh")
    if family == "gemma2":
        # alternating sliding/full layers, attention logit softcap and final logit softcap.
        return tf.Gemma2Config(**c, sliding_window=SLIDING_WINDOW, attn_logit_softcapping=50.0,
                               final_logit_softcapping=30.0, query_pre_attn_scalar=16)
    if family == "gemma3":
        return tf.Gemma3TextConfig(**c, sliding_window=SLIDING_WINDOW, query_pre_attn_scalar=16,
                                   layer_types=["sliding_attention", "full_attention"])
    raise ValueError(f"unknown family {family!r}; one of {FAMILIES}")


def stock_attention(family: str) -> str:
    """The stock attention implementation the tiny `family` model is built with: "sdpa" where the installed
    transformers supports it for that family, else "eager" (transformers 5.25 refuses sdpa for Gemma2)."""
    import transformers as tf
    config = tiny_config(family)
    cls = tf.AutoModelForCausalLM._model_mapping[type(config)]
    return "sdpa" if getattr(cls, "_supports_sdpa", False) else "eager"


def tiny_model(family: str, dtype=torch.float32, device="cpu", seed: int = 0, attn_implementation=None,
               **overrides):
    """A tiny random `family` causal LM in eval mode, norm weights randomised (seeded, identical on every
    device: weights are drawn on the CPU). `overrides`: config sizes to change (see tiny_config).
    attn_implementation: the stock one of `stock_attention(family)` unless given."""
    import transformers as tf
    config = tiny_config(family, **overrides)
    if attn_implementation is None:
        attn_implementation = stock_attention(family)
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation,
                                                dtype=torch.float32)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, module in model.named_modules():
            if type(module).__name__.endswith("RMSNorm"):
                w = module.weight
                # around the family's neutral weight (1 for x*w, 0 for x*(1+w))
                base = 0.0 if type(module).__name__.startswith("Gemma") else 1.0
                w.copy_(base + 0.5 * torch.randn(w.shape, generator=g))
        for p in model.parameters():  # make sure nothing is trivially zero / constant
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * (p.shape[-1] ** -0.5))
    return model.to(device=device, dtype=dtype).eval()


def cache_argument(model) -> str:
    """The name of the KV-cache keyword of `model.forward` in the installed transformers: `cache` (5.25 and
    newer deprecate `past_key_values`), else `past_key_values`. Fails loudly if neither exists."""
    import inspect
    params = inspect.signature(model.forward).parameters
    for name in ("cache", "past_key_values"):
        if name in params:
            return name
    raise RuntimeError(f"{type(model).__name__}.forward takes neither `cache` nor `past_key_values`: transformers "
                       "changed its cache argument; detops' fixtures need updating")


def pad_batch(seqs, side: str = "left"):
    """(input_ids, attention_mask, position_ids) of token lists padded to one length on `side` ("left" as
    generate() pads, or "right"); pad id 0; positions count each row's real tokens from 0 (pads get 0)."""
    L = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), L, dtype=torch.long)
    mask = torch.zeros(len(seqs), L, dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(L - len(s), L) if side == "left" else slice(0, len(s))
        ids[i, sl], mask[i, sl] = torch.tensor(s), 1
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


TRAIN_LAYOUTS = ("right", "left", "packed", "packed_flash", "rows")


def train_batch(docs, layout: str, row_length: int = None):
    """A causal-LM training batch of token lists `docs` (in order) in `layout`, as the usual collators make it:
    "right" / "left": one document per row, padded (pad id 0), attention_mask, position_ids; "packed": one row,
    position ids restarting at 0 per document, no mask (DataCollatorWithFlattening); "rows": documents packed in
    order into rows of `row_length` tokens (default: the longest document + 3), position ids restarting, a mask
    marking each row's tail pads; "packed_flash": "packed" plus the flash-attention keywords
    DataCollatorWithFlattening(return_flash_attn_kwargs=True) adds (cu_seq_lens_q/k, max_length_q/k). labels: the tokens, -100 on pads and on each document's first token (no
    document is scored on the one before it). Returns the keyword arguments of `model(**batch)`."""
    if layout in ("right", "left"):
        ids, mask, pos = pad_batch(docs, layout)
        labels = ids.masked_fill(mask == 0, -100)
        first = (mask.cumsum(-1) == 1) & (mask == 1)
        return dict(input_ids=ids, attention_mask=mask, position_ids=pos, labels=labels.masked_fill(first, -100))
    if layout in ("packed", "packed_flash"):
        rows = [list(range(len(docs)))]
        L = sum(len(d) for d in docs)
    elif layout == "rows":
        L = row_length or max(len(d) for d in docs) + 3
        rows, used = [[]], 0
        for i, d in enumerate(docs):
            if used + len(d) > L:
                rows.append([])
                used = 0
            rows[-1].append(i)
            used += len(d)
    else:
        raise ValueError(f"layout must be one of {TRAIN_LAYOUTS}, got {layout!r}")
    B = len(rows)
    ids = torch.zeros(B, L, dtype=torch.long)
    mask = torch.zeros(B, L, dtype=torch.long)
    pos = torch.zeros(B, L, dtype=torch.long)
    labels = torch.full((B, L), -100, dtype=torch.long)
    for b, members in enumerate(rows):
        p = 0
        for i in members:
            n = len(docs[i])
            ids[b, p:p + n] = torch.tensor(docs[i])
            mask[b, p:p + n] = 1
            pos[b, p:p + n] = torch.arange(n)
            labels[b, p + 1:p + n] = torch.tensor(docs[i][1:])
            p += n
    batch = dict(input_ids=ids, position_ids=pos, labels=labels)
    if layout == "rows":
        batch["attention_mask"] = mask
    if layout == "packed_flash":
        cu = torch.tensor([0] + [len(d) for d in docs], dtype=torch.int32).cumsum(0, dtype=torch.int32)
        longest = max(len(d) for d in docs)
        batch.update(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=longest, max_length_k=longest)
    return batch
