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
    # the stock column of the packed check gets a document mask it honours (use_cache=False): its difference
    # is the numerical one (bf16 logits: up to ~1e-1), not attention across documents (5.94 before)
    packed = next(c for c in out["checks"] if c["name"].startswith("packed"))
    assert packed["stock_max_diff"] < 1.0


def test_cli_verify_no_future_warnings(recwarn):
    # the installed transformers' argument names (its cache keyword): no deprecation warnings from our calls
    assert main(["verify", "--family", "llama", "--no-reference"]) == 0
    ours = [w for w in recwarn if "deprecated" in str(w.message)]
    assert not ours, [str(w.message) for w in ours[:3]]


@pytest.mark.parametrize("argv,reason", [
    (["verify", "--model", "/no/such/dir"], "no such directory"),
    (["verify", "--device", "nonsense"], "not a device torch knows"),
    (["demo", "--device", "cuda:0"] if not torch.cuda.is_available() else ["verify", "--model", "."],
     "CUDA is not available" if not torch.cuda.is_available() else "no config.json"),
])
def test_cli_bad_arguments_one_line(argv, reason, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert reason in err and len(err.splitlines()) == 1, err


def test_cli_bad_family_and_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["verify", "--family", "foo"])
    assert e.value.code == 2 and "invalid choice: 'foo'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("detops ")


def test_cli_without_transformers(monkeypatch, capsys):
    import sys
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    assert main(["verify"]) == 2
    assert "needs Hugging Face transformers" in capsys.readouterr().err


def test_info_names_versions(capsys):
    assert main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    import transformers
    assert info["transformers"] == transformers.__version__ and info["torch"] == torch.__version__


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


def test_cli_verify_train(capsys):
    """--train adds the training matrix (T4 padded == packed AdamW steps, T5 trainer == sampler): every detops
    row equal; stock differs on the packed layouts (the control)."""
    rc = main(["verify", "--family", "llama", "--train", "--no-reference", "--json"])
    out = json.loads(capsys.readouterr().out)
    rows = {c["name"]: c for c in out["checks"] if c["name"].startswith("train:")}
    assert rc == 0 and out["ok"]
    assert len(rows) == 5 and all(r["detops_equal"] for r in rows.values())
    assert not rows["train: 2 AdamW steps, packed vs right padding (T4)"]["stock_equal"]
