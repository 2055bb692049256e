"""THE benchmark harness of detops (PERFORMANCE.md "Method"). Every bench script builds a list of `Case`s and
calls `bench_main(cases)`; this module does the timing, the ratios, the CSV and the plot.

Timing: CUDA events around each call, after warm-up; the median of `reps` calls. Before every timed call the
L2 cache is flushed by writing a 256 MB buffer (or, with --no-flush, inputs rotate through `Case.rotate`
copies). Optionally (--graph) each provider is also timed inside a CUDA graph (many calls per replay, no
flush: the launch-overhead-free number for decode-sized work). Providers of one case run interleaved, in the
same process, on the same inputs.

CSV schema (one row per case and provider, fixed column order):
  op, provider, shape, dtype, median_us, tflops, gbps, ratio_vs_stock, gpu, torch, commit, flags
ratio_vs_stock = median_us / median_us of the case's stock provider (lower is better; 1.0 for the stock one).

Usage from a bench script (cases are generated lazily, so each case's tensors are freed after it ran):
    from harness import Case, bench_main
    def cases(args):  # args.quick: a small subset
        for rows in (1, 64, 4096):
            x = ...
            yield Case("rms_norm", (rows, n), "bf16", {"detops": f1, "F.rms_norm": f2}, stock="F.rms_norm",
                       bytes=..., flops=0, size=rows * n)
    bench_main(cases, "rms_norm")
Command line of every script: --out CSV --png PNG --reps N --warmup N --graph --no-flush --quick --append
--filter S. Re-plot a committed CSV: python benchmarks/harness.py CSV [PNG].
"""
import argparse
import csv
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch

FIELDS = ("op", "provider", "shape", "dtype", "median_us", "tflops", "gbps", "ratio_vs_stock", "gpu", "torch",
          "commit", "flags")
FLUSH_BYTES = 256 * 1024 * 1024
_flush_buffer: Optional[torch.Tensor] = None


@dataclass
class Case:
    """One benchmark point. providers: name -> zero-argument callable running the op once on the case's
    inputs. `stock` names the baseline provider for the ratio. bytes / flops: the algorithmic traffic and
    work of one call (read once + write once), for GB/s and TFLOP/s. size: the x value of the plots.
    rotate: optional list of provider dicts over different input copies (used with --no-flush)."""
    op: str
    shape: Sequence[int]
    dtype: str
    providers: Dict[str, Callable[[], object]]
    stock: Optional[str] = None
    bytes: float = 0.0
    flops: float = 0.0
    size: Optional[float] = None
    rotate: List[Dict[str, Callable[[], object]]] = field(default_factory=list)
    flags: str = ""


def flush_l2():
    global _flush_buffer
    if _flush_buffer is None:
        _flush_buffer = torch.empty(FLUSH_BYTES // 4, dtype=torch.float32, device="cuda")
    _flush_buffer.fill_(1.0)


def time_eager(fn: Callable, reps: int = 50, warmup: int = 10, flush: bool = True,
               rotate: Sequence[Callable] = ()) -> float:
    """Median microseconds of one call, CUDA events around each call, L2 flushed (or inputs rotated)."""
    fns = list(rotate) or [fn]
    for k in range(warmup):
        fns[k % len(fns)]()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for k in range(reps):
        if flush:
            flush_l2()
        starts[k].record()
        fns[k % len(fns)]()
        ends[k].record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) * 1e3 for s, e in zip(starts, ends))


def time_graph(fn: Callable, calls: int = 20, reps: int = 20) -> float:
    """Median microseconds per call with `calls` calls captured in one CUDA graph (no flush: launch overhead
    removed, inputs warm in L2 when they fit)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(calls):
            fn()
    g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) * 1e3 / calls)
    return statistics.median(times)


def measure_copy_gbps(nbytes: int = 1 << 30, reps: int = 20) -> float:
    """Device-to-device copy bandwidth (read + write bytes per second), the bandwidth ceiling we quote."""
    a = torch.empty(nbytes // 2, dtype=torch.uint8, device="cuda").random_()
    b = torch.empty_like(a)
    us = time_eager(lambda: b.copy_(a), reps=reps, warmup=3, flush=False)
    return 2 * a.numel() / (us * 1e-6) / 1e9


def environment() -> dict:
    try:
        import detops
        info = detops.build_info()
        build = info.get("nvcc_flags") or info.get("flags") or ""
        if isinstance(build, (list, tuple)):
            build = " ".join(build)
    except Exception:  # a harness for a not-yet-built extension still records the machine
        build = ""
    # The device box gets a copy of the working tree whose .git may lag behind: set DETOPS_COMMIT there.
    commit = os.environ.get("DETOPS_COMMIT")
    if not commit:
        try:
            commit = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], stderr=subprocess.DEVNULL,
                                             cwd=os.path.dirname(os.path.abspath(__file__))).decode().strip()
        except Exception:
            commit = "unknown"
    return dict(gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
                torch=torch.__version__, commit=commit, build=str(build))


def run_cases(cases: Sequence[Case], reps: int = 50, warmup: int = 10, flush: bool = True, graph: bool = False,
              log=sys.stdout) -> List[dict]:
    env = environment()
    rows = []
    for case in cases:
        times = {}
        for name, fn in case.providers.items():  # interleaved: every provider of a case back to back
            rot = [r[name] for r in case.rotate] if not flush else []
            times[name] = time_eager(fn, reps, warmup, flush, rot)
        gtimes = {}
        for name, fn in (case.providers.items() if graph else ()):
            try:
                gtimes[name] = time_graph(fn)
            except Exception as e:  # a provider that cannot be captured is reported, not fatal
                print(f"graph timing of {case.op} {name} failed: {e}", file=log)
        for mode, tt in (("eager", times), ("graph", gtimes)):
            if not tt:
                continue
            stock_us = tt.get(case.stock) if case.stock else None
            for name, us in tt.items():
                flags = [f"timing={mode}", "l2=flush" if (flush and mode == "eager") else
                         ("l2=rotate" if mode == "eager" and case.rotate else "l2=warm")]
                if case.flags:
                    flags.append(case.flags)
                if env["build"]:
                    flags.append("build=" + env["build"])
                row = dict(op=case.op, provider=name, shape="x".join(str(s) for s in case.shape), dtype=case.dtype,
                           median_us=round(us, 3),
                           tflops=round(case.flops / (us * 1e-6) / 1e12, 3) if case.flops else "",
                           gbps=round(case.bytes / (us * 1e-6) / 1e9, 1) if case.bytes else "",
                           ratio_vs_stock=round(us / stock_us, 4) if stock_us else "",
                           gpu=env["gpu"], torch=env["torch"], commit=env["commit"], flags=";".join(flags))
                row["_size"] = case.size if case.size is not None else case.bytes
                rows.append(row)
                print(f"{row['op']:>12} {row['provider']:>14} {row['shape']:>16} {row['dtype']:>10} {mode:>5} "
                      f"{us:10.2f} us {row['gbps']!s:>8} GB/s ratio {row['ratio_vs_stock']!s:>7}", file=log,
                      flush=True)
    return rows


def write_csv(rows: Sequence[dict], path: str, append: bool = False):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    new = not (append and os.path.exists(path))
    with open(path, "a" if append else "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerows(rows)


def read_csv(path: str) -> List[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def plot(rows: Sequence[dict], path: str, title: str = "", copy_gbps: Optional[float] = None):
    """Two panels per op/dtype group: time / stock (log y) and GB/s, against total elements (log x). One colour
    per provider, one line style per row length."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if "timing=eager" in r.get("flags", "timing=eager")]
    groups = sorted({(r["op"], r["dtype"]) for r in rows})
    fig, axes = plt.subplots(len(groups), 2, figsize=(13, 3.4 * max(1, len(groups))), squeeze=False)
    styles = ["-", "--", ":", "-."]
    for gi, (op, dt) in enumerate(groups):
        sel = [r for r in rows if r["op"] == op and r["dtype"] == dt]
        providers = sorted({r["provider"] for r in sel})
        lengths = sorted({str(r["shape"]).split("x")[-1] for r in sel}, key=int)
        for pi, prov in enumerate(providers):
            for li, last in enumerate(lengths):
                pts = sorted(((float(r.get("_size") or _size_of(r)), r) for r in sel
                              if r["provider"] == prov and str(r["shape"]).split("x")[-1] == last), key=lambda p: p[0])
                if not pts:
                    continue
                label = f"{prov} n={last}" if len(lengths) > 1 else prov
                kw = dict(color=f"C{pi}", ls=styles[li % len(styles)], marker="o", ms=3, label=label)
                xs = [p[0] for p in pts]
                if any(p[1]["ratio_vs_stock"] not in ("", None) for p in pts):
                    axes[gi][0].plot(xs, [float(p[1]["ratio_vs_stock"] or "nan") for p in pts], **kw)
                if any(p[1]["gbps"] not in ("", None) for p in pts):
                    axes[gi][1].plot(xs, [float(p[1]["gbps"] or "nan") for p in pts], **kw)
        axes[gi][0].axhline(1.0, color="gray", lw=0.8)
        axes[gi][0].axhline(1.2, color="gray", lw=0.6, ls=":")
        axes[gi][0].set_yscale("log")
        axes[gi][0].set_ylabel("time / stock (log)")
        axes[gi][1].set_ylabel("GB/s")
        if copy_gbps:
            axes[gi][1].axhline(copy_gbps, color="gray", lw=0.8, ls="--", label="copy")
        for ax in axes[gi]:
            ax.set_xscale("log")
            ax.set_title(f"{op} {dt}", fontsize=9)
            ax.set_xlabel("elements (rows x n)")
        axes[gi][1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _size_of(r: dict) -> float:
    n = 1
    for s in str(r["shape"]).split("x"):
        n *= int(s)
    return n


def summarize(rows: Sequence[dict], provider: str = "detops", log=sys.stdout):
    """Worst and median ratio and the GB/s range of `provider`, per op and dtype (eager timings)."""
    out = {}
    for key in sorted({(r["op"], r["dtype"]) for r in rows}):
        sel = [r for r in rows if (r["op"], r["dtype"]) == key and r["provider"] == provider
               and "timing=eager" in r["flags"] and r["ratio_vs_stock"] != ""]
        if not sel:
            continue
        ratios = [float(r["ratio_vs_stock"]) for r in sel]
        gbps = [float(r["gbps"]) for r in sel if r["gbps"] != ""]
        worst = max(sel, key=lambda r: float(r["ratio_vs_stock"]))
        out[key] = dict(worst=max(ratios), worst_shape=worst["shape"], median=statistics.median(ratios),
                        max_gbps=max(gbps) if gbps else None)
        print(f"SUMMARY {key[0]} {key[1]} {provider}: worst ratio {max(ratios):.3f} at {worst['shape']}, median "
              f"{statistics.median(ratios):.3f}, best {max(gbps) if gbps else 0:.0f} GB/s", file=log)
    return out


def bench_main(cases_fn: Callable[[argparse.Namespace], Sequence[Case]], name: str, argv=None):
    """Entry point of every bench script: parses the common flags, runs the cases, writes CSV + PNG.
    cases_fn(args) builds the cases (args.quick selects a small subset)."""
    p = argparse.ArgumentParser(description=f"detops benchmark: {name}")
    p.add_argument("--out", default=f"benchmarks/results/{name}.csv")
    p.add_argument("--png", default=None, help="plot path (default: the CSV path with .png)")
    p.add_argument("--reps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--graph", action="store_true", help="also time inside CUDA graphs")
    p.add_argument("--no-flush", action="store_true", help="rotate inputs instead of flushing L2")
    p.add_argument("--quick", action="store_true", help="a small subset of the sizes")
    p.add_argument("--append", action="store_true")
    p.add_argument("--filter", default="", help="only cases whose op/shape/dtype string contains this")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    copy = measure_copy_gbps()
    print(f"device copy bandwidth: {copy:.0f} GB/s on {torch.cuda.get_device_name()}", flush=True)
    # a generator: each case's tensors are freed once it has run
    cases = (c for c in cases_fn(args) if args.filter in f"{c.op} {'x'.join(map(str, c.shape))} {c.dtype}")
    rows = run_cases(cases, args.reps, args.warmup, flush=not args.no_flush, graph=args.graph)
    env = environment()
    rows.append(dict(op="copy", provider="torch.copy_", shape="536870912", dtype="uint8", median_us="", tflops="",
                     gbps=round(copy, 1), ratio_vs_stock="", gpu=env["gpu"], torch=env["torch"],
                     commit=env["commit"], flags="timing=eager;l2=none"))
    write_csv(rows, args.out, append=args.append)
    plot(rows[:-1], args.png or os.path.splitext(args.out)[0] + ".png",
         title=f"{name} on {env['gpu']} (torch {env['torch']}, {env['commit']})", copy_gbps=copy)
    summarize(rows)
    return rows


if __name__ == "__main__":
    # Re-plot a committed CSV: python benchmarks/harness.py CSV [PNG]
    src = sys.argv[1]
    data = read_csv(src)
    copy = next((float(r["gbps"]) for r in data if r["op"] == "copy"), None)
    body = [r for r in data if r["op"] != "copy"]
    env = body[0] if body else {}
    plot(body, sys.argv[2] if len(sys.argv) > 2 else os.path.splitext(src)[0] + ".png",
         title=f"{os.path.basename(src)} on {env.get('gpu')} (torch {env.get('torch')}, {env.get('commit')})",
         copy_gbps=copy)
    summarize(body)
