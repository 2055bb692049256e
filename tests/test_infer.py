"""`python -m detops infer`: the results file is byte-identical for any number of workers (real processes), any
batch size and any completion order, and equal to one process at batch size 1; greedy and seeded sampling;
--resume, malformed lines, a dying worker. Negative control: the same runs unpatched (--stock) differ."""
import json
import os

import pytest
import torch

from detops.__main__ import main

pytest.importorskip("transformers")

SPREADS = ((1, 1), (2, 3), (3, 4))  # (workers, batch size) on the CPU


def spreads(device):
    """(workers, batch size) to compare: on CUDA one worker per GPU, so with one GPU only the batch varies."""
    if device == "cpu":
        return SPREADS
    gpus = torch.cuda.device_count()
    return ((1, 1), (1, 3), (min(gpus, 2), 4))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from detops.testing.models import tiny_model
    root = tmp_path_factory.mktemp("infer")
    model = tiny_model("llama")
    model.generation_config.pad_token_id = 0
    model.save_pretrained(root / "model")
    g = torch.Generator().manual_seed(0)
    lines = []
    for i in range(10):
        n = int(torch.randint(1, 40, (1,), generator=g))
        lines.append(json.dumps({"id": i, "input_ids": torch.randint(3, 128, (n,), generator=g).tolist()}))
    lines.insert(4, json.dumps({"id": "named", "input_ids": [7, 8, 9]}))
    (root / "prompts.jsonl").write_text("\n".join(lines) + "\n")
    return root


def infer(root, out, workers, batch, *extra, dtype="bfloat16", data="prompts.jsonl", device="cpu"):
    rc = main(["infer", "--model", str(root / "model"), "--data", str(root / data), "--out", str(root / out),
               "--workers", str(workers), "--batch-size", str(batch), "--max-new-tokens", "8", "--dtype", dtype,
               "--device", device, "--no-progress", *extra])
    return rc, (root / out).read_bytes() if (root / out).exists() else b""


@pytest.mark.parametrize("mode", ["greedy", "sampled"])
def test_same_bytes_for_any_spread(setup, mode, device):
    extra = ("--do-sample", "--seed", "5", "--temperature", "0.8", "--top-k", "50") if mode == "sampled" else ()
    outs = []
    for w, b in spreads(device):
        rc, data = infer(setup, f"{mode}_{device}_{w}_{b}.jsonl", w, b, *extra, device=device)
        assert rc == 0
        outs.append(data)
    assert outs[0] == outs[1] == outs[2]
    recs = [json.loads(line) for line in outs[0].decode().splitlines()]
    assert [r["id"] for r in recs] == list(range(10)) + ["named"]  # sorted by id: integers, then strings
    assert all(len(r["tokens"]) == len(r["logprobs"]) > 0 for r in recs)
    assert all(lp <= 0 for r in recs for lp in r["logprobs"])
    if mode == "sampled":  # another seed, other draws
        assert infer(setup, f"sampled_seed6_{device}.jsonl", 1, 4, "--do-sample", "--seed", "6", "--temperature",
                     "0.8", "--top-k", "50", device=device)[1] != outs[0]


def test_stock_control_differs(setup):
    # Negative control: the same pipeline unpatched gives other bytes at another spread (bf16 logprobs).
    a = infer(setup, "stock_1_1.jsonl", 1, 1, "--stock")[1]
    b = infer(setup, "stock_2_4.jsonl", 2, 4, "--stock")[1]
    assert a != b


def test_resume_and_malformed_lines(setup, capsys):
    _, full = infer(setup, "full.jsonl", 1, 4)
    lines = full.decode().splitlines(keepends=True)
    (setup / "partial.jsonl").write_text("".join(lines[:4]) + lines[4][:10])  # a line cut short by a crash
    rc, resumed = infer(setup, "partial.jsonl", 2, 3, "--resume")
    assert rc == 0 and resumed == full
    bad = setup / "bad.jsonl"
    bad.write_text((setup / "prompts.jsonl").read_text() + "{oops\n" + '{"id": 99}\n')
    rc, out = infer(setup, "bad_out.jsonl", 2, 3, data="bad.jsonl")
    err = capsys.readouterr().err
    assert rc == 3 and "line 12: not JSON" in err and "line 13: needs a non-empty" in err
    assert out == full  # the rest completed


def test_dying_worker_loses_nothing(setup, monkeypatch, capsys):
    _, full = infer(setup, "ref.jsonl", 1, 2)
    monkeypatch.setenv("DETOPS_INFER_TEST_CRASH", "1:1")  # worker 1 exits after its first batch
    rc, part = infer(setup, "crash.jsonl", 2, 2)
    assert rc == 4 and "--resume" in capsys.readouterr().err
    kept = part.decode().splitlines()
    assert 0 < len(kept) < 11 and all(line in full.decode().splitlines() for line in kept)
    monkeypatch.delenv("DETOPS_INFER_TEST_CRASH")
    rc, resumed = infer(setup, "crash.jsonl", 2, 2, "--resume")
    assert rc == 0 and resumed == full
    assert not [p for p in os.listdir(setup) if ".part" in p]
