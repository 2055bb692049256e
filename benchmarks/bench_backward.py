"""Backward passes: detops (REDUCTION_ORDER.md §10) vs stock torch, bf16, side by side on the same inputs.
Each provider times `torch.autograd.grad` of a recorded forward (the backward alone). Targets (issue "Training,
part 1"; docs/ops/*.md): dX + dW GEMMs <= 1.25x cuBLAS time (goal 1.05x); attention backward >= 0.4x of the
best SDPA backward (goal 0.8x); rms_norm / softmax / cross-entropy backward >= 70 % of copy bandwidth.

    python benchmarks/bench_backward.py --out benchmarks/results/backward_h100.csv   [--quick]
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import detops  # noqa: E402
from harness import Case, bench_main  # noqa: E402

LINEAR_SHAPES = ((4096, 4096), (4096, 14336), (14336, 4096))   # (K, N): q/o_proj, gate/up, down of Llama-8B
TOKENS = (512, 4096, 16384)


def backward_of(fn, inputs, upstream):
    """A callable running the backward of fn(*inputs) (recorded once) with `upstream` as its gradient."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    return lambda: torch.autograd.grad(out, leaves, upstream, retain_graph=True)


def doc_ids(T, device):
    """Documents of drawn lengths (64..2048 tokens) packed into T tokens: the packed-SFT layout."""
    g = torch.Generator().manual_seed(0)
    lens, total = [], 0
    while total < T:
        n = min(int(torch.randint(64, 2049, (1,), generator=g)), T - total)
        lens.append(n)
        total += n
    return torch.repeat_interleave(torch.arange(len(lens)), torch.tensor(lens)).to(device)


def cases(args):
    dev, bf = "cuda", torch.bfloat16
    tokens = (512, 4096) if args.quick else TOKENS
    for T in tokens:
        for K, N in LINEAR_SHAPES:
            x = torch.randn(T, K, device=dev, dtype=bf)
            w = torch.randn(N, K, device=dev, dtype=bf) * 0.02
            g = torch.randn(T, N, device=dev, dtype=bf)
            docs = doc_ids(T, dev)
            yield Case("linear_backward", (T, K, N), "bf16", stock="torch", flops=4.0 * T * K * N,
                       providers={"detops": backward_of(lambda a, b: detops.linear(a, b), (x, w), g),
                                  "detops packed": backward_of(lambda a, b: detops.linear(a, b, documents=docs),
                                                               (x, w), g),
                                  "torch": backward_of(F.linear, (x, w), g)})
    for T in ((1024, 4096) if args.quick else (1024, 2048, 4096)):
        Hq, Hk, D = 32, 8, 128
        q = torch.randn(1, Hq, T, D, device=dev, dtype=bf)
        k, v = (torch.randn(1, Hk, T, D, device=dev, dtype=bf) for _ in range(2))
        g = torch.randn(1, Hq, T, D, device=dev, dtype=bf)
        flops = 2.5 * 4 * Hq * T * T * D / 2  # causal: half the scores; backward ~2.5x the forward's 4·T²·D
        yield Case("attention_backward", (1, Hq, Hk, T, D), "bf16", stock="sdpa", flops=flops,
                   providers={"detops": backward_of(lambda a, b, c: detops.scaled_dot_product_attention(
                                  a, b, c, is_causal=True, enable_gqa=True), (q, k, v), g),
                              "sdpa": backward_of(lambda a, b, c: F.scaled_dot_product_attention(
                                  a, b, c, is_causal=True, enable_gqa=True), (q, k, v), g)})
    for T in tokens:
        n = 4096
        x = torch.randn(T, n, device=dev, dtype=bf)
        w = (1 + 0.1 * torch.randn(n, device=dev)).to(bf)
        g = torch.randn(T, n, device=dev, dtype=bf)
        yield Case("rms_norm_backward", (T, n), "bf16", stock="torch", bytes=3 * T * n * 2,
                   providers={"detops": backward_of(lambda a, b: detops.rms_norm(a, n, b, 1e-6), (x, w), g),
                              "torch": backward_of(lambda a, b: F.rms_norm(a, (n,), b, 1e-6), (x, w), g)})
        V = 32768
        x = torch.randn(T, V, device=dev, dtype=bf)
        g = torch.randn(T, V, device=dev, dtype=bf)
        yield Case("softmax_backward", (T, V), "bf16", stock="torch", bytes=3 * T * V * 2,
                   providers={"detops": backward_of(lambda a: detops.softmax(a, -1), (x,), g),
                              "torch": backward_of(lambda a: torch.softmax(a, -1), (x,), g)})
        t = torch.randint(0, V, (T,), device=dev)
        one = torch.ones((), device=dev, dtype=bf)
        yield Case("cross_entropy_backward", (T, V), "bf16", stock="torch", bytes=2 * T * V * 2,
                   providers={"detops": backward_of(lambda a: detops.cross_entropy(a, t), (x,), one),
                              "torch": backward_of(lambda a: F.cross_entropy(a, t), (x,), one)})


if __name__ == "__main__":
    bench_main(cases, "backward")
