"""Calls people write, on a patched Hugging Face model: the natural left-padded call (no position ids), padding
masks with holes, `output_attentions=True`, and the classification heads that build such masks.

Each promise is `torch.equal` against the sequence alone (docs/CONTRACT.md, L2), with negative controls where
the stock model (or the opt-out) differs.
"""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from detops.testing.models import FAMILIES, SLIDING_WINDOW, pad_batch, tiny_config, tiny_model
from detops.patching import patch

pytest.importorskip("transformers")

DTYPES = (torch.float32, torch.bfloat16)
WINDOWED = ("qwen2", "mistral", "gemma2", "gemma3")


def _tokens(seed, n):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 128, (n,), generator=g).tolist()


def _logits(model, device, **kw):
    with torch.no_grad():
        return model(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}).logits


def _left_padded(seqs):
    return pad_batch(seqs, "left")[:2]


@settings(max_examples=10)
@given(family=st.sampled_from(FAMILIES), dtype=st.sampled_from(DTYPES),
       lens=st.lists(st.integers(1, 70), min_size=2, max_size=4), seed=st.integers(0, 2**31 - 1))
def test_left_padded_call_without_position_ids(family, dtype, lens, seed, device):
    """`model(input_ids, attention_mask=mask)`, left padding, no position_ids: each row == the sequence alone
    (the patched model derives the positions from the mask, as generate() does)."""
    model = tiny_model(family, dtype=dtype, device=device)
    seqs = [_tokens(seed + i, n) for i, n in enumerate(lens)]
    ids, mask = _left_padded(seqs)
    with patch(model, strict=True):
        batch = _logits(model, device, input_ids=ids, attention_mask=mask)
        for i, s in enumerate(seqs):
            assert torch.equal(batch[i, ids.shape[1] - len(s):], _logits(model, device, input_ids=torch.tensor([s]))[0])


def test_left_padded_call_opt_out_control(device):
    """Negative control: with derive_position_ids=False (transformers' default positions, counted from the
    row's first pad) a left-padded row differs from the sequence alone for at least one family and dtype;
    so the derivation is what makes the natural call invariant."""
    seqs = [_tokens(1, 9), _tokens(2, 40)]
    ids, mask = _left_padded(seqs)
    differ = []
    for family in FAMILIES:
        for dtype in DTYPES:
            model = tiny_model(family, dtype=dtype, device=device)
            with patch(model, derive_position_ids=False) as handle:
                assert "as given" in handle.report.position_ids
                batch = _logits(model, device, input_ids=ids, attention_mask=mask)
                alone = _logits(model, device, input_ids=torch.tensor([seqs[0]]))[0]
            differ.append(not torch.equal(batch[0, -9:], alone))
    assert any(differ)


def test_derived_positions_match_generate(device):
    """generate() and a plain forward of the same left-padded prompts give the same first-step logits (both
    derive positions from the mask; generate passes them, the patched forward derives them)."""
    model = tiny_model("llama", dtype=torch.bfloat16, device=device)
    model.generation_config.pad_token_id = 0
    ids, mask = _left_padded([_tokens(3, 6), _tokens(4, 13)])
    with patch(model, strict=True):
        with torch.no_grad():
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=1,
                                 do_sample=False, output_logits=True, return_dict_in_generate=True)
        fwd = _logits(model, device, input_ids=ids, attention_mask=mask)
    assert torch.equal(gen.logits[0], fwd[:, -1])


# ---- padding masks with holes ------------------------------------------------------------------------------
@settings(max_examples=10)
@given(family=st.sampled_from(FAMILIES), dtype=st.sampled_from(DTYPES), n=st.integers(2, 70),
       data=st.data(), seed=st.integers(0, 2**31 - 1))
def test_mask_with_holes_equals_valid_tokens_alone(family, dtype, n, data, seed, device):
    """`attention_mask = input_ids.ne(pad_id)` where the pad id also occurs inside the text (as transformers'
    classification tests build it): the valid tokens' logits == those tokens alone, wherever the holes are
    (keys ordered by rank among the row's valid keys, docs/REDUCTION_ORDER.md §6). Families with sliding-window
    layers: sequences within the window, since transformers' window counts holes (its mask then attends other
    keys than the sequence alone does)."""
    if family in WINDOWED:
        n = min(n, SLIDING_WINDOW)
    holes = data.draw(st.lists(st.integers(1, n - 1), max_size=4, unique=True), label="holes")
    ids = torch.tensor([_tokens(seed, n)])
    mask = torch.ones_like(ids)
    mask[0, holes] = 0
    model = tiny_model(family, dtype=dtype, device=device)
    with patch(model, strict=True):
        out = _logits(model, device, input_ids=ids, attention_mask=mask)
        keep = mask[0].bool()
        alone = _logits(model, device, input_ids=ids[:, keep])
    assert torch.equal(out[0, keep.to(device)], alone[0])


def test_mask_that_cannot_be_ordered_raises(device):
    # a 4-D mask where one query skips a key the others attend: no order of the keys gives it
    model = tiny_model("llama", device=device)
    mask = torch.ones(1, 1, 4, 4, dtype=torch.bool).tril()
    mask[0, 0, 3, 1] = False
    with patch(model):
        with pytest.raises(ValueError, match="cannot be ordered"):
            _logits(model, device, input_ids=torch.tensor([[5, 6, 7, 8]]), attention_mask=mask.to(device))


# ---- output_attentions ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_output_attentions(family, device):
    """`output_attentions=True` returns one (B, H, Q, K) weight tensor per layer, computed in
    detops' order: close to stock eager's, rows summing to 1, zero on masked keys, bitwise the same for a row
    alone and left-padded by any amount in a batch."""
    cfg = tiny_config(family)
    ids, mask = _left_padded([_tokens(5, 7), _tokens(6, 11)])
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    eager = tiny_model(family, device=device, attn_implementation="eager")
    with torch.no_grad():
        ref = eager(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                    output_attentions=True).attentions
    model = tiny_model(family, device=device)
    with patch(model, strict=True):
        with torch.no_grad():
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_attentions=True)
            alone = model(input_ids=torch.tensor([_tokens(5, 7)], device=device), output_attentions=True)
            again = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_attentions=True)
    assert len(out.attentions) == cfg.num_hidden_layers
    with patch(model, strict=True), torch.no_grad():
        for pad in range(1, 18):  # the softmax's lane layout must not follow the row's place
            ids_p, mask_p = _left_padded([_tokens(5, 7), _tokens(6, 7 + pad)])
            shifted = model(input_ids=ids_p.to(device), attention_mask=mask_p.to(device), output_attentions=True)
            for got, one in zip(shifted.attentions, alone.attentions):
                assert torch.equal(got[0, :, pad:, pad:], one[0]), pad
    for got, want, rerun, one in zip(out.attentions, ref, again.attentions, alone.attentions):
        assert got.shape == (2, cfg.num_attention_heads, 11, 11) and got.dtype == torch.float32
        assert torch.equal(got, rerun)
        real = mask.bool().to(device)                                       # eager spreads pad rows uniformly
        assert (got - want).abs().transpose(1, 2)[real].max() < 1e-5
        assert torch.equal(got[0, :, 4:, 4:], one[0]) and not got[0, :, :, :4].any()
        assert torch.allclose(got[1].sum(-1), torch.ones((), device=device))


# ---- the heads whose inputs carry holes ------------------------------------------------------------------------
@pytest.mark.parametrize("head", ["ForSequenceClassification", "ForTokenClassification"])
def test_classification_heads_with_pad_inside_text(head, device):
    """transformers' sequence/token classification tests build `input_ids.ne(pad_id)` masks with the pad id
    inside the text; patched, the valid tokens give the bits of the same tokens without the holes."""
    import transformers as tf
    cfg = tiny_config("llama")
    cfg.num_labels = 3
    torch.manual_seed(0)
    model = getattr(tf, "Llama" + head)(cfg).eval().to(device)
    ids = torch.tensor([[5, 0, 9, 17, 0, 3, 44]])
    mask = ids.ne(0)
    with patch(model, strict=True):
        with torch.no_grad():
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            alone = model(input_ids=ids[:, mask[0]].to(device)).logits
    if head == "ForTokenClassification":
        assert torch.equal(out[0, mask[0].to(device)], alone[0])
    else:  # pooled at the last non-pad token (its index in the row differs, its value must not)
        assert torch.equal(out, alone)
