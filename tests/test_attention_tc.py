"""Tensor-core CUDA attention (bf16/fp16, D == Dv <= 128; REDUCTION_ORDER.md §6b): contract L1-L4 with
torch.equal on the GPU, accuracy against float64 bounded by stock SDPA's own error, and negative controls showing
stock SDPA failing the same properties. The §6b order is not the CPU's §6 order (tensor-core chains, p rounded to
the input dtype), so CPU == CUDA (L5) is not claimed here. Skipped without CUDA."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import requires_cuda
from values import ATTN_KEY_EDGES, C, around

pytestmark = requires_cuda

TC_DTYPES = (torch.bfloat16, torch.float16)
TC_DIMS = (32, 64, 80, 96, 128)  # 32 / 80 / 96 run the kernels of 64 / 128 on zero-padded columns
HEADS = ((1, 1), (4, 1), (8, 1), (32, 8), (8, 2))  # GQA ratios 1 / 4 / 8
KEY_LENS = ATTN_KEY_EDGES + (3000, 8 * C["kAttnChunkKeys"])  # §6 block / chunk edges
# Query rows around the kernels' tile choices (Hq = Hk): the small-tile variant (<= kAttnTcSmallSlots slots), the wgmma
# kernel (>= kAttnTcWgMinSlots), a tile's kAttnTcSlots.
TC_Q_LENS = ((1, 5, C["kAttnTcSmallSlots"], C["kAttnTcSmallSlots"] + 1, 32, 33, C["kAttnTcWgMinSlots"] - 1,
              C["kAttnTcWgMinSlots"]) + around(C["kAttnTcSlots"]) + (200,))


def _op(q, k, v, rows, scale, cap=0.0):
    return torch.ops.detops.attention(q, k, v, rows, scale, cap)


def _sdpa():
    from detops.ops.attention import scaled_dot_product_attention
    return scaled_dot_product_attention


def gpu_qkv(B, Hq, Hk, Q, K, D, dtype, seed, scale=1.0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return tuple((torch.randn(s, generator=g, device="cuda") * scale).to(dtype)
                 for s in ((B, Hq, Q, D), (B, Hk, K, D), (B, Hk, K, D)))


def causal_rows(Q, K, past=0, window=None, anchor=0):
    """(1, Q, 3) int32: row i is token past + i of a sequence starting at key `anchor`, attending the last
    `window` keys up to itself."""
    hi = torch.arange(Q, device="cuda") + past + anchor + 1
    lo = torch.full_like(hi, anchor) if window is None else torch.clamp(hi - window, min=anchor)
    return torch.stack([torch.full_like(hi, anchor), lo, hi.clamp(max=K)], -1)[None].to(torch.int32)


# ---- the path is in use -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", TC_DTYPES)
@pytest.mark.parametrize("D", TC_DIMS)
def test_tensor_core_path_is_used(dtype, D):
    """bf16/fp16 with D <= 128 run §6b: the bits differ from the CPU's §6 order on some draws (while fp32, a
    CUDA-core case, equals the CPU bitwise) and the values agree to the dtype's precision."""
    q, k, v = gpu_qkv(2, 4, 2, 70, 1100, D, torch.float32, 3)
    rows = causal_rows(70, 1100, past=1030).expand(2, 70, 3).contiguous()
    y32 = _op(q, k, v, rows, 0.1)
    assert torch.equal(y32.cpu(), _op(q.cpu(), k.cpu(), v.cpu(), rows.cpu(), 0.1))
    qh, kh, vh = (t.to(dtype) for t in (q, k, v))
    y = _op(qh, kh, vh, rows, 0.1)
    y_cpu = _op(qh.cpu(), kh.cpu(), vh.cpu(), rows.cpu(), 0.1)
    assert not torch.equal(y.cpu(), y_cpu)
    assert (y.cpu().float() - y_cpu.float()).abs().max().item() <= 4 * torch.finfo(dtype).eps * y_cpu.float().abs().max().item()


# ---- L1: a row's bits do not depend on its tile, its batch-mates or its batch index -------------------------

@given(heads=st.sampled_from(HEADS), B=st.sampled_from((1, 2, 3)),
       Q=st.sampled_from(TC_Q_LENS),
       K=st.sampled_from(KEY_LENS), D=st.sampled_from(TC_DIMS), dtype=st.sampled_from(TC_DTYPES),
       cap=st.sampled_from((0.0, 0.0, 30.0)), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=25)
def test_each_row_alone_equals_in_tile(heads, B, Q, K, D, dtype, cap, seed):
    """Arbitrary [anchor, lo, hi] per row (rows of one tile with different anchors, anchors before/after lo,
    empty rows, rows spanning many chunks): every checked row computed alone (Q = 1, the decode tile) has the
    bits it has inside the full launch. Q * G drawn around the 128-slot tile and the 16-slot warp (G = 1, 4, 8:
    Q = 16/17, 32/33, 127/128/129): a row in a warp whose slots all cover a block whole (no mask) == the same row
    in a decode tile (masked, mostly empty warp)."""
    Hq, Hk = heads
    q, k, v = gpu_qkv(B, Hq, Hk, Q, K, D, dtype, seed)
    g = torch.Generator().manual_seed(seed)
    lo = torch.randint(0, K + 1, (B, Q), generator=g)
    hi = torch.minimum(lo + torch.randint(0, K + 1, (B, Q), generator=g), torch.tensor(K))
    anchor = lo - torch.randint(-70, 2100, (B, Q), generator=g)
    shared = torch.rand(B, Q, generator=g) < 0.5
    anchor = torch.where(shared, anchor[:, :1].expand(B, Q), anchor)
    rows = torch.stack([anchor, lo, hi], -1).to(torch.int32).cuda()
    y = _op(q, k, v, rows, 1.0 / math.sqrt(D), cap)
    checks = [(b, i) for b in range(B) for i in range(Q)]
    if len(checks) > 24:
        idx = torch.randperm(len(checks), generator=g)[:24].tolist()
        checks = [checks[j] for j in idx]
    for b, i in checks:
        alone = _op(q[b:b + 1, :, i:i + 1], k[b:b + 1], v[b:b + 1], rows[b:b + 1, i:i + 1], 1.0 / math.sqrt(D), cap)
        assert torch.equal(alone, y[b:b + 1, :, i:i + 1]), (b, i)
    assert y.abs().sum() > 0 or bool((hi <= lo).all())


@pytest.mark.parametrize("D", TC_DIMS)
def test_batch_index_invariance_prefill_and_decode(D):
    """L1: a sequence's prefill rows and its decode row alone == at drawn indices of batches up to 64."""
    Hq, Hk = 32, 8
    for S in (65, 1025, 2049):
        q, k, v = gpu_qkv(1, Hq, Hk, S, S, D, torch.bfloat16, S)
        alone = _sdpa()(q, k, v, is_causal=True, enable_gqa=True)
        dec = _sdpa()(q[:, :, -1:], k, v, enable_gqa=True)
        assert torch.equal(dec, alone[:, :, -1:])
        for B in (2, 5):
            Q2, K2, V2 = gpu_qkv(B, Hq, Hk, S, S, D, torch.bfloat16, S + B)
            j = (S + B) % B
            Q2[j], K2[j], V2[j] = q[0], k[0], v[0]
            assert torch.equal(_sdpa()(Q2, K2, V2, is_causal=True, enable_gqa=True)[j], alone[0]), (S, B)
    for S in (1023, 1025, 8193, 32768):
        q, k, v = gpu_qkv(1, Hq, Hk, 1, S, D, torch.bfloat16, S)
        alone = _sdpa()(q, k, v, enable_gqa=True)
        for B in (3, 64 if S <= 8193 else 16):
            Q2, K2, V2 = gpu_qkv(B, Hq, Hk, 1, S, D, torch.bfloat16, S + B)
            j = B // 2
            Q2[j], K2[j], V2[j] = q[0], k[0], v[0]
            assert torch.equal(_sdpa()(Q2, K2, V2, enable_gqa=True)[j], alone[0]), (S, B)


# ---- L2 / L3 ------------------------------------------------------------------------------------------------

@given(S=st.sampled_from((1, 17, 64, 65, 1000, 1025, 2100)), P=st.integers(0, 1100), left=st.booleans(),
       B=st.sampled_from((1, 3, 8)), D=st.sampled_from(TC_DIMS), dtype=st.sampled_from(TC_DTYPES),
       seed=st.integers(0, 2**31 - 1))
@settings(max_examples=20)
def test_padding_invariance(S, P, left, B, D, dtype, seed):
    """L2: a sequence's rows alone == padded left or right by P slots (pad keys hold NaN: never read) at a drawn
    batch index, with position ids."""
    Hq, Hk = 8, 2
    q, k, v = gpu_qkv(1, Hq, Hk, S, S, D, dtype, seed)
    alone = _sdpa()(q, k, v, is_causal=True, enable_gqa=True)
    N, off = S + P, (P if left else 0)
    Q2, K2, V2 = gpu_qkv(B, Hq, Hk, N, N, D, dtype, seed + 11)
    idx = seed % B
    K2[idx], V2[idx] = float("nan"), float("nan")
    Q2[idx, :, off:off + S], K2[idx, :, off:off + S], V2[idx, :, off:off + S] = q[0], k[0], v[0]
    i = torch.arange(N, device="cuda")
    valid = (i >= off) & (i < off + S)
    mask = (valid[None, :] & (i[None, :] <= i[:, None]) & valid[:, None])[None, None].expand(B, 1, N, N).clone()
    pos = torch.where(valid, i - off, torch.zeros_like(i))[None].expand(B, N).clone()
    for b in range(B):
        if b != idx:
            mask[b, 0] = i[None, :] <= i[:, None]
            pos[b] = i
    out = _sdpa()(Q2, K2, V2, attn_mask=mask, enable_gqa=True, position_ids=pos)
    assert torch.equal(out[idx, :, off:off + S], alone[0])
    assert not out.isnan().any()


@given(S=st.sampled_from((1, 63, 64, 65, 1025, 2049)), before=st.integers(0, 1500), after=st.integers(0, 300),
       D=st.sampled_from(TC_DIMS), dtype=st.sampled_from(TC_DTYPES), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=20)
def test_packing_invariance(S, before, after, D, dtype, seed):
    """L3: a document alone == packed between others, via cu_seqlens and via position-id resets (with a
    matching document-causal mask)."""
    Hq, Hk = 8, 1
    q, k, v = gpu_qkv(1, Hq, Hk, S, S, D, dtype, seed)
    alone = _sdpa()(q, k, v, is_causal=True, enable_gqa=True)
    N = before + S + after
    P, Kp, Vp = gpu_qkv(1, Hq, Hk, N, N, D, dtype, seed + 5)
    P[:, :, before:before + S], Kp[:, :, before:before + S], Vp[:, :, before:before + S] = q, k, v
    cuts = sorted({0, before // 2, before, before + S, N})
    cu = torch.tensor(cuts, dtype=torch.int32, device="cuda")
    packed = _sdpa()(P, Kp, Vp, enable_gqa=True, cu_seqlens=cu)
    assert torch.equal(packed[:, :, before:before + S], alone)
    i = torch.arange(N, device="cuda")
    start = cu[torch.searchsorted(cu, i, right=True) - 1]
    pos = (i - start)[None]
    mask = ((i[None, :] >= start[:, None]) & (i[None, :] <= i[:, None]))[None, None]
    by_pos = _sdpa()(P, Kp, Vp, attn_mask=mask, enable_gqa=True, position_ids=pos)
    assert torch.equal(by_pos, packed)


# ---- L4: full prefill == chunked prefill == token-by-token decode, every token ------------------------------

def check_l4(S, D, heads, dtype, window, cap, cuts, seed, static=True):
    Hq, Hk = heads
    q, k, v = gpu_qkv(1, Hq, Hk, S, S, D, dtype, seed)
    sc = 1.0 / math.sqrt(D)
    full = _op(q, k, v, causal_rows(S, S, window=window), sc, cap)
    bounds = [0] + sorted(set(c for c in cuts if 0 < c < S)) + [S]
    for a, b in zip(bounds[:-1], bounds[1:]):  # chunk [a, b) against the cache [0, b)
        y = _op(q[:, :, a:b], k[:, :, :b], v[:, :, :b], causal_rows(b - a, b, past=a, window=window), sc, cap)
        assert torch.equal(y, full[:, :, a:b]), f"chunk [{a}, {b})"
    for t in range(S):  # decode: the cache holds [0, t] (growing), or the whole buffer with later keys masked
        y = _op(q[:, :, t:t + 1], k[:, :, :t + 1], v[:, :, :t + 1], causal_rows(1, t + 1, past=t, window=window), sc, cap)
        assert torch.equal(y, full[:, :, t:t + 1]), f"decode token {t}"
        if static:
            y = _op(q[:, :, t:t + 1], k, v, causal_rows(1, S, past=t, window=window), sc, cap)
            assert torch.equal(y, full[:, :, t:t + 1]), f"static-cache decode token {t}"
    assert full.abs().sum() > 0


@given(S=st.sampled_from((63, 64, 65, 200, 1023, 1024, 1025, 2047, 2048, 2049)), D=st.sampled_from(TC_DIMS),
       heads=st.sampled_from(HEADS), dtype=st.sampled_from(TC_DTYPES),
       window=st.sampled_from((None, None, 1, 100, 1500)), cap=st.sampled_from((0.0, 0.0, 20.0)),
       seed=st.integers(0, 2**31 - 1), data=st.data())
@settings(max_examples=12)
def test_prefill_chunked_decode(S, D, heads, dtype, window, cap, seed, data):
    cuts = data.draw(st.lists(st.integers(1, S - 1), max_size=6))
    check_l4(S, D, heads, dtype, window, cap, cuts, seed)


@pytest.mark.parametrize("D,heads,window", ((128, (4, 1), None), (64, (8, 1), 3000)))
def test_prefill_chunked_decode_8192(D, heads, window):
    check_l4(8192, D, heads, torch.bfloat16, window, 0.0, [1, 63, 1000, 1024, 4097, 8000], 8192 + D, static=False)


@pytest.mark.parametrize("dtype", TC_DTYPES)
@pytest.mark.parametrize("spread", (8.0, 40.0))
def test_extreme_scores_prefill_chunked_decode(dtype, spread):
    """Scores spread over hundreds (inputs scaled by `spread`): most p and α of §6b's hardware exp fall below
    2^-126 (flushed to +0 by ex2.approx.ftz) or round to 0 in T; prefill, chunked prefill and decode still give
    the same bits, and the output is finite."""
    S, D, Hq, Hk = 1100, 128, 4, 1
    q, k, v = gpu_qkv(1, Hq, Hk, S, S, D, dtype, int(spread))
    q = (q.float() * spread).to(dtype)
    k = (k.float() * spread).to(dtype)
    full = _op(q, k, v, causal_rows(S, S), 1.0 / math.sqrt(D))
    assert torch.isfinite(full).all() and full.abs().sum() > 0
    for a, b in ((0, 1), (1, 64), (64, 1025), (1025, S)):
        y = _op(q[:, :, a:b], k[:, :, :b], v[:, :, :b], causal_rows(b - a, b, past=a), 1.0 / math.sqrt(D))
        assert torch.equal(y, full[:, :, a:b]), (a, b)
    for t in (0, 63, 64, 1023, 1024, 1099):
        y = _op(q[:, :, t:t + 1], k, v, causal_rows(1, S, past=t), 1.0 / math.sqrt(D))
        assert torch.equal(y, full[:, :, t:t + 1]), t


@pytest.mark.parametrize("dtype", TC_DTYPES)
@pytest.mark.parametrize("D", TC_DIMS)
@pytest.mark.parametrize("heads,Q", (((4, 1), 48), ((4, 1), 49), ((1, 1), 192), ((1, 1), 193), ((8, 2), 16)))
def test_kernel_choice_boundary_rows_equal_decode(dtype, D, heads, Q):
    """A tile of >= 65 slots runs the wgmma kernel, a smaller one (the last tile here when its slots are
    Q*G - 128 <= 64, and every decode step) the mma.sync kernel: rows on both sides of each tile boundary of a
    chunked prefill (1000 past keys: rows span two chunks) equal the same rows computed alone (decode, Q = 1)."""
    Hq, Hk = heads
    G = Hq // Hk
    past = 1000
    K = past + Q
    q, k, v = gpu_qkv(1, Hq, Hk, Q, K, D, dtype, Q + D)
    sc = 1.0 / math.sqrt(D)
    y = _op(q, k, v, causal_rows(Q, K, past=past), sc)
    rows = sorted({0, Q - 1} | {r for t in range(1, (Q * G + 127) // 128) for r in (128 * t // G - 1, 128 * t // G)})
    for r in rows:
        alone = _op(q[:, :, r:r + 1], k, v, causal_rows(1, K, past=past + r), sc)
        assert torch.equal(alone, y[:, :, r:r + 1]), r


def test_too_many_keys_raise():
    """The tensor-core kernels count keys in int from a pass's first block: more than 2^30 keys is an error
    (stride-0 K/V make such a call cheap), never a wrong result."""
    q = torch.zeros(1, 1, 128, 64, device="cuda", dtype=torch.bfloat16)
    kv = torch.zeros(1, 1, 1, 64, device="cuda", dtype=torch.bfloat16).expand(1, 1, 2**30 + 1, 64)
    rows = torch.tensor([0, 0, 2**30 + 1], dtype=torch.int32, device="cuda").expand(1, 128, 3).contiguous()
    with pytest.raises(RuntimeError, match="at most 1073741824 keys"):
        _op(q, kv, kv, rows, 0.125)


@given(seed=st.integers(0, 2**31 - 1), D=st.sampled_from(TC_DIMS), dtype=st.sampled_from(TC_DTYPES),
       heads=st.sampled_from(((1, 1), (4, 1), (8, 2))))
@settings(max_examples=6)
def test_walked_rows_equal_alone(seed, D, dtype, heads):
    """The wgmma kernel walks each tile's chunks and merges them in its CTA; a row alone (Q = 1: the mma.sync
    kernel, one CTA per chunk, and the merge kernel) must give the same bits. Drawn per-row descriptors put rows of
    several anchors (passes) in one tile, rows spanning up to 5 chunks whose first block is odd or even, rows
    ending inside and at chunk boundaries, and rows without keys (zeros)."""
    Hq, Hk = heads
    Q, K = 400, 5000
    g = torch.Generator(device="cuda").manual_seed(seed)
    q, k, v = gpu_qkv(1, Hq, Hk, Q, K, D, dtype, seed % 100000)
    anchor = torch.tensor([0, 37, 1100, 1024], device="cuda")[torch.randint(0, 4, (Q,), generator=g, device="cuda")]
    lo = anchor + torch.randint(0, 2000, (Q,), generator=g, device="cuda")
    n = torch.randint(0, 4100, (Q,), generator=g, device="cuda")
    n = torch.where(torch.rand(Q, generator=g, device="cuda") < 0.1, 0, n)  # no keys: y = 0
    n = torch.where(torch.rand(Q, generator=g, device="cuda") < 0.1, 1024 - (lo - anchor) % 1024, n)  # ends at a chunk boundary
    hi = torch.clamp(lo + n, max=K)
    rows = torch.stack([anchor, lo, hi], -1)[None].to(torch.int32)
    sc = 1.0 / math.sqrt(D)
    y = _op(q, k, v, rows, sc)
    pick = sorted(set(torch.randint(0, Q, (24,), generator=g, device="cuda").tolist()) | {0, Q - 1} |
                  set(torch.nonzero(n == 0)[:4, 0].tolist()))
    for r in pick:
        alone = _op(q[:, :, r:r + 1], k, v, rows[:, r:r + 1], sc)
        assert torch.equal(alone, y[:, :, r:r + 1]), (r, rows[0, r].tolist())
    assert (y[:, :, (hi <= lo).nonzero()[:, 0]] == 0).all()


@pytest.mark.parametrize("dtype", TC_DTYPES)
@pytest.mark.parametrize("D", TC_DIMS)
@pytest.mark.parametrize("heads", ((1, 1), (4, 1), (16, 1)))
@pytest.mark.parametrize("past", (0, 47, 1000, 2040))
def test_small_tile_rows_equal_other_kernels(dtype, D, heads, past):
    """A tile of <= 16 slots (every decode step with G <= 16, a short last tile) runs the mma.sync kernel's
    small-tile variant (16 Q rows, a deeper K/V ring, L2 prefetch), 17..64 slots the mma.sync kernel, >= 65 the
    wgmma kernel. The same rows through each are bitwise equal: a prefill whose one tile has exactly 16 slots
    (small), 16 + G slots (mma.sync), 128 slots (wgmma); a prefill of 128 + 16 slots (wgmma, then a small last
    tile); that last tile's rows alone as one 16-slot prefill; and single rows decoded alone (G slots: small).
    past 0 / 47 / 1000 / 2040: rows within one block, across the block boundary 64, across the chunk boundary
    1024, spanning 2 and 3 chunks (1, 2, ~18 and ~34 blocks)."""
    Hq, Hk = heads
    G = Hq // Hk
    n16, n128 = 16 // G, 128 // G
    Qmax = n128 + n16
    K = past + Qmax
    q, k, v = gpu_qkv(1, Hq, Hk, Qmax, K, D, dtype, past + D + G)
    sc = 1.0 / math.sqrt(D)
    ref = _op(q, k, v, causal_rows(Qmax, K, past=past), sc)
    for n in (n16, n16 + 1, n128):
        y = _op(q[:, :, :n], k, v, causal_rows(n, K, past=past), sc)
        assert torch.equal(y, ref[:, :, :n]), n
    y = _op(q[:, :, n128:], k, v, causal_rows(n16, K, past=past + n128), sc)
    assert torch.equal(y, ref[:, :, n128:])
    for r in sorted({0, n16 - 1, n16, n128 - 1, n128, Qmax - 1}):
        alone = _op(q[:, :, r:r + 1], k, v, causal_rows(1, K, past=past + r), sc)
        assert torch.equal(alone, ref[:, :, r:r + 1]), r


@pytest.mark.parametrize("dtype", TC_DTYPES)
@pytest.mark.parametrize("D", TC_DIMS)
@pytest.mark.parametrize("heads", ((1, 1), (3, 3)))
def test_skipped_block_keeps_state_with_inf_value(dtype, D, heads):
    """§6 step 2: a row that does not visit a block keeps its state bit for bit, also when its tile-mates read
    that block. Causal prefill of 130 tokens with V = inf at key 100 (block 1): with G = 1 a 128-slot tile
    (and the kernel's 64-slot m-tiles) holds rows on both sides of the block boundary 64, so rows t < 64 skip a
    block their tile runs (the kernel's select path: 0 * inf would make them NaN). Each of them is finite and
    equals its decode bits (cache [0, t], where key 100 does not exist)."""
    Hq, Hk = heads
    S = 130
    q, k, v = gpu_qkv(1, Hq, Hk, S, S, D, dtype, 100 + D)
    v[:, :, 100] = float("inf")
    sc = 1.0 / math.sqrt(D)
    full = _op(q, k, v, causal_rows(S, S), sc)
    assert torch.isfinite(full[:, :, :64]).all()
    for t in (0, 1, 31, 32, 62, 63):
        y = _op(q[:, :, t:t + 1], k[:, :, :t + 1], v[:, :, :t + 1], causal_rows(1, t + 1, past=t), sc)
        assert torch.equal(y, full[:, :, t:t + 1]), t
    chunk = _op(q[:, :, :64], k[:, :, :64], v[:, :, :64], causal_rows(64, 64), sc)
    assert torch.equal(chunk, full[:, :, :64])


# ---- accuracy ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("D", TC_DIMS)
@pytest.mark.parametrize("S", (100, 1100, 4096))
@pytest.mark.parametrize("dtype", TC_DTYPES)
def test_accuracy_vs_float64(D, S, dtype):
    """|detops - float64| <= 2 x |stock SDPA (CUDA) - float64| + 2 eps (both round the output once)."""
    Hq, Hk = 8, 2
    q, k, v = gpu_qkv(1, Hq, Hk, S, S, D, dtype, S + D)
    y = _sdpa()(q, k, v, is_causal=True, enable_gqa=True)
    stock = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    qd, kd, vd = (t.double() for t in (q, k, v))
    kd, vd = kd.repeat_interleave(Hq // Hk, 1), vd.repeat_interleave(Hq // Hk, 1)
    s = (qd @ kd.transpose(-1, -2)) / math.sqrt(D)
    s = s.masked_fill(torch.ones(S, S, dtype=torch.bool, device="cuda").triu(1), float("-inf"))
    ref = torch.softmax(s, -1) @ vd
    err = (y.double() - ref).abs().max().item()
    err_stock = (stock.double() - ref).abs().max().item()
    print(f"S={S} D={D} {dtype}: detops {err:.3g}, stock {err_stock:.3g}")
    assert err <= 2 * err_stock + 2 * torch.finfo(dtype).eps * max(1.0, ref.abs().max().item())


# ---- negative controls: stock SDPA is not invariant ---------------------------------------------------------

def test_stock_sdpa_padding_differs():
    """Stock SDPA (bf16, CUDA, boolean mask): a sequence's rows change when P pad keys precede it."""
    Hq, D, S = 8, 128, 1000
    q, k, v = gpu_qkv(1, Hq, Hq, S, S, D, torch.bfloat16, 1)
    mask = torch.ones(S, S, dtype=torch.bool, device="cuda").tril()
    alone = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    found = 0.0
    for P in (1, 7, 33, 100):
        z = torch.zeros(1, Hq, P, D, dtype=torch.bfloat16, device="cuda")
        kp, vp = torch.cat([z, k], 2), torch.cat([z, v], 2)
        mp = torch.cat([torch.zeros(S, P, dtype=torch.bool, device="cuda"), mask], 1)
        out = F.scaled_dot_product_attention(q, kp, vp, attn_mask=mp)
        found = max(found, (out.float() - alone.float()).abs().max().item())
    assert found > 0.0
    print(f"stock SDPA alone vs left-padded max |diff| = {found:.3g}")


def test_stock_sdpa_prefill_vs_decode_differs():
    """Stock SDPA (bf16, CUDA, GQA 4): a token's output differs between prefill and decode."""
    Hq, Hk, D = 32, 8, 128
    found = 0.0
    for S in (1000, 2048, 4100):
        q, k, v = gpu_qkv(1, Hq, Hk, S, S, D, torch.bfloat16, S)
        full = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        dec = F.scaled_dot_product_attention(q[:, :, -1:], k, v, enable_gqa=True)
        found = max(found, (dec.float() - full[:, :, -1:].float()).abs().max().item())
    assert found > 0.0
