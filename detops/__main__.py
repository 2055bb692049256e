"""`python -m detops info | verify | demo | infer` (also the `detops` console script).

Bad arguments end with one line saying why (exit status 2), never a traceback.
"""
import argparse
import json
import os
import sys

from .testing.models import FAMILIES


class UsageError(Exception):
    """A reason to stop before running, printed as one line."""


def _version() -> str:
    from . import build_info
    return build_info()["version"]


def _check_device(device: str) -> None:
    import torch
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UsageError(f"--device {device!r} is not a device torch knows (use cpu or cuda)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available here (torch {torch.__version__}, "
                         f"built with CUDA {torch.version.cuda}); use --device cpu")
    if dev.type == "cuda":
        import detops
        if not detops.has_cuda_kernels():
            raise UsageError(f"--device {device}: this detops build has no CUDA kernels (it was built without "
                             "nvcc or with DETOPS_NO_CUDA=1); rebuild with `pip install --no-build-isolation -e .` "
                             "on a machine with nvcc")


def _check_transformers() -> None:
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise UsageError("this command needs Hugging Face transformers, which is not installed: "
                         "pip install 'transformers>=5.17'") from None


def _check_model_path(path: str) -> None:
    if not os.path.isdir(path):
        raise UsageError(f"--model {path!r}: no such directory (a local Hugging Face model directory, as written "
                         "by save_pretrained)")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise UsageError(f"--model {path!r}: no config.json there, so it is not a saved Hugging Face model")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="detops", description="Deterministic, batch-invariant LLM numerics.")
    parser.add_argument("--version", action="version", version=f"detops {_version()}")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", help="versions, numerics flags, CUDA kernels built or not")
    v = sub.add_parser("verify", help="invariance matrix of a model, stock vs detops; exit 1 on failure")
    src = v.add_mutually_exclusive_group()
    src.add_argument("--model", metavar="PATH", help="local Hugging Face model directory (from_pretrained)")
    src.add_argument("--family", default=None, choices=FAMILIES,
                     help="tiny random model of a family (default llama)")
    v.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    v.add_argument("--device", default="cpu")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--json", action="store_true", help="print the result as JSON")
    v.add_argument("--strict", action="store_true", help="also fail if the audit finds uncovered reductions")
    v.add_argument("--no-reference", action="store_true", help="skip the float64 deviation report")
    v.add_argument("--train", action="store_true",
                   help="add the training matrix: padded == packed AdamW steps, trainer == sampler log-probs")
    d = sub.add_parser("demo", help="the seed experiment on a tiny model: stock vs detops")
    d.add_argument("--family", default="llama", choices=FAMILIES)
    d.add_argument("--device", default="cpu")
    from .tools import infer
    infer.add_arguments(sub.add_parser("infer", help="generate for a prompt file; the same bytes for any workers "
                                                     "and batch size (detops.tools.infer)"))
    args = parser.parse_args(argv)
    try:
        if args.cmd == "info":
            import detops
            print(json.dumps(detops.info(), indent=2))
            return 0
        _check_transformers()
        _check_device(args.device)
        if args.cmd == "verify":
            import torch
            from .tools.verify import verify
            if args.model is not None:
                _check_model_path(args.model)
            result = verify(family=args.family, path=args.model, dtype=getattr(torch, args.dtype),
                            device=args.device, seed=args.seed, reference=not args.no_reference,
                            train=args.train)
            print(result.to_json() if args.json else result)
            return 0 if result.ok and (not args.strict or not result.not_covered) else 1
        if args.cmd == "infer":
            _check_model_path(args.model)
            if not os.path.isfile(args.data):
                raise UsageError(f"--data {args.data!r}: no such file")
            return infer.run(args)
        from .tools.demo import run
        return run(family=args.family, device=args.device)
    except UsageError as e:
        print(f"detops {args.cmd}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
