"""detops.scaled_dot_product_attention: REDUCTION_ORDER.md §6, contract L0–L4 (CONTRACT.md).

Every invariance is asserted with torch.equal. Accuracy is measured against float64 and bounded by stock SDPA's
own error on the same inputs. Negative controls show stock SDPA failing the same properties.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st

import detops
from detops.ops.attention import attention_rows
from values import DTYPES, PROFILES, at_offset, make

sdpa = detops.scaled_dot_product_attention

# Key lengths around the block (64) and chunk (1024) sizes of §6, and small ones.
SHORT_KEYS = (1, 2, 5, 31, 63, 64, 65, 127, 128, 129, 200, 300)
LONG_KEYS = (1023, 1024, 1025, 2049)
HEAD_DIMS = (16, 32, 64)


def qkv(B, Hq, Hk, Q, K, D, Dv=None, dtype=torch.float32, device="cpu", profile="normal", seed=0):
    Dv = D if Dv is None else Dv
    return (make((B, Hq, Q, D), dtype, device, profile, seed), make((B, Hk, K, D), dtype, device, profile, seed + 1),
            make((B, Hk, K, Dv), dtype, device, profile, seed + 2))


def interval_mask(lo, hi, K):
    """Bool (B, 1, Q, K) mask attending lo[b, i] <= j < hi[b, i]."""
    j = torch.arange(K, device=lo.device)
    return ((j >= lo[..., None]) & (j < hi[..., None]))[:, None]


def causal_mask(Q, K, past=0, window=None, device="cpu"):
    """Bottom-right causal (row i is token past + i), optionally windowed: (1, 1, Q, K) bool."""
    hi = torch.arange(Q, device=device)[None] + past + 1
    lo = torch.zeros_like(hi) if window is None else (hi - window).clamp(min=0)
    return interval_mask(lo, hi, K)


def ref64(q, k, v, mask=None, scale=None, softcap=None):
    """float64 attention on the CPU; mask (B, 1|H, Q, K) bool; rows with no key give 0."""
    q, k, v = (t.detach().cpu().double() for t in (q, k, v))
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]) if scale is None else scale)
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    if mask is not None:
        s = s.masked_fill(~mask.cpu(), float("-inf"))
    return torch.nan_to_num(torch.softmax(s, -1), nan=0.0) @ v


# Profiles whose scores are well conditioned; with 'outliers'/'mixed' (scores up to ~1e6) the error of both
# detops and stock SDPA is dominated by the fp32 rounding of the scores, so only the derived bound applies.
WELL_CONDITIONED = ("normal", "integer", "tiny")


def forward_error_bound(q, k, v, ref):
    """A derived bound on |y - y64| for the §6 order in fp32 (u = 2^-24), maximised over rows:
    score error delta <= (D + 2) u sum_d |q_d k_d| scale (ascending dot, the scale product; softcap not used);
    a score perturbation of delta moves softmax-weighted means by <= 2 delta max|v|; the exp, tree and ascending
    sums add <= (K + 8) u max|v|; the final rounding adds eps(dtype) |y|."""
    u = 2.0 ** -24
    D, K = q.shape[-1], k.shape[2]
    g = q.shape[1] // k.shape[1]
    qa, ka = q.detach().cpu().double().abs(), k.detach().cpu().double().abs().repeat_interleave(g, 1)
    delta = (D + 2) * u * ((qa @ ka.transpose(-1, -2)) / math.sqrt(D)).max().item()
    vmax = v.detach().abs().max().item()
    return 2 * delta * vmax + (K + 8) * u * vmax + torch.finfo(q.dtype).eps * ref.abs().max().item()


def stock_floor(dtype, ref):
    """Absolute slack of the 2x-stock accuracy bound. bf16/fp16: both round the output once (2 eps covers draws
    where stock's error is ~0). fp32: §6's ascending-d dot and det_exp (<= 2 ulp, §7) cost a few ulp of the
    output that stock's blocked dot and libm exp do not; measured <= 6 eps over 300 normal/integer draws."""
    return (8 if dtype == torch.float32 else 2) * torch.finfo(dtype).eps * max(1.0, ref.abs().max().item())


def max_err(y, ref):
    return (y.detach().cpu().double() - ref).abs().max().item()


def assert_nontrivial(y):
    assert y.abs().sum().item() > 0, "output is all zeros"


# ---- L0 + accuracy ---------------------------------------------------------------------------------------------

@given(data=st.data())
def test_matches_float64(device, data):
    dtype = data.draw(st.sampled_from(DTYPES))
    profile = data.draw(st.sampled_from(PROFILES))
    K = data.draw(st.sampled_from(SHORT_KEYS + LONG_KEYS))
    Q = data.draw(st.integers(1, 4 if K > 512 else 40))
    D = data.draw(st.sampled_from(HEAD_DIMS))
    Dv = data.draw(st.sampled_from((D, 16)))
    Hk = data.draw(st.integers(1, 2))
    Hq = Hk * data.draw(st.sampled_from((1, 2)))
    B = data.draw(st.integers(1, 2))
    seed = data.draw(st.integers(0, 2**30))
    kind = data.draw(st.sampled_from(("none", "causal", "intervals")))
    q, k, v = qkv(B, Hq, Hk, Q, K, D, Dv, dtype, device, profile, seed)
    g = torch.Generator().manual_seed(seed)
    if kind == "intervals":  # random non-empty intervals per row
        a = torch.randint(0, K, (B, Q), generator=g)
        b = torch.randint(0, K, (B, Q), generator=g)
        mask = interval_mask(torch.minimum(a, b), torch.maximum(a, b) + 1, K).to(device)
    elif kind == "causal":
        mask = causal_mask(Q, K, past=K - Q, device=device) if K >= Q else None
    else:
        mask = None
    y = sdpa(q, k, v, attn_mask=mask, enable_gqa=True)
    assert y.dtype == dtype and y.shape == (B, Hq, Q, Dv)
    assert torch.equal(y, sdpa(q, k, v, attn_mask=mask, enable_gqa=True))  # L0
    ref = ref64(q, k, v, mask)
    stock = F.scaled_dot_product_attention(q.cpu(), k.cpu(), v.cpu(), attn_mask=None if mask is None else mask.cpu(),
                                           enable_gqa=True)
    err = max_err(y, ref)
    assert err <= forward_error_bound(q, k, v, ref)
    if profile in WELL_CONDITIONED:
        assert err <= 2 * max_err(stock, ref) + stock_floor(dtype, ref)
    if profile != "tiny" or dtype == torch.float32:
        assert_nontrivial(y)


@pytest.mark.parametrize("K", LONG_KEYS)
def test_long_keys_match_float64(device, K):
    q, k, v = qkv(1, 2, 1, 3, K, 32, dtype=torch.bfloat16, device=device, seed=K)
    y = sdpa(q, k, v, enable_gqa=True)
    ref = ref64(q, k, v)
    stock = F.scaled_dot_product_attention(q.cpu(), k.cpu(), v.cpu(), enable_gqa=True)
    assert max_err(y, ref) <= 2 * max_err(stock, ref) + stock_floor(torch.bfloat16, ref)
    assert max_err(y, ref) <= forward_error_bound(q, k, v, ref)
    assert_nontrivial(y)


def test_integer_profile_fp32_close_to_float64(device):
    # Integer-valued q/k/v: the products are exact, so any indexing slip (wrong key, head, block) shows as a
    # large error; the remaining error is the fp32 exp/sum rounding.
    for K in (63, 64, 65, 129, 1025):
        q, k, v = qkv(2, 4, 2, 5, K, 16, dtype=torch.float32, device=device, profile="integer", seed=K)
        y = sdpa(q, k, v, enable_gqa=True, scale=0.125)
        assert max_err(y, ref64(q, k, v, scale=0.125)) < 1e-4
        assert_nontrivial(y)


def test_empty_rows_give_zeros(device):
    q, k, v = qkv(1, 2, 2, 4, 10, 16, device=device, seed=3)
    mask = torch.zeros(1, 1, 4, 10, dtype=torch.bool, device=device)
    mask[0, 0, 1, 2:5] = True
    y = sdpa(q, k, v, attn_mask=mask)
    assert torch.equal(y[:, :, [0, 2, 3]], torch.zeros_like(y[:, :, [0, 2, 3]]))
    assert max_err(y[:, :, 1:2], ref64(q, k, v, mask)[:, :, 1:2]) < 1e-6
    assert_nontrivial(y)
    # K == 0 and Q == 0
    assert torch.equal(sdpa(q, k[:, :, :0], v[:, :, :0]), torch.zeros_like(y))
    assert sdpa(q[:, :, :0], k, v).shape == (1, 2, 0, 16)


def test_softcap_matches_float64(device):
    for K, cap in ((65, 5.0), (300, 30.0), (1025, 2.0)):
        q, k, v = qkv(1, 2, 2, 6, K, 32, dtype=torch.float32, device=device, seed=K)
        q = q * 3
        y = sdpa(q, k, v, softcap=cap, is_causal=False)
        ref = ref64(q, k, v, softcap=cap)
        # det_tanh is within ~2 ulp of 1 (REDUCTION_ORDER.md §7): score error <= cap * 2^-22 plus fp32 rounding.
        assert max_err(y, ref) < 1e-5
        assert max_err(sdpa(q, k, v), ref) > 1e-3  # the cap is really applied
        assert_nontrivial(y)


def test_sliding_window_matches_float64(device):
    n, W = 300, 70
    q, k, v = qkv(1, 2, 2, n, n, 16, device=device, seed=5)
    pos = torch.arange(n, device=device)[None]
    y = sdpa(q, k, v, is_causal=True, sliding_window=W, position_ids=pos)
    ref = ref64(q, k, v, causal_mask(n, n, window=W))
    assert max_err(y, ref) < 1e-6
    assert_nontrivial(y)
    mask = causal_mask(n, n, window=W, device=device)
    assert torch.equal(y, sdpa(q, k, v, attn_mask=mask, sliding_window=W, position_ids=pos))


def test_float_additive_mask_of_zeros_and_neg_inf(device):
    q, k, v = qkv(1, 1, 1, 8, 8, 16, device=device, seed=1)
    mask = causal_mask(8, 8, device=device)
    fmask = torch.zeros(mask.shape, device=device).masked_fill(~mask, float("-inf"))
    assert torch.equal(sdpa(q, k, v, attn_mask=fmask), sdpa(q, k, v, attn_mask=mask))
    assert torch.equal(sdpa(q, k, v, attn_mask=mask), sdpa(q, k, v, is_causal=True))


def test_unbatched_3d(device):
    q, k, v = qkv(1, 2, 2, 5, 9, 16, device=device, seed=2)
    assert torch.equal(sdpa(q[0], k[0], v[0], is_causal=True), sdpa(q, k, v, is_causal=True)[0])


# ---- L1: batch composition, query subsets, layouts ------------------------------------------------------------

@given(data=st.data())
def test_l1_batch_invariant(device, data):
    dtype = data.draw(st.sampled_from(DTYPES))
    B = data.draw(st.integers(1, 4))
    idx = data.draw(st.integers(0, B - 1))
    K = data.draw(st.sampled_from(SHORT_KEYS))
    Q = data.draw(st.integers(1, 24))
    D = data.draw(st.sampled_from(HEAD_DIMS))
    Hk = data.draw(st.integers(1, 2))
    Hq = Hk * data.draw(st.sampled_from((1, 2)))
    seed = data.draw(st.integers(0, 2**30))
    q, k, v = qkv(1, Hq, Hk, Q, K, D, dtype=dtype, device=device, seed=seed)
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randint(0, K + 1, (2, B, Q), generator=g)  # some rows may be empty
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    mask = interval_mask(lo, hi, K).to(device)
    oq, ok, ov = qkv(B, Hq, Hk, Q, K, D, dtype=dtype, device=device, seed=seed + 7)
    bq, bk, bv = oq.clone(), ok.clone(), ov.clone()
    bq[idx], bk[idx], bv[idx] = q[0], k[0], v[0]
    alone = sdpa(q, k, v, attn_mask=mask[idx:idx + 1], enable_gqa=True)
    batched = sdpa(bq, bk, bv, attn_mask=mask, enable_gqa=True)
    assert torch.equal(batched[idx:idx + 1], alone)
    # one query row alone
    i = data.draw(st.integers(0, Q - 1))
    row = sdpa(q[:, :, i:i + 1], k, v, attn_mask=mask[idx:idx + 1, :, i:i + 1], enable_gqa=True)
    assert torch.equal(row, alone[:, :, i:i + 1])
    # odd storage offsets (misaligned)
    off = sdpa(at_offset(q, 3), at_offset(k, 5), at_offset(v, 1), attn_mask=mask[idx:idx + 1], enable_gqa=True)
    assert torch.equal(off, alone)


@given(data=st.data())
def test_l1_non_contiguous_layouts(device, data):
    # HF produces q/k/v as (B, L, H, D).transpose(1, 2); the result must equal the contiguous run.
    dtype = data.draw(st.sampled_from(DTYPES))
    B, H, Q, K, D = data.draw(st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 20),
                                        st.sampled_from(SHORT_KEYS), st.sampled_from(HEAD_DIMS)))
    seed = data.draw(st.integers(0, 2**30))
    q = make((B, Q, H, D), dtype, device, seed=seed).transpose(1, 2)
    k = make((B, K, H, D), dtype, device, seed=seed + 1).transpose(1, 2)
    v = make((B, K, H, D), dtype, device, seed=seed + 2).transpose(1, 2)
    assert not q.is_contiguous() or H == 1 or Q == 1
    y = sdpa(q, k, v)
    assert torch.equal(y, sdpa(q.contiguous(), k.contiguous(), v.contiguous()))
    # a non-unit last-dim stride is copied (memory only), same bits
    qs = torch.stack([q, q], -1)[..., 0]
    assert torch.equal(sdpa(qs, k, v), y)
    assert_nontrivial(y)


@pytest.mark.parametrize("ratio", (1, 4, 8))
def test_gqa_equals_expanded(device, ratio):
    for dtype in DTYPES:
        Hk = 2
        q, k, v = qkv(2, Hk * ratio, Hk, 7, 130, 32, dtype=dtype, device=device, seed=ratio)
        y = sdpa(q, k, v, is_causal=True, enable_gqa=True)
        ke, ve = k.repeat_interleave(ratio, 1), v.repeat_interleave(ratio, 1)
        assert torch.equal(y, sdpa(q, ke, ve, is_causal=True))
        assert_nontrivial(y)


# ---- L2: padding ----------------------------------------------------------------------------------------------

def hf_padded_mask(n, left, right, window=None, device="cpu"):
    """HF sdpa-style (1, 1, T, T) bool mask: causal (optionally windowed) and key not padding."""
    T = left + n + right
    m = causal_mask(T, T, window=window, device=device)
    keep = torch.zeros(T, dtype=torch.bool, device=device)
    keep[left:left + n] = True
    return m & keep


@given(data=st.data())
def test_l2_padding_invariant(device, data):
    dtype = data.draw(st.sampled_from(DTYPES))
    n = data.draw(st.sampled_from((1, 2, 17, 63, 64, 65, 129, 200)))
    left = data.draw(st.integers(0, 70))
    right = data.draw(st.integers(0, 70))
    window = data.draw(st.one_of(st.none(), st.integers(1, 150)))
    cap = data.draw(st.one_of(st.none(), st.sampled_from((5.0, 50.0))))
    Hk = data.draw(st.integers(1, 2))
    Hq = Hk * data.draw(st.sampled_from((1, 4)))
    D = data.draw(st.sampled_from(HEAD_DIMS))
    seed = data.draw(st.integers(0, 2**30))
    q, k, v = qkv(1, Hq, Hk, n, n, D, dtype=dtype, device=device, seed=seed)
    pos = torch.arange(n, device=device)[None]
    alone = sdpa(q, k, v, is_causal=True, enable_gqa=True, position_ids=pos, sliding_window=window, softcap=cap)
    T = left + n + right

    def pad(x, s):  # pad slots hold garbage (even NaN in K/V): masked keys are never read
        out = make((1, x.shape[1], T, x.shape[3]), dtype, device, seed=s) * 100
        if s != seed + 11:
            out[:, :, :left] = float("nan")
        out[:, :, left:left + n] = x
        return out
    mask = hf_padded_mask(n, left, right, window, device)
    # generate()-style positions: cumsum(mask) - 1, pads -> 1 (any value: pad rows are not compared)
    ppos = torch.ones(1, T, dtype=torch.long, device=device)
    ppos[0, left:left + n] = pos[0]
    other = make((1, Hq, T, D), dtype, device, seed=seed + 5)
    bq = torch.cat([other, pad(q, seed + 11)]) if left % 2 else torch.cat([pad(q, seed + 11), other])
    bk = torch.cat([pad(k, seed + 12)] * 2)
    bv = torch.cat([pad(v, seed + 13)] * 2)
    b = 1 if left % 2 else 0
    y = sdpa(bq, bk, bv, attn_mask=mask.expand(2, 1, T, T), enable_gqa=True, position_ids=ppos.expand(2, T),
             sliding_window=window, softcap=cap)
    assert torch.equal(y[b:b + 1, :, left:left + n], alone)
    assert not torch.isnan(y[b:b + 1, :, left:left + n]).any()


# ---- L3: packing ----------------------------------------------------------------------------------------------

@given(data=st.data())
def test_l3_packing_invariant(device, data):
    dtype = data.draw(st.sampled_from(DTYPES))
    n = data.draw(st.sampled_from((1, 3, 63, 64, 65, 150)))
    others = data.draw(st.lists(st.integers(1, 90), min_size=0, max_size=4))
    at = data.draw(st.integers(0, len(others)))
    lens = others[:at] + [n] + others[at:]
    window = data.draw(st.one_of(st.none(), st.integers(1, 100)))
    H = data.draw(st.integers(1, 3))
    D = data.draw(st.sampled_from(HEAD_DIMS))
    seed = data.draw(st.integers(0, 2**30))
    T = sum(lens)
    start = sum(lens[:at])
    q, k, v = qkv(1, H, H, T, T, D, dtype=dtype, device=device, seed=seed)
    sl = slice(start, start + n)
    alone = sdpa(q[:, :, sl], k[:, :, sl], v[:, :, sl], is_causal=True, sliding_window=window,
                 position_ids=torch.arange(n, device=device)[None])
    # (a) varlen: cu_seqlens
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32, device=device)
    pos = torch.cat([torch.arange(L) for L in lens]).to(device)[None]
    ya = sdpa(q, k, v, cu_seqlens=cu, sliding_window=window)
    assert torch.equal(ya[:, :, sl], alone)
    # (b) position-id resets with an HF-style block-diagonal causal mask
    doc = torch.repeat_interleave(torch.arange(len(lens)), torch.tensor(lens)).to(device)
    mask = causal_mask(T, T, window=window, device=device) & (doc[:, None] == doc[None, :])
    yb = sdpa(q, k, v, attn_mask=mask, position_ids=pos, sliding_window=window)
    assert torch.equal(yb[:, :, sl], alone)
    assert torch.equal(ya, yb)
    assert_nontrivial(alone)


# ---- L4: prefill == chunked prefill == decode ----------------------------------------------------------------

def check_prefill_chunked_decode(q, k, v, window, cap, cuts, use_pos, static_extra):
    device, n = q.device, q.shape[2]
    pos = torch.arange(n, device=device)[None]
    kw = dict(sliding_window=window, softcap=cap, enable_gqa=True)
    pkw = lambda a, b: dict(position_ids=pos[:, a:b]) if (use_pos or window is not None) else {}  # noqa: E731
    full = sdpa(q, k, v, is_causal=True, **pkw(0, n), **kw)
    # chunked prefill: chunk [a, b) against the cache [0, b), bottom-right causal mask (explicit intervals)
    bounds = [0] + sorted(set(c for c in cuts if 0 < c < n)) + [n]
    for a, b in zip(bounds[:-1], bounds[1:]):
        mask = causal_mask(b - a, b, past=a, window=window, device=device)
        y = sdpa(q[:, :, a:b], k[:, :, :b], v[:, :, :b], attn_mask=mask, **pkw(a, b), **kw)
        assert torch.equal(y, full[:, :, a:b]), f"chunk [{a}, {b})"
    # decode with a growing cache (mask None: Q == 1 attends every key) and with a static, zero-filled buffer
    Kbuf = n + static_extra
    kb = torch.zeros(k.shape[:2] + (Kbuf, k.shape[3]), dtype=k.dtype, device=device)
    vb = torch.zeros(v.shape[:2] + (Kbuf, v.shape[3]), dtype=v.dtype, device=device)
    for t in range(n):
        y = sdpa(q[:, :, t:t + 1], k[:, :, :t + 1], v[:, :, :t + 1], **pkw(t, t + 1), **kw)
        assert torch.equal(y, full[:, :, t:t + 1]), f"decode token {t}"
        if static_extra:
            kb[:, :, t], vb[:, :, t] = k[:, :, t], v[:, :, t]
            mask = causal_mask(1, Kbuf, past=t, window=window, device=device)
            y = sdpa(q[:, :, t:t + 1], kb, vb, attn_mask=mask, **pkw(t, t + 1), **kw)
            assert torch.equal(y, full[:, :, t:t + 1]), f"static-cache decode token {t}"
    assert_nontrivial(full)


@given(data=st.data())
def test_l4_prefill_chunked_decode(device, data):
    dtype = data.draw(st.sampled_from(DTYPES))
    n = data.draw(st.sampled_from((1, 2, 17, 63, 64, 65, 130, 200)))
    cuts = data.draw(st.lists(st.integers(1, max(1, n - 1)), max_size=5))
    window = data.draw(st.one_of(st.none(), st.integers(1, 150)))
    cap = data.draw(st.one_of(st.none(), st.just(20.0)))
    Hk = data.draw(st.integers(1, 2))
    Hq = Hk * data.draw(st.sampled_from((1, 4)))
    D = data.draw(st.sampled_from(HEAD_DIMS))
    seed = data.draw(st.integers(0, 2**30))
    q, k, v = qkv(1, Hq, Hk, n, n, D, dtype=dtype, device=device, seed=seed)
    check_prefill_chunked_decode(q, k, v, window, cap, cuts, data.draw(st.booleans()),
                                 data.draw(st.sampled_from((0, 5))))


@pytest.mark.parametrize("n,window", ((1100, None), (2100, None), (1100, 700)))
def test_l4_across_chunks(device, n, window):
    # keys cross the 1024-key chunk boundaries of §6; every token decoded.
    q, k, v = qkv(1, 2, 1, n, n, 16, dtype=torch.bfloat16, device=device, seed=n)
    check_prefill_chunked_decode(q, k, v, window, None, [1, 1000, 1030, 2048], True, 0)


# ---- the op and its validation --------------------------------------------------------------------------------

@given(data=st.data(), dtype=st.sampled_from(DTYPES), D=st.sampled_from(HEAD_DIMS), Hk=st.integers(1, 2),
       seed=st.integers(0, 2**30))
def test_mask_holes_rank_order(device, data, dtype, D, Hk, seed):
    """A padding mask with holes (a pad id inside the text; docs/REDUCTION_ORDER.md §6, keys by rank): each
    batch entry's rows == the entry's valid keys alone, causal, whatever the holes; lengths cross a key block."""
    B = data.draw(st.integers(1, 3), label="B")
    K = data.draw(st.sampled_from((1, 5, 63, 64, 65, 130)), label="K")
    valid = torch.tensor([data.draw(st.lists(st.booleans(), min_size=K, max_size=K), label=f"valid{b}")
                          for b in range(B)])
    causal = torch.ones(K, K, dtype=torch.bool).tril()
    mask = (valid[:, None, :] & causal[None] & valid[:, :, None])[:, None].to(device)   # pad query rows: none
    q, k, v = qkv(B, 2 * Hk, Hk, K, K, D, dtype=dtype, device=device, seed=seed)
    out = sdpa(q, k, v, attn_mask=mask, enable_gqa=True)
    for b in range(B):
        idx = valid[b].nonzero()[:, 0].to(device)
        if idx.numel() == 0:
            continue
        alone = sdpa(q[b:b + 1, :, idx], k[b:b + 1, :, idx], v[b:b + 1, :, idx], is_causal=True, enable_gqa=True)
        assert torch.equal(out[b][:, idx], alone[0])


def test_descriptor():
    rows = attention_rows(1, 1, 4, 6, "cpu", is_causal=True)
    assert rows[0].tolist() == [[0, 0, 1], [0, 0, 2], [0, 0, 3], [0, 0, 4]]
    cu = torch.tensor([0, 2, 5], dtype=torch.int32)
    rows = attention_rows(1, 1, 5, 5, "cpu", cu_seqlens=cu, sliding_window=2)
    assert rows[0].tolist() == [[0, 0, 1], [0, 0, 2], [2, 2, 3], [2, 2, 4], [2, 3, 5]]
    pos = torch.tensor([[0, 0, 0, 1, 2]])  # left padding of 2, generate()-style positions
    mask = hf_padded_mask(3, 2, 0)
    rows = attention_rows(1, 1, 5, 5, "cpu", attn_mask=mask, position_ids=pos)
    assert rows[0].tolist() == [[0, 0, 0], [0, 0, 0], [2, 2, 3], [2, 2, 4], [2, 2, 5]]


def test_opcheck():
    q, k, v = qkv(2, 4, 2, 5, 70, 16, seed=1)
    rows = attention_rows(2, 4, 5, 70, "cpu", is_causal=True)
    for dtype in DTYPES:
        torch.library.opcheck(torch.ops.detops.attention, (q.to(dtype), k.to(dtype), v.to(dtype), rows, 0.25, 0.0))


def test_compiled_op_is_opaque():
    # torch.compile sees detops::attention through its fake kernel and keeps it as one opaque op
    q, k, v = qkv(1, 2, 2, 5, 70, 16, seed=2)
    rows = attention_rows(1, 2, 5, 70, "cpu", is_causal=True)
    fn = torch.compile(lambda q, k, v, r: torch.ops.detops.attention(q, k, v, r, 0.25, 0.0) * 2,
                       backend="aot_eager", fullgraph=True)
    assert torch.equal(fn(q, k, v, rows), torch.ops.detops.attention(q, k, v, rows, 0.25, 0.0) * 2)


def test_bad_inputs_raise(device):
    q, k, v = qkv(1, 2, 2, 4, 6, 16, device=device, seed=1)
    holes = torch.ones(1, 1, 4, 6, dtype=torch.bool, device=device)
    holes[0, 0, 2, 3] = False
    # row 2 skips key 3, which the other rows attend: no rank order of the entry's keys gives that row
    with pytest.raises(ValueError, match=r"mask pattern cannot be ordered: row 2 of batch 0"):
        sdpa(q, k, v, attn_mask=holes)
    with pytest.raises(ValueError, match="the head dim .* is 0"):
        sdpa(q[..., :0], k[..., :0], v)
    heads = torch.ones(1, 2, 4, 6, dtype=torch.bool, device=device)
    heads[0, 1, 0, 0] = False
    with pytest.raises(ValueError, match="differs across heads"):
        sdpa(q, k, v, attn_mask=heads)
    with pytest.raises(ValueError, match="only hold 0"):
        sdpa(q, k, v, attn_mask=torch.full((4, 6), 0.5, device=device))
    with pytest.raises(ValueError, match="dropout_p must be 0"):
        sdpa(q, k, v, dropout_p=0.1)
    with pytest.raises(ValueError, match="one dtype"):
        sdpa(q, k.half(), v)
    with pytest.raises(ValueError, match="enable_gqa"):
        sdpa(q, k[:, :1], v[:, :1])
    q3, _, _ = qkv(1, 3, 2, 4, 6, 16, device=device)
    with pytest.raises(ValueError, match="multiple of key/value heads"):
        sdpa(q3, k, v, enable_gqa=True)
    with pytest.raises(ValueError, match="not both"):
        sdpa(q, k, v, attn_mask=holes, is_causal=True)
    with pytest.raises(ValueError, match="sliding_window needs position_ids"):
        sdpa(q, k, v, is_causal=True, sliding_window=3)
    with pytest.raises(ValueError, match="cu_seqlens"):
        sdpa(q, k, v, cu_seqlens=torch.tensor([0, 4], dtype=torch.int32))
    with pytest.raises(ValueError, match="does not broadcast"):
        sdpa(q, k, v, attn_mask=torch.ones(4, 5, dtype=torch.bool, device=device))
    with pytest.raises(ValueError, match="4-D"):
        sdpa(q[0, 0], k[0, 0], v[0, 0])
    with pytest.raises(ValueError, match="softcap"):
        sdpa(q, k, v, softcap=-1.0)
    rows = attention_rows(1, 2, 4, 6, device)
    with pytest.raises(RuntimeError, match="rows must be int32"):
        torch.ops.detops.attention(q, k, v, rows.long(), 0.25, 0.0)
    with pytest.raises(RuntimeError, match="rows must have shape"):
        torch.ops.detops.attention(q, k, v, rows[:, :3], 0.25, 0.0)
    with pytest.raises(RuntimeError, match="query head dim"):
        torch.ops.detops.attention(q, k[..., :8], v, rows, 0.25, 0.0)
    with pytest.raises(RuntimeError, match="one dtype"):
        torch.ops.detops.attention(q, k, v.double(), rows, 0.25, 0.0)
    with pytest.raises(RuntimeError, match="float32, bfloat16 or float16"):
        torch.ops.detops.attention(q.double(), k.double(), v.double(), rows, 0.25, 0.0)


# ---- negative controls: stock SDPA fails what detops passes ---------------------------------------------------

def test_stock_sdpa_is_not_padding_invariant():
    # A fixed case verified with torch 2.13 CPU: 13 pad tokens on the left change stock bf16 SDPA's output for
    # the same sequence (its key blocks start at index 0 of the padded row). detops gives the same bits.
    n, P, D = 300, 13, 64
    q, k, v = qkv(1, 2, 2, n, n, D, dtype=torch.bfloat16, seed=1)
    mask = hf_padded_mask(n, P, 0)

    def pad(x):
        return torch.cat([torch.zeros(1, 2, P, D, dtype=x.dtype), x], 2)
    stock_alone = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    stock_padded = F.scaled_dot_product_attention(pad(q), pad(k), pad(v), attn_mask=mask)[:, :, P:]
    assert not torch.equal(stock_padded, stock_alone)
    pos = torch.cat([torch.zeros(P, dtype=torch.long), torch.arange(n)])[None]
    ours_padded = sdpa(pad(q), pad(k), pad(v), attn_mask=mask, position_ids=pos)[:, :, P:]
    assert torch.equal(ours_padded, sdpa(q, k, v, is_causal=True))


# ---- the exact order of §6: an independent numpy float32 re-implementation, compared bit for bit -------------

F32 = __import__("numpy").float32


def np_det_exp(x):
    """REDUCTION_ORDER.md §7 det_exp in numpy float32: the softmax references' implementation (its fma is exact)."""
    from detops.testing.reference import det_exp
    return det_exp(x)


def np_det_tanh(x):
    import numpy as np
    e = np_det_exp(F32(2.0) * np.abs(x))
    t = F32(1.0) - F32(2.0) / (e + F32(1.0))
    return np.where(x < 0, -t, t).astype(np.float32)


def same_order_reference(q, k, v, rows, scale, softcap):
    """§6 step by step for each (b, h, i) row: anchored blocks and chunks, tree over 64 slots, ascending sums."""
    import numpy as np
    BK = detops._lib.constant("attn_block_keys")
    CK = detops._lib.constant("attn_chunk_keys")
    qf, kf, vf = (t.float().cpu().numpy() for t in (q, k, v))
    B, Hq, Q, D = qf.shape
    K, Dv, group = kf.shape[2], vf.shape[3], Hq // kf.shape[1]
    out = np.zeros((B, Hq, Q, Dv), dtype=np.float32)
    for b in range(B):
        for i in range(Q):
            anchor, lo, hi = (int(x) for x in rows[b, i])
            lo, hi = max(lo, 0), min(hi, K)
            for h in range(Hq):
                kk, vv = kf[b, h // group], vf[b, h // group]
                M, L, O = F32(-np.inf), F32(0), np.zeros(Dv, np.float32)
                m, l, o = F32(-np.inf), F32(0), np.zeros(Dv, np.float32)
                blocks = range((lo - anchor) // BK, (hi - 1 - anchor) // BK + 1) if lo < hi else []
                for blk in blocks:
                    start = anchor + blk * BK
                    j0, j1 = max(lo, start), min(hi, start + BK)
                    s = np.zeros(j1 - j0, np.float32)
                    for d in range(D):  # ascending d
                        s = s + qf[b, h, i, d] * kk[j0:j1, d]
                    s = s * F32(scale)
                    if softcap > 0:
                        s = F32(softcap) * np_det_tanh(s / F32(softcap))
                    m_new = max(m, s.max())
                    if m_new != -np.inf:
                        alpha = np_det_exp(m - m_new)
                        p = np.zeros(BK, np.float32)
                        p[j0 - start:j1 - start] = np_det_exp(s - m_new)
                        tree = p.copy()
                        while len(tree) > 1:  # bottom-up pairwise: v[l] = v[2l] + v[2l+1]
                            tree = tree[0::2] + tree[1::2]
                        l = l * alpha + tree[0]
                        terms = p[j0 - start:j1 - start, None] * vv[j0:j1]
                        t = np.add.accumulate(np.concatenate([np.zeros((1, Dv), np.float32), terms]), axis=0)[-1]
                        o = o * alpha + t
                        m = m_new
                    if blk == blocks[-1] or (blk + 1) * BK // CK != blk * BK // CK:  # chunk ends: merge
                        mm = max(M, m)
                        if mm != -np.inf:
                            a, c = np_det_exp(M - mm), np_det_exp(m - mm)
                            L, O, M = L * a + l * c, O * a + o * c, mm
                        m, l, o = F32(-np.inf), F32(0), np.zeros(Dv, np.float32)
                if M != -np.inf:
                    out[b, h, i] = O / L
    return torch.from_numpy(out).to(q.dtype)


@given(data=st.data())
def test_same_order_reference_bitwise(device, data):
    # fp32 drawn more often: rounding the output to bf16/fp16 hides most order differences
    dtype = data.draw(st.sampled_from((torch.float32,) + DTYPES))
    K = data.draw(st.sampled_from((1, 63, 64, 65, 130, 1025, 2049)))
    Q = data.draw(st.integers(1, 3))
    D = data.draw(st.sampled_from((16, 32)))
    Hk = data.draw(st.integers(1, 2))
    Hq = Hk * data.draw(st.sampled_from((1, 2)))
    cap = data.draw(st.sampled_from((0.0, 0.0, 7.0)))
    seed = data.draw(st.integers(0, 2**30))
    q, k, v = qkv(1, Hq, Hk, Q, K, D, 16, dtype=dtype, device=device, seed=seed)
    g = torch.Generator().manual_seed(seed)
    lo = torch.randint(0, K, (1, Q, 1), generator=g)
    hi = torch.minimum(lo + torch.randint(1, 2 * K, (1, Q, 1), generator=g), torch.tensor(K))
    anchor = lo - torch.randint(-70, 1500, (1, Q, 1), generator=g)  # anchors before and after lo
    rows = torch.cat([anchor, lo, hi], -1).to(torch.int32)
    y = torch.ops.detops.attention(q, k, v, rows.to(device), 0.3, cap)
    assert torch.equal(y.cpu(), same_order_reference(q, k, v, rows, 0.3, cap))


@pytest.mark.parametrize("K", (1023, 1024, 1025, 2049))
def test_same_order_reference_across_chunks(device, K):
    # intervals and anchors that put chunk (1024) and block (64) boundaries inside the attended keys
    q, k, v = qkv(1, 2, 1, 6, K, 32, 16, device=device, seed=K)
    rows = torch.tensor([[[0, 0, K], [-513, 0, K], [-1, 1, K], [5, 5, K - 3], [K - 1030, K - 1000, K], [40, 7, K]]],
                        dtype=torch.int32)
    for cap in (0.0, 7.0):
        y = torch.ops.detops.attention(q, k, v, rows.to(device), 0.3, cap)
        assert torch.equal(y.cpu(), same_order_reference(q, k, v, rows, 0.3, cap))
        assert_nontrivial(y)
