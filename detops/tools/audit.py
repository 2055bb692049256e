"""Coverage audit: which floating-point reductions ran in torch's own kernels (outside detops) during a forward.

`with detops.audit.Audit() as a: model(...)` logs every aten operator call at the dispatcher (a
TorchDispatchMode). A call counts as *covered* if it is a detops op, or an aten op that the detops aten mode
served (mm/addmm/bmm/_softmax/_log_softmax while `detops.mode` is on). A call is *not covered* if it is a
reduction over floating-point data (its bits depend on the summation order) that torch computed itself:
`a.not_covered` -> {"aten::sum.dim_IntList": 4, ...}; `str(a)` -> "aten::sum ×4 not covered, ...".
Integer/bool reductions (mask building: sum of a bool mask, cumsum of positions, argmax) are exact in any order
and not listed. The audit sees eager execution only (inside a compiled graph ops are not dispatched one by one).
"""
import collections

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ..aten_mode import routed_count as _routed_count

__all__ = ["Audit", "REDUCTION_OPS"]

# aten operators (overload packet names) whose result depends on the order of a floating-point reduction.
REDUCTION_OPS = frozenset({
    "mm", "addmm", "bmm", "baddbmm", "addbmm", "mv", "addmv", "dot", "vdot", "matmul", "linear", "_addmm_activation",
    "_softmax", "_log_softmax", "softmax", "log_softmax", "logsumexp",
    "sum", "mean", "nansum", "nanmean", "prod", "cumsum", "cumprod", "var", "std", "var_mean", "std_mean",
    "norm", "linalg_vector_norm", "_foreach_norm", "native_layer_norm", "native_group_norm", "native_batch_norm",
    "_native_batch_norm_legit_no_training", "_fused_rms_norm", "rms_norm",
    "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_fused_attention_overrideable", "scaled_dot_product_attention",
    "convolution", "_convolution", "cudnn_convolution", "mkldnn_convolution", "_int_mm", "_scaled_mm",
    "nll_loss_forward", "nll_loss2d_forward", "embedding_bag", "_embedding_bag", "einsum", "tensordot",
    "trace", "cross_entropy_loss", "binary_cross_entropy", "mse_loss", "kl_div",
})


def _floating(args) -> bool:
    for a in args:
        if isinstance(a, torch.Tensor):
            if a.is_floating_point() or a.is_complex():
                return True
        elif isinstance(a, (list, tuple)) and _floating(a):
            return True
    return False


class Audit(TorchDispatchMode):
    """Counts aten calls by coverage. Attributes after the block: `covered`, `not_covered` (Counters keyed by
    'aten::name.overload'), `detops` (detops op calls)."""

    def __init__(self):
        super().__init__()
        self.covered = collections.Counter()
        self.not_covered = collections.Counter()
        self.detops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        ns = func.namespace
        name = f"{ns}::{func._schema.name.split('::')[-1]}.{func._overloadname}"
        if ns in ("detops", "detops_hf"):
            self.detops[name] += 1
            return func(*args, **kwargs)
        packet = func._schema.name.split("::")[-1]
        if ns != "aten" or packet not in REDUCTION_OPS or not _floating(list(args) + list(kwargs.values())):
            return func(*args, **kwargs)
        before = _routed_count()
        out = func(*args, **kwargs)
        if _routed_count() > before:
            self.covered[name] += 1
        else:
            self.not_covered[name] += 1
        return out

    @property
    def ok(self) -> bool:
        return not self.not_covered

    def summary(self) -> str:
        if not self.not_covered:
            return "every floating-point reduction ran in detops"
        return ", ".join(f"{k} ×{v} not covered" for k, v in sorted(self.not_covered.items()))

    def __str__(self):
        return self.summary()
