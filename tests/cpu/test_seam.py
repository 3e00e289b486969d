"""The XLA:CPU seam (jaxreg._cpu): its switch, what CPU/GPU/TPU programs contain, same results.

Programs are inspected as lowered StableHLO (with debug info, where the seam's name scopes
show) and as jaxprs; GPU and TPU programs are lowered with `lowering_platforms`, which needs
no such device.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxreg.augment as A
from jaxreg import _cpu, models
from jaxreg._cpu import conv, fence, native, pool, switch, warp
from jaxreg.augment import _warp
from jaxreg.train import TrainState, make_train_step
from jaxreg.train.tasks import Classification

P = functools.partial
NATIVE_CALL = f"custom_call @{native.WARP_TARGET}"
SCOPES = {"fence": fence.SCOPE, "conv": conv.SCOPE, "pool": pool.SCOPE}

requires_native = pytest.mark.skipif(
    native.compiler() is None or not native.enabled(),
    reason="no C++ compiler here (or the kernel is switched off): the XLA path runs instead",
)


def _images(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).random(shape, dtype=np.float32))


def _rotation():
    """A batched rotation (+ flip and erasing): the native warp and two fenced stages."""
    return A.batch(A.compose(P(A.random_rotate, max_degrees=30), A.random_flip, A.random_erasing))


def _training_step():
    """A new jitted training step (tiny CNN: conv, BatchNorm, max pool) with `_rotation`."""
    m = models.create("tiny", num_classes=3, input_shape=(8, 8, 3), batch_norm=True)
    state = TrainState.create(m, optax.adam(1e-2), key=jax.random.key(0))
    return make_train_step(task=Classification(num_classes=3, augment=_rotation())), state


_X = _images((4, 8, 8, 3))
_Y = jnp.asarray([0, 1, 2, 0], jnp.int32)


def _lowered(platform, on):
    """(lowered text with debug info, jaxpr text) of a training step traced with the seam `on`."""
    step, state = _training_step()
    with _cpu.workarounds(on):
        text = step.trace(state, _X, _Y).lower(lowering_platforms=(platform,))
        jaxpr = jax.make_jaxpr(step)(state, _X, _Y)
    return text.as_text(debug_info=True), str(jaxpr)


def _census(text):
    return {
        op: text.count(op)
        for op in ("stablehlo.convolution", "stablehlo.select_and_scatter", "stablehlo.dot_general")
    }


# --- The switch -------------------------------------------------------------------------------


def test_switch_is_parsed_strictly_and_overridable(monkeypatch):
    monkeypatch.delenv(switch.ENV, raising=False)
    assert _cpu.enabled()  # on by default
    for value, on in [("0", False), ("off", False), ("No", False), ("1", True), ("yes", True)]:
        monkeypatch.setenv(switch.ENV, value)
        assert _cpu.enabled() is on
    monkeypatch.setenv(switch.ENV, "")  # empty: the default
    assert _cpu.enabled()
    monkeypatch.setenv(switch.ENV, "maybe")
    with pytest.raises(ValueError, match=f"{switch.ENV} must be one of"):
        _cpu.enabled()
    monkeypatch.setenv(switch.ENV, "0")
    with _cpu.workarounds(True):
        assert _cpu.enabled()
    assert not _cpu.enabled()


def test_switch_off_turns_the_native_kernel_off_too(monkeypatch):
    monkeypatch.setattr(native, "_LOADER", native._Loader())
    monkeypatch.setenv("JAXREG_NATIVE", "1")
    monkeypatch.setenv(switch.ENV, "0")
    assert not native.enabled() and native.warp_target() is None
    assert native.native_status()["warp"] == f"xla (disabled by {switch.ENV}=0)"
    if jax.default_backend() == "cpu":
        assert _cpu.status() == {
            "platform": "cpu",
            "switch": "off",
            "workarounds": f"not used ({switch.ENV}=0)",
            "native_warp": f"xla (disabled by {switch.ENV}=0)",
            "sharded_warp": warp.sharded_status(),
        }
    # The narrower switch: the kernel off, the rest on.
    monkeypatch.setenv(switch.ENV, "1")
    monkeypatch.setenv("JAXREG_NATIVE", "0")
    assert _cpu.enabled() and not native.enabled()
    assert native.warp_target() is None
    assert native.native_status()["warp"] == "xla (disabled by JAXREG_NATIVE=0)"
    with _cpu.workarounds(False):
        assert _cpu.status()["switch"] == "off"
        ms = jnp.broadcast_to(jnp.eye(3), (4, 3, 3))
        with pytest.raises(RuntimeError, match="native=True but the native warp is off"):
            _warp.apply_batch(_X, ms, (8, 8), native=True)


# --- What the programs contain ----------------------------------------------------------------


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="lowers for the default CPU backend")
def test_cpu_training_step_holds_the_seam_when_on():
    text, jaxpr = _lowered("cpu", True)
    for name, scope in SCOPES.items():
        assert scope in text, name
    assert "stablehlo.select_and_scatter" not in text  # the pool's select backward
    assert "stablehlo.case" in text  # the fences' conditionals
    if native.compiler() is not None and native.enabled():
        assert NATIVE_CALL in text
    assert "platform_index" in jaxpr and "jaxreg_bilinear_warp" in jaxpr


def test_switch_off_leaves_plain_xla_in_cpu_programs():
    text, jaxpr = _lowered("cpu", False)
    for scope in SCOPES.values():
        assert scope not in text
    assert NATIVE_CALL not in text
    assert "stablehlo.case" not in text  # no fence conditional (nothing else here branches)
    assert "stablehlo.select_and_scatter" in text  # JAX's own max-pool gradient
    # the weight gradient is XLA's convolution again (forward + weight gradient; the input
    # gradient of the first layer is not needed)
    assert _census(text)["stablehlo.convolution"] == 2
    # nothing of the seam was even traced
    assert "platform_index" not in jaxpr and "jaxreg_bilinear_warp" not in jaxpr


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_gpu_and_tpu_programs_hold_none_of_the_seam(platform):
    on, _ = _lowered(platform, True)
    for scope in SCOPES.values():
        assert scope not in on  # no fence conditional, no patch-matrix or select backward
    assert NATIVE_CALL not in on
    assert "stablehlo.gather" in on  # the warp's XLA form
    # the same operations as the program traced with the seam off
    off, _ = _lowered(platform, False)
    assert _census(on) == _census(off)
    assert _census(on)["stablehlo.select_and_scatter"] == 1


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="compiles for the CPU")
def test_fence_survives_xla_optimisation_on_the_cpu():
    keys = jax.random.split(jax.random.key(0), 4)
    f = lambda k, x: fence.fence(lambda k, x: jnp.sin(x) * 2.0, k, x) + 1.0
    compiled = jax.jit(f).lower(keys, _X).compile().as_text()
    assert "conditional" in compiled  # XLA could not prove the predicate true
    np.testing.assert_array_equal(jax.jit(f)(keys, _X), jnp.sin(_X) * 2.0 + 1.0)


@pytest.mark.parametrize(
    "first",
    [
        jnp.zeros((3,), jnp.float32),
        jnp.full((2, 2), jnp.nan, jnp.float32),
        jnp.zeros((3,), jnp.bool_),
        jnp.zeros((2,), jnp.int8),
        jnp.zeros((2,), jnp.bfloat16),
        jax.random.split(jax.random.key(3), 2),
    ],
)
def test_fence_gives_fn_of_its_arguments_whatever_they_are(first):
    fn = lambda a, b: {"x": b * 2.0, "n": jnp.sum(b)}
    got = jax.jit(lambda a, b: fence.fence(fn, a, b))(first, _X)
    np.testing.assert_array_equal(got["x"], _X * 2.0)
    np.testing.assert_allclose(got["n"], jnp.sum(_X), rtol=1e-6)


# --- Same results on and off ------------------------------------------------------------------


def test_training_agrees_with_and_without_the_seam():
    def train(on):
        step, state = _training_step()
        out = []
        with _cpu.workarounds(on):  # read when the step is traced, on its first call
            for _ in range(3):
                state, metrics = step(state, _X, _Y)
                out.append(metrics)
        return state, out

    (s_on, m_on), (s_off, m_off) = train(True), train(False)
    for a, b in zip(m_on, m_off):
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(s_on.params), jax.tree.leaves(s_off.params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(jax.tree.leaves(s_on.batch_stats), jax.tree.leaves(s_off.batch_stats)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_batched_rotation_agrees_with_and_without_the_seam():
    x = _images((6, 12, 10, 3), seed=1)

    def run(on):
        aug = _rotation()  # a new function: a new trace
        with _cpu.workarounds(on):
            return jax.jit(aug)(jax.random.key(5), x)

    on, off = run(True), run(False)
    assert on.shape == off.shape == x.shape
    np.testing.assert_allclose(on, off, rtol=0, atol=1e-5)  # the native warp: ~1e-6


def test_status_names_the_path():
    st = _cpu.status()
    assert set(st) == {"platform", "switch", "workarounds", "native_warp", "sharded_warp"}
    assert st["platform"] == jax.default_backend()
    line = _cpu.summary(st)
    assert line.startswith("XLA:CPU workarounds (jaxreg._cpu, JAXREG_CPU_WORKAROUNDS): ")
    assert _cpu.summary({**st, "workarounds": "used", "native_warp": "native"}).endswith(
        "used; batched bilinear warp: native."
    )
    sharded = {**st, "workarounds": "used", "native_warp": "native", "sharded_warp": "xla (x)"}
    assert _cpu.summary(sharded).endswith("native; in sharded programs: xla (x).")
    assert _cpu.summary({**st, "workarounds": "not used (platform gpu)"}).endswith(
        "not used (platform gpu)."
    )
