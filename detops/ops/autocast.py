"""torch.autocast for the detops ops, with torch's own policy for their stock counterparts (docs/CONTRACT.md,
"Autocast"): the matmuls and attention run in the autocast dtype; the loss in float32 (its kernels widen the
logits exactly, so it returns float32 without a float32 copy of them: the bits of the cast input); on CUDA softmax
(torch's CUDA lists), on the CPU softmax keeps its input dtype (torch's CPU lists); the norms follow whatever the
installed torch does with F.rms_norm on that device (its lists changed across versions: asked once per device
type); embedding is not cast.

Without these rules an autocast region (transformers' `Trainer(bf16=True)`, say) would run detops' ops in the
dtype of what they are given, usually float32, while stock runs bf16 on tensor cores: the same model, far
slower, and different numbers than the user asked for. The casts are per element, so every promise holds
inside autocast as outside it. A float64 tensor is never cast (as torch's autocast).
"""
import torch

# torch's own lists (ATen/autocast_mode.h and the CPU lists): the losses run in float32; on CUDA also softmax (on
# the CPU it keeps its input dtype); the norms as the installed torch does.
LOWER_PRECISION = ("mm", "bmm", "linear", "addmm", "attention")
FLOAT32_OUTPUT = ("cross_entropy",)   # float32 result from the logits as they are (its float_output argument)
FLOAT32_DTYPE_ARG = {"cuda": ("softmax", "log_softmax"), "cpu": ()}   # dtype=None becomes float32, as torch's
AS_TORCH_RMS_NORM = ("rms_norm", "add_rms_norm")   # float32 where torch's autocast runs F.rms_norm in float32

_torch_rms_norm_float32 = {}


def _torch_runs_rms_norm_in_float32(device_type: str) -> bool:
    """Whether the installed torch's autocast runs F.rms_norm in float32 on `device_type` (asked once, inside
    the autocast region that called us)."""
    if device_type not in _torch_rms_norm_float32:
        probe = torch.ones(1, 2, device=device_type, dtype=torch.get_autocast_dtype(device_type))
        _torch_rms_norm_float32[device_type] = torch.nn.functional.rms_norm(probe, (2,)).dtype == torch.float32
    return _torch_rms_norm_float32[device_type]

def _cast(value, dtype, device_type):
    """Floating tensors on the autocast device to `dtype` (float64 and other devices' tensors untouched)."""
    if isinstance(value, torch.Tensor):
        if (value.dtype in (torch.float32, torch.float16, torch.bfloat16) and value.dtype != dtype
                and value.device.type == device_type):
            return value.to(dtype)
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_cast(v, dtype, device_type) for v in value)
    return value


def register(qualname: str, device_type: str, policy: str) -> None:
    """An Autocast kernel for op `qualname` ("namespace::name") on `device_type`: policy "lower" (the autocast
    dtype), "float32", "as_torch_rms_norm" (float32 or no cast, as torch's F.rms_norm), "dtype_arg"
    (softmax's optional dtype argument set to float32, as torch does) or "float32_output" (the loss's
    float_output argument set: a float32 result, the logits read as they are)."""
    namespace, name = qualname.split("::")
    op = getattr(getattr(torch.ops, namespace), name).default
    key = "Autocast" + torch._C._dispatch_key_for_device(device_type)
    exclude = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))

    def kernel(_keyset, *args):
        cast = policy
        if policy == "as_torch_rms_norm":
            cast = "float32" if _torch_runs_rms_norm_in_float32(device_type) else None
        if policy == "float32_output":   # cross_entropy(input, target, ignore_index, reduction, compensated, out)
            x = args[0]
            if x.dtype in (torch.float16, torch.bfloat16, torch.float32) and x.device.type == device_type:
                args = tuple(args[:5]) + (True,)
        elif policy == "dtype_arg":   # softmax(input, dim, dtype, compensated)
            x = args[0]
            if args[2] is None and x.dtype in (torch.float16, torch.bfloat16, torch.float32) \
                    and x.device.type == device_type:
                args = args[:2] + (torch.float32,) + args[3:]
        elif cast is not None:
            args = _cast(args, torch.float32 if cast == "float32" else torch.get_autocast_dtype(device_type),
                         device_type)
        with torch._C._ExcludeDispatchKeyGuard(exclude):
            return op(*args)

    lib = _libs.setdefault(namespace, torch.library.Library(namespace, "IMPL"))
    lib.impl(name, kernel, key, with_keyset=True)


def register_lower_precision(qualname: str) -> None:
    """The matmul / attention policy for another op built on them (detops_hf::attention)."""
    for device_type in ("cpu", "cuda"):
        register(qualname, device_type, "lower")


_libs = {}
for _device in ("cpu", "cuda"):
    for _name in LOWER_PRECISION:
        register("detops::" + _name, _device, "lower")
    for _name in FLOAT32_OUTPUT:
        register("detops::" + _name, _device, "float32_output")
    for _name in FLOAT32_DTYPE_ARG[_device]:
        register("detops::" + _name, _device, "dtype_arg")
    for _name in AS_TORCH_RMS_NORM:
        register("detops::" + _name, _device, "as_torch_rms_norm")
