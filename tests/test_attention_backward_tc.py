"""Attention's backward on the tensor cores (REDUCTION_ORDER.md §10b; CUDA, bf16 / fp16, D == Dv in {64, 128}).

Layout invariance (T3) of these gradients is tests/test_backward.py's T3 tests, which draw D = 64 / 128 in bf16 /
fp16 (this path on CUDA). Here: the kernels' document tables (any device), the path is the one taken, accuracy
against float64 no worse than twice stock's (stock = torch's SDPA backward in the same dtype on the same GPU),
same bits every run, and stock's packed / alone gradients differing as the negative control.
"""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st

import detops
import detops.ops.attention as attention
from conftest import requires_cuda
from test_backward import grads, tol_ok
from values import ATTN_BLOCK, around, make


def _case(mode, D, dtype, n=200):
    """(detops fn, stock fn, float64 reference fn, inputs) for one masking mode on CUDA."""
    dev = "cuda"
    Hq, Hk = (4, 2) if mode != "softcap" else (2, 2)
    q = make((2, Hq, n, D), dtype, dev, seed=1)
    k, v = (make((2, Hk, n, D), dtype, dev, seed=s) for s in (2, 3))
    i = torch.arange(n, device=dev)
    causal = i[:, None] >= i[None, :]
    if mode == "causal":
        mask, kw = causal, dict(is_causal=True)
    elif mode == "window":      # sliding window of 70 keys: every query block meets two key blocks
        mask = causal & (i[:, None] - i[None, :] < 70)
        kw = dict(is_causal=True, sliding_window=70, position_ids=i[None].expand(2, n))
    elif mode == "packed":      # two documents in each row, block-diagonal causal
        cut = 77
        same = (i[:, None] < cut) == (i[None, :] < cut)
        mask = causal & same
        ids = (i >= cut).long()[None] + torch.tensor([[0], [2]], device=dev)   # documents 0, 1 | 2, 3
        kw = dict(attn_mask=mask, documents=ids)
    elif mode == "softcap":
        mask, kw = causal, dict(is_causal=True, softcap=2.0)
    else:
        raise ValueError(mode)

    def det(q_, k_, v_):
        return detops.scaled_dot_product_attention(q_, k_, v_, enable_gqa=True, **kw)

    def eager(q_, k_, v_):
        G = q_.shape[1] // k_.shape[1]
        kx, vx = k_.repeat_interleave(G, 1), v_.repeat_interleave(G, 1)
        s = (q_ @ kx.transpose(-1, -2)) / D ** 0.5
        if mode == "softcap":
            s = 2.0 * torch.tanh(s / 2.0)
        s = s.masked_fill(~mask, float("-inf"))
        return torch.softmax(s, -1) @ vx

    def stock(q_, k_, v_):
        if mode == "softcap":        # stock SDPA has no softcap: eager, as transformers' Gemma 2
            return eager(q_, k_, v_)
        return F.scaled_dot_product_attention(q_, k_, v_, attn_mask=None if mode == "causal" else mask,
                                              is_causal=mode == "causal", enable_gqa=True)

    return det, stock, eager, (q, k, v)


@given(lens=st.lists(st.sampled_from((1,) + around(ATTN_BLOCK, 2 * ATTN_BLOCK)), min_size=1, max_size=4),
       window=st.sampled_from((None, 5, 70)), offset=st.sampled_from((0, 1, 33)))
def test_kernel_tables(lens, window, offset):
    """docs / work / span / keys of attention_backward.h against a plain re-statement: every block of 64 of every
    document, in order, with the union of its queries' keys (document coordinates)."""
    B = 2
    L = sum(lens) + offset + 3
    ids = torch.full((B, L), -1)
    ids[1, offset:offset + sum(lens)] = torch.repeat_interleave(torch.arange(len(lens)), torch.tensor(lens))
    i = torch.arange(L)
    same = (ids[:, :, None] == ids[:, None, :]) & (ids[:, :, None] >= 0)
    mask = same & (i[None, :, None] >= i[None, None, :])
    if window is not None:
        mask &= i[None, :, None] - i[None, None, :] < window
    starts = torch.tensor([offset] + [offset + sum(lens[:d]) for d in range(1, len(lens))])
    pos = torch.zeros(B, L, dtype=torch.long)
    pos[1, ids[1] >= 0] = i[ids[1] >= 0] - starts[ids[1][ids[1] >= 0]]   # position ids restart per document
    rows = attention.attention_rows(B, 1, L, L, "cpu", attn_mask=mask[:, None], position_ids=pos)
    plan = attention._backward_plan(ids, rows, B, L)
    docs, work, span, keys = plan.tc_tables(B, L)
    blocks = []
    start = offset
    for d, n in enumerate(lens):
        assert docs[d].tolist() == [1, start, n, len(blocks)]
        for b in range(-(-n // 64)):
            q = torch.arange(64 * b, min(64 * b + 64, n))
            lo = torch.tensor([int(mask[1, start + t].nonzero()[0]) - start for t in q])
            hi = torch.tensor([int(mask[1, start + t].nonzero()[-1]) + 1 - start for t in q])
            assert keys[L + start + q].tolist() == torch.stack([lo, hi], 1).tolist()
            blocks.append(([d, b], [int(lo.min()), int(hi.max())]))
        start += n
    assert work.tolist() == [w for w, _ in blocks] and span.tolist() == [sp for _, sp in blocks]
    assert not keys[:L].any() and not keys[L:L + offset].any()
    assert plan is attention._backward_plan(ids, rows, B, L)   # kept on the rows tensor: built once per layout


@requires_cuda
def test_tensor_core_path_is_taken(monkeypatch):
    """bf16 / fp16 with D 64 / 128 on CUDA run §10b; fp32 and other head dims run §10 rule 3."""
    calls = []
    real = attention._attention_backward_tc
    monkeypatch.setattr(attention, "_attention_backward_tc", lambda *a: calls.append(1) or real(*a))
    for dtype, D, taken in ((torch.bfloat16, 64, True), (torch.float16, 128, True), (torch.float32, 64, False),
                            (torch.bfloat16, 16, False)):
        del calls[:]
        q, k, v = (make((1, 2, 70, D), dtype, "cuda", seed=s) for s in range(3))
        grads(lambda a, b, c: detops.scaled_dot_product_attention(a, b, c, is_causal=True), q, k, v)
        assert bool(calls) == taken, (dtype, D)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("mode", ["causal", "window", "packed", "softcap"])
def test_gradients_match_float64(mode, D, dtype):
    det, stock, eager, inputs = _case(mode, D, dtype)
    with torch.no_grad():
        shape = det(*inputs).shape
    up = make(shape, dtype, "cuda", seed=9)
    _, g_d = grads(det, *inputs, upstream=up)
    _, g_s = grads(stock, *inputs, upstream=up)
    _, g_r = grads(eager, *[t.double() for t in inputs], upstream=up.double())
    for name, d, s, r in zip(("dq", "dk", "dv"), g_d, g_s, g_r):
        assert d.dtype == dtype and torch.isfinite(d).all()
        ok, errs = tol_ok(d, r, s)
        assert ok, f"{mode} D={D} {dtype}: {name} error {errs[0]:.3g} > 2 x stock's {errs[1]:.3g}"


@requires_cuda
def test_same_bits_every_run():
    det, _, _, inputs = _case("packed", 128, torch.bfloat16, n=300)
    up = make((2, 4, 300, 128), torch.bfloat16, "cuda", seed=9)
    a = grads(det, *inputs, upstream=up)[1]
    b = grads(det, *inputs, upstream=up)[1]
    for x, y in zip(a, b):
        assert torch.equal(x, y)


@requires_cuda
def test_stock_differs_packed_vs_alone():
    """Negative control: stock SDPA's bf16 gradients of a document packed after another (block-diagonal mask)
    differ from the same document's alone (is_causal), where detops' are equal (tests/test_backward.py T3)."""
    n0, n1, D = 150, 330, 128
    q, k, v, g = (make((1, 4, n0 + n1, D), torch.bfloat16, "cuda", seed=s) for s in range(4))
    i = torch.arange(n0 + n1, device="cuda")
    mask = (i[:, None] >= i[None, :]) & ((i[:, None] < n0) == (i[None, :] < n0))
    _, packed = grads(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, attn_mask=mask), q, k, v, upstream=g)
    sl = lambda t: t[:, :, n0:].contiguous()  # noqa: E731
    _, alone = grads(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True), sl(q), sl(k), sl(v),
                     upstream=sl(g))
    assert not all(torch.equal(p[:, :, n0:], a) for p, a in zip(packed, alone))
    ids = (i >= n0).long()[None]
    det = lambda a, b, c: detops.scaled_dot_product_attention(a, b, c, attn_mask=mask, documents=ids)  # noqa: E731
    _, d_packed = grads(det, q, k, v, upstream=g)
    _, d_alone = grads(lambda a, b, c: detops.scaled_dot_product_attention(a, b, c, is_causal=True), sl(q), sl(k),
                       sl(v), upstream=sl(g))
    for p, a in zip(d_packed, d_alone):
        assert torch.equal(p[:, :, n0:], a)


def test_kernel_op_refuses_cpu_tensors():
    """The tensor-core op is CUDA-only; the CPU backward is §10 rule 3 (never reached from the CPU path)."""
    t = torch.zeros(1, 1, 64, 64, dtype=torch.bfloat16)
    table = torch.zeros(1, 2, dtype=torch.int32)
    with pytest.raises(RuntimeError, match="runs on CUDA only"):
        torch.ops.detops.attention_backward_tc(t, t, t, t, torch.zeros(1, 1, 64), torch.zeros(1, 4, dtype=torch.int32),
                                               table, table, torch.zeros(64, 2, dtype=torch.int32), 0.125, 0.0)
