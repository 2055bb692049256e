"""Training through a patched Hugging Face model (docs/CONTRACT.md "Training promises", T4 and T5).

T4 padded == packed: the same documents in the same order give bitwise-identical loss, every parameter's
gradient and the weights after AdamW steps, right-padded, left-padded, packed in one row (position ids restarting,
as DataCollatorWithFlattening) and packed into several rows (with a mask for the tail pads); with and without
gradient checkpointing; `num_items_in_batch` too. Stock transformers is the negative control.
T5 trainer == sampler: the log-probabilities of a generated completion computed in a training forward (train
mode, packed with other documents) equal the ones of the generation (KV cache, greedy and sampled).
"""
import pytest
import torch

import detops
from detops.testing.models import FAMILIES, TRAIN_LAYOUTS, tiny_model, train_batch

# Document lengths around the token alignment of REDUCTION_ORDER.md §10 (32) and the tiny models' window (24).
DOC_LENGTHS = (5, 33, 1, 24, 31, 2)


def _docs(lengths=DOC_LENGTHS, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 128, (n,), generator=g).tolist() for n in lengths]


def _on(batch, device):
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def sft_steps(family, dtype, device, layout, docs, patched=True, steps=2, checkpointing=False, num_items=False,
              autocast=None):
    """Loss of each step, the first step's gradients and the weights after `steps` AdamW steps (forward inside
    torch.autocast(device, dtype=autocast) when given)."""
    model = tiny_model(family, dtype=dtype, device=device).train()
    if checkpointing:  # activation_checkpointing_enable: transformers >= 5.25's name for it
        (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    handle = detops.patch(model) if patched else None
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batch = _on(train_batch(docs, layout), device)
    if num_items:
        batch["num_items_in_batch"] = torch.tensor(sum(len(d) - 1 for d in docs), device=device)
    losses, grads = [], None
    for step in range(steps):
        with torch.autocast(device, dtype=autocast, enabled=autocast is not None):
            loss = model(**batch).loss
        loss.backward()
        if grads is None:
            grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        opt.step()
        opt.zero_grad()
        losses.append(loss.detach())
    if handle is not None:
        handle.undo()
    return losses, grads, {n: p.detach().clone() for n, p in model.named_parameters()}


def _differences(a, b):
    la, ga, wa = a
    lb, gb, wb = b
    out = [f"loss of step {i}" for i, (x, y) in enumerate(zip(la, lb)) if not torch.equal(x, y)]
    out += [f"grad {n}" for n in ga if not torch.equal(ga[n], gb[n])]
    out += [f"weight {n}" for n in wa if not torch.equal(wa[n], wb[n])]
    return out


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=("fp32", "bf16"))
@pytest.mark.parametrize("family", FAMILIES)
def test_t4_padded_equals_packed(device, family, dtype):
    docs = _docs()
    _check_layouts(family, dtype, device, docs)


@pytest.mark.parametrize("family", ("qwen3", "gemma3"))
def test_t4_sequence_as_long_as_the_heads(device, family):
    """A padded row as long as the model has heads (4): the q/k norms' (B, H, L) and (B, L, H) token dims look
    alike; the layout must still follow the sequence dim."""
    _check_layouts(family, torch.float32, device, _docs((4, 3)))


def _check_layouts(family, dtype, device, docs):
    base = sft_steps(family, dtype, device, "right", docs)
    assert all(g.abs().sum() > 0 for g in base[1].values())
    for layout in TRAIN_LAYOUTS[1:]:
        diff = _differences(sft_steps(family, dtype, device, layout, docs), base)
        assert not diff, f"{family} {layout} vs right padding: {diff[:5]} ({len(diff)} differ)"


@pytest.mark.parametrize("family", ("llama", "gemma3"))
def test_t4_gradient_checkpointing_and_num_items(device, family):
    """Checkpointing replays each layer under the layout its forward saw: the same bits as without it, in
    every layout; the loss divided by num_items_in_batch too."""
    docs = _docs()
    base = sft_steps(family, torch.float32, device, "right", docs)
    for layout in TRAIN_LAYOUTS:
        diff = _differences(sft_steps(family, torch.float32, device, layout, docs, checkpointing=True), base)
        assert not diff, f"checkpointing, {layout}: {diff[:5]}"
    items = [sft_steps(family, torch.float32, device, layout, docs, num_items=True) for layout in TRAIN_LAYOUTS]
    for layout, r in zip(TRAIN_LAYOUTS[1:], items[1:]):
        assert not _differences(r, items[0]), f"num_items_in_batch, {layout}"


@pytest.mark.parametrize("family", ("llama", "gemma2"))
def test_t4_stock_differs(device, family):
    """Negative control: stock transformers' gradients change with packing (CPU and GPU)."""
    docs = _docs()
    base = sft_steps(family, torch.float32, device, "right", docs, patched=False, steps=1)
    diff = _differences(sft_steps(family, torch.float32, device, "packed", docs, patched=False, steps=1), base)
    assert diff


@pytest.mark.parametrize("do_sample", (False, True), ids=("greedy", "sampled"))
@pytest.mark.parametrize("family", ("llama", "qwen3", "gemma2"))
def test_t5_trainer_equals_sampler(device, family, do_sample):
    """The completion's log-probabilities from generate() (KV cache) equal, bitwise, those of a training
    forward (train mode, the sequence packed after another document)."""
    model = tiny_model(family, device=device)
    prompt = _docs((7,), seed=3)[0]
    other = _docs((11,), seed=4)[0]
    with detops.patch(model):
        g = torch.Generator(device=device).manual_seed(5) if do_sample else None
        kwargs = dict(do_sample=True, temperature=0.9, top_k=0, generator=g) if do_sample else dict(do_sample=False)
        if do_sample:
            torch.manual_seed(5)
            kwargs.pop("generator")
        with torch.no_grad():
            out = model.generate(torch.tensor([prompt], device=device), max_new_tokens=9, min_new_tokens=9,
                                 output_logits=True, return_dict_in_generate=True, pad_token_id=0, **kwargs)
        completion = out.sequences[0, len(prompt):]
        sampled = torch.stack([detops.log_softmax(l[0].float(), -1)[t] for l, t in zip(out.logits, completion)])
        model.train()
        seq = prompt + completion.tolist()
        batch = _on(train_batch([other, seq], "packed"), device)
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        start = len(other) + len(prompt) - 1            # the logit that predicts the first completion token
        lp = detops.log_softmax(logits[start:start + len(completion)].float(), -1)
        trained = lp.gather(1, completion[:, None])[:, 0]
    assert torch.equal(trained.detach(), sampled), (trained - sampled).abs().max()


def test_layout_errors_are_clear():
    """A module whose inputs the layout cannot describe, and an unsupported embedding, raise with the reason."""
    from detops.patching.training import _documents, documents_for
    token = _documents.set(torch.zeros(2, 5, dtype=torch.long))
    try:
        with pytest.raises(ValueError, match="does not describe"):
            documents_for((3, 5))
    finally:
        _documents.reset(token)
    model = tiny_model("llama").train()
    model.model.embed_tokens.max_norm = 1.0
    with pytest.raises(RuntimeError, match="max_norm"):
        detops.patch(model, strict=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_patched_gradients_match_stock(family):
    """Every parameter gets a gradient (a patched model used to give none, silently), close to stock's: the
    per-element CPU backward of SiLU / GELU / tanh computes the same function as torch's. Stock runs eager
    attention, each family's reference (transformers 5.17's sdpa path drops gemma2's attention softcap)."""
    model = tiny_model(family, attn_implementation="eager").train()
    batch = train_batch(_docs((9, 5)), "right")
    model(**batch).loss.backward()
    stock = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    with detops.patch(model):
        model(**batch).loss.backward()
    for n, p in model.named_parameters():
        assert p.grad is not None, n
        torch.testing.assert_close(p.grad, stock[n], rtol=1e-3, atol=1e-5, msg=n)


@pytest.mark.parametrize("fn", ("silu", "gelu", "gelu_tanh", "tanh", "sigmoid"))
def test_cpu_elementwise_backward_matches_float64(fn):
    """The CPU backward overrides (aten_mode.enable_backward) against float64 autograd."""
    import torch.nn.functional as F
    f = {"silu": F.silu, "gelu": F.gelu, "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
         "tanh": torch.tanh, "sigmoid": torch.sigmoid}[fn]
    x = torch.linspace(-9, 9, 2001)
    x64 = x.double().requires_grad_()
    ref, = torch.autograd.grad(f(x64).sum(), x64)
    detops.aten_mode.enable_backward()
    try:
        x32 = x.clone().requires_grad_()
        got, = torch.autograd.grad(f(x32).sum(), x32)
    finally:
        detops.aten_mode.disable_backward()
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-6)


def test_logits_to_keep_in_training(device):
    """Training-time log-probs of the last k tokens (logits_to_keep, as RL trainers ask) equal the full
    forward's, padded or packed."""
    model = tiny_model("llama", device=device).train()
    docs = _docs((6, 9))
    with detops.patch(model):
        for layout in ("right", "packed"):
            batch = _on(train_batch(docs, layout), device)
            batch.pop("labels")
            full = model(**batch).logits
            kept = model(**batch, logits_to_keep=3).logits
            kept.float().sum().backward()
            assert torch.equal(kept, full[:, -3:])


def test_non_causal_lm_keeps_its_loss():
    """Only the causal-LM loss is replaced; another head's loss stays torch's and the report says so."""
    import transformers as tf
    from detops.testing.models import tiny_config
    model = tf.LlamaForSequenceClassification(tiny_config("llama", num_labels=3)).train()
    ids = torch.randint(3, 128, (2, 6))
    with detops.patch(model) as handle:
        loss = model(input_ids=ids, labels=torch.tensor([0, 2])).loss
        loss.backward()
        assert "not a causal LM" in handle.report.training


def test_trainer_loss_is_the_patched_models_loss():
    """detops.trainer_loss (Trainer / SFTTrainer's compute_loss_func) and detops.trainer_compute_loss (their
    compute_loss method) give the bits of the patched model's own loss, with and without num_items_in_batch."""
    model = tiny_model("llama").train()
    batch = train_batch(_docs((7, 4)), "packed")
    labels = batch.pop("labels")
    with detops.patch(model):
        for n in (None, torch.tensor(13)):
            own = model(**batch, labels=labels, num_items_in_batch=n).loss
            given = detops.trainer_loss(model(**batch), labels, num_items_in_batch=n)
            assert torch.equal(own, given)
            method = detops.trainer_compute_loss(None, model, {**batch, "labels": labels}, num_items_in_batch=n)
            assert torch.equal(own, method)


def test_trl_fused_lm_head_refused_under_gradients():
    """TRL's fused LM head (model(..., fused_lm_head=True)) bypasses detops' LM head and loss: refused, with the
    fix named, when gradients are on (TRL's metrics call it without gradients, which passes the hook)."""
    model = tiny_model("llama").train()
    batch = train_batch(_docs((5, 3)), "right")
    with detops.patch(model):
        with pytest.raises(RuntimeError, match="compute_loss_func=detops.trainer_loss"):
            model(**batch, fused_lm_head=True)


def test_layout_ids_are_shared_by_every_layer():
    """Every op of one forward that asks for the same token shape gets the same ids tensor (so that its token
    plan is computed once), including derived shapes (q/k norms' (B, L, H), logits_to_keep's (B, k))."""
    from detops.patching.training import _documents, documents_for
    docs = torch.tensor([[0, 0, 1, 1, 1], [2, 2, 2, -1, -1]])
    token = _documents.set(docs)
    try:
        assert documents_for((2, 5)) is docs
        for shape in ((2, 5, 3), (2, 3, 5), (2, 2)):
            assert documents_for(shape) is documents_for(shape)
        x = torch.zeros(2, 5, 5, 4)
        assert torch.equal(documents_for((2, 5, 5), x), docs[:, :, None].expand(2, 5, 5))
        assert not torch.equal(documents_for((2, 5, 5), x.transpose(1, 2)), documents_for((2, 5, 5), x))
    finally:
        _documents.reset(token)


@pytest.mark.parametrize("order", ["patch, then wrap", "wrap, then patch"])
def test_peft_lora_padded_equals_packed(order):
    """LoRA through PEFT, the model patched before or after it is wrapped: the loss (detops' cross-entropy either
    way) and the adapters' gradients are the same bits padded or packed; stock's are not (the control)."""
    import peft   # scripts/setup_env.sh installs it

    def step(layout, patched):
        model = tiny_model("llama").train()
        config = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], lora_dropout=0.0,
                                 init_lora_weights=False)
        handle = detops.patch(model) if patched and order == "patch, then wrap" else None
        wrapped = peft.get_peft_model(model, config)
        if patched and handle is None:
            handle = detops.patch(wrapped)
        loss = wrapped(**train_batch(_docs((40, 5, 37)), layout)).loss
        loss.backward()
        if handle is not None:
            assert "loss: detops.cross_entropy" in handle.report.training
        return [loss.detach()] + [p.grad for p in wrapped.parameters() if p.requires_grad]

    for patched in (True, False):
        right, packed = step("right", patched), step("packed", patched)
        same = all(torch.equal(a, b) for a, b in zip(right, packed))
        assert same == patched, f"patched={patched}"


def test_t4_under_autocast(device):
    """Trainer(bf16=True)'s mixed precision: fp32 weights, the forward in torch.autocast(bfloat16). detops follows
    torch's autocast policy (tests/test_autocast.py) and padded == packed still holds, bit for bit."""
    docs = _docs()
    runs = {layout: sft_steps("llama", torch.float32, device, layout, docs, autocast=torch.bfloat16)
            for layout in ("right", "packed")}
    assert not _differences(runs["right"], runs["packed"])
    assert all(g.dtype == torch.float32 for g in runs["right"][1].values())
