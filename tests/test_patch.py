"""detops.patch: what it patches, its report, undo, strictness, registration at load time, the audit."""
import pytest
from hypothesis import given, strategies as st
import torch
from torch import nn

import detops
from detops.tools.audit import Audit
from detops.testing.models import FAMILIES, stock_attention, tiny_config, tiny_model
from detops.patching import RMS_NORMS, patch

pytest.importorskip("transformers")

# RMSNorm modules per tiny model (2 layers): Llama-like 2/layer + final; Qwen3 + q_norm/k_norm;
# Gemma2/3 4/layer + final (+ q_norm/k_norm for Gemma3).
EXPECTED_NORMS = {"llama": 5, "qwen2": 5, "qwen3": 9, "mistral": 5, "gemma": 5, "gemma2": 9, "gemma3": 13}


@pytest.mark.parametrize("family", FAMILIES)
def test_report_and_undo(family):
    model = tiny_model(family)
    classes = {id(m): type(m) for m in model.modules()}
    ids = torch.randint(3, 128, (2, 7))
    with torch.no_grad():
        stock = model(ids).logits
    handle = patch(model)
    rep = handle.report
    assert len(rep.norms) == EXPECTED_NORMS[family], rep.norms
    assert len(rep.linears) == 2 * 7 + 1  # q k v o gate up down per layer + lm_head
    assert rep.attention == "detops" and rep.previous_attention == stock_attention(family)
    assert rep.ok and not rep.not_covered, str(rep)
    if family in ("qwen3", "gemma3"):
        assert any(n.endswith("q_norm") for n in rep.norms) and any(n.endswith("k_norm") for n in rep.norms)
    assert "forward" in model.model.norm.__dict__
    assert {id(m): type(m) for m in model.modules()} == classes  # classes kept
    with torch.no_grad(), Audit() as audit:
        model(ids)
    assert audit.ok, audit.summary()  # every floating-point reduction ran in detops
    assert audit.detops["detops::attention.default"] == 2
    with pytest.raises(RuntimeError, match="already patched"):
        patch(model)
    handle.undo()
    assert model.config._attn_implementation == stock_attention(family)
    assert all("forward" not in m.__dict__ for m in model.modules())
    assert not model._forward_pre_hooks and not model._forward_hooks
    with torch.no_grad():
        assert torch.equal(model(ids).logits, stock)
    handle.undo()  # idempotent


def test_stock_audit_lists_uncovered():
    model = tiny_model("llama")
    with torch.no_grad(), Audit() as audit:
        model(torch.randint(3, 128, (2, 7)))
    assert not audit.ok
    names = set(audit.not_covered)
    assert "aten::mm.default" in names and "aten::mean.dim" in names
    assert "not covered" in audit.summary()


def test_loss_is_detops_cross_entropy():
    """The model's loss (labels=) is detops.cross_entropy (REDUCTION_ORDER.md §10 rule 4): no reduction of the
    forward is left to torch, and the loss equals detops.cross_entropy of the shifted logits."""
    model = tiny_model("llama")
    handle = patch(model)
    try:
        ids = torch.randint(3, 128, (2, 7))
        with torch.no_grad(), Audit() as audit:
            out = model(ids, labels=ids)
        assert not audit.not_covered, audit.not_covered
        logits = out.logits[:, :-1].float().reshape(-1, 128)
        assert torch.equal(out.loss, detops.cross_entropy(logits, ids[:, 1:].reshape(-1)))
    finally:
        handle.undo()


class _Wrapper(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.extra_norm = nn.LayerNorm(128)

    def forward(self, ids):
        return self.extra_norm(self.inner(ids).logits)


def test_not_covered_and_strict():
    wrapper = _Wrapper(tiny_model("llama"))
    handle = patch(wrapper)
    try:
        names = [n for n, _, _ in handle.report.not_covered]
        assert "extra_norm" in names
        assert "" in names  # a plain nn.Module: attention not replaced at this level
    finally:
        handle.undo()
    with pytest.raises(RuntimeError, match="strict"):
        patch(wrapper, strict=True)
    assert all("forward" not in m.__dict__ for m in wrapper.modules())  # strict failure undid everything


def test_exception_in_forward_turns_mode_off():
    model = tiny_model("llama")
    handle = patch(model)
    try:
        with pytest.raises(Exception):
            model(torch.tensor([[500]]))  # token id outside the vocabulary
        assert not detops.is_enabled()
    finally:
        handle.undo()


def test_attn_implementation_at_load_time():
    import transformers as tf
    import detops.patching  # noqa: F401  (registers "detops")
    config = tiny_config("qwen3")
    model = tf.AutoModelForCausalLM.from_config(config, attn_implementation="detops").eval()
    assert model.config._attn_implementation == "detops"
    calls = []
    with torch.no_grad(), Audit() as audit:
        model(torch.randint(3, 128, (1, 6)))
    calls = audit.detops["detops::attention.default"]
    assert calls == 2  # one per layer, no stock attention
    assert not any("scaled_dot_product" in k for k in audit.not_covered)


def test_import_detops_alone_registers_for_from_config():
    # A fresh interpreter: `import detops` (which must not import transformers), then transformers, then
    # from_config(attn_implementation="detops").
    import os
    import subprocess
    import sys
    code = ("import sys, detops; assert 'transformers' not in sys.modules; import torch, transformers as tf; "
            "from detops.testing.models import tiny_config; "
            "m = tf.AutoModelForCausalLM.from_config(tiny_config('mistral'), attn_implementation='detops'); "
            "assert m.config._attn_implementation == 'detops'; torch.set_grad_enabled(False); "
            "m(torch.randint(3, 100, (1, 4))); print('OK')")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-2000:]


def test_register_rms_norm_validates():
    from detops.patching import register_rms_norm
    with pytest.raises(ValueError):
        register_rms_norm("MyNorm", "weird", "eps")
    assert "LlamaRMSNorm" in RMS_NORMS


def test_dropout_refused():
    model = tiny_model("llama")
    handle = patch(model)
    try:
        model.train()
        model.config.attention_dropout = 0.1
        for layer in model.model.layers:
            layer.self_attn.attention_dropout = 0.1
        with pytest.raises(ValueError, match="dropout"), torch.no_grad():
            model(torch.randint(3, 128, (1, 4)))
    finally:
        handle.undo()


@given(B=st.integers(1, 4), Q=st.integers(1, 20), extra=st.integers(0, 20), window=st.one_of(st.none(), st.integers(1, 12)),
       use_mask=st.booleans(), reset=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_compiled_rows_match_eager_rows(B, Q, extra, window, use_mask, reset, seed):
    # The compiled-graph path (the custom op detops_hf::attention: row_descriptors with device asserts, no host
    # sync) gives the eager path's rows on HF-shaped inputs: left padding, a KV cache offset, sliding windows,
    # position-id resets (packed documents).
    from detops.ops.attention import row_descriptors
    from detops.patching.attention import _causal, build_rows
    g = torch.Generator().manual_seed(seed)
    K = Q + extra
    kq = torch.arange(K - Q, K)                                  # key index of each query
    pad = torch.randint(0, K, (B,), generator=g)
    pos = (kq[None] - pad[:, None]).clamp(min=0)
    if reset and Q > 2:
        cut = int(torch.randint(1, Q, (1,), generator=g))
        pos[:, cut:] = torch.arange(Q - cut)
    mask = None
    if use_mask:
        k = torch.arange(K)
        m = (k[None, None] >= pad[:, None, None]) & (k[None, None] <= kq[None, :, None])
        if window:
            m &= k[None, None] > kq[None, :, None] - window
        mask = m[:, None]
    elif extra and Q > 1:
        return  # transformers never passes mask None with a cache offset and Q > 1
    eager, order = build_rows(B, 4, Q, K, "cpu", mask, True, pos, None, window)
    compiled = row_descriptors(B, Q, K, "cpu", mask=None if mask is None else mask[:, 0], is_causal=_causal(mask, True, Q),
                               position_ids=pos, sliding_window=window, clip_to_anchor=True)
    assert order is None and torch.equal(eager, compiled)


def test_holes_ranked_in_eager_refused_in_compiled_rows():
    from detops.ops.attention import row_descriptors
    from detops.patching.attention import build_rows
    mask = torch.ones(1, 1, 2, 6, dtype=torch.bool)
    mask[..., 2] = False  # a hole: keys ordered by rank in eager mode
    mask[0, 0, 0, 5] = False  # and causal: query 0 is key 4
    pos = torch.tensor([[3, 4]])
    rows, order = build_rows(1, 4, 2, 6, "cpu", mask, True, pos, None, None)
    assert order.tolist() == [[0, 1, 3, 4, 5]] and rows[0].tolist() == [[0, 0, 4], [0, 0, 5]]
    with pytest.raises(RuntimeError, match="contiguous interval"):
        row_descriptors(1, 2, 6, "cpu", mask=mask[:, 0], position_ids=pos, clip_to_anchor=True)


def test_no_backward_is_a_clear_error():
    """An op without a backward (the per-element CPU functions, which run below autograd in detops.mode()) raises
    at the call, naming the op and what to do, instead of leaving the input without a gradient. Inference under
    no_grad is unchanged. (Every other op has a backward: tests/test_backward.py.)"""
    x = torch.randn(3, 8, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"detops.elementwise has no backward yet.*torch.no_grad"):
        detops.ops.elementwise(x, "exp")
    with torch.no_grad():
        assert torch.equal(detops.ops.elementwise(x, "exp"), detops.ops.elementwise(x.detach(), "exp"))
    model = tiny_model("llama")
    with patch(model):
        with torch.inference_mode():  # inference tensors (no version counter) in the rows cache's keys
            ids = torch.randint(3, 128, (2, 5))
            mask = torch.ones(2, 5, dtype=torch.long)
            mask[0, :2] = 0
            out = model(ids, attention_mask=mask).logits
        with torch.no_grad():
            assert torch.equal(out, model(ids.clone(), attention_mask=mask.clone()).logits)
