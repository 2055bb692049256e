"""bf16/fp16 tensor-core matmul on CUDA (REDUCTION_ORDER.md §5, CONTRACT.md L0/L1).

The kernel picks its CTA tile from the number of rows (swap-AB 64x16 / 64x64 / 64x128 for few rows, 128x128 /
128x256 for many). That is allowed only because every variant computes each element with the same chain
(ascending wgmma k-groups, fp32 accumulators, no split-K); these tests prove it bit for bit:
- every variant, forced through the test-only op `detops::_matmul_tc(a3, b3, bias, variant)`, gives the same
  bits for the whole output at row counts that cut every tile boundary;
- through the normal row-count choice (variant -1, which is `matmul_cuda_tc`), row i of an M-row product equals
  the single-row product of row i, for M across every threshold 1..16384, on LLM shapes;
- and the negative control: cuBLAS (`F.linear` / `torch.mm`) rows do change with M on the same inputs.
Accuracy is checked against float64; layouts, storage offsets, K and N that are not multiples of the tile,
bias and batching are checked for the same bits as the plain case. Tests never assert on speed.

The CUDA-core path (fp32, and compensated=True for every dtype: REDUCTION_ORDER.md §5) is checked at the end:
rows across M on an LLM shape, and CPU == CUDA bitwise (L5) at K = 4096.
"""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import requires_cuda
from tests.values import C, PROFILES, ROW_COUNTS, around, at_offset, make

pytestmark = requires_cuda

VARIANTS = {0: "swap64x16", 1: "swap64x64", 2: "swap64x128", 3: "tile128x128", 4: "tile128x256"}
# Row counts across every variant's tile size and every switch threshold (kTcSwap16MaxRows = 16, kTcSwap64MaxRows
# = 64, kTcSwap128MaxRows = 128, kTcSwap128MaxRowsNarrow = 384, kTcTile128MaxRowsNarrow = 512,
# kTcTile256MaxRowsNarrow = 1024, kTcTile128MaxRows = 2048: tests/values.py ROW_COUNTS, plus 383 / 384 / 385),
# half the smallest tile (7, 8, 9) and large M.
SWEEP_M = tuple(sorted(set(ROW_COUNTS + around(C["kTcSwap16TileRows"] // 2, C["kTcSwap128MaxRowsNarrow"]))
                       - {1023, 1025})) + (
    4096, 8192, 16384)
LLM_SHAPES = ((4096, 4096), (4096, 14336), (14336, 4096))  # (K, N)
TC_DTYPES = (torch.bfloat16, torch.float16)


def tc(a3, b3, bias=None, variant=-1):
    return torch.ops.detops._matmul_tc(a3, b3, bias, variant)


def tc_linear(x, w, bias=None, variant=-1):
    """x (M, K) @ w (N, K)^T (+ bias): nn.Linear's layout, B = w.t() is column-major."""
    return tc(x[None], w.t()[None], bias, variant)[0]


def gpu_randn(shape, dtype, seed, scale=1.0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return (torch.randn(shape, generator=g, device="cuda", dtype=torch.float32) * scale).to(dtype)


def probe_rows(m):
    return sorted({0, 1 % m, m // 2, m - 1})


def assert_rows_match_single(x, w, out, bias=None):
    """Each probed row of `out` equals the product computed for that row alone (L1)."""
    for r in probe_rows(x.shape[0]):
        single = tc_linear(x[r:r + 1], w, bias)
        assert torch.equal(out[r:r + 1], single), f"row {r} of M={x.shape[0]} differs from the single-row result"


# ---------------------------------------------------------------- the variant proof

@pytest.mark.parametrize("dtype", TC_DTYPES)
@pytest.mark.parametrize("m", (1, 5, 16, 17, 64, 65, 130, 255, 257, 700, 2049))
@pytest.mark.parametrize("kn", ((4096, 4096), (1000, 200), (4097, 72)))
def test_every_variant_gives_the_same_bits(dtype, m, kn):
    k, n = kn
    x = gpu_randn((m, k), dtype, seed=m)
    w = gpu_randn((n, k), dtype, seed=k + n, scale=k ** -0.5)
    bias = gpu_randn((n,), dtype, seed=7)
    for b in (None, bias):
        outs = [tc_linear(x, w, b, v) for v in VARIANTS]
        assert outs[0].abs().sum() > 0
        for v, o in zip(VARIANTS, outs):
            assert torch.equal(o, outs[0]), f"variant {VARIANTS[v]} differs from {VARIANTS[0]} (M={m}, K={k}, N={n})"


@pytest.mark.parametrize("kn", LLM_SHAPES)
def test_rows_invariant_to_m_llm_shapes(kn):
    k, n = kn
    dtype = torch.bfloat16
    x_all = gpu_randn((max(SWEEP_M), k), dtype, seed=1)
    w = gpu_randn((n, k), dtype, seed=2, scale=k ** -0.5)
    first = tc_linear(x_all[:1], w)
    last_rows = {}
    for m in SWEEP_M:
        out = tc_linear(x_all[:m], w)
        assert torch.equal(out[:1], first), f"row 0 changes at M={m} (K={k}, N={n})"
        if m in (3, 17, 65, 257, 513, 2049, 16384):
            assert_rows_match_single(x_all[:m], w, out)
        for r in (1, 2):
            if m > r:
                last_rows.setdefault(r, out[r:r + 1])
                assert torch.equal(out[r:r + 1], last_rows[r]), f"row {r} changes at M={m}"
        del out


def test_rows_invariant_to_m_odd_k_n_with_bias():
    k, n = 4097, 1003  # neither a multiple of the K tile nor of 8: zero-padded K, padded output rows
    x_all = gpu_randn((4200, k), torch.bfloat16, seed=3)
    w = gpu_randn((n, k), torch.bfloat16, seed=4, scale=k ** -0.5)
    bias = gpu_randn((n,), torch.bfloat16, seed=5)
    first = tc_linear(x_all[:1], w, bias)
    for m in (1, 2, 15, 16, 17, 63, 64, 65, 255, 256, 257, 2047, 2048, 2049, 4200):
        out = tc_linear(x_all[:m], w, bias)
        assert torch.equal(out[:1], first), f"row 0 changes at M={m}"
    assert_rows_match_single(x_all, w, out, bias)


@given(m=st.sampled_from(SWEEP_M[:26]), k=st.sampled_from((16, 64, 100, 1000, 4096, 4104)),
       n=st.sampled_from((8, 72, 256, 1000, 4096)), profile=st.sampled_from(PROFILES),
       dtype=st.sampled_from(TC_DTYPES), seed=st.integers(0, 2**31 - 1), with_bias=st.booleans())
def test_rows_invariant_drawn(m, k, n, profile, dtype, seed, with_bias):
    x = make((m, k), dtype, "cuda", profile, seed)
    w = make((n, k), dtype, "cuda", "normal", seed + 1, scale=k ** -0.5)
    bias = make((n,), dtype, "cuda", "normal", seed + 2) if with_bias else None
    out = tc_linear(x, w, bias)
    assert torch.isfinite(out).all()
    assert_rows_match_single(x, w, out, bias)
    # a permutation of the rows (other batch-mates, other positions) gives the same bits per row
    perm = torch.randperm(m, generator=torch.Generator().manual_seed(seed)).cuda()
    assert torch.equal(tc_linear(x[perm], w, bias), out[perm])


# ---------------------------------------------------------------- K, layouts, offsets, batching

@pytest.mark.parametrize("k", (4095, 4097, 4100))
def test_zero_padding_k_does_not_change_bits(k):
    m, n = 37, 256
    x = gpu_randn((m, k), torch.bfloat16, seed=k)
    w = gpu_randn((n, k), torch.bfloat16, seed=k + 1, scale=k ** -0.5)
    out = tc_linear(x, w)
    for kp in (k + (-k) % 8, k + (-k) % 64, k + (-k) % 64 + 64):  # to 8, to the K tile, one extra K tile
        xp = torch.zeros((m, kp), dtype=x.dtype, device="cuda")
        wp = torch.zeros((n, kp), dtype=w.dtype, device="cuda")
        xp[:, :k] = x
        wp[:, :k] = w
        for v in VARIANTS:
            assert torch.equal(tc_linear(xp, wp, variant=v), out), f"K={k} zero-padded to {kp} (variant {v})"


@pytest.mark.parametrize("m", (1, 40, 300))
def test_layouts_and_offsets_same_bits(m):
    k, n = 512, 384
    x = gpu_randn((m, k), torch.bfloat16, seed=m)
    w = gpu_randn((n, k), torch.bfloat16, seed=11, scale=k ** -0.5)
    bias = gpu_randn((n,), torch.bfloat16, seed=12)
    ref = tc_linear(x, w, bias)
    b_row_major = w.t().contiguous()  # (K, N) row-major: mm(a, b) with a plain b
    assert torch.equal(tc(x[None], b_row_major[None], bias)[0], ref)
    for off in (1, 3, 8):  # odd storage offsets: misaligned for TMA, copied into aligned buffers
        assert torch.equal(tc_linear(at_offset(x, off), at_offset(w, off), at_offset(bias, off)), ref)
    wide = torch.zeros((m, k + 24), dtype=x.dtype, device="cuda")
    wide[:, 5:5 + k] = x  # a strided, misaligned view of the rows
    assert torch.equal(tc_linear(wide[:, 5:5 + k], w, bias), ref)
    xt = x.t().contiguous().t()  # column-major A
    assert torch.equal(tc_linear(xt, w, bias), ref)


@given(m=st.sampled_from((8, 129, 136, 256, 264, 2048, 2049, 2056, 4104)), k=st.sampled_from((8, 64, 72, 520, 4100)),
       n=st.sampled_from((128, 136, 1000, 1004)), a_mn=st.booleans(), b_mn=st.booleans(), batch=st.sampled_from((1, 2)),
       dtype=st.sampled_from(TC_DTYPES), seed=st.integers(0, 2**31 - 1))
def test_operand_layouts_same_bits(m, k, n, a_mn, b_mn, batch, dtype, seed):
    """MN-major operands (transposed views; the un-swapped tiles read them as they are: the backward's dX = dY·W
    and dW = dYᵀ·X, mm(a, b) with a row-major b) give the bits of their K-major copies, in every variant and
    through the row-count choice. Rows, K or N off a multiple of 8 take the copy (TMA alignment)."""
    a = make((batch, m, k), dtype, "cuda", "normal", seed)
    b = make((batch, k, n), dtype, "cuda", "normal", seed + 1, scale=k ** -0.5)
    ref = tc(a, b.transpose(1, 2).contiguous().transpose(1, 2))  # both K-major
    a_view = a.transpose(1, 2).contiguous().transpose(1, 2) if a_mn else a  # unit stride along m
    b_view = b if b_mn else b.transpose(1, 2).contiguous().transpose(1, 2)  # (k, n) row-major: unit stride along n
    for v in (-1,) + tuple(VARIANTS):
        assert torch.equal(tc(a_view, b_view, None, v), ref), f"variant {v} (M={m}, K={k}, N={n})"


def test_batched_and_broadcast():
    b, m, k, n = 4, 33, 320, 136
    a3 = gpu_randn((b, m, k), torch.bfloat16, seed=21)
    b3 = gpu_randn((b, k, n), torch.bfloat16, seed=22)
    out = tc(a3, b3)
    assert out.shape == (b, m, n) and out.is_contiguous()
    for i in range(b):
        assert torch.equal(out[i:i + 1], tc(a3[i:i + 1], b3[i:i + 1]))
        assert torch.equal(out[i, 5:6], tc(a3[i:i + 1, 5:6], b3[i:i + 1])[0])
    shared = b3[:1].expand(b, k, n)  # batch stride 0: folded into one GEMM of b*m rows
    out_shared = tc(a3, shared)
    for i in range(b):
        assert torch.equal(out_shared[i:i + 1], tc(a3[i:i + 1], b3[:1]))


def test_run_to_run():
    k, n = 4096, 4096
    w = gpu_randn((n, k), torch.bfloat16, seed=31, scale=k ** -0.5)
    for m in (1, 100, 3000):
        x = gpu_randn((m, k), torch.bfloat16, seed=m)
        first = tc_linear(x, w)
        for _ in range(5):
            assert torch.equal(tc_linear(x, w), first)


def test_empty_and_k_zero():
    w = gpu_randn((8, 0), torch.bfloat16, seed=0)
    x = gpu_randn((3, 0), torch.bfloat16, seed=1)
    bias = gpu_randn((8,), torch.bfloat16, seed=2)
    assert torch.equal(tc_linear(x, w, bias), bias.expand(3, 8))
    assert tc_linear(gpu_randn((0, 16), torch.bfloat16, 0), gpu_randn((8, 16), torch.bfloat16, 0)).shape == (0, 8)


# ---------------------------------------------------------------- numerics

@pytest.mark.parametrize("dtype", TC_DTYPES)
@pytest.mark.parametrize("m", (1, 64, 300, 3000))
def test_integer_inputs_exact(dtype, m):
    """Small integers: every product and partial sum is exact in fp32, so the result is the exact sum rounded
    once (RNE) to the output dtype. Catches indexing/layout/bias bugs in every variant."""
    k, n = 1000, 136
    x = make((m, k), dtype, "cuda", "integer", seed=m)
    w = make((n, k), dtype, "cuda", "integer", seed=m + 1)
    bias = make((n,), dtype, "cuda", "integer", seed=m + 2)
    exact = (x.double() @ w.double().t() + bias.double()).to(dtype)
    for v in VARIANTS:
        assert torch.equal(tc_linear(x, w, bias, v), exact), f"variant {VARIANTS[v]}"


@pytest.mark.parametrize("dtype", TC_DTYPES)
@pytest.mark.parametrize("kn", ((4096, 4096), (14336, 512)))
def test_accuracy_vs_float64(dtype, kn):
    k, n = kn
    m = 256
    x = gpu_randn((m, k), dtype, seed=41)
    w = gpu_randn((n, k), dtype, seed=42, scale=k ** -0.5)
    exact = x.double() @ w.double().t()
    ours = tc_linear(x, w).double()
    stock = F.linear(x, w).double()
    # Derived bound: one rounding to the output dtype (u_out * |y|) plus fp32 accumulation, with truncating
    # tensor-core adds (<= 2 ulp of fp32 per k-group add): |err| <= u_out*|y| + 2*K*2^-24 * sum|a||b|.
    u_out = 2.0 ** -8 if dtype == torch.bfloat16 else 2.0 ** -11
    s = x.double().abs() @ w.double().abs().t()
    bound = u_out * exact.abs() + 2 * k * 2.0 ** -24 * s
    assert ((ours - exact).abs() <= bound).all()
    err_ours = (ours - exact).abs().mean().item()
    err_stock = (stock - exact).abs().mean().item()
    assert err_ours <= 1.1 * err_stock, (err_ours, err_stock)


# ---------------------------------------------------------------- negative control and errors

@pytest.mark.parametrize("kn", ((4096, 4096), (4096, 1024)))
def test_stock_cublas_rows_change_with_m(kn):
    """The control: cuBLAS picks kernels (split-K among them) by M, so its rows change with M on this GPU
    (measured: nn.Linear layout at M >= 64; 4096x1024 mm at M >= 256). Shows the invariance tests can fail."""
    k, n = kn
    x_all = gpu_randn((max(SWEEP_M), k), torch.bfloat16, seed=51)
    w = gpu_randn((n, k), torch.bfloat16, seed=52, scale=k ** -0.5)
    ref_linear = F.linear(x_all[:1], w)
    ref_mm = torch.mm(x_all[:1], w.t().contiguous())
    changed_linear = [m for m in SWEEP_M if not torch.equal(F.linear(x_all[:m], w)[:1], ref_linear)]
    changed_mm = [m for m in SWEEP_M if not torch.equal(torch.mm(x_all[:m], w.t().contiguous())[:1], ref_mm)]
    assert changed_linear or changed_mm, "cuBLAS rows never changed with M: the control failed"
    # and ours does not, on the same inputs
    ours_first = tc_linear(x_all[:1], w)
    for m in changed_linear + changed_mm:
        assert torch.equal(tc_linear(x_all[:m], w)[:1], ours_first)


def test_bad_inputs_raise():
    x = gpu_randn((4, 64), torch.bfloat16, 0)
    w = gpu_randn((8, 64), torch.bfloat16, 1)
    with pytest.raises(RuntimeError, match="dtype"):
        tc_linear(x.float(), w.float())
    with pytest.raises(RuntimeError, match="same dtype"):
        tc_linear(x, w.half())
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        tc(x[None], w[None])
    with pytest.raises(RuntimeError, match="bias"):
        tc_linear(x, w, gpu_randn((7,), torch.bfloat16, 2))
    with pytest.raises(RuntimeError, match="variant"):
        tc_linear(x, w, None, 99)


# ---------------------------------------------------------------- the public ops (matmul.cpp dispatches here)

def test_public_ops_take_the_tensor_core_path():
    import detops
    k, n, m = 4096, 1024, 300
    x = gpu_randn((m, k), torch.bfloat16, seed=61)
    w = gpu_randn((n, k), torch.bfloat16, seed=62, scale=k ** -0.5)
    bias = gpu_randn((n,), torch.bfloat16, seed=63)
    assert torch.equal(detops.linear(x, w, bias), tc_linear(x, w, bias))
    assert torch.equal(detops.addmm(bias, x, w.t()), tc_linear(x, w, bias))
    assert torch.equal(detops.mm(x, w.t()), tc_linear(x, w))
    a3 = gpu_randn((3, 17, k), torch.bfloat16, seed=64)
    b3 = gpu_randn((3, k, 40), torch.bfloat16, seed=65)
    assert torch.equal(detops.bmm(a3, b3), tc(a3, b3))


@pytest.mark.parametrize("kn", LLM_SHAPES)
def test_public_mm_rows_invariant_to_m(kn):
    import detops
    k, n = kn
    a = gpu_randn((max(SWEEP_M), k), torch.bfloat16, seed=71)
    w = gpu_randn((k, n), torch.bfloat16, seed=72, scale=k ** -0.5)  # (K, N) row-major, as in the brief
    first = detops.mm(a[:1], w)
    for m in SWEEP_M:
        assert torch.equal(detops.mm(a[:m], w)[:1], first), f"detops.mm row 0 changes at M={m}"


# ---------------------------------------------------------------- CUDA-core path: fp32 and compensated (§5)

CUDA_CORE_CASES = ((torch.float32, False), (torch.float32, True), (torch.bfloat16, True), (torch.float16, True))


@pytest.mark.parametrize("dtype,compensated", CUDA_CORE_CASES)
def test_fp32_and_compensated_rows_invariant_to_m(dtype, compensated):
    """L1 on the CUDA-core kernel at an LLM reduction length (K = 4096): row 0, row 1 and probed rows keep
    their bits for M across every threshold up to 4096."""
    import detops
    k, n = 4096, 1024
    x_all = gpu_randn((4096, k), dtype, seed=81)
    w = gpu_randn((n, k), dtype, seed=82, scale=k ** -0.5)
    bias = gpu_randn((n,), dtype, seed=83)
    first = detops.linear(x_all[:2], w, bias, compensated=compensated)
    assert first.abs().sum() > 0
    for m in SWEEP_M[:SWEEP_M.index(4096) + 1]:
        out = detops.linear(x_all[:m], w, bias, compensated=compensated)
        assert torch.equal(out[:min(m, 2)], first[:min(m, 2)]), f"rows 0/1 change at M={m}"
        if m in (17, 257, 2049):
            for r in probe_rows(m):
                assert torch.equal(out[r:r + 1], detops.linear(x_all[r:r + 1], w, bias, compensated=compensated))
        perm = torch.randperm(m, generator=torch.Generator().manual_seed(m)).cuda()
        if m in (65, 4096):
            assert torch.equal(detops.linear(x_all[:m][perm], w, bias, compensated=compensated), out[perm])


@pytest.mark.parametrize("dtype,compensated", CUDA_CORE_CASES)
@pytest.mark.parametrize("m", (1, 17, 300))
def test_fp32_and_compensated_cuda_equals_cpu_llm_k(dtype, compensated, m):
    """L5 at K = 4096 (128 K blocks): CUDA == CPU bitwise, nn.Linear layout with bias and mm on a row-major B."""
    import detops
    k, n = 4096, 320
    x = make((m, k), dtype, "cpu", "mixed" if dtype != torch.float16 else "normal", seed=m)
    w = make((n, k), dtype, "cpu", "normal", seed=m + 1, scale=k ** -0.5)
    bias = make((n,), dtype, "cpu", "normal", seed=m + 2)
    cpu = detops.linear(x, w, bias, compensated=compensated)
    assert torch.equal(detops.linear(x.cuda(), w.cuda(), bias.cuda(), compensated=compensated).cpu(), cpu)
    wt = w.t().contiguous()
    assert torch.equal(detops.mm(x.cuda(), wt.cuda(), compensated=compensated).cpu(),
                       detops.mm(x, wt, compensated=compensated))
    assert cpu.abs().sum() > 0


def test_compensated_bf16_does_not_take_the_tensor_core_path():
    """compensated=True on bf16 runs the CUDA-core §5 compensated order (== the CPU), not the tensor cores."""
    import detops
    k, n, m = 4096, 256, 64
    x = gpu_randn((m, k), torch.bfloat16, seed=91)
    w = gpu_randn((n, k), torch.bfloat16, seed=92, scale=k ** -0.5)
    comp = detops.linear(x, w, compensated=True)
    assert torch.equal(comp.cpu(), detops.linear(x.cpu(), w.cpu(), compensated=True))
    assert not torch.equal(comp, tc_linear(x, w))  # the tensor cores' chain gives other bits somewhere
