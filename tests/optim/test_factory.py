"""jaxreg.optim.factory: the learning-rate schedules and the Optax chain a training config builds."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxreg.optim.factory import build_optimizer, learning_rate_schedule
from jaxreg.train import default_config

# optax mixes float and int32 scalars (schedules, Adam's bias correction), which the strict
# promotion of tests/conftest.py rejects: these tests run under the standard rules.
pytestmark = pytest.mark.usefixtures("standard_promotion")


@pytest.fixture
def standard_promotion():
    with jax.numpy_dtype_promotion("standard"):
        yield


def _values(schedule, steps):
    return [float(schedule(jnp.asarray(t, jnp.int32))) for t in steps]


def test_constant_cosine_and_step_schedules():
    lr = 0.5
    s = learning_rate_schedule(learning_rate=lr, schedule="constant", total_steps=100)
    assert _values(s, [0, 50, 100]) == [lr] * 3
    s = learning_rate_schedule(learning_rate=lr, schedule="cosine", total_steps=100)
    np.testing.assert_allclose(
        _values(s, [0, 25, 50, 100]), [lr, lr * 0.5 * (1 + math.cos(math.pi / 4)), lr / 2, 0.0]
    )
    s = learning_rate_schedule(learning_rate=lr, schedule="step", total_steps=100)
    # x0.1 after 50 % and again after 75 % of the steps.
    np.testing.assert_allclose(
        _values(s, [0, 40, 60, 70, 80, 99]),
        [lr, lr, lr / 10, lr / 10, lr / 100, lr / 100],
        rtol=1e-6,
    )


def test_warmup_then_decay_over_the_remaining_steps():
    lr = 0.5
    s = learning_rate_schedule(
        learning_rate=lr, schedule="cosine", total_steps=100, warmup_steps=10
    )
    # Linear from 0 over 10 steps, then a cosine over the 90 steps left (halfway at step 55).
    np.testing.assert_allclose(
        _values(s, [0, 5, 10, 55, 100]), [0.0, lr / 2, lr, lr / 2, 0.0], atol=1e-7
    )
    s = learning_rate_schedule(learning_rate=lr, schedule="step", total_steps=100, warmup_steps=10)
    np.testing.assert_allclose(_values(s, [10, 50, 60, 80]), [lr, lr, lr / 10, lr / 100], rtol=1e-6)
    # One warm-up step: the first step has learning rate 0.
    s = learning_rate_schedule(
        learning_rate=lr, schedule="constant", total_steps=10, warmup_steps=1
    )
    assert _values(s, [0, 1, 9]) == [0.0, lr, lr]
    # All steps warm-up: the decay still has one step (to 0 right after).
    s = learning_rate_schedule(learning_rate=lr, schedule="cosine", total_steps=10, warmup_steps=10)
    np.testing.assert_allclose(_values(s, [5, 10, 11]), [lr / 2, lr, 0.0], atol=1e-7)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"schedule": "linear"}, "schedule must be one of"),
        ({"learning_rate": 0.0}, "learning_rate must be > 0"),
        ({"learning_rate": -1.0}, "learning_rate must be > 0"),
        ({"total_steps": 0}, "total_steps >= 1"),
        ({"warmup_steps": -1}, "warmup_steps >= 0"),
    ],
)
def test_bad_schedule_arguments(kw, match):
    args = {"learning_rate": 0.1, "schedule": "constant", "total_steps": 10, "warmup_steps": 0}
    with pytest.raises(ValueError, match=match):
        learning_rate_schedule(**(args | kw))


def test_the_smallest_valid_schedule_arguments_are_accepted():
    s = learning_rate_schedule(learning_rate=1e-9, schedule="constant", total_steps=1)
    assert _values(s, [0]) == pytest.approx([1e-9])


def _params():
    rng = np.random.default_rng(0)
    return {
        "Dense_0": {
            "kernel": jnp.asarray(rng.normal(size=(2, 3)), jnp.float32),
            "bias": jnp.asarray(rng.normal(size=(3,)), jnp.float32),
        }
    }


def _grads(step):
    rng = np.random.default_rng(step + 1)
    return jax.tree.map(lambda p: jnp.asarray(3 * rng.normal(size=p.shape), jnp.float32), _params())


KERNELS = {"Dense_0": {"kernel": True, "bias": False}}


def _config(**kw):
    c = default_config()
    c.optimizer, c.learning_rate, c.schedule = "sgd", 0.1, "constant"
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def _run(tx, steps=3):
    params = _params()
    state = tx.init(params)
    for t in range(steps):
        updates, state = tx.update(_grads(t), state, params)
        params = optax.apply_updates(params, updates)
    return params


def _soft_threshold(tx, rate, lr):
    """A chain followed by the proximal L1 step on the kernel, by hand (3 steps)."""

    def prox(updates, params):
        z = params["Dense_0"]["kernel"] + updates["Dense_0"]["kernel"]
        new = jnp.sign(z) * jnp.maximum(jnp.abs(z) - lr * rate, 0.0)
        updates["Dense_0"]["kernel"] = new - params["Dense_0"]["kernel"]
        return updates

    params = _params()
    state = tx.init(params)
    for t in range(3):
        updates, state = tx.update(_grads(t), state, params)
        params = optax.apply_updates(params, prox(updates, params))
    return params


def _l1(rate):
    """Adds rate * sign(kernel) to the kernel's gradient (a reference for add_l1)."""

    def update(g, state, params):
        g = jax.tree.map(lambda x: x, g)
        g["Dense_0"]["kernel"] = g["Dense_0"]["kernel"] + rate * jnp.sign(
            params["Dense_0"]["kernel"]
        )
        return g, state

    return optax.GradientTransformation(lambda p: optax.EmptyState(), update)


@pytest.mark.parametrize(
    "options, reference",
    [
        ({}, optax.sgd(0.1)),
        ({"optimizer": "momentum", "momentum": 0.8}, optax.sgd(0.1, momentum=0.8)),
        (
            {"optimizer": "nesterov", "momentum": 0.8},
            optax.sgd(0.1, momentum=0.8, nesterov=True),
        ),
        ({"optimizer": "adam"}, optax.adam(0.1)),
        # AdamW without a weight decay of its own decays kernels by 1e-4.
        ({"optimizer": "adamw"}, optax.adamw(0.1, weight_decay=1e-4, mask=KERNELS)),
        (
            {"optimizer": "adamw", "weight_decay": 0.05},
            optax.adamw(0.1, weight_decay=0.05, mask=KERNELS),
        ),
        (
            {"optimizer": "adam", "weight_decay": 0.05, "decay_mask": "all"},
            optax.adamw(0.1, weight_decay=0.05),
        ),
        ({"l2": 0.3}, optax.chain(optax.add_decayed_weights(0.3, mask=KERNELS), optax.sgd(0.1))),
        (
            {"l2": 0.3, "decay_mask": "all"},
            optax.chain(optax.add_decayed_weights(0.3), optax.sgd(0.1)),
        ),
        ({"l1": 0.3}, optax.chain(_l1(0.3), optax.sgd(0.1))),
        # Clipping comes first: the penalties are added to the clipped gradient.
        (
            {"grad_clip": 0.5, "l2": 0.3},
            optax.chain(
                optax.clip_by_global_norm(0.5),
                optax.add_decayed_weights(0.3, mask=KERNELS),
                optax.sgd(0.1),
            ),
        ),
        (
            {"optimizer": "momentum", "momentum": 0.8, "l1": 0.3, "l2": 0.2},
            optax.chain(
                _l1(0.3), optax.add_decayed_weights(0.2, mask=KERNELS), optax.sgd(0.1, momentum=0.8)
            ),
        ),
    ],
)
def test_chain_matches_the_optax_reference(options, reference):
    tx, schedule = build_optimizer(_config(**options), total_steps=100)
    assert _values(schedule, [0, 99]) == pytest.approx([0.1, 0.1])
    got, want = _run(tx), _run(reference)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, want)


@pytest.mark.parametrize("rate", [0.5, 2.0])
def test_proximal_l1_comes_last_and_zeroes_small_kernel_weights(rate):
    tx, _ = build_optimizer(_config(l1_prox=rate), total_steps=100)
    got = _run(tx)
    want = _soft_threshold(optax.sgd(0.1), rate=rate, lr=0.1)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, want)
    if rate == 2.0:
        assert np.any(np.asarray(got["Dense_0"]["kernel"]) == 0.0)
    assert np.all(np.asarray(got["Dense_0"]["bias"]) != 0.0)  # kernels only


def test_warmup_epochs_become_steps_of_the_schedule():
    # 2 of 10 epochs with 100 steps in all: a linear warm-up over the first 20 steps.
    c = _config(epochs=10, warmup_epochs=2.0, schedule="cosine")
    tx, schedule = build_optimizer(c, total_steps=100)
    np.testing.assert_allclose(
        _values(schedule, [0, 10, 20, 60, 100]), [0, 0.05, 0.1, 0.05, 0], atol=1e-7
    )
    # Warm-up epochs need not be whole: 0.26 of 10 epochs of 100 steps rounds to 3 steps.
    _, schedule = build_optimizer(_config(epochs=10, warmup_epochs=0.26), total_steps=100)
    np.testing.assert_allclose(_values(schedule, [1, 2, 3]), [0.1 / 3, 0.2 / 3, 0.1], rtol=1e-6)
    params = _params()
    updates, _ = tx.update(_grads(0), tx.init(params), params)
    jax.tree.map(lambda u: np.testing.assert_array_equal(u, 0.0), updates)  # lr 0 at step 0


@pytest.mark.parametrize(
    "options, match",
    [
        ({"optimizer": "rmsprop"}, "optimizer must be one of"),
        ({"decay_mask": "biases"}, "decay_mask must be one of"),
        ({"schedule": "linear"}, "schedule must be one of"),
    ],
)
def test_unknown_names_raise(options, match):
    with pytest.raises(ValueError, match=match):
        build_optimizer(_config(**options), total_steps=10)
