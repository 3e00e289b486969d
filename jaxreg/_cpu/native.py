"""The native XLA:CPU kernel of the batched bilinear warp (`warp_native.cc`): built, verified, cached.

`warp_native.cc` does the arithmetic of `jaxreg.augment._warp.apply_batch_xla` in one pass, as
an XLA FFI custom call, where XLA:CPU would run the same warp as scalar gather loops.

When it is built: only when a program that holds a float32 batched bilinear warp is lowered
for the CPU (the CPU lowering rule of the warp primitive in `jaxreg._cpu.warp` asks
`warp_target`) and the switches allow it (`jaxreg._cpu`: `JAXREG_CPU_WORKAROUNDS`,
`JAXREG_NATIVE`). Lowering for GPU or TPU (`jax.jit(...).lower(lowering_platforms=...)`,
`jax.export`) never builds, loads or calls it: those programs use the XLA path.

What is compiled and where it goes: `warp_native.cc`, with the system C++ compiler, against
the FFI headers that ship with the installed jaxlib; first with `-march=native`, then (if that
does not compile) with portable flags. The shared library `warp_native-<key>.so` goes into the
cache folder, `<key>` being a hash of everything the build depends on (source, compiler
command and version, flags, jax/jaxlib versions, CPU model and flags). Next to it,
`warp_native-<key>.so.json` records the library's sha256, the result of its self-test, the
compiler, flags and versions. The cache folder is `$JAXREG_CACHE_DIR`, else `native` under
jaxreg's cache root (`$XDG_CACHE_HOME/jaxreg` or `~/.cache/jaxreg`, next to the CLI's XLA
cache); only when that cannot be created (e.g. a read-only home), `<tmp>/jaxreg-<uid>/native`
(`_paths.temp_private_dir`). A folder that exists but fails the checks below is refused, not
replaced by another one. Temporary files of a build that was killed midway are deleted by the
next build an hour later.

How it is verified before anything is loaded:

- The cache folder is created with mode 0700 and used only if it is a real directory owned by
  this user and not writable by group or others (`jaxreg._paths`). A folder that fails this
  (say, one another user created first in the temporary directory) is refused: one
  RuntimeWarning names it and why, nothing in it is read or loaded, and the XLA path runs.
- A build compiles into a temporary name in that folder; the new library is then loaded, in a
  subprocess (which survives a crash, e.g. SIGBUS, and is killed after `SELFTEST_TIMEOUT`
  seconds), by that exact path, registered, and a small warp through the custom call is
  compared with the XLA path (every border mode, three shapes). Only a library that passes
  gets its record (written first) and is then renamed into place, atomically.
- Before it is loaded in the user's process, the library and its record must again be regular
  files of this user that nobody else can write, the library's sha256 must equal the record's,
  and the record must say the self-test passed. A cached library that fails any of this (a
  truncated file, a file of another user, a forged or missing record) is never loaded: it is
  deleted and rebuilt.
- The compiler runs with a timeout (`JAXREG_NATIVE_BUILD_TIMEOUT` seconds per attempt, 60 by
  default; its `--version` at most 10 s). Only a compile error leads to the second attempt
  with portable flags; a timeout or a failed self-test ends the build.

Every failure along the way (no compiler, a compile error, a timeout, a failed self-test, a
refused folder, a load or registration error) gives one RuntimeWarning per process and the
XLA path: same values, slower on the CPU. `native_status()` says which path CPU programs got.
Gradients and forward-mode derivatives always come from the XLA path.

`jax.export` refuses CPU programs that hold custom calls without a compatibility guarantee,
this one included: export CPU programs that contain batched warps with `JAXREG_NATIVE=0` (or
`JAXREG_CPU_WORKAROUNDS=0`) set, or with
`jax.export.DisabledSafetyCheck.custom_call("jaxreg_warp_bilinear")` for use on machines where
jaxreg registers the same kernel. Programs exported for GPU or TPU do not contain it.

Environment (read when a CPU program is lowered; the switches are described in `jaxreg._cpu`):
  JAXREG_HUGE_PAGES: "1" makes the kernel advise transparent huge pages (Linux
    `madvise(MADV_HUGEPAGE)`) for the 2 MiB pages inside an output of 8 MiB or more, which
    then fault in 2 MiB at a time instead of 4 KiB. Off by default: on a VM that returns freed
    memory to its host it made whole runs slower (benchmarks/results/cpu_seam.md). Parsed like
    the switches: other values than 1/true/on/yes and 0/false/off/no raise ValueError.
  JAXREG_CACHE_DIR: the folder for built kernels (see above).
  JAXREG_NATIVE_BUILD_TIMEOUT: seconds one compiler run may take (default 60); a positive
    number, else ValueError.
  CXX: the C++ compiler command (default: the first of c++, g++, clang++ on PATH).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import jax
import jaxlib
import numpy as np

from jaxreg import _paths
from jaxreg._cpu import switch

__all__ = []  # private module

SOURCE = Path(__file__).with_name("warp_native.cc")
WARP_TARGET = "jaxreg_warp_bilinear"
_SYMBOL = "JaxregWarpBilinear"
MODES = {"constant": 0, "edge": 1, "reflect": 2, "symmetric": 3, "wrap": 4}
# -ffp-contract=off: source coordinates round as `_warp._coords` computes them (one dot, no
# fused multiply-add), so the kernel's taps are the XLA path's.
_BASE_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-pthread", "-ffp-contract=off")

BUILD_TIMEOUT = 60.0  # seconds per compiler run (JAXREG_NATIVE_BUILD_TIMEOUT overrides)
VERSION_TIMEOUT = 10.0  # seconds for `$CXX --version`
SELFTEST_TIMEOUT = 120.0  # seconds for the self-test subprocess (jax import + one compile)
SELFTEST_ATOL = 1e-4  # the kernel and the XLA path agree to ~1e-6 (multiply-add contraction)
_RECORD_MAX_BYTES = 1 << 16
_RECORD_FORMAT = 1


class BuildError(OSError):
    """The kernel could not be built: no compiler, a compile error, or a failed self-test."""


class BuildTimeout(BuildError):
    """A compiler run or the self-test took longer than its timeout (not retried)."""


class SelfTestError(BuildError):
    """A freshly built library crashed or gave other values than the XLA path in its self-test."""


class UntrustedLibraryError(OSError):
    """A cached library without a matching record of a passed self-test (deleted and rebuilt)."""


# --- Environment ------------------------------------------------------------------------------


def enabled() -> bool:
    """False when `JAXREG_CPU_WORKAROUNDS` or `JAXREG_NATIVE` turns the native kernel off."""
    return switch.native_enabled()


def huge_pages() -> bool:
    """True when JAXREG_HUGE_PAGES=1 turns the kernel's huge-page advice on (read at trace time)."""
    return switch.env_flag("JAXREG_HUGE_PAGES", False)


def build_timeout() -> float:
    """Seconds one compiler run may take: $JAXREG_NATIVE_BUILD_TIMEOUT, else `BUILD_TIMEOUT`.

    Raises:
      ValueError: the variable is set to something other than a positive number.
    """
    raw = os.environ.get("JAXREG_NATIVE_BUILD_TIMEOUT", "").strip()
    if not raw:
        return BUILD_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"JAXREG_NATIVE_BUILD_TIMEOUT must be a positive number of seconds; got {raw!r}."
        )
    return value


def threads() -> int:
    """CPU cores this process may run on (the kernel's thread count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def cache_dir() -> Path:
    """The private folder for built kernels, created (mode 0700) if missing.

    $JAXREG_CACHE_DIR, else `native` under `_paths.cache_root()`; when that cannot be created,
    `_paths.temp_private_dir("native")`.

    Raises:
      UnsafePathError: the folder exists but is not private to this user (or is a link).
      OSError: neither folder can be created.
    """
    explicit = os.environ.get("JAXREG_CACHE_DIR", "").strip()
    primary = Path(explicit) if explicit else _paths.cache_root() / "native"
    try:
        return _paths.private_dir(primary)
    except _paths.UnsafePathError:
        raise  # somebody else's folder: refused, not worked around
    except OSError:
        return _paths.temp_private_dir("native")


def compiler() -> list[str] | None:
    """The C++ compiler command ($CXX, else c++, g++ or clang++ on PATH), or None.

    Raises:
      BuildError: $CXX cannot be split into words (e.g. an unbalanced quote).
    """
    cxx = os.environ.get("CXX", "").strip()
    if cxx:
        try:
            words = shlex.split(cxx)
        except ValueError as err:
            raise BuildError(f"CXX={cxx!r} is not a valid command line ({err})") from None
        return words or None
    for name in ("c++", "g++", "clang++"):
        path = shutil.which(name)
        if path:
            return [path]
    return None


# --- Running the compiler ---------------------------------------------------------------------


def _run(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """Runs `cmd` capturing its output; on timeout kills its whole process group.

    A compiler driver starts children (cc1plus, ld) that keep the output pipes open, so
    killing only the driver would leave `communicate` waiting for them.

    Raises:
      BuildTimeout: it ran longer than `timeout` seconds.
      OSError: it could not be started.
    """
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
        **kwargs,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        proc.communicate()
        raise BuildTimeout(f"`{shlex.join(cmd)}` did not finish in {timeout:g} s") from None
    except BaseException:  # e.g. KeyboardInterrupt: its own session did not get the signal
        _kill_group(proc)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _kill_group(proc: subprocess.Popen) -> None:
    if hasattr(os, "killpg"):
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        proc.kill()


def compiler_version(cxx: list[str], timeout: float = VERSION_TIMEOUT) -> str:
    """The compiler's own version text (part of the cache key; empty when it prints none)."""
    res = _run(cxx + ["--version"], timeout)
    return (res.stdout + res.stderr).strip()


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


def flag_sets() -> list[list[str]]:
    """Compiler flags to try, in order: -march=native (the CPU's widest vector units), portable."""
    return [list(_BASE_FLAGS) + ["-march=native"], list(_BASE_FLAGS)]


def library_name(cxx: list[str], version: str, flags: list[str]) -> str:
    """File name of the kernel built by `cxx` (of `version`) with `flags` on this machine."""
    key = hashlib.sha256(
        "\0".join(
            [
                SOURCE.read_bytes().hex(),
                shlex.join(cxx),
                version,
                " ".join(flags),
                jax.__version__,
                getattr(jaxlib, "__version__", "?"),
                _cpu_fingerprint(),
            ]
        ).encode()
    ).hexdigest()[:20]
    return f"warp_native-{key}.so"


def library_names() -> list[str]:
    """File names the kernel would have here, one per entry of `flag_sets()` (runs $CXX --version).

    Raises:
      BuildError: no C++ compiler.
    """
    cxx = _require_compiler()
    version = compiler_version(cxx)
    return [library_name(cxx, version, flags) for flags in flag_sets()]


def _require_compiler() -> list[str]:
    cxx = compiler()
    if cxx is None:
        raise BuildError("no C++ compiler found (set CXX, or install g++ or clang++)")
    return cxx


def _compile(cxx: list[str], flags: list[str], output: Path, timeout: float) -> None:
    cmd = cxx + flags + ["-I", jax.ffi.include_dir(), str(SOURCE), "-o", str(output)]
    try:
        res = _run(cmd, timeout)
    except BuildTimeout:
        raise
    except OSError as err:
        raise BuildError(f"`{shlex.join(cmd)}` could not be run: {err}") from None
    if res.returncode != 0:
        raise BuildError(f"`{shlex.join(cmd)}` failed: {res.stderr.strip()[-2000:]}")


# --- Records and verification -----------------------------------------------------------------


def record_path(library: Path) -> Path:
    """The build record next to `library`: `<library>.json`."""
    return library.with_name(library.name + ".json")


def file_digest(path: Path) -> str:
    """The sha256 of the file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_record(path: Path) -> dict:
    _paths.check_private_file(path)
    if os.path.getsize(path) > _RECORD_MAX_BYTES:
        raise UntrustedLibraryError(f"{path} is too large to be a build record")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UntrustedLibraryError(f"{path} is not a build record ({err})") from None
    if not isinstance(record, dict):
        raise UntrustedLibraryError(f"{path} is not a build record")
    return record


def check_library(library: Path) -> dict:
    """Returns the build record of `library` if the library may be loaded; raises otherwise.

    The library's folder, the library and its record must be private to this user (not links,
    owned by this user, not writable by group or others), the library's sha256 must equal the
    record's, and the record must say that the library passed its self-test.

    Raises:
      FileNotFoundError: the library does not exist.
      UnsafePathError: the folder, the library or its record could be written by somebody else.
      UntrustedLibraryError: no record, or one that does not match or lacks a passed self-test.
    """
    _paths.check_private_dir(library.parent)
    _paths.check_private_file(library)
    record_file = record_path(library)
    try:
        record = _read_record(record_file)
    except FileNotFoundError:
        raise UntrustedLibraryError(f"{library} has no build record") from None
    if record.get("sha256") != file_digest(library):
        raise UntrustedLibraryError(f"{library} does not match its build record (sha256)")
    if record.get("selftest") != "passed":
        raise UntrustedLibraryError(f"{library} has no passed self-test in its build record")
    return record


def _discard(library: Path) -> None:
    """Deletes an untrusted cached library and its record (never loaded)."""
    for path in (library, record_path(library)):
        with contextlib.suppress(OSError):
            os.remove(path)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _record(cxx: list[str], version: str, flags: list[str], library: Path, digest: str) -> dict:
    return {
        "format": _RECORD_FORMAT,
        "library": library.name,
        "sha256": digest,
        "selftest": "passed",
        "source_sha256": hashlib.sha256(SOURCE.read_bytes()).hexdigest(),
        "compiler": shlex.join(cxx),
        "compiler_version": version.splitlines()[0] if version else "",
        "flags": flags,
        "jax": jax.__version__,
        "jaxlib": getattr(jaxlib, "__version__", "?"),
        "python": platform.python_version(),
    }


# --- Self-test --------------------------------------------------------------------------------

_SELFTEST_CODE = "from jaxreg._cpu import native; raise SystemExit(native.main())"


def selftest(library: Path, digest: str, timeout: float = SELFTEST_TIMEOUT) -> None:
    """Loads `library` in a subprocess and compares its warps with the XLA path.

    The subprocess imports this copy of jaxreg, checks that the file still has `digest`,
    registers it and runs `main --selftest` (see `_compare_with_xla`) on the CPU.

    Raises:
      SelfTestError: the subprocess crashed (e.g. SIGBUS), failed or gave other values.
      BuildTimeout: it did not finish in `timeout` seconds.
    """
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.update(
        JAX_PLATFORMS="cpu",
        JAX_ENABLE_COMPILATION_CACHE="false",  # compile the comparison afresh, cache nothing
        JAXREG_CPU_WORKAROUNDS="1",
        JAXREG_NATIVE="1",
        JAXREG_HUGE_PAGES="0",
    )
    cmd = [sys.executable, "-c", _SELFTEST_CODE, "--selftest", str(library), "--sha256", digest]
    try:
        res = _run(cmd, timeout, env=env, cwd=root)
    except BuildTimeout as err:
        raise BuildTimeout(f"the self-test of {library.name} timed out: {err}") from None
    if res.returncode == 0:
        return
    if res.returncode < 0:
        how = f"was killed by {_signal_name(-res.returncode)}"
    else:
        lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
        how = f"failed: {lines[-1] if lines else f'exit status {res.returncode}'}"
    raise SelfTestError(f"the self-test of {library.name} {how}")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _compare_with_xla() -> float:
    """Largest difference between native and XLA warps (all border modes, three shapes)."""
    from jaxreg.augment import _warp  # deferred: jaxreg.augment imports this package

    rng = np.random.default_rng(0)
    cases = [((3, 9, 13, 3), (11, 7)), ((2, 5, 8, 4), (9, 4)), ((2, 1, 7, 2), (4, 5))]
    inputs = []
    for shape, out_hw in cases:
        b = shape[0]
        t, s = rng.uniform(-1.2, 1.2, b), rng.uniform(0.5, 1.6, b)
        ms = np.zeros((b, 3, 3), np.float32)
        ms[:, 0] = np.stack([np.cos(t) * s, np.sin(t) * s, rng.uniform(-5, 5, b)], axis=-1)
        ms[:, 1] = np.stack([-np.sin(t) * s, np.cos(t) * s, rng.uniform(-5, 5, b)], axis=-1)
        ms[:, 2, 2] = 1.0
        ms[0] = np.eye(3)
        fill = np.linspace(0.2, 0.8, shape[-1]).astype(np.float32)
        inputs.append((rng.random(shape, dtype=np.float32), ms, out_hw, fill))

    def both(arrays):
        out = []
        for (x, ms), (_, _, out_hw, fill) in zip(arrays, inputs):
            for mode in MODES:
                kw = {"mode": mode, "fill": fill}
                native = _warp.apply_batch(x, ms, out_hw, native=True, **kw)
                out.append((native, _warp.apply_batch(x, ms, out_hw, native=False, **kw)))
        return out

    results = jax.jit(both)([(x, ms) for x, ms, _, _ in inputs])
    worst = 0.0
    for native, xla in results:
        if native.shape != xla.shape:
            return float("inf")
        diff = np.abs(np.asarray(native, np.float64) - np.asarray(xla, np.float64))
        worst = max(worst, float(np.nanmax(diff)) if np.isfinite(diff).all() else float("inf"))
    return worst


def _no_core_dumps() -> None:
    try:
        import resource
    except ImportError:  # not POSIX
        return
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def main(argv: list[str] | None = None) -> int:
    """`--selftest PATH --sha256 DIGEST`: the self-test subprocess (exit status 0 = passed)."""
    parser = argparse.ArgumentParser(description="Self-test of a built native warp kernel.")
    parser.add_argument("--selftest", metavar="PATH", required=True, help="the built library")
    parser.add_argument("--sha256", required=True, help="the digest the library must have")
    args = parser.parse_args(argv)
    _no_core_dumps()  # a library that crashes on load should not leave a core file behind
    library = Path(args.selftest).absolute()
    _paths.check_private_file(library)
    if file_digest(library) != args.sha256:
        print(f"{library} changed after it was built (sha256)", file=sys.stderr)
        return 2
    _adopt_for_selftest(library)
    worst = _compare_with_xla()
    if not worst <= SELFTEST_ATOL:
        print(f"native warps differ from the XLA path by up to {worst:g}", file=sys.stderr)
        return 1
    return 0


# --- Building ---------------------------------------------------------------------------------


def _build_one(cxx: list[str], version: str, flags: list[str], library: Path, timeout: float):
    """Compiles, self-tests and installs one library: record first, then the library, by rename."""
    fd, name = tempfile.mkstemp(prefix=library.name + ".", suffix=".tmp", dir=library.parent)
    os.close(fd)
    tmp = Path(name)
    tmp_record = tmp.with_name(tmp.name + ".json")
    try:
        _compile(cxx, flags, tmp, timeout)
        os.chmod(tmp, 0o700)  # the linker may have recreated it with the umask's permissions
        _paths.check_private_file(tmp)
        digest = file_digest(tmp)
        selftest(tmp, digest)
        record = _record(cxx, version, flags, library, digest)
        _write_private(tmp_record, json.dumps(record, indent=1) + "\n")
        os.replace(tmp_record, record_path(library))
        os.replace(tmp, library)  # concurrent builders install self-tested files; the last wins
    finally:
        for path in (tmp, tmp_record):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)


_STALE_AFTER = 3600.0  # seconds: temporary files of a build this old were left by a crash


def _remove_stale_temporaries(directory: Path) -> None:
    """Deletes temporary files that builds killed midway left in `directory` (never loaded)."""
    now = time.time()
    for path in directory.glob("warp_native-*.tmp*"):
        with contextlib.suppress(OSError):
            if now - path.lstat().st_mtime > _STALE_AFTER:
                path.unlink()


def build(directory: str | os.PathLike | None = None, *, timeout: float | None = None) -> Path:
    """Returns the path of a verified kernel library, building it when no trusted copy exists.

    A cached library is used only if `check_library` accepts it; an untrusted one is deleted
    and rebuilt. Builds try the flags of `flag_sets()` in order, the next one only after a
    compile error (not after a timeout or a failed self-test). Nothing is loaded into this
    process.

    Args:
      directory: the cache folder (default `cache_dir()`); created with mode 0700 if missing.
      timeout: seconds per compiler run (default `build_timeout()`).

    Raises:
      UnsafePathError: the folder is not private to this user (nothing in it was read).
      BuildError: no compiler, compilation failed, the self-test failed, or a timeout.
      OSError: the folder cannot be created or written.
    """
    timeout = build_timeout() if timeout is None else timeout
    directory = cache_dir() if directory is None else _paths.private_dir(directory)
    cxx = _require_compiler()
    version = compiler_version(cxx, min(VERSION_TIMEOUT, timeout))
    attempts = [(flags, directory / library_name(cxx, version, flags)) for flags in flag_sets()]
    for _, library in attempts:
        try:
            check_library(library)
            return library
        except FileNotFoundError:
            continue
        except OSError:
            _discard(library)  # never loaded; rebuilt below
    _remove_stale_temporaries(directory)
    for i, (flags, library) in enumerate(attempts):
        try:
            _build_one(cxx, version, flags, library, timeout)
            return library
        except (BuildTimeout, SelfTestError):
            raise  # a hanging compiler would hang again; portable flags rarely fix a bad kernel
        except OSError:
            if i == len(attempts) - 1:
                raise
    raise AssertionError("unreachable")


# --- Loading, once per process ----------------------------------------------------------------

_LOADED: list[ctypes.CDLL] = []  # keeps loaded libraries referenced for the life of the process


def _register(library: Path) -> str:
    lib = ctypes.CDLL(str(library))
    _LOADED.append(lib)
    jax.ffi.register_ffi_target(
        WARP_TARGET, jax.ffi.pycapsule(getattr(lib, _SYMBOL)), platform="cpu"
    )
    return WARP_TARGET


class _Loader:
    """What this process decided about the kernel (decided once, on the first CPU lowering)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.asked = False  # a CPU lowering has asked for the kernel
        self.disabled = ""  # which switch turned the kernel off at the latest ask, if any
        self.done = False  # the build/load below has run
        self.target: str | None = None
        self.library: Path | None = None
        self.reason = ""  # why the XLA path runs, when it does


_LOADER = _Loader()


def _describe(err: BaseException) -> str:
    if isinstance(err, _paths.UnsafePathError):
        return f"unsafe cache folder or file, nothing loaded from it: {err}"
    if isinstance(err, BuildTimeout):
        return f"build timed out: {err}"
    if isinstance(err, SelfTestError):
        return f"build failed its self-test: {err}"
    if isinstance(err, OSError):
        return f"build failed: {err}"
    return f"build or load failed: {type(err).__name__}: {err}"


def _load(timeout: float) -> tuple[str | None, Path | None, str]:
    """Builds (if needed), verifies and registers the kernel; (target, library, why not)."""
    if not hasattr(jax, "ffi") or not hasattr(jax.ffi, "include_dir"):
        return None, None, "jax too old for the FFI this kernel uses"
    try:
        library = build(timeout=timeout)
        check_library(library)  # again, right before loading it
        return _register(library), library, ""
    except Exception as err:  # a bad kernel must not break the user's program: XLA path
        reason = _describe(err)
        warnings.warn(
            f"jaxreg: the native CPU warp is not available ({reason}). Batched rotations and "
            "other bilinear warps use XLA's gather path instead (same values, slower on the "
            "CPU). Set JAXREG_NATIVE=0 to skip the native kernel.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None, None, reason


def _adopt_for_selftest(library: Path) -> None:
    """Registers a just-built `library` as this process's kernel (self-test subprocess only)."""
    with _LOADER.lock:
        _LOADER.target, _LOADER.library = _register(library), library
        _LOADER.asked = _LOADER.done = True


def warp_target() -> str | None:
    """Name of the registered native warp custom call, or None to use the XLA path.

    Called by the CPU lowering rule of the batched warp. The first call in a process (with
    the switches on) builds the kernel if needed, verifies it and registers it; when any of
    that fails it warns once (RuntimeWarning) and this returns None from then on.

    Raises:
      ValueError: JAXREG_CPU_WORKAROUNDS, JAXREG_NATIVE or JAXREG_NATIVE_BUILD_TIMEOUT has an
        unknown value.
    """
    on = enabled()
    timeout = build_timeout() if on else BUILD_TIMEOUT
    with _LOADER.lock:
        _LOADER.asked, _LOADER.disabled = True, "" if on else switch.why_native_off()
        if not on:
            return None
        if not _LOADER.done:
            _LOADER.target, _LOADER.library, _LOADER.reason = _load(timeout)
            _LOADER.done = True
        return _LOADER.target


def native_status() -> dict[str, str | None]:
    """Which path the batched bilinear warps of CPU programs lowered in this process took.

    Returns:
      `{"warp": ..., "library": ...}`: "warp" is "native", "xla (disabled by
      JAXREG_NATIVE=0)" (or by JAXREG_CPU_WORKAROUNDS=0), "xla (<why the kernel is not
      available>)" or "not used yet" (no CPU program with a float32 batched bilinear warp
      was lowered); "library" is the loaded kernel's path when "warp" is "native", else None.
    """
    with _LOADER.lock:
        if not _LOADER.asked:
            return {"warp": "not used yet", "library": None}
        if _LOADER.disabled:
            return {"warp": f"xla ({_LOADER.disabled})", "library": None}
        if _LOADER.target is None:
            return {"warp": f"xla ({_LOADER.reason})", "library": None}
        return {"warp": "native", "library": str(_LOADER.library)}
