"""What the tensor-parallel order costs (detops.distributed, docs/REDUCTION_ORDER.md §9), simulated on one GPU:
the row-parallel layers of a Llama-8B-shaped model (o_proj K = 4096, down_proj K = 14336, N = 4096), bf16.

Providers per (layer, tokens M, TP size N):
  - "F.linear" (stock, the baseline): cuBLAS over the whole K (what one unsharded GPU computes);
  - "stock TP partial": cuBLAS over one rank's K / N slice (the per-rank work of stock tensor parallelism;
    its all-reduce is not timed);
  - "detops": detops.linear over the whole K (the plain, unsharded detops order);
  - "detops TP": one rank's work in the §9 order: S / N fp32 segment products of K / S and their subtree
    (partials computed in one process; the all-gather of N fp32 (M, 4096) subtree sums, whose bytes the
    `flags` column gives, is not timed).

    python benchmarks/bench_tp.py --out benchmarks/results/tp_h100.csv   [--quick]
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import detops  # noqa: E402
from detops.distributed import SEGMENTS, _segment_sums  # noqa: E402
from harness import Case, bench_main  # noqa: E402

LAYERS = {"o_proj": 4096, "down_proj": 14336}
N_OUT = 4096


def cases(args):
    tokens = (1, 2048) if args.quick else (1, 16, 128, 2048, 8192)
    for layer, K in LAYERS.items():
        w = torch.randn(N_OUT, K, device="cuda", dtype=torch.bfloat16) * K ** -0.5
        for M in tokens:
            x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
            for tp in (1, 2, 4, 8):
                k = K // tp
                xs, ws = x[:, :k].contiguous(), w[:, :k].contiguous()
                gather_bytes = tp * M * N_OUT * 4
                yield Case(layer, (M, K, N_OUT, tp), "bf16", stock="F.linear",
                           flops=2 * M * K * N_OUT, bytes=M * K * 2 + N_OUT * K * 2 + M * N_OUT * 2,
                           flags=f"tp={tp};segments={SEGMENTS};allgather_bytes={gather_bytes}",
                           providers={"F.linear": lambda x=x, w=w: F.linear(x, w),
                                      "stock TP partial": lambda xs=xs, ws=ws: F.linear(xs, ws),
                                      "detops": lambda x=x, w=w: detops.linear(x, w),
                                      "detops TP": lambda xs=xs, ws=ws, tp=tp: _segment_sums(xs, ws, SEGMENTS // tp)})


if __name__ == "__main__":
    bench_main(cases, "tp")
