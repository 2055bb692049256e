"""One supervised fine-tuning step (forward, loss, backward, AdamW) of Llama-8B-shaped layers, bf16, CUDA:
detops (`detops.patch`) vs stock transformers (sdpa), padded and packed, in one run. The documents have drawn
lengths (64 .. 2048 tokens) and fill 4096 tokens; "padded" puts each in its own row, "packed" puts them in one
row with restarting position ids. Targets (issue "Training, part 2"): step time detops / stock <= 1.3 (goal
1.1). Tokens/s = real tokens / median step time; peak memory per provider is in the flags column.

    python benchmarks/bench_train.py --out benchmarks/results/train_h100.csv   [--quick: 1 layer]
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import detops  # noqa: E402
from detops.testing.models import train_batch  # noqa: E402
from harness import Case, bench_main, document_lengths  # noqa: E402

TOKENS = 4096


def _docs(vocab):
    g = torch.Generator().manual_seed(0)
    return [torch.randint(3, vocab, (n,), generator=g).tolist() for n in document_lengths(TOKENS, g)]


def _model(layers):
    import transformers as tf
    config = tf.LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=layers,
                            num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=128256,
                            max_position_embeddings=8192, tie_word_embeddings=False)
    torch.manual_seed(0)
    return tf.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa",
                                               dtype=torch.bfloat16).cuda().train()


def _step_fn(model, batch):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step():
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def _peak_gib(fn):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2 ** 30


def cases(args):
    layers = 1 if args.quick else 2
    docs = _docs(128256)
    for layout in ("padded", "packed"):
        batch = {k: v.cuda() for k, v in train_batch(docs, "right" if layout == "padded" else "packed").items()}
        stock_model = _model(layers)
        det_model = _model(layers)
        handle = detops.patch(det_model)
        providers = {"stock": _step_fn(stock_model, batch), "detops": _step_fn(det_model, batch)}
        peaks = {name: _peak_gib(fn) for name, fn in providers.items()}
        flags = f"layout={layout};documents={len(docs)};layers={layers};" + \
            ";".join(f"peak_gib_{k}={v:.1f}" for k, v in peaks.items())
        yield Case("train_step", (layers, int(batch["input_ids"].numel()), TOKENS), "bf16", providers, stock="stock",
                   flags=flags, graph=False)
        handle.undo()
        del stock_model, det_model, providers
        torch.cuda.empty_cache()


if __name__ == "__main__":
    bench_main(cases, "train")
