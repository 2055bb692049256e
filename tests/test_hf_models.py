"""Model-level invariance of patched Hugging Face models (CONTRACT.md L1–L4 at the logits), every family.

Tiny random models (detops.testing.models: 2 layers, hidden 64, 4/2 heads, vocab 128, randomised norm weights), fp32
and bf16, on every available device. Every promise is `torch.equal` on logits; negative controls show the
stock model (sdpa) failing the same checks where it does.
"""
import functools

import pytest
import torch
from hypothesis import given, settings, strategies as st

import detops
from detops.testing.models import FAMILIES, cache_argument, pad_batch, stock_attention, tiny_model
from detops.patching import patch

pytest.importorskip("transformers")

DTYPES = (torch.float32, torch.bfloat16)
S1, S2 = [3, 4, 5, 6, 7], [8, 9, 10]


@functools.lru_cache(maxsize=None)
def patched_model(family, dtype, device):
    model = tiny_model(family, dtype=dtype, device=device)
    model.generation_config.pad_token_id = 0
    patch(model, strict=True)
    return model


def stock_model(family, dtype, device, sizes=None):
    return _stock_model(family, dtype, device, tuple(sorted((sizes or {}).items())))


@functools.lru_cache(maxsize=None)
def _stock_model(family, dtype, device, sizes):
    return tiny_model(family, dtype=dtype, device=device, **dict(sizes))


# Negative controls also use wider models: with hidden 64 and 512 the H100's stock kernels (cuBLAS, sdpa) gave
# the same bf16 bits for every layout we tried, as GEMM libraries switch tiles by M only at LLM widths. The
# LLM-width model (one Llama-8B-shaped layer) runs on CUDA only: it is too slow for the 2-core CPU box, where the
# small models already fail.
WIDE = dict(hidden_size=512, intermediate_size=1400, num_attention_heads=8, num_key_value_heads=2, head_dim=64)
LLM_WIDTH = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=1, num_attention_heads=32,
                 num_key_value_heads=8, head_dim=128)


def control_models(device):
    models = [(f, {}) for f in FAMILIES] + [("llama", WIDE), ("gemma2", WIDE)]
    return models + [("llama", LLM_WIDTH)] if torch.device(device).type == "cuda" else models


def logits(model, device, **kw):
    kw = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    with torch.no_grad():
        return model(**kw).logits


def seed_batch():
    """The issue's seed experiment: rows s1+s2 (right-padded), s1+s2, s2+s1 (left-padded, no position
    reset), s2+s1 (left-padded, positions reset at s1)."""
    ids = torch.tensor([S1 + S2, S1 + S2, S2 + S1, S2 + S1])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0], [1] * 8, [0, 0, 0, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1, 1, 1]])
    pos = torch.tensor([list(range(8))] * 3 + [[0, 1, 2, 0, 1, 2, 3, 4]])
    return ids, mask, pos


def seed_checks(model, device):
    ids, mask, pos = seed_batch()
    batch = logits(model, device, input_ids=ids, attention_mask=mask, position_ids=pos)
    alone = logits(model, device, input_ids=torch.tensor([S1]))[0]
    return [torch.equal(batch[0, 0:5], alone), torch.equal(batch[1, 0:5], alone), torch.equal(batch[3, 3:8], alone)]


def rows_of(seqs, side, i):
    L = max(len(s) for s in seqs)
    return slice(L - len(seqs[i]), L) if side == "left" else slice(0, len(seqs[i]))


def tokens(seed, n):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 128, (n,), generator=g).tolist()


# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("family", FAMILIES)
def test_seed_experiment(family, dtype, device):
    model = tiny_model(family, dtype=dtype, device=device)
    stock_before = logits(model, device, input_ids=torch.tensor([S1 + S2]))
    handle = patch(model, strict=True)
    try:
        assert seed_checks(model, device) == [True, True, True]
        # L0: repeated runs
        ids, mask, pos = seed_batch()
        a = logits(model, device, input_ids=ids, attention_mask=mask, position_ids=pos)
        b = logits(model, device, input_ids=ids, attention_mask=mask, position_ids=pos)
        assert torch.equal(a, b) and a.abs().sum() > 0
        assert not detops.is_enabled()  # the aten mode is on only during the forward
    finally:
        handle.undo()
    # undo restores stock behaviour: the stock bits again
    assert torch.equal(logits(model, device, input_ids=torch.tensor([S1 + S2])), stock_before)
    assert model.config._attn_implementation == stock_attention(family)


def stock_checks(model, device):
    """The seed experiment's checks, plus s1 alone vs s1 in the first row of a batch of 64 such rows (512
    tokens: stock GEMMs pick other tiles by M)."""
    ids, mask, pos = seed_batch()
    big = logits(model, device, input_ids=ids.repeat(16, 1), attention_mask=mask.repeat(16, 1),
                 position_ids=pos.repeat(16, 1))
    alone = logits(model, device, input_ids=torch.tensor([S1]))[0]
    return seed_checks(model, device) + [torch.equal(big[0, 0:5], alone)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_seed_experiment_stock_control(dtype, device):
    # Negative control: the stock model's logits change with the batch layout (CPU: the matmul and sdpa vary
    # with M and padding, the SIMD tails of SiLU/GELU/cos/sin with the position; GPU: cuBLAS and sdpa kernels
    # chosen by shape). Across the models at least one check must fail.
    if device == "cpu" and dtype == torch.bfloat16:
        # Measured: with torch 2.13 (CPU) and transformers 5.25 every stock bf16 model here passes these four
        # checks (fp32 fails them; gemma2, which failed in bf16 with sdpa, now runs eager attention).
        pytest.skip("CPU bf16: stock happens to agree on the seed layouts (fp32 is the CPU control)")
    results = {(f, sizes.get("hidden_size", 64)): stock_checks(stock_model(f, dtype, device, sizes), device)
               for f, sizes in control_models(device)}
    assert any(not all(r) for r in results.values()), results


# ---------------------------------------------------------------------------------------------------------
@given(family=st.sampled_from(FAMILIES), dtype=st.sampled_from(DTYPES), side=st.sampled_from(["left", "right"]),
       n=st.integers(1, 5), data=st.data(), seed=st.integers(0, 2**31 - 1))
def test_sequence_alone_vs_in_batch(family, dtype, side, n, data, seed, device):
    """L1/L2: a sequence's logits alone == in a padded batch of drawn size, at a drawn row, with drawn
    batch-mates (lengths up to 90: the 64-key attention blocks are crossed)."""
    lens = data.draw(st.lists(st.integers(1, 90), min_size=n, max_size=n), label="lengths")
    j = data.draw(st.integers(0, n - 1), label="row")
    seqs = [tokens(seed + i, L) for i, L in enumerate(lens)]
    model = patched_model(family, dtype, device)
    ids, mask, pos = pad_batch(seqs, side)
    batch = logits(model, device, input_ids=ids, attention_mask=mask, position_ids=pos)
    alone = logits(model, device, input_ids=torch.tensor([seqs[j]]))[0]
    assert torch.equal(batch[j, rows_of(seqs, side, j)], alone)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_padding_stock_control(dtype, device):
    # Negative control for L2: stock logits of a left-padded sequence (same position ids) differ from alone.
    seqs = [tokens(1, 20), tokens(2, 70)] + [tokens(3 + i, 64) for i in range(14)]
    diffs = []
    for family, sizes in control_models(device):
        model = stock_model(family, dtype, device, sizes)
        ids, mask, pos = pad_batch(seqs, "left")
        batch = logits(model, device, input_ids=ids, attention_mask=mask, position_ids=pos)
        alone = logits(model, device, input_ids=torch.tensor([seqs[0]]))[0]
        diffs.append(not torch.equal(batch[0, rows_of(seqs, "left", 0)], alone))
    assert any(diffs)


# ---------------------------------------------------------------------------------------------------------
def flattened(docs):
    """What DataCollatorWithFlattening produces: input_ids (1, N), position ids restarting at 0, cu_seq_lens."""
    from transformers import DataCollatorWithFlattening
    collator = DataCollatorWithFlattening(return_flash_attn_kwargs=True, return_position_ids=True)
    return collator([{"input_ids": d} for d in docs])


@given(family=st.sampled_from(FAMILIES), dtype=st.sampled_from(DTYPES),
       lens=st.lists(st.integers(1, 80), min_size=1, max_size=4), seed=st.integers(0, 2**31 - 1),
       variant=st.sampled_from(["cache", "no_cache", "cu_seqlens"]))
def test_packed_vs_alone(family, dtype, lens, seed, variant, device):
    """L3: documents packed in one row (DataCollatorWithFlattening) == each alone. 'cache': the default eval
    forward (use_cache=True): transformers passes no document mask, detops finds the documents from the
    position-id resets; 'no_cache': transformers' block mask; 'cu_seqlens': flash-attention kwargs."""
    docs = [tokens(seed + i, L) for i, L in enumerate(lens)]
    batch = flattened(docs)
    kw = dict(input_ids=batch["input_ids"], position_ids=batch["position_ids"])
    if variant == "no_cache":
        kw["use_cache"] = False
    elif variant == "cu_seqlens":
        kw.update(use_cache=False, cu_seq_lens_q=batch["cu_seq_lens_q"], cu_seq_lens_k=batch["cu_seq_lens_k"],
                  max_length_q=batch["max_length_q"], max_length_k=batch["max_length_k"])
    model = patched_model(family, dtype, device)
    packed = logits(model, device, **kw)[0]
    offset = 0
    for d in docs:
        alone = logits(model, device, input_ids=torch.tensor([d]))[0]
        assert torch.equal(packed[offset:offset + len(d)], alone)
        offset += len(d)


def test_packed_stock_control(device):
    # Negative control for L3: the stock eval forward of a packed row (use_cache default) attends across
    # documents: the second document's logits are far from its logits alone, not just a few bits.
    docs = [tokens(5, 12), tokens(6, 9)]
    batch = flattened(docs)
    model = stock_model("llama", torch.float32, device)
    packed = logits(model, device, input_ids=batch["input_ids"], position_ids=batch["position_ids"])[0]
    alone = logits(model, device, input_ids=torch.tensor([docs[1]]))[0]
    assert (packed[12:] - alone).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------------------
@given(family=st.sampled_from(FAMILIES), dtype=st.sampled_from(DTYPES), T=st.integers(2, 72),
       chunks=st.lists(st.integers(1, 30), min_size=1, max_size=6), seed=st.integers(0, 2**31 - 1))
def test_full_vs_chunked_prefill_vs_decode(family, dtype, T, chunks, seed, device):
    """L4: logits of every position from one full forward == chunked prefill (drawn chunk sizes, then
    one token at a time) with a DynamicCache == token-by-token decode with a StaticCache. T up to 72 passes
    the tiny models' sliding window (24): rolling caches and negative anchors are exercised."""
    from transformers import DynamicCache, StaticCache
    model = patched_model(family, dtype, device)
    ids = torch.tensor([tokens(seed, T)], device=device)
    with torch.no_grad():
        full = model(ids).logits[0]
        cache, parts, t = DynamicCache(config=model.config), [], 0
        for c in chunks + [1] * T:
            if t >= T:
                break
            parts.append(model(ids[:, t:t + c], **{cache_argument(model): cache}, use_cache=True).logits[0])
            t += c
        chunked = torch.cat(parts)
        cache, steps = StaticCache(config=model.config, max_cache_len=80), []
        for t in range(T):
            steps.append(model(ids[:, t:t + 1], **{cache_argument(model): cache}, use_cache=True).logits[0, 0])
        decoded = torch.stack(steps)
    assert torch.equal(chunked, full)
    assert torch.equal(decoded, full)


@settings(max_examples=4)
@given(family=st.sampled_from(FAMILIES), dtype=st.sampled_from(DTYPES),
       cache=st.sampled_from(["dynamic", "static", "chunked_prefill"]), n=st.integers(2, 4), data=st.data(),
       seed=st.integers(0, 2**31 - 1))
def test_greedy_generation_across_batches(family, dtype, cache, n, data, seed, device):
    """generate() (greedy, left padding, as generate pads) gives the same tokens and the same logits at every
    step for a prompt alone and in a batch of drawn prompts; DynamicCache, StaticCache, chunked prefill."""
    lens = data.draw(st.lists(st.integers(1, 40), min_size=n, max_size=n), label="lengths")
    j = data.draw(st.integers(0, n - 1), label="row")
    prompts = [tokens(seed + i, L) for i, L in enumerate(lens)]
    # min_new_tokens: no early stop at EOS (the tiny vocabulary draws it often), so every step is compared
    kw = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False, output_logits=True,
              return_dict_in_generate=True)
    kw.update({"static": dict(cache_implementation="static"), "chunked_prefill": dict(prefill_chunk_size=5)}
              .get(cache, {}))
    model = patched_model(family, dtype, device)

    def gen(seqs):
        ids, mask, _ = pad_batch(seqs, "left")
        with torch.no_grad():
            return model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kw)

    alone, batch = gen([prompts[j]]), gen(prompts)
    assert torch.equal(alone.sequences[0, -8:], batch.sequences[j, -8:])
    assert torch.equal(torch.stack([s[0] for s in alone.logits]), torch.stack([s[j] for s in batch.logits]))


# ---------------------------------------------------------------------------------------------------------
def test_compiled_model(device):
    """torch.compile on a patched model: linears, norms and attention are opaque detops custom ops in the
    graph (fullgraph=True: no graph break), and the compiled model keeps the seed-experiment invariance.
    CPU CI uses the aot_eager backend (Inductor's CPU C++ build takes minutes); CUDA uses Inductor."""
    import torch._dynamo
    backend = "inductor" if device == "cuda" else "aot_eager"
    model = tiny_model("llama", dtype=torch.bfloat16, device=device)
    handle = patch(model, strict=True)
    try:
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        compiled = torch.compile(model, backend=backend, fullgraph=True)
        assert seed_checks(compiled, device) == [True, True, True]
        assert not torch._dynamo.utils.counters["graph_break"], dict(torch._dynamo.utils.counters["graph_break"])
        # packed documents inside the compiled graph: position-id resets (default cache) and cu_seq_lens
        docs = [tokens(11, 6), tokens(12, 9)]
        batch = flattened(docs)
        alone = logits(compiled, device, input_ids=torch.tensor([docs[1]]))[0]
        packed = logits(compiled, device, input_ids=batch["input_ids"], position_ids=batch["position_ids"])[0]
        packed_cu = logits(compiled, device, input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                           use_cache=False, cu_seq_lens_q=batch["cu_seq_lens_q"],
                           cu_seq_lens_k=batch["cu_seq_lens_k"])[0]
        assert torch.equal(packed[6:], alone) and torch.equal(packed_cu[6:], alone)
        if backend == "aot_eager":  # same kernels as eager, so the same bits
            ids, mask, pos = seed_batch()
            kw = dict(input_ids=ids, attention_mask=mask, position_ids=pos)
            assert torch.equal(logits(compiled, device, **kw), logits(model, device, **kw))
    finally:
        handle.undo()
        torch._dynamo.reset()


def test_generate_compiled_static_cache(device):
    """transformers compiles the decode step itself when generate() uses a StaticCache (on CUDA: Inductor,
    mode="reduce-overhead", i.e. CUDA graphs). Compiled, a prompt's tokens and per-step logits are the same
    alone and in a left-padded batch (gemma2: sliding-window layers with a rolling static cache, softcaps).
    CPU: forced with aot_eager, fullgraph=True, where the bits also equal eager's (same kernels); Inductor may
    round fused elementwise ops differently from eager, which is not promised."""
    import torch._dynamo
    from transformers import CompileConfig
    model = tiny_model("gemma2", dtype=torch.bfloat16, device=device)
    model.generation_config.pad_token_id = 0
    handle = patch(model, strict=True)
    prompts = [tokens(1, 4), tokens(2, 7), tokens(3, 6)]
    if device == "cuda":
        config = CompileConfig()  # transformers' default: inductor, reduce-overhead
    else:
        config = CompileConfig(backend="aot_eager", mode=None, fullgraph=True)
        config._compile_all_devices = True

    def gen(seqs, **extra):
        ids, mask, _ = pad_batch(seqs, "left")
        with torch.no_grad():
            return model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=30,
                                  min_new_tokens=30,
                                  do_sample=False, cache_implementation="static", output_logits=True,
                                  return_dict_in_generate=True, **extra)
    try:
        torch._dynamo.reset()
        batch = gen(prompts, compile_config=config)
        assert hasattr(model, "_compiled_call")  # the compiled decode path really ran
        alone = gen([prompts[1]], compile_config=config)
        assert torch.equal(alone.sequences[0, -30:], batch.sequences[1, -30:])
        assert all(torch.equal(a[0], b[1]) for a, b in zip(alone.logits, batch.logits))
        if device != "cuda":
            eager = gen(prompts, disable_compile=True)
            assert torch.equal(eager.sequences, batch.sequences)
            assert all(torch.equal(a, b) for a, b in zip(eager.logits, batch.logits))
    finally:
        handle.undo()
        torch._dynamo.reset()
