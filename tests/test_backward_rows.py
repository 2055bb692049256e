"""The backwards' row kernels (REDUCTION_ORDER.md §10 rules 2 and 4): row_dot, softmax_backward, rms_norm_backward,
and the loss's cross_entropy_nll / cross_entropy_backward. The same-order references as torch.equal, L1 (a row's
bits do not depend on the other rows, their number or the storage layout), CPU == CUDA (L5), refusals; and stock's
torch.sum changing a row's bits with the row count on CUDA (negative control). The gradients they make (invariance across layouts, accuracy against float64) are
tests/test_backward.py's."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from detops._lib import ops
from detops.testing import reference as R
from conftest import requires_cuda
from values import (DTYPES, LANE_EDGE_SIZES, MAX_LANES, ROW_COUNTS, TOKEN_ALIGN, around, make, profile_st, row_layouts,
                    seed_st)

# Row lengths at every §2 lane threshold, and rows of several chunks (a vocabulary's worth).
SIZES = R.lane_threshold_sizes() + (3 * MAX_LANES + 5, 32768)
BUDGET = 1 << 20


reference = R.row_dot_same_order


@st.composite
def dot_case(draw):
    n = draw(st.sampled_from(SIZES))
    rows = draw(st.sampled_from([m for m in ROW_COUNTS if m * n <= BUDGET]))
    return dict(n=n, rows=rows, a_dtype=draw(st.sampled_from(DTYPES)), b_dtype=draw(st.sampled_from(DTYPES + (None,))),
                profile=draw(profile_st), seed=draw(seed_st))


def operands(c, device, rows=None):
    rows = c["rows"] if rows is None else rows
    a = make((rows, c["n"]), c["a_dtype"], device, c["profile"], c["seed"])
    b = None if c["b_dtype"] is None else make((rows, c["n"]), c["b_dtype"], device, c["profile"], c["seed"] + 1)
    return a, b


@given(c=dot_case())
def test_same_order_reference(device, c):
    a, b = operands(c, device)
    out = ops.row_dot(a, b)
    assert out.dtype == torch.float32 and out.shape == (c["rows"],)
    assert torch.equal(out.cpu(), reference(a, b))


@given(c=dot_case(), data=st.data())
def test_l1_rows_and_layouts(device, c, data):
    """Row i of one batch == the same row at position j of a batch of another size, and in any storage layout."""
    others = data.draw(st.sampled_from([m for m in ROW_COUNTS if m * c["n"] <= BUDGET]), label="others")
    a, b = operands(c, device)
    i = data.draw(st.integers(0, c["rows"] - 1), label="i")
    j = data.draw(st.integers(0, others - 1), label="j")
    a2, b2 = operands(c, device, rows=others)
    a2[j] = a[i]
    if b is not None:
        b2[j] = b[i]
    assert torch.equal(ops.row_dot(a, b)[i], ops.row_dot(a2, b2)[j])
    offset = data.draw(st.integers(1, 7), label="offset")
    want = ops.row_dot(a, b)
    for name, la in row_layouts(a, offset).items():
        lb = None if b is None else row_layouts(b, offset)[name]
        assert torch.equal(ops.row_dot(la, lb), want), name


def test_leading_dims_and_empty(device):
    a = make((2, 3, 5, 40), device=device, seed=3)
    assert torch.equal(ops.row_dot(a), ops.row_dot(a.reshape(-1, 40)).reshape(2, 3, 5))
    assert ops.row_dot(a[..., :0]).eq(0).all() and ops.row_dot(a[..., :0]).shape == (2, 3, 5)
    assert ops.row_dot(a[:0]).shape == (0, 3, 5)


def test_non_finite_like_a_sum(device):
    a = make((3, 300), device=device, seed=4)
    a[0, 7], a[1, 9], a[2, 1] = float("inf"), float("nan"), float("-inf")
    out = ops.row_dot(a)
    assert out[0] == float("inf") and torch.isnan(out[1]) and out[2] == float("-inf")


@requires_cuda
@given(c=dot_case())
def test_cpu_equals_cuda(c):
    a, b = operands(c, "cpu")
    assert torch.equal(ops.row_dot(a.cuda(), None if b is None else b.cuda()).cpu(), ops.row_dot(a, b))


@requires_cuda
def test_stock_sum_changes_with_row_count():
    """Negative control: torch.sum's CUDA reduction picks its split from the number of rows, so one long row
    summed alone and among 4096 rows differs; row_dot gives both the same bits."""
    x = make((4096, 32768), device="cuda", seed=5)
    alone, among = x[:1].sum(-1)[0], x.sum(-1)[0]
    assert not torch.equal(alone, among)
    assert torch.equal(ops.row_dot(x[:1])[0], ops.row_dot(x)[0])


def test_bad_inputs_raise():
    a = torch.ones(3, 4)
    with pytest.raises(RuntimeError, match="same shape"):
        ops.row_dot(a, torch.ones(3, 5))
    with pytest.raises(RuntimeError, match="float32, bfloat16 or float16"):
        ops.row_dot(torch.ones(3, 4, dtype=torch.int64))
    with pytest.raises(RuntimeError, match="float32, bfloat16 or float16"):
        ops.row_dot(a, torch.ones(3, 4, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="at least one dim"):
        ops.row_dot(torch.tensor(1.0))


# ---- softmax_backward / rms_norm_backward ----------------------------------------------------------------

@st.composite
def grad_case(draw):
    n = draw(st.sampled_from(SIZES))
    return dict(n=n, rows=draw(st.sampled_from([m for m in ROW_COUNTS if m * n <= BUDGET])),
                dtype=draw(st.sampled_from(DTYPES)), profile=draw(profile_st), seed=draw(seed_st))


def softmax_operands(c, device, log, rows=None):
    rows = c["rows"] if rows is None else rows
    x = make((rows, c["n"]), c["dtype"], device, c["profile"], c["seed"])
    a = torch.softmax(x.float(), -1) if log else torch.softmax(x.float(), -1).to(c["dtype"])
    return a, make((rows, c["n"]), c["dtype"], device, c["profile"], c["seed"] + 1)


@pytest.mark.parametrize("log", [False, True])
@given(c=grad_case())
def test_softmax_backward_same_order(device, log, c):
    a, g = softmax_operands(c, device, log)
    dx = ops.softmax_backward(a, g, log, c["dtype"])
    assert dx.dtype == c["dtype"]
    assert torch.equal(dx.cpu(), R.softmax_backward_same_order(a, g, log, c["dtype"]))


def rms_operands(c, device, rows=None, weighted=True, extra=False):
    rows = c["rows"] if rows is None else rows
    x = make((rows, c["n"]), c["dtype"], device, c["profile"], c["seed"])
    g = make((rows, c["n"]), c["dtype"], device, "normal", c["seed"] + 1)
    w = make((c["n"],), torch.float32, device, "normal", c["seed"] + 2) if weighted else None
    e = make((rows, c["n"]), c["dtype"], device, "normal", c["seed"] + 3) if extra else None
    return x, g, w, e


@given(c=grad_case(), weighted=st.booleans(), extra=st.booleans(), cast_first=st.booleans(),
       compensated=st.booleans())
def test_rms_norm_backward_same_order(device, c, weighted, extra, cast_first, compensated):
    x, g, w, e = rms_operands(c, device, weighted=weighted, extra=extra)
    dx, gxhat = ops.rms_norm_backward(x, g, w, e, 1e-6, cast_first, compensated, True)
    want_dx, want_gxhat = R.rms_norm_backward_same_order(x, g, w, 1e-6, cast_first, compensated, e)
    assert dx.dtype == x.dtype and torch.equal(dx.cpu(), want_dx)
    assert torch.equal(gxhat.cpu(), want_gxhat)


def test_rms_norm_backward_r_is_the_forwards(device):
    """The backward's r is the forward's (the same lanes, plain or compensated): with g = 1 and no weight, g·x̂ = x·r
    is exactly the forward's fp32 output."""
    for compensated in (False, True):
        x = make((7, 3000), device=device, profile="mixed", seed=8)
        y = torch.ops.detops.rms_norm(x, [3000], None, 1e-6, "plain", compensated)
        _, gxhat = ops.rms_norm_backward(x, torch.ones_like(x), None, None, 1e-6, False, compensated, True)
        assert torch.equal(gxhat, y)


@given(c=grad_case(), data=st.data())
def test_backward_rows_l1(device, c, data):
    """A row's dx is the same at any position of a batch of any size, and in any storage layout."""
    others = data.draw(st.sampled_from([m for m in ROW_COUNTS if m * c["n"] <= BUDGET]), label="others")
    i = data.draw(st.integers(0, c["rows"] - 1), label="i")
    j = data.draw(st.integers(0, others - 1), label="j")
    a, g = softmax_operands(c, device, False)
    a2, g2 = softmax_operands(c, device, False, rows=others)
    a2[j], g2[j] = a[i], g[i]
    assert torch.equal(ops.softmax_backward(a, g, False, c["dtype"])[i], ops.softmax_backward(a2, g2, False, c["dtype"])[j])
    x, gr, w, _ = rms_operands(c, device)
    x2, gr2, _, _ = rms_operands(c, device, rows=others)
    x2[j], gr2[j] = x[i], gr[i]
    one = ops.rms_norm_backward(x, gr, w, None, 1e-6, False, False, True)
    two = ops.rms_norm_backward(x2, gr2, w, None, 1e-6, False, False, True)
    assert torch.equal(one[0][i], two[0][j]) and torch.equal(one[1][i], two[1][j])
    offset = data.draw(st.integers(1, 7), label="offset")
    for name, la in row_layouts(x, offset).items():
        lg = row_layouts(gr, offset)[name]
        got = ops.rms_norm_backward(la, lg, w, None, 1e-6, False, False, True)
        assert torch.equal(got[0], one[0]) and torch.equal(got[1], one[1]), name
        assert torch.equal(ops.softmax_backward(row_layouts(a, offset)[name], row_layouts(g, offset)[name], False,
                                                c["dtype"]), ops.softmax_backward(a, g, False, c["dtype"])), name


@requires_cuda
@given(c=grad_case(), log=st.booleans())
def test_backward_rows_cpu_equals_cuda(c, log):
    a, g = softmax_operands(c, "cpu", log)
    assert torch.equal(ops.softmax_backward(a.cuda(), g.cuda(), log, c["dtype"]).cpu(),
                       ops.softmax_backward(a, g, log, c["dtype"]))
    x, gr, w, e = rms_operands(c, "cpu", extra=log)
    on_cuda = ops.rms_norm_backward(x.cuda(), gr.cuda(), w.cuda(), None if e is None else e.cuda(), 1e-6, log, log,
                                    True)
    on_cpu = ops.rms_norm_backward(x, gr, w, e, 1e-6, log, log, True)
    assert torch.equal(on_cuda[0].cpu(), on_cpu[0]) and torch.equal(on_cuda[1].cpu(), on_cpu[1])


def test_backward_rows_mixed_dtypes(device):
    """Operands of other dtypes are widened first (exact): the same bits as the fp32 operands."""
    x = make((5, 300), torch.float16, device, seed=9)
    g = make((5, 300), torch.bfloat16, device, seed=10)
    e = make((5, 300), torch.bfloat16, device, seed=11)
    got = ops.rms_norm_backward(x, g, None, e, 1e-5, False, False, False)
    assert torch.equal(got[0].cpu(), R.rms_norm_backward_same_order(x, g, None, 1e-5, extra=e)[0])
    assert got[1].numel() == 0
    y = torch.softmax(x.float(), -1).to(torch.float16)
    assert torch.equal(ops.softmax_backward(y, g, False, torch.float16),
                       ops.softmax_backward(y.float(), g.float(), False, torch.float32).to(torch.float16))


def test_backward_rows_bad_inputs_raise():
    with pytest.raises(RuntimeError, match="one shape"):
        ops.softmax_backward(torch.ones(3, 4), torch.ones(3, 5), False, torch.float32)
    with pytest.raises(RuntimeError, match="float32 of shape"):
        ops.rms_norm_backward(torch.ones(3, 4), torch.ones(3, 4), torch.ones(5), None, 1e-6, False, False, False)
    with pytest.raises(RuntimeError, match=r"\(rows, n\)"):
        ops.rms_norm_backward(torch.ones(3, 4, 2), torch.ones(3, 4, 2), None, None, 1e-6, False, False, False)


# ---- the loss's row kernels: cross_entropy_nll / cross_entropy_backward (§10 rule 4) --------------------------

def loss_operands(c, device, rows=None):
    """Logits and targets, every third token ignored (-100)."""
    rows = c["rows"] if rows is None else rows
    x = make((rows, c["n"]), c["dtype"], device, c["profile"], c["seed"])
    t = torch.randint(0, c["n"], (rows,), generator=torch.Generator().manual_seed(c["seed"]))
    t[c["seed"] % 3::3] = -100
    g = make((rows,), torch.float32, "cpu", "normal", c["seed"] + 1)
    return x, t.to(device), g.to(device)


@given(c=grad_case(), compensated=st.booleans(), per_token=st.booleans())
def test_cross_entropy_rows_same_order(device, c, compensated, per_token):
    x, t, g = loss_operands(c, device)
    g = g if per_token else g[:1]
    nll = ops.cross_entropy_nll(x, t, -100, compensated)
    assert nll.dtype == torch.float32 and torch.equal(nll.cpu(), R.cross_entropy_nll_same_order(x, t.cpu(), -100, compensated))
    dx = ops.cross_entropy_backward(x, t, g, -100, compensated)
    want = R.cross_entropy_backward_same_order(x, t.cpu(), g.cpu(), -100, compensated)
    assert dx.dtype == x.dtype and torch.equal(dx.cpu(), want)


def test_cross_entropy_rows_are_the_softmaxs(device):
    """The loss kernels' M and S are the softmax kernels' own: nll = -log_softmax(x)[t], and with g = 1 and float32
    logits dx = softmax(x) - onehot(t) in fp32, bit for bit (on CUDA also past the softmax's split-kernel length)."""
    for n in (300, 50257):
        for compensated in (False, True):
            x = make((5, n), torch.float32, device, "mixed", seed=n)
            t = torch.tensor([0, n - 1, 7, n // 2, -100], device=device)
            lp = torch.ops.detops.log_softmax(x, -1, torch.float32, compensated)
            want = -lp.gather(1, t.clamp(min=0)[:, None])[:, 0]
            want[4] = 0
            assert torch.equal(ops.cross_entropy_nll(x, t, -100, compensated), want), n
            p = torch.ops.detops.softmax(x, -1, torch.float32, compensated)
            rows = torch.arange(4, device=device)
            p[rows, t[:4]] = p[rows, t[:4]] - 1.0
            p[4] = 0
            got = ops.cross_entropy_backward(x, t, torch.ones(1, device=device), -100, compensated)
            assert torch.equal(got, p), n


@given(c=grad_case(), data=st.data())
def test_cross_entropy_rows_l1(device, c, data):
    """A token's loss and gradient are the same at any position of a batch of any size, and in any layout."""
    others = data.draw(st.sampled_from([m for m in ROW_COUNTS if m * c["n"] <= BUDGET]), label="others")
    i = data.draw(st.integers(0, c["rows"] - 1), label="i")
    j = data.draw(st.integers(0, others - 1), label="j")
    x, t, g = loss_operands(c, device)
    x2, t2, g2 = loss_operands(c, device, rows=others)
    x2[j], t2[j], g2[j] = x[i], t[i], g[i]
    assert torch.equal(ops.cross_entropy_nll(x, t, -100, False)[i], ops.cross_entropy_nll(x2, t2, -100, False)[j])
    one = ops.cross_entropy_backward(x, t, g, -100, False)
    assert torch.equal(one[i], ops.cross_entropy_backward(x2, t2, g2, -100, False)[j])
    offset = data.draw(st.integers(1, 7), label="offset")
    for name, lx in row_layouts(x, offset).items():
        assert torch.equal(ops.cross_entropy_backward(lx, t, g, -100, False), one), name


@requires_cuda
@given(c=grad_case(), compensated=st.booleans())
def test_cross_entropy_rows_cpu_equals_cuda(c, compensated):
    x, t, g = loss_operands(c, "cpu")
    assert torch.equal(ops.cross_entropy_nll(x.cuda(), t.cuda(), -100, compensated).cpu(),
                       ops.cross_entropy_nll(x, t, -100, compensated))
    assert torch.equal(ops.cross_entropy_backward(x.cuda(), t.cuda(), g.cuda(), -100, compensated).cpu(),
                       ops.cross_entropy_backward(x, t, g, -100, compensated))


def test_cross_entropy_rows_targets(device):
    """Ignored tokens: loss +0 and zero gradients, their logits never read (a NaN there changes nothing); a target
    out of range: NaN (the Python API refuses it before); refusals name the reason."""
    x = make((4, 50), device=device, seed=12)
    x[1] = float("nan")
    t = torch.tensor([3, -100, 60, -1], device=device)
    nll = ops.cross_entropy_nll(x, t, -100, False)
    assert nll[1].item() == 0 and not torch.signbit(nll[1]) and torch.isnan(nll[2]) and torch.isnan(nll[3])
    dx = ops.cross_entropy_backward(x, t, torch.ones(1, device=device), -100, False)
    assert dx[1].eq(0).all() and torch.isnan(dx[2]).all() and torch.isfinite(dx[0]).all()
    with pytest.raises(RuntimeError, match="int64 class indices"):
        ops.cross_entropy_nll(x, t.int(), -100, False)
    with pytest.raises(RuntimeError, match="shape of input without its last"):
        ops.cross_entropy_nll(x, t[:3], -100, False)
    with pytest.raises(RuntimeError, match="one element or the target's shape"):
        ops.cross_entropy_backward(x, t, torch.ones(2, device=device), -100, False)
    with pytest.raises(RuntimeError, match="grad must be float32"):
        ops.cross_entropy_backward(x, t, torch.ones(1, device=device, dtype=torch.float64), -100, False)
    with pytest.raises(RuntimeError, match="float32, bfloat16 or float16"):
        ops.cross_entropy_nll(x.double(), t, -100, False)


# ---- token_sum: the token reductions' column chain (§10 rule 1, §5's fp32 order) ---------------------------------

# Token counts around the §5 block (32) and the CUDA kernel's round of 16 blocks (512 tokens).
TOKEN_COUNTS = (1, 2) + around(TOKEN_ALIGN, 2 * TOKEN_ALIGN, 16 * TOKEN_ALIGN, 64 * TOKEN_ALIGN)


@given(rows=st.sampled_from(TOKEN_COUNTS), n=st.sampled_from((1, 31, 32, 33, 100, 4096)), profile=profile_st,
       seed=seed_st, compensated=st.booleans())
def test_token_sum_is_the_matmuls_chain(device, rows, n, profile, seed, compensated):
    """token_sum(a) == mm(ones(1, T), a) bit for bit (its order is §5's for that product), plain and compensated,
    also on signed zeros and non-finite values, and in a strided layout."""
    if rows * n > BUDGET:
        n = max(1, BUDGET // rows)
    a = make((rows, n), torch.float32, device, profile, seed)
    a[0, 0] = -0.0
    if rows > 2 and n > 2:
        a[rows // 2, 1], a[1, 2] = float("inf"), float("nan")
    want = ops.mm(a.new_ones(1, rows), a, compensated)[0]
    got = ops.token_sum(a, compensated)
    assert got.shape == (n,) and torch.equal(got.nan_to_num(7.0), want.nan_to_num(7.0))
    assert torch.equal(torch.signbit(got), torch.signbit(want))
    wide = torch.zeros(rows, n + 3, device=device)
    wide[:, 1:n + 1] = a
    assert torch.equal(ops.token_sum(wide[:, 1:n + 1], compensated).nan_to_num(7.0), got.nan_to_num(7.0))


@requires_cuda
@given(rows=st.sampled_from(TOKEN_COUNTS), n=st.sampled_from((1, 33, 4096)), seed=seed_st, compensated=st.booleans())
def test_token_sum_cpu_equals_cuda(rows, n, seed, compensated):
    a = make((rows, n), torch.float32, "cpu", "mixed", seed)
    assert torch.equal(ops.token_sum(a.cuda(), compensated).cpu(), ops.token_sum(a, compensated))


def test_token_sum_refusals_and_empty(device):
    assert torch.equal(ops.token_sum(torch.ones(0, 5, device=device)), torch.zeros(5, device=device))
    with pytest.raises(RuntimeError, match="must be float32"):
        ops.token_sum(torch.ones(4, 5, dtype=torch.bfloat16, device=device))
    with pytest.raises(RuntimeError, match="must be 2-D"):
        ops.token_sum(torch.ones(4, device=device))
