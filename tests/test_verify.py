"""`python -m detops verify` / `demo`: the matrix, its exit status, the failure diagnosis."""
import json

import pytest
import torch
import torch.nn.functional as F

from detops.__main__ import main

pytest.importorskip("transformers")


def test_cli_verify_json(device, capsys):
    rc = main(["verify", "--family", "qwen2", "--dtype", "bfloat16", "--device", device, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["ok"], out
    assert len(out["checks"]) == 10 and all(c["detops_equal"] for c in out["checks"])
    assert out["not_covered"] == {}
    for who in ("stock", "detops"):
        dev = out["deviation"][who]
        assert 0 < dev["max_abs_diff"] < 1 and 0 < dev["wasserstein1"] < dev["max_abs_diff"]
    # negative control: the stock column of the packed check attends across documents
    packed = next(c for c in out["checks"] if c["name"].startswith("packed"))
    assert not packed["stock_equal"] and packed["stock_max_diff"] > 1e-2


def test_verify_names_first_divergent_module(monkeypatch):
    # Inject a batch-size-dependent linear: verify must fail and name the first module that diverges
    # (q_proj of layer 0: its input, the first norm's output, is still equal).
    import detops
    import detops.patching as patching

    def leaky_linear(self, x):
        return F.linear(x, self.weight, self.bias) + 1e-3 * x.shape[0]
    monkeypatch.setattr(patching, "_linear_forward", leaky_linear)
    result = detops.verify(family="llama", dtype=torch.float32, checks=[
        "seed: s1+s2 unpadded row vs s1 alone", "repeated run (L0)"], reference=False)
    assert not result.ok
    seed, repeat = result.checks
    assert not seed.detops_equal and seed.first_divergent_module == "model.layers.0.self_attn.q_proj"
    assert repeat.detops_equal  # same shapes: deterministic
    assert "FAIL" in str(result)


def test_cli_demo(capsys):
    rc = main(["demo"])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.count("equal") >= 6 and "differ" in out  # detops equal; the stock column shows differences
