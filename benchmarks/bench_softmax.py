"""softmax / log_softmax over the vocab: detops vs torch.softmax / torch.log_softmax (stock), bf16 in -> fp32
out and fp32 in -> fp32 out, rows 1..8192 x vocab 32000 / 128256 / 152064. Target (docs/ops/softmax.md): detops
at least 1 / 1.2 of stock's speed (ratio_vs_stock >= 0.83; goal: >= 85 % of copy bandwidth; stock reaches
about 25 %).

    python benchmarks/bench_softmax.py --out benchmarks/results/softmax_h100.csv   [--quick]
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import detops  # noqa: E402
from harness import Case, bench_main  # noqa: E402

ROWS = (1, 4, 16, 64, 256, 1024, 4096, 8192)
VOCAB = (32000, 128256, 152064)
IN_DTYPES = {"bf16->fp32": torch.bfloat16, "fp32": torch.float32}
OPS = {"softmax": (detops.softmax, torch.softmax), "log_softmax": (detops.log_softmax, torch.log_softmax)}


def cases(args):
    rows_list = (1, 64, 1024, 8192) if args.quick else ROWS
    for name, in_dtype in IN_DTYPES.items():
        for n in VOCAB:
            for m in rows_list:
                x = (4 * torch.randn(m, n, device="cuda")).to(in_dtype)
                nbytes = m * n * (x.element_size() + 4)
                for op, (ours, stock) in OPS.items():
                    yield Case(op, (m, n), name, stock=f"torch.{op}", bytes=nbytes,
                               providers={"detops": lambda x=x, f=ours: f(x, -1, torch.float32),
                                          f"torch.{op}": lambda x=x, f=stock: f(x, -1, dtype=torch.float32)})


if __name__ == "__main__":
    bench_main(cases, "softmax")
