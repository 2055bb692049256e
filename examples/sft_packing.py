"""Padded vs packed supervised fine-tuning with Hugging Face `Trainer`: identical loss curves under detops.

A tiny Llama made from a config (byte-level vocabulary, random weights) is fine-tuned on the bundled text
(examples/data/corpus.txt, one document per line) four times, with the same data order and seed:
  - padded  (each document in its own row, right padding, labels -100 on pads),
  - packed  (`DataCollatorWithFlattening`: one row, position ids restarting per document),
once with stock transformers and once after `detops.patch(model)`. detops' padded and packed curves are
identical to the last bit; stock's differ. Runs on the CPU in about a minute (needs `accelerate`, which
`Trainer` requires; a PNG of the curves is written when matplotlib is installed).

If TRL is installed, the same comparison runs through `trl.SFTTrainer(packing=True)`: TRL bin-packs the
documents into rows (best-fit decreasing) and flattens each batch padding-free; the padded twin trains on the
very same packed rows, each split back into its documents and right-padded, so both see the same documents at
every step and only the layout differs.

    python examples/sft_packing.py [--steps 40] [--device cpu|cuda] [--png curves.png] [--no-trl]
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
    for i, f in enumerate(features):   # given labels (a completion-only mask, say) replace the copies
        if "labels" in f:
            labels[i, :len(f["labels"])] = torch.tensor(f["labels"])
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


def byte_tokenizer():
    """A tokenizer that knows only this example's ids (TRL asks for one to find the pad token; the data is
    already ids)."""
    import transformers as tf
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    vocab = {"<pad>": PAD, "<s>": BOS, "</s>": EOS, **{f"<0x{b:02X}>": b + 3 for b in range(256)}}
    return tf.PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="<pad>")),
                                      pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def unpacking_collator(features):
    """TRL's packed rows split back into their documents (`seq_lengths`), one right-padded row each, with TRL's
    labels (each document's first token -100, as TRL's padding-free collator sets it)."""
    docs = []
    for f in features:
        start = 0
        for n in f["seq_lengths"]:
            labels = list(f.get("labels", f["input_ids"])[start:start + n])
            docs.append({"input_ids": f["input_ids"][start:start + n], "labels": [-100] + labels[1:]})
            start += n
    return padded_collator(docs)


def train_trl(layout: str, patched: bool, steps: int, device: str) -> list:
    """The per-step losses of one `trl.SFTTrainer(packing=True)` run; `layout` "padded" unpacks each batch."""
    import datasets
    import trl
    sys.path.insert(0, os.path.dirname(HERE))
    import detops
    from detops.testing.models import tiny_model

    model = tiny_model("llama", vocab_size=259 + 1, device=device).train()
    handle = detops.patch(model) if patched else None
    data = datasets.Dataset.from_list([{"input_ids": d} for d in documents()])
    args = trl.SFTConfig(output_dir=os.path.join(HERE, ".runs", f"trl-{layout}-{patched}"), max_steps=steps,
                         packing=True, packing_strategy="bfd", max_length=256, per_device_train_batch_size=2,
                         learning_rate=3e-3, logging_steps=1, seed=0, report_to=[], save_strategy="no",
                         use_cpu=device == "cpu", disable_tqdm=False, remove_unused_columns=False)
    # TRL's default loss is its own fused LM head, outside detops (detops refuses it under gradients): the
    # patched runs give SFTTrainer detops' loss.
    class DetopsSFTTrainer(trl.SFTTrainer):
        compute_loss = detops.trainer_compute_loss

    trainer = (DetopsSFTTrainer if patched else trl.SFTTrainer)(
        model=model, args=args, train_dataset=data, processing_class=byte_tokenizer())
    if layout == "padded":  # TRL refuses a collator argument with packing; the packed rows are built by now
        trainer.data_collator = unpacking_collator
    trainer.train()
    if handle is not None:
        handle.undo()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def compare(title: str, curves: dict, steps: int) -> bool:
    """Prints the four curves side by side; True when detops' padded and packed curves are the same floats."""
    print(f"\n{title}\n{'step':>4}  {'stock padded':>14} {'stock packed':>14}  {'detops padded':>14} "
          f"{'detops packed':>14}")
    for i in range(steps):
        row = [curves[k][i] for k in (("padded", False), ("packed", False), ("padded", True), ("packed", True))]
        print(f"{i + 1:>4}  {row[0]:>14.10f} {row[1]:>14.10f}  {row[2]:>14.10f} {row[3]:>14.10f}")
    stock_same = curves[("padded", False)] == curves[("packed", False)]
    detops_same = curves[("padded", True)] == curves[("packed", True)]
    print(f"\n{title} stock:  padded == packed at every step: {stock_same}")
    print(f"{title} detops: padded == packed at every step: {detops_same}")
    return detops_same


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--device", default="cpu")
    p.add_argument("--png", default=None, help="write the curves here (needs matplotlib)")
    p.add_argument("--no-trl", action="store_true", help="skip the SFTTrainer runs even if TRL is installed")
    args = p.parse_args(argv)
    curves = {(layout, patched): train(layout, patched, args.steps, args.device)
              for patched in (False, True) for layout in ("padded", "packed")}
    same = compare("Trainer", curves, args.steps)
    runs = {"Trainer": curves}
    try:
        import trl  # noqa: F401
    except ImportError:
        trl = None
        print("(TRL is not installed: the SFTTrainer(packing=True) comparison is skipped)")
    if trl is not None and not args.no_trl:
        trl_curves = {(layout, patched): train_trl(layout, patched, args.steps, args.device)
                      for patched in (False, True) for layout in ("padded", "packed")}
        same = compare("SFTTrainer(packing=True)", trl_curves, args.steps) and same
        runs["SFTTrainer(packing=True)"] = trl_curves
    if args.png:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("matplotlib is not installed: no plot")
        else:
            fig, axes = plt.subplots(1, len(runs), figsize=(7 * len(runs), 4), squeeze=False)
            for ax, (title, run) in zip(axes[0], runs.items()):
                for (layout, patched), ys in run.items():
                    ax.plot(range(1, len(ys) + 1), ys, label=f"{'detops' if patched else 'stock'} {layout}",
                            linestyle="-" if patched else "--")
                ax.set_title(title)
                ax.set_xlabel("step")
                ax.set_ylabel("training loss")
                ax.legend()
            fig.savefig(args.png, dpi=120, bbox_inches="tight")
            print(f"wrote {args.png}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
