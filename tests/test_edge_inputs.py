"""Edge inputs that used to give silent wrong results or odd errors: each now gives torch's result or a clear error.

- attention with more keys than the int32 rows descriptor can index (K >= 2^31) is refused on every backend (the CPU
  used to wrap K = 2^32 + 4 to 4 keys); tested with zero-stride (expanded) keys, nothing of that size is allocated;
- rms_norm / add_rms_norm over a width-0 normalized shape return empty tensors (F.rms_norm does), and softmax /
  log_softmax over a width-0 dim match torch;
- a thin-N CPU matmul ((1 x K) @ (K x 1)) needs O(1) workspace per thread, not a K x 64 fp32 panel of B (64x the
  input); measured as the peak resident memory of a subprocess.
"""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import detops


MAX_KEYS = detops.constants()["kAttnMaxKeys"]


# ---- attention: keys beyond the int32 rows descriptor ------------------------------------------------------

def _expanded_kv(K, D=8, dtype=torch.float32):
    one = torch.ones(1, 1, 1, D, dtype=dtype)
    return one.expand(1, 1, K, D), one.expand(1, 1, K, D)  # stride 0 along the keys: no allocation of K rows


def test_attention_key_limit_is_int32():
    assert MAX_KEYS == 2**31 - 1


@pytest.mark.parametrize("K", (MAX_KEYS + 1, 2**32 + 4))
def test_attention_too_many_keys_is_an_error(K):
    q = torch.ones(1, 1, 1, 8)
    k, v = _expanded_kv(K)
    rows = torch.tensor([[[0, 0, 4]]], dtype=torch.int32)
    with pytest.raises(RuntimeError, match=r"at most 2147483647 keys .*int32.*got " + str(K)):
        torch.ops.detops.attention(q, k, v, rows, 1.0, 0.0)


def test_attention_too_many_keys_through_sdpa():
    """The public wrapper builds the int32 descriptor (K = 2^32 + 4 wraps to 4 there); the op refuses K itself."""
    q = torch.ones(1, 1, 1, 8)
    k, v = _expanded_kv(2**32 + 4)
    with pytest.raises(RuntimeError, match="at most 2147483647 keys"):
        detops.scaled_dot_product_attention(q, k, v)


def test_attention_expanded_keys_below_the_limit_still_work():
    q = torch.randn(1, 2, 3, 8)
    k, v = _expanded_kv(300)
    y = detops.scaled_dot_product_attention(q, k.expand(1, 2, 300, 8), v.expand(1, 2, 300, 8))
    # Every key and value row is the same ones row: every p is exactly 1, l = 300 and o = 300, so y = 1 exactly.
    assert torch.equal(y, torch.ones_like(y))


# ---- width-0 normalized dims -------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", ((3, 0), (2, 4, 0), (0,)))
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16))
def test_rms_norm_width_zero_is_empty_like_torch(device, shape, dtype):
    x = torch.randn(shape, dtype=torch.float32).to(dtype).to(device)
    ref = F.rms_norm(x, (0,))
    y = detops.rms_norm(x, 0)
    assert y.shape == ref.shape and y.dtype == ref.dtype and y.device == x.device
    w = torch.ones(0, dtype=torch.float32, device=device)
    for mode in ("plain", "cast_first", "offset"):
        yw = detops.rms_norm(x, [0], w, weight_mode=mode)
        assert yw.shape == x.shape
    assert detops.rms_norm(x, [0], w, weight_mode="cast_first").dtype == torch.promote_types(dtype, torch.float32)


def test_add_rms_norm_width_zero_is_empty(device):
    x = torch.randn(3, 0, device=device)
    r = torch.randn(3, 0, device=device)
    y, s = detops.add_rms_norm(x, r, 0)
    assert y.shape == (3, 0) and s.shape == (3, 0)
    with pytest.raises(RuntimeError, match="residual shape"):
        detops.add_rms_norm(x, torch.randn(2, 0, device=device), 0)


def test_rms_norm_multi_dim_shape_with_a_zero():
    x = torch.randn(2, 3, 0)
    assert detops.rms_norm(x, (3, 0)).shape == F.rms_norm(x, (3, 0)).shape


@pytest.mark.parametrize("fn", ("softmax", "log_softmax"))
@pytest.mark.parametrize("shape,dim", (((3, 0), -1), ((0, 5), -1), ((2, 0, 4), 1), ((0,), 0)))
def test_softmax_width_zero_like_torch(device, fn, shape, dim):
    x = torch.randn(shape, device=device)
    ref = getattr(torch, fn)(x, dim)
    y = getattr(detops, fn)(x, dim)
    assert y.shape == ref.shape and y.dtype == ref.dtype
    y16 = getattr(detops, fn)(x, dim, torch.bfloat16)
    assert y16.shape == ref.shape and y16.dtype == torch.bfloat16


# ---- thin-N CPU matmul: workspace O(1) per thread, not K x 64 floats --------------------------------------

_PEAK = r"""
import resource, sys, torch, detops
torch.set_num_threads(2)
K = 1 << 22
a = torch.randn(1, K)
b = torch.randn(K, 1)
w = b.t().contiguous()  # nn.Linear's weight (N=1, K): B = w.t() with unit row stride
detops.mm(a[:, :64], b[:64]); detops.linear(a[:, :64], w[:, :64])  # warm up (thread pool, library)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
y1 = detops.mm(a, b)
y2 = detops.linear(a, w)
y3 = detops.mm(a, b, compensated=True)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert torch.equal(y1, y2), (y1, y2)
print((peak - base) * 1024, a.numel() * 4)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB is Linux's")
def test_thin_n_matmul_extra_memory_is_bounded():
    env = dict(os.environ, OMP_NUM_THREADS="2")
    out = subprocess.run([sys.executable, "-c", _PEAK], capture_output=True, text=True, env=env, timeout=300,
                         cwd=os.path.join(os.path.dirname(__file__), ".."))
    assert out.returncode == 0, out.stderr
    extra, input_bytes = map(int, out.stdout.split()[-2:])
    # Before: a (K x 64) fp32 panel of B per thread = 64x the 16 MiB input (1 GiB each). Now: a fixed slab.
    assert extra < input_bytes, f"matmul grew the peak RSS by {extra} bytes for a {input_bytes}-byte input"


def test_thin_n_matmul_bits_unchanged_across_slab_edges():
    """K across the B-slab edges (kMatmulCpuPanelDepth) gives the §5 chain: equal to a float64-free reference built
    from the K-block definition (block sums in fp32, ascending), for mm and the compensated order's plain value."""
    depth, kb = detops.constants()["kMatmulCpuPanelDepth"], detops.constants()["kMatmulKBlock"]
    g = torch.Generator().manual_seed(0)
    for K in (depth - 1, depth, depth + 1, 2 * depth + kb + 3):
        a = torch.randn(3, K, generator=g)
        b = torch.randn(K, 5, generator=g)
        y = detops.mm(a, b)
        ref = torch.zeros(3, 5)
        for k0 in range(0, K, kb):
            t = torch.zeros(3, 5)
            for k in range(k0, min(K, k0 + kb)):
                t = t + a[:, k:k + 1] * b[k:k + 1, :]
            ref = ref + t
        assert torch.equal(y, ref), K
