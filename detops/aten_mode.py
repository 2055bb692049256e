"""The aten mode: route torch's own matmul and softmax kernels to detops while it is on.

While enabled, these aten operators run detops kernels on CPU and CUDA tensors (everything a Hugging Face
model reaches from `nn.Linear`, eager attention's `matmul`, `F.softmax`/`F.log_softmax`, RoPE's fp32
`inv_freq @ position_ids`):

    aten::mm, aten::bmm                 -> detops.mm / detops.bmm        (REDUCTION_ORDER.md §5)
    aten::addmm                         -> detops.addmm                  (bias (N,), beta = alpha = 1)
    aten::_softmax, aten::_log_softmax  -> detops.softmax / log_softmax  (§4)
    CPU only: aten::exp, sin, cos, tanh, sigmoid, silu, gelu (+ in-place forms)
                                        -> detops::elementwise           (§8: one element at a time; torch's
                                           SIMD body and scalar tail give different bits, so a token's SiLU
                                           or RoPE cos/sin would depend on its place in the batch)

Mechanism: a `torch.library.Library("aten", "IMPL")` registration on the CPU and CUDA dispatch keys, created
when the mode turns on and destroyed when it turns off (the dispatcher then restores torch's own kernel).
The detops kernels never call these aten operators, so there is no recursion. The registration is
process-wide (every thread sees it) and is not seen inside `torch.compile`d graphs (Inductor lowers matmuls
itself); `detops.patch` covers compiled models by binding detops custom ops on the modules instead.

Never a silent fallback: floating dtypes detops has no kernel for (float64, complex) raise. Integer
operands (torch's CPU integer matmul) are computed by an exact product-and-sum: integer addition is
associative (wrapping), so any order gives the same bits — that is the only case that does not run a
detops kernel, and it is exact. Reductions that are not listed above (sum, mean, ...) are not changed; the
coverage audit (`detops.audit`) lists them.

Backward of the elementwise functions (training through `detops.patch`): torch's CPU kernels for
`silu_backward`, `gelu_backward`, `tanh_backward`, `sigmoid_backward` have the same SIMD-body / scalar-tail
difference. While a patched model exists, `enable_backward()` routes them on CPU tensors to a per-element
evaluation (fp32, detops::elementwise for sigmoid / tanh, then `+ - *` each rounded), outside the forward-only
mode because autograd runs them after the forward has returned.

Use: `with detops.mode(): ...` (nestable, restores on exceptions), or `detops.enable()` / `detops.disable()`
(counted: each enable needs one disable). `detops.mode(False)` turns the mode off inside an enabled region.
"""
import contextlib
import math
import threading

import torch

from . import ops as _ops

__all__ = ["enable", "disable", "mode", "is_enabled", "routed_count", "ROUTED_OPS", "enable_backward",
           "disable_backward"]

# aten operator name -> what runs instead (for reports and the audit).
ROUTED_OPS = {
    "mm": "detops.mm",
    "addmm": "detops.addmm",
    "bmm": "detops.bmm",
    "_softmax": "detops.softmax",
    "_log_softmax": "detops.log_softmax",
}
# CPU only (REDUCTION_ORDER.md §8): torch's CUDA elementwise kernels already evaluate every element alike.
ELEMENTWISE_OPS = ("exp", "sin", "cos", "tanh", "sigmoid", "silu", "gelu")
ROUTED_OPS.update({name: "detops.elementwise (CPU)" for name in ELEMENTWISE_OPS})
_KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_DISPATCH_KEYS = ("CPU", "CUDA")

_lock = threading.RLock()
_depth = 0           # how many enable() calls are open
_library = None      # the live torch.library.Library while _depth > 0
_routed = threading.local()  # per-thread count of calls served by the overrides (read by the audit)


def routed_count() -> int:
    """How many aten calls the mode has served on this thread (the audit diffs it around each op)."""
    return getattr(_routed, "n", 0)


def _served():
    _routed.n = getattr(_routed, "n", 0) + 1


def _unsupported(op: str, *tensors):
    dtypes = ", ".join(str(t.dtype) for t in tensors)
    raise NotImplementedError(
        f"detops mode: aten::{op} with dtypes ({dtypes}) has no detops kernel (detops covers float32, bfloat16 "
        f"and float16); it is refused rather than run by torch's own order-dependent kernel. Leave the detops "
        f"mode (detops.mode(False)) for this computation.")


def _is_exact_integer(*tensors) -> bool:
    return all(not t.is_floating_point() and not t.is_complex() for t in tensors)


def _integer_mm(a, b):
    # Exact in any order (integer addition wraps and is associative): (M, K, 1) * (1, K, N) summed over K.
    # Not aten::mm, so no recursion into this override.
    return (a.unsqueeze(-1) * b.unsqueeze(-3)).sum(-2, dtype=torch.promote_types(a.dtype, b.dtype))


def _product_override(name, kernel):
    """aten::mm / aten::bmm: integers exactly, float32/bf16/fp16 by the detops kernel, anything else refused."""
    def override(a, b):
        if _is_exact_integer(a, b):
            _served()
            return _integer_mm(a, b)
        if a.dtype not in _KERNEL_DTYPES or b.dtype not in _KERNEL_DTYPES:
            _unsupported(name, a, b)
        _served()
        return kernel(a, b)
    return override


_mm = _product_override("mm", _ops.mm)
_bmm = _product_override("bmm", _ops.bmm)


def _addmm(bias, a, b, *, beta=1, alpha=1):
    if _is_exact_integer(bias, a, b):
        _served()
        return bias * beta + _integer_mm(a, b) * alpha
    if a.dtype not in _KERNEL_DTYPES or b.dtype not in _KERNEL_DTYPES or bias.dtype not in _KERNEL_DTYPES:
        _unsupported("addmm", bias, a, b)
    _served()
    n = b.shape[-1]
    if beta == 1 and alpha == 1 and bias.dtype == a.dtype and bias.numel() == n and bias.dim() in (1, 2) \
            and (bias.dim() == 1 or bias.shape[0] == 1):
        return _ops.addmm(bias.reshape(n), a, b)  # nn.Linear's case: one fused rounding, REDUCTION_ORDER.md §5
    # Other broadcasts / scalings: the detops product, then torch's elementwise epilogue (no reduction, so
    # row-invariant; rounded twice instead of once).
    out = _ops.mm(a, b)
    if alpha != 1:
        out = out * alpha
    return out + bias * beta if beta != 0 else out


def _softmax(x, dim, half_to_float):
    if x.dtype not in _KERNEL_DTYPES:
        _unsupported("_softmax", x)
    _served()
    return _ops.softmax(x, dim, torch.float32 if half_to_float else None)


def _log_softmax(x, dim, half_to_float):
    if x.dtype not in _KERNEL_DTYPES:
        _unsupported("_log_softmax", x)
    _served()
    return _ops.log_softmax(x, dim, torch.float32 if half_to_float else None)


def _elementwise(fn, x):
    if x.is_complex() or (x.is_floating_point() and x.dtype not in _KERNEL_DTYPES + (torch.float64,)):
        _unsupported(fn, x)
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())  # torch's type promotion for these functions of integers
    _served()
    return _ops.elementwise(x, fn)


def _elementwise_override(name):
    def functional(x):
        return _elementwise(name, x)

    def in_place(x):
        return x.copy_(_elementwise(name, x))
    return functional, in_place


def _gelu(x, *, approximate="none"):
    return _elementwise("gelu_tanh" if approximate == "tanh" else "gelu", x)


def _gelu_(x, *, approximate="none"):
    return x.copy_(_gelu(x, approximate=approximate))


_CPU_OVERRIDES = {"gelu": _gelu, "gelu_": _gelu_}
for _name in ELEMENTWISE_OPS:
    if _name != "gelu":
        _CPU_OVERRIDES[_name], _CPU_OVERRIDES[_name + "_"] = _elementwise_override(_name)

_OVERRIDES = {"mm": _mm, "addmm": _addmm, "bmm": _bmm, "_softmax": _softmax, "_log_softmax": _log_softmax}


def _register():
    lib = torch.library.Library("aten", "IMPL")
    try:
        for key in _DISPATCH_KEYS:
            for name, fn in _OVERRIDES.items():
                lib.impl(name, fn, key)
        for name, fn in _CPU_OVERRIDES.items():
            lib.impl(name, fn, "CPU")
    except BaseException:
        lib._destroy()
        raise
    return lib


def enable() -> None:
    """Turn the aten mode on (counted: nested enables need as many disables)."""
    global _depth, _library
    with _lock:
        if _depth == 0:
            import warnings
            with warnings.catch_warnings():
                # torch warns once that we override its kernels; that is the point of the mode.
                warnings.simplefilter("ignore")
                _library = _register()
        _depth += 1


def disable() -> None:
    """Close one enable(); the mode turns off (torch's kernels restored) when the last one closes."""
    global _depth, _library
    with _lock:
        if _depth == 0:
            raise RuntimeError("detops.disable() without a matching detops.enable()")
        _depth -= 1
        if _depth == 0:
            lib, _library = _library, None
            # Library._destroy deregisters our kernels so the dispatcher serves torch's again. (Private
            # torch API, used by torch.library._scoped_library; dropping the last reference does the same
            # through a finalizer, but not at a moment we control.)
            lib._destroy()


def is_enabled() -> bool:
    return _depth > 0


@contextlib.contextmanager
def mode(enabled: bool = True):
    """`with detops.mode():` routes aten matmul/softmax to detops inside the block; nests; restores the previous
    state on exit, exceptions included. `detops.mode(False)` suspends an enabled mode inside the block."""
    global _depth, _library
    if enabled:
        enable()
        try:
            yield
        finally:
            disable()
        return
    with _lock:
        saved = _depth
        if saved:
            lib, _library, _depth = _library, None, 0
            lib._destroy()
    try:
        yield
    finally:
        with _lock:
            if saved:
                if _depth != 0:
                    raise RuntimeError("detops.mode(False): unbalanced enable() inside the suspended block")
                _library = _register()
                _depth = saved


# ---------------------------------------------------------------- elementwise backward on the CPU (training)

_backward_depth = 0
_backward_library = None


def _float(t):
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def _silu_backward(grad, x):
    g, xf = _float(grad), _float(x)
    s = _ops.elementwise(xf.contiguous(), "sigmoid")
    return (g * (s * (1.0 + xf * (1.0 - s)))).to(x.dtype)


_GELU_BETA = math.sqrt(2.0) * (2.0 / math.sqrt(math.pi)) * 0.5   # M_SQRT2 * M_2_SQRTPI * 0.5 = sqrt(2/pi), as torch
_GELU_KAPPA = 0.044715


def _gelu_backward(grad, x, *, approximate="none"):
    g, xf = _float(grad), _float(x)
    if approximate != "tanh":
        # d/dx x·Φ(x) = Φ(x) + x·φ(x); Φ(x) = gelu(x) / x (0.5 at 0) from the per-element gelu, φ from exp.
        cdf = torch.where(xf == 0, 0.5, _ops.elementwise(xf.contiguous(), "gelu") / xf)
        pdf = _ops.elementwise((-0.5 * (xf * xf)).contiguous(), "exp") * (1.0 / math.sqrt(2.0 * math.pi))
        return (g * (cdf + xf * pdf)).to(x.dtype)
    x2 = xf * xf
    inner = _GELU_BETA * (xf + _GELU_KAPPA * (x2 * xf))
    t = _ops.elementwise(inner.contiguous(), "tanh")
    left = 0.5 * xf
    right_derivative = left * (1.0 - t * t) * (_GELU_BETA * (1.0 + 3.0 * _GELU_KAPPA * x2))
    return (g * (0.5 * (1.0 + t) + right_derivative)).to(x.dtype)


def _tanh_backward(grad, output):
    g, y = _float(grad), _float(output)
    return (g * (1.0 - y * y)).to(output.dtype)


def _sigmoid_backward(grad, output):
    g, y = _float(grad), _float(output)
    return (g * ((1.0 - y) * y)).to(output.dtype)


_BACKWARD_OVERRIDES = {"silu_backward": _silu_backward, "gelu_backward": _gelu_backward,
                       "tanh_backward": _tanh_backward, "sigmoid_backward": _sigmoid_backward}


def enable_backward() -> None:
    """Route the CPU elementwise backward kernels to per-element evaluation (counted, like enable())."""
    global _backward_depth, _backward_library
    with _lock:
        if _backward_depth == 0:
            import warnings
            lib = torch.library.Library("aten", "IMPL")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for name, fn in _BACKWARD_OVERRIDES.items():
                    lib.impl(name, fn, "CPU")
            _backward_library = lib
        _backward_depth += 1


def disable_backward() -> None:
    global _backward_depth, _backward_library
    with _lock:
        if _backward_depth == 0:
            raise RuntimeError("detops.aten_mode.disable_backward() without a matching enable_backward()")
        _backward_depth -= 1
        if _backward_depth == 0:
            lib, _backward_library = _backward_library, None
            lib._destroy()
