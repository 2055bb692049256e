"""Model-level benchmark (PERFORMANCE.md, last row): a Llama-8B-shaped HF model with random weights, bf16,
stock (sdpa attention, cuBLAS) vs detops.patch, eager, same model object, interleaved.

Workloads: prefill 8 x 2048 (one forward with a fresh DynamicCache, logits of the last position as generate()
computes them) and greedy decode of 128 tokens (generate(), prompt 128 tokens) at batch 1 / 16 / 64; the
decode time per token excludes the prefill (generate(128) - prefill of the same batch, / 127).
CSV rows follow benchmarks/harness.py's schema when it is present (op, provider, shape, dtype, median_us,
tflops, gbps, ratio_vs_stock, gpu, torch, commit, flags), plus a PNG of the ratios.

  python benchmarks/bench_model.py                        # the full 32-layer model (H100: ~16 GB of weights)
  python benchmarks/bench_model.py --layers 2 --reps 3    # a quick check
  python benchmarks/bench_model.py --device cpu --layers 1 --hidden 256 --quick   # a smoke test without a GPU
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import harness  # the shared harness (CSV schema, environment, plots), when present
except ImportError:
    harness = None

FIELDS = ("op", "provider", "shape", "dtype", "median_us", "tflops", "gbps", "ratio_vs_stock", "gpu", "torch",
          "commit", "flags")


def build_model(args):
    import transformers as tf
    config = tf.LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                            num_hidden_layers=args.layers, num_attention_heads=args.heads,
                            num_key_value_heads=args.kv_heads, max_position_embeddings=8192, rope_theta=500000.0,
                            rms_norm_eps=1e-5, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device(args.device):
        model = tf.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=torch.bfloat16)
    model.to(args.device)  # (a no-op when from_config honoured the device context)
    with torch.no_grad():  # random weights, never zeros (PERFORMANCE.md: never time on zeros)
        for p in model.parameters():
            p.normal_(0.0, 0.02 if p.dim() > 1 else 1.0)
            if p.dim() == 1:
                p.add_(1.0)
    model.generation_config.pad_token_id = 0
    return model.eval()


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, reps, warmup):
    """Median wall seconds of fn() (CUDA-synchronised; each call is a whole forward / generate)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        sync(device)
        if device == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def environment(device):
    if harness is not None and device == "cuda":
        return harness.environment()
    import detops
    return dict(gpu=torch.cuda.get_device_name() if device == "cuda" else "cpu", torch=torch.__version__,
                commit=os.environ.get("DETOPS_COMMIT", "unknown"), build=str(detops.build_info().get("nvcc_flags")))


def main(argv=None):
    p = argparse.ArgumentParser(description="detops model benchmark (Llama-8B-shaped, random weights)")
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--intermediate", type=int, default=None, help="default 3.5 x hidden (14336 for 4096)")
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=128256)
    p.add_argument("--device", default="cuda")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--prefill", default="8x2048", help="BxT of the prefill")
    p.add_argument("--decode-batches", default="1,16,64")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--prompt", type=int, default=128, help="prompt length of the decode runs")
    p.add_argument("--quick", action="store_true", help="prefill 2x128, decode 16 tokens at batch 1/4")
    p.add_argument("--static", action="store_true",
                   help="decode with a StaticCache: transformers compiles the step (CUDA graphs); skips the prefill row")
    p.add_argument("--out", default="benchmarks/results/bench_model.csv")
    p.add_argument("--png", default=None)
    args = p.parse_args(argv)
    if args.intermediate is None:
        args.intermediate = args.hidden * 7 // 2
    if args.quick:
        args.prefill, args.decode_batches, args.new_tokens, args.prompt = "2x128", "1,4", 16, 32

    import detops
    dev = args.device
    model = build_model(args)
    env = environment(dev)
    shape_tag = f"L{args.layers}h{args.hidden}"
    gen = torch.Generator().manual_seed(1)
    B, T = (int(x) for x in args.prefill.split("x"))
    prefill_ids = torch.randint(3, args.vocab, (B, T), generator=gen).to(dev)
    results = []  # (op, shape, provider, seconds, tokens)

    def prefill_fn(ids):
        from transformers import DynamicCache

        def run():
            with torch.no_grad():
                model(input_ids=ids, past_key_values=DynamicCache(config=model.config), use_cache=True,
                      logits_to_keep=1)
        return run

    def generate_fn(ids):
        extra = {}
        if args.static:
            # transformers compiles the decode step (Inductor, mode="reduce-overhead": CUDA graphs) when the
            # cache is static; the prefill stays eager.
            extra = dict(cache_implementation="static")

        def run():
            with torch.no_grad():
                model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                               max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, **extra)
        return run

    decode_batches = [int(b) for b in args.decode_batches.split(",")]
    prompts = {b: torch.randint(3, args.vocab, (b, args.prompt), generator=gen).to(dev) for b in decode_batches}
    handle = None
    for provider in ("stock", "detops"):  # same model object: patched for the detops pass, then restored
        if provider == "detops":
            handle = detops.patch(model, strict=True)
        try:
            if args.static:
                import torch._dynamo as dynamo
                dynamo.reset()  # the stock pass's compiled step must not serve the patched model
            else:
                s = timed(prefill_fn(prefill_ids), dev, args.reps, args.warmup)
                results.append(("prefill", f"{B}x{T}", provider, s, B * T))
                print(f"{shape_tag} prefill {B}x{T} {provider:>7}: {s * 1e3:9.2f} ms  ({B * T / s:,.0f} tok/s)",
                      flush=True)
            for b in decode_batches:
                g = timed(generate_fn(prompts[b]), dev, max(1, args.reps // 2), args.warmup)
                pf = timed(prefill_fn(prompts[b]), dev, args.reps, args.warmup)
                per_tok = (g - pf) / max(1, args.new_tokens - 1)
                tag = "_static" if args.static else ""
                results.append(("generate" + tag, f"{b}x{args.prompt}+{args.new_tokens}", provider, g,
                                 b * args.new_tokens))
                results.append(("decode_step" + tag, f"{b}x1", provider, per_tok, b))
                print(f"{shape_tag} generate b={b:<3} {provider:>7}: {g * 1e3:9.1f} ms total, "
                      f"{per_tok * 1e3:7.2f} ms/token step", flush=True)
        finally:
            if handle is not None:
                handle.undo()
                handle = None

    rows = []
    stock = {(op, shape): s for op, shape, prov, s, _ in results if prov == "stock"}
    for op, shape, prov, s, toks in results:
        rows.append(dict(op=f"model_{op}", provider=prov if prov == "detops" else "stock(sdpa)",
                         shape=f"{shape_tag}:{shape}", dtype="bf16", median_us=round(s * 1e6, 1), tflops="",
                         gbps="", ratio_vs_stock=round(s / stock[(op, shape)], 4), gpu=env["gpu"],
                         torch=env["torch"], commit=env["commit"],
                         flags=f"timing={'static_cache+cuda_graphs' if args.static else 'eager'};tokens={toks};"
                               f"tok_per_s={toks / s:.1f}"))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    if harness is not None:
        harness.write_csv(rows, args.out)
    else:
        import csv
        with open(args.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            w.writeheader()
            w.writerows(rows)
    print(f"wrote {args.out}")
    for r in rows:
        if r["provider"] == "detops":
            print(f"RATIO {r['op']:<20} {r['shape']:<28} detops/stock = {r['ratio_vs_stock']:.3f}")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        det = [r for r in rows if r["provider"] == "detops"]
        fig, ax = plt.subplots(figsize=(8, 3.5))
        ax.bar(range(len(det)), [r["ratio_vs_stock"] for r in det])
        ax.set_xticks(range(len(det)), [f"{r['op'][6:]}\n{r['shape'].split(':')[1]}" for r in det], fontsize=7)
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.axhline(1.3, color="red", lw=0.8, ls="--", label="first bar 1.3")
        ax.set_ylabel("detops time / stock time")
        ax.set_title(f"Llama-shaped {shape_tag} bf16 on {env['gpu']} (eager; torch {env['torch']})", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        png = args.png or os.path.splitext(args.out)[0] + ".png"
        fig.savefig(png, dpi=110)
        print(f"wrote {png}")
    except ImportError:
        print("matplotlib missing: no PNG")
    return 0


if __name__ == "__main__":
    sys.exit(main())
