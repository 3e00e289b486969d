"""The native XLA:CPU warp kernel (jaxreg/_cpu/warp_native.cc) against the XLA path.

It is built where a compiler exists (and only when a CPU program needs it), gives the same
values, gradients and batching rules as the XLA path, is loaded only from a private folder
after its digest and self-test check out, and falls back cleanly (one warning) when it is off
or anything about it fails. Process-level behaviour (what gets loaded, built or registered) is
checked in subprocesses, which run `_SCENARIOS` or `_PLATFORMS`.
"""

import functools
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxreg.augment as A
from jaxreg._cpu import native as _native
from jaxreg.augment import _warp

MODES = ("constant", "edge", "reflect", "symmetric", "wrap")


def _maps(b, seed, *, special=True):
    """(b, 3, 3) output-to-input maps: random rotation/scale/shear/shift, plus exact cases."""
    rng = np.random.default_rng(seed)
    ms = []
    for _ in range(b):
        t, s, sh = rng.uniform(-1.2, 1.2), rng.uniform(0.4, 1.8), rng.uniform(-0.3, 0.3)
        ms.append(
            [
                [np.cos(t) * s, np.sin(t) * s + sh, rng.uniform(-6, 6)],
                [-np.sin(t) * s, np.cos(t) * s, rng.uniform(-6, 6)],
                [0, 0, 1],
            ]
        )
    ms = np.asarray(ms, np.float32)
    if special and b >= 3:
        ms[0] = np.eye(3)  # identity: every tap on a pixel centre
        ms[1] = [[0, 1, 0], [-1, 0, 7], [0, 0, 1]]  # rot90 about the corner, taps at the borders
    return jnp.asarray(ms)


def _images(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).random(shape, dtype=np.float32))


requires_native = pytest.mark.skipif(
    _native.compiler() is None or not _native.enabled(),
    reason="no C++ compiler here (or JAXREG_NATIVE=0): the XLA path runs instead",
)


def test_native_kernel_builds_where_a_compiler_exists():
    if _native.compiler() is None:
        pytest.skip("no C++ compiler on this machine")
    if not _native.enabled():
        pytest.skip("JAXREG_NATIVE=0 in the environment")
    assert _native.warp_target() == _native.WARP_TARGET


@requires_native
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "shape,out_hw",
    [
        ((4, 9, 13, 3), (11, 7)),  # 3 channels (vector path), a different output size
        ((3, 6, 6, 1), (6, 6)),  # gray
        ((3, 5, 8, 4), (9, 4)),  # 4 channels (generic path)
        ((3, 1, 7, 2), (4, 5)),  # one row: padded to two taps
        ((3, 6, 1, 3), (3, 3)),  # one column
    ],
)
def test_native_equals_xla(mode, shape, out_hw):
    x = _images(shape)
    ms = _maps(shape[0], seed=sum(shape))
    fill = np.linspace(0.2, 0.8, shape[-1]).astype(np.float32)
    run = lambda native: jax.jit(
        lambda x, m: _warp.apply_batch(x, m, out_hw, mode=mode, fill=fill, native=native)
    )(x, ms)
    native, xla = run(True), run(False)
    assert native.shape == (shape[0], *out_hw, shape[-1]) and native.dtype == jnp.float32
    np.testing.assert_allclose(native, xla, rtol=0, atol=1e-5)


@requires_native
@pytest.mark.parametrize("huge_pages", ["1", "0"])
def test_native_multithreaded_large_batch_equals_xla(huge_pages, monkeypatch):
    # 11.5 MB of output: split over threads, with or without the huge-page advice.
    monkeypatch.setenv("JAXREG_HUGE_PAGES", huge_pages)
    x = _images((6, 400, 400, 3), seed=3)
    ms = _maps(6, seed=4)
    run = lambda native: jax.jit(
        lambda x, m: _warp.apply_batch(x, m, (410, 390), mode="constant", fill=0.5, native=native)
    )(x, ms)
    np.testing.assert_allclose(run(True), run(False), rtol=0, atol=1e-5)


@requires_native
def test_native_nan_map_gives_fill_like_xla():
    x = _images((3, 6, 6, 3))
    ms = _maps(3, seed=5).at[2, 0, 1].set(jnp.nan)
    run = lambda native: jax.jit(
        lambda x, m: _warp.apply_batch(x, m, (6, 6), fill=0.25, native=native)
    )(x, ms)
    native = run(True)
    np.testing.assert_array_equal(native[2], np.full((6, 6, 3), 0.25, np.float32))
    np.testing.assert_allclose(native, run(False), rtol=0, atol=1e-5)


def _lowered(fn, *args):
    return jax.jit(fn).lower(*args).as_text()


def _calls_native(text):
    return f"custom_call @{_native.WARP_TARGET}" in text


@pytest.fixture
def fresh_loader(monkeypatch):
    """This process's kernel state as if nothing had been built or loaded yet (restored after)."""
    monkeypatch.setattr(_native, "_LOADER", _native._Loader())
    monkeypatch.setenv("JAXREG_NATIVE", "1")


@requires_native
def test_batch_of_a_rotation_lowers_to_the_native_call_on_cpu():
    aug = A.batch(A.compose(functools.partial(A.random_rotate, max_degrees=15), A.random_flip))
    text = _lowered(aug, jax.random.key(0), _images((2, 8, 8, 3)))
    assert _calls_native(text)
    assert _native.native_status()["warp"] == "native"
    off = _lowered(
        lambda x, m: _warp.apply_batch(x, m, (8, 8), native=False),
        _images((2, 8, 8, 3)),
        _maps(2, 0),
    )
    assert not _calls_native(off)


@requires_native
def test_native_gradients_come_from_the_xla_path():
    x = _images((3, 7, 9, 3))
    ms = _maps(3, seed=6)
    w = _images((3, 8, 6, 3), seed=7)

    def loss(native):
        return lambda x, m: jnp.sum(
            _warp.apply_batch(x, m, (8, 6), mode="reflect", native=native) * w
        )

    g_native = jax.jit(jax.grad(loss(True), argnums=(0, 1)))(x, ms)
    g_xla = jax.jit(jax.grad(loss(False), argnums=(0, 1)))(x, ms)
    for a, b in zip(g_native, g_xla):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # Forward mode as well.
    t_native = jax.jvp(loss(True), (x, ms), (jnp.ones_like(x), jnp.zeros_like(ms)))[1]
    t_xla = jax.jvp(loss(False), (x, ms), (jnp.ones_like(x), jnp.zeros_like(ms)))[1]
    np.testing.assert_allclose(t_native, t_xla, rtol=1e-5)


@requires_native
def test_native_derivatives_with_vmap_in_both_orders():
    xs = _images((2, 3, 6, 7, 3), seed=10)
    ms = jnp.stack([_maps(3, seed=11), _maps(3, seed=12)])
    w = _images((3, 5, 6, 3), seed=13)

    def loss(native):
        return lambda x, m: jnp.sum(_warp.apply_batch(x, m, (5, 6), native=native) * w)

    def derivatives(native):
        f = loss(native)
        tangents = (jnp.ones_like(xs), jnp.full_like(ms, 0.01))
        return (
            jax.vmap(jax.grad(f, argnums=(0, 1)))(xs, ms),
            jax.grad(lambda x, m: jax.vmap(f)(x, m).sum(), argnums=(0, 1))(xs, ms),
            jax.vmap(lambda x, m, tx, tm: jax.jvp(f, (x, m), (tx, tm))[1])(xs, ms, *tangents),
            jax.jvp(jax.vmap(f), (xs, ms), tangents)[1],
        )

    for a, b in zip(
        jax.tree.leaves(jax.jit(lambda: derivatives(True))()),
        jax.tree.leaves(jax.jit(lambda: derivatives(False))()),
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@requires_native
def test_native_under_vmap_and_scan():
    xs = _images((2, 3, 6, 5, 3))
    ms = jnp.stack([_maps(3, seed=8), _maps(3, seed=9)])
    f = lambda native: lambda x, m: _warp.apply_batch(x, m, (5, 6), native=native)
    np.testing.assert_allclose(
        jax.jit(jax.vmap(f(True)))(xs, ms), jax.jit(jax.vmap(f(False)))(xs, ms), rtol=0, atol=1e-5
    )
    # The vmapped axis folds into the batch: one call for the whole (2, 3) batch, not a loop.
    text = _lowered(jax.vmap(f(True)), xs, ms)
    assert text.count(f"custom_call @{_native.WARP_TARGET}") == 1 and "stablehlo.while" not in text

    def scanned(native):
        def body(carry, xm):
            out = f(native)(*xm)
            return carry + out.sum(), out

        return jax.jit(lambda xs, ms: jax.lax.scan(body, jnp.float32(0), (xs, ms)))(xs, ms)

    np.testing.assert_allclose(scanned(True)[1], scanned(False)[1], rtol=0, atol=1e-5)


@requires_native
def test_native_under_vmap_with_one_fill_per_element():
    xs = _images((2, 3, 6, 5, 3), seed=14)
    ms = jnp.stack([_maps(3, seed=15), _maps(3, seed=16)])
    fills = jnp.asarray([[0.1, 0.2, 0.3], [0.9, 0.8, 0.7]], jnp.float32)

    def run(native):
        f = lambda x, m, c: _warp.apply_batch(x, m, (7, 4), fill=c, native=native)
        return jax.jit(jax.vmap(f))(xs, ms, fills)

    np.testing.assert_allclose(run(True), run(False), rtol=0, atol=1e-5)


def test_env_switch_turns_the_native_kernel_off(monkeypatch):
    monkeypatch.setenv("JAXREG_NATIVE", "0")
    assert not _native.enabled()
    assert _native.warp_target() is None
    assert _native.native_status() == {"warp": "xla (disabled by JAXREG_NATIVE=0)", "library": None}
    x, ms = _images((2, 6, 6, 3)), _maps(2, 1)
    assert not _calls_native(_lowered(lambda x, m: _warp.apply_batch(x, m, (6, 6)), x, ms))
    with pytest.raises(RuntimeError, match="native=True"):
        _warp.apply_batch(x, ms, (6, 6), native=True)


@pytest.mark.parametrize("name", ["JAXREG_NATIVE", "JAXREG_HUGE_PAGES"])
def test_env_switches_reject_unknown_values(name, monkeypatch):
    monkeypatch.setenv(name, "maybe")
    with pytest.raises(ValueError, match=f"{name} must be one of"):
        _native.enabled() if name == "JAXREG_NATIVE" else _native.huge_pages()
    monkeypatch.setenv(name, "")  # empty: the default
    assert _native.enabled() and not _native.huge_pages()


@pytest.mark.parametrize("value", ["soon", "0", "-5", "inf"])
def test_build_timeout_must_be_a_positive_number(value, monkeypatch):
    monkeypatch.setenv("JAXREG_NATIVE_BUILD_TIMEOUT", value)
    with pytest.raises(ValueError, match="JAXREG_NATIVE_BUILD_TIMEOUT"):
        _native.build_timeout()
    monkeypatch.setenv("JAXREG_NATIVE_BUILD_TIMEOUT", "2.5")
    assert _native.build_timeout() == 2.5


def test_non_float32_batches_use_the_xla_path():
    x = _images((2, 6, 6, 3)).astype(jnp.bfloat16)
    ms = _maps(2, 1)
    text = _lowered(lambda x, m: _warp.apply_batch(x, m, (6, 6)), x, ms)
    assert not _calls_native(text)
    assert _warp.apply_batch(x, ms, (6, 6)).dtype == jnp.bfloat16
    with pytest.raises(RuntimeError, match="float32"):
        _warp.apply_batch(x, ms, (6, 6), native=True)


@requires_native
def test_build_is_cached_on_disk_with_its_record():
    first = _native.build()  # the test session's cache folder (tests/conftest.py)
    stamp = os.stat(first).st_mtime_ns
    assert _native.build() == first
    assert os.stat(first).st_mtime_ns == stamp  # not rebuilt
    record = _native.check_library(first)
    assert record["sha256"] == _native.file_digest(first) and record["selftest"] == "passed"
    assert record["jax"] == jax.__version__ and record["library"] == first.name
    assert not [p.name for p in first.parent.iterdir() if p.name.endswith(".tmp")]
    for path in (first.parent, first, _native.record_path(first)):
        assert os.stat(path).st_mode & 0o022 == 0  # nobody else may write


def test_build_with_a_broken_compiler_raises_oserror(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", "false")
    with pytest.raises(OSError, match="failed"):
        _native.build(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_failed_build_warns_once_and_falls_back(fresh_loader, monkeypatch):
    def broken(directory=None, *, timeout=None):
        raise OSError("no C++ compiler found")

    monkeypatch.setattr(_native, "build", broken)
    assert _native.native_status() == {"warp": "not used yet", "library": None}
    with pytest.warns(RuntimeWarning, match="XLA's gather path"):
        assert _native.warp_target() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _native.warp_target() is None  # decided: no second build attempt or warning
        x, ms = _images((2, 6, 6, 3)), _maps(2, 1)
        assert _warp.apply_batch(x, ms, (6, 6)).shape == (2, 6, 6, 3)
    assert _native.native_status()["warp"] == "xla (build failed: no C++ compiler found)"


def _rotation_vs_xla(mode="reflect"):
    """A jitted batched bilinear warp: (lowered text, its result minus the XLA path's, warnings)."""
    x, ms = _images((3, 9, 7, 3), seed=20), _maps(3, seed=21)
    fn = lambda x, m: _warp.apply_batch(x, m, (8, 8), mode=mode)  # a new function: a new trace
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lowered = jax.jit(fn).lower(x, ms)
        out = lowered.compile()(x, ms)
    ref = jax.jit(lambda x, m: _warp.apply_batch(x, m, (8, 8), mode=mode, native=False))(x, ms)
    runtime = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    return lowered.as_text(), float(jnp.max(jnp.abs(out - ref))), runtime


def test_unparsable_cxx_warns_once_and_uses_the_xla_path(fresh_loader, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXREG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", 'g++ "')
    text, diff, caught = _rotation_vs_xla()
    assert not _calls_native(text) and diff == 0.0
    assert len(caught) == 1 and "CXX='g++ \"'" in caught[0], caught
    assert _native.native_status()["warp"].startswith("xla (build failed: CXX=")


def _script(path, body):
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("hangs_at", ["compile", "version"])
def test_hanging_compiler_is_stopped_by_the_timeout(hangs_at, fresh_loader, tmp_path, monkeypatch):
    # The script's `sleep` is a child of the shell: killing only the shell would leave it
    # holding the output pipes (and the build waiting for it) for the full 60 s.
    log = tmp_path / "log"
    version = "sleep 60" if hangs_at == "version" else "echo fake-cxx 1.0"
    cxx = _script(
        tmp_path / "cxx",
        f"""\
        echo "$*" >> {log}
        case "$1" in --version) {version}; exit 0;; esac
        sleep 60
        """,
    )
    cache = tmp_path / "cache"
    monkeypatch.setenv("JAXREG_CACHE_DIR", str(cache))
    monkeypatch.setenv("CXX", str(cxx))
    monkeypatch.setenv("JAXREG_NATIVE_BUILD_TIMEOUT", "1")
    start = time.monotonic()
    text, diff, caught = _rotation_vs_xla()
    assert time.monotonic() - start < 20
    assert not _calls_native(text) and diff == 0.0
    assert len(caught) == 1 and "timed out" in caught[0], caught
    calls = log.read_text().splitlines()
    # --version, then one compile attempt: a timeout is not retried with the portable flags.
    assert len(calls) == (1 if hangs_at == "version" else 2), calls
    assert list(cache.iterdir()) == []  # no temporary files left


def test_cache_folder_falls_back_to_a_private_temporary_folder(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("JAXREG_CACHE_DIR", str(blocked / "cache"))  # cannot be created
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    folder = _native.cache_dir()
    assert folder == tmp_path / "tmp" / f"jaxreg-{os.getuid()}" / "native"
    assert folder.is_dir() and os.stat(folder).st_mode & 0o777 == 0o700


@requires_native
@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_gpu_and_tpu_programs_use_the_xla_path(platform):
    # Lowered for another platform (no such device needed): only the CPU lowering rule of the
    # warp primitive emits the native call.
    aug = A.batch(A.compose(functools.partial(A.random_rotate, max_degrees=15), A.random_flip))
    exported = jax.export.export(jax.jit(aug), platforms=[platform])(
        jax.random.key(0), _images((2, 8, 8, 3))
    )
    text = exported.mlir_module()
    assert not _calls_native(text)
    assert "stablehlo.gather" in text or '"stablehlo.gather"' in text


# --- Process-level behaviour, in subprocesses -------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
OTHER_UID = 12345  # owner of "another user's" files (chown needs root)
ROOT_ONLY = "needs root: the test plants files owned by another user (os.chown)"


def _is_root():
    return hasattr(os, "geteuid") and os.geteuid() == 0


# Lowers and runs a batched rotation on the CPU once per case, each case with the environment
# it names and a fresh kernel state (nothing is registered when a case falls back), and prints
# per case: whether the program holds the native call, its largest difference from the XLA
# path, the RuntimeWarnings and `native_status()`.
_SCENARIOS = """
import functools, json, os, sys, tempfile, warnings
import jax, numpy as np
import jaxreg.augment as A
from jaxreg._cpu import native as _native

x = jax.numpy.asarray(np.random.default_rng(0).random((4, 12, 10, 3), dtype=np.float32))
key = jax.random.key(1)
aug = lambda: A.batch(functools.partial(A.random_rotate, max_degrees=40))
os.environ["JAXREG_NATIVE"] = "0"
ref = np.asarray(jax.jit(aug())(key, x))
os.environ["JAXREG_NATIVE"] = "1"
results = {}
for name, case in json.loads(sys.argv[1]).items():
    for k, v in case["env"].items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    os.environ["JAXREG_TEST_CASE"] = name
    tempfile.tempdir = case.get("tmpdir")
    _native._LOADER = _native._Loader()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lowered = jax.jit(aug()).lower(key, x)
        out = np.asarray(lowered.compile()(key, x))
    results[name] = {
        "native_call": "custom_call @jaxreg_warp_bilinear" in lowered.as_text(),
        "max_diff": float(np.abs(out - ref).max()),
        "warnings": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)],
        "status": _native.native_status()["warp"],
    }
print(json.dumps({"pid": os.getpid(), "results": results}))
"""


def _python(code, args, env_updates, timeout=300):
    env = dict(os.environ)
    env.update(
        JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    )
    env.update(env_updates)
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
    )


def _run_scenarios(cases):
    res = _python(_SCENARIOS, [json.dumps(cases)], {})
    assert res.returncode == 0, f"exit status {res.returncode}\n{res.stderr[-3000:]}"
    return json.loads(res.stdout.strip().splitlines()[-1])


def _compile_c(source, path, *defines):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler to build the planted libraries")
    src = path.with_suffix(".c")
    src.write_text(textwrap.dedent(source))
    subprocess.run([cc, "-shared", "-fPIC", *defines, str(src), "-o", str(path)], check=True)
    return path


# A library an attacker would plant: its constructor runs on load and logs "<case> <pid>" to a
# marker file; its symbol has the kernel's name but not the FFI API.
_PLANTED_C = """
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
__attribute__((constructor)) static void planted(void) {
  FILE* f = fopen(MARKER, "a");
  if (f) {
    const char* c = getenv("JAXREG_TEST_CASE");
    fprintf(f, "%s %d\\n", c ? c : "?", (int)getpid());
    fclose(f);
  }
}
void* JaxregWarpBilinear(void* frame) { (void)frame; return 0; }
"""


def _plant(folder, names, library, *, record="valid", mode=0o700, owner=None, record_mode=0o600):
    """Copies `library` into `folder` under `names`, each with a forged build record."""
    digest = _native.file_digest(library)
    for name in names:
        lib = folder / name
        shutil.copyfile(library, lib)
        forged = {"sha256": digest, "selftest": "passed"}
        if record == "digest_mismatch":
            forged["sha256"] = "0" * 64
        elif record == "no_selftest":
            del forged["selftest"]
        _native.record_path(lib).write_text(json.dumps(forged))
        os.chmod(_native.record_path(lib), record_mode)
        os.chmod(lib, mode)
        if owner is not None:
            os.chown(lib, owner, owner)


def _names_for(cxx):
    with pytest.MonkeyPatch.context() as mp:
        if cxx is None:
            mp.delenv("CXX", raising=False)
        else:
            mp.setenv("CXX", cxx)
        return _native.library_names()


@pytest.fixture(scope="module")
def planted_runs(tmp_path_factory):
    """One subprocess over every planted-library case; returns its results and the marker."""
    base = tmp_path_factory.mktemp("planted")
    marker = base / "marker"
    library = _compile_c(_PLANTED_C, base / "planted.so", f'-DMARKER="{marker}"')
    root = _is_root()
    real_names = _names_for(None) if _native.compiler() is not None else ["warp_native-x.so"]
    # Cases in a folder of ours: CXX=false, so an untrusted file is deleted and the rebuild
    # fails fast (one warning, XLA path) instead of compiling the real kernel every time.
    false_names = _names_for("false")
    cases, folders = {}, {}
    own = {"group_writable": {"mode": 0o770}, "digest_mismatch": {"record": "digest_mismatch"}}
    own["no_selftest"] = {"record": "no_selftest"}
    own["record_group_writable"] = {"record_mode": 0o660}
    if root:
        own["other_owner"] = {"owner": OTHER_UID, "mode": 0o755}
    for name, how in own.items():
        folder = base / name
        folder.mkdir(mode=0o700)
        _plant(folder, false_names, library, **how)
        folders[name] = folder
        cases[name] = {"env": {"JAXREG_CACHE_DIR": str(folder), "CXX": "false"}}
    link_folder = base / "symlink"
    link_folder.mkdir(mode=0o700)
    _plant(base, ["elsewhere.so"], library)
    for name in false_names:
        (link_folder / name).symlink_to(base / "elsewhere.so")
        shutil.copyfile(
            _native.record_path(base / "elsewhere.so"), _native.record_path(link_folder / name)
        )
    folders["symlink"] = link_folder
    cases["symlink"] = {"env": {"JAXREG_CACHE_DIR": str(link_folder), "CXX": "false"}}
    if root:
        # Another user's world-writable folder, with the real kernel's names planted in it.
        foreign = base / "foreign"
        foreign.mkdir()
        _plant(foreign, real_names, library)
        for path in [foreign, *foreign.iterdir()]:
            os.chown(path, OTHER_UID, OTHER_UID)
        foreign.chmod(0o777)
        folders["foreign"] = foreign
        cases["foreign"] = {"env": {"JAXREG_CACHE_DIR": str(foreign), "CXX": None}}
        # The temporary fallback folder, created first by another user; the primary folder
        # cannot be created (its parent is a file).
        blocker = base / "not-a-folder"
        blocker.write_text("")
        tmp = base / "tmp"
        squatted = tmp / f"jaxreg-{os.getuid()}"
        (squatted / "native").mkdir(parents=True)
        _plant(squatted / "native", real_names, library)
        _plant(squatted, real_names, library)  # where jaxreg looked before it had a sub-folder
        for path in [squatted, *squatted.rglob("*")]:
            os.chown(path, OTHER_UID, OTHER_UID, follow_symlinks=False)
            if path.is_dir():
                path.chmod(0o777)
        folders["temp_fallback"] = squatted
        cases["temp_fallback"] = {
            "env": {
                "JAXREG_CACHE_DIR": None,
                "CXX": None,
                "HOME": str(blocker),
                "XDG_CACHE_HOME": str(blocker),
            },
            "tmpdir": str(tmp),
        }
    out = _run_scenarios(cases)
    lines = marker.read_text().splitlines() if marker.exists() else []
    return {"results": out["results"], "marker": lines, "folders": folders}


def _never_loaded(runs, case):
    assert not [ln for ln in runs["marker"] if ln.startswith(case + " ")], runs["marker"]
    r = runs["results"][case]
    assert not r["native_call"] and r["max_diff"] == 0.0, r
    assert len(r["warnings"]) == 1, r["warnings"]
    return r


def test_planted_library_in_another_users_cache_folder_is_never_loaded(planted_runs):
    if not _is_root():
        pytest.skip(ROOT_ONLY)
    if _native.compiler() is None:
        pytest.skip("no C++ compiler: the kernel's file name depends on it")
    r = _never_loaded(planted_runs, "foreign")
    folder = planted_runs["folders"]["foreign"]
    assert str(folder) in r["warnings"][0] and f"owned by uid {OTHER_UID}" in r["warnings"][0]
    assert r["status"].startswith("xla (unsafe cache folder")
    assert len(list(folder.iterdir())) == 4  # another user's folder: left as it was


def test_temporary_fallback_folder_created_by_another_user_is_refused(planted_runs):
    if not _is_root():
        pytest.skip(ROOT_ONLY)
    if _native.compiler() is None:
        pytest.skip("no C++ compiler: the kernel's file name depends on it")
    r = _never_loaded(planted_runs, "temp_fallback")
    assert str(planted_runs["folders"]["temp_fallback"]) in r["warnings"][0]
    assert r["status"].startswith("xla (unsafe cache folder")


@pytest.mark.parametrize(
    "case",
    [
        "group_writable",
        "other_owner",
        "symlink",
        "digest_mismatch",
        "no_selftest",
        "record_group_writable",
    ],
)
def test_cached_library_that_is_not_private_or_not_verified_is_never_loaded(planted_runs, case):
    if case == "other_owner" and not _is_root():
        pytest.skip(ROOT_ONLY)
    r = _never_loaded(planted_runs, case)
    assert r["status"].startswith("xla (build failed: "), r  # deleted; the rebuild (false) fails
    assert "false" in r["warnings"][0]
    folder = planted_runs["folders"][case]
    assert [p.name for p in folder.iterdir()] == []  # the planted files were deleted


# A library that does not speak the FFI API (its handler reports API version 0.0): registering
# it raises in XLA. Its constructor logs "<pid>" so the test sees which processes loaded it.
_WRONG_API_C = """
#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void loaded(void) {
  FILE* f = fopen(MARKER, "a");
  if (f) { fprintf(f, "%d\\n", (int)getpid()); fclose(f); }
}
void* JaxregWarpBilinear(void* frame) { (void)frame; return 0; }
"""
_CRASH_C = """
#include <signal.h>
__attribute__((constructor)) static void crash(void) { raise(SIGBUS); }
void* JaxregWarpBilinear(void* frame) { (void)frame; return 0; }
"""


@pytest.fixture(scope="module")
def bad_kernel_runs(tmp_path_factory):
    """Kernels from a fake compiler that copies in a bad library: one subprocess, two cases."""
    base = tmp_path_factory.mktemp("bad_kernels")
    marker = base / "marker"
    libs = {
        "wrong_api": _compile_c(_WRONG_API_C, base / "wrong_api.so", f'-DMARKER="{marker}"'),
        "crash": _compile_c(_CRASH_C, base / "crash.so"),
    }
    cases, folders = {}, {}
    for name, lib in libs.items():
        cxx = _script(
            base / f"cxx_{name}",
            f"""\
            case "$1" in --version) echo fake-cxx 1.0; exit 0;; esac
            while [ $# -gt 1 ]; do [ "$1" = -o ] && cp {lib} "$2"; shift; done
            """,
        )
        folder = base / name
        folder.mkdir(mode=0o700)
        folders[name] = folder
        cases[name] = {"env": {"JAXREG_CACHE_DIR": str(folder), "CXX": str(cxx)}}
    # Also a cached copy whose forged record has the right digest but no passed self-test.
    _plant(folders["wrong_api"], _names_for(cases["wrong_api"]["env"]["CXX"]), libs["wrong_api"])
    for name in _names_for(cases["wrong_api"]["env"]["CXX"]):
        record = _native.record_path(folders["wrong_api"] / name)
        record.write_text(json.dumps({"sha256": _native.file_digest(libs["wrong_api"])}))
    out = _run_scenarios(cases)
    lines = marker.read_text().splitlines() if marker.exists() else []
    return {"pid": out["pid"], "results": out["results"], "marker": lines, "folders": folders}


def test_kernel_with_the_wrong_ffi_api_fails_its_self_test_and_is_not_used(bad_kernel_runs):
    r = bad_kernel_runs["results"]["wrong_api"]
    assert not r["native_call"] and r["max_diff"] == 0.0, r
    assert len(r["warnings"]) == 1 and "self-test" in r["warnings"][0], r["warnings"]
    assert r["status"].startswith("xla (build failed its self-test")
    pids = {int(p) for p in bad_kernel_runs["marker"]}
    assert pids and bad_kernel_runs["pid"] not in pids  # loaded only by the self-test process
    assert list(bad_kernel_runs["folders"]["wrong_api"].iterdir()) == []  # nothing kept


def test_kernel_that_crashes_on_load_fails_its_self_test_and_is_not_used(bad_kernel_runs):
    r = bad_kernel_runs["results"]["crash"]
    assert not r["native_call"] and r["max_diff"] == 0.0, r
    assert len(r["warnings"]) == 1 and "SIGBUS" in r["warnings"][0], r["warnings"]
    assert list(bad_kernel_runs["folders"]["crash"].iterdir()) == []


@requires_native
def test_truncated_cached_library_is_rebuilt_not_loaded(tmp_path):
    good = _native.build()  # the test session's verified copy
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    lib = cache / good.name
    data = good.read_bytes()
    lib.write_bytes(data[: len(data) // 2])  # e.g. a disk that filled up mid-copy
    lib.chmod(0o700)
    shutil.copyfile(_native.record_path(good), _native.record_path(lib))  # its old record
    out = _run_scenarios({"truncated": {"env": {"JAXREG_CACHE_DIR": str(cache), "CXX": None}}})
    r = out["results"]["truncated"]
    assert r["native_call"] and r["max_diff"] <= 1e-5 and r["warnings"] == [], r
    assert r["status"] == "native"
    assert _native.check_library(lib)["sha256"] == _native.file_digest(lib)
    assert lib.stat().st_size > len(data) // 2


# Lowers a batched rotation for CUDA and TPU, then for the CPU, in a fresh process; prints the
# lowered texts' native calls, the cache folder's files, the compiler's log and the status.
_PLATFORMS = """
import functools, json, os, sys
import jax, numpy as np
import jaxreg.augment as A
from jaxreg._cpu import native as _native

cache, log = sys.argv[1], sys.argv[2]
x = jax.numpy.asarray(np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32))
key = jax.random.key(0)
f = jax.jit(A.batch(functools.partial(A.random_rotate, max_degrees=15)))

def state(*texts):
    return {
        "native_call": ["custom_call @jaxreg_warp_bilinear" in t for t in texts],
        "gather": ["stablehlo.gather" in t for t in texts],
        "files": sorted(os.listdir(cache)) if os.path.exists(cache) else [],
        "compiler_calls": open(log).read().splitlines() if os.path.exists(log) else [],
        "status": _native.native_status()["warp"],
    }

cuda = f.trace(key, x).lower(lowering_platforms=("cuda",)).as_text()
tpu = jax.export.export(f, platforms=["tpu"])(key, x).mlir_module()
other = state(cuda, tpu)
cpu = state(f.lower(key, x).as_text())
print(json.dumps({"other": other, "cpu": cpu}))
"""


def test_lowering_for_gpu_or_tpu_does_not_build_the_kernel(tmp_path):
    # A compiler that logs its calls and fails: any build attempt shows in the log, quickly.
    log = tmp_path / "log"
    cxx = _script(tmp_path / "cxx", f'echo "$*" >> {log}\nexit 1\n')
    cache = tmp_path / "cache"
    res = _python(
        _PLATFORMS, [str(cache), str(log)], {"JAXREG_CACHE_DIR": str(cache), "CXX": str(cxx)}
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    other, cpu = out["other"], out["cpu"]
    assert other["native_call"] == [False, False] and other["gather"] == [True, True]
    assert other["files"] == [] and other["compiler_calls"] == []
    assert other["status"] == "not used yet"
    # Lowering for the CPU is what asks for the kernel: the build runs (and fails here).
    assert cpu["compiler_calls"] and cpu["compiler_calls"][0] == "--version"
    assert any("-march=native" in c for c in cpu["compiler_calls"])
    assert cpu["status"].startswith("xla (build failed") and cpu["native_call"] == [False]
