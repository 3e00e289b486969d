"""Autoencoders: max-unpooling and deconvolution as adjoints, odd sizes, training and denoising."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from jaxreg.models.autoencoder import UPSAMPLE, Autoencoder, EncoderClassifier, max_unpool_2x2
from jaxreg.models.layers import max_pool_2x2_with_indices
from jaxreg.train.loop import train_and_evaluate
from tests.train.conftest import tiny_config


def _select(x, positions):
    """Each 2x2 window's value at `positions` (the linear map max-pooling applies)."""
    n, h, w, c = positions.shape
    win = x.reshape(n, h, 2, w, 2, c).transpose(0, 1, 3, 5, 2, 4).reshape(n, h, w, c, 4)
    return jnp.take_along_axis(win, positions[..., None].astype(jnp.int32), axis=-1)[..., 0]


def test_unpool_puts_each_value_at_its_pool_position_and_zeros_elsewhere():
    x = jax.random.normal(jax.random.key(0), (2, 6, 8, 3))
    pooled, pos = max_pool_2x2_with_indices(x)
    up = max_unpool_2x2(pooled, pos, (6, 8))
    kept = up != 0
    assert int(kept.sum()) == pooled.size  # one value per window, zeros elsewhere
    np.testing.assert_array_equal(up[kept], x[kept])  # where it came from
    np.testing.assert_array_equal(_select(x, pos), pooled)
    # MNIST-like all-zero windows: the tie goes to the first position (top-left).
    z = jnp.zeros((1, 2, 2, 1))
    _, pz = max_pool_2x2_with_indices(z)
    assert int(pz[0, 0, 0, 0]) == 0


def test_unpool_is_the_adjoint_of_the_pools_selection():
    kx, ky, kz = jax.random.split(jax.random.key(1), 3)
    _, pos = max_pool_2x2_with_indices(jax.random.normal(kz, (2, 8, 10, 4)))
    x = jax.random.normal(kx, (2, 8, 10, 4))
    y = jax.random.normal(ky, pos.shape)
    lhs = jnp.vdot(_select(x, pos), y)
    rhs = jnp.vdot(x, max_unpool_2x2(y, pos, (8, 10)))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-5)


def test_the_transposed_convolution_is_the_adjoint_of_its_convolution():
    deconv = nnx.ConvTranspose(3, 2, (3, 3), strides=(2, 2), use_bias=False, rngs=nnx.Rngs(2))
    kernel = deconv.kernel[...]
    flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)  # the forward conv's kernel
    with jax.default_matmul_precision("float32"):
        conv = lambda x: lax.conv_general_dilated(
            x, flipped, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        x = jax.random.normal(jax.random.key(3), (2, 10, 12, 2))
        y = jax.random.normal(jax.random.key(4), (2, 5, 6, 3))
        lhs, rhs = jnp.vdot(conv(x), y), jnp.vdot(x, deconv(y))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-4)


@pytest.mark.parametrize("upsample", UPSAMPLE)
@pytest.mark.parametrize("shape", [(28, 28, 1), (13, 11, 3), (7, 9, 1), (8, 8, 1)])
def test_odd_sizes_round_trip(upsample, shape):
    m = Autoencoder(shape, upsample=upsample, channels=(4, 6), code_size=8, rngs=nnx.Rngs(0))
    x = jax.random.uniform(jax.random.key(0), (2, *shape))
    assert m(x).shape == x.shape
    code, switches = m.encode(x)
    assert code.shape == (2, 8) and len(switches) == 2


def test_bad_options():
    with pytest.raises(ValueError, match="upsample must be one of"):
        Autoencoder((8, 8, 1), upsample="pixelshuffle", rngs=nnx.Rngs(0))
    m = Autoencoder((8, 8, 1), upsample="unpool", rngs=nnx.Rngs(0))
    code, _ = m.encode(jnp.ones((1, 8, 8, 1)))
    with pytest.raises(ValueError, match="needs the encoder's switches"):
        m.decode(code)
    with pytest.raises(ValueError, match="does not fit"):
        max_unpool_2x2(jnp.ones((1, 2, 2, 1)), jnp.zeros((1, 2, 2, 1), jnp.int8), (6, 4))


def _ae(rngs):
    return Autoencoder((8, 8, 1), upsample="unpool", channels=(16, 32), code_size=32, rngs=rngs)


def test_training_lowers_the_reconstruction_loss_and_denoising_raises_psnr(tmp_path, digits_small):
    c = tiny_config(
        epochs=12,
        task="reconstruction",
        reconstruction_loss="bce",
        learning_rate=3e-3,
        batch_size=20,
        corrupt="noise(sigma=0.3)",
    )
    r = train_and_evaluate(c, tmp_path, model=_ae, data=digits_small)
    h = r["history"]
    assert h[-1]["train_loss"] < h[0]["train_loss"] and h[-1]["val_loss"] < h[0]["val_loss"]
    assert r["test_psnr"] > r["test_input_psnr"] + 1.0, (r["test_psnr"], r["test_input_psnr"])


def test_the_encoder_loads_into_a_classifier(tmp_path, digits_small):
    from jaxreg import transfer

    ae = _ae(nnx.Rngs(0))
    clf = EncoderClassifier(10, (8, 8, 1), channels=(16, 32), code_size=32, rngs=nnx.Rngs(1))
    report = transfer.load(clf, ae, include="^encoder/")
    assert report["loaded"] and all(p.startswith("encoder/") for p in report["loaded"])
    np.testing.assert_array_equal(clf.encoder.code.kernel[...], ae.encoder.code.kernel[...])


def test_a_linear_probe_on_a_large_code_learns(digits_small):
    """The head starts at zero: a probe on a loaded encoder with a large code still fits.

    A trained autoencoder's code reaches |code| ~ 10 (mnist5k); with a randomly initialised
    head the probe started at a loss of ~10 and ended at 0.28 test accuracy.
    """
    import optax

    clf = EncoderClassifier(10, (8, 8, 1), channels=(4, 8), code_size=16, rngs=nnx.Rngs(0))
    clf.encoder.code.kernel[...] = clf.encoder.code.kernel[...] * 50.0  # a large-scale code
    x, y = jnp.asarray(digits_small["train"].images), jnp.asarray(digits_small["train"].labels)
    np.testing.assert_array_equal(clf(x), jnp.zeros((len(x), 10)))  # uniform first logits
    head = {"kernel": clf.head.kernel[...], "bias": clf.head.bias[...]}
    opt = optax.adam(1e-3)
    opt_state = opt.init(head)
    feats = jax.nn.relu(clf.encoder(x)[0])

    def loss(h):
        logits = feats @ h["kernel"] + h["bias"][None]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    first = loss(head)
    step = jax.jit(lambda h, s: (lambda g: opt.update(g, s, h))(jax.grad(loss)(h)))
    with jax.numpy_dtype_promotion("standard"):  # optax's adam mixes int32 and float
        for _ in range(100):
            updates, opt_state = step(head, opt_state)
            head = optax.apply_updates(head, updates)
    assert float(first) == pytest.approx(np.log(10.0), rel=1e-5)
    assert float(loss(head)) < 0.7 * float(first)


def test_the_domain_task_decodes_each_image_with_its_own_decoder():
    from jaxreg.train.tasks import DomainReconstruction

    m = Autoencoder((8, 8, 1), channels=(4, 6), code_size=5, decoders=3, rngs=nnx.Rngs(0))
    task = DomainReconstruction(3, loss_kind="bce")
    x = jax.random.uniform(jax.random.key(1), (6, 8, 8, 1))
    domains = jnp.array([0, 1, 2, 2, 1, 0], jnp.int32)
    got = task.outputs(m, x, domains)
    for d in range(3):
        mine = np.asarray(domains) == d
        np.testing.assert_allclose(got[mine], m.translate(x, d)[mine], rtol=1e-5, atol=1e-6)
    out = task.summarize(
        jax.device_get(task.evaluate(m, jax.random.key(0), x, domains)), np.asarray(domains)
    )
    assert set(out) == set(task.metrics) == {
        "loss", "mse", "psnr", "ssim", "psnr_domain0", "psnr_domain1", "psnr_domain2"
    }  # fmt: skip


def test_domain_task_and_translate_reject_bad_settings():
    from jaxreg.train.tasks import DomainReconstruction

    with pytest.raises(ValueError, match="num_domains must be an int >= 2"):
        DomainReconstruction(1)
    with pytest.raises(ValueError, match="loss_kind must be one of"):
        DomainReconstruction(2, loss_kind="l1")
    m = Autoencoder((8, 8, 1), channels=(4,), code_size=3, decoders=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"domain must be in \[0, 2\)"):
        m.translate(jnp.ones((1, 8, 8, 1)), 2)


def test_two_decoders_on_a_tiny_model_translate_between_domains(tmp_path, digits_small):
    """Domain 1 is domain 0 inverted (white background): decoder 1 must paint the background."""
    from jaxreg import data as data_lib
    from jaxreg.train.tasks import DomainReconstruction

    def two(ds):
        x = np.concatenate([ds.images, 1.0 - ds.images]).astype(np.float32)
        y = np.repeat(np.arange(2, dtype=np.int32), len(ds))
        return data_lib.Dataset(x, y, 2, ("plain", "inverted"), ds.name + "+inverted")

    data = {k: two(v) for k, v in digits_small.items()}
    c = tiny_config(
        epochs=15, task="reconstruction", reconstruction_loss="bce", batch_size=24,
        learning_rate=5e-3, checkpoint={"enabled": False, "keep": 1},
    )  # fmt: skip

    def factory(rngs):
        return Autoencoder((8, 8, 1), channels=(8, 16), code_size=16, decoders=2, rngs=rngs)

    r = train_and_evaluate(
        c, tmp_path, model=factory, task=DomainReconstruction(2, "bce"), data=data
    )
    h = r["history"]
    assert h[-1]["val_loss"] < h[0]["val_loss"]
    assert {"val_psnr_domain0", "val_psnr_domain1"} <= set(h[-1])
    m, plain = r["model"], jnp.asarray(digits_small["test"].images)
    moved = np.asarray(jax.nn.sigmoid(m.translate(plain, 1)))
    own = np.asarray(jax.nn.sigmoid(m.translate(plain, 0)))
    # same digits, other style: the translation's background is the inverted domain's (bright)
    assert own.mean() < 0.4 < 0.6 < moved.mean(), (own.mean(), moved.mean())
    corner = (slice(None), 0, 0, 0)  # digits' top-left pixel is background in both domains
    assert moved[corner].mean() > 0.7 and own[corner].mean() < 0.3


def test_reconstruction_reports_the_inputs_ssim_and_caps_psnr():
    from jaxreg.train.tasks import PSNR_CAP_DB, Reconstruction, psnr

    x = jax.random.uniform(jax.random.key(0), (3, 8, 8, 1))
    np.testing.assert_allclose(psnr(x, x), PSNR_CAP_DB)  # an exact copy is not +inf
    noisy = Reconstruction(corrupt=lambda k, im: jnp.clip(im + 0.2, 0.0, 1.0))
    assert noisy.metrics[-2:] == ("input_psnr", "input_ssim")
    assert "input_ssim" not in Reconstruction().metrics
    m = Autoencoder((8, 8, 1), channels=(4,), code_size=3, rngs=nnx.Rngs(0))
    out = noisy.evaluate(m, jax.random.key(1), x, jnp.zeros(3, jnp.int32))
    assert out["input_ssim"].shape == (3,) and float(out["input_ssim"].max()) < 1.0
