"""Class-conditional GANs as a source of training data: DCGAN-style models, DiffAugment, sampling.

The generator maps a latent `z ~ N(0, I)` and a class to an image in [0, 1]; the
discriminator scores (image, class) pairs with a projection head (Miyato & Koyama, 2018,
"cGANs with Projection Discriminator"). Both are small DCGANs (Radford et al., 2016): the
generator upsamples with transposed convolutions and BatchNorm, the discriminator
downsamples with strided convolutions and LeakyReLU, without normalisation.

Training goes through `jaxreg.train.train_and_evaluate` (checkpoints, resume, logs, EMA)
with `GANTask`, `ConditionalGAN` and `gan_optimizer`: one jitted step updates both networks
at once (simultaneous gradient steps, each network against the other's current weights):
the discriminator minimises the non-saturating logistic loss on real vs generated images,
the generator maximises the discriminator's log-probability of its images being real
(Goodfellow et al., 2014). Each has its own Adam (lr 2e-4, beta1 0.5, the DCGAN setting); the
generator's weights are averaged by `jaxreg.param_ema` and the average is what samples.

DiffAugment (Zhao et al., 2020, "Differentiable Augmentation for Data-Efficient GAN
Training"): the same random translation, colour and cutout transforms, with independent
parameters per image, are applied to real and generated images before the discriminator sees
them, in both the discriminator's and the generator's objective; the transforms are jaxreg's
own ops under `jax.vmap`, so gradients flow through them to the generator.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxreg.models.layers import check_input_shape

__all__ = [
    "ConditionalGAN",
    "Discriminator",
    "GANTask",
    "Generator",
    "diff_augment",
    "frechet_distance",
    "gan_optimizer",
    "synthesize",
]


class Generator(nnx.Module):
    """z (N, latent_dim) and labels (N,) -> images (N, H, W, C) in [0, 1].

    A dense layer from `[z, embed(y)]` to a (H/4, W/4, 2*width) map, then two stride-2
    transposed convolutions with BatchNorm and ReLU, the last to C channels with a sigmoid.

    Args:
      num_classes: K.
      image_shape: (H, W, C).
      latent_dim: length of z.
      width: base channels (the first map has 2 * width).
      rngs: `nnx.Rngs`.
    """

    def __init__(
        self,
        num_classes: int,
        image_shape: Sequence[int],
        *,
        latent_dim: int = 64,
        width: int = 64,
        rngs: nnx.Rngs,
    ):
        h, w, c = check_input_shape(image_shape)
        self.image_shape = (h, w, c)
        self.latent_dim = int(latent_dim)
        self.num_classes = int(num_classes)
        h4, w4 = -(-h // 4), -(-w // 4)
        self.map_shape = (h4, w4, 2 * width)
        self.embed = nnx.Embed(int(num_classes), int(latent_dim), rngs=rngs)
        self.dense = nnx.Linear(2 * int(latent_dim), h4 * w4 * 2 * width, rngs=rngs)
        self.bn0 = nnx.BatchNorm(2 * width, momentum=0.9, rngs=rngs)
        self.up1 = nnx.ConvTranspose(2 * width, width, (4, 4), strides=(2, 2), rngs=rngs)
        self.bn1 = nnx.BatchNorm(width, momentum=0.9, rngs=rngs)
        self.up2 = nnx.ConvTranspose(width, c, (4, 4), strides=(2, 2), rngs=rngs)

    def __call__(self, z: jax.Array, labels: jax.Array) -> jax.Array:
        """Images (N, H, W, C) in [0, 1]."""
        x = self.dense(jnp.concatenate([z, self.embed(labels)], axis=-1))
        x = nnx.relu(self.bn0(x.reshape((z.shape[0], *self.map_shape))))
        x = nnx.relu(self.bn1(self.up1(x)))
        h, w, _ = self.image_shape
        return jax.nn.sigmoid(self.up2(x)[:, :h, :w])


class Discriminator(nnx.Module):
    """(images, labels) -> logits (N,): real (> 0) vs generated, with a projection head.

    Two stride-2 4x4 convolutions with LeakyReLU(0.2), flattened features `f`, and the logit
    `w . f + embed(y) . f` (the projection discriminator).

    Args:
      num_classes: K.
      image_shape: (H, W, C).
      width: channels of the first convolution (the second has 2 * width).
      rngs: `nnx.Rngs`.
    """

    def __init__(self, num_classes: int, image_shape: Sequence[int], *, width: int = 64, rngs):
        h, w, c = check_input_shape(image_shape)
        self.conv1 = nnx.Conv(c, width, (4, 4), strides=(2, 2), rngs=rngs)
        self.conv2 = nnx.Conv(width, 2 * width, (4, 4), strides=(2, 2), rngs=rngs)
        features = -(-h // 4) * -(-w // 4) * 2 * width
        self.out = nnx.Linear(features, 1, rngs=rngs)
        self.embed = nnx.Embed(int(num_classes), features, rngs=rngs)

    def __call__(self, images: jax.Array, labels: jax.Array) -> jax.Array:
        """Logits (N,)."""
        x = nnx.leaky_relu(self.conv1(images), 0.2)
        x = nnx.leaky_relu(self.conv2(x), 0.2)
        f = x.reshape(x.shape[0], -1)
        return self.out(f)[:, 0] + jnp.sum(self.embed(labels) * f, axis=-1)


class ConditionalGAN(nnx.Module):
    """A generator and a discriminator in one module (`g`, `d`), as the training loop wants it.

    Args:
      num_classes: K.
      image_shape: (H, W, C).
      latent_dim: length of z.
      width: base channels of both networks.
      rngs: `nnx.Rngs`.
    """

    def __init__(
        self,
        num_classes: int,
        image_shape: Sequence[int],
        *,
        latent_dim: int = 64,
        width: int = 64,
        rngs: nnx.Rngs,
    ):
        self.g = Generator(num_classes, image_shape, latent_dim=latent_dim, width=width, rngs=rngs)
        self.d = Discriminator(num_classes, image_shape, width=width, rngs=rngs)

    def __call__(self, z: jax.Array, labels: jax.Array) -> jax.Array:
        """Generated images (the generator)."""
        return self.g(z, labels)


def _translate(key, image, ratio):
    """Shift by up to `ratio` of the size (whole pixels, zero fill), as DiffAugment's translation."""
    from jaxreg import augment

    h, w, _ = image.shape
    ky, kx = jax.random.split(key)
    dy = jnp.round(jax.random.uniform(ky, (), minval=-ratio, maxval=ratio) * h)
    dx = jnp.round(jax.random.uniform(kx, (), minval=-ratio, maxval=ratio) * w)
    return augment.translate(image, dy, dx, mode="constant")


def diff_augment_one(
    key: jax.Array, image: jax.Array, *, ratio: float = 0.125, cutout: float = 0.5
):
    """DiffAugment's color, translation and cutout on one image (H, W, C) in [0, 1].

    Colour: brightness + U(-0.5, 0.5), saturation x U(0, 2) (around the per-pixel mean, 3
    channels only), contrast x U(0.5, 1.5) (around the image mean); translation by up to
    `ratio` of the size; cutout of a square of side `cutout` x size at a uniform centre.
    All differentiable with respect to the image.
    """
    from jaxreg import augment

    kb, ks, kc, kt, ko = jax.random.split(key, 5)
    x = image + jax.random.uniform(kb, (), minval=-0.5, maxval=0.5)
    if x.shape[-1] == 3:
        mean = jnp.mean(x, axis=-1, keepdims=True)
        x = (x - mean) * jax.random.uniform(ks, (), minval=0.0, maxval=2.0) + mean
    mean = jnp.mean(x)
    x = (x - mean) * jax.random.uniform(kc, (), minval=0.5, maxval=1.5) + mean
    x = _translate(kt, x, ratio)
    side = max(1, round(cutout * min(x.shape[0], x.shape[1])))
    return augment.cutout(ko, x, size=side, fill=0.0)


def diff_augment(key: jax.Array, images: jax.Array, **kw: Any) -> jax.Array:
    """`diff_augment_one` on a batch (N, H, W, C), independent parameters per image (vmap)."""
    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(functools.partial(diff_augment_one, **kw))(keys, images)


def _frozen(module: nnx.Module) -> nnx.Module:
    """A copy of `module` whose weights carry no gradient (used inside another's objective)."""
    graphdef, state = nnx.split(module)
    return nnx.merge(graphdef, jax.tree.map(jax.lax.stop_gradient, state))


@dataclasses.dataclass(frozen=True)
class GANTask:
    """The task of `ConditionalGAN` in the training loop: both objectives in one scalar.

    `loss` returns `d_loss + g_loss`, where the discriminator's term sees the generated
    images with `stop_gradient` and the generator's term sees a gradient-free copy of the
    discriminator, so the gradient of the sum is each network's own gradient.

    Attributes:
      num_classes: K.
      latent_dim: length of z (the model's).
      diff_augment: apply DiffAugment to real and generated images (both terms).
      metrics: reported names (d_loss, g_loss, d_real_accuracy, d_fake_accuracy, loss).
    """

    num_classes: int
    latent_dim: int = 64
    diff_augment: bool = True
    metrics: tuple[str, ...] = ("loss", "d_loss", "g_loss", "d_real_accuracy", "d_fake_accuracy")

    def _aug(self, key, x):
        return diff_augment(key, x) if self.diff_augment else x

    def _terms(self, model, key, images, labels):
        kz, ky, kr, kf, kg = jax.random.split(key, 5)
        n = images.shape[0]
        z = jax.random.normal(kz, (n, self.latent_dim))
        fake_labels = jax.random.randint(ky, (n,), 0, self.num_classes)
        fake = model.g(z, fake_labels)
        d_real = model.d(self._aug(kr, images), labels)
        d_fake = model.d(self._aug(kf, jax.lax.stop_gradient(fake)), fake_labels)
        d_loss = jnp.mean(jax.nn.softplus(-d_real)) + jnp.mean(jax.nn.softplus(d_fake))
        g_logits = _frozen(model.d)(self._aug(kg, fake), fake_labels)
        g_loss = jnp.mean(jax.nn.softplus(-g_logits))
        return d_loss, g_loss, d_real, d_fake

    def loss(self, model, key, images, labels):
        """`d_loss + g_loss` (see the class docstring) and the logged terms."""
        d_loss, g_loss, d_real, d_fake = self._terms(model, key, images, labels)
        loss = d_loss + g_loss
        return loss, {
            "loss": loss,
            "d_loss": d_loss,
            "g_loss": g_loss,
            "d_real_accuracy": jnp.mean((d_real > 0).astype(jnp.float32)),
            "d_fake_accuracy": jnp.mean((d_fake < 0).astype(jnp.float32)),
        }

    def evaluate(self, model, key, images, labels):
        """Per-example terms on held-out real images and as many generated ones (no augmentation)."""
        n = images.shape[0]
        kz, ky = jax.random.split(key)
        fake_labels = jax.random.randint(ky, (n,), 0, self.num_classes)
        fake = model.g(jax.random.normal(kz, (n, self.latent_dim)), fake_labels)
        d_real, d_fake = model.d(images, labels), model.d(fake, fake_labels)
        g_term = jax.nn.softplus(-d_fake)
        d_term = jax.nn.softplus(-d_real) + jax.nn.softplus(d_fake)
        return {
            "loss": d_term + g_term,
            "d_loss": d_term,
            "g_loss": g_term,
            "d_real_accuracy": (d_real > 0).astype(jnp.float32),
            "d_fake_accuracy": (d_fake < 0).astype(jnp.float32),
        }

    def summarize(self, outputs, labels):
        """Means over the split."""
        del labels
        return {k: float(np.mean(outputs[k])) for k in self.metrics}


def gan_optimizer(
    params: Any,
    *,
    learning_rate: float = 2e-4,
    b1: float = 0.5,
    d_learning_rate: float | None = None,
    ema_decay: float = 0.999,
) -> optax.GradientTransformation:
    """Two Adams (generator `g/...`, discriminator `d/...`) and an EMA of the generator.

    Args:
      params: the `ConditionalGAN`'s parameters (`nnx.state(model, nnx.Param)`).
      learning_rate: the generator's Adam rate (DCGAN: 2e-4).
      b1: Adam's beta1 for both (DCGAN: 0.5).
      d_learning_rate: the discriminator's rate (default: the generator's).
      ema_decay: decay of the generator's `param_ema` (0 disables it).

    Returns:
      An `optax.GradientTransformation` for the whole module.
    """
    from jaxreg.optim.decay import path_to_str
    from jaxreg.optim.ema import param_ema

    labels = jax.tree_util.tree_map_with_path(
        lambda p, _: path_to_str(p).split("/")[0],
        params,
        is_leaf=lambda x: isinstance(x, nnx.Variable),
    )
    d_lr = learning_rate if d_learning_rate is None else d_learning_rate
    tx = optax.multi_transform(
        {"g": optax.adam(learning_rate, b1=b1), "d": optax.adam(d_lr, b1=b1)}, labels
    )
    if ema_decay > 0:
        g_only = jax.tree.map(lambda lab: lab == "g", labels)
        tx = optax.chain(tx, optax.masked(param_ema(ema_decay), g_only))
    return tx


def synthesize(
    key: jax.Array,
    generator: Generator,
    n_per_class: int,
    *,
    batch_size: int = 500,
) -> tuple[np.ndarray, np.ndarray]:
    """Labelled images from a generator: `n_per_class` of every class, in class order.

    Args:
      key: PRNG key (the latents).
      generator: a trained `Generator` (put it in eval mode, e.g. `restore(...).model.g`).
      n_per_class: images per class (>= 1).
      batch_size: generation chunk size.

    Returns:
      `(images (K * n, H, W, C) float32 in [0, 1], labels (K * n,) int32)`.

    Raises:
      ValueError: `n_per_class` < 1.
    """
    if int(n_per_class) < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    labels = np.repeat(np.arange(generator.num_classes, dtype=np.int32), int(n_per_class))
    z = jax.random.normal(key, (len(labels), generator.latent_dim))
    gen = nnx.jit(lambda g, z, y: g(z, y))
    out = [
        np.asarray(gen(generator, z[i : i + batch_size], jnp.asarray(labels[i : i + batch_size])))
        for i in range(0, len(labels), batch_size)
    ]
    return np.concatenate(out), labels


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """The Fréchet distance between Gaussians fitted to two feature sets (Heusel et al., 2017).

    `|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`, the FID formula, in float64.

    Args:
      features_a: (N, D) features (e.g. a classifier's penultimate layer on real images).
      features_b: (M, D) features of the other set.

    Returns:
      The distance (>= 0; 0 for identical distributions).
    """
    from scipy import linalg

    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be (N, D) with one D, got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(s_a @ s_b, disp=False)
    covmean = np.real(covmean)
    return float(max(0.0, np.sum((mu_a - mu_b) ** 2) + np.trace(s_a + s_b - 2.0 * covmean)))


Factory = Callable[[nnx.Rngs], ConditionalGAN]
