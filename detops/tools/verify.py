"""`python -m detops verify`: the invariance matrix of a model, stock vs detops (docs/CONTRACT.md).

For each check (L0–L4 at the logits) the same model runs twice, stock and patched by
`detops.patch`; a cell says `equal` (torch.equal) or `differ` with the max abs difference. On a detops
failure the first module whose output differs (forward hooks, execution order) is named. The coverage audit
lists floating-point reductions that ran outside detops, and a deviation report compares the logits with a
float64 run of the same weights (max abs diff and the Wasserstein-1 distance between the empirical
distributions of logit values, W1 = mean |sort(a) - sort(b)|), for stock and for detops.
With `train=True` (`--train`) it adds the training matrix (docs/CONTRACT.md T4, T5): two AdamW steps on copies
of the model, the same documents right-padded, left-padded, packed in one row and packed into several rows,
compared with right padding (loss, every gradient, the weights after the steps; on a difference the first
parameter that differs), and trainer == sampler (a completion's log-probabilities from `generate()` vs a
training forward with the sequence packed after another document).
Exit status: 0 if every detops check is equal (and, with --strict, nothing is uncovered); 1 otherwise.
"""
import copy
import dataclasses
import json
from typing import Callable, Dict, List, Optional

import torch

from ..testing.models import TRAIN_LAYOUTS, pad_batch, train_batch

__all__ = ["verify", "VerifyResult", "CHECKS"]


@dataclasses.dataclass
class CheckResult:
    name: str
    stock_equal: bool
    stock_max_diff: float
    detops_equal: bool
    detops_max_diff: float
    first_divergent_module: Optional[str] = None  # detops (or stock, for information) on a difference
    stock_first_divergent_module: Optional[str] = None


@dataclasses.dataclass
class VerifyResult:
    model: str
    dtype: str
    device: str
    checks: List[CheckResult]
    not_covered: Dict[str, int]
    patch_report: str
    deviation: Dict[str, Dict[str, float]]
    build: Dict[str, object]

    @property
    def ok(self) -> bool:
        return all(c.detops_equal for c in self.checks)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self) | {"ok": self.ok}, indent=2, default=str)

    def table(self) -> str:
        def cell(eq, d):
            return "equal" if eq else f"differ ({d:.2e})"
        w = max(len(c.name) for c in self.checks) + 2
        lines = [f"{'check':<{w}}{'stock':<22}detops", "-" * (w + 40)]
        for c in self.checks:
            lines.append(f"{c.name:<{w}}{cell(c.stock_equal, c.stock_max_diff):<22}"
                         f"{cell(c.detops_equal, c.detops_max_diff)}")
        if any(c.name in MASK_NOTES for c in self.checks):
            lines.append("")
            lines += [f"* {name}: {note}" for name, note in MASK_NOTES.items()
                      if any(c.name == name for c in self.checks)]
        return "\n".join(lines)

    def __str__(self):
        out = [f"detops verify: {self.model} ({self.dtype}, {self.device}); detops {self.build.get('version')}, "
               f"cuda kernels: {self.build.get('cuda')}", "", self.table(), ""]
        for c in self.checks:
            if not c.detops_equal:
                out.append(f"FAIL {c.name}: first divergent module under detops: {c.first_divergent_module}")
            if c.stock_first_divergent_module:
                out.append(f"stock, {c.name}: first divergent module: {c.stock_first_divergent_module}")
        out.append("uncovered ops (audit of a detops forward): " +
                   (", ".join(f"{k} ×{v}" for k, v in self.not_covered.items()) or "none"))
        if self.deviation:
            out.append("deviation from a float64 run of the same weights (logits of the batch):")
            for k, v in self.deviation.items():
                out.append(f"  {k:<7} max abs diff {v['max_abs_diff']:.3e}   W1 {v['wasserstein1']:.3e}")
        out.append("RESULT: " + ("PASS (every detops check bitwise equal)" if self.ok else "FAIL"))
        return "\n".join(out)


# ---------------------------------------------------------------------------------------------------------
def _tokens(n, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, max(4, min(vocab, 32000)), (n,), generator=g).tolist()


def _first_tensor(args, kwargs):
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, torch.Tensor) and a.is_floating_point() and a.dim() >= 2:
            return a
    return None


class _Capture:
    """Forward hooks recording, per module call (completion order), its first floating input and output."""

    def __init__(self, model):
        self.calls = []
        self.handles = [m.register_forward_hook(self._hook(n), with_kwargs=True)
                        for n, m in model.named_modules() if n]

    def _hook(self, name):
        def hook(module, args, kwargs, output):
            t = output[0] if isinstance(output, (tuple, list)) and output else output
            if hasattr(t, "logits"):
                t = t.logits
            if isinstance(t, torch.Tensor) and t.dim() >= 2 and t.is_floating_point():
                x = _first_tensor(args, kwargs)
                self.calls.append((name, None if x is None else x.detach().clone(), t.detach().clone()))
        return hook

    def close(self):
        for h in self.handles:
            h.remove()


def _rows(t, rows):
    try:
        return t[rows[0], rows[1]]
    except IndexError:
        return None


def _first_divergent(model, run_a, rows_a, run_b, rows_b) -> Optional[str]:
    """Re-run two layouts with hooks and name the module that introduces the difference: the first module
    (completion order) whose input rows for the sequence are equal in both runs but whose output rows differ.
    rows_*: (batch row, token slice) of the sequence in each run."""
    caps = []
    for run in (run_a, run_b):
        cap = _Capture(model)
        try:
            run()
        finally:
            cap.close()
        caps.append(cap.calls)
    first_diff = None
    for (name, xa, ya), (name_b, xb, yb) in zip(*caps):
        if name != name_b:
            return f"{name} (the two runs call different modules: {name_b})"
        ra, rb = _rows(ya, rows_a), _rows(yb, rows_b)
        if ra is None or rb is None or ra.shape != rb.shape or torch.equal(ra, rb):
            continue
        first_diff = first_diff or name
        ia = None if xa is None else _rows(xa, rows_a)
        ib = None if xb is None else _rows(xb, rows_b)
        if ia is not None and ib is not None and ia.shape == ib.shape and torch.equal(ia, ib):
            return name
    return first_diff


# Each check: fn(model, device, vocab, seed) -> (a, b, diag) where a, b are logits that must be bitwise equal;
# diag (optional) = (run_a, rows_a, run_b, rows_b) for the first-divergent-module search.
def _fwd(model, device, **kw):
    with torch.no_grad():
        return model(**{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}).logits


def _check_seed(model, device, vocab, seed, row):
    s1, s2 = _tokens(5, vocab, seed), _tokens(3, vocab, seed + 1)
    ids = torch.tensor([s1 + s2, s1 + s2, s2 + s1, s2 + s1])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0], [1] * 8, [0, 0, 0, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1, 1, 1]])
    pos = torch.tensor([list(range(8))] * 3 + [[0, 1, 2, 0, 1, 2, 3, 4]])
    sl = {0: slice(0, 5), 1: slice(0, 5), 3: slice(3, 8)}[row]
    run_b = lambda: _fwd(model, device, input_ids=ids, attention_mask=mask, position_ids=pos)  # noqa: E731
    run_a = lambda: _fwd(model, device, input_ids=torch.tensor([s1]))  # noqa: E731
    return run_a()[0], run_b()[row, sl], (run_a, (0, slice(0, 5)), run_b, (row, sl))


def _check_batch(model, device, vocab, seed, side, n=6, j=4):
    seqs = [_tokens(7 + 13 * i, vocab, seed + 10 + i) for i in range(n)]
    ids, mask, pos = pad_batch(seqs, side)
    L = ids.shape[1]
    sl = slice(L - len(seqs[j]), L) if side == "left" else slice(0, len(seqs[j]))
    run_b = lambda: _fwd(model, device, input_ids=ids, attention_mask=mask, position_ids=pos)  # noqa: E731
    run_a = lambda: _fwd(model, device, input_ids=torch.tensor([seqs[j]]))  # noqa: E731
    return run_a()[0], run_b()[j, sl], (run_a, (0, slice(0, len(seqs[j]))), run_b, (j, sl))


def _check_packed(model, device, vocab, seed):
    """Stock attention (sdpa / eager) turns position-id resets into a per-document mask only without a KV cache,
    so the stock column runs with use_cache=False (transformers' block-diagonal mask): its difference is then
    the numerical one. detops runs the default call (use_cache on, no document mask: the resets anchor it)."""
    docs = [_tokens(n, vocab, seed + 30 + i) for i, n in enumerate((11, 37, 6))]
    ids = torch.tensor([sum(docs, [])])
    pos = torch.tensor([sum([list(range(len(d))) for d in docs], [])])
    extra = {} if getattr(model, "_detops_patch", None) is not None else {"use_cache": False}
    run_b = lambda: _fwd(model, device, input_ids=ids, position_ids=pos, **extra)  # noqa: E731
    run_a = lambda: _fwd(model, device, input_ids=torch.tensor([docs[1]]))  # noqa: E731
    sl = slice(11, 48)
    return run_a()[0], run_b()[0, sl], (run_a, (0, slice(0, 37)), run_b, (0, sl))


def _check_decode(model, device, vocab, seed, chunks=None):
    from transformers import DynamicCache
    from ..testing.models import cache_argument
    T = 40
    ids = torch.tensor([_tokens(T, vocab, seed + 50)], device=device)
    with torch.no_grad():
        full = model(ids).logits[0]
        cache, parts, t = DynamicCache(config=model.config), [], 0
        for c in (chunks or []) + [1] * T:
            if t >= T:
                break
            parts.append(model(ids[:, t:t + c], **{cache_argument(model): cache}, use_cache=True).logits[0])
            t += c
    return full, torch.cat(parts), None


def _check_repeat(model, device, vocab, seed):
    ids = torch.tensor([_tokens(23, vocab, seed + 70)] * 3)
    return _fwd(model, device, input_ids=ids)[0], _fwd(model, device, input_ids=ids)[0], None


def _check_generate(model, device, vocab, seed):
    prompts = [_tokens(n, vocab, seed + 90 + i) for i, n in enumerate((5, 17, 9))]
    kw = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False, output_logits=True,  # no early EOS stop
              return_dict_in_generate=True, pad_token_id=0)

    def gen(seqs):
        ids, mask, _ = pad_batch(seqs, "left")
        with torch.no_grad():
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kw)
        return out

    a, b = gen([prompts[2]]), gen(prompts)
    la = torch.stack([s[0] for s in a.logits])
    lb = torch.stack([s[2] for s in b.logits])
    return la, lb, None


CHECKS: Dict[str, Callable] = {
    "seed: s1+s2 right-padded row vs s1 alone": lambda m, d, v, s: _check_seed(m, d, v, s, 0),
    "seed: s1+s2 unpadded row vs s1 alone": lambda m, d, v, s: _check_seed(m, d, v, s, 1),
    "seed: s2+s1 left-padded, positions reset": lambda m, d, v, s: _check_seed(m, d, v, s, 3),
    "batch of 6, row 4, right padding (L1/L2)": lambda m, d, v, s: _check_batch(m, d, v, s, "right"),
    "batch of 6, row 4, left padding (L1/L2)": lambda m, d, v, s: _check_batch(m, d, v, s, "left"),
    "packed row, position-id resets (L3)": _check_packed,  # stock: use_cache=False (see _check_packed)
    "full forward vs decode, DynamicCache (L4)": lambda m, d, v, s: _check_decode(m, d, v, s),
    "full forward vs chunked prefill (L4)": lambda m, d, v, s: _check_decode(m, d, v, s, [5, 11, 3, 16]),
    "repeated run (L0)": _check_repeat,
    "greedy generate, alone vs batch of 3": _check_generate,
}


# ------------------------------------------------------------------------------------------- training
def _train_steps(model0, device, docs, layout, patched, steps=2):
    """(losses, grads, weights) of `steps` AdamW steps on a copy of model0 with `docs` in `layout`."""
    from ..patching import patch
    model = copy.deepcopy(model0).train()
    handle = patch(model) if patched else None
    try:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in train_batch(docs, layout).items()}
        losses, grads = [], None
        for _ in range(steps):
            loss = model(**batch).loss
            loss.backward()
            if grads is None:
                grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
            opt.step()
            opt.zero_grad()
            losses.append(loss.detach())
        return losses, grads, {n: p.detach().clone() for n, p in model.named_parameters()}
    finally:
        if handle is not None:
            handle.undo()


def _compare_steps(a, b):
    """(equal, max abs difference, first difference: "loss" or "grad <param>" / "weight <param>")."""
    pairs = [("loss", x, y) for x, y in zip(a[0], b[0])]
    pairs += [(f"grad {n}", a[1][n], b[1].get(n)) for n in a[1]]
    pairs += [(f"weight {n}", a[2][n], b[2][n]) for n in a[2]]
    first, worst = None, 0.0
    for name, x, y in pairs:
        if y is None or x.shape != y.shape:
            return False, float("inf"), name
        if not torch.equal(x, y):
            worst = max(worst, float((x.double() - y.double()).abs().max()))
            first = first or name
    return first is None, worst, first


def trainer_sampler(model, device, prompt, other, new_tokens=8, seed=0):
    """(sampled, trained): the log-probabilities of a greedy completion of `prompt` from `generate()` (KV cache),
    and from a training-mode forward of prompt + completion packed after the document `other`. Both sides take
    detops.log_softmax (row-invariant), so the check compares the logits the two paths produce."""
    from ..ops import log_softmax
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt], device=device), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, pad_token_id=0)
    completion = out.sequences[0, len(prompt):]
    sampled = torch.stack([log_softmax(lg[0].float(), -1)[t] for lg, t in zip(out.logits, completion)])
    model.train()
    batch = train_batch([other, prompt + completion.tolist()], "packed")
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"].to(device), position_ids=batch["position_ids"].to(device)).logits
    start = len(other) + len(prompt) - 1
    trained = log_softmax(logits[0, start:start + len(completion)].float(), -1).gather(
        1, completion[:, None])[:, 0]
    model.train(was_training)
    return sampled, trained


def _train_checks(model, device, vocab, seed, patched):
    docs = [_tokens(n, vocab, seed + 300 + i) for i, n in enumerate((13, 40, 7, 25))]
    base = _train_steps(model, device, docs, "right", patched)
    results = {}
    for layout in TRAIN_LAYOUTS[1:]:
        results[f"train: 2 AdamW steps, {layout} vs right padding (T4)"] = _compare_steps(
            _train_steps(model, device, docs, layout, patched), base)
    from ..patching import patch
    handle = patch(model) if patched else None
    try:
        a, b = trainer_sampler(model, device, _tokens(9, vocab, seed + 400), _tokens(14, vocab, seed + 401))
    finally:
        if handle is not None:
            handle.undo()
    results["train: trainer == sampler log-probs (T5)"] = (torch.equal(a, b), float((a.double() - b.double()).abs().max()),
                                                          None if torch.equal(a, b) else "log-probs")
    return results


# Which attention mask each column's call used, where the two differ.
MASK_NOTES = {
    "packed row, position-id resets (L3)": "stock runs with use_cache=False, where transformers builds a "
    "block-diagonal document mask from the resets (with a cache stock attends across documents); detops runs the "
    "default call (cache on, no document mask): the position-id resets anchor and separate the documents.",
}


def _run_checks(model, device, vocab, seed, names, with_diag):
    results = {}
    for name in names:
        a, b, diag = CHECKS[name](model, device, vocab, seed)
        eq = a.shape == b.shape and torch.equal(a, b)
        diff = float((a.double() - b.double()).abs().max()) if a.shape == b.shape else float("inf")
        div = None
        if not eq and with_diag and diag is not None:
            div = _first_divergent(model, *diag)
        results[name] = (eq, diff, div)
    return results


def _deviation(model, ref64, device, vocab, seed):
    seqs = [_tokens(9 + 7 * i, vocab, seed + 200 + i) for i in range(4)]
    ids, mask, pos = pad_batch(seqs, "left")
    with torch.no_grad():
        got = _fwd(model, device, input_ids=ids, attention_mask=mask, position_ids=pos).double()
        ref = _fwd(ref64, device, input_ids=ids, attention_mask=mask, position_ids=pos)
    keep = mask.bool().to(device)
    a, r = got[keep], ref[keep]
    w1 = (a.flatten().sort().values - r.flatten().sort().values).abs().mean()
    return {"max_abs_diff": float((a - r).abs().max()), "wasserstein1": float(w1)}


def load_model(family=None, path=None, dtype=torch.float32, device="cpu"):
    from ..testing.models import tiny_model
    if path is not None:
        import transformers as tf
        model = tf.AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
        return model.to(device).eval(), str(path)
    family = family or "llama"
    return tiny_model(family, dtype=dtype, device=device), f"tiny {family} (random weights)"


def verify(model=None, *, family: Optional[str] = None, path: Optional[str] = None, dtype=torch.float32,
           device="cpu", seed: int = 0, checks: Optional[List[str]] = None, reference: bool = True,
           diagnose: bool = True, train: bool = False) -> VerifyResult:
    """Run the invariance matrix (stock, then patched), the audit and the float64 deviation report.
    The model (given, or loaded from `path`, or the tiny `family` model) is left unpatched afterwards."""
    from .. import build_info
    from .audit import Audit
    from ..patching import patch
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    name = type(model).__name__ if model is not None else None
    if model is None:
        model, name = load_model(family, path, dtype, device)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    vocab = model.config.vocab_size
    names = checks or list(CHECKS)
    stock = _run_checks(model, device, vocab, seed, names, with_diag=diagnose)
    deviation = {}
    ref64 = None
    if reference:
        ref64 = copy.deepcopy(model).to(torch.float64)
        deviation["stock"] = _deviation(model, ref64, device, vocab, seed)
    handle = patch(model)
    try:
        det = _run_checks(model, device, vocab, seed, names, with_diag=diagnose)
        with torch.no_grad(), Audit() as audit:
            _check_seed(model, device, vocab, seed, 3)
        if ref64 is not None:
            deviation["detops"] = _deviation(model, ref64, device, vocab, seed)
        report = str(handle.report)
    finally:
        handle.undo()
    del ref64
    results = [CheckResult(n, stock[n][0], stock[n][1], det[n][0], det[n][1], det[n][2], stock[n][2])
               for n in names]
    if train:
        stock_t = _train_checks(model, device, vocab, seed, patched=False)
        det_t = _train_checks(model, device, vocab, seed, patched=True)
        results += [CheckResult(n, stock_t[n][0], stock_t[n][1], det_t[n][0], det_t[n][1], det_t[n][2], stock_t[n][2])
                    for n in det_t]
    return VerifyResult(model=name, dtype=str(dtype).replace("torch.", ""), device=str(device), checks=results,
                        not_covered=dict(audit.not_covered), patch_report=report, deviation=deviation,
                        build=dict(build_info()))
