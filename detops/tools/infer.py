"""`python -m detops infer`: batch generation over a prompt file with one result however the work is spread.

    python -m detops infer --model DIR --data prompts.jsonl --out results.jsonl --workers N --batch-size B \
        --max-new-tokens T [--dtype bfloat16] [--device cpu|cuda] [--do-sample --seed S --temperature 0.7 ...]

Input lines: {"id": ..., "input_ids": [...]} or {"id": ..., "prompt": "text"} (tokenized with the model
directory's tokenizer). Output lines, sorted by id: {"id": ..., "tokens": [...], "logprobs": [...]} (+ "text"
with a tokenizer); a logprob is the log-probability of the chosen token under the model's distribution
(temperature 1), as a JSON float (exact round trip).

Why the file is byte-identical for any number of workers, any batch size and any completion order, and equal
to one process at batch size 1 (docs/CONTRACT.md L1, L2, L4): every worker runs a `detops.patch`-ed model, so a
prompt's logits at every step do not depend on its batch-mates, its padding (left, as generate() pads) or the
KV cache; sampling draws from a generator seeded per prompt (seed, id), never from a per-worker stream; the
parent writes the results sorted by id.

Workers are processes (torch.multiprocessing, spawn): worker w takes the prompts w, w + N, ... of the work list
and on CUDA uses device w mod the device count. Each worker appends its finished batches to its own part file,
flushed per batch, so nothing finished is lost when a worker dies; the parent then merges what exists into
--out and exits non-zero, and `--resume` completes the rest (it skips ids already in --out). A malformed input
line is reported with its line number and skipped; the run completes and exits with status 3.
"""
import argparse
import hashlib
import json
import os
import sys
import time

EXIT_MALFORMED = 3   # the run completed but some input lines were skipped
EXIT_WORKER_DIED = 4  # some prompts have no result: rerun with --resume


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="DIR", help="saved Hugging Face model directory")
    p.add_argument("--data", required=True, metavar="JSONL", help="prompts: {id, input_ids} or {id, prompt} lines")
    p.add_argument("--out", required=True, metavar="JSONL", help="results, one line per id, sorted by id")
    p.add_argument("--workers", type=int, default=1, help="worker processes (one per GPU on CUDA)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--do-sample", action="store_true", help="sample (default: greedy)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed; each prompt draws from (seed, id)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0: all)")
    p.add_argument("--resume", action="store_true", help="skip ids already in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--tp", type=int, default=0, metavar="N",
                   help="tensor parallelism over N processes started by torchrun (--nproc-per-node N); the "
                        "results equal every other --tp size, 1 included (detops.distributed, §9)")
    p.add_argument("--stock", action="store_true",
                   help="run the model unpatched (stock kernels), to see what detops changes")


# ---- input ---------------------------------------------------------------------------------------------------
def _id_key(i):
    """Sort key for ids of mixed types: integers by value, then strings."""
    return (0, i, "") if isinstance(i, int) else (1, 0, str(i))


def read_prompts(path, tokenizer):
    """(items, problems): items = [(id, [token ids])] in file order; problems = ["line N: reason"]."""
    items, problems, seen = [], [], set()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"line {n}: not JSON ({e.msg})")
                continue
            if not isinstance(rec, dict) or "id" not in rec:
                problems.append(f"line {n}: needs an object with an \"id\"")
                continue
            pid = rec["id"]
            if isinstance(pid, bool) or not isinstance(pid, (int, str)):
                problems.append(f"line {n}: id must be an integer or a string, got {pid!r}")
                continue
            if pid in seen:
                problems.append(f"line {n}: id {pid!r} appears twice")
                continue
            ids = rec.get("input_ids")
            if ids is None and "prompt" in rec:
                if tokenizer is None:
                    problems.append(f"line {n}: a \"prompt\" needs a tokenizer in the model directory")
                    continue
                ids = tokenizer(rec["prompt"])["input_ids"]
            if not isinstance(ids, list) or not ids or not all(isinstance(t, int) and not isinstance(t, bool)
                                                               and t >= 0 for t in ids):
                problems.append(f"line {n}: needs a non-empty \"input_ids\" list of token ids or a \"prompt\"")
                continue
            seen.add(pid)
            items.append((pid, ids))
    return items, problems


def read_results(path):
    """id -> output line (str, without newline) of an existing results file; unreadable lines are dropped."""
    done = {}
    if not os.path.exists(path):
        return done
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash: recomputed
            if isinstance(rec, dict) and "id" in rec and "tokens" in rec:
                done[rec["id"]] = line.rstrip("\n")
    return done


# ---- generation ----------------------------------------------------------------------------------------------
def prompt_seed(seed: int, pid) -> int:
    """A 63-bit seed of (seed, id): the same for a prompt whichever worker or batch takes it."""
    digest = hashlib.sha256(json.dumps([seed, pid]).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generate(model, batch, args, eos_ids, pad_id):
    """Left-padded batch decode with a KV cache: per prompt, its new tokens and their log-probabilities.

    The step's logits come from the patched model (invariant to the batch); the choice per row: greedy argmax,
    or a draw from the row's own generator over detops.softmax(logits / temperature) (top-k first)."""
    import torch
    import detops
    from ..testing.models import cache_argument
    from transformers import DynamicCache
    device = next(model.parameters()).device
    L = max(len(ids) for _, ids in batch)
    input_ids = torch.full((len(batch), L), pad_id, dtype=torch.long)
    mask = torch.zeros(len(batch), L, dtype=torch.long)
    for r, (_, ids) in enumerate(batch):
        input_ids[r, L - len(ids):] = torch.tensor(ids)
        mask[r, L - len(ids):] = 1
    gens = [torch.Generator().manual_seed(prompt_seed(args.seed, pid)) for pid, _ in batch]
    tokens = [[] for _ in batch]
    logprobs = [[] for _ in batch]
    done = [False] * len(batch)
    cache = DynamicCache(config=model.config)
    step_ids, mask = input_ids.to(device), mask.to(device)
    with torch.inference_mode():
        for _ in range(args.max_new_tokens):
            logits = model(input_ids=step_ids, attention_mask=mask, **{cache_argument(model): cache},
                           use_cache=True).logits[:, -1].float()
            logp = detops.log_softmax(logits, -1)
            chosen = []
            for r in range(len(batch)):
                if done[r]:
                    chosen.append(pad_id)
                    continue
                if args.do_sample:
                    z = logits[r] / args.temperature
                    if args.top_k:
                        kth = torch.topk(z, min(args.top_k, z.numel())).values[-1]
                        z = z.masked_fill(z < kth, float("-inf"))
                    probs = detops.softmax(z[None], -1)[0].cpu()
                    t = int(torch.multinomial(probs, 1, generator=gens[r]))
                else:
                    t = int(logits[r].argmax())
                tokens[r].append(t)
                logprobs[r].append(float(logp[r, t]))
                done[r] = t in eos_ids
                chosen.append(t)
            if all(done):
                break
            step_ids = torch.tensor(chosen, device=device)[:, None]
            mask = torch.cat([mask, mask.new_ones(len(batch), 1)], dim=1)
    return tokens, logprobs


def result_line(pid, tokens, logprobs, tokenizer) -> str:
    rec = {"id": pid, "tokens": tokens, "logprobs": logprobs}
    if tokenizer is not None:
        rec["text"] = tokenizer.decode(tokens, skip_special_tokens=True)
    return json.dumps(rec, ensure_ascii=False)


def load(model_dir, dtype, device, stock=False, tp_group=False):
    """The model, patched (unless stock); tp_group: shard it for tensor parallelism over that group (None: the
    TP order in one process; False: no tensor parallelism)."""
    import torch
    import transformers as tf
    import detops
    tf.utils.logging.disable_progress_bar()
    model = tf.AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype), local_files_only=True)
    model = model.to(device).eval().requires_grad_(False)
    if not stock:
        detops.patch(model, strict=True)
    if tp_group is not False:
        from ..distributed import shard
        shard(model, tp_group)
    return model


def _special_ids(model):
    cfg = model.generation_config
    eos = cfg.eos_token_id if cfg.eos_token_id is not None else model.config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    pad_id = cfg.pad_token_id if cfg.pad_token_id is not None else (min(eos_ids) if eos_ids else 0)
    return eos_ids, pad_id


def load_tokenizer(model_dir):
    import transformers as tf
    try:
        return tf.AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError, TypeError):
        return None


def _worker(rank, args, work, part_path, progress):
    import torch
    import detops  # noqa: F401  (the worker's own process: loads the extension and registers the ops)
    if args.device == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.workers))
        device = "cpu"
    else:
        device = f"cuda:{rank % torch.cuda.device_count()}"
    model = load(args.model, args.dtype, device, args.stock)
    tokenizer = load_tokenizer(args.model)
    eos_ids, pad_id = _special_ids(model)
    mine = work[rank::args.workers]
    with open(part_path, "a", encoding="utf-8") as part:
        for i in range(0, len(mine), args.batch_size):
            batch = mine[i:i + args.batch_size]
            tokens, logprobs = generate(model, batch, args, eos_ids, pad_id)
            for (pid, _), t, lp in zip(batch, tokens, logprobs):
                part.write(result_line(pid, t, lp, tokenizer) + "\n")
            part.flush()
            os.fsync(part.fileno())
            progress.put((len(batch), sum(len(t) for t in tokens)))
            if os.environ.get("DETOPS_INFER_TEST_CRASH") == f"{rank}:{i // args.batch_size + 1}":
                os._exit(13)  # tests: this worker dies after that many batches (tests/test_infer.py)


def run(args) -> int:
    import torch
    import torch.multiprocessing as mp
    if args.tp:
        return run_tp(args)
    if args.workers < 1 or args.batch_size < 1 or args.max_new_tokens < 1:
        print("detops infer: --workers, --batch-size and --max-new-tokens must be >= 1", file=sys.stderr)
        return 2
    if args.device == "cuda" and args.workers > max(1, torch.cuda.device_count()):
        print(f"detops infer: --workers {args.workers} > {torch.cuda.device_count()} CUDA devices (one worker per GPU)",
              file=sys.stderr)
        return 2
    tokenizer = load_tokenizer(args.model)
    items, problems = read_prompts(args.data, tokenizer)
    for p in problems:
        print(f"detops infer: {args.data}: {p} (skipped)", file=sys.stderr)
    done = read_results(args.out) if args.resume else {}
    parts = [f"{args.out}.part{w}" for w in range(args.workers)]
    for part in parts:  # a previous run's parts hold finished results too (a crash before the merge)
        if args.resume:
            done.update(read_results(part))
        if os.path.exists(part):
            os.remove(part)
    if args.resume:  # keep what is finished safe in --out before new work starts
        _write_sorted(args.out, done)
    work = [it for it in items if it[0] not in done]
    work.sort(key=lambda it: _id_key(it[0]))
    ok = True
    if work:
        ctx = mp.get_context("spawn")
        progress = ctx.Queue()
        procs = [ctx.Process(target=_worker, args=(w, args, work, parts[w], progress)) for w in range(args.workers)]
        for p in procs:
            p.start()
        ok = _follow(procs, progress, len(work), args.no_progress)
        for part in parts:
            done.update(read_results(part))
    _write_sorted(args.out, done)
    for part in parts:
        if os.path.exists(part):
            os.remove(part)
    missing = [pid for pid, _ in items if pid not in done]
    if not ok or missing:
        print(f"detops infer: {len(missing)} prompt(s) have no result (a worker died); the finished ones are in "
              f"{args.out}: rerun with --resume to complete", file=sys.stderr)
        return EXIT_WORKER_DIED
    if problems:
        print(f"detops infer: done, but {len(problems)} input line(s) were skipped", file=sys.stderr)
        return EXIT_MALFORMED
    return 0


def _follow(procs, progress, total, quiet) -> bool:
    """Progress bar (prompts, tokens/s) until every worker has exited; False if one failed."""
    import queue
    from tqdm import tqdm
    bar = tqdm(total=total, unit="prompt", disable=quiet, file=sys.stderr)
    start, new_tokens = time.time(), 0
    while any(p.is_alive() for p in procs) or not progress.empty():
        try:
            n, t = progress.get(timeout=0.2)
        except queue.Empty:
            continue
        new_tokens += t
        bar.update(n)
        bar.set_postfix_str(f"{new_tokens / max(time.time() - start, 1e-9):.1f} tok/s")
    bar.close()
    for p in procs:
        p.join()
    return all(p.exitcode == 0 for p in procs)


def _write_sorted(path, lines_by_id) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for pid in sorted(lines_by_id, key=_id_key):
            f.write(lines_by_id[pid] + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def run_tp(args) -> int:
    """--tp N: this process is one rank of N (torchrun sets RANK / WORLD_SIZE / LOCAL_RANK); every rank runs
    every batch on its shards, rank 0 writes the results (part file flushed per batch, then sorted)."""
    import torch
    import torch.distributed as dist
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != args.tp:
        print(f"detops infer: --tp {args.tp} needs {args.tp} processes, this run has {world}: start it with "
              f"torchrun --nproc-per-node {args.tp} -m detops infer --tp {args.tp} ...", file=sys.stderr)
        return 2
    if args.workers != 1:
        print("detops infer: --tp and --workers > 1 do not combine (one model is spread over the TP ranks)",
              file=sys.stderr)
        return 2
    rank = int(os.environ.get("RANK", "0"))
    device = "cpu"
    if args.device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    group = None
    if world > 1:
        dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
        group = dist.group.WORLD
    try:
        try:
            model = load(args.model, args.dtype, device, tp_group=group)
        except ValueError as e:  # the model cannot be sharded this way: one line, before any work
            if rank == 0:
                print(f"detops infer: {e}", file=sys.stderr)
            if group is not None:
                dist.destroy_process_group()
            return 2
        tokenizer = load_tokenizer(args.model)
        eos_ids, pad_id = _special_ids(model)
        items, problems = read_prompts(args.data, tokenizer)
        done = read_results(args.out) if args.resume else {}
        part_path = f"{args.out}.part0"
        if args.resume:
            done.update(read_results(part_path))
        work = sorted((it for it in items if it[0] not in done), key=lambda it: _id_key(it[0]))
        if rank == 0:
            for p in problems:
                print(f"detops infer: {args.data}: {p} (skipped)", file=sys.stderr)
            if args.resume:
                _write_sorted(args.out, done)
            if os.path.exists(part_path):
                os.remove(part_path)
        from tqdm import tqdm
        bar = tqdm(total=len(work), unit="prompt", disable=args.no_progress or rank != 0, file=sys.stderr)
        with open(part_path, "a", encoding="utf-8") if rank == 0 else _Null() as part:
            for i in range(0, len(work), args.batch_size):
                batch = work[i:i + args.batch_size]
                tokens, logprobs = generate(model, batch, args, eos_ids, pad_id)
                lines = [result_line(pid, t, lp, tokenizer) for (pid, _), t, lp in zip(batch, tokens, logprobs)]
                if rank == 0:
                    part.write("".join(line + "\n" for line in lines))
                    part.flush()
                    os.fsync(part.fileno())
                    done.update((pid, line) for (pid, _), line in zip(batch, lines))
                bar.update(len(batch))
        bar.close()
        if rank == 0:
            _write_sorted(args.out, done)
            os.remove(part_path)
        if group is not None:
            dist.barrier()   # every rank leaves together, after rank 0 has written everything
    except BaseException:
        if group is not None:
            dist.destroy_process_group()
        raise
    code = 0
    if problems:
        if rank == 0:
            print(f"detops infer: done, but {len(problems)} input line(s) were skipped", file=sys.stderr)
        code = EXIT_MALFORMED
    if group is not None:
        # Done: the rank process ends here without tearing the process group down. gloo's teardown aborts now
        # and then ("terminate called without an active exception") after all the work is written, which
        # would turn a finished run into a failed one; the operating system closes the sockets.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
