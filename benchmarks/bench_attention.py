"""Attention: detops vs stock F.scaled_dot_product_attention, same process, same inputs, interleaved
(benchmarks/harness.py). 32 query / 8 kv heads, head dim 128 (env DETOPS_BENCH_HEAD_DIM=64 for the other
tensor-core size; 80 / 96 are read zero-padded to 128).
bf16 (or DETOPS_BENCH_DTYPE=fp16) with D == Dv <= 128 run the tensor-core path (docs/ops/attention.md; order:
docs/REDUCTION_ORDER.md §6b); DETOPS_BENCH_DTYPE=fp32 runs the CUDA-core path (§6): the path is chosen by dtype
and head dim only.

  attn_prefill: causal, B = 1, seq 512 .. 16k; TFLOP/s with causal FLOPs 4 * B * Hq * S^2 * D / 2.
  attn_packed:  causal within documents of drawn lengths (64 .. 2048 tokens, log-normal) packed into one row of
                512 .. 16k tokens (detops: cu_seqlens; stock: F.sdpa with the dense block-diagonal mask;
                FlexAttention with a document mask); FLOPs 4 * Hq * D * sum L_i^2 / 2.
  attn_decode:  Q = 1, KV 128 .. 32k, batch 1 .. 64; GB/s of the un-expanded K/V bytes (what a GQA-aware kernel
                reads; the same byte count for every provider, so the GB/s ratio is the time ratio).
Stock runs with K/V expanded to 32 heads (repeat_interleave, outside the timing): `F.sdpa` = torch's default
backend choice (the reference of the ratio_vs_stock column), plus the flash and cuDNN backends forced, and
FlexAttention (`torch.compile(flex_attention)`, GQA without expansion) where it compiles. detops
is timed at the op, `torch.ops.detops.attention` with the rows descriptor built once (a model builds it once per forward
for all its layers). After the harness's summary, the detops speed over the BEST stock provider per case is
printed too (docs/ops/attention.md's first bar: >= 0.5).

    python benchmarks/bench_attention.py --filter prefill --reps 5 --warmup 2 --out benchmarks/results/attention_prefill_tc_h100.csv
    python benchmarks/bench_attention.py --filter decode --reps 20 --warmup 5 --out benchmarks/results/attention_decode_tc_h100.csv
"""
import os
import statistics
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import detops  # noqa: E402,F401
from detops.ops.attention import attention_rows  # noqa: E402
from harness import Case, bench_main, document_lengths  # noqa: E402

HQ, HK = 32, 8
D = int(os.environ.get("DETOPS_BENCH_HEAD_DIM", "128"))
DTYPE_NAME = os.environ.get("DETOPS_BENCH_DTYPE", "bf16")
DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[DTYPE_NAME]
PATH = "tensor-core §6b" if DTYPE != torch.float32 and D <= 128 else "CUDA-core §6"
PREFILL = (512, 1024, 2048, 4096, 8192, 16384)
DECODE = ((1, 128), (1, 1024), (1, 4096), (1, 32768), (16, 4096), (64, 2048), (8, 16384), (64, 8192))


def stock(q, ke, ve, causal, backend=None):
    def f():
        if backend is None:
            return F.scaled_dot_product_attention(q, ke, ve, is_causal=causal)
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, ke, ve, is_causal=causal)
    return f


def flex(q, k, v, mask_mod, S):
    """FlexAttention with a block mask built once (outside the timing), or None where it does not run here (or
    DETOPS_BENCH_NO_FLEX=1: its compilation takes ~10 s a shape)."""
    if os.environ.get("DETOPS_BENCH_NO_FLEX") == "1":
        return None
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        block = create_block_mask(mask_mod, None, None, S, S, device=q.device)
        fn = torch.compile(flex_attention)
        call = lambda: fn(q, k, v, block_mask=block, enable_gqa=True)  # noqa: E731
        call()
        return call
    except Exception as e:  # noqa: BLE001 - a peer that cannot run is reported and left out, not fatal
        print(f"FlexAttention left out ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
        return None


def causal_mask(b, h, qi, ki):
    return qi >= ki


def make_packed_case(S):
    lens = document_lengths(S, torch.Generator().manual_seed(0))
    q = torch.randn(1, HQ, S, D, device="cuda", dtype=DTYPE)
    k = torch.randn(1, HK, S, D, device="cuda", dtype=DTYPE)
    v = torch.randn(1, HK, S, D, device="cuda", dtype=DTYPE)
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
    rows = attention_rows(1, HQ, S, S, "cuda", cu_seqlens=cu)
    doc = torch.repeat_interleave(torch.arange(len(lens), device="cuda"), torch.tensor(lens, device="cuda"))
    pos = torch.arange(S, device="cuda")
    dense = (doc[:, None] == doc[None, :]) & (pos[:, None] >= pos[None, :])
    ke, ve = k.repeat_interleave(HQ // HK, 1), v.repeat_interleave(HQ // HK, 1)
    providers = {"detops": lambda: torch.ops.detops.attention(q, k, v, rows, D ** -0.5, 0.0),
                 "F.sdpa": lambda: F.scaled_dot_product_attention(q, ke, ve, attn_mask=dense)}
    peer = flex(q, k, v, lambda b, h, qi, ki: (doc[qi] == doc[ki]) & (qi >= ki), S)
    if peer is not None:
        providers["flex"] = peer
    flops = 4 * HQ * D * sum(n * n for n in lens) / 2
    nbytes = (2 * HK + 2 * HQ) * S * D * (torch.finfo(DTYPE).bits // 8)
    return Case("attn_packed", (1, S, S), DTYPE_NAME, providers, stock="F.sdpa", bytes=nbytes, flops=flops,
                flags=f"Hq={HQ};Hk={HK};D={D};documents={len(lens)};stock dense mask, K/V expanded;detops path={PATH}")


def make_case(op, B, S):
    causal = op == "attn_prefill"
    Q = S if causal else 1
    q = torch.randn(B, HQ, Q, D, device="cuda", dtype=DTYPE)
    k = torch.randn(B, HK, S, D, device="cuda", dtype=DTYPE)
    v = torch.randn(B, HK, S, D, device="cuda", dtype=DTYPE)
    rows = attention_rows(B, HQ, Q, S, "cuda", is_causal=causal)
    ke, ve = k.repeat_interleave(HQ // HK, 1), v.repeat_interleave(HQ // HK, 1)
    providers = {"detops": lambda: torch.ops.detops.attention(q, k, v, rows, D ** -0.5, 0.0),
                 "F.sdpa": stock(q, ke, ve, causal)}
    for name, be in (("sdpa-flash", SDPBackend.FLASH_ATTENTION), ("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION)):
        try:
            stock(q, ke, ve, causal, be)()
            providers[name] = stock(q, ke, ve, causal, be)
        except RuntimeError:
            pass
    if causal:
        peer = flex(q, k, v, causal_mask, S)
        if peer is not None:
            providers["flex"] = peer
    flops = 4 * B * HQ * S * S * D / 2 if causal else 4 * B * HQ * S * D
    nbytes = (2 * B * HK * S * D + 2 * B * HQ * Q * D) * 2
    esize = torch.finfo(DTYPE).bits // 8
    nbytes = nbytes // 2 * esize
    return Case(op, (B, Q, S), DTYPE_NAME, providers, stock="F.sdpa", bytes=nbytes,
                flops=flops, flags=f"Hq={HQ};Hk={HK};D={D};stock K/V expanded;detops path={PATH}")


def cases(args):
    for S in (PREFILL[:3] if args.quick else PREFILL):
        yield make_case("attn_prefill", 1, S)
    for S in (PREFILL[:3] if args.quick else PREFILL):
        yield make_packed_case(S)
    for B, S in (DECODE[:3] if args.quick else DECODE):
        yield make_case("attn_decode", B, S)


def vs_best_stock(rows):
    """detops speed / best stock speed per case (>= 0.5: docs/ops/attention.md's first bar), worst and median per
    op: ratio_vs_stock with the fastest stock provider of the case as the stock."""
    for op in ("attn_prefill", "attn_packed", "attn_decode"):
        ratios = []
        for shape in sorted({r["shape"] for r in rows if r["op"] == op}):
            sel = [r for r in rows if r["op"] == op and r["shape"] == shape and "timing=eager" in r["flags"]]
            ours = [float(r["median_us"]) for r in sel if r["provider"] == "detops"]
            best = [float(r["median_us"]) for r in sel if r["provider"] != "detops"]
            if ours and best:
                ratios.append((min(best) / ours[0], shape))
                print(f"VS_BEST {op} {shape}: detops {ours[0]:.1f} us, best stock {min(best):.1f} us, "
                      f"speed ratio {min(best) / ours[0]:.3f}")
        if ratios:
            print(f"VS_BEST_SUMMARY {op}: worst {min(ratios)[0]:.3f} at {min(ratios)[1]}, median "
                  f"{statistics.median(r for r, _ in ratios):.3f}")


if __name__ == "__main__":
    vs_best_stock(bench_main(cases, "attention"))
