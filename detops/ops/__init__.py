"""Python entry points of the detops ops, mirroring torch.nn.functional. One module per op family."""
from .norm import rms_norm, add_rms_norm
from .softmax import softmax, log_softmax
from .matmul import mm, bmm, linear, addmm
from .attention import scaled_dot_product_attention
from .elementwise import elementwise
from .loss import cross_entropy
from .embedding import embedding
from .gradients import documents_from_cu_seqlens, documents_from_mask, documents_from_position_ids
from . import no_backward as _no_backward  # noqa: F401  (a clear error instead of a missing gradient)
from . import autocast as _autocast  # noqa: F401  (torch.autocast's policy for every op)

__all__ = ["rms_norm", "add_rms_norm", "softmax", "log_softmax", "mm", "bmm", "linear", "addmm",
           "scaled_dot_product_attention", "elementwise", "cross_entropy", "embedding", "documents_from_mask",
           "documents_from_cu_seqlens", "documents_from_position_ids"]
