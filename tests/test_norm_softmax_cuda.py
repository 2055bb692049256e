"""CUDA rms_norm / add_rms_norm / softmax / log_softmax: bitwise CPU parity (contract L5), batch invariance on
the GPU (L1), odd storage offsets, run-to-run equality (L0), -inf rows, and negative controls with the stock
ops. Order: docs/REDUCTION_ORDER.md §2–§4. Every promise is `torch.equal`."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import detops
from conftest import requires_cuda
from values import C, DTYPES, LANE_VECTOR, MAX_LANES, MIN_LANES, around, at_offset, dtype_st, make, profile_st, seed_st

pytestmark = requires_cuda

# Row lengths around the lane thresholds of §2 (lanes(N) = 8 * clamp(pow2ceil(ceil(N/8)), 32, 512)) and LLM
# hidden / vocab sizes.
LENGTHS = ((1,) + around(LANE_VECTOR) + (128,) + around(MIN_LANES) + (1024, 1025) + around(MAX_LANES // 2, MAX_LANES)
           + (2 * MAX_LANES, 32000, 128256, 152064))
SMALL_LENGTHS = tuple(n for n in LENGTHS if n <= 8192)
# softmax only: around every mapping boundary of the CUDA kernels (constants.h): the split kernel for
# N > kSoftmaxSplitMinN = 16384, rows held in registers with K = 4 lanes a thread for N <= kSoftmaxRegisterChunks *
# 4096 = 32768 and with K = 1 (8-block clusters, chunks written in pairs: odd chunk counts; padded to the chunk caps
# kSoftmaxLongChunkCaps = 16 / 24 / 32 / 38 chunks of 4096) for N <= 155648, streamed beyond; and a partial last
# chunk / a last chunk that ends inside a thread's lanes or a cluster block's range.
SPLIT_LENGTHS = (16383, 16384, 16385, 16386, 20481, 28673, 32767, 32768, 32769, 36863, 36865, 65535, 65536, 65537,
                 98303, 98304, 98305, 126977, 131071, 131072, 131073, 155647, 155648, 155649, 159745)
SOFTMAX_LENGTHS = LENGTHS + SPLIT_LENGTHS
# Row counts across thresholds where stock kernels switch (vLLM's 256), and rows_per_block(N) boundaries.
# Row counts around a block's row slots (kMinBlockThreads = 256 threads) and grid sizes.
GPU_ROWS = (1, 2) + around(LANE_VECTOR, C["kMinBlockThreads"], C["kTcTile128MaxRows"]) + (65536,)
NORM_MODES = (None, "plain", "cast_first", "offset")  # None: no weight


def _rms(x, n, w, mode, res, comp):
    if res is None:
        return (detops.rms_norm(x, n, w, weight_mode=mode or "plain", compensated=comp),)
    return detops.add_rms_norm(x, res, n, w, weight_mode=mode or "plain", compensated=comp)


def _on(t, device):
    return None if t is None else t.to(device)


def _rms_both(x, n, w, mode, res, comp):
    """(CPU outputs, CUDA outputs moved to the CPU)."""
    cpu = _rms(x.cpu(), n, _on(w, "cpu"), mode, _on(res, "cpu"), comp)
    gpu = _rms(x.cuda(), n, _on(w, "cuda"), mode, _on(res, "cuda"), comp)
    return cpu, tuple(g.cpu() for g in gpu)


def _assert_all_equal(a, b, what):
    assert len(a) == len(b)
    for k, (u, v) in enumerate(zip(a, b)):
        assert u.dtype == v.dtype and u.shape == v.shape, what
        assert torch.equal(u, v), f"{what}: output {k} differs in {(u != v).sum().item()} elements"


def _not_all_zero(t):
    assert t.float().abs().sum().item() > 0


# ---- L5: CPU == CUDA -------------------------------------------------------------------------------------

# rms_norm CUDA variants (rms_norm_kernels.cu), chosen by N, dtype and alignment only: rows of N <= 128 on fewer
# threads (threads_per_row: 8 / 16 / 32 threads at N <= 64 / 65..128 / 129..256); the cached variant (16-bit,
# N % 8 == 0, aligned, ceil(N / lanes(N)) = 1 or 2 chunks: 3584 and 4096 one, 4104 / 5120 / 8192 two, 8200 / 12288
# three = general) against the general one (odd N, misaligned storage). Each must give the CPU's bits.
RMS_VARIANT_LENGTHS = (8, 16, 64, 65, 120, 128, 129, 136, 3584, 4104, 5120, 8200, 12288)


@pytest.mark.parametrize("n", sorted(set(LENGTHS) | set(RMS_VARIANT_LENGTHS)))
@pytest.mark.parametrize("dtype", DTYPES)
def test_rms_norm_cpu_equals_cuda(n, dtype):
    rows = 5
    x = make((rows, n), dtype, seed=n, profile="mixed")
    res = make((rows, n), dtype, seed=n + 1)
    w = make((n,), dtype, seed=n + 2)
    for mode in NORM_MODES:
        for r in (None, res):
            for comp in (False, True):
                cpu, gpu = _rms_both(x, n, None if mode is None else w, mode, r, comp)
                _assert_all_equal(cpu, gpu, f"rms_norm n={n} {dtype} mode={mode} res={r is not None} comp={comp}")
                _not_all_zero(gpu[0])
    # fp32 weight with 16-bit input (cast_first promotes the output to fp32), and the cached variant's fp32 weights
    if dtype != torch.float32:
        w32 = make((n,), torch.float32, seed=n + 3)
        for mode in ("plain", "cast_first", "offset"):
            cpu, gpu = _rms_both(x, n, w32, mode, res, False)
            _assert_all_equal(cpu, gpu, f"rms_norm n={n} {dtype} fp32 weight mode={mode}")


@pytest.mark.parametrize("n", SOFTMAX_LENGTHS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("out_dtype", (None, torch.float32))
def test_softmax_cpu_equals_cuda(n, dtype, out_dtype):
    x = make((3, n), dtype, seed=n, profile="mixed", scale=4.0)
    for fn in (detops.softmax, detops.log_softmax):
        for comp in (False, True):
            cpu = fn(x, -1, out_dtype, compensated=comp)
            gpu = fn(x.cuda(), -1, out_dtype, compensated=comp).cpu()
            _assert_all_equal((cpu,), (gpu,), f"{fn.__name__} n={n} {dtype}->{out_dtype} comp={comp}")
            if n > 1 or fn is detops.softmax:  # log_softmax of a single entry is exactly 0
                _not_all_zero(gpu)


@given(n=st.sampled_from(SMALL_LENGTHS), rows=st.sampled_from(GPU_ROWS[:-1]), dtype=dtype_st,
       wdtype=st.sampled_from((None,) + DTYPES), mode=st.sampled_from(NORM_MODES), residual=st.booleans(),
       comp=st.booleans(), profile=profile_st, seed=seed_st)
def test_rms_norm_cpu_equals_cuda_drawn(n, rows, dtype, wdtype, mode, residual, comp, profile, seed):
    x = make((rows, n), dtype, profile=profile, seed=seed)
    res = make((rows, n), dtype, profile=profile, seed=seed + 1) if residual else None
    w = None if mode is None else make((n,), wdtype or dtype, seed=seed + 2)
    cpu, gpu = _rms_both(x, n, w, mode, res, comp)
    _assert_all_equal(cpu, gpu, "rms_norm drawn")


@given(n=st.sampled_from(SMALL_LENGTHS), rows=st.sampled_from(GPU_ROWS[:-1]), dtype=dtype_st,
       out_dtype=st.sampled_from((None,) + DTYPES), log=st.booleans(), comp=st.booleans(), profile=profile_st,
       seed=seed_st)
def test_softmax_cpu_equals_cuda_drawn(n, rows, dtype, out_dtype, log, comp, profile, seed):
    fn = detops.log_softmax if log else detops.softmax
    x = make((rows, n), dtype, profile=profile, seed=seed, scale=8.0)
    cpu = fn(x, -1, out_dtype, compensated=comp)
    gpu = fn(x.cuda(), -1, out_dtype, compensated=comp).cpu()
    _assert_all_equal((cpu,), (gpu,), "softmax drawn")


@given(n=st.sampled_from(SPLIT_LENGTHS + (128256,)), rows=st.sampled_from((1, 2, 3, 15, 16, 17)), dtype=dtype_st,
       out_dtype=st.sampled_from((None,) + DTYPES), log=st.booleans(), comp=st.booleans(), profile=profile_st,
       seed=seed_st)
def test_softmax_long_rows_cpu_equals_cuda_drawn(n, rows, dtype, out_dtype, log, comp, profile, seed):
    fn = detops.log_softmax if log else detops.softmax
    x = make((rows, n), dtype, profile=profile, seed=seed, scale=8.0)
    cpu = fn(x, -1, out_dtype, compensated=comp)
    gpu = fn(x.cuda(), -1, out_dtype, compensated=comp).cpu()
    _assert_all_equal((cpu,), (gpu,), f"softmax long rows n={n}")


def test_softmax_neg_inf_rows_cpu_equals_cuda():
    for n in (9, 257, 4097, 16385, 32000, 32769, 65537):
        x = make((4, n), torch.float32, seed=n)
        x[0, ::3] = float("-inf")               # some -inf entries
        x[1, 1:] = float("-inf")                # a single finite entry
        x[2, :] = float("-inf")                 # all -inf: NaN, as torch
        x[3, n // 2] = float("inf")             # a +inf entry
        for dtype in DTYPES:
            xd = x.to(dtype)
            for fn in (detops.softmax, detops.log_softmax):
                for comp in (False, True):
                    cpu = fn(xd, -1, torch.float32, compensated=comp)
                    gpu = fn(xd.cuda(), -1, torch.float32, compensated=comp).cpu()
                    assert torch.equal(cpu[:2], gpu[:2]), f"{fn.__name__} n={n} {dtype} comp={comp}"
                    assert gpu[2].isnan().all() and cpu[2].isnan().all()
                    assert torch.equal(cpu[3].isnan(), gpu[3].isnan())
                    assert torch.equal(cpu[3].nan_to_num(), gpu[3].nan_to_num())


# ---- L1 on the GPU: a row's bits do not depend on the other rows ----------------------------------------

def _batch_invariant(op, x, rows_to_check):
    """op(x)[i] == op(x[i:i+1]) == op(x with row i moved among other rows)[j]."""
    out = op(x)
    m = x.shape[0]
    for i in rows_to_check:
        assert torch.equal(op(x[i:i + 1]), out[i:i + 1]), f"row {i} alone differs (M={m})"
    perm = torch.randperm(m, generator=torch.Generator().manual_seed(m)).to(x.device)
    assert torch.equal(op(x[perm]), out[perm]), f"permuted batch differs (M={m})"
    others = torch.randn(7, x.shape[1], device=x.device).to(x.dtype)
    for i in rows_to_check[:2]:
        mix = torch.cat([others[:3], x[i:i + 1], others[3:]])
        assert torch.equal(op(mix)[3:4], out[i:i + 1]), f"row {i} among other rows differs"


@pytest.mark.parametrize("rows", GPU_ROWS)
@pytest.mark.parametrize("n", (128, 2049, 4096))
def test_rms_norm_batch_invariant_gpu(rows, n):
    _rms_norm_batch_checks(rows, n if rows * n <= 2**26 else 128, compensated=True)


def _rms_norm_batch_checks(rows, n, compensated):
    """rms_norm (cast_first; and compensated if asked) and add_rms_norm, both outputs with the residual rows
    following the input rows, are row-count invariant at `rows` x `n` (bf16, CUDA)."""
    x = make((rows, n), torch.bfloat16, seed=rows, device="cuda")
    res = make((rows, n), torch.bfloat16, seed=rows + 1, device="cuda")
    w = make((n,), torch.bfloat16, seed=3, device="cuda")
    check = sorted({0, rows // 2, rows - 1})
    _batch_invariant(lambda t: detops.rms_norm(t, n, w, weight_mode="cast_first"), x, check)
    if compensated:
        _batch_invariant(lambda t: detops.rms_norm(t, n, w, compensated=True), x, check)
    xr = torch.cat([x, res], 1)  # the residual half of a row starts n elements in
    _batch_invariant(lambda t: torch.cat(detops.add_rms_norm(t[:, :n], t[:, n:], n, w), 1), xr, check)


# Row counts around a block's row slots: kMinBlockThreads / (threads per row) rows per block at 16 / 8 threads per
# row, twice that with kRmsNormRowsPerThread rows a thread, one row a thread-block, and the grid's 2048.
_SLOTS = C["kMinBlockThreads"] // C["kRmsNormMinThreadsPerRow"]
RMS_SLOT_ROWS = (1,) + around(_SLOTS // 2, _SLOTS, _SLOTS * C["kRmsNormRowsPerThread"], C["kMinBlockThreads"],
                             C["kTcTile128MaxRows"])


@pytest.mark.parametrize("n", (16, 128, 2048, 4096, 8192))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("comp", (False, True))
def test_rms_norm_row_slots_cpu_equals_cuda(n, dtype, comp):
    """Row counts around the row slots of a block (N <= 64: 32 rows per block of 256 threads, 65..128: 16; 2 rows
    per block at N = 2048 / 4096, 1 at N = 8192) and the rows-per-thread pairing: every row equals the CPU's, for
    the cached, short-row and general kernels (dtype, compensated)."""
    for rows in RMS_SLOT_ROWS:
        if rows * n > 2**22:
            continue
        x = make((rows, n), dtype, seed=rows, profile="mixed")
        res = make((rows, n), dtype, seed=rows + 1)
        w = make((n,), dtype, seed=n)
        for r in (None, res):
            cpu, gpu = _rms_both(x, n, w, "cast_first", r, comp)
            _assert_all_equal(cpu, gpu, f"rms_norm n={n} {dtype} comp={comp} rows={rows} res={r is not None}")


@pytest.mark.parametrize("n", (64, 128, 2048, 4104, 8192))
@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16))
def test_rms_norm_cached_equals_general(n, dtype):
    """The cached variant (aligned storage) and the general one (odd offsets, strided rows) give the same bits,
    and the CPU's."""
    rows = 33
    x = make((rows, n), dtype, seed=n, device="cuda")
    res = make((rows, n), dtype, seed=n + 1, device="cuda")
    w = make((n,), dtype, seed=n + 2, device="cuda")
    wide = make((rows, n + 8), dtype, seed=n + 3, device="cuda")
    wide[:, 1:n + 1] = x
    for mode in ("plain", "cast_first", "offset"):
        aligned = detops.rms_norm(x, n, w, weight_mode=mode)
        assert torch.equal(aligned.cpu(), detops.rms_norm(x.cpu(), n, w.cpu(), weight_mode=mode))
        for variant in (at_offset(x, 1), wide[:, 1:n + 1]):
            assert torch.equal(detops.rms_norm(variant, n, w, weight_mode=mode), aligned), mode
        assert torch.equal(detops.rms_norm(x, n, at_offset(w, 1), weight_mode=mode), aligned), mode
        _assert_all_equal(detops.add_rms_norm(at_offset(x, 1), res, n, w, weight_mode=mode),
                          detops.add_rms_norm(x, res, n, w, weight_mode=mode), f"add_rms_norm {mode}")


@pytest.mark.parametrize("rows", GPU_ROWS)
@pytest.mark.parametrize("n", (16, 2048, 8192))
def test_rms_norm_cached_batch_invariant_gpu(rows, n):
    # the cached and short-row variants (aligned: the residual half starts at n, a multiple of 8)
    _rms_norm_batch_checks(rows, n if rows * n <= 2**26 else 16, compensated=False)


@pytest.mark.parametrize("rows", GPU_ROWS)
@pytest.mark.parametrize("n", (100, 4097, 32000))
def test_softmax_batch_invariant_gpu(rows, n):
    if rows * n > 2**26:
        n = 100
    x = make((rows, n), torch.bfloat16, seed=rows, device="cuda", scale=4.0)
    check = sorted({0, rows // 2, rows - 1})
    _batch_invariant(lambda t: detops.softmax(t, -1, torch.float32), x, check)
    _batch_invariant(lambda t: detops.log_softmax(t, -1, torch.float32, compensated=True), x, check)


# Long rows (the split kernel's boundaries) at row counts around 1, 16, 256 and 2048.
SPLIT_ROW_CASES = [(rows, n) for n in (16385, 32768, 32769, 65536, 152064)
                   for rows in (1, 2) + around(2 * LANE_VECTOR, C["kMinBlockThreads"], C["kTcTile128MaxRows"]) if rows * n <= 2**27]


@pytest.mark.parametrize("rows,n", SPLIT_ROW_CASES)
def test_softmax_long_rows_batch_invariant_gpu(rows, n):
    x = make((rows, n), torch.bfloat16, seed=rows + n, device="cuda", scale=4.0)
    check = sorted({0, rows // 2, rows - 1})
    _batch_invariant(lambda t: detops.softmax(t, -1, torch.float32), x, check)
    _batch_invariant(lambda t: detops.log_softmax(t, -1, torch.float32, compensated=True), x, check)
    xf = make((min(rows, 17), n), torch.float32, seed=rows, device="cuda", scale=4.0)
    _batch_invariant(lambda t: detops.log_softmax(t, -1), xf, sorted({0, xf.shape[0] - 1}))


@pytest.mark.parametrize("n", (16385, 32768, 32769, 65539))
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_long_rows_odd_offsets_and_strides(n, dtype):
    rows = 3
    x = make((rows, n), dtype, seed=n, device="cuda", scale=4.0)
    wide = make((rows, n + 1), dtype, seed=n + 3, device="cuda")
    wide[:, :n] = x
    for variant in (at_offset(x, 1), at_offset(x, 3), wide[:, :n]):
        for fn in (detops.softmax, detops.log_softmax):
            for comp in (False, True):
                assert torch.equal(fn(variant, -1, compensated=comp), fn(x, -1, compensated=comp))
                assert torch.equal(fn(variant, -1, torch.float32, compensated=comp).cpu(),
                                   fn(x.cpu(), -1, torch.float32, compensated=comp))


# ---- odd offsets, strided rows, run-to-run -----------------------------------------------------------------

@pytest.mark.parametrize("n", (7, 257, 4096, 32000))
@pytest.mark.parametrize("dtype", DTYPES)
def test_odd_offsets_and_strides(n, dtype):
    rows = 5
    x = make((rows, n), dtype, seed=n, device="cuda")
    res = make((rows, n), dtype, seed=n + 1, device="cuda")
    w = make((n,), dtype, seed=n + 2, device="cuda")
    wide = make((rows, n + 1), dtype, seed=n + 3, device="cuda")
    wide[:, :n] = x
    strided = wide[:, :n]  # row stride n + 1: misaligned rows
    for off in (1, 3):
        xo, ro, wo = at_offset(x, off), at_offset(res, off), at_offset(w, off)
        for variant in (xo, strided):
            assert torch.equal(detops.rms_norm(variant, n, w), detops.rms_norm(x, n, w))
            assert torch.equal(detops.rms_norm(x, n, wo, weight_mode="offset"),
                               detops.rms_norm(x, n, w, weight_mode="offset"))
            _assert_all_equal(detops.add_rms_norm(variant, ro, n, wo), detops.add_rms_norm(x, res, n, w),
                              "add_rms_norm offset")
            for fn in (detops.softmax, detops.log_softmax):
                for comp in (False, True):
                    assert torch.equal(fn(variant, -1, compensated=comp), fn(x, -1, compensated=comp))
        # and the misaligned GPU result equals the CPU
        assert torch.equal(detops.softmax(xo, -1).cpu(), detops.softmax(x.cpu(), -1))
        assert torch.equal(detops.rms_norm(xo, n, wo).cpu(), detops.rms_norm(x.cpu(), n, w.cpu()))


def test_run_to_run():
    x = make((257, 4097), torch.bfloat16, seed=1, device="cuda")
    w = make((4097,), torch.bfloat16, seed=2, device="cuda")
    first = (detops.rms_norm(x, 4097, w), detops.softmax(x, -1, torch.float32),
             detops.log_softmax(x, -1, compensated=True))
    for _ in range(5):
        again = (detops.rms_norm(x, 4097, w), detops.softmax(x, -1, torch.float32),
                 detops.log_softmax(x, -1, compensated=True))
        _assert_all_equal(first, again, "run to run")


# ---- negative controls: the stock ops fail the same checks -----------------------------------------------

def _hf_rms_norm(x, w, eps):
    """transformers' LlamaRMSNorm forward."""
    h = x.to(torch.float32)
    var = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(var + eps)
    return w * h.to(x.dtype)


STOCK = {
    "torch.softmax": lambda x: torch.softmax(x, -1, dtype=torch.float32),
    "torch.log_softmax": lambda x: torch.log_softmax(x, -1, dtype=torch.float32),
    "F.rms_norm": lambda x: F.rms_norm(x, (x.shape[-1],), torch.ones(x.shape[-1], dtype=x.dtype, device=x.device)
                                       * 1.5, 1e-6),
    "hf_rms_norm": lambda x: _hf_rms_norm(x, torch.ones(x.shape[-1], dtype=x.dtype, device=x.device) * 1.5, 1e-6),
}


@pytest.mark.parametrize("name", sorted(STOCK))
def test_stock_cpu_differs_from_cuda(name):
    """Negative control for L5: the stock op's CPU and CUDA results differ for some drawn input, where
    detops' are equal on the same inputs."""
    op = STOCK[name]
    found = False
    for seed in range(8):
        for n, dtype in ((4096, torch.float32), (32000, torch.float32), (4096, torch.bfloat16)):
            x = make((16, n), dtype, seed=seed, profile="normal", scale=3.0)
            if not torch.equal(op(x), op(x.cuda()).cpu()):
                found = True
            ours = (detops.softmax(x, -1, torch.float32), detops.softmax(x.cuda(), -1, torch.float32).cpu())
            assert torch.equal(*ours)
        if found:
            break
    assert found, f"{name}: CPU and CUDA agreed on every drawn input"


@pytest.mark.parametrize("name", sorted(STOCK))
def test_stock_gpu_rows_vs_row_count(name):
    """Does a stock GPU row change with the number of rows? Printed as a finding (see the notes); detops'
    rows are asserted unchanged on the same sweep."""
    op = STOCK[name]
    changed = []
    for n in (2048, 4096, 32000):
        base = make((1, n), torch.bfloat16, seed=n, device="cuda")
        alone = op(base)
        ours_alone = detops.softmax(base, -1, torch.float32) if "softmax" in name else detops.rms_norm(base, n)
        for m in (2, 16, 255, 256, 257, 1024, 4096):
            if m * n > 2**26:
                continue
            batch = torch.cat([base, make((m - 1, n), torch.bfloat16, seed=m, device="cuda")])
            if not torch.equal(op(batch)[:1], alone):
                changed.append((n, m))
            ours = detops.softmax(batch, -1, torch.float32) if "softmax" in name else detops.rms_norm(batch, n)
            assert torch.equal(ours[:1], ours_alone)
    print(f"STOCK-ROW-INVARIANCE {name}: row 0 changed with the row count at (n, M) = {changed or 'never'}")
