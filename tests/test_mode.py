"""The aten mode (detops.mode / enable / disable): routing, nesting, exception safety, refusals."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st

import detops
from detops.aten_mode import routed_count

from values import make, profile_st, seed_st

FLOATS = (torch.float32, torch.bfloat16)


def test_routes_to_detops(device):
    a = make((33, 70), torch.bfloat16, device, seed=1)
    b = make((70, 17), torch.bfloat16, device, seed=2)
    bias = make((17,), torch.bfloat16, device, seed=3)
    x3 = make((2, 5, 70), torch.float32, device, seed=4)
    w = make((9, 70), torch.float32, device, seed=5)
    a3, b3 = make((3, 6, 1), torch.float32, device, seed=6), make((3, 1, 8), torch.float32, device, seed=7)
    s = make((7, 300), torch.bfloat16, device, seed=8)
    before = routed_count()
    with detops.mode():
        got = dict(mm=a @ b, addmm=F.linear(a, b.t(), bias), linear3d=F.linear(x3, w), bmm=a3 @ b3,  # RoPE's K=1
                   softmax=torch.softmax(s, -1), softmax_f32=F.softmax(s, -1, dtype=torch.float32),
                   log_softmax=F.log_softmax(s.float(), -1))
    assert routed_count() - before == 7
    assert torch.equal(got["mm"], detops.mm(a, b))
    assert torch.equal(got["addmm"], detops.addmm(bias, a, b))
    assert torch.equal(got["linear3d"], detops.linear(x3, w))
    assert torch.equal(got["bmm"], detops.bmm(a3, b3))
    assert torch.equal(got["softmax"], detops.softmax(s, -1))
    assert torch.equal(got["softmax_f32"], detops.softmax(s.float(), -1))
    assert torch.equal(got["log_softmax"], detops.log_softmax(s.float(), -1))


@given(m=st.sampled_from((1, 2, 15, 16, 17, 64, 129)), k=st.integers(1, 200), n=st.integers(1, 40),
       dtype=st.sampled_from(FLOATS), profile=profile_st, seed=seed_st)
def test_linear_rows_batch_invariant_under_mode(m, k, n, dtype, profile, seed, device):
    # L1 through the mode: a row of F.linear alone == the same row among m rows.
    x = make((m, k), dtype, device, profile, seed)
    w = make((n, k), dtype, device, profile, seed + 1)
    with detops.mode():
        full = F.linear(x, w)
        row = F.linear(x[m // 2:m // 2 + 1], w)
    assert torch.equal(full[m // 2:m // 2 + 1], row)


def test_stock_restored_after_exit(device):
    # Outside the mode torch's kernel runs again: its bits, not detops'.
    a = make((40, 300), torch.float32, device, seed=1)
    b = make((300, 50), torch.float32, device, seed=2)
    stock = a @ b
    with detops.mode():
        inside = a @ b
    assert torch.equal(a @ b, stock)
    assert torch.equal(inside, detops.mm(a, b))
    assert not detops.is_enabled()


def test_nesting_and_counting():
    assert not detops.is_enabled()
    with detops.mode():
        with detops.mode():
            assert detops.is_enabled()
        assert detops.is_enabled()  # the inner exit does not turn off the outer mode
        with detops.mode(False):
            assert not detops.is_enabled()
            n = routed_count()
            torch.randn(3, 4) @ torch.randn(4, 5)
            assert routed_count() == n  # suspended: stock kernel
        assert detops.is_enabled()
    assert not detops.is_enabled()
    detops.enable()
    detops.enable()
    detops.disable()
    assert detops.is_enabled()
    detops.disable()
    assert not detops.is_enabled()
    with pytest.raises(RuntimeError, match="without a matching"):
        detops.disable()


def test_exception_safe():
    with pytest.raises(KeyError):
        with detops.mode():
            with detops.mode():
                raise KeyError("boom")
    assert not detops.is_enabled()


def test_refuses_float64_and_routes_integers_exactly():
    a, b = torch.randn(4, 5, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    with detops.mode():
        with pytest.raises(NotImplementedError, match="no detops kernel"):
            a @ b
        with pytest.raises(NotImplementedError, match="no detops kernel"):
            torch.softmax(a, -1)
        ia = torch.randint(-50, 50, (6, 7))
        ib = torch.randint(-50, 50, (7, 4))
        got = ia @ ib
        got_b = ia[None] @ ib[None]
    assert torch.equal(got, ia @ ib)  # exact: integer sums do not depend on the order
    assert torch.equal(got_b[0], ia @ ib)
    assert not detops.is_enabled()


def test_addmm_other_broadcasts(device):
    # Bias (M, N) and alpha/beta != 1: detops product + elementwise epilogue (still row-invariant).
    a = make((8, 30), torch.float32, device, seed=1)
    b = make((30, 6), torch.float32, device, seed=2)
    bias = make((8, 6), torch.float32, device, seed=3)
    with detops.mode():
        got = torch.addmm(bias, a, b, beta=0.5, alpha=2.0)
        row = torch.addmm(bias[3:4], a[3:4], b, beta=0.5, alpha=2.0)
    assert torch.equal(got, detops.mm(a, b) * 2.0 + bias * 0.5)
    assert torch.equal(got[3:4], row)


# ---------------------------------------------------------------------------------------------------------
# CPU elementwise functions (REDUCTION_ORDER.md §8): torch's SIMD body and scalar tail disagree in the last bit,
# so a row's SiLU/GELU/cos/sin depends on where the row sits. Under the mode every element is computed alike.
ELEMENTWISE = {
    "exp": torch.exp, "sin": torch.sin, "cos": torch.cos, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
    "silu": F.silu, "gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
}
IN_PLACE = ("exp", "sin", "cos", "tanh", "sigmoid")  # Tensor.<fn>_


@given(fn=st.sampled_from(sorted(ELEMENTWISE)), rows=st.sampled_from((1, 2, 3, 5, 17, 33)),
       n=st.integers(1, 70), dtype=st.sampled_from((torch.float32, torch.bfloat16, torch.float16)),
       profile=profile_st, seed=seed_st, data=st.data())
def test_cpu_elementwise_rows_invariant_under_mode(fn, rows, n, dtype, profile, seed, data):
    f = ELEMENTWISE[fn]
    x = make((rows, n), dtype, "cpu", profile, seed, scale=4.0)
    i = data.draw(st.integers(0, rows - 1), label="row")
    lo = data.draw(st.integers(0, n - 1), label="first column")
    with detops.mode():
        before = routed_count()
        full = f(x)
        assert routed_count() == before + 1
        part = f(x[i:i + 1, lo:].contiguous())   # the row's tail alone: other flat indices, other SIMD lanes
        if fn in IN_PLACE:
            in_place = x.clone()
            getattr(in_place, fn + "_")()
            assert torch.equal(in_place, full)
    assert torch.equal(part, full[i:i + 1, lo:])
    # accuracy (relative, where the float64 result is representable in dtype): within what torch itself
    # achieves, plus one rounding of the dtype
    ref = f(x.double())
    ok = ref.abs() < torch.finfo(dtype).max / 2
    scale = ref.abs().clamp(min=torch.finfo(dtype).tiny)
    stock_err = torch.where(ok, (f(x).double() - ref).abs() / scale, 0.0).max()
    ours_err = torch.where(ok, (full.double() - ref).abs() / scale, 0.0).max()
    assert ours_err <= 2 * stock_err + torch.finfo(dtype).eps
    assert torch.equal(full.double()[~ok].isinf(), f(x).double()[~ok].isinf())  # overflows like torch


@pytest.mark.parametrize("fn", ["sigmoid", "silu"])
def test_cpu_elementwise_stock_control(fn):
    # Negative control: stock torch computes the same values with other bits when they sit in the scalar tail
    # (one element at a time) than in the SIMD body (measured on AVX2 and AVX-512 builds).
    f = ELEMENTWISE[fn]
    x = make((4096,), torch.float32, "cpu", "normal", 7, scale=8.0)
    body = f(x)
    tail = torch.cat([f(x[j:j + 1]) for j in range(x.numel())])
    assert not torch.equal(body, tail)
    with detops.mode():
        assert torch.equal(f(x), torch.cat([f(x[j:j + 1]) for j in range(x.numel())]))


def test_cpu_elementwise_refusals_and_cuda_untouched():
    with pytest.raises(RuntimeError, match="unknown function"):
        detops.ops.elementwise(torch.ones(3), "log")
    with detops.mode(), pytest.raises(NotImplementedError, match="complex"):
        torch.exp(torch.ones(2, dtype=torch.complex64))
    with detops.mode():  # integers promote like torch
        assert torch.equal(torch.exp(torch.zeros(3, dtype=torch.long)), torch.ones(3))
