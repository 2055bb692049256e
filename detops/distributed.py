"""Tensor parallelism with the bits of one process: `detops.distributed.shard(model)` (docs/REDUCTION_ORDER.md §9).

A patched Hugging Face model of a supported family is sharded over the ranks of a `torch.distributed` group
(gloo on CPU, NCCL on GPUs), Megatron-style:
- column-parallel (each rank computes some output features; every output element keeps its full K chain of
  §5, so it is the same computation at every TP size): q/k/v projections (whole heads per rank), gate/up
  projections, and lm_head (vocabulary slices, all-gathered in rank order: a copy, no arithmetic);
- row-parallel (each rank holds a slice of the input features K and the output needs a sum over all of K):
  o_proj and down_proj. Here the order is fixed independently of the TP size: K is split into `SEGMENTS`
  equal segments, each summed from zero by detops' fp32 linear (§5), and the segment sums are combined by one
  fixed pairwise tree; rank r of N holds the segments of one aligned subtree, reduces it, and the subtree
  sums are all-gathered and finished by the same tree. So TP = 1, 2, 4, 8 give the same bits. A bias is added
  once in fp32 to the root, then the result is rounded once to the activation dtype.

The segmented row-parallel order is not the order of a plain patched model (one §5 chain over K): it is a mode.
Every run in the mode agrees with every other, TP = 1 included (`shard(model, group=None)` in one process).
Its cost: SEGMENTS fp32 matmuls of K / SEGMENTS instead of one in the activation dtype (on CUDA that leaves
the tensor cores: benchmarks/bench_model.py measures it). Embeddings, norms, RoPE and attention are
replicated or per head, and invariant already.

Bad input raises before any work: a TP size that does not divide SEGMENTS, the heads, the key/value heads or
the intermediate size; an unsupported family; a model that is not patched by detops.
"""
from typing import List, Optional

import torch
import torch.distributed as dist
from torch import nn

from .ops import linear as _linear

__all__ = ["SEGMENTS", "shard", "check", "segmented_linear", "TP_FAMILIES"]

# The number of K segments of a row-parallel layer, and so the largest supported TP size (a power of two).
# Part of the order: changing it changes the bits of the mode (docs/REDUCTION_ORDER.md §9).
SEGMENTS = 8
TP_FAMILIES = ("llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2", "gemma3")


def _fail(msg):
    raise ValueError(f"detops.distributed: {msg}")


def _tree(values: List[torch.Tensor]) -> torch.Tensor:
    """Bottom-up pairwise tree over a power-of-two list: ((v0 + v1) + (v2 + v3)) + ..."""
    while len(values) > 1:
        values = [values[i] + values[i + 1] for i in range(0, len(values), 2)]
    return values[0]


def _segment_sums(x: torch.Tensor, weight: torch.Tensor, segments: int) -> torch.Tensor:
    """The pairwise-tree sum of `segments` fp32 partial products x_s @ w_s^T over equal K slices (§9)."""
    K = x.shape[-1]
    step = K // segments
    xf, wf = x.float(), weight.float()  # exact widening: the products are those of the activation dtype
    parts = [_linear(xf[..., s * step:(s + 1) * step], wf[:, s * step:(s + 1) * step]) for s in range(segments)]
    return _tree(parts)


def segmented_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                     group=None) -> torch.Tensor:
    """Row-parallel linear in the order of §9. weight: this rank's (N, K_local) slice of the full (N, K) weight,
    the columns of segments [r * S/N, (r+1) * S/N); group: the TP group (None: one process, TP = 1)."""
    world = 1 if group is None else dist.get_world_size(group)
    local = SEGMENTS // world
    if x.shape[-1] % local:
        _fail(f"this rank's K slice ({x.shape[-1]}) does not split into {local} equal segments")
    subtree = _segment_sums(x, weight, local)
    if world > 1:
        gathered = [torch.empty_like(subtree) for _ in range(world)]
        dist.all_gather(gathered, subtree.contiguous(), group=group)
        subtree = _tree(gathered)
    if bias is not None:  # once, in fp32, then one rounding (as §5 adds a bias)
        subtree = subtree + bias.float()
    return subtree.to(x.dtype)


class RowParallelLinear(nn.Module):
    """A row-parallel slice of an nn.Linear (input features [r*K/N, (r+1)*K/N)); forward: segmented_linear."""

    def __init__(self, linear: nn.Linear, rank: int, world: int, group):
        super().__init__()
        K = linear.in_features
        lo, hi = rank * K // world, (rank + 1) * K // world
        self.weight = nn.Parameter(linear.weight.detach()[:, lo:hi].clone(), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self.group = group

    def forward(self, x):
        return segmented_linear(x, self.weight, self.bias, self.group)


class ColumnParallelLinear(nn.Module):
    """A column-parallel slice of an nn.Linear (output features [r*N/W, (r+1)*N/W)); `gather`: all-gather the
    slices in rank order (lm_head), else the output stays sharded (q/k/v, gate/up)."""

    def __init__(self, linear: nn.Linear, rank: int, world: int, group, gather: bool):
        super().__init__()
        N = linear.out_features
        lo, hi = rank * N // world, (rank + 1) * N // world
        self.weight = nn.Parameter(linear.weight.detach()[lo:hi].clone(), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach()[lo:hi].clone(),
                                                                  requires_grad=False)
        self.group, self.world, self.gather = group, world, gather

    def forward(self, x):
        y = _linear(x, self.weight, self.bias)
        if not self.gather or self.world == 1:
            return y
        parts = [torch.empty_like(y) for _ in range(self.world)]
        dist.all_gather(parts, y.contiguous(), group=self.group)
        return torch.cat(parts, dim=-1)


def _family(model) -> str:
    mt = getattr(getattr(model, "config", None), "model_type", "")
    fam = {"gemma3_text": "gemma3"}.get(mt, mt)
    if fam not in TP_FAMILIES:
        _fail(f"model type {mt!r} is not supported for tensor parallelism (supported: {', '.join(TP_FAMILIES)})")
    return fam


def shard(model: nn.Module, group=None) -> nn.Module:
    """Shard a `detops.patch`-ed causal LM over `group` in place (None: TP = 1, the same order in one process).

    Every rank must hold the same full weights when this is called (load them the same way on every rank); each
    keeps its slices. Not undoable (the patch handle's undo no longer reaches the replaced projections). Returns
    the model."""
    if getattr(model, "_detops_patch", None) is None or not model._detops_patch.active:
        _fail("call detops.patch(model) first: the shards compute with detops ops and the attention must be "
              "detops'")
    world = 1 if group is None else dist.get_world_size(group)
    rank = 0 if group is None else dist.get_rank(group)
    check(model, world)
    for layer in model.model.layers:
        att, mlp = layer.self_attn, layer.mlp
        for proj in ("q_proj", "k_proj", "v_proj"):
            setattr(att, proj, ColumnParallelLinear(getattr(att, proj), rank, world, group, gather=False))
        att.o_proj = RowParallelLinear(att.o_proj, rank, world, group)
        for proj in ("gate_proj", "up_proj"):
            setattr(mlp, proj, ColumnParallelLinear(getattr(mlp, proj), rank, world, group, gather=False))
        mlp.down_proj = RowParallelLinear(mlp.down_proj, rank, world, group)
    model.lm_head = ColumnParallelLinear(model.lm_head, rank, world, group, gather=True)
    model._detops_tp = (rank, world)
    return model


def check(model: nn.Module, world: int) -> None:
    """Raise (ValueError, with the reason) unless `model` can be sharded over `world` ranks."""
    _family(model)
    cfg = model.config
    heads, kv_heads = cfg.num_attention_heads, getattr(cfg, "num_key_value_heads", cfg.num_attention_heads)
    for what, n in (("SEGMENTS", SEGMENTS), ("attention heads", heads), ("key/value heads", kv_heads),
                    ("intermediate size", cfg.intermediate_size)):
        if n % world:
            _fail(f"TP size {world} does not divide the {what} ({n})")
    if SEGMENTS % world or world & (world - 1):
        _fail(f"TP size {world} must be a power of two dividing SEGMENTS = {SEGMENTS}")
    for layer in model.model.layers:
        for lin in (layer.self_attn.o_proj, layer.mlp.down_proj):
            if lin.in_features % SEGMENTS:
                _fail(f"a row-parallel layer's input size ({lin.in_features}) is not a multiple of SEGMENTS = "
                      f"{SEGMENTS}")
