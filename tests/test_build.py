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
from detops.testing import reference as R

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


# ---- packaging: the source distribution, and plain `pip install .` -------------------------------------------
def _sdist(tmp_path):
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path)], cwd=ROOT, check=True,
                   capture_output=True, timeout=600)
    (archive,) = tmp_path.glob("detops-*.tar.gz")
    return archive


def test_sdist_is_complete(tmp_path):
    """Every source file the build and the tests need is in the sdist (it once lacked every header and .cu)."""
    import glob
    import tarfile
    archive = _sdist(tmp_path)
    with tarfile.open(archive) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    wanted = {"setup.py", "pyproject.toml", "MANIFEST.in", "README.md"}
    for pattern in ("csrc/**/*.h", "csrc/**/*.cuh", "csrc/**/*.cu", "csrc/**/*.cpp", "detops/**/*.py",
                    "tests/*.py", "docs/**/*.md", "examples/**/*.py", "examples/data/*.txt"):
        wanted |= {os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern), recursive=True)}
    assert not wanted - names, sorted(wanted - names)


@pytest.mark.slow
def test_sdist_builds_and_gives_the_same_bits(tmp_path):
    """The sdist builds (CPU kernels, against this torch) and its detops gives the in-tree build's bits."""
    archive = _sdist(tmp_path)
    site = tmp_path / "site"
    env = dict(os.environ, DETOPS_NO_CUDA="1", MAX_JOBS=str(os.cpu_count() or 2))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "--target",
                    str(site), str(archive)], check=True, capture_output=True, env=env, timeout=1800)
    probe = ("import torch, detops; g = torch.Generator().manual_seed(0); a = torch.randn(7, 300, generator=g); "
             "b = torch.randn(300, 5, generator=g); print(detops.__file__); "
             "torch.save((detops.mm(a, b), detops.rms_norm(a, (300,)), detops.softmax(a)), 'out.pt')")
    run_env = dict(os.environ, PYTHONPATH=str(site))
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, env=run_env,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(str(site))  # the sdist's build, not this tree's
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 300, generator=g), torch.randn(300, 5, generator=g)
    theirs = torch.load(tmp_path / "out.pt")
    ours = (detops.mm(a, b), detops.rms_norm(a, (300,)), detops.softmax(a))
    assert all(torch.equal(x, y) for x, y in zip(theirs, ours))


def test_isolated_build_says_what_to_run():
    """Plain `pip install .` builds in an isolated environment without the user's torch: setup.py stops with one
    sentence naming the command to run instead (it used to download another torch and fail on CUDA headers)."""
    code = "import sys; sys.modules['torch'] = None; sys.argv = ['setup.py', '--version']; exec(open('setup.py').read())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "pip install --no-build-isolation ." in out.stderr and len(out.stderr.strip().splitlines()) == 1
