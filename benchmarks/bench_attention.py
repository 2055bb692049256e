"""Attention benchmark: detops (CUDA-core kernels, REDUCTION_ORDER.md §6) vs stock F.scaled_dot_product_attention
in the same process, same inputs, interleaved. bf16, 32 query / 8 kv heads, head dim 128.

  prefill: causal, B = 1, seq 512 .. 16k; TFLOP/s with causal FLOPs 4 * B * Hq * S^2 * D / 2.
  decode:  Q = 1, KV 128 .. 32k, batch 1 .. 64; GB/s of the un-expanded K/V bytes (what a GQA-aware kernel
           reads; the same byte count for both sides, so the GB/s ratio is the time ratio).
Stock runs with K/V expanded to 32 heads (repeat_interleave, outside the timing) under the flash and cuDNN
backends and torch's default choice. detops is timed at the op (`torch.ops.detops.attention` with the rows
descriptor built once, as a model builds it once per forward for all layers).

Timing: a minimal local harness (benchmarks/harness.py did not exist on this branch): CUDA events around each
call, L2 flushed (256 MB write) before each, median of `reps` after 2 warm-ups; eager launches, no CUDA graphs.
Writes CSV + PNG under --out (default benchmarks/results/).
"""
import argparse
import csv
import os
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import detops  # noqa: F401
from detops.ops.attention import attention_rows

HQ, HK, D = 32, 8, 128
DT = torch.bfloat16
_flush = None


def timed(fn, reps):
    global _flush
    if _flush is None:
        _flush = torch.empty(64 * 2**20, dtype=torch.float32, device="cuda")
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        _flush.zero_()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        ts.append(s.elapsed_time(e))
    return statistics.median(ts)


def stock_providers(q, ke, ve, causal):
    def run(backend):
        def f():
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, ke, ve, is_causal=causal)
        return f
    out = {"stock-default": lambda: F.scaled_dot_product_attention(q, ke, ve, is_causal=causal)}
    for name, be in (("stock-flash", SDPBackend.FLASH_ATTENTION), ("stock-cudnn", SDPBackend.CUDNN_ATTENTION)):
        try:
            run(be)()
            out[name] = run(be)
        except RuntimeError:
            pass
    return out


def measure(kind, B, S, reps):
    Q = S if kind == "prefill" else 1
    g = torch.Generator(device="cuda").manual_seed(S + B)
    q = torch.randn(B, HQ, Q, D, device="cuda", dtype=DT, generator=g)
    k = torch.randn(B, HK, S, D, device="cuda", dtype=DT, generator=g)
    v = torch.randn(B, HK, S, D, device="cuda", dtype=DT, generator=g)
    causal = kind == "prefill"
    rows = attention_rows(B, HQ, Q, S, "cuda", is_causal=causal)
    scale = D ** -0.5
    provs = {"detops": lambda: torch.ops.detops.attention(q, k, v, rows, scale, 0.0)}
    ke, ve = k.repeat_interleave(HQ // HK, 1), v.repeat_interleave(HQ // HK, 1)
    provs.update(stock_providers(q, ke, ve, causal))
    res = {}
    for name, fn in provs.items():
        res[name] = timed(fn, reps)
    del ke, ve
    flops = 4 * B * HQ * S * S * D / 2 if causal else 4 * B * HQ * S * D
    nbytes = (2 * B * HK * S * D + 2 * B * HQ * Q * D) * 2
    return [dict(op=kind, provider=n, B=B, S=S, Hq=HQ, Hk=HK, D=D, dtype="bf16", median_ms=t,
                 tflops=flops / t / 1e9, gbps=nbytes / t / 1e6) for n, t in res.items()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--commit", default=os.environ.get("DETOPS_COMMIT", "unknown"))
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    prefill = [512, 1024, 2048, 4096, 8192, 16384]
    decode = [(1, 128), (1, 1024), (1, 4096), (1, 32768), (16, 4096), (64, 2048), (8, 16384), (64, 8192)]
    if a.quick:
        prefill, decode = prefill[:3], decode[:3]
    rows = []
    for S in prefill:
        rows += measure("prefill", 1, S, 3 if S >= 8192 else 6)
        print(rows[-1], flush=True)
    for B, S in decode:
        rows += measure("decode", B, S, 20)
        print(rows[-1], flush=True)
    gpu, tv = torch.cuda.get_device_name(), torch.__version__
    flags = detops.build_info().get("nvcc_flags", "") if hasattr(detops, "build_info") else ""
    # ratio: detops speed / best stock speed (same work): >= 0.5 is the first bar of PERFORMANCE.md
    summary = {"prefill": [], "decode": []}
    for r in rows:
        same = [x for x in rows if x["op"] == r["op"] and x["B"] == r["B"] and x["S"] == r["S"]]
        best = min(x["median_ms"] for x in same if x["provider"].startswith("stock"))
        r["ratio_vs_best_stock"] = best / r["median_ms"]
        r.update(gpu=gpu, torch=tv, commit=a.commit, flags=flags)
        if r["provider"] == "detops":
            summary[r["op"]].append(r["ratio_vs_best_stock"])
    path = os.path.join(a.out, "attention_h100.csv")
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    for op, rs in summary.items():
        if rs:
            print(f"{op}: detops speed / best stock: worst {min(rs):.3f}, median {statistics.median(rs):.3f}, "
                  f"best {max(rs):.3f}")
    for r in rows:
        print(f"{r['op']:8s} B={r['B']:3d} S={r['S']:6d} {r['provider']:14s} {r['median_ms']:9.4f} ms "
              f"{r['tflops']:8.2f} TFLOP/s {r['gbps']:8.1f} GB/s  x{r['ratio_vs_best_stock']:.3f}")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
        for prov in sorted({r["provider"] for r in rows}):
            pr = [r for r in rows if r["op"] == "prefill" and r["provider"] == prov]
            ax[0].plot([r["S"] for r in pr], [r["tflops"] for r in pr], "o-", label=prov)
            dr = [r for r in rows if r["op"] == "decode" and r["provider"] == prov]
            ax[1].plot(range(len(dr)), [r["gbps"] for r in dr], "o-", label=prov)
            ax[1].set_xticks(range(len(dr)), [f"B{r['B']}\nS{r['S']}" for r in dr], fontsize=7)
        ax[0].set_xscale("log", base=2)
        ax[0].set(title=f"prefill causal, {HQ}q/{HK}kv heads, D={D}, bf16", xlabel="seq", ylabel="TFLOP/s")
        ax[1].set(title="decode Q=1 (GB/s of un-expanded K/V)", ylabel="GB/s")
        ax[0].legend()
        ax[1].legend()
        fig.suptitle(f"detops attention vs stock SDPA, {gpu}, torch {tv}")
        fig.tight_layout()
        fig.savefig(os.path.join(a.out, "attention_h100.png"), dpi=110)
    except Exception as e:  # noqa: BLE001
        print("no plot:", e)
    print("wrote", path)


if __name__ == "__main__":
    main()
