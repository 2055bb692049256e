"""`python -m detops info | verify | demo`."""
import argparse
import json
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="detops")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", help="version, numerics flags, CUDA kernels built or not")
    v = sub.add_parser("verify", help="invariance matrix of a model, stock vs detops; exit 1 on failure")
    src = v.add_mutually_exclusive_group()
    src.add_argument("--model", metavar="PATH", help="local Hugging Face model directory (from_pretrained)")
    src.add_argument("--family", default=None,
                     help="tiny random model of a family: llama qwen2 qwen3 mistral gemma gemma2 gemma3 (default llama)")
    v.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    v.add_argument("--device", default="cpu")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--json", action="store_true", help="print the result as JSON")
    v.add_argument("--strict", action="store_true", help="also fail if the audit finds uncovered reductions")
    v.add_argument("--no-reference", action="store_true", help="skip the float64 deviation report")
    d = sub.add_parser("demo", help="the seed experiment on a tiny model: stock vs detops")
    d.add_argument("--family", default="llama")
    d.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.cmd == "info":
        import detops
        print(json.dumps(detops.info(), indent=2))
        return 0
    if args.cmd == "verify":
        import torch
        from .verify import verify
        result = verify(family=args.family, path=args.model, dtype=getattr(torch, args.dtype), device=args.device,
                        seed=args.seed, reference=not args.no_reference)
        print(result.to_json() if args.json else result)
        return 0 if result.ok and (not args.strict or not result.not_covered) else 1
    if args.cmd == "demo":
        from .demo import run
        return run(family=args.family, device=args.device)
    return 2


if __name__ == "__main__":
    sys.exit(main())
