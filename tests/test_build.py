"""Build facts: `detops.info()`, `python -m detops info`, the constants the extension exposes, the pinned
numerics flags (REDUCTION_ORDER.md §1), and CUDA kernels reported iff they were built."""
import json
import os
import subprocess
import sys

import pytest
import torch

import detops
from detops import _lib
from detops import reference as R

CONSTANTS = ("lane_vector", "min_lane_threads", "max_lane_threads", "matmul_k_block", "attn_block_keys",
             "attn_chunk_keys")
NORM_SOFTMAX_OPS = ("rms_norm", "add_rms_norm", "softmax", "log_softmax")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_info_fields():
    info = detops.info()
    for key in ("version", "cuda", "host_flags", "nvcc_flags", "constants", "torch", "torch_cuda",
                "cuda_available"):
        assert key in info, key
    assert isinstance(info["version"], str) and info["version"] == detops.__version__ != "unknown"
    assert isinstance(info["cuda"], bool) and info["cuda"] == detops.has_cuda_kernels()
    assert info["torch"] == torch.__version__
    assert info["cuda_available"] == torch.cuda.is_available()
    json.dumps(info)  # serialisable as is, for reports


def test_numerics_flags_pinned():
    """§1: no FMA contraction, no fast math; IEEE division / sqrt and no flush-to-zero on CUDA."""
    host = detops.info()["host_flags"].split()
    assert "-ffp-contract=off" in host and "-fno-fast-math" in host
    assert "-ffast-math" not in host and "-Ofast" not in host
    nvcc = detops.info()["nvcc_flags"].split()
    for flag in ("--fmad=false", "-prec-div=true", "-prec-sqrt=true", "-ftz=false"):
        assert flag in nvcc, flag
    assert not any("fast_math" in f or "fast-math" in f for f in nvcc)


def test_python_m_detops_info_runs():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-m", "detops", "info"], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout)
    assert printed == json.loads(json.dumps(detops.info()))
    bad = subprocess.run([sys.executable, "-m", "detops"], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=300)
    assert bad.returncode != 0 and "usage" in bad.stderr


def test_constants_exposed():
    consts = detops.info()["constants"]
    assert set(CONSTANTS) <= set(consts)
    for name in CONSTANTS:
        value = _lib.constant(name)
        assert isinstance(value, int) and value > 0 and value == consts[name]
    with pytest.raises(KeyError):
        _lib.constant("no_such_constant")


def test_lanes_follow_the_constants():
    """REDUCTION_ORDER.md §2 from the exposed constants: L is a power of two between vec*min and vec*max
    threads, at least ceil(n / vec) threads' worth when that fits, and a function of n alone."""
    vec, lo, hi = (_lib.constant(k) for k in ("lane_vector", "min_lane_threads", "max_lane_threads"))
    assert R.lanes(1) == vec * lo and R.lanes(10 ** 9) == vec * hi
    previous = 0
    for n in sorted(set(range(1, 600)) | set(R.lane_threshold_sizes()) | {10 ** 6}):
        L = R.lanes(n)
        assert L & (L - 1) == 0 and vec * lo <= L <= vec * hi and L >= previous
        assert L >= n or L == vec * hi
        previous = L


def test_cuda_kernels_registered_iff_built():
    built = detops.has_cuda_kernels()
    for op in NORM_SOFTMAX_OPS:
        name = f"detops::{op}"
        assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CPU"), name
        assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA") == built, name
        # every op has a fake (meta) kernel for torch.compile
        assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "Meta"), name
