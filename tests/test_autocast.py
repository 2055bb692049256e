"""torch.autocast with detops ops (detops/ops/autocast.py): the dtype torch's counterpart returns under autocast on
the same device (matmuls and attention in the autocast dtype, the loss in float32, norms and softmax in float32
on CUDA only), float64 never cast, and the same bits as calling the op on inputs cast by hand (the casts are per
element, so every invariance promise carries over)."""
import pytest
import torch
import torch.nn.functional as F

import detops


def _inputs(device, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g).to(device)  # noqa: E731
    return dict(x=r(6, 32), w=r(16, 32) * 32 ** -0.5, b=r(16), a3=r(2, 6, 32), b3=r(2, 32, 5), q=r(1, 4, 9, 16),
                k=r(1, 2, 9, 16), v=r(1, 2, 9, 16), nw=r(32), t=torch.randint(0, 16, (6,), generator=g).to(device))


CASES = {  # name: (detops call, torch's counterpart)
    "linear": (lambda i: detops.linear(i["x"], i["w"], i["b"]), lambda i: F.linear(i["x"], i["w"], i["b"])),
    "mm": (lambda i: detops.mm(i["x"], i["w"].t()), lambda i: torch.mm(i["x"], i["w"].t())),
    "bmm": (lambda i: detops.bmm(i["a3"], i["b3"]), lambda i: torch.bmm(i["a3"], i["b3"])),
    "addmm": (lambda i: detops.addmm(i["b"], i["x"], i["w"].t()), lambda i: torch.addmm(i["b"], i["x"], i["w"].t())),
    "attention": (lambda i: detops.scaled_dot_product_attention(i["q"], i["k"], i["v"], is_causal=True,
                                                                enable_gqa=True),
                  lambda i: F.scaled_dot_product_attention(i["q"], i["k"], i["v"], is_causal=True, enable_gqa=True)),
    "rms_norm": (lambda i: detops.rms_norm(i["x"].bfloat16(), 32, i["nw"].bfloat16(), 1e-6),
                 lambda i: F.rms_norm(i["x"].bfloat16(), (32,), i["nw"].bfloat16(), 1e-6)),
    "softmax": (lambda i: detops.softmax(i["x"].bfloat16(), -1), lambda i: F.softmax(i["x"].bfloat16(), -1)),
    "log_softmax": (lambda i: detops.log_softmax(i["x"].bfloat16(), -1),
                    lambda i: F.log_softmax(i["x"].bfloat16(), -1)),
    "cross_entropy": (lambda i: detops.cross_entropy(i["x"][:, :16].bfloat16(), i["t"]),
                      lambda i: F.cross_entropy(i["x"][:, :16].bfloat16(), i["t"])),
}


@pytest.mark.parametrize("name", list(CASES))
def test_dtype_is_torchs(device, name):
    ours, theirs = CASES[name]
    i = _inputs(device)
    with torch.autocast(device, dtype=torch.bfloat16):
        got, want = ours(i), theirs(i)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)


BY_HAND = {  # the op on inputs cast as the policy casts them
    "linear": lambda i: detops.linear(i["x"].bfloat16(), i["w"].bfloat16(), i["b"].bfloat16()),
    "attention": lambda i: detops.scaled_dot_product_attention(i["q"].bfloat16(), i["k"].bfloat16(),
                                                               i["v"].bfloat16(), is_causal=True, enable_gqa=True),
    "cross_entropy": lambda i: detops.cross_entropy(i["x"][:, :16].bfloat16().float(), i["t"]),
}


@pytest.mark.parametrize("name", list(BY_HAND))
def test_same_bits_as_casting_by_hand(device, name):
    """Inside autocast = the op on inputs cast first (bf16 for matmuls and attention, float32 for the loss);
    outside autocast nothing is cast."""
    ours, _ = CASES[name]
    i = _inputs(device, seed=1)
    with torch.autocast(device, dtype=torch.bfloat16):
        got = ours(i)
    assert torch.equal(got, BY_HAND[name](i))
    assert ours(i).dtype == (torch.bfloat16 if name == "cross_entropy" else torch.float32)


def test_float64_is_not_cast():
    """CPU (detops' CUDA kernels have no float64 path): float64 reaches the op, which refuses it by name."""
    i = {k: v.double() if v.is_floating_point() else v for k, v in _inputs("cpu").items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(RuntimeError, match="Double"):
            detops.linear(i["x"], i["w"])


def test_gradients_reach_float32_weights(device):
    i = _inputs(device)
    w = i["w"].clone().requires_grad_()
    with torch.autocast(device, dtype=torch.bfloat16):
        y = detops.linear(i["x"], w)
    y.float().sum().backward()
    assert y.dtype == torch.bfloat16 and w.grad.dtype == torch.float32


def test_backward_inside_autocast(device):
    """`loss.backward()` called inside the autocast region (on the CPU autograd then runs the backward on this
    thread, in the region): the backwards still run in the dtypes the forward saved, so the gradients are the
    bits of a backward outside it."""
    i = _inputs(device, seed=3)
    results = []
    for inside in (False, True):
        q, k, v, x = (i[n].clone().requires_grad_() for n in ("q", "k", "v", "x"))
        with torch.autocast(device, dtype=torch.bfloat16):
            y = detops.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            z = detops.softmax(detops.linear(x, i["w"]), -1)
            loss = y.float().sum() + (z.float() * torch.arange(16, device=device)).sum()
            if inside:
                loss.backward()
        if not inside:
            loss.backward()
        results.append([t.grad for t in (q, k, v, x)])
    for name, a, b in zip("qkvx", *results):
        assert torch.equal(a, b), name


def test_mixed_dtypes_and_compile_under_autocast():
    """Inside autocast q, k, v of different dtypes are cast to one (as F.sdpa); a patched model compiled
    (aot_eager) runs inference under autocast, its attention op cast like the eager one."""
    from detops.testing.models import tiny_model
    i = _inputs("cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = detops.scaled_dot_product_attention(i["q"], i["k"].bfloat16(), i["v"], is_causal=True, enable_gqa=True)
    assert y.dtype == torch.bfloat16
    model = tiny_model("llama")
    ids = torch.randint(3, 128, (2, 7))
    with detops.patch(model), torch.no_grad():   # (training inside torch.compile is refused: CONTRACT.md)
        eager = model(input_ids=ids).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            eager_ac = model(input_ids=ids).logits
            compiled = torch.compile(model, backend="aot_eager", fullgraph=False)(input_ids=ids).logits
    assert eager.dtype == torch.float32 and eager_ac.dtype == compiled.dtype == torch.bfloat16
    assert torch.equal(eager_ac, compiled)


def test_loss_reads_the_logits_as_they_are(device):
    """Autocast's float32 loss without a float32 copy of the logits: the loss and the logits' gradient equal those
    of the logits cast to float32 by hand (the kernels widen exactly), the gradient in the logits' dtype."""
    i = _inputs(device, seed=2)
    for reduction in ("mean", "sum", "none"):
        x = i["x"].bfloat16().requires_grad_()
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = detops.cross_entropy(x, i["t"], reduction=reduction)
        loss.sum().backward()
        y = i["x"].bfloat16().requires_grad_()
        want = detops.cross_entropy(y.float(), i["t"], reduction=reduction)
        want.sum().backward()
        assert loss.dtype == torch.float32 and torch.equal(loss, want), reduction
        assert x.grad.dtype == torch.bfloat16 and torch.equal(x.grad, y.grad), reduction
