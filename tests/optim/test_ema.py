"""Tests for jaxreg.optim.ema: closed forms, warm-up, BatchNorm-stat modes, BN re-estimation on a real nnx model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxreg.optim import (
    EmaState,
    ema,
    ema_decay,
    ema_params,
    param_ema,
    recompute_batch_stats,
)
from tests.optim.tiny_net import TinyNet


def test_closed_form_on_constants():
    """Constant params c from init a: ema_n = c + (a - c) * d**n."""
    a = {"w": jnp.zeros((2, 3)), "b": jnp.full((3,), 4.0)}
    c = {"w": jnp.ones((2, 3)), "b": jnp.full((3,), -2.0)}
    tx = ema(0.9)
    state = tx.init(a)
    update = jax.jit(tx.update)
    for _ in range(5):
        state = update(state, c)
    assert isinstance(state, EmaState) and int(state.count) == 5
    for name in ("w", "b"):
        np.testing.assert_allclose(
            state.ema_params[name], c[name] + (a[name] - c[name]) * 0.9**5, rtol=1e-6
        )
    assert state.ema_batch_stats is None


def test_warmup_formula():
    counts = jnp.arange(200)
    d = ema_decay(0.99, counts, warmup=True)
    expected = np.minimum(0.99, (1.0 + np.arange(200)) / (10.0 + np.arange(200)))
    np.testing.assert_allclose(d, expected, rtol=1e-6)
    assert float(ema_decay(0.99, 5, warmup=False)) == pytest.approx(0.99)
    assert float(ema_decay(0.99, 0)) == pytest.approx(0.99)  # no warm-up by default
    # First update with warm-up uses decay 0.1: ema = 0.1 * init + 0.9 * params.
    tx = ema(0.999, warmup=True)
    state = tx.update(tx.init({"w": jnp.zeros(2)}), {"w": jnp.full((2,), 10.0)})
    np.testing.assert_allclose(state.ema_params["w"], 9.0, rtol=1e-6)
    # Second update uses min(0.999, 2/11).
    state = tx.update(state, {"w": jnp.zeros(2)})
    np.testing.assert_allclose(state.ema_params["w"], 9.0 * 2 / 11, rtol=1e-6)


def test_batch_stats_average_vs_copy_and_dtypes():
    params = {"w": jnp.zeros((2,), jnp.bfloat16)}
    stats0 = {"mean": jnp.zeros(3), "var": jnp.ones(3), "steps": jnp.zeros((), jnp.int32)}
    stats1 = {
        "mean": jnp.full((3,), 2.0),
        "var": jnp.full((3,), 5.0),
        "steps": jnp.ones((), jnp.int32),
    }
    avg, cp = ema(0.5, batch_stats="average"), ema(0.5, batch_stats="copy")
    s_avg = avg.update(avg.init(params, stats0), params, stats1)
    s_cp = cp.update(cp.init(params, stats0), params, stats1)
    np.testing.assert_allclose(s_avg.ema_batch_stats["mean"], 1.0)
    np.testing.assert_allclose(s_avg.ema_batch_stats["var"], 3.0)
    assert int(s_avg.ema_batch_stats["steps"]) == 1  # integer leaves are copied
    np.testing.assert_allclose(s_cp.ema_batch_stats["mean"], 2.0)
    np.testing.assert_allclose(s_cp.ema_batch_stats["var"], 5.0)
    assert s_avg.ema_params["w"].dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="batch_stats"):
        avg.update(avg.init(params), params, stats1)
    with pytest.raises(ValueError, match="batch_stats"):
        avg.update(avg.init(params, stats0), params)


def test_works_on_nnx_state():
    model = TinyNet(rngs=nnx.Rngs(0))
    _, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    tx = ema(0.5)
    state = tx.init(params, stats)
    doubled = jax.tree.map(lambda x: 2 * x, params)
    state = tx.update(state, doubled, stats)
    jax.tree.map(
        lambda e, p: np.testing.assert_allclose(e, 1.5 * p, rtol=1e-6), state.ema_params, params
    )
    assert jax.tree.structure(state.ema_params) == jax.tree.structure(params)


def test_decay_zero_tracks_and_decay_one_freezes():
    a, c = {"w": jnp.zeros(2)}, {"w": jnp.full((2,), 3.0)}
    for decay, want in ((0.0, 3.0), (1.0, 0.0)):  # both ends of [0, 1] are allowed
        tx = ema(decay)
        np.testing.assert_array_equal(tx.update(tx.init(a), c).ema_params["w"], want)
        ptx = param_ema(decay)
        _, state = ptx.update({"w": jnp.full((2,), 3.0)}, ptx.init(a), a)
        np.testing.assert_array_equal(ema_params(state, a)["w"], want)


def test_update_count_saturates_instead_of_wrapping():
    top = jnp.iinfo(jnp.int32).max
    tx = ema(0.5)
    state = tx.init({"w": jnp.zeros(2)})._replace(count=jnp.asarray(top, jnp.int32))
    assert int(tx.update(state, {"w": jnp.ones(2)}).count) == top
    ptx = param_ema(0.5)
    pstate = ptx.init({"w": jnp.zeros(2)})._replace(count=jnp.asarray(top, jnp.int32))
    _, pstate = ptx.update({"w": jnp.ones(2)}, pstate, {"w": jnp.zeros(2)})
    assert int(pstate.count) == top


def test_bad_arguments():
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="decay"):
            param_ema(bad)
    with pytest.raises(TypeError, match="warmup"):
        param_ema(0.9, warmup=1)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="decay"):
            ema(bad)
    with pytest.raises(TypeError, match="decay"):
        ema("0.9")
    with pytest.raises(ValueError, match="batch_stats"):
        ema(0.9, batch_stats="ema")
    with pytest.raises(TypeError, match="warmup"):
        ema(0.9, warmup="inverse")


# ------------------------------------------------------------------------------ BN re-estimation


def _stats_fn_for(graphdef):
    @jax.jit
    def stats_fn(params, batch_stats, images):
        model = nnx.merge(graphdef, params, batch_stats)
        model.train()
        model(images)
        return nnx.state(model, nnx.BatchStat)

    return stats_fn


def _conv_features(model, images):
    return np.asarray(model.conv(images)).reshape(-1, 4)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_recompute_batch_stats_matches_data_statistics(momentum):
    model = TinyNet(momentum=momentum, rngs=nnx.Rngs(1))
    graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.uniform(size=(3, 4, 6, 6, 3)), jnp.float32)  # 3 batches of 4
    stats_fn = _stats_fn_for(graphdef)

    # One batch: exactly the data's per-channel mean and (biased) variance at the BN input.
    single = recompute_batch_stats(stats_fn, params, stats, [images[0]], momentum=momentum)
    feats = _conv_features(model, images[0])
    np.testing.assert_allclose(single["bn"]["mean"].value, feats.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(single["bn"]["var"].value, feats.var(0), rtol=1e-4, atol=1e-6)

    # Several equal batches: the data mean, and the mean of per-batch variances (not momentum).
    multi = recompute_batch_stats(stats_fn, params, stats, images, momentum=momentum)
    per_batch = [_conv_features(model, b) for b in images]
    np.testing.assert_allclose(
        multi["bn"]["mean"].value, np.concatenate(per_batch).mean(0), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        multi["bn"]["var"].value,
        np.mean([f.var(0) for f in per_batch], axis=0),
        rtol=1e-4,
        atol=1e-6,
    )


def test_recompute_batch_stats_bad_arguments():
    with pytest.raises(ValueError, match="batches"):
        recompute_batch_stats(lambda p, s, x: s, {}, {"m": jnp.zeros(2)}, [])
    with pytest.raises(ValueError, match="momentum"):
        recompute_batch_stats(lambda p, s, x: s, {}, {}, [jnp.zeros(2)], momentum=1.0)
    with pytest.raises(TypeError, match="stats_fn"):
        recompute_batch_stats(None, {}, {}, [jnp.zeros(2)])
    for bad in ("0.5", True):
        with pytest.raises(TypeError, match="momentum"):
            recompute_batch_stats(lambda p, s, x: s, {}, {}, [jnp.zeros(2)], momentum=bad)


def test_recompute_batch_stats_passes_non_float_statistics_through():
    # With momentum only floating statistics are un-blended; an integer counter is kept as
    # the last batch returned it.
    stats = {"mean": jnp.full((2,), 1.0), "steps": jnp.asarray(7, jnp.int32)}
    fn = lambda p, s, x: {"mean": 0.9 * s["mean"] + 0.1 * x, "steps": s["steps"] + 1}
    out = recompute_batch_stats(fn, {}, stats, [jnp.full((2,), 5.0)], momentum=0.9)
    np.testing.assert_allclose(out["mean"], 5.0, rtol=1e-5)
    assert out["steps"].dtype == jnp.int32 and int(out["steps"]) == 8


# ----------------------------------------------------------------------------- param_ema (Optax)


def test_param_ema_equals_a_direct_computation_and_passes_updates_through():
    import optax

    from jaxreg.optim import ema_params, param_ema

    params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array(0.5)}
    grads = [{"w": jnp.array([0.3, 0.1]), "b": jnp.array(-1.0)} for _ in range(4)]
    for warmup in (False, True):
        tx = optax.chain(optax.sgd(0.1), param_ema(0.9, warmup=warmup))
        ref_tx = optax.sgd(0.1)
        state, ref_state = tx.init(params), ref_tx.init(params)
        p, avg = params, params
        for i, g in enumerate(grads):
            updates, state = tx.update(g, state, p)
            ref_updates, ref_state = ref_tx.update(g, ref_state, p)
            assert jax.tree.all(
                jax.tree.map(lambda a, b: bool(jnp.all(a == b)), updates, ref_updates)
            )
            p = optax.apply_updates(p, updates)
            d = min(0.9, (1 + i) / (10 + i)) if warmup else 0.9
            avg = jax.tree.map(lambda a, x, d=d: d * a + (1 - d) * x, avg, p)
            got = ema_params(state, p)
            for k in params:
                np.testing.assert_allclose(got[k], avg[k], rtol=1e-6)


def test_param_ema_masked_and_frozen_parameters_fall_back_to_live_values():
    import optax

    from jaxreg.optim import ema_params, param_ema

    params = {"body": {"w": jnp.ones(3)}, "head": {"w": jnp.zeros(2)}}
    g = jax.tree.map(jnp.ones_like, params)
    # Masked: only the body is averaged; the head's value is the live one.
    tx = optax.chain(optax.sgd(1.0), optax.masked(param_ema(0.5), {"body": True, "head": False}))
    updates, state = tx.update(g, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    got = ema_params(state, new)
    np.testing.assert_allclose(got["body"]["w"], 0.5)  # 0.5 * 1 + 0.5 * 0
    np.testing.assert_array_equal(got["head"]["w"], new["head"]["w"])
    # Frozen with set_to_zero: the average of a parameter that never moves is its value.
    tx = optax.chain(
        optax.multi_transform(
            {"train": optax.sgd(1.0), "frozen": optax.set_to_zero()},
            {"body": "frozen", "head": "train"},
        ),
        param_ema(0.5),
    )
    state = tx.init(params)
    p = params
    for _ in range(3):
        updates, state = tx.update(g, state, p)
        p = optax.apply_updates(p, updates)
    got = ema_params(state, p)
    np.testing.assert_array_equal(got["body"]["w"], params["body"]["w"])
    with pytest.raises(ValueError, match=r"exactly one jaxreg\.param_ema"):
        ema_params(optax.sgd(0.1).init(params), params)


def test_param_ema_inside_nnx_optimizer():
    import optax

    from jaxreg.optim import ema_params, param_ema

    model = TinyNet(rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.chain(optax.adam(1e-2), param_ema(0.8)), wrt=nnx.Param)
    x = jax.random.uniform(jax.random.key(1), (4, 6, 6, 3))
    avg = nnx.to_pure_dict(nnx.state(model, nnx.Param))

    @nnx.jit
    def step(model, opt, x):
        def loss_fn(m):
            return jnp.mean(m(x) ** 2)

        grads = nnx.grad(loss_fn)(model)
        opt.update(model, grads)

    for _ in range(3):
        with jax.numpy_dtype_promotion("standard"):  # optax's adam mixes int32 and float
            step(model, opt, x)
        live = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        avg = jax.tree.map(lambda a, p: 0.8 * a + 0.2 * p, avg, live)
    got = nnx.to_pure_dict(ema_params(opt.opt_state, nnx.state(model, nnx.Param)))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(avg)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="needs params"):
        param_ema(0.9).update({"w": jnp.ones(1)}, param_ema(0.9).init({"w": jnp.ones(1)}))
