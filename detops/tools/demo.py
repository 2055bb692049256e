"""`python -m detops demo`: the seed experiment on the embedded tiny model, stock vs detops, as a short table.

One batch, four rows: s1+s2 (right-padded to 5 tokens), s1+s2, s2+s1 (left-padded), s2+s1 (left-padded,
position ids restarting at s1). The logits of s1 inside each row are compared with s1 run alone.
"""
import time

import torch


def run(family: str = "llama", dtypes=("float32", "bfloat16"), device: str = "cpu") -> int:
    from .verify import CHECKS, verify
    t0 = time.time()
    names = [n for n in CHECKS if n.startswith("seed")]
    print(f"detops demo: tiny {family} model (2 layers, random weights), {device}\n"
          "s1 = 5 tokens, s2 = 3 tokens; batch rows: [s1+s2 right-padded], [s1+s2], [s2+s1 left-padded],\n"
          "[s2+s1 left-padded, positions reset]. Are the logits of s1 in each row bitwise those of s1 alone?\n")
    failed = 0
    for dtype in dtypes:
        r = verify(family=family, dtype=getattr(torch, dtype), device=device, checks=names, reference=False,
                   diagnose=False)
        print(f"[{dtype}]")
        print(r.table())
        print()
        failed += not r.ok
    print("stock: the same tokens get different logits depending on the batch layout (matmul and attention\n"
          "reduce in a shape-dependent order). detops: identical bits in every layout.\n"
          f"({time.time() - t0:.1f} s; full matrix: python -m detops verify --family {family})")
    return 1 if failed else 0
