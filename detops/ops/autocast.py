"""torch.autocast for the detops ops, with torch's own policy for their stock counterparts (docs/CONTRACT.md,
"Autocast"): the matmuls and attention run in the autocast dtype; the loss in float32; on CUDA also the norms and
softmax (torch's CUDA lists), on the CPU those keep their input dtype (torch's CPU lists); embedding is not cast.

Without these rules an autocast region (transformers' `Trainer(bf16=True)`, say) would run detops' ops in the
dtype of what they are given, usually float32, while stock runs bf16 on tensor cores: the same model, far
slower, and different numbers than the user asked for. The casts are per element, so every promise holds
inside autocast as outside it. A float64 tensor is never cast (as torch's autocast).
"""
import torch

# torch's own lists (ATen/autocast_mode.h and the CPU lists): on CUDA the norms, softmax and the losses run in
# float32; on the CPU only the losses do (softmax and norms keep their input dtype there).
LOWER_PRECISION = ("mm", "bmm", "linear", "addmm", "attention")
FLOAT32 = {"cuda": ("rms_norm", "add_rms_norm", "cross_entropy"), "cpu": ("cross_entropy",)}
FLOAT32_DTYPE_ARG = {"cuda": ("softmax", "log_softmax"), "cpu": ()}   # dtype=None becomes float32, as torch's

_lib = torch.library.Library("detops", "IMPL")


def _cast(value, dtype):
    if isinstance(value, torch.Tensor):
        if value.dtype in (torch.float32, torch.float16, torch.bfloat16) and value.dtype != dtype:
            return value.to(dtype)
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_cast(v, dtype) for v in value)
    return value


def _register(name: str, device_type: str, policy: str) -> None:
    op = getattr(torch.ops.detops, name).default
    key = "Autocast" + torch._C._dispatch_key_for_device(device_type)
    exclude = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))

    def kernel(_keyset, *args):
        if policy == "dtype_arg":   # softmax(input, dim, dtype, compensated): computed and returned in float32
            args = args[:2] + ((torch.float32 if args[2] is None else args[2]),) + args[3:]
        else:
            args = _cast(args, torch.float32 if policy == "float32" else torch.get_autocast_dtype(device_type))
        with torch._C._ExcludeDispatchKeyGuard(exclude):
            return op(*args)

    _lib.impl(name, kernel, key, with_keyset=True)


for _device in ("cpu", "cuda"):
    for _name in LOWER_PRECISION:
        _register(_name, _device, "lower")
    for _name in FLOAT32[_device]:
        _register(_name, _device, "float32")
    for _name in FLOAT32_DTYPE_ARG[_device]:
        _register(_name, _device, "dtype_arg")
