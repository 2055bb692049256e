"""CUDA attention (REDUCTION_ORDER.md §6): CUDA == CPU bitwise for the CUDA-core path (contract L5 for attention,
by construction: the kernels call the same attention_math.h functions in the same order; fp32, and bf16/fp16
with head dims other than 64/128 -- those run the tensor-core order of §6b), and L1-L4 on the GPU for both paths, all with
torch.equal. Negative controls show stock SDPA failing the same properties. Skipped without CUDA."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from conftest import requires_cuda
from values import ATTN_KEY_EDGES, C, around, make, profile_st, seed_st

pytestmark = requires_cuda

HEADS = ((1, 1), (4, 1), (8, 2), (32, 8))
KEY_LENS = ATTN_KEY_EDGES + (4 * C["kAttnChunkKeys"] + 1, 8 * C["kAttnChunkKeys"])  # §6 block / chunk edges
QUERY_LENS = (1, 2) + around(C["kAttnRowHeads"]) + ATTN_KEY_EDGES[1:]  # a CTA's (row, head) pairs, then the key edges
HEAD_DIMS = (64, 80, 96, 128, 256)
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CPU_BUDGET = 6e8  # multiply-adds of the CPU oracle per example (it is the slow side)


def uses_tensor_cores(dtype, D, Dv=None):
    """bf16/fp16 with D == Dv <= 128 run the tensor-core order of REDUCTION_ORDER.md §6b, not the CPU's §6:
    CUDA == CPU (L5) holds only for the CUDA-core cases; the §6b path has its own tests (test_attention_tc.py)."""
    return dtype in (torch.bfloat16, torch.float16) and D <= 128 and (Dv is None or Dv == D)


def _ops():
    return torch.ops.detops


def _sdpa():
    from detops.ops.attention import scaled_dot_product_attention
    return scaled_dot_product_attention


def _rows(*args, **kw):
    from detops.ops.attention import attention_rows
    return attention_rows(*args, **kw)


def qkv(B, Hq, Hk, Q, K, D, dtype, profile, seed, Dv=None, device="cuda"):
    Dv = D if Dv is None else Dv
    q = make((B, Hq, Q, D), dtype, device, profile, seed)
    k = make((B, Hk, K, D), dtype, device, profile, seed + 1)
    v = make((B, Hk, K, Dv), dtype, device, profile, seed + 2)
    return q, k, v


def gpu_qkv(B, Hq, Hk, Q, K, D, seed, dtype=torch.bfloat16):
    """Large normal tensors drawn on the GPU (a CPU float64 draw of GBs would dominate the test time)."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    return tuple(torch.randn(shape, generator=g, device="cuda", dtype=torch.float32).to(dtype)
                 for shape in ((B, Hq, Q, D), (B, Hk, K, D), (B, Hk, K, D)))


def fit_cpu_budget(B, Hq, Q, K, D):
    """Shrinks Q so that the CPU oracle stays fast; the GPU side is not the limit."""
    per_q = B * Hq * K * 2 * D
    return max(1, min(Q, int(CPU_BUDGET // per_q)))


def both(q, k, v, rows, scale, softcap):
    out_cuda = _ops().attention(q, k, v, rows, scale, softcap)
    out_cpu = _ops().attention(q.cpu(), k.cpu(), v.cpu(), rows.cpu(), scale, softcap)
    return out_cpu, out_cuda.cpu()


# ---- L5: CUDA == CPU ----------------------------------------------------------------------------------------

@given(heads=st.sampled_from(HEADS), B=st.sampled_from((1, 2, 3)), Q=st.sampled_from(QUERY_LENS),
       K=st.sampled_from(KEY_LENS), D=st.sampled_from(HEAD_DIMS), dtype=st.sampled_from(DTYPES),
       profile=profile_st, seed=seed_st,
       mode=st.sampled_from(("full", "causal", "window", "softcap", "padding")))
def test_cuda_equals_cpu_api(heads, B, Q, K, D, dtype, profile, seed, mode):
    assume(not uses_tensor_cores(dtype, D))  # L5 only for the CUDA-core path (REDUCTION_ORDER.md §6b)
    Hq, Hk = heads
    if mode in ("causal", "window"):
        K = Q = max(Q, 1)
    Q = fit_cpu_budget(B, Hq, Q, K, D)
    if mode in ("causal", "window"):
        K = Q
    q, k, v = qkv(B, Hq, Hk, Q, K, D, dtype, profile, seed)
    kw = dict(enable_gqa=True)
    if mode == "causal":
        kw["is_causal"] = True
    elif mode == "window":
        kw.update(is_causal=True, sliding_window=max(1, K // 3),
                  position_ids=torch.arange(Q, device="cuda")[None].expand(B, Q))
    elif mode == "softcap":
        kw["softcap"] = 30.0
    elif mode == "padding":  # right/left padded keys per batch row, bool (B, 1, Q, K) mask
        g = torch.Generator().manual_seed(seed)
        lo = torch.randint(0, K, (B,), generator=g)
        hi = torch.minimum(lo + 1 + torch.randint(0, K, (B,), generator=g), torch.tensor(K))
        j = torch.arange(K)
        kw["attn_mask"] = ((j >= lo[:, None]) & (j < hi[:, None]))[:, None, None, :].expand(B, 1, Q, K).cuda()
    out_cuda = _sdpa()(q, k, v, **kw)
    kw_cpu = {n: (t.cpu() if isinstance(t, torch.Tensor) else t) for n, t in kw.items()}
    out_cpu = _sdpa()(q.cpu(), k.cpu(), v.cpu(), **kw_cpu)
    assert torch.equal(out_cuda.cpu(), out_cpu)
    assert out_cpu.abs().sum() > 0


@given(heads=st.sampled_from(HEADS), B=st.sampled_from((1, 2, 5)), Q=st.sampled_from((1, 3, 16, 17, 40)),
       K=st.sampled_from((1, 64, 65, 1000, 1025, 2049, 3100, 8192)), D=st.sampled_from((64, 128, 256)),
       dtype=st.sampled_from(DTYPES), profile=profile_st, seed=seed_st)
def test_cuda_equals_cpu_random_rows(heads, B, Q, K, D, dtype, profile, seed):
    """Arbitrary [anchor, lo, hi] per row: rows of one query tile with different anchors (packing), anchors
    before or after lo, empty rows, rows that span many chunks. Exercises every pass of the chunk kernel."""
    assume(not uses_tensor_cores(dtype, D))  # L5 only for the CUDA-core path (REDUCTION_ORDER.md §6b)
    Hq, Hk = heads
    Q = fit_cpu_budget(B, Hq, Q, K, D)
    q, k, v = qkv(B, Hq, Hk, Q, K, D, dtype, profile, seed)
    g = torch.Generator().manual_seed(seed)
    lo = torch.randint(0, K + 1, (B, Q), generator=g)
    hi = torch.minimum(lo + torch.randint(0, K + 1, (B, Q), generator=g), torch.tensor(K))
    anchor = lo - torch.randint(-70, 2100, (B, Q), generator=g)
    shared = torch.rand(B, Q, generator=g) < 0.5  # half the rows share one anchor per batch row
    anchor = torch.where(shared, anchor[:, :1].expand(B, Q), anchor)
    rows = torch.stack([anchor, lo, hi], -1).to(torch.int32).cuda()
    out_cpu, out_cuda = both(q, k, v, rows, 1.0 / math.sqrt(D), 0.0)
    assert torch.equal(out_cuda, out_cpu)


@pytest.mark.parametrize("dtype", DTYPES)
def test_strided_and_misaligned_inputs(dtype):
    """HF layout (B, L, H, D).transpose(1, 2) and an odd storage offset (no 16-byte vector loads) give the
    bits of the contiguous case."""
    B, Hq, Hk, Q, K, D = 2, 8, 2, 33, 1100, 128
    q, k, v = qkv(B, Hq, Hk, Q, K, D, dtype, "normal", 7)
    rows = _rows(B, Hq, Q, K, "cuda")
    ref = _ops().attention(q, k, v, rows, 0.1, 0.0)
    qt = q.transpose(1, 2).contiguous().transpose(1, 2)
    kt = k.transpose(1, 2).contiguous().transpose(1, 2)
    buf = torch.empty(v.numel() + 1, dtype=dtype, device="cuda")
    vo = buf[1:].view(v.shape)
    vo.copy_(v)
    assert torch.equal(_ops().attention(qt, kt, vo, rows, 0.1, 0.0), ref)


_BAD_HEAD_DIMS = """
import torch, detops
from detops.ops.attention import scaled_dot_product_attention as sdpa
def mk(*s):
    return torch.randn(*s, device="cuda", dtype=torch.bfloat16)
for D, Dv in ((48, 48), (128, 64), (8, 8)):
    try:
        sdpa(mk(1, 2, 4, D), mk(1, 1, 16, D), mk(1, 1, 16, Dv), enable_gqa=True)
        print("NO_RAISE", D, Dv)
    except RuntimeError as e:
        assert "head dims" in str(e), str(e)
        print("RAISED", D, Dv)
"""


def test_bad_head_dims_raise():
    """Unsupported head dims raise a RuntimeError naming them. Run in a child process: on the GPU box a C++
    exception thrown inside detops._C for CUDA inputs has been seen to crash the process (exit 139), which
    must fail this test, not kill the session."""
    import os
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", _BAD_HEAD_DIMS], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ))
    assert r.returncode == 0, f"child exited {r.returncode}: {r.stderr[-2000:]}"
    assert r.stdout.split().count("RAISED") == 3, r.stdout


# ---- L0 / L1 / L2 / L3 / L4 on the GPU ----------------------------------------------------------------------

@given(S=st.sampled_from((1, 17, 64, 65, 1000, 1025, 2100)), P=st.integers(0, 1100), left=st.booleans(),
       B=st.sampled_from((1, 3, 8)), dtype=st.sampled_from(DTYPES), profile=profile_st, seed=seed_st)
@settings(max_examples=20)
def test_padding_and_batch_invariance(S, P, left, B, dtype, profile, seed):
    """L1 + L2: a sequence's rows are the same alone and padded (left or right, P pads) at a drawn batch
    index among other sequences, given position ids."""
    Hq, Hk, D = 8, 2, 128
    q, k, v = qkv(1, Hq, Hk, S, S, D, dtype, profile, seed)
    alone = _sdpa()(q, k, v, is_causal=True, enable_gqa=True)
    N = S + P
    off = P if left else 0
    Q2, K2, V2 = qkv(B, Hq, Hk, N, N, D, dtype, profile, seed + 11)
    idx = seed % B
    Q2[idx, :, off:off + S], K2[idx, :, off:off + S], V2[idx, :, off:off + S] = q[0], k[0], v[0]
    i = torch.arange(N, device="cuda")
    valid = (i >= off) & (i < off + S)
    mask = (valid[None, :] & (i[None, :] <= i[:, None]) & valid[:, None])  # (N, N), pad rows attend nothing
    mask = mask[None, None].expand(B, 1, N, N).clone()
    pos = torch.where(valid, i - off, torch.zeros_like(i))[None].expand(B, N).clone()
    for b in range(B):  # other rows: plain causal sequences of length N
        if b != idx:
            mask[b, 0] = i[None, :] <= i[:, None]
            pos[b] = i
    out = _sdpa()(Q2, K2, V2, attn_mask=mask, enable_gqa=True, position_ids=pos)
    assert torch.equal(out[idx, :, off:off + S], alone[0])
    assert torch.equal(_sdpa()(Q2, K2, V2, attn_mask=mask, enable_gqa=True, position_ids=pos), out)  # L0


@given(S=st.sampled_from((1, 63, 64, 65, 1025, 2049)), before=st.integers(0, 1500), after=st.integers(0, 300),
       dtype=st.sampled_from(DTYPES), seed=seed_st)
@settings(max_examples=20)
def test_packing_invariance(S, before, after, dtype, seed):
    """L3: a document alone == the same document packed at a drawn offset between others (cu_seqlens)."""
    Hq, Hk, D = 4, 1, 64
    q, k, v = qkv(1, Hq, Hk, S, S, D, dtype, "normal", seed)
    alone = _sdpa()(q, k, v, is_causal=True, enable_gqa=True)
    N = before + S + after
    P, Kp, Vp = qkv(1, Hq, Hk, N, N, D, dtype, "normal", seed + 5)
    P[:, :, before:before + S], Kp[:, :, before:before + S], Vp[:, :, before:before + S] = q, k, v
    cuts = sorted({0, before // 2, before, before + S, N})
    cu = torch.tensor(cuts, dtype=torch.int32, device="cuda")
    packed = _sdpa()(P, Kp, Vp, enable_gqa=True, cu_seqlens=cu)
    assert torch.equal(packed[:, :, before:before + S], alone)


@given(S=st.sampled_from((65, 1024, 1025, 2049, 4100)), D=st.sampled_from((64, 128, 256)),
       heads=st.sampled_from(HEADS), dtype=st.sampled_from(DTYPES), window=st.sampled_from((None, 100, 1500)),
       seed=seed_st, data=st.data())
@settings(max_examples=15)
def test_chunking_and_decode_invariance(S, D, heads, dtype, window, seed, data):
    """L4: full prefill == chunked prefill with drawn chunk sizes == token-by-token decode with a KV cache
    (decode at every token of the last 40 and at 8 drawn ones)."""
    Hq, Hk = heads
    q, k, v = qkv(1, Hq, Hk, S, S, D, dtype, "normal", seed)
    pos = torch.arange(S, device="cuda")[None]
    kw = dict(enable_gqa=True)
    if window is not None:
        kw["sliding_window"] = window
    full = _sdpa()(q, k, v, is_causal=True, position_ids=pos, **kw)
    # chunked prefill: chunk [s, e) attends keys [0, e) bottom-right causal
    s = 0
    while s < S:
        e = min(S, s + data.draw(st.integers(1, 1500)))
        i = torch.arange(s, e, device="cuda")
        mask = torch.arange(e, device="cuda")[None, :] <= i[:, None]
        out = _sdpa()(q[:, :, s:e], k[:, :, :e], v[:, :, :e], attn_mask=mask, position_ids=pos[:, s:e], **kw)
        assert torch.equal(out, full[:, :, s:e]), (s, e)
        s = e
    ts = sorted(set(range(max(0, S - 40), S)) | set(data.draw(st.lists(st.integers(0, S - 1), max_size=8))))
    for t in ts:  # decode: one query, the cache holds keys [0, t]
        out = _sdpa()(q[:, :, t:t + 1], k[:, :, :t + 1], v[:, :, :t + 1], position_ids=pos[:, t:t + 1], **kw)
        assert torch.equal(out, full[:, :, t:t + 1]), t


def test_decode_batch_invariance_long_kv():
    """L1 for split-KV decode: one sequence's decode row alone == in batches of 1..64 of other sequences,
    at KV lengths that span many chunks."""
    Hq, Hk, D = 32, 8, 128
    for S in (1023, 1025, 8193, 32768):
        q, k, v = gpu_qkv(1, Hq, Hk, 1, S, D, S)
        alone = _sdpa()(q, k, v, enable_gqa=True)
        for B in (2, 7, 64 if S <= 8193 else 16):
            Q2, K2, V2 = gpu_qkv(B, Hq, Hk, 1, S, D, S + B)
            j = B // 2
            Q2[j], K2[j], V2[j] = q[0], k[0], v[0]
            assert torch.equal(_sdpa()(Q2, K2, V2, enable_gqa=True)[j], alone[0]), (S, B)


# ---- negative controls: stock SDPA is not invariant ---------------------------------------------------------

def test_stock_sdpa_prefill_vs_decode_differs():
    """Stock F.scaled_dot_product_attention (bf16, CUDA): a token's output differs between full prefill and
    decode with a KV cache (the property detops' L4 test asserts for detops)."""
    Hq, D = 32, 128
    found = 0.0
    for S in (1000, 2048, 4100):
        q, k, v = gpu_qkv(1, Hq, Hq, S, S, D, S)
        full = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        dec = F.scaled_dot_product_attention(q[:, :, -1:], k, v)
        found = max(found, (dec.float() - full[:, :, -1:].float()).abs().max().item())
    assert found > 0.0
    print(f"stock SDPA prefill vs decode max |diff| = {found:.3g}")


def test_stock_sdpa_batch_size_differs():
    """Stock SDPA decode (bf16, CUDA): a sequence's output changes with the batch size."""
    Hq, D = 32, 128
    found = 0.0
    for S in (2048, 8192):
        q, k, v = gpu_qkv(1, Hq, Hq, 1, S, D, S)
        alone = F.scaled_dot_product_attention(q, k, v)
        for B in (4, 32, 64):
            Q2, K2, V2 = gpu_qkv(B, Hq, Hq, 1, S, D, S + B)
            Q2[0], K2[0], V2[0] = q[0], k[0], v[0]
            out = F.scaled_dot_product_attention(Q2, K2, V2)[0]
            found = max(found, (out.float() - alone[0].float()).abs().max().item())
    assert found > 0.0
    print(f"stock SDPA batch 1 vs batch B max |diff| = {found:.3g}")
