"""detops.ops.row_dot, the backwards' row sums (REDUCTION_ORDER.md §2, §10 rule 2): the same-order reference as
torch.equal, L1 (a row's bits do not depend on the other rows, their number or the storage layout), CPU == CUDA
(L5), refusals; and stock's torch.sum changing a row's bits with the row count on CUDA (negative control)."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from detops._lib import ops
from detops.testing import reference as R
from conftest import requires_cuda
from values import DTYPES, LANE_EDGE_SIZES, MAX_LANES, ROW_COUNTS, make, profile_st, row_layouts, seed_st

# Row lengths at every §2 lane threshold, and rows of several chunks (a vocabulary's worth).
SIZES = R.lane_threshold_sizes() + (3 * MAX_LANES + 5, 32768)
BUDGET = 1 << 20


def reference(a, b=None):
    """§2 order in numpy float32: the fp32 product of the widened values, lanes, tree."""
    y = a.float() if b is None else a.float() * b.float()
    return torch.from_numpy(R.lane_sum(y.reshape(-1, a.shape[-1]).cpu().numpy())).reshape(a.shape[:-1])


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
