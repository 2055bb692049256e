"""scaled_dot_product_attention: docs/REDUCTION_ORDER.md §6. (Owner: attention work; placeholder.)"""
import torch

from .._lib import ops


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False, **kwargs):
    raise NotImplementedError("detops.scaled_dot_product_attention is not built yet")
