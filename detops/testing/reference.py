"""Test oracles for rms_norm / add_rms_norm / softmax / log_softmax (ARCHITECTURE.md habit 6: two per op).

1. float64 oracles (`rms_norm_f64`, `softmax_f64`, `log_softmax_f64`): the mathematical result, computed in
   float64 and returned in float64, unrounded. Accuracy tests measure every implementation against these.
2. Same-order references (`rms_norm_same_order`, `softmax_same_order`, `log_softmax_same_order`): slow,
   plain numpy float32 re-statements of docs/REDUCTION_ORDER.md §1–§4 and §7, operation by operation, each
   operation rounded to float32 by numpy. Tests assert `torch.equal(detops op, same-order reference)`.
   They are vectorised over rows and lanes only: every lane is an independent chain, so doing lane l of
   every row in one numpy call performs exactly the scalar operations the spec lists, in the spec's order.

The lane constants are read from the built extension (`detops._lib.constant`), never repeated here. The
elementary-function constants of §7 are part of the spec's definition of det_exp / det_log and are written
below as exact float32 values (hex), so numpy and the C++ literals denote the same numbers.
"""
import math
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .._lib import constant

f32 = np.float32

# ---------------------------------------------------------------------------------------------------------
# §2 lanes
# ---------------------------------------------------------------------------------------------------------


def lanes(n: int) -> int:
    """REDUCTION_ORDER.md §2: L = lane_vector * clamp(pow2ceil(ceil(n / lane_vector)), min, max)."""
    vec = constant("lane_vector")
    want = -(-n // vec)
    t = constant("min_lane_threads")
    while t < want and t < constant("max_lane_threads"):
        t *= 2
    return vec * t


def lane_threshold_sizes() -> tuple:
    """Row lengths where the §2 lane layout changes (L doubles, or rows start to wrap around the lanes),
    each -1/0/+1, plus tiny rows: every place an indexing or tail bug would show."""
    vec, t, t_max = constant("lane_vector"), constant("min_lane_threads"), constant("max_lane_threads")
    sizes = {1, vec - 1, vec, vec + 1}
    while t <= t_max:
        sizes |= {vec * t - 1, vec * t, vec * t + 1}
        t *= 2
    sizes |= {2 * vec * t_max - 1, 2 * vec * t_max, 2 * vec * t_max + 1}  # two elements per lane
    return tuple(sorted(sizes))


def _lane_view(v: np.ndarray, fill) -> np.ndarray:
    """(rows, n) -> (rows, steps, L): element i of a row at [i // L, i % L]; the tail padded with `fill`,
    which the lane loops skip (they only visit i < n)."""
    rows, n = v.shape
    L = lanes(n)
    steps = -(-n // L)
    out = np.full((rows, steps * L), fill, dtype=v.dtype)
    out[:, :n] = v
    return out.reshape(rows, steps, L)


def _tree(v: np.ndarray, merge) -> np.ndarray:
    """§2 step 3 on the last axis (a power of 2): v[l] = merge(v[2l], v[2l+1]) until one value remains."""
    while v.shape[-1] > 1:
        v = merge(v[..., 0::2], v[..., 1::2])
    return v[..., 0]


def lane_sum(y: np.ndarray, compensated: bool = False) -> np.ndarray:
    """§2 sum of each row of y (rows, n) float32. Order: acc[l] = ((0 + y[l]) + y[l+L]) + ..., then the
    bottom-up pairwise tree over the L lanes. compensated: Neumaier lanes, lane value s + c, plain tree."""
    assert y.dtype == f32 and y.ndim == 2
    rows, n = y.shape
    L = lanes(n)
    v = _lane_view(y, f32(0))
    s = np.zeros((rows, L), dtype=f32)
    c = np.zeros((rows, L), dtype=f32)
    with np.errstate(over="ignore", invalid="ignore"):
        for j in range(v.shape[1]):
            live = np.arange(L) + j * L < n  # lanes that own an element in this step
            yj = v[:, j, :]
            t = s + yj
            if compensated:
                big = np.abs(s) >= np.abs(yj)
                c_new = c + np.where(big, (s - t) + yj, (yj - t) + s)
                c = np.where(live, c_new, c)
            s = np.where(live, t, s)
        lane_value = s + c if compensated else s
        return _tree(lane_value, lambda a, b: a + b)


# ---------------------------------------------------------------------------------------------------------
# §7 elementary functions, float32 step by step (mirrors csrc/reduce/reduce.h)
# ---------------------------------------------------------------------------------------------------------

_EXP_HI = f32(float.fromhex("0x1.62e430p+6"))     # 88.72283935546875: above -> +inf
_EXP_LO = f32(float.fromhex("-0x1.9fe36ap+6"))    # -103.972084: below -> 0
_MAGIC = f32(12582912.0)                            # 1.5 * 2^23: x + magic - magic rounds x to an integer (RNE)
_LOG2E = f32(float.fromhex("0x1.715476p+0"))       # 1.44269502162933349609375
_LN2_HI = f32(float.fromhex("0x1.62e4p-1"))        # 0.693145751953125
_LN2_LO = f32(float.fromhex("0x1.7f7d1cp-20"))    # 1.428606765330187e-06
_EXP_POLY = [f32(1) / f32(5040), f32(1) / f32(720), f32(1) / f32(120), f32(1) / f32(24), f32(1) / f32(6),
             f32(0.5), f32(1), f32(1)]
_LOG_POLY = [f32(1) / f32(11), f32(1) / f32(9), f32(1) / f32(7), f32(1) / f32(5), f32(1) / f32(3), f32(1)]
_SQRT2 = f32(float.fromhex("0x1.6a09e6p+0"))      # 1.41421356
_MIN_NORMAL = f32(float.fromhex("0x1p-126"))      # 1.17549435e-38


def _pow2i(k: np.ndarray) -> np.ndarray:
    """2^k for k in [-126, 127], exact: the float with biased exponent k + 127."""
    return ((k.astype(np.int64) + 127).astype(np.uint32) << np.uint32(23)).view(f32)


def fma32(a, b, c) -> np.ndarray:
    """float32 fused multiply-add, a*b + c rounded once to nearest-even (§1), exactly: a*b is exact in float64
    (48 significant bits); the float64 sum s is made round-to-odd (its last bit set when TwoSum's exact residual
    is not zero and the last bit is even, moving toward the exact value), and a round-to-odd result with 53 >=
    24 + 2 bits rounds to float32 as the exact sum would (Boldo & Melquiond)."""
    a, b, c = (np.asarray(v, dtype=f32).astype(np.float64) for v in (a, b, c))
    prod = a * b
    s = prod + c
    bb = s - prod
    resid = (prod - (s - bb)) + (c - bb)  # TwoSum: prod + c == s + resid exactly (finite s)
    bits = s.view(np.int64)
    inexact = (resid != 0) & np.isfinite(s) & ((bits & 1) == 0)
    toward = np.where((resid > 0) == (s > 0), np.int64(1), np.int64(-1))  # |s| up or down one ulp
    s = np.where(inexact, (bits + toward).view(np.float64), s)
    with np.errstate(over="ignore"):
        return s.astype(f32)


def det_exp(x) -> np.ndarray:
    """REDUCTION_ORDER.md §7 exp in float32: k = round(x*log2(e)) (one fma), r = fma(-k, ln2_lo, fma(-k, ln2_hi,
    x)), degree-7 Taylor polynomial (Horner, one fma a step), times 2^k as two exact power-of-two scalings
    (k1 = trunc(k/2), k2 = k - k1)."""
    x = np.asarray(x, dtype=f32)
    nan = np.isnan(x)
    over = x > _EXP_HI
    under = x < _EXP_LO
    xs = np.where(nan | over | under, f32(0), x)  # finite stand-in; these lanes are overwritten below
    kf = fma32(xs, _LOG2E, _MAGIC) - _MAGIC
    k = kf.astype(np.int32)
    r = fma32(-kf, _LN2_LO, fma32(-kf, _LN2_HI, xs))
    p = _EXP_POLY[0] * np.ones_like(r)
    for coef in _EXP_POLY[1:]:
        p = fma32(p, r, coef)
    k1 = np.trunc(k / 2).astype(np.int32)  # C integer division truncates toward zero
    k2 = k - k1
    with np.errstate(over="ignore", under="ignore"):
        y = (p * _pow2i(k1)) * _pow2i(k2)
    y = np.where(under, f32(0), y)
    y = np.where(over, f32(np.inf), y)
    return np.where(nan, x, y).astype(f32)


def det_log(x) -> np.ndarray:
    """REDUCTION_ORDER.md §7 log in float32: subnormals scaled by 2^24; x = 2^e f, f in [sqrt(1/2), sqrt(2));
    u = (f-1)/(f+1); log f = (2u) * (1 + u^2/3 + ... + u^10/11); log x = e*ln2_hi + (log f + e*ln2_lo)."""
    x = np.asarray(x, dtype=f32)
    bad = np.isnan(x) | (x < 0)
    zero = x == 0
    inf = x == np.inf
    xs = np.where(bad | zero | inf, f32(1), x)
    sub = xs < _MIN_NORMAL
    xs = np.where(sub, xs * f32(16777216.0), xs) if sub.any() else xs  # scaling by 2^24 is exact
    e = np.where(sub, -24, 0).astype(np.int32)
    u = xs.view(np.uint32)
    e = e + ((u >> np.uint32(23)) & np.uint32(0xFF)).astype(np.int32) - 127
    f = ((u & np.uint32(0x007FFFFF)) | np.uint32(0x3F800000)).view(f32)
    high = f > _SQRT2
    f = np.where(high, f * f32(0.5), f)
    e = e + high.astype(np.int32)
    u1 = (f - f32(1)) / (f + f32(1))
    u2 = u1 * u1
    p = _LOG_POLY[0] * np.ones_like(u2)
    for coef in _LOG_POLY[1:]:
        p = p * u2 + coef
    log_f = (f32(2) * u1) * p
    ef = e.astype(f32)
    y = ef * _LN2_HI + (log_f + ef * _LN2_LO)
    y = np.where(inf, f32(np.inf), y)
    y = np.where(zero, f32(-np.inf), y)
    return np.where(bad, f32(np.nan), y).astype(f32)


# ---------------------------------------------------------------------------------------------------------
# §4 softmax row state
# ---------------------------------------------------------------------------------------------------------


def softmax_row_state(x: np.ndarray, compensated: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """(M, S) of §4 for each row of x (rows, n) float32: M = the row maximum (exact in any order), then
    S = the §2 lane sum (plain or Neumaier) of exp(x - M). A NaN in a row makes its S, and so every output of
    the row, NaN, whatever M is (here numpy's max returns the NaN)."""
    assert x.dtype == f32 and x.ndim == 2
    m = x.max(axis=1)
    with np.errstate(invalid="ignore"):
        return m, lane_sum(det_exp(x - m[:, None]), compensated=compensated)


# ---------------------------------------------------------------------------------------------------------
# helpers: torch <-> numpy float32, dtype rounding
# ---------------------------------------------------------------------------------------------------------


def _f32(t: torch.Tensor) -> np.ndarray:
    """Exact widening to float32 (§1)."""
    return t.detach().to("cpu", torch.float32).numpy()


def _round(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """float32 -> dtype with round-to-nearest-even (torch's CPU conversion is RNE, as numeric.h)."""
    return torch.from_numpy(np.ascontiguousarray(a, dtype=f32)).to(dtype)


def _rows(input: torch.Tensor, dim: int) -> Tuple[torch.Tensor, torch.Size]:
    moved = input.movedim(dim, -1)
    return moved.reshape(-1, moved.shape[-1]), moved.shape


# ---------------------------------------------------------------------------------------------------------
# same-order references
# ---------------------------------------------------------------------------------------------------------

_Shape = Union[int, Sequence[int]]


def _norm_args(input, normalized_shape, eps):
    n = int(np.prod([normalized_shape] if isinstance(normalized_shape, int) else list(normalized_shape)))
    eps = float(torch.finfo(input.dtype).eps) if eps is None else float(eps)  # F.rms_norm's default
    return n, eps


def rms_norm_same_order(input: torch.Tensor, normalized_shape: _Shape, weight: Optional[torch.Tensor] = None,
                        eps: Optional[float] = None, weight_mode: str = "plain", compensated: bool = False,
                        residual: Optional[torch.Tensor] = None):
    """REDUCTION_ORDER.md §3 in numpy float32. Returns y, or (y, x) when residual is given (add_rms_norm)."""
    n, eps = _norm_args(input, normalized_shape, eps)
    in_t = input.dtype
    x = _f32(input.reshape(-1, n))
    if residual is not None:  # §3 fused residual: x = round_to_input(float(input) + float(residual))
        x = _f32(_round(x + _f32(residual.reshape(-1, n)), in_t))
    ss = lane_sum(x * x, compensated)
    with np.errstate(divide="ignore"):
        r = f32(1) / np.sqrt(ss / f32(n) + f32(eps))  # §1 rsqrt(v) = 1 / sqrt(v)
    h = x * r[:, None]
    if weight is None:
        out_t, y = in_t, h
    else:
        w = _f32(weight.reshape(n))
        if weight_mode == "plain":
            out_t, y = in_t, h * w
        elif weight_mode == "cast_first":
            out_t = torch.promote_types(in_t, weight.dtype)
            y = _f32(_round(h, in_t)) * w
        elif weight_mode == "offset":
            out_t, y = in_t, h * (f32(1) + w)
        else:
            raise ValueError(weight_mode)
    y = _round(y, out_t).reshape(input.shape)
    if residual is None:
        return y
    return y, _round(x, in_t).reshape(input.shape)


def _softmax_same_order(input, dim, dtype, compensated, log):
    rows, moved_shape = _rows(input, dim)
    x = _f32(rows)
    m, s = softmax_row_state(x, compensated)
    with np.errstate(invalid="ignore", over="ignore"):
        if log:
            y = (x - m[:, None]) - det_log(s)[:, None]
        else:
            y = det_exp(x - m[:, None]) / s[:, None]
    out = _round(y, dtype or input.dtype).reshape(moved_shape).movedim(-1, dim)
    return out.contiguous()


def softmax_same_order(input: torch.Tensor, dim: int = -1, dtype: Optional[torch.dtype] = None,
                       compensated: bool = False) -> torch.Tensor:
    """REDUCTION_ORDER.md §4 softmax in numpy float32: y = exp(x - M) / S."""
    return _softmax_same_order(input, dim, dtype, compensated, log=False)


def log_softmax_same_order(input: torch.Tensor, dim: int = -1, dtype: Optional[torch.dtype] = None,
                           compensated: bool = False) -> torch.Tensor:
    """REDUCTION_ORDER.md §4 log_softmax in numpy float32: y = (x - M) - log(S)."""
    return _softmax_same_order(input, dim, dtype, compensated, log=True)


def row_dot_same_order(a: torch.Tensor, b: Optional[torch.Tensor] = None) -> torch.Tensor:
    """REDUCTION_ORDER.md §10 rule 2 (§2 plain lanes) in numpy float32: Σ a·b (Σ a) over the last dim."""
    y = _f32(a.reshape(-1, a.shape[-1])) if b is None else \
        _f32(a.reshape(-1, a.shape[-1])) * _f32(b.reshape(-1, a.shape[-1]))
    return torch.from_numpy(lane_sum(y)).reshape(a.shape[:-1])


def softmax_backward_same_order(a: torch.Tensor, grad: torch.Tensor, log: bool, dtype: torch.dtype) -> torch.Tensor:
    """§10 rule 2 over the last dim in numpy float32: softmax dx = y·(g - Σ g·y) (a = y), log_softmax
    dx = g - p·Σ g (a = p), rounded once to dtype."""
    n = a.shape[-1]
    af, g = _f32(a.reshape(-1, n)), _f32(grad.reshape(-1, n))
    with np.errstate(invalid="ignore", over="ignore"):
        s = lane_sum(g if log else g * af)[:, None]
        dx = g - af * s if log else af * (g - s)
    return _round(dx, dtype).reshape(a.shape)


def cross_entropy_nll_same_order(x: torch.Tensor, target: torch.Tensor, ignore_index: int = -100,
                                 compensated: bool = False) -> torch.Tensor:
    """§10 rule 4 in numpy float32: each token's -((x_t - M) - log S) (§4), +0 where target == ignore_index, NaN
    where it is out of range; float32 shaped like target."""
    n = x.shape[-1]
    xf, t = _f32(x.reshape(-1, n)), target.reshape(-1).numpy()
    m, s = softmax_row_state(xf, compensated)
    score = (t != ignore_index) & (t >= 0) & (t < n)
    with np.errstate(invalid="ignore", over="ignore"):
        xt = xf[np.arange(len(t)), np.where(score, t, 0)]
        nll = -((xt - m) - det_log(s))
    out = np.where(score, nll, np.where(t == ignore_index, f32(0), f32(np.nan))).astype(f32)
    return torch.from_numpy(out).reshape(target.shape)


def cross_entropy_backward_same_order(x: torch.Tensor, target: torch.Tensor, grad: torch.Tensor,
                                      ignore_index: int = -100, compensated: bool = False) -> torch.Tensor:
    """§10 rule 4 in numpy float32: dx = (exp(x - M) / S - [i == t]) · g, rounded once to x's dtype; zeros where
    target == ignore_index, NaN where it is out of range."""
    n = x.shape[-1]
    xf, t = _f32(x.reshape(-1, n)), target.reshape(-1).numpy()
    g = np.broadcast_to(_f32(grad.reshape(-1)), t.shape)
    m, s = softmax_row_state(xf, compensated)
    score = (t != ignore_index) & (t >= 0) & (t < n)
    with np.errstate(invalid="ignore", over="ignore"):
        p = det_exp(xf - m[:, None]) / s[:, None]
        rows = np.nonzero(score)[0]
        p[rows, t[rows]] -= f32(1)
        dx = p * g[:, None]
    dx[t == ignore_index] = 0
    dx[~score & (t != ignore_index)] = np.nan
    return _round(dx, x.dtype).reshape(x.shape)


def rms_norm_backward_same_order(x: torch.Tensor, grad: torch.Tensor, weight: Optional[torch.Tensor], eps: float,
                                 cast_first: bool = False, compensated: bool = False,
                                 extra: Optional[torch.Tensor] = None):
    """§10 rule 2 on (rows, n) in numpy float32, weight = w' in fp32 (or None): (dx in x's dtype, g·x̂ fp32)."""
    n = x.shape[-1]
    xf, g = _f32(x), _f32(grad)
    gw = g if weight is None else g * _f32(weight)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        r = (f32(1) / np.sqrt(lane_sum(xf * xf, compensated) / f32(n) + f32(eps)))[:, None]
        c = ((r * r) * r) * (lane_sum(gw * xf)[:, None] / f32(n))
        dx = r * gw - xf * c
        if extra is not None:
            dx = dx + _f32(extra)
        h = xf * r
        if cast_first:
            h = _f32(_round(h, x.dtype))
        return _round(dx, x.dtype), torch.from_numpy(g * h)


# ---------------------------------------------------------------------------------------------------------
# float64 oracles
# ---------------------------------------------------------------------------------------------------------


def rms_norm_f64(input: torch.Tensor, normalized_shape: _Shape, weight: Optional[torch.Tensor] = None,
                 eps: Optional[float] = None, weight_mode: str = "plain",
                 residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The exact rms_norm in float64 (unrounded). 'plain': x * r * w (F.rms_norm); 'cast_first': the HF
    Llama semantics, whose one intermediate rounding (x * r to the input dtype) is part of the definition
    and so applied to the float64 value; 'offset': x * r * (1 + w) (Gemma). With residual, x is the input
    dtype's rounding of input + residual (what every implementation normalises)."""
    n, eps = _norm_args(input, normalized_shape, eps)
    x = input.detach().cpu()
    if residual is not None:
        x = (x.double() + residual.detach().cpu().double()).to(input.dtype)
    x = x.double().reshape(-1, n)
    r = torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)
    h = x * r
    if weight is not None:
        w = weight.detach().cpu().double().reshape(n)
        if weight_mode == "plain":
            h = h * w
        elif weight_mode == "cast_first":
            h = h.to(input.dtype).double() * w
        elif weight_mode == "offset":
            h = h * (1.0 + w)
        else:
            raise ValueError(weight_mode)
    return h.reshape(input.shape)


def softmax_f64(input: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """The exact softmax in float64 (torch's float64 kernel: max-subtracted, float64 exp and sum)."""
    return torch.softmax(input.detach().cpu().double(), dim)


def log_softmax_f64(input: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """The exact log_softmax in float64."""
    return torch.log_softmax(input.detach().cpu().double(), dim)


# ---------------------------------------------------------------------------------------------------------
# Derived error bounds (one table, with its justification; ARCHITECTURE.md habit 6)
# ---------------------------------------------------------------------------------------------------------
# u = 2^-24 (float32 unit roundoff); u_out, u_in: the unit roundoff of the output / input dtype; "depth" of a
# §2 reduction = ceil(n / L) (adds inside a lane) + log2(L) (tree levels). First-order error analysis; one
# extra u per chain covers the second-order terms (products of u's, < 2^-20 relative here). Absolute terms
# cover subnormal results, where relative bounds do not hold: half the smallest subnormal of the output
# dtype for the final rounding, and a few float32 subnormal units for intermediate underflow.
#
# | quantity                        | bound (relative, in u)                                                |
# | det_exp(z), normal result       | E_EXP = 2      (max 1.32 u over every float input, fma form of §7)   |
# | det_log(s)                      | E_LOG = 4      (measured max 3.7 u; tests/test_numerics.py checks)   |
# | rms_norm ss = lane-sum(x*x)     | depth + 1      (positive terms: no cancellation)                     |
# | r = 1/sqrt(ss/n + eps)          | (depth + 3)/2 + 2  (/n, +eps: 1 u each; sqrt halves, +1 u; 1/: 1 u)   |
# | h = x*r; y = h*w | h*(1+w)      | + 1; + 1 | + 2                                                      |
# | cast_first round_in(h) * w      | |w| * (err(h) + ulp_in(h)): two roundings of nearly equal h can differ |
# |                                 | by one ulp of the input dtype (2 u_in |h|), the f64 oracle rounds too |
# | softmax S = lane-sum exp(x - M) | ln(n) + E_EXP + 3 + depth: each term's argument x_i - M is rounded     |
# |                                 | (error u|x_i - M|, and sum_i w_i|x_i - M| <= entropy <= ln n), its exp |
# |                                 | E_EXP; the sum of positive terms depth (compensated: log2(L), Neumaier |
# |                                 | lanes 2 u, plain tree)                                                  |
# | softmax y = exp(x - M) / S      | |x - M| + E_EXP + 2 + rel(S)                                          |
# | log_softmax y = (x-M) - log S   | absolute: u|x-M| + rel(S) + E_LOG u |log S| + u |y| (+1 u each)       |
# Then the output rounding: + u_out |y| (u_out = 0 for float32 out).

E_EXP = 2.0
E_LOG = 4.0
_U = 2.0 ** -24
_SUB32 = 2.0 ** -149


def _u(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps) / 2


def _min_subnormal(dtype: torch.dtype) -> float:
    fi = torch.finfo(dtype)
    return float(fi.smallest_normal) * float(fi.eps)


def _out_rounding(y64: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    if out_dtype == torch.float32:
        return torch.full_like(y64, 4 * _SUB32)
    return _u(out_dtype) * (1 + 2.0 ** -10) * y64.abs() + 0.5 * _min_subnormal(out_dtype) + 4 * _SUB32


def _depth(n: int) -> int:
    L = lanes(n)
    return -(-n // L) + L.bit_length() - 1


def rms_norm_error_bound(input: torch.Tensor, normalized_shape: _Shape, weight: Optional[torch.Tensor] = None,
                         eps: Optional[float] = None, weight_mode: str = "plain",
                         residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-element bound on |detops.rms_norm - rms_norm_f64| (float64, shaped like input), from the table."""
    n, eps = _norm_args(input, normalized_shape, eps)
    x = input.detach().cpu()
    if residual is not None:
        x = (x.double() + residual.detach().cpu().double()).to(input.dtype)
    x = x.double().reshape(-1, n)
    h = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)
    rel_h = (_depth(n) + 1 + 2) / 2 + 2 + 1 + 1  # ss, scale, x*r, second-order slack
    out_dtype = input.dtype
    if weight is None:
        y, err = h, rel_h * _U * h.abs()
    else:
        w = weight.detach().cpu().double().reshape(n)
        if weight_mode == "plain":
            y = h * w
            err = (rel_h + 1) * _U * y.abs()
        elif weight_mode == "offset":
            y = h * (1 + w)
            err = (rel_h + 2) * _U * y.abs()
        elif weight_mode == "cast_first":
            out_dtype = torch.promote_types(input.dtype, weight.dtype)
            h_in = h.to(input.dtype).double()
            y = h_in * w
            err_h = rel_h * _U * h.abs()
            if input.dtype != torch.float32:  # the rounding to the input dtype may flip by one ulp
                err_h = err_h + 2 * _u(input.dtype) * h.abs() * (1 + 2.0 ** -10) + _min_subnormal(input.dtype)
            err = w.abs() * err_h + 2 * _U * y.abs()
        else:
            raise ValueError(weight_mode)
    return (err + _out_rounding(y, out_dtype)).reshape(input.shape)


def softmax_error_bound(input: torch.Tensor, dim: int = -1, dtype: Optional[torch.dtype] = None,
                        compensated: bool = False, log: bool = False) -> torch.Tensor:
    """Per-element bound on |detops.(log_)softmax - (log_)softmax_f64| (float64, shaped like input) at the
    entries where the float64 result is finite (-inf entries and all -inf rows are exact; tested apart)."""
    rows, moved_shape = _rows(input.detach().cpu(), dim)
    x = rows.double()
    n = x.shape[-1]
    m = x.max(-1, keepdim=True).values
    z = x - m
    log_s = torch.logsumexp(z, -1, keepdim=True)
    depth = _depth(n)
    rel_s = math.log(n) + E_EXP + 3 + ((lanes(n).bit_length() - 1) if compensated else depth)
    if log:
        y = z - log_s
        err = _U * ((z.abs() + 1) + (rel_s + 1) + (E_LOG + 1) * log_s.abs() + 2 * y.abs())
    else:
        y = torch.exp(z - log_s)
        err = torch.where(y > 0, _U * (z.abs() + E_EXP + 3 + rel_s) * y, 0.0)  # -inf entries: y == 0 exactly
    bound = err + _out_rounding(y, dtype or input.dtype)
    return bound.reshape(moved_shape).movedim(-1, dim)


def normwise_error(y: torch.Tensor, oracle: torch.Tensor) -> float:
    """||y - oracle||_2 / ||oracle||_2 over the entries where the oracle is finite (float64)."""
    o = oracle.double().cpu()
    finite = torch.isfinite(o)
    d = (y.detach().cpu().double() - o)[finite]
    den = o[finite].norm().item()
    return d.norm().item() / den if den > 0 else d.norm().item()
