"""Tests for jaxreg.optim.decay: agreement with optax, closed forms, convergence, path masks, validation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxreg.optim import (
    LrCountState,
    add_l1,
    add_l2,
    decay_mask,
    decoupled_weight_decay,
    param_paths,
    path_mask,
    path_to_str,
    prox_l1,
)


def _params(seed=0):
    rng = np.random.default_rng(seed)
    f32 = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
    return {
        "Conv_0": {"kernel": f32(3, 3, 2, 4), "bias": jnp.ones((4,))},
        "BatchNorm_0": {"scale": jnp.full((4,), 2.0), "bias": jnp.full((4,), -1.0)},
        "Dense_0": {"kernel": f32(4, 3), "bias": f32(3)},
    }


def _grads(params, seed=1):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), params)


def _run(tx, params, steps=3, grad_fn=None):
    state = tx.init(params)
    for i in range(steps):
        grads = grad_fn(params) if grad_fn else _grads(params, seed=i + 1)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params


# optax's Adam bias correction and its schedules mix float and int32 scalars, which the strict
# promotion of tests/conftest.py rejects; tests using them relax it locally.
optax_standard_promotion = functools.partial(jax.numpy_dtype_promotion, "standard")


def _assert_trees_close(a, b, **kw):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw), a, b)


# ------------------------------------------------------------------------------------ masks


def test_path_strings_for_dicts_lists_and_nnx_state(tiny_net):
    paths = sorted(
        jax.tree.leaves(param_paths({"layers": [{"conv": {"kernel": jnp.zeros((2, 2))}}]}))
    )
    assert paths == ["layers/0/conv/kernel"]
    _, state, _ = nnx.split(tiny_net, nnx.Param, ...)
    assert sorted(jax.tree.leaves(param_paths(state))) == [
        "bn/bias",
        "bn/scale",
        "conv/bias",
        "conv/kernel",
        "head/bias",
        "head/kernel",
    ]
    (path, _), *_ = jax.tree_util.tree_flatten_with_path({"a": (1, 2)})[0]
    assert path_to_str(path) == "a/0"


def test_default_mask_on_nnx_state_decays_kernels_only(tiny_net):
    _, params, _ = nnx.split(tiny_net, nnx.Param, nnx.BatchStat)
    mask = decay_mask(params)
    flags = dict(zip(jax.tree.leaves(param_paths(params)), jax.tree.leaves(mask)))
    assert flags == {
        "bn/bias": False,
        "bn/scale": False,
        "conv/bias": False,
        "conv/kernel": True,
        "head/bias": False,
        "head/kernel": True,
    }
    # Same answer on the pure-dict form of the state.
    pure = params.to_pure_dict()
    assert jax.tree.leaves(decay_mask(pure)) == jax.tree.leaves(mask)


def test_kernel_must_be_at_least_2d():
    assert decay_mask({"x": {"kernel": jnp.ones((3,))}}) == {"x": {"kernel": False}}
    # A path of one part (a top-level leaf) is judged by that part.
    top = decay_mask({"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))})
    assert top == {"kernel": True, "bias": False}


def test_path_mask_include_exclude():
    params = _params()
    m = path_mask(params, include=r"kernel$", exclude=("^Dense",))
    assert m["Conv_0"]["kernel"] and not m["Dense_0"]["kernel"] and not m["Conv_0"]["bias"]
    everything = path_mask(params)
    assert all(jax.tree.leaves(everything))
    only_bn = path_mask(params, include=["BatchNorm"])
    assert (
        only_bn["BatchNorm_0"] == {"scale": True, "bias": True} and not only_bn["Conv_0"]["kernel"]
    )
    # Several patterns: a leaf is in if any include matches, out if any exclude matches.
    m = path_mask(params, include=[r"kernel$", r"^BatchNorm"], exclude=[r"^Conv", r"scale$"])
    assert m == {
        "Conv_0": {"kernel": False, "bias": False},
        "BatchNorm_0": {"scale": False, "bias": True},
        "Dense_0": {"kernel": True, "bias": False},
    }
    with pytest.raises(ValueError, match="include"):
        path_mask(params, include="(")
    with pytest.raises(TypeError, match="exclude"):
        path_mask(params, exclude=[3])


@pytest.mark.parametrize(
    "make",
    [
        lambda m: add_l1(0.5, mask=m),
        lambda m: add_l2(0.5, mask=m),
        lambda m: prox_l1(0.5, learning_rate=0.1, mask=m),
        lambda m: decoupled_weight_decay(0.5, learning_rate=0.1, mask=m),
    ],
)
def test_masked_leaves_untouched_on_nnx_state(tiny_net, make):
    _, params, _ = nnx.split(tiny_net, nnx.Param, ...)
    params = jax.tree.map(lambda x: x + 0.5, params)  # no zero leaves (biases start at 0)
    zeros = jax.tree.map(jnp.zeros_like, params)
    for mask in (None, decay_mask, functools.partial(path_mask, include="head")):
        tx = make(mask)
        updates, _ = tx.update(zeros, tx.init(params), params)
        expected = (decay_mask if mask is None else mask)(params)
        for u, m in zip(jax.tree.leaves(updates), jax.tree.leaves(expected)):
            assert bool(jnp.any(u != 0)) == m


def test_mask_true_and_false():
    params = _params()
    g = jax.tree.map(jnp.zeros_like, params)
    u, _ = add_l2(1.0, mask=True).update(g, add_l2(1.0, mask=True).init(params), params)
    _assert_trees_close(u, params)
    u, _ = add_l2(1.0, mask=False).update(g, add_l2(1.0, mask=False).init(params), params)
    _assert_trees_close(u, g)


def test_bool_pytree_mask():
    params = _params()
    mask = jax.tree.map(lambda _: False, params)
    mask["Dense_0"]["bias"] = True
    tx = add_l2(1.0, mask=mask)
    u, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    np.testing.assert_allclose(u["Dense_0"]["bias"], params["Dense_0"]["bias"])
    assert not jnp.any(u["Dense_0"]["kernel"])


# ------------------------------------------------------------------------ agreement with optax


@pytest.mark.parametrize("mask", [None, True])
def test_add_l2_matches_add_decayed_weights(mask):
    params = _params()
    ref_mask = decay_mask if mask is None else None
    ours = optax.chain(add_l2(0.3, mask=mask), optax.sgd(0.1))
    ref = optax.chain(optax.add_decayed_weights(0.3, mask=ref_mask), optax.sgd(0.1))
    _assert_trees_close(_run(ours, params), _run(ref, params), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("lr", [1e-2, optax.linear_schedule(1e-2, 1e-3, 3)])
@optax_standard_promotion()
def test_decoupled_matches_adamw(lr):
    params = _params()
    ours = optax.chain(optax.adam(lr), decoupled_weight_decay(0.1, learning_rate=lr))
    ref = optax.adamw(lr, weight_decay=0.1, mask=decay_mask)
    _assert_trees_close(
        _run(ours, params, steps=4), _run(ref, params, steps=4), rtol=1e-5, atol=1e-6
    )
    # Also with scale_by_adam + learning-rate scaling spelled out.
    spelled = optax.chain(
        optax.scale_by_adam(),
        optax.scale_by_learning_rate(lr),
        decoupled_weight_decay(0.1, learning_rate=lr),
    )
    _assert_trees_close(
        _run(spelled, params, steps=4), _run(ref, params, steps=4), rtol=1e-5, atol=1e-6
    )


@optax_standard_promotion()
def test_jit_matches_eager():
    params = _params()
    tx = optax.chain(
        add_l1(0.01),
        optax.adam(1e-2),
        prox_l1(0.05, learning_rate=1e-2),
        decoupled_weight_decay(0.1, learning_rate=optax.constant_schedule(1e-2)),
    )
    grads = _grads(params)
    state = tx.init(params)
    eager = tx.update(grads, state, params)
    jitted = jax.jit(tx.update)(grads, state, params)
    _assert_trees_close(eager, jitted, rtol=1e-5, atol=1e-6)


def test_bfloat16_params_under_strict_promotion():
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), _params())
    sched = optax.constant_schedule(0.1)
    tx = optax.chain(
        add_l1(0.1),
        add_l2(0.1),
        optax.sgd(sched),
        prox_l1(0.1, learning_rate=sched),
        decoupled_weight_decay(0.1, learning_rate=sched),
    )
    out = _run(tx, params, steps=1, grad_fn=lambda p: jax.tree.map(jnp.ones_like, p))
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(out))


# ------------------------------------------------------------------------------ prox closed form


def test_prox_l1_closed_form_and_schedule_count():
    p = {"w": {"kernel": jnp.array([[1.0, -1.0, 0.05, -0.2, 0.3]])}}
    u = {"w": {"kernel": jnp.array([[-0.1, 0.2, 0.0, 0.1, 0.5]])}}
    sched = lambda count: 0.5 * (count + 1).astype(jnp.float32)
    tx = prox_l1(0.2, learning_rate=sched)  # threshold lr * rate = 0.1 then 0.2
    state = tx.init(p)
    out, state = tx.update(u, state, p)
    z = np.array([0.9, -0.8, 0.05, -0.1, 0.8])
    expected = np.sign(z) * np.maximum(np.abs(z) - 0.1, 0) - np.asarray(p["w"]["kernel"][0])
    np.testing.assert_allclose(out["w"]["kernel"][0], expected, rtol=1e-6, atol=1e-7)
    new_p = optax.apply_updates(p, out)
    assert new_p["w"]["kernel"][0, 2] == 0.0 and new_p["w"]["kernel"][0, 3] == 0.0  # exact zeros
    out2, _ = tx.update(u, state, p)  # second step: threshold 0.2
    expected2 = np.sign(z) * np.maximum(np.abs(z) - 0.2, 0) - np.asarray(p["w"]["kernel"][0])
    np.testing.assert_allclose(out2["w"]["kernel"][0], expected2, rtol=1e-6, atol=1e-7)


def test_prox_l1_sparsity_rises_with_rate():
    params = {
        "d": {"kernel": jnp.asarray(np.random.default_rng(0).normal(size=(20, 10)), jnp.float32)}
    }
    fractions = []
    for rate in (0.0, 0.5, 2.0, 8.0):
        tx = optax.chain(optax.sgd(0.1), prox_l1(rate, learning_rate=0.1))
        out = _run(tx, params, steps=3)
        fractions.append(float(jnp.mean(out["d"]["kernel"] == 0.0)))
    assert fractions[0] == 0.0
    assert fractions == sorted(fractions) and fractions[-1] > 0.9


# ----------------------------------------------------------------------------------- convergence


def _regression(n=64, d=8, seed=0, orthogonal=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    if orthogonal:  # columns with X^T X / n = I
        q, _ = np.linalg.qr(x)
        x = q * np.sqrt(n)
    w_true = np.array([2.0, -1.5, 0, 0, 1.0, 0, 0, 0.3])[:d]
    y = x @ w_true + 0.1 * rng.normal(size=n)
    return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)


def _fit(tx, x, y, steps):
    params = {"linear": {"kernel": jnp.zeros((x.shape[1], 1))}}

    def data_grad(p):
        return jax.grad(lambda q: 0.5 * jnp.mean(jnp.square(x @ q["linear"]["kernel"][:, 0] - y)))(
            p
        )

    state = tx.init(params)

    @jax.jit
    def step(carry, _):
        p, s = carry
        u, s = tx.update(data_grad(p), s, p)
        return (optax.apply_updates(p, u), s), None

    (params, _), _ = jax.lax.scan(step, (params, state), None, length=steps)
    return np.asarray(params["linear"]["kernel"][:, 0])


def _lasso_solution(x, y, rate):
    b = np.asarray(x.T @ y) / x.shape[0]
    return np.sign(b) * np.maximum(np.abs(b) - rate, 0.0)


def test_prox_l1_recovers_lasso_solution_and_zero_pattern():
    x, y = _regression(orthogonal=True)
    rate = 0.2
    w = _fit(optax.chain(optax.sgd(0.5), prox_l1(rate, learning_rate=0.5)), x, y, steps=100)
    expected = _lasso_solution(x, y, rate)
    np.testing.assert_array_equal(w == 0.0, expected == 0.0)
    np.testing.assert_allclose(w, expected, atol=1e-5)
    assert (w == 0.0).sum() >= 4


def test_add_l1_subgradient_approaches_lasso_solution():
    x, y = _regression(orthogonal=True)
    rate, lr = 0.2, 0.01
    w = _fit(optax.chain(add_l1(rate), optax.sgd(lr)), x, y, steps=2000)
    expected = _lasso_solution(x, y, rate)
    np.testing.assert_allclose(w, expected, atol=5 * lr * rate)


def _ridge_solution(x, y, rate):
    n, d = x.shape
    xx, xy = np.asarray(x.T @ x) / n, np.asarray(x.T @ y) / n
    return np.linalg.solve(xx + rate * np.eye(d), xy)


def test_add_l2_converges_to_ridge_solution():
    x, y = _regression()
    w = _fit(optax.chain(add_l2(0.5), optax.sgd(0.3)), x, y, steps=300)
    np.testing.assert_allclose(w, _ridge_solution(x, y, 0.5), atol=1e-4)


def test_decoupled_with_sgd_converges_to_ridge_solution():
    x, y = _regression()
    lr = optax.constant_schedule(0.3)
    w = _fit(
        optax.chain(optax.sgd(lr), decoupled_weight_decay(0.5, learning_rate=lr)), x, y, steps=300
    )
    np.testing.assert_allclose(w, _ridge_solution(x, y, 0.5), atol=1e-4)


# ------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "make",
    [
        lambda r: add_l1(r),
        lambda r: add_l2(r),
        lambda r: prox_l1(r, learning_rate=0.1),
        lambda r: decoupled_weight_decay(r, learning_rate=0.1),
    ],
)
def test_bad_rate(make):
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="rate"):
            make(bad)
    for bad in ("0.1", None, True, jnp.ones((2,))):
        with pytest.raises(TypeError, match="rate"):
            make(bad)
    make(0)  # ints and zero are fine


def test_bad_learning_rate_and_missing_params():
    with pytest.raises(ValueError, match="learning_rate"):
        prox_l1(0.1, learning_rate=-1.0)
    with pytest.raises(TypeError, match="learning_rate"):
        decoupled_weight_decay(0.1, learning_rate="fast")
    params = _params()
    schedule = optax.constant_schedule(0.1)
    for tx in (
        add_l1(0.1, mask=True),
        add_l2(0.1, mask=True),
        prox_l1(0.1, learning_rate=0.1, mask=True),
        prox_l1(0.1, learning_rate=schedule, mask=True),
        decoupled_weight_decay(0.1, learning_rate=schedule, mask=True),
    ):
        with pytest.raises(ValueError, match="needs the current params"):
            tx.update(params, tx.init(params))


def test_states_are_optax_states():
    # Stateless transforms keep optax's empty state; scheduled ones count their updates.
    params = _params()
    for tx in (add_l1(0.1, mask=True), add_l2(0.1, mask=True), prox_l1(0.1, learning_rate=0.1)):
        state = tx.init(params)
        assert jax.tree.leaves(state) == []
        assert optax.EmptyState() in (state, getattr(state, "inner_state", None))
    tx = decoupled_weight_decay(0.1, learning_rate=optax.constant_schedule(0.1), mask=True)
    state = tx.init(params)
    assert isinstance(state, LrCountState) and int(state.count) == 0
    _, state = tx.update(params, state, params)
    assert int(state.count) == 1


def test_mask_false_changes_nothing_and_keeps_no_state():
    params = _params()
    tx = add_l2(1.0, mask=False)
    assert tx.init(params) == optax.EmptyState()
    g = _grads(params)
    u, _ = tx.update(g, tx.init(params), params)
    _assert_trees_close(u, g)
