"""detops tensor-core matmul vs cuBLAS (`F.linear`, nn.Linear's layout), bf16, on LLM shapes.

For every (K, N) in PERFORMANCE.md and M in {1, 2, 4, ..., 8192}: CUDA-event medians of back-to-back calls
with the weights rotated over enough copies to defeat the 50 MB L2 (eager), and for M <= 256 also the same
calls captured in one CUDA graph (decode: launch overhead removed). Stock and detops run in the same process
on the same inputs, interleaved. Writes CSV rows (op, provider, shape, dtype, median_us, tflops, gbps, ratio,
gpu, torch, commit, flags) and a PNG of the ratio detops/cuBLAS vs M.

    python benchmarks/bench_matmul.py --out benchmarks/results/matmul_h100.csv

--fp32: the CUDA-core §5 path instead. detops fp32 (plain and compensated=True) vs cuBLAS fp32 with TF32 off,
and detops compensated bf16 (CUDA cores) vs cuBLAS bf16 and detops' default bf16 (tensor cores), on
(K, N) in FP32_SHAPES and M in FP32_MS, timed by benchmarks/harness.py (L2 flushed before every call; CSV in
the harness schema + PNG); then the accuracy vs float64 of every provider on those shapes (normal, mixed
magnitude and cancelling-block inputs), written to <out>_accuracy.csv:

    python benchmarks/bench_matmul.py --fp32 --out benchmarks/results/matmul_fp32_h100.csv
"""
import argparse
import csv
import math
import os
import statistics
import sys

import torch
import torch.nn.functional as F

import detops

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SHAPES = ((4096, 4096), (4096, 14336), (14336, 4096), (4096, 128256))  # (K, N)
MS = tuple(2 ** i for i in range(14))  # 1 .. 8192
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


def time_loop(fn, inputs, repeats, graph):
    """Median over `repeats` of the mean time per call of one pass over `inputs` (µs)."""
    if graph:
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for args in inputs:  # warm-up outside the capture
                fn(*args)
            with torch.cuda.graph(g, stream=s):
                for args in inputs:
                    fn(*args)
        torch.cuda.current_stream().wait_stream(s)
        run = g.replay
    else:
        def run():
            for args in inputs:
                fn(*args)
    run()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / len(inputs))
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/matmul_h100.csv")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--shapes", default="all", help="'all' or e.g. 4096x4096,14336x4096 (KxN)")
    ap.add_argument("--plot-only", action="store_true", help="re-plot and summarise the CSV at --out")
    ap.add_argument("--host-only", action="store_true", help="only the host time per call")
    ap.add_argument("--variant-sweep", action="store_true",
                    help="graph time of every forced tensor-core variant vs cuBLAS at M = 128..512, then exit")
    ap.add_argument("--fp32", action="store_true",
                    help="CUDA-core path: fp32 and compensated vs cuBLAS fp32 (TF32 off) / bf16, plus accuracy")
    args = ap.parse_args()
    if args.fp32:
        fp32_main(args.out, args.repeats)
        return
    if args.variant_sweep:
        variant_sweep(args.repeats)
        return
    if args.plot_only:
        with open(args.out) as f:
            rows = [dict(r, ratio=float(r["ratio"])) for r in csv.DictReader(f)]
        summarize(rows)
        plot(rows, os.path.splitext(args.out)[0] + ".png", rows[0]["gpu"])
        return
    shapes = SHAPES if args.shapes == "all" else tuple(tuple(map(int, s.split("x"))) for s in args.shapes.split(","))
    ours, entry = detops_linear()
    host_overhead(ours)
    if args.host_only:
        return
    gpu = torch.cuda.get_device_name()
    commit = os.environ.get("DETOPS_COMMIT", "unknown")
    build = detops.build_info().get("nvcc_flags", "")
    rows = []
    dtype = torch.bfloat16
    g = torch.Generator(device="cuda").manual_seed(0)
    for k, n in shapes:
        wbytes = k * n * 2
        copies = max(1, math.ceil(L2_DEFEAT_BYTES / wbytes))
        weights = [(torch.randn((n, k), device="cuda", generator=g) * k ** -0.5).to(dtype) for _ in range(copies)]
        for m in MS:
            x = torch.randn((m, k), device="cuda", generator=g).to(dtype)
            flops = 2.0 * m * n * k
            # calls per pass: enough work per pass (~2 ms) for event resolution, whole rotations of the weights
            est = max(flops / 600e12, wbytes / 2.5e12) * 1e6  # µs, rough
            per_pass = copies * max(1, math.ceil(2000 / (est * copies)))
            inputs = [(x, weights[i % copies]) for i in range(per_pass)]
            modes = ("eager", "graph") if m <= 256 else ("eager",)
            for mode in modes:
                res = {}
                for provider, fn in (("cublas", F.linear), ("detops", ours)):
                    res[provider] = time_loop(fn, inputs, args.repeats, mode == "graph")
                for provider, us in res.items():
                    moved = (m * k + k * n + m * n) * 2
                    rows.append(dict(op="linear", provider=provider, shape=f"M={m},K={k},N={n}", dtype="bf16",
                                     median_us=round(us, 2), tflops=round(flops / us / 1e6, 1),
                                     gbps=round(moved / us / 1e3, 1), ratio=round(us / res["cublas"], 3), gpu=gpu,
                                     torch=torch.__version__, commit=commit, flags=f"{mode};{entry};{build}"))
                print(f"K={k:6d} N={n:6d} M={m:5d} {mode:5s} cublas {res['cublas']:9.1f} us  detops "
                      f"{res['detops']:9.1f} us  ratio {res['detops'] / res['cublas']:.3f}  "
                      f"detops {(m * k + k * n + m * n) * 2 / res['detops'] / 1e3:7.0f} GB/s "
                      f"{flops / res['detops'] / 1e6:6.1f} TFLOP/s", flush=True)
            del x
        del weights
        torch.cuda.empty_cache()
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summarize(rows)
    plot(rows, os.path.splitext(args.out)[0] + ".png", gpu)


def summarize(rows):
    for mode in ("eager", "graph"):
        print(f"\nratio detops/cuBLAS ({mode}): worst, median per (K, N)")
        by = {}
        for r in rows:
            if r["provider"] == "detops" and r["flags"].startswith(mode):
                kn = r["shape"].split(",", 1)[1]
                by.setdefault(kn, []).append((r["ratio"], r["shape"]))
        for kn, v in by.items():
            worst = max(v)
            print(f"  {kn:16s} worst {worst[0]:.3f} ({worst[1].split(',')[0]})  "
                  f"median {statistics.median(x for x, _ in v):.3f}")


def variant_sweep(repeats, ms=(128, 192, 256, 384, 512)):
    """Graph time ratio vs cuBLAS of each forced variant (0 swap64x16 .. 4 tile128x256) near the swap/tile
    boundary. Speed only: tests/test_matmul_cuda.py proves every variant gives the same bits."""
    op = torch.ops.detops._matmul_tc
    names = ("swap64x16", "swap64x64", "swap64x128", "tile128x128", "tile128x256")
    g = torch.Generator(device="cuda").manual_seed(0)
    for k, n in SHAPES:
        copies = max(1, math.ceil(L2_DEFEAT_BYTES / (k * n * 2)))
        weights = [(torch.randn((n, k), device="cuda", generator=g) * k ** -0.5).to(torch.bfloat16)
                   for _ in range(copies)]
        for m in ms:
            x = torch.randn((m, k), device="cuda", generator=g).to(torch.bfloat16)
            inputs = [(x, weights[i % copies]) for i in range(copies * max(1, 40 // copies))]
            base = time_loop(F.linear, inputs, repeats, True)
            line = f"K={k:6d} N={n:6d} M={m:4d} cublas {base:8.1f} us"
            for v in range(2, 5):
                fn = (lambda a, w, v=v: op(a[None], w.t()[None], None, v))
                line += f"  {names[v]} {time_loop(fn, inputs, repeats, True) / base:.3f}"
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


def plot(rows, path, gpu):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not available: no PNG")
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    series = {}
    for r in rows:
        if r["provider"] != "detops":
            continue
        m = int(r["shape"].split(",")[0][2:])
        kn = r["shape"].split(",", 1)[1]
        series.setdefault((kn, r["flags"].split(";")[0]), []).append((m, r["ratio"]))
    for (kn, mode), pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if mode == "eager" else "x",
                linestyle="-" if mode == "eager" else ":", label=f"{kn} {mode}")
    for y, style in ((1.0, "-"), (1.05, "--"), (1.25, ":")):
        ax.axhline(y, color="gray", linestyle=style, linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("M (rows)")
    ax.set_ylabel("time ratio detops / cuBLAS (lower is better)")
    ax.set_title(f"bf16 linear, batch-invariant tensor-core matmul vs cuBLAS ({gpu})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print("wrote", path)


# ---------------------------------------------------------------- --fp32: the CUDA-core §5 path

FP32_SHAPES = ((4096, 4096), (4096, 14336))  # (K, N)
FP32_MS = (1, 16, 128, 1024, 4096)


def fp32_cases(repeats):
    """Harness cases: per (M, K, N) one fp32 case (stock: cuBLAS fp32, TF32 off) and one bf16 case (stock:
    cuBLAS bf16). nn.Linear layout (weight (N, K)), no bias."""
    g = torch.Generator(device="cuda").manual_seed(0)
    for k, n in FP32_SHAPES:
        w32 = torch.randn((n, k), device="cuda", generator=g) * k ** -0.5
        w16 = w32.to(torch.bfloat16)
        for m in FP32_MS:
            x32 = torch.randn((m, k), device="cuda", generator=g)
            x16 = x32.to(torch.bfloat16)
            flops = 2.0 * m * n * k
            yield harness.Case(
                "linear", (m, k, n), "fp32",
                {"cublas_fp32_notf32": lambda x=x32, w=w32: F.linear(x, w),
                 "detops_fp32": lambda x=x32, w=w32: detops.linear(x, w),
                 "detops_fp32_compensated": lambda x=x32, w=w32: detops.linear(x, w, compensated=True)},
                stock="cublas_fp32_notf32", bytes=(m * k + k * n + m * n) * 4, flops=flops, size=m * n)
            yield harness.Case(
                "linear", (m, k, n), "bf16",
                {"cublas_bf16": lambda x=x16, w=w16: F.linear(x, w),
                 "detops_bf16_tensor_cores": lambda x=x16, w=w16: detops.linear(x, w),
                 "detops_bf16_compensated": lambda x=x16, w=w16: detops.linear(x, w, compensated=True)},
                stock="cublas_bf16", bytes=(m * k + k * n + m * n) * 2, flops=flops, size=m * n)


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
    providers = {
        torch.float32: {"cublas_fp32_notf32": lambda x, w: F.linear(x, w),
                        "cublas_fp32_tf32": None,
                        "detops_fp32": lambda x, w: detops.linear(x, w),
                        "detops_fp32_compensated": lambda x, w: detops.linear(x, w, compensated=True)},
        torch.bfloat16: {"cublas_bf16": lambda x, w: F.linear(x, w),
                         "detops_bf16_tensor_cores": lambda x, w: detops.linear(x, w),
                         "detops_bf16_compensated": lambda x, w: detops.linear(x, w, compensated=True)},
    }
    print("\naccuracy vs float64 (M=%d): max normwise relative error, mean abs error" % m)
    for k, n in FP32_SHAPES:
        for kind in ("normal", "mixed", "cancelling"):
            for dtype, provs in providers.items():
                x, w = fp32_inputs(kind, m, k, n, dtype, g)
                exact = x.double() @ w.double().t()
                scale = exact.abs().max().item()
                for name, fn in provs.items():
                    if fn is None:  # cuBLAS fp32 with TF32 on (torch's default is off; shown for scale)
                        torch.backends.cuda.matmul.allow_tf32 = True
                        y = F.linear(x, w)
                        torch.backends.cuda.matmul.allow_tf32 = False
                    else:
                        y = fn(x, w)
                    err = (y.double() - exact).abs()
                    row = dict(shape=f"{m}x{k}x{n}", inputs=kind, dtype=str(dtype).split(".")[1], provider=name,
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
    with open(path, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    print("wrote", path)


def fp32_main(out, repeats):
    torch.backends.cuda.matmul.allow_tf32 = False  # cuBLAS fp32 in true fp32 (torch's default, made explicit)
    if out == "benchmarks/results/matmul_h100.csv":
        out = "benchmarks/results/matmul_fp32_h100.csv"
    rows = harness.run_cases(fp32_cases(repeats), reps=repeats, warmup=3, flush=True)
    harness.write_csv(rows, out)
    png = os.path.splitext(out)[0] + ".png"
    env = harness.environment()
    harness.plot(rows, png, title=f"CUDA-core matmul (fp32 / compensated) vs cuBLAS on {env['gpu']} "
                                  f"(torch {env['torch']}, {env['commit']})")
    print("wrote", out, png)
    for prov in ("detops_fp32", "detops_fp32_compensated", "detops_bf16_compensated", "detops_bf16_tensor_cores"):
        harness.summarize(rows, provider=prov)
    fp32_accuracy(os.path.splitext(out)[0] + "_accuracy.csv")


if __name__ == "__main__":
    main()
