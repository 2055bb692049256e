"""Save or compare a fixed set of detops outputs, bit for bit: the check that a refactor changed no arithmetic.

    python scripts/golden_outputs.py save    golden.pt [--device cuda]
    python scripts/golden_outputs.py compare golden.pt [--device cuda]   # exit 1 on any difference

Every op in every dtype on shapes around the constants' thresholds (matmul M/K/N edges, attention key blocks,
tensor-core and CUDA-core head dims), plus the logits of a patched tiny model of every family (explicit
position ids, so the result does not depend on how positions are derived). Inputs are drawn on the CPU from
fixed seeds, so a file saved on one machine can be compared on another machine of the same kind.
"""
import argparse
import sys

import torch

import detops
from detops._lib import ops

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _randn(*shape, seed, dtype, device):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype=dtype, device=device)


def cases(device):
    """Yield (name, thunk) pairs; each thunk returns a tensor or a tuple of tensors."""
    for dt in DTYPES:
        n = str(dt).split(".")[-1]
        for (M, K, N) in ((1, 64, 48), (17, 33, 65), (129, 257, 127), (256, 4096, 256), (300, 512, 1024)):
            a = _randn(M, K, seed=M * 7 + K, dtype=dt, device=device)
            b = _randn(K, N, seed=K * 11 + N, dtype=dt, device=device)
            bias = _randn(N, seed=N, dtype=dt, device=device)
            yield f"mm/{n}/{M}x{K}x{N}", lambda a=a, b=b: detops.mm(a, b)
            yield f"mm_comp/{n}/{M}x{K}x{N}", lambda a=a, b=b: detops.mm(a, b, compensated=True)
            yield f"linear/{n}/{M}x{K}x{N}", lambda a=a, b=b, bias=bias: detops.linear(a, b.t(), bias)
            yield f"addmm/{n}/{M}x{K}x{N}", lambda a=a, b=b, bias=bias: detops.addmm(bias, a, b)
        yield f"bmm/{n}", lambda dt=dt: detops.bmm(_randn(3, 17, 40, seed=1, dtype=dt, device=device),
                                                   _randn(3, 40, 9, seed=2, dtype=dt, device=device))
        for width in (1, 16, 17, 255, 256, 257, 2049, 8192):
            x = _randn(5, width, seed=width, dtype=dt, device=device) * 3
            w = _randn(width, seed=width + 1, dtype=dt, device=device)
            r = _randn(5, width, seed=width + 2, dtype=dt, device=device)
            for mode in ("plain", "cast_first", "offset"):
                yield f"rms_norm/{n}/{width}/{mode}", \
                    lambda x=x, w=w, m=mode: detops.rms_norm(x, (x.shape[-1],), w, 1e-6, weight_mode=m)
            yield f"rms_norm_comp/{n}/{width}", lambda x=x: detops.rms_norm(x, (x.shape[-1],), compensated=True)
            yield f"add_rms_norm/{n}/{width}", lambda x=x, r=r, w=w: detops.add_rms_norm(x, r, (x.shape[-1],), w, 1e-6)
            yield f"softmax/{n}/{width}", lambda x=x: detops.softmax(x, -1)
            yield f"log_softmax/{n}/{width}", lambda x=x: detops.log_softmax(x, -1)
            yield f"softmax_comp/{n}/{width}", lambda x=x: detops.softmax(x, -1, compensated=True)
            g = _randn(5, width, seed=width + 3, dtype=dt, device=device)
            y = detops.softmax(x, -1)
            yield f"softmax_backward/{n}/{width}", lambda y=y, g=g: ops.softmax_backward(y, g, False, y.dtype)
            yield f"log_softmax_backward/{n}/{width}", \
                lambda x=x, g=g: ops.softmax_backward(detops.softmax(x, -1, dtype=torch.float32), g, True, x.dtype)
            yield f"rms_norm_backward/{n}/{width}", lambda x=x, g=g, w=w: ops.rms_norm_backward(
                x, g, w.float(), None, 1e-6, dt != torch.float32, False, True)
            yield f"row_dot/{n}/{width}", lambda x=x, g=g: ops.row_dot(x, g)
            t = torch.arange(5, device=device) * 7 % width
            t[2] = -100
            yield f"cross_entropy_nll/{n}/{width}", lambda x=x, t=t: ops.cross_entropy_nll(x, t, -100, False)
            yield f"cross_entropy_backward/{n}/{width}", lambda x=x, t=t, g=g: ops.cross_entropy_backward(
                x, t, g[:, 0].float(), -100, False)
        for D in (16, 64, 80, 128):
            for (Q, K) in ((1, 1), (1, 300), (70, 70), (257, 257), (5, 1100)):
                q = _randn(2, 4, Q, D, seed=Q + D, dtype=dt, device=device)
                k = _randn(2, 2, K, D, seed=K + D + 1, dtype=dt, device=device)
                v = _randn(2, 2, K, D, seed=K + D + 2, dtype=dt, device=device)
                causal = Q == K
                yield f"attention/{n}/D{D}/Q{Q}K{K}", lambda q=q, k=k, v=v, c=causal: \
                    detops.scaled_dot_product_attention(q, k, v, is_causal=c, enable_gqa=True)
                if Q == K and Q > 1:
                    pos = torch.arange(Q, device=device)[None].expand(2, Q)
                    yield f"attention_window_softcap/{n}/D{D}/Q{Q}", lambda q=q, k=k, v=v, pos=pos: \
                        detops.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True,
                                                            position_ids=pos, sliding_window=24, softcap=30.0)
    try:
        from detops.testing.models import FAMILIES, tiny_model
    except ImportError:
        return
    ids = torch.tensor([[5, 9, 17, 3, 44, 12, 7, 99, 23, 61, 8]])
    for family in FAMILIES:
        for dt in (torch.float32, torch.bfloat16):
            def logits(family=family, dt=dt):
                model = tiny_model(family, dtype=dt, device=device)
                with detops.patch(model):
                    with torch.no_grad():
                        return model(ids.to(device), position_ids=torch.arange(ids.shape[1], device=device)[None],
                                     use_cache=False).logits
            yield f"hf/{family}/{str(dt).split('.')[-1]}", logits


def run(device):
    out = {}
    for name, thunk in cases(device):
        try:
            r = thunk()
            out[name] = tuple(t.cpu() for t in r) if isinstance(r, tuple) else r.cpu()
        except Exception as e:  # recorded, so that a case that starts or stops failing shows up too
            out[name] = f"error: {type(e).__name__}: {e}".splitlines()[0]
    return out


_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def same(a, b):
    """Bitwise equality (NaN payloads and signed zeros included)."""
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if not isinstance(b, torch.Tensor) or a.dtype != b.dtype or a.shape != b.shape:
        return False
    bits = _INT[a.element_size()]
    return torch.equal(a.contiguous().view(bits), b.contiguous().view(bits))


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("action", choices=["save", "compare"])
    p.add_argument("file")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    now = run(args.device)
    if args.action == "save":
        torch.save(now, args.file)
        errors = sum(isinstance(v, str) for v in now.values())
        print(f"saved {len(now)} outputs ({errors} recorded errors) to {args.file}")
        return 0
    before = torch.load(args.file)
    # A case added since the file was saved cannot differ from it: listed, not counted. A case that disappeared is.
    added = sorted(set(now) - set(before))
    differ = [k for k in sorted(before) if k not in now or not same(before[k], now[k])]
    for k in differ:
        print(f"DIFFERS: {k}: before={before.get(k, 'missing') if isinstance(before.get(k), str) else 'tensor'} "
              f"now={now.get(k, 'missing') if isinstance(now.get(k), str) else 'tensor'}")
    if added:
        print(f"{len(added)} outputs new since the file was saved (not compared): {', '.join(added[:6])} ...")
    print(f"{len(before)} outputs compared, {len(differ)} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
