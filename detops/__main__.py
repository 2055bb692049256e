"""`python -m detops info` (build facts). Other commands are added by their features."""
import argparse
import json
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="detops")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", help="version, numerics flags, CUDA kernels built or not")
    args = parser.parse_args(argv)
    if args.cmd == "info":
        import detops
        print(json.dumps(detops.info(), indent=2))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
