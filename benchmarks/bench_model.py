"""Model-level benchmark (docs/CONTRACT.md: the model-level bar): a Llama-8B-shaped HF model with random weights,
bf16, stock (sdpa attention, cuBLAS) vs detops.patch, eager, same model object, interleaved.

Workloads: prefill 8 x 2048 (one forward with a fresh DynamicCache, logits of the last position as generate()
computes them) and greedy decode of 128 tokens (generate(), prompt 128 tokens) at batch 1 / 16 / 64; the
decode time per token excludes the prefill (generate(128) - prefill of the same batch, / 127).
CSV rows in benchmarks/harness.py's schema (op, provider, shape, dtype, median_us, tflops, gbps,
ratio_vs_stock, gpu, torch, commit, flags; ratio_vs_stock = stock time / detops time, > 1: detops faster), plus
a PNG of the ratios (harness.plot: a bar chart, the shapes being labels). Timing: harness.time_eager (CUDA events
around each whole forward / generate(), no L2 flush; wall time on the CPU).

  python benchmarks/bench_model.py --reps 3 --out benchmarks/results/model_h100.csv   # 32 layers (~16 GB weights)
  python benchmarks/bench_model.py --layers 4 --static --decode-batches 1,16 \
      --out benchmarks/results/model_4layer_static_h100.csv
  python benchmarks/bench_model.py --layers 2 --reps 3    # a quick check
  python benchmarks/bench_model.py --device cpu --layers 1 --hidden 256 --quick   # a smoke test without a GPU
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


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
    with torch.no_grad():  # random weights, never zeros (docs/CONTRACT.md: never time on zeros)
        for p in model.parameters():
            p.normal_(0.0, 0.02 if p.dim() > 1 else 1.0)
            if p.dim() == 1:
                p.add_(1.0)
    model.generation_config.pad_token_id = 0
    return model.eval()


def timed(fn, device, reps, warmup):
    """Median seconds of fn() (each call a whole forward / generate()), harness timing without L2 flush."""
    return harness.time_eager(fn, reps, warmup, flush=False, device=device) * 1e-6


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
    p.add_argument("--out", default=None, help="CSV path (default: benchmarks/results/model_<gpu>.csv)")
    p.add_argument("--png", default=None)
    args = p.parse_args(argv)
    if args.intermediate is None:
        args.intermediate = args.hidden * 7 // 2
    if args.quick:
        args.prefill, args.decode_batches, args.new_tokens, args.prompt = "2x128", "1,4", 16, 32

    import detops
    dev = args.device
    model = build_model(args)
    env = harness.environment(dev)
    args.out = args.out or harness.default_out("model", dev)
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
        rows.append(harness.make_row(
            env, f"model_{op}", prov if prov == "detops" else "stock(sdpa)", f"{shape_tag}:{shape}", "bf16", s * 1e6,
            stock[(op, shape)] * 1e6, flags=[f"timing={'static_cache+cuda_graphs' if args.static else 'eager'}",
                                             f"tokens={toks}", f"tok_per_s={toks / s:.1f}"]))
    harness.write_csv(rows, args.out)
    print(f"wrote {args.out}")
    for r in rows:
        if r["provider"] == "detops":
            print(f"RATIO {r['op']:<20} {r['shape']:<28} ratio_vs_stock (stock / detops) = {r['ratio_vs_stock']}")
    try:
        harness.plot(rows, args.png or os.path.splitext(args.out)[0] + ".png",
                     title=f"Llama-shaped {shape_tag} bf16 on {env['gpu']} "
                           f"({'static cache + CUDA graphs' if args.static else 'eager'}; torch {env['torch']})")
    except ImportError:
        print("matplotlib missing: no PNG")
    return 0


if __name__ == "__main__":
    sys.exit(main())
