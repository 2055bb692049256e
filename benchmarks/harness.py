"""THE benchmark harness of detops (method: docs/CONTRACT.md and the op pages docs/ops/*.md). Every bench
script builds its `Case`s and calls `bench_main(cases, name)` (or `parser` + `run_main` when it has modes of
its own); this module does the timing, the ratios, the CSV, the plot and the summary.

Timing (one loop per kind, CUDA events, medians):
  - per call (`Case.timing == "call"`, the default): CUDA events around each call after warm-up, the median
    of `reps` calls; before every timed call the L2 cache is flushed by writing a 256 MB buffer (or, with
    --no-flush, inputs rotate through the `Case.rotate` copies).
  - per pass (`Case.timing == "pass"`): the median over `reps` passes of the mean time per call of one
    back-to-back pass over the `Case.rotate` copies (no flush: the copies are sized to defeat the L2; used
    by bench_matmul.py: calls back to back as a model makes them, weights rotated past the L2).
  - CUDA graphs (--graph, or `Case.graph`): the same calls captured in one CUDA graph (many calls per
    replay): the launch-overhead-free number for decode-sized work.
Providers of one case run interleaved, in the same process, on the same inputs.

CSV schema (one row per case, provider and timing mode, this column order in every results file):
  op, provider, shape, dtype, median_us, tflops, gbps, ratio_vs_stock, gpu, torch, commit, flags
shape: the case's dims joined by "x" (bench_model.py: a label, "L32h4096:8x2048"). tflops / gbps: empty where
the case has no FLOP / byte count. ratio_vs_stock = stock time / this provider's time, per case and timing
mode: > 1 means faster than stock, 1.0 on the stock row. flags: `;`-separated key=value, timing=eager|graph
first, then l2=flush|rotate|warm, the case's own flags, build=<nvcc flags>. A last row op=copy holds the
device-to-device copy bandwidth (gbps) that the bandwidth figures are compared with.

Usage from a bench script (cases are generated lazily, so each case's tensors are freed after it ran):
    from harness import Case, bench_main
    def cases(args):  # args.quick: a small subset
        for rows in (1, 64, 4096):
            x = ...
            yield Case("rms_norm", (rows, n), "bf16", {"detops": f1, "F.rms_norm": f2}, stock="F.rms_norm",
                       bytes=..., flops=0)
    bench_main(cases, "rms_norm")
Command line of the op scripts (bench_model.py has its own): --out CSV --png PNG --reps N --warmup N --graph --no-flush --quick --append
--filter S --plot-only. Re-plot a committed CSV: python benchmarks/harness.py CSV [PNG].
"""
import argparse
import csv
import math
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch

FIELDS = ("op", "provider", "shape", "dtype", "median_us", "tflops", "gbps", "ratio_vs_stock", "gpu", "torch",
          "commit", "flags")
FLUSH_BYTES = 256 * 1024 * 1024
_flush_buffer: Optional[torch.Tensor] = None


def document_lengths(total: int, generator: torch.Generator) -> List[int]:
    """Documents of realistic drawn lengths (log-normal, 64 .. 2048 tokens) filling `total` tokens: the packed
    layouts of bench_train.py and bench_attention.py."""
    lens, filled = [], 0
    while filled < total:
        n = min(int(torch.empty(1).log_normal_(6.0, 0.8, generator=generator).clamp(64, 2048)), total - filled)
        lens.append(n)
        filled += n
    return lens


@dataclass
class Case:
    """One benchmark point. providers: name -> zero-argument callable running the op once on the case's
    inputs. `stock` names the baseline provider for the ratio. bytes / flops: the algorithmic traffic and
    work of one call (read once + write once), for GB/s and TFLOP/s.
    rotate: optional list of provider dicts over different input copies (per-call timing: used with
    --no-flush; per-pass timing: one pass is one call of each). timing: "call" or "pass" (module docstring).
    graph: None follows --graph; True / False times this case in a CUDA graph or not, whatever --graph says.
    flags: `;`-separated key=value pairs written into the CSV's flags column."""
    op: str
    shape: Sequence[int]
    dtype: str
    providers: Dict[str, Callable[[], object]]
    stock: Optional[str] = None
    bytes: float = 0.0
    flops: float = 0.0
    rotate: List[Dict[str, Callable[[], object]]] = field(default_factory=list)
    flags: str = ""
    timing: str = "call"
    graph: Optional[bool] = None


# ----------------------------------------------------------------------------------------------- timing

def flush_l2():
    global _flush_buffer
    if _flush_buffer is None:
        _flush_buffer = torch.empty(FLUSH_BYTES // 4, dtype=torch.float32, device="cuda")
    _flush_buffer.fill_(1.0)


def time_eager(fn: Callable, reps: int = 50, warmup: int = 10, flush: bool = True,
               rotate: Sequence[Callable] = (), device: str = "cuda") -> float:
    """Median microseconds of one call, CUDA events around each call, L2 flushed (or inputs rotated).
    device="cpu": wall time of each call (perf_counter), no flush."""
    fns = list(rotate) or [fn]
    for k in range(warmup):
        fns[k % len(fns)]()
    if device != "cuda":
        times = []
        for k in range(reps):
            t = time.perf_counter()
            fns[k % len(fns)]()
            times.append((time.perf_counter() - t) * 1e6)
        return statistics.median(times)
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


def time_pass(fns: Sequence[Callable], reps: int = 20, graph: bool = False) -> float:
    """Median over `reps` passes of the mean microseconds per call of one back-to-back pass over `fns` (no
    flush, no synchronisation inside a pass). graph=True: the pass is captured once in a CUDA graph (after a
    warm-up pass outside the capture) and replayed, so launch overhead is removed."""
    def one_pass():
        for f in fns:
            f()
    run = one_pass
    if graph:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            one_pass()  # warm-up outside the capture (lazy initialisation, library workspaces)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            one_pass()
        run = g.replay
    run()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        run()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e3 / len(fns))
    return statistics.median(times)


def time_graph(fn: Callable, calls: int = 20, reps: int = 20) -> float:
    """Median microseconds per call with `calls` calls of fn captured in one CUDA graph (no flush: launch
    overhead removed, inputs warm in L2 when they fit)."""
    return time_pass([fn] * calls, reps, graph=True)


def measure_copy_gbps(nbytes: int = 1 << 30, reps: int = 20) -> float:
    """Device-to-device copy bandwidth (read + write bytes per second), the bandwidth ceiling we quote."""
    a = torch.empty(nbytes // 2, dtype=torch.uint8, device="cuda").random_()
    b = torch.empty_like(a)
    us = time_eager(lambda: b.copy_(a), reps=reps, warmup=3, flush=False)
    return 2 * a.numel() / (us * 1e-6) / 1e9


def environment(device: str = "cuda") -> dict:
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
    if device == "cuda":
        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    else:
        gpu = device
    return dict(gpu=gpu, torch=torch.__version__, commit=commit, build=str(build))


# ------------------------------------------------------------------------------------------ rows, CSV

def make_row(env: dict, op: str, provider: str, shape, dtype: str, us: float, stock_us: Optional[float],
             flops: float = 0.0, nbytes: float = 0.0, flags: Sequence[str] = ()) -> dict:
    """One CSV row in the FIELDS schema. shape: dims (joined by "x") or a label. flags: key=value strings;
    the build flags are appended."""
    flags = [f for f in flags if f]
    us_ok = us > 0  # (a derived time, e.g. bench_model's decode step on a CPU, can come out <= 0)
    if env.get("build"):
        flags.append("build=" + env["build"])
    return dict(op=op, provider=provider, shape=shape if isinstance(shape, str) else "x".join(map(str, shape)),
                dtype=dtype, median_us=round(us, 3),
                tflops=round(flops / (us * 1e-6) / 1e12, 3) if flops and us_ok else "",
                gbps=round(nbytes / (us * 1e-6) / 1e9, 1) if nbytes and us_ok else "",
                ratio_vs_stock=round(stock_us / us, 4) if stock_us and us_ok else "",
                gpu=env["gpu"], torch=env["torch"], commit=env["commit"], flags=";".join(flags))


def run_cases(cases: Sequence[Case], reps: int = 50, warmup: int = 10, flush: bool = True, graph: bool = False,
              log=sys.stdout) -> List[dict]:
    env = environment()
    rows = []
    for case in cases:
        passes = case.timing == "pass"
        times = {}
        for name, fn in case.providers.items():  # interleaved: every provider of a case back to back
            if passes:
                times[name] = time_pass([r[name] for r in case.rotate] or [fn], reps)
            else:
                rot = [r[name] for r in case.rotate] if not flush else []
                times[name] = time_eager(fn, reps, warmup, flush, rot)
        gtimes = {}
        for name, fn in (case.providers.items() if (graph if case.graph is None else case.graph) else ()):
            try:
                gtimes[name] = (time_pass([r[name] for r in case.rotate] or [fn], reps, graph=True) if passes
                                else time_graph(fn))
            except Exception as e:  # a provider that cannot be captured is reported, not fatal
                print(f"graph timing of {case.op} {name} failed: {e}", file=log)
        for mode, tt in (("eager", times), ("graph", gtimes)):
            if passes or (mode == "eager" and not flush):  # what the timed calls found in the L2
                l2 = "l2=rotate" if case.rotate else "l2=warm"
            else:
                l2 = "l2=flush" if mode == "eager" else "l2=warm"
            for name, us in tt.items():
                row = make_row(env, case.op, name, case.shape, case.dtype, us, tt.get(case.stock), case.flops,
                               case.bytes, [f"timing={mode}", l2, case.flags])
                rows.append(row)
                print(f"{row['op']:>12} {row['provider']:>14} {row['shape']:>16} {row['dtype']:>10} {mode:>5} "
                      f"{us:10.2f} us {row['gbps']!s:>8} GB/s {row['tflops']!s:>8} TFLOP/s "
                      f"ratio_vs_stock {row['ratio_vs_stock']!s:>7}", file=log, flush=True)
    return rows


def write_csv(rows: Sequence[dict], path: str, append: bool = False, fields: Sequence[str] = FIELDS):
    """Rows in `fields` order (the timing schema FIELDS unless a script writes another table, e.g. accuracy)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    new = not (append and os.path.exists(path))
    with open(path, "a" if append else "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerows(rows)


def read_csv(path: str) -> List[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# -------------------------------------------------------------------------------------- plot, summary

def _mode(r: dict) -> str:
    return "graph" if "timing=graph" in r.get("flags", "") else "eager"


def _ratio(r: dict) -> Optional[float]:
    return None if r["ratio_vs_stock"] in ("", None) else float(r["ratio_vs_stock"])


def _dims(shape: str) -> Optional[List[int]]:
    try:
        return [int(s) for s in str(shape).split("x")]
    except ValueError:
        return None


# How an op's panels are drawn. x: "elements" (product of the shape) or "rows" (its first dim); series: one
# line per provider and trailing dims (shape[1:]) or per provider only; metric: the right-hand panel.
PLOT_STYLE = {
    "linear": dict(x="rows", series=True, metric="tflops"),
    "attn_prefill": dict(x="elements", series=False, metric="tflops"),
    "attn_decode": dict(x="elements", series=False, metric="gbps"),
}
DEFAULT_STYLE = dict(x="elements", series=True, metric="gbps")


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: str, title: str, dpi: int):
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    print("wrote", path)


def plot(rows: Sequence[dict], path: str, title: str = "", copy_gbps: Optional[float] = None):
    """Two panels per op/dtype group: ratio_vs_stock (log y; the stock provider is the line at 1) and GB/s or
    TFLOP/s (PLOT_STYLE), against the elements or rows of the case (log x). One colour per trailing shape and
    one line style per provider (one colour per provider where there is one shape); CUDA graph timings thin
    with x markers. Rows whose shape is a label (bench_model.py) get a bar chart."""
    plt = _pyplot()
    rows = [r for r in rows if r["op"] != "copy"]
    if any(_dims(r["shape"]) is None for r in rows):
        return plot_bars(rows, path, title)
    groups = sorted({(r["op"], r["dtype"]) for r in rows})
    fig, axes = plt.subplots(len(groups), 2, figsize=(13, 3.4 * max(1, len(groups))), squeeze=False)
    styles = ["-", "--", ":", "-."]
    for gi, (op, dt) in enumerate(groups):
        st = PLOT_STYLE.get(op, DEFAULT_STYLE)
        lines = {}
        for r in rows:
            if (r["op"], r["dtype"]) != (op, dt):
                continue
            dims = _dims(r["shape"])
            x = dims[0] if st["x"] == "rows" else math.prod(dims)
            series = "x".join(map(str, dims[1:])) if st["series"] else ""
            lines.setdefault((r["provider"], series, _mode(r)), []).append((x, r))
        providers = sorted({k[0] for k in lines})
        series_all = sorted({k[1] for k in lines}, key=lambda s: _dims(s) or [0])
        stock = {p for p in providers if all(_ratio(r) == 1.0 for k, pts in lines.items() if k[0] == p
                                             for _, r in pts)}  # drawn as the line at 1
        ax0, ax1 = axes[gi]
        for (prov, series, mode), pts in sorted(lines.items()):
            pts.sort(key=lambda p: p[0])
            label = " ".join(s for s in (prov, series, "graph" if mode == "graph" else "") if s)
            if len(series_all) > 1:  # colour: the trailing shape, line style: the provider
                color, ls = series_all.index(series), styles[providers.index(prov) % len(styles)]
            else:
                color, ls = providers.index(prov), "-"
            kw = dict(color=f"C{color % 10}", ls=ls, marker="o" if mode == "eager" else "x", ms=3,
                      lw=1.5 if mode == "eager" else 0.8, label=label)
            xs = [p[0] for p in pts]
            for ax, col in ((ax0, "ratio_vs_stock"), (ax1, st["metric"])):
                if (ax is ax1 or prov not in stock) and any(p[1][col] not in ("", None) for p in pts):
                    ax.plot(xs, [float(p[1][col] or "nan") for p in pts], **kw)
        ax0.axhline(1.0, color="gray", lw=0.8)
        ax0.set_yscale("log")
        ax0.set_ylabel("ratio_vs_stock = stock time / time\n(log; > 1: faster than stock)", fontsize=8)
        ax1.set_ylabel("TFLOP/s" if st["metric"] == "tflops" else "GB/s")
        if copy_gbps and st["metric"] == "gbps":
            ax1.axhline(copy_gbps, color="gray", lw=0.8, ls="--", label="copy")
        for ax in (ax0, ax1):
            ax.set_xscale("log")
            ax.set_title(f"{op} {dt}", fontsize=9)
            ax.set_xlabel("rows (M)" if st["x"] == "rows" else "elements (product of the shape)")
        ax1.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    _save(fig, path, title, 100)
    plt.close(fig)


def plot_bars(rows: Sequence[dict], path: str, title: str = ""):
    """ratio_vs_stock of every non-stock row as a bar (cases whose shape is a label, e.g. whole models)."""
    plt = _pyplot()
    rows = [r for r in rows if r["ratio_vs_stock"] not in ("", None)]
    # the stock providers (ratio 1.0 in every row) are the axhline, not bars
    stock = {p for p in {r["provider"] for r in rows} if all(_ratio(r) == 1.0 for r in rows if r["provider"] == p)}
    sel = [r for r in rows if r["provider"] not in stock] or rows
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(sel)), 3.8))
    ax.bar(range(len(sel)), [float(r["ratio_vs_stock"]) for r in sel])
    ax.set_xticks(range(len(sel)), [f"{r['op']}\n{r['shape']}\n{r['provider']}" for r in sel], fontsize=6)
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_ylabel("ratio_vs_stock = stock time / time\n(> 1: faster than stock)", fontsize=8)
    _save(fig, path, title, 110)
    plt.close(fig)


def summarize(rows: Sequence[dict], provider: str = "detops", by_series: bool = False, log=sys.stdout):
    """Worst (lowest) and median ratio_vs_stock and the best GB/s / TFLOP/s of `provider`, per op, dtype and
    timing mode (by_series: also per trailing shape, e.g. matmul's KxN)."""
    out = {}
    sel = [r for r in rows if r["provider"] == provider and r["ratio_vs_stock"] not in ("", None)]
    keyf = (lambda r: (r["op"], r["dtype"], _mode(r), "x".join(r["shape"].split("x")[1:]) if by_series else ""))
    for key in sorted({keyf(r) for r in sel}):
        part = [r for r in sel if keyf(r) == key]
        ratios = [float(r["ratio_vs_stock"]) for r in part]
        worst = min(part, key=lambda r: float(r["ratio_vs_stock"]))
        gbps = [float(r["gbps"]) for r in part if r["gbps"] not in ("", None)]
        tflops = [float(r["tflops"]) for r in part if r["tflops"] not in ("", None)]
        out[key] = dict(worst=min(ratios), worst_shape=worst["shape"], median=statistics.median(ratios),
                        max_gbps=max(gbps) if gbps else None, max_tflops=max(tflops) if tflops else None)
        best = ((f", best {max(gbps):.0f} GB/s" if gbps else "")
                + (f", best {max(tflops):.1f} TFLOP/s" if tflops else ""))
        print(f"SUMMARY {' '.join(k for k in key if k)} {provider}: ratio_vs_stock worst {min(ratios):.3f} at "
              f"{worst['shape']}, median {statistics.median(ratios):.3f}{best}", file=log)
    return out


# ----------------------------------------------------------------------------------- command line

def parser(name: str, **defaults) -> argparse.ArgumentParser:
    """The common flags of every bench script; `defaults` overrides their defaults (e.g. reps=15). A script
    with modes of its own adds its arguments to this parser and calls run_main."""
    p = argparse.ArgumentParser(description=f"detops benchmark: {name}")
    p.add_argument("--out", default=None, help=f"CSV path (default: benchmarks/results/{name}_<gpu>.csv, "
                                                 f"e.g. {name}_h100.csv)")
    p.add_argument("--png", default=None, help="plot path (default: the CSV path with .png)")
    p.add_argument("--reps", type=int, default=50, help="timed calls (per-pass cases: timed passes) per provider")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--graph", action="store_true", help="also time inside CUDA graphs")
    p.add_argument("--no-flush", action="store_true", help="rotate inputs instead of flushing L2")
    p.add_argument("--quick", action="store_true", help="a small subset of the sizes")
    p.add_argument("--append", action="store_true")
    p.add_argument("--filter", default="", help="only cases whose op/shape/dtype string contains this")
    p.add_argument("--plot-only", action="store_true", help="re-plot and summarise the CSV at --out, no timing")
    p.set_defaults(**defaults)
    return p


def gpu_tag(device: str = "cuda") -> str:
    """Short name of the GPU for result file names: "NVIDIA H100 80GB HBM3" -> "h100"; "cpu" without CUDA."""
    if device != "cuda" or not torch.cuda.is_available():
        return "cpu"
    tokens = torch.cuda.get_device_name().lower().replace("-", " ").split()
    return next((t for t in tokens if re.fullmatch(r"[a-z]+[0-9]+[a-z]*", t) and t != "nvidia"), "gpu")


def default_out(name: str, device: str = "cuda") -> str:
    return f"benchmarks/results/{name}_{gpu_tag(device)}.csv"


def replot(src: str, png: Optional[str] = None, providers: Sequence[str] = ("detops",), by_series: bool = False):
    """Plot and summarise a CSV written by this harness (a committed result)."""
    data = read_csv(src)
    copy = next((float(r["gbps"]) for r in data if r["op"] == "copy"), None)
    body = [r for r in data if r["op"] != "copy"]
    env = body[0] if body else {}
    plot(body, png or os.path.splitext(src)[0] + ".png",
         title=f"{os.path.basename(src)} on {env.get('gpu')} (torch {env.get('torch')}, {env.get('commit')})",
         copy_gbps=copy)
    for prov in providers:
        summarize(body, prov, by_series)
    return body


def run_main(args: argparse.Namespace, cases_fn: Callable[[argparse.Namespace], Sequence[Case]], name: str,
             providers: Sequence[str] = ("detops",), by_series: bool = False) -> List[dict]:
    """Run the cases of a parsed command line: time, write CSV + PNG, print the summary of `providers`."""
    args.out = args.out or default_out(name)
    if args.plot_only:
        return replot(args.out, args.png, providers, by_series)
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
    print("wrote", args.out)
    plot(rows, args.png or os.path.splitext(args.out)[0] + ".png",
         title=f"{name} on {env['gpu']} (torch {env['torch']}, {env['commit']})", copy_gbps=copy)
    for prov in providers:
        summarize(rows, prov, by_series)
    return rows


def bench_main(cases_fn: Callable[[argparse.Namespace], Sequence[Case]], name: str, argv=None) -> List[dict]:
    """Entry point of a bench script without modes of its own: parses the common flags, runs the cases,
    writes CSV + PNG. cases_fn(args) builds the cases (args.quick selects a small subset)."""
    return run_main(parser(name).parse_args(argv), cases_fn, name)


if __name__ == "__main__":
    # Re-plot a committed CSV: python benchmarks/harness.py CSV [PNG]
    if len(sys.argv) not in (2, 3) or sys.argv[1].startswith("-"):
        sys.exit("usage: python benchmarks/harness.py CSV [PNG]   (re-plot and summarise a results CSV)")
    replot(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
