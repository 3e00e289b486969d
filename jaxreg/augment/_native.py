"""Native XLA:CPU kernel of jaxreg.augment (the batched bilinear warp): built on first use, cached.

XLA:CPU runs a gather as a scalar loop with index arithmetic per element, and a rotated warp
of a large batch spends most of its time there and in page faults of its fresh output buffer
(benchmarks/augment.py, Workload B). `_warp_native.cc` does the same arithmetic as
`_warp.apply_batch_xla` in one pass, as an XLA FFI custom call. It is compiled here, the first
time a batched bilinear warp is traced, with the system C++ compiler against the FFI headers
that ship with the installed jaxlib, and cached on disk under a key of everything the build
depends on (source, compiler, flags, jaxlib version, CPU). When it cannot be built (no
compiler, no `jax.ffi`), or when `JAXREG_NATIVE=0` is set, the XLA path runs: same values,
slower on the CPU. GPU and TPU programs always use the XLA path (`lax.platform_dependent`).

`jax.export` refuses CPU programs that hold custom calls without a compatibility guarantee,
this one included: export CPU programs that contain batched warps with `JAXREG_NATIVE=0` set
(or with `jax.export.DisabledSafetyCheck.custom_call("jaxreg_warp_bilinear")`, for use on
machines where jaxreg registers the same kernel). Programs exported for GPU or TPU do not
contain it.

Environment:
  JAXREG_NATIVE: "0" (or "false", "off", "no") disables the native kernel; values other than
    these and "1"/"true"/"on"/"yes" raise ValueError (also for JAXREG_HUGE_PAGES).
  JAXREG_HUGE_PAGES: "1" makes the kernel advise transparent huge pages (Linux
    `madvise(MADV_HUGEPAGE)`) for the 2 MiB pages inside an output of 8 MiB or more, which
    then fault in 2 MiB at a time instead of 4 KiB. Off by default: it roughly halved the
    time of a 64 x 224x224x3 warp on the VM measured in most runs, but on a VM that returns
    freed memory to its host a huge-page fault can take ~30x longer, and whole runs were
    2-4x slower than without it.
  JAXREG_CACHE_DIR: where built kernels are kept (default `~/.cache/jaxreg/native`; a
    per-user folder in the temporary directory when that is not writable).
  CXX: the C++ compiler (default: the first of c++, g++, clang++ on PATH).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import jax
import jaxlib

__all__ = []  # private module

SOURCE = Path(__file__).with_name("_warp_native.cc")
WARP_TARGET = "jaxreg_warp_bilinear"
_SYMBOL = "JaxregWarpBilinear"
MODES = {"constant": 0, "edge": 1, "reflect": 2, "symmetric": 3, "wrap": 4}
_BASE_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-pthread")


_ON = ("1", "true", "on", "yes")
_OFF = ("0", "false", "off", "no")


def _env_flag(name: str, default: bool) -> bool:
    """The on/off environment variable `name` (unset or empty: `default`).

    Raises:
      ValueError: a value other than 1/true/on/yes or 0/false/off/no.
    """
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise ValueError(
        f"{name} must be one of {', '.join(_ON)} (on) or {', '.join(_OFF)} (off); "
        f"got {os.environ[name]!r}."
    )


def enabled() -> bool:
    """False when the environment variable JAXREG_NATIVE turns the native kernel off."""
    return _env_flag("JAXREG_NATIVE", True)


def huge_pages() -> bool:
    """True when JAXREG_HUGE_PAGES=1 turns the kernel's huge-page advice on (read at trace time)."""
    return _env_flag("JAXREG_HUGE_PAGES", False)


def cache_dir() -> Path:
    """Folder for built kernels: $JAXREG_CACHE_DIR, else ~/.cache/jaxreg/native.

    The default sits next to the XLA cache of the `jaxreg` command, ~/.cache/jaxreg/xla.
    """
    explicit = os.environ.get("JAXREG_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return Path.home() / ".cache" / "jaxreg" / "native"


def compiler() -> list[str] | None:
    """The C++ compiler command ($CXX, else c++, g++ or clang++ on PATH), or None."""
    cxx = os.environ.get("CXX")
    if cxx:
        return shlex.split(cxx)
    for name in ("c++", "g++", "clang++"):
        path = shutil.which(name)
        if path:
            return [path]
    return None


def threads() -> int:
    """CPU cores this process may run on (the kernel's thread count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(directory, os.W_OK | os.X_OK)


def _user() -> str:
    try:
        return str(os.getuid())
    except AttributeError:  # no uid (Windows)
        return os.environ.get("USERNAME", "user")


def _cpu_fingerprint() -> str:
    """What -march=native depends on: the CPU's model and feature flags where Linux lists them."""
    parts = [platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features", "model name")):
                    parts.append(line.strip())
                if line.strip() == "":  # the first processor is enough
                    break
    except OSError:
        pass
    return "\n".join(parts)


def _compiler_version(cxx: list[str]) -> str:
    """The compiler's own version text (part of the cache key; empty when it prints none)."""
    res = subprocess.run(cxx + ["--version"], capture_output=True, text=True, timeout=60)
    return (res.stdout + res.stderr).strip()


def _compile(cxx: list[str], flags: list[str], include: str, target: Path) -> None:
    """Compiles SOURCE into `target` atomically (a temporary file, then a rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        cmd = cxx + flags + ["-I", include, str(SOURCE), "-o", tmp]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if res.returncode != 0:
            raise OSError(f"`{shlex.join(cmd)}` failed: {res.stderr.strip()[-2000:]}")
        os.replace(tmp, target)  # concurrent builders write identical files; the last one wins
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def build(directory: Path | None = None) -> Path:
    """Builds the kernel library if its cached copy is missing; returns the library's path.

    Raises:
      OSError: no C++ compiler, or the compilation failed (its error output is in the message).
    """
    cxx = compiler()
    if cxx is None:
        raise OSError("no C++ compiler found (set CXX, or install g++ or clang++)")
    include = jax.ffi.include_dir()
    version = _compiler_version(cxx)
    source = SOURCE.read_bytes()
    if directory is None:
        directory = cache_dir()
        if not _writable(directory):  # e.g. a read-only home: a per-user folder under /tmp
            directory = Path(tempfile.gettempdir()) / f"jaxreg-{_user()}"
    directory = Path(directory)
    # -march=native first (the kernel's coordinate loop vectorises with the CPU's widest units);
    # compilers or CPUs without it get the portable build.
    for extra in (["-march=native"], []):
        flags = list(_BASE_FLAGS) + extra
        key = hashlib.sha256(
            "\0".join(
                [
                    source.hex(),
                    shlex.join(cxx),
                    version,
                    " ".join(flags),
                    jax.__version__,
                    getattr(jaxlib, "__version__", "?"),
                    _cpu_fingerprint(),
                ]
            ).encode()
        ).hexdigest()[:20]
        target = directory / f"warp_native-{key}.so"
        if target.exists():
            return target
        try:
            _compile(cxx, flags, include, target)
            return target
        except OSError:
            if not extra:
                raise
    raise AssertionError("unreachable")


@functools.cache
def _register(path: str) -> str:
    lib = ctypes.CDLL(path)
    jax.ffi.register_ffi_target(
        WARP_TARGET, jax.ffi.pycapsule(getattr(lib, _SYMBOL)), platform="cpu"
    )
    _LOADED.append(lib)  # keeps the library referenced for the life of the process
    return WARP_TARGET


_LOADED: list[ctypes.CDLL] = []


@functools.cache
def _warp_target_once() -> str | None:
    if not hasattr(jax, "ffi") or not hasattr(jax.ffi, "include_dir"):
        return None  # jax too old for the FFI used here
    try:
        return _register(str(build()))
    except (OSError, subprocess.SubprocessError, AttributeError) as err:
        warnings.warn(
            f"jaxreg: the native CPU warp is not available ({err}); batched rotations and other "
            "bilinear warps use XLA's gather path (same values, slower on the CPU). Set "
            "JAXREG_NATIVE=0 to skip the build.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def warp_target() -> str | None:
    """Name of the registered native warp custom call, or None to use the XLA path.

    Builds (once per machine) and registers the kernel on the first call in a process. Returns
    None when JAXREG_NATIVE turns it off or it cannot be built (with one RuntimeWarning).
    """
    if not enabled():
        return None
    return _warp_target_once()
