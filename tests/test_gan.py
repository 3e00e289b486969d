"""jaxreg.gan: shapes, DiffAugment gradients, one-network-at-a-time loss moves, EMA, sampling, FD."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxreg import data as data_lib
from jaxreg import gan
from jaxreg.train import step as step_lib
from jaxreg.train.state import TrainState


def _gan(shape=(8, 8, 1), width=8, latent=16, seed=0):
    return gan.ConditionalGAN(10, shape, width=width, latent_dim=latent, rngs=nnx.Rngs(seed))


@pytest.mark.parametrize("shape", [(28, 28, 1), (10, 6, 3)])
def test_shapes_and_range(shape):
    m = _gan(shape)
    z, y = jnp.ones((5, 16)), jnp.arange(5, dtype=jnp.int32)
    x = nnx.jit(lambda g, z, y: g(z, y))(m.g, z, y)
    assert x.shape == (5, *shape) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert m.d(x, y).shape == (5,)


def test_diff_augment_draws_per_image_and_passes_gradients_to_the_generator():
    x = jnp.full((4, 8, 8, 1), 0.5)
    out = gan.diff_augment(jax.random.key(0), x)
    assert out.shape == x.shape
    assert len({float(jnp.sum(o)) for o in out}) == 4  # independent parameters per image
    np.testing.assert_array_equal(gan.diff_augment(jax.random.key(0), x, policy=""), x)
    m = _gan()
    gd, gs = nnx.split(m.g)
    z, y = jax.random.normal(jax.random.key(1), (4, 16)), jnp.arange(4, dtype=jnp.int32)
    for policy in ("color", "translation", "cutout", "color,translation,cutout"):

        def objective(state, policy=policy):
            fake = nnx.merge(gd, state, copy=True)(z, y)
            return jnp.mean(m.d(gan.diff_augment(jax.random.key(2), fake, policy=policy), y))

        grads = jax.jit(jax.grad(objective))(gs)
        norm = float(optax.tree.norm(grads))
        assert np.isfinite(norm) and norm > 0, policy
    with pytest.raises(ValueError, match="DiffAugment policy"):
        gan.parse_policy("color,flip")
    with pytest.raises(ValueError, match="DiffAugment policy"):
        gan.GANTask(10, diff_augment="cutout,cutout")


def _steps(g_lr, d_lr, n, diff_augment=""):
    """`n` GAN steps on 40 digits (8x8); returns the first and last step's metrics."""
    train = data_lib.stratified_subset(data_lib.load_splits("digits")["train"], 4, seed=0)
    m = _gan()
    tx = gan.gan_optimizer(
        nnx.state(m, nnx.Param), learning_rate=g_lr, d_learning_rate=d_lr, ema_decay=0.0
    )
    st = TrainState.create(m, tx, key=jax.random.key(0))
    task = gan.GANTask(10, latent_dim=16, diff_augment=diff_augment)
    step = step_lib.make_train_step(task=task)
    x, y = jnp.asarray(train.images), jnp.asarray(train.labels, jnp.int32)
    out = []
    for _ in range(n):
        st, metrics = step(st, x, y)
        out.append({k: float(v) for k, v in metrics.items()})
    return out[0], out[-1]


def test_each_network_lowers_its_own_loss_when_the_other_is_held():
    first, last = _steps(0.0, 2e-3, 15)  # only the discriminator learns
    assert last["d_loss"] < first["d_loss"] - 0.2
    assert last["g_loss"] > first["g_loss"]  # a better discriminator hurts the generator
    first, last = _steps(2e-3, 0.0, 15, diff_augment="translation")  # only the generator
    assert last["g_loss"] < first["g_loss"] - 0.03
    assert last["d_loss"] > first["d_loss"]


def test_gan_optimizer_averages_only_the_generator():
    from jaxreg.optim.ema import ema_params

    m = _gan()
    params = nnx.state(m, nnx.Param)
    tx = gan.gan_optimizer(params, learning_rate=0.1, ema_decay=0.5, ema_warmup=False)
    grads = jax.tree.map(jnp.ones_like, params)
    with jax.numpy_dtype_promotion("standard"):  # as in train_step: optax mixes int and float
        opt = tx.init(params)
        updates, opt = tx.update(grads, opt, params)
    new = optax.apply_updates(params, updates)
    avg = ema_params(opt, new)
    for a, p, n in zip(
        jax.tree.leaves(avg["g"]), jax.tree.leaves(params["g"]), jax.tree.leaves(new["g"])
    ):
        np.testing.assert_allclose(a, 0.5 * p + 0.5 * n, rtol=1e-6, atol=1e-7)
    for a, n in zip(jax.tree.leaves(avg["d"]), jax.tree.leaves(new["d"])):
        np.testing.assert_array_equal(a, n)  # the discriminator is not averaged
    assert not np.allclose(jax.tree.leaves(new["g"])[0], jax.tree.leaves(params["g"])[0])


def test_synthesize_labels_determinism_and_batch_independence():
    g = _gan().g
    x, y = gan.synthesize(jax.random.key(0), g, 3, classes=[7, 2])
    assert x.shape == (6, 8, 8, 1) and x.dtype == np.float32
    assert y.tolist() == [7, 7, 7, 2, 2, 2]
    x2, _ = gan.synthesize(jax.random.key(0), g, 3, classes=[7, 2], batch_size=4)
    np.testing.assert_allclose(x, x2, atol=1e-6)
    x3, _ = gan.synthesize(jax.random.key(1), g, 3, classes=[7, 2])
    assert not np.allclose(x, x3)
    _, all_y = gan.synthesize(jax.random.key(0), g, 2)
    assert all_y.tolist() == np.repeat(np.arange(10), 2).tolist()
    for bad in ({"n_per_class": 0}, {"n_per_class": 2, "classes": [10]}):
        with pytest.raises(ValueError, match=r"n_per_class|classes"):
            gan.synthesize(jax.random.key(0), g, **bad)


def test_frechet_distance_floor_and_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4000, 3)), rng.normal(size=(4000, 3))
    assert gan.frechet_distance(a, b) < 0.02
    assert abs(gan.frechet_distance(a, b + 2.0) - 12.0) < 0.3  # |mu|^2 = 3 * 4
    with pytest.raises(ValueError, match="features"):
        gan.frechet_distance(a, b[:, :2])


def test_gan_cli_trains_samples_and_writes_a_pool_the_loop_reads(tmp_path, capsys):
    from jaxreg import cli
    from jaxreg.train.loop import load_pool

    work = tmp_path / "g"
    overrides = [
        "--config.data=digits",
        "--config.train_per_class=4",
        "--config.epochs=2",
        "--config.batch_size=16",
        "--config.gan.width=8",
        "--config.gan.latent_dim=16",
        "--config.gan.epoch_steps=3",
    ]
    assert cli.main(["gan", "train", "--workdir", str(work), *overrides]) == 0
    assert "steps            10" in capsys.readouterr().out  # 40 images x2: 5 steps an epoch
    png, npz = tmp_path / "s.png", tmp_path / "pool.npz"
    args = ["gan", "sample", str(work), "--per-class", "3", "--out", str(png), "--npz", str(npz)]
    assert cli.main(args) == 0 and png.exists()
    pool = load_pool(npz, data_lib.load_splits("digits")["train"])
    assert pool.labels.tolist() == np.repeat(np.arange(10), 3).tolist()
    a, _ = gan.synthesize(jax.random.key(0), gan.load_generator(work), 3)
    np.testing.assert_allclose(a, pool.images, atol=1e-6)  # the same generator, reloaded
    paths = gan.write_class_grids(tmp_path / "grids", a, pool.labels, per_class=3)
    assert len(paths) == 11
    assert (
        cli.main(
            ["gan", "train", "--workdir", str(tmp_path / "x"), "--config.gan.diff_augment=flip"]
        )
        == 2
    )
    assert "gan.diff_augment" in capsys.readouterr().err
    assert cli.main(["gan", "sample", str(work), "--config.seed=1"]) == 2


class _Oracle(nnx.Module):
    """Labels an image by its mean brightness: class k near k / 10."""

    def __call__(self, x):
        m = jnp.mean(x, axis=(1, 2, 3))[:, None]
        return -((m - jnp.arange(10, dtype=jnp.float32)[None, :] / 10.0) ** 2)


def test_sample_quality_counts_hits_per_class_and_fd_floors_at_zero():
    labels = np.repeat(np.arange(10), 4).astype(np.int32)
    images = np.broadcast_to((labels / 10.0)[:, None, None, None], (40, 4, 4, 1)).copy()
    images[np.flatnonzero(labels == 3)[:2]] = 0.9  # two 3s look like 9s
    rng = np.random.default_rng(0)
    real = np.clip(images + rng.normal(0, 0.01, images.shape), 0, 1).astype(np.float32)
    q = gan.sample_quality(images.astype(np.float32), labels, _Oracle(), real, real)
    assert q["classifier_accuracy"] == pytest.approx(38 / 40)
    assert q["per_class_accuracy"][3] == 0.5 and q["per_class_accuracy"][9] == 1.0
    assert q["frechet_floor"] == pytest.approx(0.0, abs=1e-9)
