"""rms_norm / add_rms_norm: detops vs F.rms_norm (stock) and transformers' eager LlamaRMSNorm, bf16, on
rows 1..32768 x hidden 2048..8192 (plus q_norm/k_norm-sized rows of 128). Targets (docs/ops/rms_norm.md):
>= 70 % of copy bandwidth at large sizes (goal 85 %), detops at least 1 / 1.2 of stock's speed
(ratio_vs_stock >= 0.83; goal >= 1.0).

    python benchmarks/bench_rms_norm.py --graph --out benchmarks/results/rms_norm_h100.csv   [--quick]
"""
import os
import statistics
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import detops  # noqa: E402
from harness import Case, bench_main  # noqa: E402

ROWS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 32768)
HIDDEN = (2048, 4096, 8192)
EPS = 1e-6


def hf_rms_norm(x, w, eps=EPS):
    """transformers' LlamaRMSNorm.forward."""
    h = x.to(torch.float32)
    var = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(var + eps)
    return w * h.to(x.dtype)


def cases(args):
    rows_list = (1, 64, 4096, 32768) if args.quick else ROWS
    shapes = [(m, n) for n in HIDDEN for m in rows_list] + [(m, 128) for m in (32, 4096, 131072)]
    for m, n in shapes:
        x = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
        w = (1.0 + 0.1 * torch.randn(n, device="cuda")).to(torch.bfloat16)
        yield Case("rms_norm", (m, n), "bf16", stock="F.rms_norm", bytes=2 * m * n * 2 + n * 2,
                   providers={"detops": lambda x=x, w=w, n=n: detops.rms_norm(x, n, w, EPS, weight_mode="cast_first"),
                              "F.rms_norm": lambda x=x, w=w, n=n: F.rms_norm(x, (n,), w, EPS),
                              "hf_eager": lambda x=x, w=w: hf_rms_norm(x, w)})
    for m in rows_list:  # fused residual add (every decoder layer), hidden 4096
        n = 4096
        x = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
        r = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
        w = (1.0 + 0.1 * torch.randn(n, device="cuda")).to(torch.bfloat16)

        def stock(x=x, r=r, w=w, n=n):
            s = x + r
            return F.rms_norm(s, (n,), w, EPS), s

        yield Case("add_rms_norm", (m, n), "bf16", stock="add+F.rms_norm", bytes=4 * m * n * 2 + n * 2,
                   providers={"detops": lambda x=x, r=r, w=w, n=n: detops.add_rms_norm(x, r, n, w, EPS,
                                                                                    weight_mode="cast_first"),
                              "add+F.rms_norm": stock})


if __name__ == "__main__":
    rows = bench_main(cases, "rms_norm")
    # detops vs the HF eager module, the other baseline docs/ops/rms_norm.md names (hf time / detops time)
    by = {}
    for r in rows:
        if r["op"] == "rms_norm" and "timing=eager" in r["flags"]:
            by.setdefault(r["shape"], {})[r["provider"]] = float(r["median_us"])
    rat = [v["hf_eager"] / v["detops"] for v in by.values() if "hf_eager" in v]
    if rat:
        print(f"SUMMARY rms_norm bf16 detops speed vs hf_eager (hf time / detops time): worst {min(rat):.3f} "
              f"median {statistics.median(rat):.3f}")
