"""Builds detops._C: the CPU kernels always, the CUDA kernels when torch has CUDA and nvcc is found.

Numerics flags are pinned here and nowhere else (docs/REDUCTION_ORDER.md §1): no fast-math, no FMA
contraction, IEEE division and square root, no flush-to-zero. They are echoed by `python -m detops info`.
Environment: DETOPS_CUDA_ARCH (default "90a") picks the CUDA target; DETOPS_NO_CUDA=1 builds CPU only;
DETOPS_HOST_FMA=0 builds the host code without -mfma.
"""
import glob
import os
import subprocess
import sys

from setuptools import setup

try:
    from torch.utils import cpp_extension
except ImportError:
    sys.exit("detops compiles against the torch you run, which this build environment does not have (pip's build "
             "isolation hides it): install torch, then run `pip install --no-build-isolation .` (or "
             "`bash scripts/setup_env.sh`, which does both)")

VERSION = "0.1.0"
ROOT = os.path.dirname(os.path.abspath(__file__))

HOST_FLAGS = ["-O3", "-std=c++17", "-ffp-contract=off", "-fno-fast-math"]


def host_has_fma():
    """x86-64 build host with the FMA instruction set: -mfma lets det_fma (the one fused operation of the order,
    §1/§7) be an instruction instead of a call to the C library's fmaf (same bits either way; -ffp-contract=off
    still forbids contracting anything else). pip builds on the machine that runs the kernels; DETOPS_HOST_FMA=0
    leaves the flag out (a build meant for other x86-64 machines)."""
    import platform
    if os.environ.get("DETOPS_HOST_FMA") == "0":
        return False
    if platform.machine() not in ("x86_64", "AMD64") or not os.path.exists("/proc/cpuinfo"):
        return False
    with open("/proc/cpuinfo") as f:
        return any(line.startswith("flags") and " fma " in line + " " for line in f)


if host_has_fma():
    HOST_FLAGS.append("-mfma")
NVCC_NUMERICS = ["--fmad=false", "-prec-div=true", "-prec-sqrt=true", "-ftz=false"]


def _runtime_libstdcxx(compiler):
    """The libstdc++ a shared library built by `compiler` loads at run time (None: static or no compiler)."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        src, lib = os.path.join(tmp, "probe.cpp"), os.path.join(tmp, "probe.so")
        with open(src, "w") as f:
            f.write("#include <sstream>\nstd::string probe(int x) { std::ostringstream s; s << x; return s.str(); }\n")
        try:
            subprocess.check_call([compiler, "-shared", "-fPIC", "-O1", src, "-o", lib],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            out = subprocess.check_output(["ldd", lib], stderr=subprocess.DEVNULL).decode()
        except (OSError, subprocess.CalledProcessError):
            return None
    for line in out.splitlines():
        if "libstdc++" in line and "=>" in line:
            return os.path.realpath(line.split("=>")[1].split("(")[0].strip())
    return None


def pick_host_compiler():
    """Build with a C++ compiler whose output links the libstdc++ that this Python process (torch) runs with.

    Seen on the GPU box: CXX=/opt/gcc/bin/g++ is a wrapper that links libstdc++ statically into the
    extension; the extension's own iostream copy then crashed (SIGSEGV) whenever an error message formatted a
    number, so every refusal of bad input killed the process instead of raising. When CXX's output does not
    load the same libstdc++ as torch, we switch to a system compiler whose output does, and say so.
    """
    if not sys.platform.startswith("linux"):
        return
    import torch  # noqa: F401  (loads the libstdc++ the extension will run against)
    with open("/proc/self/maps") as maps:
        loaded = next((line.split()[-1] for line in maps if "libstdc++.so" in line), None)
    if loaded is None:
        return
    loaded = os.path.realpath(loaded)
    current = os.environ.get("CXX", "c++")
    if _runtime_libstdcxx(current) == loaded:
        return
    for cxx in ("/usr/bin/g++", "/usr/bin/c++", "g++", "c++"):
        if _runtime_libstdcxx(cxx) == loaded:
            cc = cxx[: -len("g++")] + "gcc" if cxx.endswith("g++") else cxx[: -len("c++")] + "cc"
            print(f"detops setup: CXX={current} does not link the loaded {loaded}; building with {cxx} / {cc}")
            os.environ["CXX"], os.environ["CC"] = cxx, cc
            return
    print(f"detops setup: warning: no C++ compiler found whose output links the loaded {loaded}")


def cuda_wanted():
    if os.environ.get("DETOPS_NO_CUDA") == "1":
        return False
    return cpp_extension.CUDA_HOME is not None and getattr(__import__("torch").version, "cuda", None) is not None


def cutlass_includes():
    """CUTLASS / CuTe headers from the nvidia-cutlass wheel (Hopper wgmma GEMM), if installed."""
    try:
        import cutlass_library
    except ImportError:
        return []
    base = os.path.join(os.path.dirname(cutlass_library.__file__), "source")
    return [os.path.join(base, "include"), os.path.join(base, "tools", "util", "include")]


def sources(with_cuda):
    cpp = sorted(glob.glob("csrc/**/*.cpp", recursive=True))
    cpp = [s for s in cpp if with_cuda or not s.endswith("_cuda.cpp")]
    cu = sorted(glob.glob("csrc/**/*.cu", recursive=True)) if with_cuda else []
    return cpp + cu


def extension():
    pick_host_compiler()
    with_cuda = cuda_wanted()
    arch = os.environ.get("DETOPS_CUDA_ARCH", "90a")
    nvcc = ["-O3", "-std=c++17", f"-gencode=arch=compute_{arch},code=sm_{arch}", "--expt-relaxed-constexpr",
            "-lineinfo"] + NVCC_NUMERICS
    defines = [("DETOPS_VERSION", f'"{VERSION}"'), ("DETOPS_HOST_FLAGS", '"' + " ".join(HOST_FLAGS) + '"'),
               ("DETOPS_NVCC_FLAGS", '"' + " ".join(NVCC_NUMERICS + [f"sm_{arch}"]) + '"')]
    kwargs = dict(name="detops._C", sources=sources(with_cuda), include_dirs=[os.path.join(ROOT, "csrc")],
                  extra_compile_args={"cxx": HOST_FLAGS, "nvcc": nvcc}, define_macros=defines)
    if with_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0a")
        kwargs["include_dirs"] += cutlass_includes()
        kwargs["define_macros"].append(("DETOPS_WITH_CUDA", None))
        kwargs["libraries"] = ["cuda"]
        return cpp_extension.CUDAExtension(**kwargs)
    kwargs["extra_compile_args"] = {"cxx": HOST_FLAGS}
    return cpp_extension.CppExtension(**kwargs)


# Metadata (name, dependencies, the transformers range) lives in pyproject.toml; the extension is built here.
setup(
    version=VERSION,
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
