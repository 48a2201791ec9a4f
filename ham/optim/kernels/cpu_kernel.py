"""CPU: the hyperbolic step as one fused pass over a list of tensors, in C (cpu_source.py) loaded through ctypes.

Built lazily on first use with the system C compiler and cached on disk (``$HAM_KERNEL_CACHE``, default
``~/.cache/ham/kernels``) under a key of source, compiler and CPU features (it is built with -march=native, so a
cache shared between different machines must not hand one the other's binary). A cold build takes 1-3 s, a
cached load a few ms; both happen once per process. lr, alpha, beta and c are plain call arguments: nothing is
ever rebuilt for a new value. If no compiler works, ``available()`` turns False and callers use the foreach path.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch

from ham.optim import cpu_threads
from ham.optim.kernels.cpu_source import SOURCE as _BASE_SOURCE

# The AVX2 table-exp path (1.14 ulp, ~10 % faster at 1 thread) is opt-in: HAM_CPU_TABLE_EXP=1 when the kernel is
# built. Off by default because its results differ from the generic loop's in the last bits, and every stored
# result (results/proxy*, check_numbers) was made with the generic loop: turning it on by default would make
# them stop reproducing bit for bit (tests/test_stored_results.py).
SOURCE = ("#define HAM_TABLE_EXP 1\n" if os.environ.get("HAM_CPU_TABLE_EXP") == "1" else "") + _BASE_SOURCE

DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
SIGN_CODES = {None: 0, torch.int8: 1, torch.float32: 2}  # None: the sign of the parameter itself

# Compiler flag sets, best first; the first that builds is used (e.g. no OpenMP -> single-threaded kernel; a
# compiler without -march=native, e.g. some clang targets -> portable code). On x86, -mprefer-vector-width=512
# makes gcc/clang use the full 512-bit registers where the CPU has AVX-512 (their default stops at 256 bits,
# half the work per instruction for this compute-heavy loop); elsewhere it changes nothing.
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")
_NATIVE = ["-march=native", "-mprefer-vector-width=512"] if _X86 else ["-march=native"]
_FLAG_SETS = (
    [*_NATIVE, "-fopenmp"], ["-march=native", "-fopenmp"], ["-fopenmp"],
    [*_NATIVE, "-fopenmp-simd"], ["-march=native", "-fopenmp-simd"], ["-fopenmp-simd"], [],
)
# -ffp-contract=off: the formula is evaluated in the reference's operation order (the exp's FMAs are explicit)
_BASE_FLAGS = ["-O3", "-std=c11", "-ffp-contract=off", "-fno-trapping-math", "-fPIC", "-shared"]

_LOCK = threading.Lock()
_STATE: dict[str, object] = {}  # "lib": the loaded library or None once a build failed; "error": why
MIN_ELEMENTS_PER_THREAD = 1 << 16  # as in the C source (ham_step)
BUILD_COUNT = [0]  # compiler runs in this process (tests check that lr changes never add any)

FALLBACK_WARNING = (
    "HAM: the fused CPU kernel could not be built ({error}); using the slower foreach path (same results). "
    "Fix: install a C compiler (Debian/Ubuntu: apt-get install gcc; Fedora: dnf install gcc; macOS: "
    "xcode-select --install; conda: conda install -c conda-forge c-compiler) or point CC at one, e.g. CC=clang. "
    "To silence this warning and keep the foreach path, set HAM_CPU_FUSED=never."
)


def _cache_dir() -> Path:
    if os.environ.get("HAM_KERNEL_CACHE"):
        return Path(os.environ["HAM_KERNEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ham" / "kernels"


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "gcc", "cc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor() + platform.machine()


def _build(cc: str) -> Path:
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    key = hashlib.sha256("\0".join([SOURCE, cc, version, _cpu_signature(), str(_FLAG_SETS)]).encode()).hexdigest()
    target = _cache_dir() / f"ham_step_{key[:20]}.so"
    if target.exists():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError:  # read-only home: a private temporary cache still saves rebuilding in later processes
        uid = os.getuid() if hasattr(os, "getuid") else 0
        target = Path(tempfile.gettempdir()) / f"ham_kernels_{uid}" / target.name
        target.parent.mkdir(mode=0o700, exist_ok=True)
        if target.parent.stat().st_uid != uid:  # never load a library someone else could have placed there
            raise RuntimeError(f"{target.parent} belongs to another user") from None
        if target.exists():
            return target
    errors = []
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / "ham_step.c"
        src.write_text(SOURCE)
        for flags in _FLAG_SETS:
            out = Path(tmp) / "ham_step.so"
            define = "-DHAM_FLAGS=" + '"' + " ".join([*_BASE_FLAGS, *flags]) + '"'  # reported by build_info()
            cmd = [cc, *_BASE_FLAGS, *flags, define, str(src), "-o", str(out)]
            BUILD_COUNT[0] += 1
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
            if proc.returncode == 0:
                os.replace(out, target)  # atomic: concurrent processes (DDP ranks) never see a partial file
                return target
            errors.append(" ".join(proc.stderr.split())[:200])
    raise RuntimeError("C compiler failed: " + " | ".join(errors))


def _load():
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (tried $CC, gcc, cc, clang)")
    lib = ctypes.CDLL(str(_build(cc)))
    lib.ham_step.restype = ctypes.c_int
    lib.ham_step.argtypes = [ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                             ctypes.c_int, ctypes.c_int, ctypes.c_double, ctypes.c_double, ctypes.c_double,
                             ctypes.c_double, ctypes.c_int, ctypes.c_int]
    lib.ham_supports.restype = ctypes.c_int
    lib.ham_supports.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.ham_build_info.restype = ctypes.c_char_p
    lib.ham_build_info.argtypes = []
    _STATE["cc"] = cc
    return lib


def library():
    """The loaded kernel library (building it on first use), or None if it cannot be built here."""
    if "lib" not in _STATE:
        with _LOCK:
            if "lib" not in _STATE:
                try:
                    _STATE["lib"] = _load()
                except Exception as e:  # noqa: BLE001 -- any build/load failure means: use the portable path
                    _STATE["lib"], _STATE["error"] = None, f"{type(e).__name__}: {e}"
                    warnings.warn(FALLBACK_WARNING.format(error=_STATE["error"]), RuntimeWarning, stacklevel=3)
    return _STATE["lib"]


def available() -> bool:
    return library() is not None


def supports(dtype: torch.dtype, sign_dtype: torch.dtype | None) -> bool:
    lib = library()
    return (lib is not None and dtype in DTYPE_CODES and sign_dtype in SIGN_CODES
            and bool(lib.ham_supports(DTYPE_CODES[dtype], SIGN_CODES[sign_dtype])))


def build_info() -> dict[str, str]:
    """How the loaded kernel was built: compiler path and version, the exact flags, the vector ISA the compiler
    targeted, OpenMP; {"error": ...} if it could not be built here."""
    lib = library()
    if lib is None:
        return {"error": str(_STATE.get("error"))}
    info = {"cc": str(_STATE.get("cc"))}
    for part in lib.ham_build_info().decode().split("; "):
        key, _, value = part.partition("=")
        info[key] = value.strip()
    if info.get("compiler", "")[:1].isdigit():  # gcc's __VERSION__ is the bare number
        info["compiler"] = f"{Path(info['cc']).name} {info['compiler']}"
    return info


def threads() -> int:
    """Threads the kernel uses for a large step: torch's setting at call time (torch.get_num_threads(), which the
    trainer sets deliberately), never more than this rank's share of the cores it may use (the library's rule in
    ham/optim/cpu_threads.py, the trainer's too): N ranks on one host each get cores // N, one core -> one thread.
    (The C side also gives each thread at least 2^16 elements, so small steps run on one thread.)"""
    return cpu_threads.kernel_threads(torch.get_num_threads())


def _pointer_array(tensors):
    return (ctypes.c_void_p * len(tensors))(*[t.data_ptr() for t in tensors])


def cpu_hyperbolic_(params, grads, signs, *, lr: float, alpha: float, beta: float, clamp: float,
                    beta_where_grad: bool) -> bool:
    """Step contiguous CPU tensors of ONE dtype (grads of that dtype; signs, if given, all int8 or all float32)
    in place; clamp = inf for no bound. Returns False, touching nothing, if the kernel is unavailable here."""
    sign_dtype = signs[0].dtype if signs is not None else None
    if not params or not supports(params[0].dtype, sign_dtype):
        return False
    n = len(params)
    offsets = (ctypes.c_int64 * (n + 1))(*itertools.accumulate([p.numel() for p in params], initial=0))
    # the C side gives each thread >= 2^16 elements: below 2^17 the answer is one thread, without the ~30 us of
    # environment reads that threads() costs (a small model's whole step is a few hundred us)
    n_threads = 1 if offsets[n] < 2 * MIN_ELEMENTS_PER_THREAD else threads()
    rc = library().ham_step(
        n, _pointer_array(params), _pointer_array(grads),
        _pointer_array(signs) if signs is not None else None, offsets,
        DTYPE_CODES[params[0].dtype], SIGN_CODES[sign_dtype], float(lr), float(alpha), float(beta), float(clamp),
        int(bool(beta_where_grad)), n_threads)
    if rc != 0:
        raise RuntimeError(f"HAM CPU kernel rejected dtype {params[0].dtype} / signs {sign_dtype}")
    return True
