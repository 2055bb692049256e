"""detops tensor-core matmul vs cuBLAS (`F.linear`, nn.Linear's layout), bf16, on LLM shapes
(docs/ops/matmul.md: shapes, bars and measured results).

For every (K, N) in SHAPES and M in {1, 2, 4, ..., 8192}: per-pass timing of benchmarks/harness.py (median
over --reps passes of the mean time per call of back-to-back calls), the weights rotated over enough copies to
defeat the 50 MB L2 (eager), and for M <= 256 also the same calls captured in one CUDA graph (decode: launch
overhead removed). Stock and detops run in the same process on the same inputs, interleaved. CSV in the
harness schema (ratio_vs_stock = cuBLAS time / detops time) + PNG; first the host time per call.

    python benchmarks/bench_matmul.py --out benchmarks/results/matmul_h100.csv
    python benchmarks/bench_matmul.py --variant-sweep --reps 5      # forced tensor-core variants, printed

--fp32: the CUDA-core path instead (docs/ops/matmul.md; order: docs/REDUCTION_ORDER.md §5). detops fp32 (plain
and compensated=True) vs cuBLAS fp32 with TF32 off, and detops compensated bf16 (CUDA cores) vs cuBLAS bf16
and detops' default bf16 (tensor cores), on (K, N) in FP32_SHAPES and M in FP32_MS, per-call harness timing
(L2 flushed before every call); then the accuracy vs float64 of every provider on those shapes (normal, mixed
magnitude and cancelling-block inputs), written to <out>_accuracy.csv:

    python benchmarks/bench_matmul.py --fp32 --reps 10 --out benchmarks/results/matmul_fp32_h100.csv

--peers: the peers' batch-invariant configurations beside stock cuBLAS and detops (benchmarks/peers.py): the
Triton persistent matmul of batch_invariant_ops' configuration, and cuBLAS without split-K (timed in a child
process that starts with the workspace limit; its ratio is against this process's stock time). M = 1…64 and a
sweep of irregular M. Then detops' L1 check on every provider: the M at which rows' bits change, written to
<out>_rows.csv (provider, K x N, the M values that changed):

    python benchmarks/bench_matmul.py --peers --out benchmarks/results/matmul_peers_h100.csv
"""
import argparse
import functools
import math
import os
import sys

import torch
import torch.nn.functional as F

import detops

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SHAPES = ((4096, 4096), (4096, 14336), (14336, 4096), (4096, 128256))  # (K, N)
MS = tuple(2 ** i for i in range(14))  # 1 .. 8192
QUICK_MS = (1, 16, 256, 4096)
L2_DEFEAT_BYTES = 160 * 2 ** 20  # rotate weight copies over > 3x the H100's 50 MB L2


def detops_linear():
    """detops.linear when its CUDA dispatch is registered, else the tensor-core entry it calls."""
    x = torch.zeros((1, 16), device="cuda", dtype=torch.bfloat16)
    try:
        detops.linear(x, x, None)
        return detops.linear, "detops.linear"
    except (NotImplementedError, RuntimeError):
        op = torch.ops.detops._matmul_tc
        return (lambda a, w, b=None: op(a[None], w.t()[None], b, -1)[0]), "detops::_matmul_tc"


def rotated_weights(k, n, g, dtype=torch.bfloat16):
    """Enough (N, K) weight copies to defeat the L2, N(0, 1/K)."""
    copies = max(1, math.ceil(L2_DEFEAT_BYTES / (k * n * 2)))
    return [(torch.randn((n, k), device="cuda", generator=g) * k ** -0.5).to(dtype) for _ in range(copies)]


def parse_shapes(spec):
    return SHAPES if spec == "all" else tuple(tuple(map(int, s.split("x"))) for s in spec.split(","))


def linear_cases(shapes, ms, providers, graph_max, flags):
    """Per (K, N) in `shapes` and M in `ms` one per-pass case of `providers` (name -> fn(x, w); the first is the
    stock), weights rotated past the L2; CUDA graphs for M <= graph_max."""
    g = torch.Generator(device="cuda").manual_seed(0)
    stock = next(iter(providers))
    for k, n in shapes:
        weights = rotated_weights(k, n, g)
        copies, wbytes = len(weights), k * n * 2
        for m in ms:
            x = torch.randn((m, k), device="cuda", generator=g).to(torch.bfloat16)
            flops = 2.0 * m * n * k
            # calls per pass: enough work per pass (~2 ms) for event resolution, whole rotations of the weights
            est = max(flops / 600e12, wbytes / 2.5e12) * 1e6  # µs, rough
            per_pass = copies * max(1, math.ceil(2000 / (est * copies)))
            rotate = [{name: functools.partial(fn, x, weights[i % copies]) for name, fn in providers.items()}
                      for i in range(per_pass)]
            yield harness.Case("linear", (m, k, n), "bf16", dict(rotate[0]), stock=stock,
                               bytes=(m * k + k * n + m * n) * 2, flops=flops, rotate=rotate, timing="pass",
                               graph=m <= graph_max, flags=flags)
        del weights
        torch.cuda.empty_cache()


def cases(args):
    """Providers cublas (stock) and detops; CUDA graphs for M <= 256."""
    ours, entry = detops_linear()
    return linear_cases(parse_shapes(args.shapes), QUICK_MS if args.quick else MS,
                        {"cublas": F.linear, "detops": ours}, 256, f"entry={entry}")


PEER_MS = tuple(range(1, 65)) + (100, 129, 192, 300, 384, 640, 1000, 1500, 3000, 5000, 8191)
QUICK_PEER_MS = (1, 7, 64, 129, 300, 1000, 5000)
ROWS_FIELDS = ("op", "provider", "shape", "dtype", "ms_checked", "rows_change_at", "gpu", "torch", "commit")


def peer_providers(child: bool):
    """name -> fn(x, w) for --peers: in the parent stock cuBLAS, detops and the Triton persistent kernel (both
    output roundings); in the child (started with peers.CUBLAS_NO_SPLIT_K_ENV) cuBLAS without split-K."""
    import peers
    if child:
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
        return {"cublas_no_split_k": F.linear}
    provs = {"cublas": F.linear, "detops": detops_linear()[0]}
    try:
        import triton  # noqa: F401
        provs["triton_persistent"] = peers.persistent_linear
        provs["triton_persistent_bf16_out"] = functools.partial(peers.persistent_linear, via_fp16=False)
    except ImportError:
        print("triton is not installed: the persistent-kernel peer is skipped")
    return provs


def peers_cases(args, child=False):
    return linear_cases(parse_shapes(args.shapes), QUICK_PEER_MS if args.quick else PEER_MS, peer_providers(child),
                        0, "peers")


def peers_rows_check(args, child=False):
    """detops' L1 check on every provider: rows of M-row batches against the same rows of an 8191-row batch."""
    import peers
    env = harness.environment()
    ms = QUICK_PEER_MS if args.quick else PEER_MS
    g = torch.Generator(device="cuda").manual_seed(2)
    rows = []
    for k, n in parse_shapes(args.shapes):
        x = torch.randn((max(ms), k), device="cuda", generator=g).to(torch.bfloat16)
        w = (torch.randn((n, k), device="cuda", generator=g) * k ** -0.5).to(torch.bfloat16)
        for name, fn in peer_providers(child).items():
            changed = peers.rows_change_at(fn, x, w, ms[:-1])
            rows.append(dict(op="linear", provider=name, shape=f"{k}x{n}", dtype="bf16",
                             ms_checked=" ".join(map(str, ms[:-1])), rows_change_at=" ".join(map(str, changed)),
                             gpu=env["gpu"], torch=env["torch"], commit=env["commit"]))
            verdict = f"change at M in {changed}" if changed else "bitwise equal at every M"
            print(f"rows check K={k} N={n} {name:>28}: {verdict}",
                  flush=True)
    return rows


def peers_main(args):
    """Parent: stock, detops and Triton timed and checked here; cuBLAS without split-K in a child process; one
    CSV (the child's ratio_vs_stock against this process's stock time) and one rows-check CSV."""
    import json
    import subprocess
    import tempfile
    import peers
    args.out = args.out or harness.default_out("matmul_peers")
    if args.peers_child:
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
        print("cuBLAS without split-K child:", {k: os.environ.get(k) for k in peers.CUBLAS_NO_SPLIT_K_ENV},
              "reduced-precision bf16 reduction:", torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction)
        rows = harness.run_cases(peers_cases(args, child=True), reps=args.reps)
        json.dump({"timing": rows, "rows": peers_rows_check(args, child=True)}, open(args.peers_child, "w"))
        return
    rows = harness.run_cases(peers_cases(args), reps=args.reps)
    checks = peers_rows_check(args)
    with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
        cmd = [sys.executable, os.path.abspath(__file__), "--peers", "--peers-child", tmp.name, "--shapes", args.shapes,
               "--reps", str(args.reps)] + (["--quick"] if args.quick else [])
        subprocess.run(cmd, env={**os.environ, **peers.CUBLAS_NO_SPLIT_K_ENV}, check=True)
        child = json.load(open(tmp.name))
    stock = {r["shape"]: float(r["median_us"]) for r in rows if r["provider"] == "cublas"}
    for r in child["timing"]:
        r["ratio_vs_stock"] = round(stock[r["shape"]] / float(r["median_us"]), 4) if r["shape"] in stock else ""
    harness.write_csv(rows + child["timing"], args.out)
    rows_path = os.path.splitext(args.out)[0] + "_rows.csv"
    harness.write_csv(checks + child["rows"], rows_path, fields=ROWS_FIELDS)
    print("wrote", args.out, "and", rows_path)
    harness.replot(args.out, providers=[p for p in {r["provider"] for r in rows + child["timing"]} if p != "cublas"],
                   by_series=True)


def main(argv=None):
    p = harness.parser("matmul", reps=15, warmup=3)
    p.add_argument("--repeats", dest="reps", type=int, help="the same as --reps")
    p.add_argument("--shapes", default="all", help="'all' or e.g. 4096x4096,14336x4096 (KxN)")
    p.add_argument("--host-only", action="store_true", help="only the host time per call")
    p.add_argument("--variant-sweep", action="store_true",
                   help="graph time of every forced tensor-core variant vs cuBLAS at M = 128..512, then exit")
    p.add_argument("--ms", default=None, help="--variant-sweep's row counts, e.g. 100,129,192 (default 128..512)")
    p.add_argument("--fp32", action="store_true",
                   help="CUDA-core path: fp32 and compensated vs cuBLAS fp32 (TF32 off) / bf16, plus accuracy")
    p.add_argument("--peers", action="store_true",
                   help="the peers' batch-invariant configurations (Triton persistent, cuBLAS without split-K)")
    p.add_argument("--peers-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.peers:
        peers_main(args)
    elif args.fp32:
        fp32_main(args)
    elif args.variant_sweep:
        ms = tuple(int(m) for m in args.ms.split(",")) if args.ms else VARIANT_SWEEP_MS
        variant_sweep(args.reps, parse_shapes(args.shapes), ms)
    elif args.plot_only:
        harness.run_main(args, cases, "matmul", by_series=True)
    else:
        host_overhead(detops_linear()[0])
        if not args.host_only:
            harness.run_main(args, cases, "matmul", by_series=True)


VARIANT_SWEEP_MS = (128, 192, 256, 384, 512)


def variant_sweep(reps, shapes=SHAPES, ms=VARIANT_SWEEP_MS):
    """Graph time ratio vs cuBLAS of the forced variants 1 swap64x64 .. 4 tile128x256 (and the row-count choice,
    'auto') at each M, printed (cuBLAS time / variant time, > 1: faster). Speed only: tests/test_matmul_cuda.py
    proves every variant gives the same bits."""
    op = torch.ops.detops._matmul_tc
    names = ("swap64x16", "swap64x64", "swap64x128", "tile128x128", "tile128x256")
    g = torch.Generator(device="cuda").manual_seed(0)
    for k, n in shapes:
        weights = rotated_weights(k, n, g)
        copies = len(weights)
        for m in ms:
            x = torch.randn((m, k), device="cuda", generator=g).to(torch.bfloat16)
            ws = [weights[i % copies] for i in range(copies * max(1, 40 // copies))]
            base = harness.time_pass([functools.partial(F.linear, x, w) for w in ws], reps, graph=True)
            line = f"K={k:6d} N={n:6d} M={m:4d} cublas {base:8.1f} us"
            for v in (1, 2, 3, 4, -1):
                us = harness.time_pass([functools.partial(op, x[None], w.t()[None], None, v) for w in ws], reps,
                                       graph=True)
                line += f"  {names[v] if v >= 0 else 'auto'} {base / us:.3f}"
            print(line, flush=True)
        del weights
        torch.cuda.empty_cache()


def host_overhead(ours, calls=20000):
    """Host time per call (µs) on a launch-bound shape (M=1, K=N=256: ~2 µs of GPU work), back to back
    without synchronisation, so the CPU side of each call is what is timed. Best of 5."""
    import time
    x = torch.randn((1, 256), device="cuda", dtype=torch.bfloat16)
    w = torch.randn((256, 256), device="cuda", dtype=torch.bfloat16)
    b = torch.randn((256,), device="cuda", dtype=torch.bfloat16)
    print("\nhost time per call (µs), M=1, K=N=256, bf16:")
    for name, fn, args in (("F.linear", F.linear, (x, w)), ("detops.linear", ours, (x, w)),
                           ("F.linear+bias", F.linear, (x, w, b)), ("detops.linear+bias", ours, (x, w, b))):
        for _ in range(1000):
            fn(*args)
        torch.cuda.synchronize()
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn(*args)
            t1 = time.perf_counter()
            torch.cuda.synchronize()
            best = min(best, (t1 - t0) / calls * 1e6)
        print(f"  {name:20s} {best:6.2f}")


# ---------------------------------------------------------------- --fp32: the CUDA-core path (§5)

FP32_SHAPES = ((4096, 4096), (4096, 14336))  # (K, N)
FP32_MS = (1, 16, 128, 1024, 4096)
ACCURACY_FIELDS = ("op", "provider", "shape", "dtype", "inputs", "max_rel_err", "mean_abs_err", "gpu", "torch",
                   "commit")  # the leading columns of harness.FIELDS, then the error columns


def cublas_tf32(x, w):
    """cuBLAS fp32 with TF32 on (torch's default is off; shown for scale in the accuracy table)."""
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        return F.linear(x, w)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False


# dtype -> provider -> f(x, w), the stock (cuBLAS) first; nn.Linear layout (weight (N, K)), no bias
FP32_PROVIDERS = {
    "fp32": {"cublas_fp32_notf32": F.linear, "detops_fp32": detops.linear,
             "detops_fp32_compensated": functools.partial(detops.linear, compensated=True)},
    "bf16": {"cublas_bf16": F.linear, "detops_bf16_tensor_cores": detops.linear,
             "detops_bf16_compensated": functools.partial(detops.linear, compensated=True)},
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def fp32_cases(args):
    """Harness cases: per (M, K, N) one fp32 case (stock: cuBLAS fp32, TF32 off) and one bf16 case (stock:
    cuBLAS bf16), the providers of FP32_PROVIDERS."""
    g = torch.Generator(device="cuda").manual_seed(0)
    for k, n in (FP32_SHAPES[:1] if args.quick else FP32_SHAPES):
        w32 = torch.randn((n, k), device="cuda", generator=g) * k ** -0.5
        for m in (FP32_MS[::2] if args.quick else FP32_MS):
            x32 = torch.randn((m, k), device="cuda", generator=g)
            for dt, provs in FP32_PROVIDERS.items():
                x, w = x32.to(DTYPES[dt]), w32.to(DTYPES[dt])
                yield harness.Case("linear", (m, k, n), dt,
                                   {name: functools.partial(f, x, w) for name, f in provs.items()},
                                   stock=next(iter(provs)), bytes=(m * k + k * n + m * n) * x.element_size(),
                                   flops=2.0 * m * n * k)


def fp32_inputs(kind, m, k, n, dtype, g):
    """x (m, k), w (n, k) in `dtype`. normal: x ~ N(0, 1), w ~ N(0, 1/k). mixed: each entry times 2^e,
    e uniform in [-8, 8] (tests/values.py's profile). cancelling: normal, but the first K block holds one
    product +2^24 and the last one -2^24 (tests/test_matmul.py::cancelling_blocks) - the sum across blocks
    is ill-conditioned, which is what the compensated order repairs."""
    x = torch.randn((m, k), device="cuda", generator=g, dtype=torch.float64)
    w = torch.randn((n, k), device="cuda", generator=g, dtype=torch.float64) * k ** -0.5
    if kind == "mixed":
        x = x * torch.pow(2.0, torch.randint(-8, 9, (m, k), device="cuda", generator=g).double())
        w = w * torch.pow(2.0, torch.randint(-8, 9, (n, k), device="cuda", generator=g).double())
    elif kind == "cancelling":
        kb, last = 32, (k - 1) // 32 * 32
        x[:, 1:kb] = 0
        x[:, last + 1:] = 0
        x[:, 0] = x[:, last] = 2.0 ** 12
        w[:, 0] = 2.0 ** 12
        w[:, last] = -(2.0 ** 12)
    return x.to(dtype), w.to(dtype)


def fp32_accuracy(path, m=1024):
    """Error vs float64 (of the dtype-rounded inputs) of every provider: normwise max relative error
    max|y - exact| / max|exact|, and mean absolute error. Also whether cuBLAS fp32 row 0 keeps its bits
    across M (informational)."""
    env = harness.environment()
    g = torch.Generator(device="cuda").manual_seed(1)
    rows = []
    providers = {"fp32": dict(list(FP32_PROVIDERS["fp32"].items())[:1] + [("cublas_fp32_tf32", cublas_tf32)]
                              + list(FP32_PROVIDERS["fp32"].items())[1:]),
                 "bf16": FP32_PROVIDERS["bf16"]}
    print("\naccuracy vs float64 (M=%d): max normwise relative error, mean abs error" % m)
    for k, n in FP32_SHAPES:
        for kind in ("normal", "mixed", "cancelling"):
            for dt, provs in providers.items():
                x, w = fp32_inputs(kind, m, k, n, DTYPES[dt], g)
                exact = x.double() @ w.double().t()
                scale = exact.abs().max().item()
                for name, fn in provs.items():
                    err = (fn(x, w).double() - exact).abs()
                    row = dict(op="linear", provider=name, shape=f"{m}x{k}x{n}", dtype=dt, inputs=kind,
                               max_rel_err=f"{err.max().item() / scale:.3e}", mean_abs_err=f"{err.mean().item():.3e}",
                               gpu=env["gpu"], torch=env["torch"], commit=env["commit"])
                    rows.append(row)
                    print(f"  K={k} N={n} {kind:10s} {row['dtype']:8s} {name:26s} max_rel {row['max_rel_err']}"
                          f"  mean_abs {row['mean_abs_err']}", flush=True)
                del x, w, exact
        # informational: does cuBLAS fp32 (TF32 off) keep row 0's bits across M? (detops: tests assert it)
        x = torch.randn((4096, k), device="cuda", generator=g)
        w = torch.randn((n, k), device="cuda", generator=g) * k ** -0.5
        first = F.linear(x[:1], w)
        changed = [mm for mm in (2, 16, 17, 128, 129, 1024, 4096) if not torch.equal(F.linear(x[:mm], w)[:1], first)]
        print(f"  cuBLAS fp32 (TF32 off) K={k} N={n}: row 0 changes at M in {changed}")
    harness.write_csv(rows, path, fields=ACCURACY_FIELDS)
    print("wrote", path)


def fp32_main(args):
    torch.backends.cuda.matmul.allow_tf32 = False  # cuBLAS fp32 in true fp32 (torch's default, made explicit)
    args.out = args.out or harness.default_out("matmul_fp32")
    harness.run_main(args, fp32_cases, "matmul_fp32", providers=(
        "detops_fp32", "detops_fp32_compensated", "detops_bf16_compensated", "detops_bf16_tensor_cores"))
    if not args.plot_only:
        fp32_accuracy(os.path.splitext(args.out)[0] + "_accuracy.csv", m=128 if args.quick else 1024)


if __name__ == "__main__":
    main()
