"""No op has a backward yet (training support is the next milestone, docs/CONTRACT.md "Training promises").

Until an op has one, calling it with grad mode on and an input that requires grad raises here, at the call,
with the reason: without this registration torch would only warn that "an autograd kernel was not registered"
and the inputs would silently get no gradient. Under `torch.no_grad()` / `torch.inference_mode()`, or on
tensors that do not require grad, the ops run as always. The aten mode (`detops.mode()`) is not affected: it
replaces aten kernels below autograd, so torch's own derivative formulas still record the graph there.
"""
import torch

OPS = ("mm", "bmm", "linear", "addmm", "rms_norm", "add_rms_norm", "softmax", "log_softmax", "attention",
       "elementwise")


def _message(name: str) -> str:
    return (f"detops.{name} has no backward yet, and an input requires grad: its gradient would be missing. "
            "Run inference under torch.no_grad() or torch.inference_mode() (or call model.requires_grad_(False)); "
            "training through detops ops is not supported yet (docs/CONTRACT.md)")


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
