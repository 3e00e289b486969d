"""Style: Gatys neural style transfer on VGG16 features, MixStyle, and Fourier amplitude mixing.

- `transfer_style` (Gatys, Ecker & Bethge, 2016, "Image Style Transfer Using Convolutional
  Neural Networks"): optimise an image (Adam, optax) so that its deep-layer VGG16 features
  match a content image and the Gram matrices of several early/middle layers match a style
  image, with total-variation smoothing. `reconstruct` optimises an image to match one
  layer's features alone, or one layer's Gram matrix alone (the paper's Fig. 1: early layers
  keep exact pixels and fine textures, deep layers keep arrangement and coarse patterns).
- `MixStyle` (Zhou et al., 2021, "Domain Generalization with MixStyle"): a model layer that,
  in training, mixes the per-example channel means and standard deviations of a feature map
  between examples of the batch; the identity in evaluation.
- `amplitude_mix` (Xu et al., 2021, "A Fourier-based Framework for Domain Generalization";
  Yang & Soatto, 2020, "FDA"): an input-space style op, a batch-level augmentation that mixes
  the Fourier amplitude spectrum of each image with another image's and keeps its own phase,
  so content (edges, layout, in the phase) stays and low-level statistics (colour, contrast,
  texture, in the amplitude) move. Not a per-channel affine map.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

__all__ = [
    "CONTENT_LAYERS",
    "SAMPLE_PHOTOS",
    "STYLE_LAYERS",
    "MixStyle",
    "StyleResult",
    "amplitude_mix",
    "content_loss",
    "gram_matrix",
    "load_image",
    "reconstruct",
    "sample_photo",
    "save_image",
    "side_by_side",
    "style_loss",
    "total_variation",
    "transfer_style",
]

CONTENT_LAYERS = ("relu4_2",)  # Gatys et al. 2016: conv4_2
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")  # each weighted 1/5
# scikit-image sample photos that ship inside the package (no download), usable by name.
SAMPLE_PHOTOS = (
    "astronaut",
    "brick",
    "camera",
    "cat",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "colorwheel",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "logo",
    "moon",
    "page",
    "retina",
    "rocket",
    "text",
)


def sample_photo(name: str) -> np.ndarray:
    """A scikit-image sample photo by name as RGB `uint8` (H, W, 3).

    Gray photos (brick, grass, gravel, camera, moon, ...) are repeated to 3 channels; an
    alpha channel (logo) is composited onto white.

    Args:
      name: one of `SAMPLE_PHOTOS`.

    Returns:
      (H, W, 3) uint8 array.

    Raises:
      ValueError: an unknown name (the allowed ones are listed).
    """
    if name not in SAMPLE_PHOTOS:
        raise ValueError(f"unknown sample photo {name!r}; allowed: {list(SAMPLE_PHOTOS)}")
    from skimage import data as skd

    img = np.asarray(getattr(skd, name)())
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, -1)
    if img.shape[-1] == 4:
        alpha = img[..., 3:].astype(np.float32) / 255.0
        img = np.round(img[..., :3] * alpha + 255.0 * (1.0 - alpha))
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


def load_image(source: str, size: int | None = None) -> np.ndarray:
    """A sample photo (by name, `SAMPLE_PHOTOS`) or an image file as float32 RGB in [0, 1].

    Args:
      source: a name of `SAMPLE_PHOTOS` or the path of an image file Pillow reads.
      size: the longer side after resizing (Pillow's Lanczos filter, aspect kept); None
        keeps the size.

    Returns:
      (H, W, 3) float32 array in [0, 1].

    Raises:
      ValueError: `source` is neither a sample name nor an existing file (both are named),
        the file is not an image, or `size` < 1.
    """
    from PIL import Image, UnidentifiedImageError

    if size is not None and int(size) < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if source in SAMPLE_PHOTOS:
        img = Image.fromarray(sample_photo(source))
    else:
        path = Path(source)
        if not path.is_file():
            raise ValueError(
                f"{source!r} is neither a scikit-image sample photo ({', '.join(SAMPLE_PHOTOS)}) "
                "nor an image file"
            )
        try:
            with Image.open(path) as opened:
                img = opened.convert("RGB")
        except UnidentifiedImageError:
            raise ValueError(f"{source!r} is not an image file Pillow can read") from None
    if size is not None:
        scale = int(size) / max(img.size)
        new = (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale)))
        img = img.resize(new, Image.Resampling.LANCZOS)
    return np.asarray(img, np.float32) / 255.0


def _to_uint8(image: Any) -> np.ndarray:
    return np.round(np.clip(np.asarray(image, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def save_image(image: Any, path: str | os.PathLike) -> Path:
    """Writes an (H, W, 3) image in [0, 1] as a PNG (or any format its suffix names)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_to_uint8(image)).save(path)
    return path


def side_by_side(
    images: Sequence[Any], path: str | os.PathLike, *, gap: int = 4, height: int | None = None
) -> Path:
    """Writes images next to each other (e.g. content | style | result) on a white strip.

    Args:
      images: (H, W, 3) images in [0, 1], of any sizes.
      path: the PNG written.
      gap: white pixels between images.
      height: the common height (default: the first image's); each is resized to it with
        its aspect kept.

    Returns:
      `path` as a `Path`.
    """
    from PIL import Image

    pics = [Image.fromarray(_to_uint8(im)) for im in images]
    if not pics:
        raise ValueError("side_by_side needs at least one image")
    h = int(height or pics[0].size[1])
    pics = [
        p if p.size[1] == h else p.resize((max(1, round(p.size[0] * h / p.size[1])), h))
        for p in pics
    ]
    width = sum(p.size[0] for p in pics) + gap * (len(pics) - 1)
    strip = Image.new("RGB", (width, h), (255, 255, 255))
    x = 0
    for p in pics:
        strip.paste(p, (x, 0))
        x += p.size[0] + gap
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    strip.save(path)
    return path


def gram_matrix(features: jax.Array) -> jax.Array:
    """Channel correlations of feature maps: `F^T F / (H W)` per image.

    Args:
      features: (N, H, W, C) activations.

    Returns:
      (N, C, C) float32 Gram matrices, normalised by the number of positions.
    """
    n, h, w, c = features.shape
    f = features.reshape(n, h * w, c).astype(jnp.float32)
    return jnp.einsum("npc,npd->ncd", f, f) / (h * w)


def content_loss(features: jax.Array, target: jax.Array) -> jax.Array:
    """Mean squared difference of two feature maps (a scalar per batch)."""
    return jnp.mean(jnp.square(features.astype(jnp.float32) - target.astype(jnp.float32)))


def style_loss(features: jax.Array, target_gram: jax.Array) -> jax.Array:
    """Mean squared difference of Gram matrices, divided by C^2 (Gatys et al.'s E_l up to a constant)."""
    g = gram_matrix(features)
    return jnp.mean(jnp.square(g - target_gram))


def total_variation(images: jax.Array) -> jax.Array:
    """Mean absolute difference of neighbouring pixels (anisotropic total variation)."""
    dy = jnp.abs(images[:, 1:] - images[:, :-1])
    dx = jnp.abs(images[:, :, 1:] - images[:, :, :-1])
    return jnp.mean(dy) + jnp.mean(dx)


@dataclasses.dataclass(frozen=True)
class StyleResult:
    """An optimised image and how the losses went.

    Attributes:
      image: (H, W, 3) float32 in [0, 1].
      history: per logged step: `step`, `content`, `style`, `tv`, `total`.
    """

    image: np.ndarray
    history: list[dict[str, float]]


def _vgg(vgg: Any = None):
    if vgg is not None:
        return vgg
    from jaxreg.models.vgg import VGG16Features

    return VGG16Features(rngs=nnx.Rngs(0))


def _optimise(
    loss_fn: Callable[[jax.Array], tuple[jax.Array, dict]],
    start: jax.Array,
    *,
    steps: int,
    learning_rate: float,
    progress: Callable[[int, dict], None] | None,
    log_every: int,
) -> StyleResult:
    """Adam on the image (clipped to [0, 1] after each step); one jitted step."""
    tx = optax.adam(learning_rate)

    @jax.jit
    def step(x, opt):
        (_, parts), g = jax.value_and_grad(loss_fn, has_aux=True)(x)
        with jax.numpy_dtype_promotion("standard"):  # optax's adam mixes int32 counts and floats
            upd, opt = tx.update(g, opt, x)
        return jnp.clip(optax.apply_updates(x, upd), 0.0, 1.0), opt, parts

    x, opt, history = start, tx.init(start), []
    for i in range(1, int(steps) + 1):
        x, opt, parts = step(x, opt)
        if i % log_every == 0 or i == steps:
            rec = {"step": i, **{k: float(v) for k, v in parts.items()}}
            history.append(rec)
            if progress is not None:
                progress(i, rec)
    return StyleResult(np.asarray(x[0]), history)


def _check_image(x: Any, name: str) -> jax.Array:
    x = jnp.asarray(x, jnp.float32)
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"{name} must be one (H, W, 3) image in [0, 1], got shape {x.shape}")
    return x


def transfer_style(
    content: Any,
    style: Any,
    *,
    steps: int = 150,
    learning_rate: float = 0.02,
    content_layers: Sequence[str] = CONTENT_LAYERS,
    style_layers: Sequence[str] = STYLE_LAYERS,
    content_weight: float = 1.0,
    style_weight: float = 1e3,
    tv_weight: float = 1.0,
    init: str = "content",
    seed: int = 0,
    vgg: Any = None,
    progress: Callable[[int, dict], None] | None = None,
    log_every: int = 10,
) -> StyleResult:
    """Gatys et al.'s style transfer: an image with `content`'s features and `style`'s Grams.

    Loss: `content_weight * mean over content_layers of content_loss + style_weight * mean over
    style_layers of style_loss + tv_weight * total_variation`, minimised by Adam on the pixels
    (clipped to [0, 1]). The defaults (relu4_2 for content; relu1_1..relu5_1 for style, equally
    weighted; Adam at 0.02 for 150 steps from the content image) follow the paper's choice of
    layers; the weights were set so that, on the scikit-image sample photos at 128-256 px, the
    style term dominates at the start and both terms fall.

    Args:
      content: (H, W, 3) float image in [0, 1].
      style: (H', W', 3) float image in [0, 1] (any size; Gram matrices do not depend on it).
      steps: Adam steps (>= 1).
      learning_rate: Adam's rate, in pixel units.
      content_layers: VGG16 layers whose features are matched (`jaxreg.models.vgg.LAYERS`).
      style_layers: layers whose Gram matrices are matched.
      content_weight: weight of the content loss (>= 0).
      style_weight: weight of the style loss (>= 0).
      tv_weight: weight of the total variation (>= 0).
      init: "content" (start from the content image) or "noise" (uniform noise, `seed`).
      seed: the noise seed.
      vgg: a `VGG16Features` to reuse (default: the ImageNet one).
      progress: called as `progress(step, record)` every `log_every` steps.
      log_every: how often the history records a step.

    Returns:
      A `StyleResult` (the image as a numpy array, the loss history).

    Raises:
      ValueError: bad images, layers, weights, steps or init.
    """
    from jaxreg.models.vgg import LAYERS

    content, style = _check_image(content, "content"), _check_image(style, "style")
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not float(learning_rate) > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    if int(log_every) < 1:
        raise ValueError(f"log_every must be >= 1, got {log_every}")
    if init not in ("content", "noise"):
        raise ValueError(f"init must be 'content' or 'noise', got {init!r}")
    for name, value in (
        ("content_weight", content_weight),
        ("style_weight", style_weight),
        ("tv_weight", tv_weight),
    ):
        if not float(value) >= 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    unknown = [n for n in (*content_layers, *style_layers) if n not in LAYERS]
    if unknown:
        raise ValueError(f"unknown VGG16 layers {unknown}; allowed: {list(LAYERS)}")
    net = _vgg(vgg)
    c_target = net.features(content[None], tuple(content_layers))
    s_target = {
        k: gram_matrix(v) for k, v in net.features(style[None], tuple(style_layers)).items()
    }
    names = tuple(dict.fromkeys((*content_layers, *style_layers)))

    def loss_fn(x):
        f = net.features(x, names)
        c = sum(content_loss(f[n], c_target[n]) for n in content_layers) / max(
            len(content_layers), 1
        )
        s = sum(style_loss(f[n], s_target[n]) for n in style_layers) / max(len(style_layers), 1)
        tv = total_variation(x)
        total = content_weight * c + style_weight * s + tv_weight * tv
        return total, {"content": c, "style": s, "tv": tv, "total": total}

    start = (
        content[None]
        if init == "content"
        else jax.random.uniform(jax.random.key(seed), content[None].shape)
    )
    return _optimise(
        loss_fn,
        start,
        steps=steps,
        learning_rate=learning_rate,
        progress=progress,
        log_every=log_every,
    )


def reconstruct(
    target: Any,
    layer: str | Sequence[str],
    *,
    kind: str = "content",
    steps: int = 200,
    learning_rate: float = 0.05,
    seed: int = 0,
    vgg: Any = None,
) -> StyleResult:
    """An image rebuilt from noise to match one layer's features ("content") or Gram ("style").

    The demonstration of Gatys et al. 2016, Fig. 1: from early layers the content
    reconstruction is almost the image itself, from deep layers only its arrangement; from
    early layers' Gram matrices the texture has fine, local structure, from deep layers
    larger patterns (the paper's style row matches growing sets of layers, conv1_1 up to
    conv1_1..conv5_1: pass a sequence).

    Args:
      target: (H, W, 3) image in [0, 1].
      layer: one of `jaxreg.models.vgg.LAYERS`, or a sequence of them (the loss is the mean
        over the layers).
      kind: "content" (match the features) or "style" (match the Gram matrix).
      steps: Adam steps.
      learning_rate: Adam's rate.
      seed: the starting noise.
      vgg: a `VGG16Features` to reuse.

    Returns:
      A `StyleResult`.

    Raises:
      ValueError: an unknown kind or layer, steps < 1, a rate <= 0, or a bad image.
    """
    from jaxreg.models.vgg import LAYERS

    if kind not in ("content", "style"):
        raise ValueError(f"kind must be 'content' or 'style', got {kind!r}")
    layers = (layer,) if isinstance(layer, str) else tuple(layer)
    if not layers or any(n not in LAYERS for n in layers):
        raise ValueError(
            f"layer must be one of {list(LAYERS)} or a sequence of them, got {layer!r}"
        )
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not float(learning_rate) > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    target = _check_image(target, "target")
    net = _vgg(vgg)
    want = net.features(target[None], layers)
    if kind == "style":
        want = {n: gram_matrix(f) for n, f in want.items()}
    loss = content_loss if kind == "content" else style_loss

    def loss_fn(x):
        f = net.features(x, layers)
        value = sum(loss(f[n], want[n]) for n in layers) / len(layers)
        return value, {kind: value, "total": value}

    start = jax.random.uniform(jax.random.key(seed), target[None].shape)
    return _optimise(
        loss_fn,
        start,
        steps=steps,
        learning_rate=learning_rate,
        progress=None,
        log_every=max(1, steps // 10),
    )


class MixStyle(nnx.Module):
    """MixStyle (Zhou et al., 2021): mixes channel statistics between examples in training.

    With probability `p` per batch, each example's feature map is normalised by its own
    per-channel mean and standard deviation (over H, W) and re-styled with the mix
    `lam * own + (1 - lam) * other` of the statistics of another example of the batch
    (a random permutation), `lam ~ Beta(alpha, alpha)` per example; the statistics are
    treated as constants for the gradient (as in the paper). In evaluation (`model.eval()`,
    or `deterministic=True`) it is the identity.

    Args:
      p: probability of mixing a batch, in [0, 1].
      alpha: Beta concentration (> 0); 0.1 in the paper.
      eps: added to the variance.
      rngs: `nnx.Rngs` (its "dropout" stream, or the default one).
    """

    def __init__(self, *, p: float = 0.5, alpha: float = 0.1, eps: float = 1e-6, rngs: nnx.Rngs):
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        if not float(alpha) > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.p, self.alpha, self.eps = float(p), float(alpha), float(eps)
        self.deterministic = False
        self.rngs = rngs["dropout"].fork()

    def __call__(self, x: jax.Array) -> jax.Array:
        """X (N, H, W, C) -> the same shape; the identity in evaluation mode."""
        if self.deterministic or self.p == 0.0:
            return x
        key = self.rngs()
        k_use, k_perm, k_lam = jax.random.split(key, 3)
        n = x.shape[0]
        mu = jax.lax.stop_gradient(jnp.mean(x, axis=(1, 2), keepdims=True))
        sig = jax.lax.stop_gradient(jnp.sqrt(jnp.var(x, axis=(1, 2), keepdims=True) + self.eps))
        perm = jax.random.permutation(k_perm, n)
        lam = jax.random.beta(k_lam, self.alpha, self.alpha, (n, 1, 1, 1)).astype(x.dtype)
        mixed_mu = lam * mu + (1.0 - lam) * mu[perm]
        mixed_sig = lam * sig + (1.0 - lam) * sig[perm]
        out = (x - mu) / sig * mixed_sig + mixed_mu
        use = jax.random.uniform(k_use, ()) < self.p
        return jnp.where(use, out, x)


def amplitude_mix(
    key: jax.Array,
    images: jax.Array,
    labels: jax.Array | None = None,
    *,
    alpha: float = 1.0,
    low_freq: float = 1.0,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Fourier amplitude mixing, a batch-level op: each image takes part of another's amplitude.

    For image x with 2-D FFT amplitude A and phase P (per channel), and a partner x' (the
    batch reversed, as in Mixup) with amplitude A', the result is
    `ifft((lam * A + (1 - lam) * A'_low) exp(i P))` where `A'_low` is A' inside the central
    `low_freq` fraction of frequencies (A elsewhere; `low_freq=1` mixes all frequencies,
    FACT's amplitude mix; small `low_freq` is FDA's low-frequency swap) and
    `lam ~ U(1 - alpha, 1)` per image; clipped to [0, 1]. Labels are unchanged (the content
    stays).

    Args:
      key: PRNG key.
      images: (B, H, W, C) float images in [0, 1], B >= 2.
      labels: optional labels, returned unchanged (so it fits the loop's `mix` hook:
        `(key, images, soft_labels) -> (images, soft_labels)`).
      alpha: mixing strength in [0, 1]: 0 returns the images, 1 draws lam from U(0, 1).
      low_freq: the fraction (0, 1] of the spectrum's half-width that is mixed.

    Returns:
      The mixed images (B, H, W, C), or `(images, labels)` when labels were given.

    Raises:
      ValueError: a batch of one, or `alpha`/`low_freq` out of range.
    """
    if images.ndim != 4 or images.shape[0] < 2:
        raise ValueError(f"images must be a batch (B, H, W, C) with B >= 2, got {images.shape}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not 0.0 < float(low_freq) <= 1.0:
        raise ValueError(f"low_freq must be in (0, 1], got {low_freq}")
    b, h, w, _ = images.shape
    x = images.astype(jnp.float32)
    spec = jnp.fft.fft2(x, axes=(1, 2))
    amp, phase = jnp.abs(spec), jnp.angle(spec)
    partner = amp[::-1]
    fy = jnp.abs(jnp.fft.fftfreq(h)).reshape(1, h, 1, 1) * 2.0  # 0 .. 1 (Nyquist)
    fx = jnp.abs(jnp.fft.fftfreq(w)).reshape(1, 1, w, 1) * 2.0
    low = (fy <= low_freq) & (fx <= low_freq)
    lam = 1.0 - float(alpha) * jax.random.uniform(key, (b, 1, 1, 1))
    mixed_amp = jnp.where(low, lam * amp + (1.0 - lam) * partner, amp)
    rotation = jax.lax.complex(jnp.cos(phase), jnp.sin(phase))  # exp(i * phase)
    out = jnp.real(jnp.fft.ifft2(mixed_amp.astype(rotation.dtype) * rotation, axes=(1, 2)))
    out = jnp.clip(out, 0.0, 1.0).astype(images.dtype)
    return out if labels is None else (out, labels)
