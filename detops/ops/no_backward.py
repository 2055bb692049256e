"""A clear error for the ops without a backward (docs/CONTRACT.md "Training promises").

Calling such an op with grad mode on and an input that requires grad raises here, at the call, with the
reason: without this registration torch would only warn that "an autograd kernel was not registered" and the
inputs would silently get no gradient. `detops::elementwise` is one: it runs below autograd in the aten mode
(`detops.mode()`), where torch's own derivative formulas record the graph; `detops::attention_backward_tc` is
attention's backward itself (a second derivative is refused).
"""
import torch

OPS = ("elementwise", "attention_backward_tc")


def _message(name: str) -> str:
    return (f"detops.{name} has no backward yet, and an input requires grad: its gradient would be missing. "
            "Run inference under torch.no_grad() or torch.inference_mode() (or call model.requires_grad_(False)); "
            "docs/CONTRACT.md lists the ops with a backward")


def refuse_backward(qualname: str) -> None:
    """Register an autograd formula for `qualname` ("ns::op") that raises at the forward call."""
    name = qualname.split("::", 1)[1]

    def setup_context(ctx, inputs, output):
        raise RuntimeError(_message(name))

    def backward(ctx, *grads):  # never reached: setup_context raises first
        raise RuntimeError(_message(name))

    torch.library.register_autograd(qualname, backward, setup_context=setup_context)


for _op in OPS:
    refuse_backward(f"detops::{_op}")
