"""The backward of every op (docs/CONTRACT.md "Training promises", REDUCTION_ORDER.md §10).

- correctness: gradients against a float64 reference, no worse than twice stock's error; `gradcheck` in fp32;
- T1: row-local gradients (dX, dx, dq) of a row are the same bits in any batch;
- T2 / T3: token reductions (dW, db, dweight, dk, dv, the loss) are the same bits for the same documents in any
  layout (right / left padding, packed at an offset, packed into several rows), pads holding garbage;
- stock as the negative control where it differs; clear errors for what has no backward.
"""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st

import detops
from detops.ops.gradients import TOKEN_ALIGN, token_plan
from values import ATTN_BLOCK, DTYPES, ROW_COUNTS, around, make, seed_st

# Document lengths around the token alignment of §10 (and one around two blocks); attention's also around the
# tensor-core backward's blocks of ATTN_BLOCK and two of them (§10b).
DOC_LENGTHS = (1,) + around(TOKEN_ALIGN, 2 * TOKEN_ALIGN)
ATTN_DOC_LENGTHS = (1,) + around(TOKEN_ALIGN, ATTN_BLOCK, 2 * ATTN_BLOCK)
# Head dims: 16 (§10 rule 3 everywhere) and the tensor-core backward's 64 and 128 (§10b on CUDA bf16 / fp16).
ATTN_HEAD_DIMS = (16, 64, 128)
LAYOUTS = ("right", "left", "packed", "rows")


def grads(fn, *inputs, upstream=None):
    """Output and the gradients of every input for fn(*inputs) with the given upstream gradient."""
    leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    out = fn(*leaves)
    out.backward(upstream if upstream is not None else torch.ones_like(out))
    return out.detach(), [t.grad for t in leaves if t.requires_grad]


def tol_ok(got, ref, stock):
    """detops' error vs float64 no worse than twice stock's (plus one fp32 rounding of the result's scale)."""
    scale = ref.abs().max().item() + 1e-30
    e_d = (got.double() - ref).abs().max().item()
    e_s = (stock.double() - ref).abs().max().item()
    return e_d <= 2 * e_s + 2 ** -23 * scale, (e_d, e_s)


# ---------------------------------------------------------------- correctness

def _ops(device):
    """name -> (detops fn, stock fn, input shapes)"""
    def rms(mode):
        def stock(x, w):
            r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
            return x * r * ((1 + w) if mode == "offset" else w)
        return (lambda x, w: detops.rms_norm(x, 24, w, 1e-6, weight_mode=mode), stock, ((3, 5, 24), (24,)))
    target = torch.tensor([1, 2, -100, 4, 0, 3, -100, 9], device=device)
    return {
        "mm": (detops.mm, torch.mm, ((9, 40), (40, 7))),
        "bmm": (detops.bmm, torch.bmm, ((2, 9, 40), (2, 40, 7))),
        "linear": (detops.linear, F.linear, ((2, 9, 40), (7, 40), (7,))),
        "addmm": (detops.addmm, torch.addmm, ((7,), (9, 40), (40, 7))),
        "rms_norm": rms("plain"), "rms_norm offset": rms("offset"),
        "add_rms_norm": (lambda x, r, w: detops.add_rms_norm(x, r, 24, w, 1e-6)[0] * 2
                         + detops.add_rms_norm(x, r, 24, w, 1e-6)[1],
                         lambda x, r, w: F.rms_norm(x + r, (24,), w, 1e-6) * 2 + (x + r), ((3, 24), (3, 24), (24,))),
        "softmax": (lambda x: detops.softmax(x, -1), lambda x: torch.softmax(x, -1), ((5, 300),)),
        "log_softmax": (lambda x: detops.log_softmax(x, 0), lambda x: torch.log_softmax(x, 0), ((300, 5),)),
        "cross_entropy": (lambda x: detops.cross_entropy(x, target), lambda x: F.cross_entropy(x, target), ((8, 11),)),
        "attention": (lambda q, k, v: detops.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
                      lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
                      ((2, 4, 37, 16), (2, 2, 37, 16), (2, 2, 37, 16))),
        "attention softcap": (lambda q, k, v: detops.scaled_dot_product_attention(q, k, v, is_causal=True, softcap=2.0),
                              _stock_softcap, ((1, 2, 20, 16),) * 3),
    }


def _stock_softcap(q, k, v, cap=2.0):
    """Stock SDPA has no softcap: eager attention with it (as transformers' Gemma 2)."""
    s = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    s = cap * torch.tanh(s / cap)
    L = q.shape[-2]
    s = s.masked_fill(~torch.ones(L, L, dtype=torch.bool, device=q.device).tril(), float("-inf"))
    return torch.softmax(s, -1) @ v


@pytest.mark.parametrize("name", ["mm", "bmm", "linear", "addmm", "rms_norm", "rms_norm offset", "add_rms_norm",
                                  "softmax", "log_softmax", "cross_entropy", "attention", "attention softcap"])
def test_gradients_match_float64(device, name):
    fn, stock, shapes = _ops(device)[name]
    inputs = [make(s, device=device, seed=i + 1) for i, s in enumerate(shapes)]
    with torch.no_grad():
        shape = fn(*inputs).shape
    up = torch.randn(shape, generator=torch.Generator().manual_seed(9)).to(device)
    out, g_d = grads(fn, *inputs, upstream=up)
    _, g_s = grads(stock, *inputs, upstream=up)
    _, g_r = grads(stock, *[t.double() for t in inputs], upstream=up.double())
    assert len(g_d) == len(g_r) == len(inputs)
    for i, (d, s, r) in enumerate(zip(g_d, g_s, g_r)):
        assert d.dtype == inputs[i].dtype and d.shape == inputs[i].shape
        ok, errs = tol_ok(d, r, s)
        assert ok, f"{name}: gradient of input {i}: detops error {errs[0]:.3g} > 2 x stock's {errs[1]:.3g}"


@pytest.mark.filterwarnings("ignore:Input #")
@pytest.mark.parametrize("name", ["linear", "addmm", "rms_norm", "add_rms_norm", "softmax", "log_softmax",
                                  "cross_entropy", "attention"])
def test_gradcheck_fp32(name):
    """Finite differences agree with the analytic backward (fp32: detops kernels have no float64)."""
    fn, _, shapes = _ops("cpu")[name]
    if name == "attention":
        shapes = ((1, 2, 5, 4), (1, 1, 5, 4), (1, 1, 5, 4))
    inputs = [make(s, seed=i + 3).requires_grad_() for i, s in enumerate(shapes)]
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-2, atol=5e-3, rtol=5e-2, nondet_tol=0.0, fast_mode=True)


# ---------------------------------------------------------------- T1: row-local gradients

@given(data=st.data(), seed=seed_st, dtype=st.sampled_from(DTYPES))
def test_t1_row_gradients_batch_invariant(device, data, seed, dtype):
    """dX of linear, dx of rms_norm / softmax / log_softmax / cross-entropy: row i of a batch of M rows equals the
    same row's gradient in a batch of M' rows, at row counts across the tile thresholds."""
    fits = [m for m in ROW_COUNTS if m <= 300]
    M, M2 = data.draw(st.sampled_from(fits), label="M"), data.draw(st.sampled_from(fits), label="M'")
    i, j = data.draw(st.integers(0, M - 1), label="i"), data.draw(st.integers(0, M2 - 1), label="j")
    K, N = 96, 40
    x = make((max(M, M2), K), dtype, device, seed=seed)
    g = make((max(M, M2), N), dtype, device, seed=seed + 1)
    w = make((N, K), dtype, device, seed=seed + 2)
    wn = make((K,), dtype, device, seed=seed + 3)
    t = torch.randint(0, K, (max(M, M2),), generator=torch.Generator().manual_seed(seed)).to(device)

    def row_grads(rows, r):
        sel = torch.arange(rows, device=device)
        sel[r], sel[0] = 0, r  # row r of the batch is x's row 0
        xs, gs = x[sel], g[sel]
        out = {}
        _, (dx, _) = grads(lambda a, b: detops.linear(a, b), xs, w, upstream=gs)
        out["linear"] = dx[r]
        _, (dx, _) = grads(lambda a, b: detops.rms_norm(a, K, b, 1e-6), xs, wn, upstream=xs.flip(1))
        out["rms_norm"] = dx[r]
        _, (dx,) = grads(lambda a: detops.softmax(a, -1), xs, upstream=xs.flip(1))
        out["softmax"] = dx[r]
        _, (dx,) = grads(lambda a: detops.log_softmax(a, -1), xs, upstream=xs.flip(1))
        out["log_softmax"] = dx[r]
        _, (dx,) = grads(lambda a: detops.cross_entropy(a, t[sel], reduction="sum"), xs)
        out["cross_entropy"] = dx[r]
        return out

    a, b = row_grads(M, i), row_grads(M2, j)
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name}: row gradient differs between M={M} and M={M2}"


# ---------------------------------------------------------------- T2: token reductions across layouts

def place(docs, layout, width, device, offset=0, capacity=None, fill=None):
    """Put documents (each (n_i, C) tensor) in a layout: (B, L, C) tensor with pads = `fill` (garbage by default)
    and (B, L) segment ids (-1 = pad)."""
    C = docs[0].shape[1]
    lens = [d.shape[0] for d in docs]
    if layout in ("right", "left"):
        rows = [[i] for i in range(len(docs))]
        L = max(lens) + width
    elif layout == "packed":
        rows = [list(range(len(docs)))]
        L = offset + sum(lens) + width
    else:  # several fixed-length rows, documents in order, each row filled greedily
        L = capacity
        rows, cur, used = [], [], 0
        for i, n in enumerate(lens):
            if used + n > L:
                rows.append(cur)
                cur, used = [], 0
            cur.append(i)
            used += n
        rows.append(cur)
    B = len(rows)
    g = torch.Generator().manual_seed(1234)
    t = (torch.randn(B, L, C, generator=g) * 1e3).to(docs[0].dtype).to(device) if fill is None else \
        torch.full((B, L, C), fill, dtype=docs[0].dtype, device=device)
    ids = torch.full((B, L), -1, dtype=torch.int64, device=device)
    for b, members in enumerate(rows):
        total = sum(lens[i] for i in members)
        p = L - total if layout == "left" else (offset if layout == "packed" else 0)
        for i in members:
            t[b, p:p + lens[i]] = docs[i]
            ids[b, p:p + lens[i]] = i
            p += lens[i]
    return t, ids


def _docs_st(lengths=DOC_LENGTHS):
    return st.lists(st.sampled_from(lengths), min_size=1, max_size=4)


@given(lens=_docs_st(), seed=seed_st, dtype=st.sampled_from(DTYPES), width=st.integers(0, 3),
       offset=st.sampled_from((0, 1, 17, 33)))
def test_t2_weight_gradients_layout_invariant(device, lens, seed, dtype, width, offset):
    """dW, db of linear and dweight of rms_norm (all modes): the same bits for the same documents right-padded,
    left-padded, packed at an offset and packed into several rows; pads hold garbage and are skipped."""
    K, N = 48, 24
    xs = [make((n, K), dtype, device, seed=seed + i) for i, n in enumerate(lens)]
    gs = [make((n, N), dtype, device, seed=seed + 100 + i) for i, n in enumerate(lens)]
    gn = [make((n, K), dtype, device, seed=seed + 200 + i) for i, n in enumerate(lens)]
    w, b, wn = make((N, K), dtype, device, seed=seed + 7), make((N,), dtype, device, seed=8), \
        make((K,), dtype, device, seed=9)
    results = {}
    for layout in LAYOUTS:
        cap = max(lens) + 5
        x, ids = place(xs, layout, width, device, offset, cap)
        g, _ = place(gs, layout, width, device, offset, cap)
        g2, _ = place(gn, layout, width, device, offset, cap)
        _, (_, dw, db) = grads(lambda x_, w_, b_: detops.linear(x_, w_, b_, documents=ids), x, w, b, upstream=g)
        got = {"linear dW": dw, "linear db": db}
        for mode in ("plain", "cast_first", "offset"):
            _, (_, dwn) = grads(lambda x_, w_: detops.rms_norm(x_, K, w_, 1e-6, weight_mode=mode, documents=ids),
                                x, wn, upstream=g2.to(torch.promote_types(dtype, dtype)))
            got[f"rms_norm {mode} dweight"] = dwn
        x2, g2d = x.reshape(-1, K), g.reshape(-1, N)
        _, (_, dmm) = grads(lambda a, b_: detops.mm(a, b_, documents=ids.reshape(-1)), x2, w.t().contiguous(),
                            upstream=g2d)
        got["mm dB"] = dmm
        results[layout] = got
    base = results["right"]
    for layout in LAYOUTS[1:]:
        for name, v in results[layout].items():
            assert torch.equal(v, base[name]), f"{name}: {layout} differs from right padding (docs {lens})"


def test_t2_stock_differs_across_layouts():
    """Negative control: stock's dW (a sum over all tokens of the tensor, pads zero) changes with the layout."""
    torch.manual_seed(0)
    K, N = 64, 64
    lens = [200, 333, 77, 500]
    xs = [torch.randn(n, K) for n in lens]
    gs = [torch.randn(n, N) for n in lens]
    w = torch.randn(N, K)
    dws = []
    for layout in ("right", "packed"):
        x, _ = place(xs, layout, 3, "cpu", 5, fill=0.0)
        g, _ = place(gs, layout, 3, "cpu", 5, fill=0.0)
        _, (_, dw) = grads(F.linear, x, w, upstream=g)
        dws.append(dw)
    assert not torch.equal(dws[0], dws[1])


def test_t2_canonical_buffer_aligned():
    """The buffer §10 reduces: every document starts at a multiple of TOKEN_ALIGN, pads are absent, and the buffer
    is the same for every layout of the same documents."""
    lens = [1, 31, 33, 64]
    xs = [make((n, 3), seed=i) for i, n in enumerate(lens)]
    bufs = []
    for layout in LAYOUTS:
        x, ids = place(xs, layout, 2, "cpu", 7, capacity=70)
        plan = token_plan(ids, ids.shape, "cpu", "test")
        bufs.append(plan.gather(x.reshape(-1, 3)))
        doc = ids.reshape(-1)[plan.source]
        doc[plan.gaps] = -1
        starts = torch.nonzero((doc >= 0) & (torch.cat([torch.tensor([-1]), doc[:-1]]) != doc)).squeeze(1)
        assert (starts % TOKEN_ALIGN == 0).all() and starts.numel() == len(lens)
    for b in bufs[1:]:
        assert torch.equal(b, bufs[0])


def test_token_plan_computed_once_per_layout():
    """Every layer of a patched model gets the same ids tensor: its plan is computed once and kept; an in-place
    change of the ids (a new version) recomputes it, and bad ids still raise."""
    ids = torch.tensor([[0, 0, 0, 1, 1, -1], [2, 2, 2, 2, -1, -1]])
    plan = token_plan(ids, ids.shape, "cpu", "test")
    assert token_plan(ids, ids.shape, "cpu", "test") is plan
    ids[0, 5] = 1
    again = token_plan(ids, ids.shape, "cpu", "test")
    assert again is not plan and again.gaps.numel() == plan.gaps.numel() - 1  # one more token, one gap row less
    ids[1, 0] = -2
    with pytest.raises(ValueError, match=">= 0"):
        token_plan(ids, ids.shape, "cpu", "test")


@given(lens=_docs_st(), seed=seed_st, offset=st.sampled_from((0, 1, 33)))
def test_t2_loss_layout_invariant(device, lens, seed, offset):
    """The loss (sum and mean) and its gradient rows: the same bits in every layout, pads labelled ignore_index."""
    V = 50
    xs = [make((n, V), device=device, seed=seed + i, scale=3.0) for i, n in enumerate(lens)]
    ts = [torch.randint(0, V, (n, 1), generator=torch.Generator().manual_seed(seed + i)).to(device)
          for i, n in enumerate(lens)]
    res = {}
    for layout in LAYOUTS:
        x, ids = place(xs, layout, 2, device, offset, capacity=max(lens) + 3)
        t, _ = place(ts, layout, 2, device, offset, capacity=max(lens) + 3, fill=0)
        t = torch.where(ids >= 0, t[..., 0], -100)
        out = {}
        for red in ("sum", "mean"):
            loss, (dx,) = grads(lambda a: detops.cross_entropy(a, t, reduction=red), x)
            out[red] = loss
            out[red + " dx"] = dx[ids >= 0]
        res[layout] = out
    for layout in LAYOUTS[1:]:
        for k, v in res[layout].items():
            assert torch.equal(v, res["right"][k]), f"{k}: {layout} differs"


# ---------------------------------------------------------------- T3: attention

def _attention_layout(qs, ks, vs, gs, layout, offset, window, device):
    """The documents' q/k/v/upstream in a layout, with the arguments that describe it to detops."""
    cap = max(t.shape[1] for t in qs) + 3
    fields = [place([t.transpose(0, 1).reshape(t.shape[1], -1) for t in ts], layout, 2, device, offset, cap)
              for ts in (qs, ks, vs, gs)]
    ids = fields[0][1]
    B, L = ids.shape
    out = []
    for (t, _), ref in zip(fields, (qs, ks, vs, gs)):
        H, D = ref[0].shape[0], ref[0].shape[2]
        out.append(t.view(B, L, H, D).transpose(1, 2).contiguous())
    i = torch.arange(L, device=device)
    same = (ids[:, :, None] == ids[:, None, :]) & (ids[:, :, None] >= 0)
    mask = same & (i[None, :, None] >= i[None, None, :])
    if window is not None:
        mask &= i[None, :, None] - i[None, None, :] < window
    first = torch.zeros_like(ids)
    for b in range(B):
        for d in ids[b].unique():
            if d >= 0:
                first[b][ids[b] == d] = int((ids[b] == d).nonzero()[0, 0])
    pos = torch.where(ids >= 0, i[None] - first, 0)
    return out, ids, mask[:, None], pos


@given(lens=_docs_st(ATTN_DOC_LENGTHS), seed=seed_st, dtype=st.sampled_from(DTYPES), gqa=st.sampled_from((1, 2)),
       window=st.sampled_from((None, 5, 40, 70)), softcap=st.sampled_from((None, 3.0)),
       offset=st.sampled_from((0, 1, 33)), D=st.sampled_from(ATTN_HEAD_DIMS))
def test_t3_attention_gradients_layout_invariant(device, lens, seed, dtype, gqa, window, softcap, offset, D):
    """dq, dk, dv of each document: the same bits right-padded, left-padded, packed at an offset and packed into
    several rows (mask + position ids), GQA, sliding window and softcap drawn; pads hold garbage. On CUDA bf16 /
    fp16 with D 64 / 128 this is the tensor-core backward (§10b)."""
    Hk = 2
    Hq = Hk * gqa
    qs = [make((Hq, n, D), dtype, device, seed=seed + i) for i, n in enumerate(lens)]
    ks = [make((Hk, n, D), dtype, device, seed=seed + 10 + i) for i, n in enumerate(lens)]
    vs = [make((Hk, n, D), dtype, device, seed=seed + 20 + i) for i, n in enumerate(lens)]
    gs = [make((Hq, n, D), dtype, device, seed=seed + 30 + i) for i, n in enumerate(lens)]
    per_layout = {}
    for layout in LAYOUTS:
        (q, k, v, g), ids, mask, pos = _attention_layout(qs, ks, vs, gs, layout, offset, window, device)
        fn = lambda q_, k_, v_: detops.scaled_dot_product_attention(  # noqa: E731
            q_, k_, v_, attn_mask=mask, enable_gqa=True, position_ids=pos, softcap=softcap, documents=ids)
        o, (dq, dk, dv) = grads(fn, q, k, v, upstream=g)
        per_layout[layout] = {name: [t[b, :, ids[b] == d].clone() for d in range(len(lens))
                                     for b in range(ids.shape[0]) if bool((ids[b] == d).any())]
                              for name, t in (("out", o), ("dq", dq), ("dk", dk), ("dv", dv))}
    for layout in LAYOUTS[1:]:
        for name, docs in per_layout[layout].items():
            for d, (a, b) in enumerate(zip(docs, per_layout["right"][name])):
                assert torch.equal(a, b), f"{name} of document {d} (len {lens[d]}): {layout} differs from right"


@pytest.mark.parametrize("D, dtype", [(16, torch.float32), (64, torch.bfloat16), (128, torch.float16)])
def test_t3_packed_cu_seqlens_equals_alone(device, D, dtype):
    """Packed with cu_seqlens (and a pad segment) gives each document the gradients it has alone (16: the smallest
    head dim of the CUDA kernels; 64 / 128 in bf16 / fp16: the tensor-core backward on CUDA, §10b)."""
    lens = [3, 65, 130]
    q, k, v, g = (make((1, 2, sum(lens) + 4, D), dtype, device=device, seed=s) for s in range(4))
    cu = torch.tensor([0, 4, 7, 72, 202], dtype=torch.int32, device=device)
    ids = torch.tensor([-1] * 4 + [0] * 3 + [1] * 65 + [2] * 130, device=device)[None]
    fn = lambda a, b, c: detops.scaled_dot_product_attention(a, b, c, cu_seqlens=cu, documents=ids)  # noqa: E731
    out, packed = grads(fn, q, k, v, upstream=g)
    for d, (s, e) in enumerate(((4, 7), (7, 72), (72, 202))):
        sl = lambda t: t[:, :, s:e].contiguous()  # noqa: E731
        out_alone, alone = grads(lambda a, b, c: detops.scaled_dot_product_attention(a, b, c, is_causal=True),
                                 sl(q), sl(k), sl(v), upstream=sl(g))
        # the forward first (L3): the backward's δ = row_dot(dO, O) reads the forward's output
        assert torch.equal(out[:, :, s:e], out_alone), f"document {d}: the forward differs"
        for name, p, a in zip(("dq", "dk", "dv"), packed, alone):
            assert torch.equal(p[:, :, s:e], a), f"document {d}: {name} differs"
    for p in packed:
        assert not p[:, :, :4].any()  # pads get zero gradients


def test_t3_document_groups_change_no_bit(device, monkeypatch):
    """The backward pads each document to a block length and groups documents to a memory budget (§10 rule 3):
    longer blocks (any multiple of TOKEN_ALIGN) and one document a group give the bits of the defaults."""
    import detops.ops.attention as attention
    lens, D = [1, 31, 33, 64, 65, 130], 16
    q, g = (make((1, 4, sum(lens), D), device=device, seed=s) for s in (1, 2))
    k, v = (make((1, 2, sum(lens), D), device=device, seed=s) for s in (3, 4))
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32, device=device)
    ids = torch.cat([torch.full((n,), i) for i, n in enumerate(lens)]).to(device)[None]
    fn = lambda a, b, c: detops.scaled_dot_product_attention(a, b, c, cu_seqlens=cu, documents=ids,  # noqa: E731
                                                             enable_gqa=True)
    _, grouped = grads(fn, q, k, v, upstream=g)
    monkeypatch.setattr(attention, "BLOCK_BUDGET_BYTES", 1)
    _, single = grads(fn, q, k, v, upstream=g)
    block_length = attention.block_length
    monkeypatch.setattr(attention, "block_length", lambda n: block_length(n) + 3 * TOKEN_ALIGN)
    _, longer = grads(fn, q, k, v, upstream=g)
    for name, a, b, c in zip(("dq", "dk", "dv"), grouped, single, longer):
        assert torch.equal(a, b) and torch.equal(a, c), name


def test_t3_stock_differs_across_layouts():
    """Negative control: stock SDPA's dk (a sum over the queries of the padded row) changes with padding."""
    torch.manual_seed(0)
    n, D = 300, 64
    q, k, v, g = (torch.randn(1, 4, n, D) for _ in range(4))
    _, alone = grads(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True), q, k, v, upstream=g)
    pad = 77
    pq, pk, pv, pg = (torch.cat([t, torch.zeros(1, 4, pad, D)], 2) for t in (q, k, v, g))
    mask = torch.ones(n + pad, n + pad, dtype=torch.bool).tril()
    mask[:, n:] = False
    mask[n:, 0] = True  # pad queries attend one key: no all-masked rows
    _, padded = grads(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, attn_mask=mask), pq, pk, pv, upstream=pg)
    assert not all(torch.equal(a, p[:, :, :n]) for a, p in zip(alone, padded))


# ---------------------------------------------------------------- determinism, compile, patched models, errors

def test_t0_same_bits_every_run(device):
    x, w = make((70, 64), device=device, seed=1), make((48, 64), device=device, seed=2)
    q, k, v = (make((1, 2, 70, 16), device=device, seed=s) for s in range(3))
    runs = [grads(lambda a, b: detops.linear(a, b), x, w)[1] +
            grads(lambda a, b, c: detops.scaled_dot_product_attention(a, b, c, is_causal=True), q, k, v)[1]
            for _ in range(2)]
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_compiled_backward_equals_eager():
    """register_autograd makes the gradients visible to torch.compile; the ops stay opaque."""
    x, w, wn = make((2, 9, 32), seed=1), make((16, 32), seed=2), make((32,), seed=3)

    def f(x_, w_, wn_):
        return detops.log_softmax(detops.linear(detops.rms_norm(x_, 32, wn_, 1e-6), w_), -1)

    eager = grads(f, x, w, wn)
    compiled = grads(torch.compile(f, backend="aot_eager", fullgraph=True), x, w, wn)
    assert torch.equal(eager[0], compiled[0])
    for a, b in zip(eager[1], compiled[1]):
        assert torch.equal(a, b)


def test_bad_input_raises():
    x = torch.randn(4, 8, requires_grad=True)
    w = torch.randn(5, 8)
    y = detops.linear(x, w)
    with pytest.raises(RuntimeError, match="double backward"):
        g, = torch.autograd.grad(y.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="token shape"):
        detops.linear(x, w, documents=torch.zeros(3, dtype=torch.long))
    with pytest.raises(RuntimeError, match="int32 or int64"):
        detops.linear(x, w, documents=torch.zeros(4))
    with pytest.raises(ValueError, match="contiguous"):
        detops.linear(x, w.requires_grad_(), documents=torch.tensor([0, 1, 0, -1])).sum().backward()
    q = torch.randn(1, 1, 3, 4, requires_grad=True)
    kv = torch.randn(1, 1, 5, 4)
    out = detops.scaled_dot_product_attention(q, kv, kv)   # the forward runs (a cached step with grad on) ...
    with pytest.raises(ValueError, match="KV"):
        out.sum().backward()                                  # ... its backward says why it has none
    q = torch.randn(1, 1, 6, 4, requires_grad=True)
    mask = torch.ones(6, 6, dtype=torch.bool).tril()
    mask[:, :2] = False
    with pytest.raises(ValueError, match="outside its document"):
        detops.scaled_dot_product_attention(q, q, q, attn_mask=mask).sum().backward()
    with pytest.raises(ValueError, match="out of range"):
        detops.cross_entropy(torch.randn(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="reduction"):
        detops.cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]), reduction="avg")


def test_non_finite_propagates():
    """A NaN in a token's upstream gradient reaches dW (no silent zeros), as in stock."""
    x, w = torch.randn(40, 8), torch.randn(4, 8)
    g = torch.randn(40, 4)
    g[3, 1] = float("nan")
    _, (_, dw) = grads(lambda a, b: detops.linear(a, b), x, w, upstream=g)
    _, (_, dws) = grads(F.linear, x, w, upstream=g)
    assert torch.equal(dw.isnan(), dws.isnan()) and dw.isnan().any()
