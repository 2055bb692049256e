"""`detops.patch(model)`: make a Hugging Face model's logits batch-, padding-, packing- and chunking-invariant.

What it does to a loaded model (each step undone by `handle.undo()`):
1. every RMSNorm instance of a known class (table `RMS_NORMS`; q_norm/k_norm included) gets a bound
   `forward` calling `detops.rms_norm` with the class's weight mode (the class is kept: transformers looks
   classes up by name);
2. every `nn.Linear` gets a bound `forward` calling `detops.linear` (an opaque custom op, so a
   `torch.compile`d model keeps it; in eager mode the aten mode would catch it as well);
3. the model's attention implementation becomes "detops" (the function in `attention.py`, registered in
   transformers' AttentionInterface with `sdpa_mask` as its mask function when this package is imported);
4. a forward pre-hook / always-called post-hook pair on the model turns the aten mode (`detops.mode`) on
   for the forward, so any other aten matmul/softmax (RoPE's fp32 bmm, eager attention, custom heads) runs
   detops kernels too;
5. a forward pre-hook derives `position_ids` from a 2-D `attention_mask` when the caller gives none, as
   `generate()` does (`mask.cumsum(-1) - 1`, pads 1): without it a left-padded row's positions would start at
   its padding and its logits would differ from the sequence alone (docs/CONTRACT.md, L2). RoPE is relative,
   so this is the same function of the tokens. Opt out with `derive_position_ids=False`;
6. training (`training.py`): every `nn.Embedding` gets a bound `forward` calling `detops.embedding`; a pre-hook
   derives the batch's document layout from the position ids and the 2-D mask, which the patched modules pass
   to their ops as `documents` (REDUCTION_ORDER.md §10); the model's `loss_function` becomes transformers'
   causal-LM loss with `detops.cross_entropy`; the CPU elementwise backward kernels are routed to per-element
   evaluation (aten_mode.enable_backward). A training step then gives the same bits padded or packed.

`handle.report` lists what was patched and every module whose reductions detops does not cover.
`from_pretrained(..., attn_implementation="detops")` / `from_config(...)` work after `import detops`: the
"detops" attention is registered with transformers as soon as `transformers.modeling_utils` is loaded (now, if
it already is; otherwise by a one-shot import hook), so importing detops never imports transformers itself.
"""
import dataclasses
import importlib.abc
import sys
import types
import warnings
from typing import Dict, List, Tuple

import torch
from torch import nn

from ..aten_mode import disable as _mode_disable, disable_backward, enable as _mode_enable, enable_backward
from ..ops import embedding as _embedding, linear as _linear, rms_norm as _rms_norm
from .attention import NAME, _memo as _rows_memo, detops_attention_forward
from .training import causal_lm_loss, documents_for, layout_post_hook, layout_pre_hook

__all__ = ["patch", "PatchHandle", "PatchReport", "RMS_NORMS", "register_rms_norm", "register_attention",
           "NAME"]

# RMSNorm class name -> (weight_mode, eps attribute). REDUCTION_ORDER.md §3 defines the weight modes:
# 'cast_first': normalise in fp32, round to the input dtype, then * weight (Llama/Qwen/Mistral);
# 'offset': x * r * (1 + w) in fp32, rounded once (Gemma family, weights initialised to zeros).
RMS_NORMS: Dict[str, Tuple[str, str]] = {
    "LlamaRMSNorm": ("cast_first", "variance_epsilon"),
    "Qwen2RMSNorm": ("cast_first", "variance_epsilon"),
    "Qwen3RMSNorm": ("cast_first", "variance_epsilon"),
    "MistralRMSNorm": ("cast_first", "variance_epsilon"),
    "GemmaRMSNorm": ("offset", "eps"),
    "Gemma2RMSNorm": ("offset", "eps"),
    "Gemma3RMSNorm": ("offset", "eps"),
}

# Leaf modules without a floating-point reduction of their own (nothing to cover).
_NO_REDUCTION = (nn.Dropout, nn.Identity)
_NO_REDUCTION_NAMES = ("RotaryEmbedding", "ScaledWordEmbedding")  # RoPE: fp32 bmm with K = 1 (aten mode)


def register_rms_norm(class_name: str, weight_mode: str, eps_attr: str) -> None:
    """Teach `patch` another RMSNorm class (same computation as one of the weight modes of §3)."""
    if weight_mode not in ("plain", "cast_first", "offset"):
        raise ValueError(f"weight_mode must be 'plain', 'cast_first' or 'offset', got {weight_mode!r}")
    RMS_NORMS[class_name] = (weight_mode, eps_attr)


def register_attention() -> None:
    """Register the "detops" attention function and its mask function with transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    AttentionInterface.register(NAME, detops_attention_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)


def _norm_forward(weight_mode: str, eps_attr: str):
    def forward(self, hidden_states):
        nd = self.weight.dim()
        return _rms_norm(hidden_states, self.weight.shape, self.weight, getattr(self, eps_attr),
                         weight_mode=weight_mode, documents=documents_for(hidden_states.shape[:-nd], hidden_states))
    return forward


def _linear_forward(self, input):
    return _linear(input, self.weight, self.bias, documents=documents_for(input.shape[:-1]))


def _is_causal_lm(model) -> bool:
    """A transformers model whose `labels=` loss is the causal-LM one (ForCausalLMLoss)."""
    return hasattr(type(model), "loss_function") and type(model).__name__.endswith("ForCausalLM")


def _embedding_forward(self, input):
    """nn.Embedding (and Gemma 3's scaled subclass: `* embed_scale` in the weight's dtype, as its own forward)."""
    if self.max_norm is not None:
        raise ValueError("detops.patch: nn.Embedding with max_norm renormalises its weight in place; not supported")
    out = _embedding(input, self.weight, self.padding_idx, documents=documents_for(input.shape))
    scale = getattr(self, "embed_scale", None)
    return out if scale is None else out * scale.to(self.weight.dtype)


# Inside torch.compile the hooks trace to nothing (no graph break, so fullgraph=True works): a compiled graph
# does not dispatch aten ops one by one, so the aten mode could not act there anyway. The invariance of a
# compiled model rests on the detops custom ops bound above (linear, rms_norm, attention: opaque to the
# compiler); what remains of aten there is elementwise work and RoPE's fp32 bmm with K = 1 (one product, no
# sum: exact in any kernel).
def _derive_position_ids(module, args, kwargs):
    """Forward pre-hook (with kwargs): position ids from a 2-D attention mask when none are given (item 5 above)."""
    if kwargs.get("position_ids") is not None or len(args) > 2:
        return None
    mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        return None
    ids = kwargs.get("input_ids", args[0] if args else None)
    embeds = kwargs.get("inputs_embeds")
    new = ids.shape[-1] if isinstance(ids, torch.Tensor) else embeds.shape[1] if isinstance(embeds, torch.Tensor) \
        else None
    if new is None or new > mask.shape[-1]:
        return None  # nothing to derive from; transformers reports the shape mismatch itself
    position_ids = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)[:, mask.shape[-1] - new:]
    return args, dict(kwargs, position_ids=position_ids)


def _enable_hook(module, args):
    if not torch.compiler.is_compiling():
        _mode_enable()


def _disable_hook(module, args, output):
    if not torch.compiler.is_compiling():
        _mode_disable()


@dataclasses.dataclass
class PatchReport:
    """What `patch` changed, and what it leaves to torch (module path, class, reason)."""
    norms: List[str] = dataclasses.field(default_factory=list)
    linears: List[str] = dataclasses.field(default_factory=list)
    attention: str = ""
    previous_attention: str = ""
    aten_mode: str = ""
    position_ids: str = ""
    training: str = ""
    not_covered: List[Tuple[str, str, str]] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.not_covered

    def __str__(self):
        lines = [f"detops.patch: {len(self.norms)} RMSNorm modules, {len(self.linears)} Linear modules -> detops",
                 f"  attention: {self.previous_attention!r} -> {self.attention!r}",
                 f"  aten mode during forward: {self.aten_mode}",
                 f"  position ids: {self.position_ids}",
                 f"  training: {self.training}"]
        if self.not_covered:
            lines.append(f"  NOT covered ({len(self.not_covered)}):")
            lines += [f"    {name or '<model>'} ({cls}): {why}" for name, cls, why in self.not_covered]
        else:
            lines.append("  every reduction-carrying module is covered")
        return "\n".join(lines)


class PatchHandle:
    """Returned by `patch`; `undo()` restores the model exactly (forwards, attention implementation, hooks)."""

    def __init__(self, model, report):
        self.model = model
        self.report = report
        self._undo = []
        self.active = True

    def undo(self) -> None:
        if not self.active:
            return
        errors = []
        for fn in reversed(self._undo):
            try:
                fn()
            except Exception as e:  # keep undoing the rest, then report
                errors.append(e)
        self._undo.clear()
        self.active = False
        if errors:
            raise RuntimeError(f"detops: undo finished with errors: {errors}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.undo()


def _bind(handle, module, forward):
    had_own = "forward" in module.__dict__
    old = module.__dict__.get("forward")
    module.forward = types.MethodType(forward, module)

    def restore():
        if had_own:
            module.forward = old
        else:
            del module.forward
    handle._undo.append(restore)


def patch(model: nn.Module, strict: bool = False, linear: bool = True,
          derive_position_ids: bool = True) -> PatchHandle:
    """Patch `model` in place (see the module docstring). Returns a handle with `undo()` and `report`.

    strict: raise (after undoing) if any module's reductions stay with torch. linear: bind detops.linear on
    nn.Linear modules (default; without it the aten mode still routes them in eager mode, but not in
    torch.compile). derive_position_ids: position ids from a 2-D attention mask when none are given (item 5
    above; False keeps transformers' default, positions counted from index 0 of the row). Call `model.eval()` first: detops attention refuses dropout.
    """
    if getattr(model, "_detops_patch", None) is not None and model._detops_patch.active:
        raise RuntimeError("detops: this model is already patched; call handle.undo() first")
    register_attention()
    report = PatchReport()
    handle = PatchHandle(model, report)
    try:
        for name, module in model.named_modules():
            cls = type(module).__name__
            if cls in RMS_NORMS:
                weight_mode, eps_attr = RMS_NORMS[cls]
                if not hasattr(module, eps_attr) or getattr(module, "weight", None) is None:
                    report.not_covered.append((name, cls, f"known RMSNorm class without .weight/.{eps_attr}"))
                    continue
                _bind(handle, module, _norm_forward(weight_mode, eps_attr))
                report.norms.append(name)
            elif isinstance(module, nn.Linear):
                if linear:
                    _bind(handle, module, _linear_forward)
                    report.linears.append(name)
            elif isinstance(module, nn.Embedding):
                if module.max_norm is not None or module.sparse or module.scale_grad_by_freq:
                    report.not_covered.append((name, cls, "nn.Embedding with max_norm / sparse / scale_grad_by_freq "
                                                          "gradients"))
                    continue
                _bind(handle, module, _embedding_forward)
            elif next(module.children(), None) is None:  # a leaf we do not patch
                if isinstance(module, _NO_REDUCTION) or cls.endswith(_NO_REDUCTION_NAMES) \
                        or module.__module__.startswith("transformers.activations") \
                        or module.__module__.startswith("torch.nn.modules.activation"):
                    continue
                why = ("normalisation detops has no kernel for" if "norm" in cls.lower() else
                       "unknown leaf module: its reductions run in torch's kernels unless they reach the aten mode")
                report.not_covered.append((name, cls, why))

        config = getattr(model, "config", None)
        if config is not None and hasattr(model, "set_attn_implementation"):
            previous = config._attn_implementation
            report.previous_attention = str(previous)
            if previous != NAME:
                model.set_attn_implementation(NAME)
                handle._undo.append(lambda: model.set_attn_implementation(previous))
            report.attention = str(config._attn_implementation)
            if config._attn_implementation != NAME:
                report.not_covered.append(("", type(model).__name__, "the model does not accept a custom attention "
                                                                      "implementation (AttentionInterface)"))
        else:
            report.attention = "unchanged"
            report.not_covered.append(("", type(model).__name__, "not a transformers PreTrainedModel: attention "
                                                                  "not replaced (the aten mode covers eager matmul "
                                                                  "attention only)"))

        pre = model.register_forward_pre_hook(_enable_hook)
        post = model.register_forward_hook(_disable_hook, always_call=True)
        handle._undo.append(pre.remove)
        handle._undo.append(post.remove)
        report.aten_mode = "on (forward pre-hook / always-called post-hook on " + type(model).__name__ + ")"
        if derive_position_ids:
            derive = model.register_forward_pre_hook(_derive_position_ids, with_kwargs=True)
            handle._undo.append(derive.remove)
            report.position_ids = "derived from a 2-D attention_mask when none are given (as generate() does)"
        else:
            report.position_ids = "as given (derive_position_ids=False)"
        # After the position-id hook: the layout reads the derived position ids.
        layout = model.register_forward_pre_hook(layout_pre_hook, with_kwargs=True)
        layout_end = model.register_forward_hook(layout_post_hook, with_kwargs=True, always_call=True)
        handle._undo.append(layout.remove)
        handle._undo.append(layout_end.remove)
        # A PEFT wrapper (get_base_model) computes the loss in the transformers model it wraps.
        lm = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
        if _is_causal_lm(lm):
            had_loss = "_loss_function" in lm.__dict__
            old_loss = lm.__dict__.get("_loss_function")
            lm.loss_function = causal_lm_loss

            def restore_loss():
                if had_loss:
                    lm._loss_function = old_loss
                else:
                    lm.__dict__.pop("_loss_function", None)
            handle._undo.append(restore_loss)
        enable_backward()
        handle._undo.append(disable_backward)
        loss = "detops.cross_entropy" if _is_causal_lm(lm) else \
            f"torch's ({type(lm).__name__} is not a causal LM; detops replaces the causal-LM loss only)"
        report.training = (f"document layout from position ids / 2-D mask -> documents of every op; loss: {loss}; "
                           "CPU elementwise backward per element")

        model._detops_patch = handle
        handle._undo.append(lambda: setattr(model, "_detops_patch", None))
        handle._undo.append(_rows_memo.clear)  # drop cached rows (and the tensors they hold)
    except BaseException:
        handle.undo()
        raise
    if strict and report.not_covered:
        handle.undo()
        raise RuntimeError(f"detops.patch(strict=True): not everything is covered\n{report}")
    return handle



class _RegisterOnLoad(importlib.abc.MetaPathFinder):
    """One-shot import hook: once `transformers.modeling_utils` has executed (it defines AttentionInterface;
    every model class imports it), register "detops" there. Wraps that one module's loader; touches nothing else."""
    TARGET = "transformers.modeling_utils"

    def find_spec(self, name, path, target=None):
        if name != self.TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader_exec = spec.loader.exec_module

        def exec_module(module):
            loader_exec(module)
            _uninstall_hook()
            try:
                register_attention()
            except Exception as e:  # never break the user's transformers import; say why "detops" is missing
                warnings.warn(f"detops could not register its attention with transformers: {e!r}")
        spec.loader.exec_module = exec_module
        return spec


_hook = _RegisterOnLoad()


def _uninstall_hook():
    if _hook in sys.meta_path:
        sys.meta_path.remove(_hook)


if "transformers.modeling_utils" in sys.modules:
    register_attention()
elif _hook not in sys.meta_path:
    sys.meta_path.insert(0, _hook)
