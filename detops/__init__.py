"""detops: deterministic, batch-invariant PyTorch ops for LLM inference.

What is invariant to what: docs/CONTRACT.md (summarised in README.md). The exact reduction order of every
op: docs/REDUCTION_ORDER.md. How the pieces fit: docs/ARCHITECTURE.md.
"""
from ._lib import build_info, has_cuda_kernels
from .constants import constants
from .ops import (add_rms_norm, addmm, bmm, cross_entropy, embedding, documents_from_cu_seqlens, documents_from_mask,
                  documents_from_position_ids, linear, log_softmax, mm, rms_norm, scaled_dot_product_attention,
                  softmax)

from .aten_mode import disable, enable, is_enabled, mode
from .tools.verify import verify  # (imports transformers only when called)
from . import patching as _patching  # noqa: F401  registers "detops" with transformers when it loads (cheap)
from .patching.training import trainer_compute_loss, trainer_loss  # Trainer / SFTTrainer losses (README)

__version__ = build_info()["version"]


def patch(model, strict: bool = False, linear: bool = True, derive_position_ids: bool = True):
    """Make a Hugging Face model's logits batch/padding/packing/chunking-invariant (detops.patching.patch)."""
    from .patching import patch as _patch  # imports transformers only when used
    return _patch(model, strict=strict, linear=linear, derive_position_ids=derive_position_ids)


def info() -> dict:
    """Build facts: version, numerics flags, CUDA kernels built or not, reduction constants; torch and
    transformers versions."""
    import torch
    d = dict(build_info())
    d["torch"] = torch.__version__
    d["torch_cuda"] = torch.version.cuda
    d["cuda_available"] = torch.cuda.is_available()
    d["transformers"] = _installed_version("transformers")
    return d


def _installed_version(package: str):
    """The installed version of `package` without importing it, or None."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(package)
    except PackageNotFoundError:
        return None


__all__ = ["mm", "bmm", "linear", "addmm", "rms_norm", "add_rms_norm", "softmax", "log_softmax",
           "scaled_dot_product_attention", "cross_entropy", "embedding", "documents_from_mask", "documents_from_cu_seqlens",
           "documents_from_position_ids", "info", "build_info", "has_cuda_kernels", "enable", "disable", "is_enabled",
           "mode", "patch", "trainer_loss", "trainer_compute_loss", "verify", "constants"]
