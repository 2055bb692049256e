"""detops.rms_norm / detops.add_rms_norm: CONTRACT.md L0, L1, L5 as torch.equal; the same-order reference
(REDUCTION_ORDER.md §2–§3) as torch.equal; accuracy against float64 and the stock ops; refusals; opcheck;
torch.compile."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import detops
from detops.testing import reference as R
from conftest import requires_cuda
from values import DTYPES, LANE_EDGE_SIZES, ROW_COUNTS, draw_batch_positions, at_offset, make, profile_st, row_layouts, seed_st

MODES = ("plain", "cast_first", "offset")
# Row lengths at every §2 lane threshold (read from the extension's constants) and a model hidden size.
NORM_SIZES = R.lane_threshold_sizes() + (5120,)
BUDGET = 1 << 21  # elements per drawn tensor: keeps the 'ci' profile fast on two cores


@st.composite
def norm_case(draw, sizes=NORM_SIZES):
    """One rms_norm configuration: row length, dtypes, weight mode, eps, compensated, values."""
    dtype = draw(st.sampled_from(DTYPES))
    mode = draw(st.sampled_from(MODES))
    weighted = mode != "plain" or draw(st.booleans())
    return dict(n=draw(st.sampled_from(sizes)), dtype=dtype, mode=mode, weighted=weighted,
                w_dtype=draw(st.sampled_from((dtype, torch.float32))),
                eps=draw(st.sampled_from((None, 1e-6, 1e-5))), compensated=draw(st.booleans()),
                profile=draw(profile_st), seed=draw(seed_st), residual=draw(st.booleans()))


def weight_of(c, device):
    # Random weights: ones (or Gemma's zeros) would hide weight-indexing bugs (PITFALLS.md).
    if not c["weighted"]:
        return None
    return make((c["n"],), c["w_dtype"], device, "normal", c["seed"] + 1)


def inputs(c, rows, device, seed_shift=0):
    x = make((rows, c["n"]), c["dtype"], device, c["profile"], c["seed"] + seed_shift)
    res = make((rows, c["n"]), c["dtype"], device, c["profile"], c["seed"] + seed_shift + 7) if c["residual"] else None
    return x, res


def run(c, x, w, res=None):
    """detops on this case: y, or (y, x + residual) for the fused path."""
    kw = dict(weight_mode=c["mode"], compensated=c["compensated"])
    if res is None:
        return detops.rms_norm(x, x.shape[-1], w, c["eps"], **kw)
    return detops.add_rms_norm(x, res, x.shape[-1], w, c["eps"], **kw)


def outs(r):
    return r if isinstance(r, tuple) else (r,)


def assert_nontrivial(y, x):
    """Outputs are not all zero when the input is not (a kernel that writes nothing must fail)."""
    if torch.count_nonzero(x) > 0:
        assert torch.count_nonzero(y) > 0, "all-zero output for a nonzero input"


def stock(x, w, eps, mode):
    """The stock computation each weight mode stands for: F.rms_norm; HF LlamaRMSNorm; HF GemmaRMSNorm."""
    n = x.shape[-1]
    eps = float(torch.finfo(x.dtype).eps) if eps is None else eps
    if mode == "plain":
        return F.rms_norm(x, (n,), w, eps)
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    if mode == "cast_first":
        return w * h.to(x.dtype)
    return (h * (1.0 + w.float())).to(x.dtype)


# ---- same-order reference (and, on CUDA, L5 device parity through it) -----------------------------------

@given(c=norm_case(), rows=st.integers(1, 3))
def test_same_order_reference(device, c, rows):
    x, res = inputs(c, rows, device)
    w = weight_of(c, device)
    got = outs(run(c, x, w, res))
    ref = outs(R.rms_norm_same_order(x, c["n"], w, c["eps"], c["mode"], c["compensated"], residual=res))
    for g, r in zip(got, ref):
        assert g.dtype == r.dtype and g.shape == r.shape
        assert torch.equal(g.cpu(), r)
    assert_nontrivial(got[0], x)


# ---- L0: repeated calls ------------------------------------------------------------------------------------

@given(c=norm_case(), rows=st.sampled_from(ROW_COUNTS))
def test_repeat_identical(device, c, rows):
    rows = max(1, min(rows, BUDGET // c["n"]))
    x, res = inputs(c, rows, device)
    w = weight_of(c, device)
    first = outs(run(c, x, w, res))
    for _ in range(2):
        for a, b in zip(first, outs(run(c, x, w, res))):
            assert torch.equal(a, b)


# ---- L1: a row's bits do not depend on the batch -----------------------------------------------------------

@given(c=norm_case(), data=st.data())
def test_batch_invariant(device, c, data):
    rows, others, i, j = draw_batch_positions(data, c["n"], BUDGET)
    x, res = inputs(c, rows, device)
    w = weight_of(c, device)
    full = outs(run(c, x, w, res))
    # op(x)[i] == op(x[i:i+1])
    alone = outs(run(c, x[i:i + 1], w, None if res is None else res[i:i + 1]))
    # op(x)[i] == op(x')[j], x' = row i at position j among different rows
    x2, res2 = inputs(c, others, device, seed_shift=1000)
    x2[j] = x[i]
    if res is not None:
        res2[j] = res[i]
    moved = outs(run(c, x2, w, res2))
    for f, a, m in zip(full, alone, moved):
        assert torch.equal(f[i], a[0])
        assert torch.equal(f[i], m[j])
    assert_nontrivial(full[0], x)


# ---- L1: storage offsets, strides, views -----------------------------------------------------------------

@given(c=norm_case(sizes=LANE_EDGE_SIZES), rows=st.sampled_from((1, 2, 3, 17)),
       offset=st.sampled_from((1, 3, 5)))
def test_layouts_equal_contiguous(device, c, rows, offset):
    n = c["n"]
    x, res = inputs(c, rows, device)
    w = weight_of(c, device)
    want = outs(run(c, x, w, res))
    views = row_layouts(x, offset)
    for name, v in views.items():
        assert torch.equal(v, x)
        r = None if res is None else at_offset(res, offset)
        got = outs(run(c, v, w, r))
        for a, b in zip(got, want):
            assert torch.equal(a, b), name
    if w is not None:  # a weight at an odd offset / with a stride
        w_strided = torch.zeros(2 * n, dtype=w.dtype, device=device)
        w_strided[::2] = w
        for name, wv in {"weight at odd offset": at_offset(w, offset), "strided weight": w_strided[::2]}.items():
            for a, b in zip(outs(run(c, x, wv, res)), want):
                assert torch.equal(a, b), name
    # a broadcast (stride-0) batch of one row gives that row's bits everywhere
    one = outs(run(c, x[:1], w, None if res is None else res[:1]))
    bcast = outs(run(c, x[:1].expand(5, n), w, None if res is None else res[:1].expand(5, n)))
    for a, b in zip(one, bcast):
        assert torch.equal(b, a.expand(5, n))


@given(c=norm_case(sizes=(8, 64, 520)), lead=st.sampled_from(((2, 3), (1,), (4, 1, 2))))
def test_multi_dim_normalized_shape(device, c, lead):
    """normalized_shape of two dims == the same rows flattened; leading dims are just rows."""
    n = c["n"]
    a = 8 if n % 8 == 0 else 1
    x = make(lead + (a, n // a), c["dtype"], device, c["profile"], c["seed"])
    w = weight_of(c, device)
    w2 = None if w is None else w.reshape(a, n // a)
    kw = dict(weight_mode=c["mode"], compensated=c["compensated"])
    got = detops.rms_norm(x, (a, n // a), w2, c["eps"], **kw)
    flat = detops.rms_norm(x.reshape(-1, n), n, w, c["eps"], **kw)
    assert got.shape == x.shape
    assert torch.equal(got.reshape(-1, n), flat)


def test_empty_batch(device):
    x = torch.empty(0, 16, device=device)
    assert detops.rms_norm(x, 16).shape == (0, 16)
    y, s = detops.add_rms_norm(x, x, 16)
    assert y.shape == s.shape == (0, 16)


# ---- fused residual == separate add then norm ------------------------------------------------------------

@given(c=norm_case(), rows=st.integers(1, 4))
def test_fused_residual_equals_separate(device, c, rows):
    c = dict(c, residual=True)
    x, res = inputs(c, rows, device)
    w = weight_of(c, device)
    y, x_sum = run(c, x, w, res)
    added = x + res  # torch rounds the fp32 sum to the input dtype once, as §3 specifies
    assert torch.equal(x_sum, added)
    assert torch.equal(y, run(c, added, w))


# ---- L5: CPU == CUDA ---------------------------------------------------------------------------------------

@requires_cuda
@given(c=norm_case(), rows=st.sampled_from(ROW_COUNTS))
def test_device_parity(c, rows):
    rows = max(1, min(rows, BUDGET // c["n"]))
    x, res = inputs(c, rows, "cpu")
    w = weight_of(c, "cpu")
    on_cpu = outs(run(c, x, w, res))
    on_gpu = outs(run(c, x.cuda(), None if w is None else w.cuda(), None if res is None else res.cuda()))
    for a, b in zip(on_cpu, on_gpu):
        assert torch.equal(a, b.cpu())


# ---- accuracy against float64 ------------------------------------------------------------------------------
# Two checks (ARCHITECTURE.md habit 6): every element within the derived bound of detops/testing/reference.py
# (rms_norm_error_bound, first-order analysis of the §2–§3 order), and the normwise error over 64 independent
# rows at most 2x the stock op's (FlashAttention's "<= 2x PyTorch's own error"). 64 rows because a single
# row's error is one draw of a ~1 u quantity (both implementations round the same few operations; either
# can land near 0 by luck: ratios of 13x were measured at one row); over 64 rows the measured ratio stayed
# below 1.5 in 600 random configurations of every dtype, mode and profile.
ACCURACY_ROWS = 64
STOCK_FACTOR = 2.0


@given(c=norm_case(sizes=tuple(s for s in NORM_SIZES if s <= 5120)))
def test_accuracy(device, c):
    x, res = inputs(c, ACCURACY_ROWS, device)
    w = weight_of(c, device)
    y = outs(run(c, x, w, res))[0]
    oracle = R.rms_norm_f64(x, c["n"], w, c["eps"], c["mode"], residual=res)
    bound = R.rms_norm_error_bound(x, c["n"], w, c["eps"], c["mode"], residual=res)
    err = (y.cpu().double() - oracle).abs()
    assert (err <= bound).all(), f"max err/bound {(err / bound).max().item():.3g}"
    stock_y = stock(x if res is None else x + res, w, c["eps"], c["mode"])
    if c["mode"] == "cast_first" and y.dtype != x.dtype:
        # A wider weight: the result carries one rounding to the input dtype by definition (HF Llama), and
        # single flips of it (probability ~ the fp32 error of x*r, for either implementation) dominate an
        # error at fp32 resolution: 0 flips against 1 makes any ratio (measured: infinite). Compare at the
        # resolution the mode computes at (measured ratio <= 1.003 over 300 draws); the per-element bound
        # above stays at fp32 resolution plus one input-dtype ulp.
        y, stock_y = y.to(x.dtype), stock_y.to(x.dtype)
    e_detops, e_stock = R.normwise_error(y, oracle), R.normwise_error(stock_y, oracle)
    assert e_detops <= STOCK_FACTOR * e_stock, (e_detops, e_stock)


def _ill_conditioned_row(device):
    """One large square and many squares below half an ulp of it in the same lane (REDUCTION_ORDER.md §2:
    element i is in lane i mod L): a plain lane drops every one of them, a Neumaier lane keeps them."""
    n = 16 * R.lanes(10 ** 9)  # 16 elements in every lane of the widest lane count
    x = torch.full((1, n), 2.0 ** -13, device=device)  # squares 2^-26 < half an ulp of 1
    x[0, 0] = 1.0
    return x


def test_compensated_more_accurate_on_designed_case(device):
    x = _ill_conditioned_row(device)
    oracle = R.rms_norm_f64(x, x.shape[-1], None, 1e-6)
    e_plain = R.normwise_error(detops.rms_norm(x, x.shape[-1], eps=1e-6), oracle)
    e_comp = R.normwise_error(detops.rms_norm(x, x.shape[-1], eps=1e-6, compensated=True), oracle)
    assert e_comp < e_plain, (e_comp, e_plain)
    # and the plain error is the one the design predicts: 15 lost squares of 2^-26 in a sum of ~1.001
    assert e_plain > 2.0 ** -24


# ---- refusals ----------------------------------------------------------------------------------------------

def _bad_calls(device):
    x = torch.randn(4, 8, device=device)
    w = torch.randn(8, device=device)
    return [
        (lambda: detops.rms_norm(x.to(torch.int32), 8), "input must be float32, bfloat16 or float16"),
        (lambda: detops.rms_norm(x.double(), 8), "input must be float32, bfloat16 or float16"),
        (lambda: detops.rms_norm(x, 7), "does not end with normalized_shape"),
        (lambda: detops.rms_norm(x, (4, 8, 1)), "does not fit input"),
        (lambda: detops.rms_norm(x, []), "does not fit input"),
        (lambda: detops.rms_norm(x, 8, torch.randn(7, device=device)), "weight shape"),
        (lambda: detops.rms_norm(x, 8, w.to(torch.int64)), "weight must be float32, bfloat16 or float16"),
        (lambda: detops.rms_norm(x, 8, w, weight_mode="gemma"), "weight_mode must be"),
        (lambda: detops.rms_norm(x, 8, None, weight_mode="cast_first"), "needs a weight"),
        (lambda: detops.add_rms_norm(x, x.bfloat16(), 8, w), "residual dtype"),
        (lambda: detops.add_rms_norm(x, x[:2], 8, w), "residual shape"),
    ]


def test_bad_inputs_raise_with_reason(device):
    for call, reason in _bad_calls(device):
        with pytest.raises(RuntimeError, match=reason):
            call()


# ---- custom-op plumbing: opcheck (schema, fake/meta, autograd registration, AOT dispatch) and compile --------

def _opcheck_cases(device):
    x = make((3, 5, 16), torch.float32, device, seed=1)
    w = make((16,), torch.float32, device, seed=2)
    xb = x.bfloat16()
    return [
        (torch.ops.detops.rms_norm, (x, [16], w, 1e-6, "plain", False)),
        (torch.ops.detops.rms_norm, (xb, [5, 16], None, 1e-6, "plain", True)),
        (torch.ops.detops.rms_norm, (xb, [16], w, 1e-6, "cast_first", False)),
        (torch.ops.detops.rms_norm, (x.transpose(0, 1), [16], w.half(), 1e-5, "offset", False)),
        (torch.ops.detops.add_rms_norm, (xb, xb * 2, [16], w.bfloat16(), 1e-6, "offset", True)),
    ]


def test_opcheck(device):
    for op, args in _opcheck_cases(device):
        torch.library.opcheck(op, args)


def test_torch_compile_fullgraph_same_bits(device):
    def f(x, r, w):
        y = detops.rms_norm(x, x.shape[-1], w, 1e-6, weight_mode="cast_first")
        a, s = detops.add_rms_norm(x, r, x.shape[-1], w, 1e-6, weight_mode="offset", compensated=True)
        return y, a, s

    compiled = torch.compile(f, fullgraph=True)
    for rows in (3, 17, 64):  # the second shape makes dynamo retrace with a symbolic row count
        x = make((rows, 64), torch.bfloat16, device, seed=rows)
        r = make((rows, 64), torch.bfloat16, device, seed=rows + 1)
        w = make((64,), torch.float32, device, seed=5)
        for a, b in zip(compiled(x, r, w), f(x, r, w)):
            assert a.dtype == b.dtype and torch.equal(a, b)
