"""The native XLA:CPU warp kernel (_warp_native.cc) against the XLA path.

It is built where a compiler exists, gives the same values, gradients and batching rules as the
XLA path, and falls back cleanly when it is off or fails.
"""

import functools
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxreg.augment as A
from jaxreg.augment import _native, _warp

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


@requires_native
def test_batch_of_a_rotation_lowers_to_the_native_call_on_cpu():
    aug = A.batch(A.compose(functools.partial(A.random_rotate, max_degrees=15), A.random_flip))
    text = _lowered(aug, jax.random.key(0), _images((2, 8, 8, 3)))
    assert _native.WARP_TARGET in text
    off = _lowered(
        lambda x, m: _warp.apply_batch(x, m, (8, 8), native=False),
        _images((2, 8, 8, 3)),
        _maps(2, 0),
    )
    assert _native.WARP_TARGET not in off


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
def test_native_under_vmap_and_scan():
    xs = _images((2, 3, 6, 5, 3))
    ms = jnp.stack([_maps(3, seed=8), _maps(3, seed=9)])
    f = lambda native: lambda x, m: _warp.apply_batch(x, m, (5, 6), native=native)
    np.testing.assert_allclose(
        jax.jit(jax.vmap(f(True)))(xs, ms), jax.jit(jax.vmap(f(False)))(xs, ms), rtol=0, atol=1e-5
    )

    def scanned(native):
        def body(carry, xm):
            out = f(native)(*xm)
            return carry + out.sum(), out

        return jax.jit(lambda xs, ms: jax.lax.scan(body, jnp.float32(0), (xs, ms)))(xs, ms)

    np.testing.assert_allclose(scanned(True)[1], scanned(False)[1], rtol=0, atol=1e-5)


def test_env_switch_turns_the_native_kernel_off(monkeypatch):
    monkeypatch.setenv("JAXREG_NATIVE", "0")
    assert not _native.enabled()
    assert _native.warp_target() is None
    x, ms = _images((2, 6, 6, 3)), _maps(2, 1)
    assert _native.WARP_TARGET not in _lowered(lambda x, m: _warp.apply_batch(x, m, (6, 6)), x, ms)
    with pytest.raises(RuntimeError, match="native=True"):
        _warp.apply_batch(x, ms, (6, 6), native=True)


@pytest.mark.parametrize("name", ["JAXREG_NATIVE", "JAXREG_HUGE_PAGES"])
def test_env_switches_reject_unknown_values(name, monkeypatch):
    monkeypatch.setenv(name, "maybe")
    with pytest.raises(ValueError, match=f"{name} must be one of"):
        _native.enabled() if name == "JAXREG_NATIVE" else _native.huge_pages()
    monkeypatch.setenv(name, "")  # empty: the default
    assert _native.enabled() and not _native.huge_pages()


def test_non_float32_batches_use_the_xla_path():
    x = _images((2, 6, 6, 3)).astype(jnp.bfloat16)
    ms = _maps(2, 1)
    text = _lowered(lambda x, m: _warp.apply_batch(x, m, (6, 6)), x, ms)
    assert _native.WARP_TARGET not in text
    assert _warp.apply_batch(x, ms, (6, 6)).dtype == jnp.bfloat16


@requires_native
def test_build_is_cached_on_disk(tmp_path):
    first = _native.build(tmp_path)
    stamp = os.stat(first).st_mtime_ns
    assert _native.build(tmp_path) == first
    assert os.stat(first).st_mtime_ns == stamp  # not rebuilt
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary files left


def test_build_with_a_broken_compiler_raises_oserror(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", "false")
    with pytest.raises(OSError, match="failed"):
        _native.build(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_failed_build_warns_once_and_falls_back(monkeypatch):
    def broken(directory=None):
        raise OSError("no C++ compiler found")

    monkeypatch.setenv("JAXREG_NATIVE", "1")
    monkeypatch.setattr(_native, "build", broken)
    _native._warp_target_once.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="XLA's gather path"):
            assert _native.warp_target() is None
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert _native.warp_target() is None  # cached: no second build attempt or warning
        x, ms = _images((2, 6, 6, 3)), _maps(2, 1)
        assert _warp.apply_batch(x, ms, (6, 6)).shape == (2, 6, 6, 3)
    finally:
        _native._warp_target_once.cache_clear()


@requires_native
@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_gpu_and_tpu_programs_use_the_xla_path(platform):
    # Lowered for another platform (no such device needed): lax.platform_dependent keeps the
    # native CPU kernel out of the program.
    aug = A.batch(A.compose(functools.partial(A.random_rotate, max_degrees=15), A.random_flip))
    exported = jax.export.export(jax.jit(aug), platforms=[platform])(
        jax.random.key(0), _images((2, 8, 8, 3))
    )
    text = exported.mlir_module()
    assert _native.WARP_TARGET not in text
    assert "stablehlo.gather" in text or '"stablehlo.gather"' in text


@requires_native
def test_build_falls_back_to_a_temporary_folder_when_the_cache_is_read_only(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("JAXREG_CACHE_DIR", str(blocked / "cache"))  # cannot be created
    path = _native.build()
    assert path.exists() and not str(path).startswith(str(blocked))
