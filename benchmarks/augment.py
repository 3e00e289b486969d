"""Augmentation throughput of jaxreg.augment against peers, side by side in one run.

    .venv/bin/python benchmarks/augment.py            # both workloads
    .venv/bin/python benchmarks/augment.py --workload A --repeats 20

Workload A (CIFAR-style, 512 x 32x32x3): pad 4 (reflect) + random 32 crop, horizontal flip
p=0.5, colour jitter (brightness, contrast, saturation 0.4), Gaussian noise sigma 0.05 with
p=0.5, one 8x8 cutout, then Mixup alpha 0.2 on one-hot labels.
Workload B (ImageNet-style, 64 x 224x224x3): rotation +-15 deg, scale 0.8-1.2, random resized
crop (0.08-1) to 224, horizontal flip.

Every peer draws its random parameters per example. jaxreg runs the public functions users call,
three ways: `batch(compose(...))` (the row "jaxreg", the reference of the ratio column),
`jax.vmap(compose(...))` on split keys, and a hand-written per-example function calling jaxreg's
ops one after another with its own key splits, under `jax.vmap` (both also `jit`ted, then
`mixup` in A). Peers that are not installed are skipped with a note (install them with
`pip install -e '.[bench]'`). Throughput is images per second of the median batch time after
warm-up; the ratio column is the row "jaxreg"'s throughput over the row's. All rows of a
workload are timed side by side, one call of each in turn per round, so that a machine shared
with other work slows them alike. Float32 images in [0, 1] for every library.

tf.image (TensorFlow CPU) is a peer too, batched by hand (one `tf.function` over the batch with
per-example parameters: gathers for crop and flip, jitter by broadcasting, a cutout mask;
`ImageProjectiveTransformV3` and `crop_and_resize` for B). TensorFlow stays out of the test
venv; give it a venv of its own and run the script there:

    python -m venv .venv-bench
    .venv-bench/bin/pip install -e '.[bench]' tensorflow-cpu   # 2.21 works with numpy 2.4, jax 0.10
    .venv-bench/bin/python benchmarks/augment.py --repeats 5

Without TensorFlow its rows say "skipped" with this hint.

On the CPU, jaxreg's Workload B warp is its native XLA:CPU kernel (jaxreg/_cpu/native.py,
built once per machine with the system C++ compiler; the header says which path ran and how
long the build took). The row "jaxreg, XLA path (ref.)" runs the same pipeline traced with
JAXREG_NATIVE=0 (XLA's gathers), for reference; it is not counted as a peer.

Absolute CPU numbers for Workload B depend on glibc's allocator: every call's 38.5 MB output
is a fresh mmap whose page faults are a large part of the batch time for the XLA path and augmax
alike (the native kernel maps its output with MADV_POPULATE_WRITE; JAXREG_HUGE_PAGES=1 also
advises transparent huge pages, see jaxreg/_cpu/native.py). GLIBC_TUNABLES=glibc.malloc.mmap_threshold=2000000000:glibc.malloc.trim_threshold=4000000000
removes them for every library (benchmarks/results/cpu_seam.md).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxreg.augment as A
from jaxreg.augment import _rng

P = functools.partial


def _call(run: Callable[[], object]) -> float:
    """Seconds one call of `run` takes, until its results are ready."""
    t0 = time.perf_counter()
    _block(run())
    return time.perf_counter() - t0


def _time_side_by_side(
    runs: dict[str, Callable[[], object]], repeats: dict[str, int]
) -> dict[str, float]:
    """Median seconds per call of each runner, timed in turn: `{name: median of repeats[name]}`.

    Each runner (already called once) is called once more to warm up; then every round calls
    each runner that has repeats left once, so that load from other processes falls on all of
    them alike. Round r starts at the r-th runner (the order rotates), so that no runner
    always follows the same one (whose freed memory or busy threads it would inherit).
    """
    for run in runs.values():
        _block(run())  # second warm-up (caches, thread pools)
    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(max(repeats.values(), default=0)):
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            if len(times[name]) < repeats[name]:
                times[name].append(_call(runs[name]))
    return {name: statistics.median(times[name]) for name in runs}


def _block(out):
    if isinstance(out, (tuple, list)):
        for o in out:
            _block(o)
    elif hasattr(out, "block_until_ready"):
        out.block_until_ready()


def _torch_device():
    """Kornia runs where torch sees a GPU (CUDA), else on the CPU; returns (device, sync fn)."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda"), torch.cuda.synchronize
    return torch.device("cpu"), lambda: None


class _Counter:
    def __init__(self):
        self.i = 0

    def next(self):
        self.i += 1
        return self.i


# ---------------------------------------------------------------------------------------------
# Workload A


def _chain_a():
    return A.compose(
        A.from_spec("crop(size=32,padding=4,pad_mode='reflect')"),  # jaxreg's draws
        P(A.random_flip, horizontal=True, p=0.5),
        P(A.color_jitter, brightness=0.4, contrast=0.4, saturation=0.4),
        P(A.gaussian_noise, sigma=0.05, p=0.5),
        P(A.cutout, size=8),
    )


def hand_written_a(key, image):
    """Workload A's chain as a user writes it for one image: jaxreg's ops one after another."""
    ks = jax.random.split(key, 5)
    v = A.random_crop(ks[0], image, (32, 32, 3), padding=4)
    v = A.random_flip(ks[1], v, horizontal=True, p=0.5)
    v = A.color_jitter(ks[2], v, brightness=0.4, contrast=0.4, saturation=0.4)
    v = A.gaussian_noise(ks[3], v, sigma=0.05, p=0.5)
    return A.cutout(ks[4], v, size=8)


def _vmapped(fn):
    """`batched(key, images)`: `jax.vmap(fn)` on one key per example (what `batch` does)."""
    return lambda key, x: jax.vmap(fn)(jax.random.split(key, x.shape[0]), x)


def _runner_a(batched, x, y):
    @jax.jit
    def step(key, x, y):
        k_aug, k_mix = jax.random.split(key)
        return A.mixup(k_mix, batched(k_aug, x), y, alpha=0.2)

    c = _Counter()
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    return lambda: step(jax.random.key(c.next()), xj, yj)


def jaxreg_a(x, y):
    """Returns a runner for one Workload A batch: jaxreg `batch(compose(...))`, then `mixup`."""
    return _runner_a(A.batch(_chain_a()), x, y)


def jaxreg_vmap_a(x, y):
    """Workload A with `jax.vmap(compose(...))` on split keys in place of `batch`."""
    return _runner_a(_vmapped(_chain_a()), x, y)


def jaxreg_hand_a(x, y):
    """Workload A with the hand-written per-example chain `hand_written_a` under `jax.vmap`."""
    return _runner_a(_vmapped(hand_written_a), x, y)


def dmpix_a(x, y):
    """Returns a runner for one Workload A batch with dm-pix ops (vmap + jit), Mixup by hand."""
    import dm_pix as pix

    def one(key, img):
        ks = jax.random.split(key, 8)
        v = jnp.pad(img, ((4, 4), (4, 4), (0, 0)), mode="reflect")
        v = pix.random_crop(ks[0], v, (32, 32, 3))
        v = pix.random_flip_left_right(ks[1], v)
        v = pix.random_brightness(ks[2], v, 0.4)  # dm-pix brightness is an additive delta
        v = pix.random_contrast(ks[3], v, 0.6, 1.4)
        v = pix.random_saturation(ks[4], v, 0.6, 1.4)
        noisy = v + 0.05 * jax.random.normal(ks[5], v.shape)
        v = jnp.clip(jnp.where(jax.random.uniform(ks[6]) < 0.5, noisy, v), 0.0, 1.0)
        cy, cx = jax.random.randint(ks[7], (2,), 0, 32)
        r = jnp.arange(32)
        m = (
            (r[:, None] >= cy - 4)
            & (r[:, None] < cy + 4)
            & (r[None, :] >= cx - 4)
            & (r[None, :] < cx + 4)
        )
        return jnp.where(m[..., None], 0.0, v)

    @jax.jit
    def step(key, x, y):
        k_aug, k_mix = jax.random.split(key)
        v = jax.vmap(one)(jax.random.split(k_aug, x.shape[0]), x)
        lam = jax.random.beta(k_mix, 0.2, 0.2)
        return lam * v + (1 - lam) * v[::-1], lam * y + (1 - lam) * y[::-1]

    c = _Counter()
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    return lambda: step(jax.random.key(c.next()), xj, yj)


def kornia_a(x, y):
    """Returns a runner for one Workload A batch with kornia on NCHW tensors, Mixup by hand."""
    import kornia.augmentation as K
    import torch

    aug = K.AugmentationSequential(
        K.RandomCrop((32, 32), padding=4, padding_mode="reflect"),
        K.RandomHorizontalFlip(p=0.5),
        K.ColorJitter(0.4, 0.4, 0.4, 0.0, p=1.0),
        K.RandomGaussianNoise(mean=0.0, std=0.05, p=0.5),
        K.RandomErasing(scale=(64 / 1024, 64 / 1024), ratio=(1.0, 1.0), value=0.0, p=1.0),
    )
    dev, sync = _torch_device()
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(dev)
    yt = torch.from_numpy(y).to(dev)
    beta = torch.distributions.Beta(torch.tensor(0.2, device=dev), torch.tensor(0.2, device=dev))

    def run():
        with torch.no_grad():
            v = aug(xt).clamp_(0, 1)
            lam = beta.sample()
            out = lam * v + (1 - lam) * v.flip(0), lam * yt + (1 - lam) * yt.flip(0)
        sync()
        return out

    return run


def albumentations_a(x, y):
    """Returns a runner for one Workload A batch with albumentations per image, Mixup in numpy."""
    import albumentations as Alb
    import cv2

    t = Alb.Compose(
        [
            Alb.PadIfNeeded(40, 40, border_mode=cv2.BORDER_REFLECT_101),
            Alb.RandomCrop(32, 32),
            Alb.HorizontalFlip(p=0.5),
            Alb.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.0, p=1.0),
            Alb.GaussNoise(std_range=(0.05, 0.05), mean_range=(0.0, 0.0), p=0.5),
            Alb.CoarseDropout(
                num_holes_range=(1, 1),
                hole_height_range=(8, 8),
                hole_width_range=(8, 8),
                fill=0,
                p=1.0,
            ),
        ]
    )
    rng = np.random.default_rng(0)

    def run():
        v = np.stack([t(image=img)["image"] for img in x])
        lam = rng.beta(0.2, 0.2)
        return lam * v + (1 - lam) * v[::-1], lam * y + (1 - lam) * y[::-1]

    return run


# ---------------------------------------------------------------------------------------------
# Workload B


def _chain_b():
    return A.compose(
        P(A.random_rotate, max_degrees=15),
        P(A.random_scale, min_scale=0.8, max_scale=1.2),
        P(A.random_resized_crop, size=224, scale=(0.08, 1.0)),
        A.random_flip,
    )


def hand_written_b(key, image):
    """Workload B's chain for one image, jaxreg's ops one after another (four resamplings)."""
    ks = jax.random.split(key, 4)
    v = A.random_rotate(ks[0], image, max_degrees=15)
    v = A.random_scale(ks[1], v, min_scale=0.8, max_scale=1.2)
    v = A.random_resized_crop(ks[2], v, size=224, scale=(0.08, 1.0))
    return A.random_flip(ks[3], v)


def _runner_b(batched, x):
    step = jax.jit(batched)
    c = _Counter()
    xj = jnp.asarray(x)
    return lambda: step(jax.random.key(c.next()), xj)


def jaxreg_b(x):
    """Returns a runner for one Workload B batch: jaxreg `batch(compose(...))`, one resampling."""
    return _runner_b(A.batch(_chain_b()), x)


def jaxreg_vmap_b(x):
    """Workload B with `jax.vmap(compose(...))` on split keys in place of `batch`."""
    return _runner_b(_vmapped(_chain_b()), x)


def jaxreg_hand_b(x):
    """Workload B with the hand-written per-example chain `hand_written_b` under `jax.vmap`."""
    return _runner_b(_vmapped(hand_written_b), x)


def jaxreg_b_xla(x):
    """`jaxreg_b` traced with JAXREG_NATIVE=0: the XLA gather path, for reference (not a peer)."""
    run = jaxreg_b(x)
    first = [True]

    def wrapped():
        if not first[0]:
            return run()
        first[0] = False
        old = os.environ.get("JAXREG_NATIVE")
        os.environ["JAXREG_NATIVE"] = "0"  # read when the warp is traced, i.e. on this first call
        try:
            return run()
        finally:
            if old is None:
                del os.environ["JAXREG_NATIVE"]
            else:
                os.environ["JAXREG_NATIVE"] = old

    return wrapped


def dmpix_b(x):
    """Returns a runner for one Workload B batch with dm-pix rotate/affine ops (vmap + jit)."""
    import dm_pix as pix

    def one(key, img):
        ks = jax.random.split(key, 5)
        v = pix.rotate(
            img, jax.random.uniform(ks[0], minval=-np.pi / 12, maxval=np.pi / 12), mode="constant"
        )
        s = jax.random.uniform(ks[1], minval=0.8, maxval=1.2)
        centre = (jnp.array(img.shape, jnp.float32) - 1) / 2
        mat = jnp.diag(jnp.array([1 / s, 1 / s, 1.0]))
        v = pix.affine_transform(v, mat, offset=centre - mat @ centre, mode="constant")
        area = jax.random.uniform(ks[2], minval=0.08, maxval=1.0)
        ratio = jnp.exp(jax.random.uniform(ks[3], minval=np.log(3 / 4), maxval=np.log(4 / 3)))
        ch = jnp.minimum(jnp.sqrt(area / ratio), 1.0) * 224
        cw = jnp.minimum(jnp.sqrt(area * ratio), 1.0) * 224
        off = jax.random.uniform(ks[4], (2,)) * jnp.array([224 - ch, 224 - cw])
        mat = jnp.diag(jnp.array([ch / 224, cw / 224, 1.0]))
        v = pix.affine_transform(v, mat, offset=jnp.array([off[0], off[1], 0.0]), mode="nearest")
        return pix.random_flip_left_right(ks[0], v)

    step = jax.jit(lambda k, x: jax.vmap(one)(jax.random.split(k, x.shape[0]), x))
    c = _Counter()
    xj = jnp.asarray(x)
    return lambda: step(jax.random.key(c.next()), xj)


def augmax_b(x):
    """Returns a runner for one Workload B batch with an augmax `Chain` (vmap + jit)."""
    import augmax

    # augmax has no separate scale op or area-based resized crop: RandomSizedCrop's zoom range
    # (0.8, 4.2) covers scale 0.8-1.2 times area 0.08-1 (zoom 1 / sqrt(area)).
    chain = augmax.Chain(
        augmax.Rotate((-15, 15), p=1.0),
        augmax.RandomSizedCrop(224, 224, zoom_range=(0.8, 4.2)),
        augmax.HorizontalFlip(p=0.5),
    )
    step = jax.jit(lambda k, x: jax.vmap(chain)(jax.random.split(k, x.shape[0]), x))
    c = _Counter()
    xj = jnp.asarray(x)
    return lambda: step(jax.random.PRNGKey(c.next()), xj)


def kornia_b(x):
    """Returns a runner for one Workload B batch with kornia (affine, resized crop, flip)."""
    import kornia.augmentation as K
    import torch

    aug = K.AugmentationSequential(
        K.RandomAffine(degrees=15, scale=(0.8, 1.2), p=1.0),
        K.RandomResizedCrop((224, 224), scale=(0.08, 1.0)),
        K.RandomHorizontalFlip(p=0.5),
    )
    dev, sync = _torch_device()
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(dev)

    def run():
        with torch.no_grad():
            out = aug(xt)
        sync()
        return out

    return run


def albumentations_b(x):
    """Returns a runner for one Workload B batch with albumentations, one image at a time."""
    import albumentations as Alb

    t = Alb.Compose(
        [
            Alb.Affine(rotate=(-15, 15), scale=(0.8, 1.2), p=1.0),
            Alb.RandomResizedCrop(size=(224, 224), scale=(0.08, 1.0)),
            Alb.HorizontalFlip(p=0.5),
        ]
    )
    return lambda: np.stack([t(image=img)["image"] for img in x])


# tf.image, batched by hand as a TensorFlow user would write it: one tf.function over the batch,
# per-example random parameters from a tf.random.Generator (Philox), stateless ops per batch.

TF_HINT = (
    "kept out of .venv: python -m venv .venv-bench && .venv-bench/bin/pip install -e "
    "'.[bench]' tensorflow-cpu, then run this script with .venv-bench/bin/python"
)


def _tf():
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ImportError(f"tensorflow; {TF_HINT}", name="tensorflow") from e
    return tf


def tf_image_a(x, y):
    """Returns a runner for one Workload A batch with tf.image, batched by hand (`tf.function`)."""
    tf = _tf()
    gen = tf.random.Generator.from_seed(0, alg="philox")
    xt, yt = tf.constant(x), tf.constant(y)
    b, h, w, c = x.shape

    def beta(a):  # Beta(a, a) from two Gamma(a) draws (TF has no Beta sampler)
        g = tf.random.stateless_gamma([2], gen.make_seeds(1)[:, 0], alpha=a)
        return g[0] / (g[0] + g[1])

    @tf.function(jit_compile=False)
    def step(v, labels):
        u = gen.uniform((b, 9))
        # pad 4 (reflect) + random 32x32 crop and horizontal flip: one gather per axis.
        v = tf.pad(v, [[0, 0], [4, 4], [4, 4], [0, 0]], mode="REFLECT")
        oy = tf.cast(tf.floor(u[:, 0] * 9), tf.int32)[:, None]
        ox = tf.cast(tf.floor(u[:, 1] * 9), tf.int32)[:, None]
        cols = tf.range(w)[None, :]
        cols = tf.where(u[:, 2:3] < 0.5, w - 1 - cols, cols)  # flip p=0.5
        v = tf.gather(v, oy + tf.range(h)[None, :], axis=1, batch_dims=1)
        v = tf.gather(v, ox + cols, axis=2, batch_dims=1)
        # colour jitter 0.4 (torchvision order brightness, contrast, saturation; clip after each).
        f = lambda i: tf.reshape(0.6 + 0.8 * u[:, i], (b, 1, 1, 1))
        v = tf.clip_by_value(v * f(3), 0.0, 1.0)
        mean = tf.reduce_mean(tf.image.rgb_to_grayscale(v), axis=[1, 2, 3], keepdims=True)
        v = tf.clip_by_value(mean + f(4) * (v - mean), 0.0, 1.0)
        gray = tf.image.rgb_to_grayscale(v)
        v = tf.clip_by_value(gray + f(5) * (v - gray), 0.0, 1.0)
        # Gaussian noise sigma 0.05 with p=0.5.
        sigma = tf.reshape(tf.where(u[:, 6] < 0.5, 0.05, 0.0), (b, 1, 1, 1))
        v = tf.clip_by_value(v + sigma * gen.normal((b, h, w, c)), 0.0, 1.0)
        # one 8x8 cutout at a uniform centre (clipped at the border).
        cy = tf.reshape(tf.cast(tf.floor(u[:, 7] * h), tf.int32), (b, 1, 1, 1))
        cx = tf.reshape(tf.cast(tf.floor(u[:, 8] * w), tf.int32), (b, 1, 1, 1))
        r = tf.reshape(tf.range(h), (1, h, 1, 1))
        q = tf.reshape(tf.range(w), (1, 1, w, 1))
        box = (r >= cy - 4) & (r < cy + 4) & (q >= cx - 4) & (q < cx + 4)
        v = tf.where(box, 0.0, v)
        # Mixup alpha 0.2 with the reversed batch.
        lam = beta(0.2)
        return lam * v + (1 - lam) * v[::-1], lam * labels + (1 - lam) * labels[::-1]

    return lambda: step(xt, yt)


def tf_image_b(x):
    """Returns a runner for one Workload B batch with tf.image: warp, then `crop_and_resize`."""
    tf = _tf()
    gen = tf.random.Generator.from_seed(0, alg="philox")
    xt = tf.constant(x)
    b, h, w, _ = x.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2

    @tf.function(jit_compile=False)
    def step(v):
        u = gen.uniform((b, 7))
        # Rotation +-15 deg and scale 0.8-1.2 about the centre: one projective warp (bilinear,
        # zeros outside), per-example matrices mapping output to input pixels, as keras'
        # RandomRotation / RandomZoom call it.
        theta = (u[:, 0] * 2 - 1) * (np.pi / 12)
        inv_s = 1.0 / (0.8 + 0.4 * u[:, 1])
        a0, a1 = inv_s * tf.cos(theta), inv_s * tf.sin(theta)
        b0, b1 = -a1, a0
        mats = tf.stack(
            [
                a0,
                a1,
                cx - a0 * cx - a1 * cy,
                b0,
                b1,
                cy - b0 * cx - b1 * cy,
                tf.zeros(b),
                tf.zeros(b),
            ],
            axis=1,
        )
        v = tf.raw_ops.ImageProjectiveTransformV3(
            images=v,
            transforms=mats,
            output_shape=[h, w],
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode="CONSTANT",
        )
        # Random resized crop (area 0.08-1, log-uniform ratio 3/4-4/3, clamped to the image) to
        # 224 with horizontal flip p=0.5 (a flipped box: x1 > x2), bilinear, in one crop_and_resize.
        area = 0.08 + 0.92 * u[:, 2]
        ratio = tf.exp(np.log(3 / 4) + u[:, 3] * (np.log(4 / 3) - np.log(3 / 4)))
        ch = tf.minimum(tf.sqrt(area / ratio), 1.0)
        cw = tf.minimum(tf.sqrt(area * ratio), 1.0)
        y1 = u[:, 4] * (1 - ch)
        x1 = u[:, 5] * (1 - cw)
        flip = u[:, 6] < 0.5
        boxes = tf.stack(
            [y1, tf.where(flip, x1 + cw, x1), y1 + ch, tf.where(flip, x1, x1 + cw)], axis=1
        )
        return tf.image.crop_and_resize(v, boxes, tf.range(b), [224, 224], method="bilinear")

    return lambda: step(xt)


# ---------------------------------------------------------------------------------------------


def _rng_note():
    part = jax.config.jax_threefry_partitionable
    return (
        f"jaxreg RNG: per-example keys from jax.random.split (threefry2x32, "
        f"jax_threefry_partitionable={part}, left as configured); parameters and noise from "
        f"{_rng.NAME}. dm-pix/augmax: jax.random threefry2x32. kornia: torch's generator "
        f"(mt19937 on CPU, philox on CUDA). albumentations: numpy Generator (PCG64). tf.image: "
        f"tf.random.Generator (philox)."
    )


def _warp_note():
    """Which path jaxreg's bilinear warp takes here, and the native kernel's build time."""
    from jaxreg._cpu import native as _native

    if jax.default_backend() != "cpu":
        return f"jaxreg bilinear warp: XLA path (on {jax.default_backend()})."
    t0 = time.perf_counter()
    target = _native.warp_target()
    took = time.perf_counter() - t0
    status = _native.native_status()
    if target is None:
        return f"jaxreg bilinear warp: XLA gather path ({status['warp']})."
    return (
        f"jaxreg bilinear warp: native XLA:CPU kernel, ready in {took:.2f} s (built now or "
        f"loaded from {status['library']}), huge-page advice "
        f"{'on' if _native.huge_pages() else 'off'}."
    )


def run_workload(name, peers, args, repeats, *, few=()):
    """Times each `(name, factory)` peer on `args`, prints a table against jaxreg and returns rows.

    Args:
        name: The workload's title, printed as the table's heading.
        peers: `(peer name, factory)` pairs; the first is jaxreg, the reference for the ratio
            column. A factory takes `*args` and returns a zero-argument callable running one batch.
        args: The inputs passed to each factory (the image batch first; its leading axis is the
            batch size used for images per second).
        repeats: Timed calls after the two warm-up calls.
        few: Peers timed over 2 calls only (too slow for `repeats`), each on its own after the
            others.

    Returns:
        One `(peer, images per second, first-call s, median batch s, note)` tuple per peer; the
        three numbers are None for a peer that was skipped or failed.
    """
    print(f"\nWorkload {name}")
    notes, runs = {}, {}
    for peer, make in peers:
        try:
            runs[peer] = make(*args)
        except ImportError as e:
            what = str(e) if e.name == "tensorflow" else (e.name or e)
            notes[peer] = f"skipped: not installed ({what})"
        except Exception as e:  # a peer's API changed: report, keep going
            notes[peer] = f"failed: {type(e).__name__}: {str(e)[:80]}"
    first, medians = {}, {}
    # The others side by side, then each slow peer on its own (its seconds-long calls and their
    # memory would fall on the rows around it).
    for group in ([p for p in runs if p not in few], *([p] for p in runs if p in few)):
        timed = {}
        for peer in group:  # the first call (compilation); one that fails drops the peer
            try:
                first[peer] = _call(runs[peer])
                timed[peer] = runs[peer]
            except Exception as e:
                notes[peer] = f"failed: {type(e).__name__}: {str(e)[:80]}"
        medians.update(_time_side_by_side(timed, {p: 2 if p in few else repeats for p in timed}))
    rows = []
    for peer, _ in peers:
        if peer in medians:
            med = medians[peer]
            rows.append((peer, args[0].shape[0] / med, first[peer], med, ""))
        else:
            rows.append((peer, None, None, None, notes[peer]))
    ours = rows[0][1]
    print(
        f"{'library':34s} {'img/s':>10s} {'jaxreg x':>9s} {'batch ms':>9s} {'first call s':>13s}  note"
    )
    for peer, ips, first, med, note in rows:
        if ips is None:
            print(f"{peer:34s} {'-':>10s} {'-':>9s} {'-':>9s} {'-':>13s}  {note}")
        else:
            ratio = ours / ips if ours else float("nan")
            print(f"{peer:34s} {ips:10.0f} {ratio:9.2f} {med * 1e3:9.2f} {first:13.2f}  {note}")
    by_name = {r[0]: r[1] for r in rows}
    others = [r for r in rows[1:] if r[1] is not None and not r[0].startswith("jaxreg")]
    if others and ours:
        best = max(others, key=lambda r: r[1])
        print(
            f"fastest peer: {best[0]} ({best[1]:.0f} img/s); jaxreg / fastest = {ours / best[1]:.2f}x"
        )
    vmapped, hand, pix = (by_name.get(k) for k in (VMAP_ROW, HAND_ROW, "dm-pix (vmap+jit)"))
    if ours and vmapped:
        print(f"jax.vmap(compose) / batch(compose) = {vmapped / ours:.2f}x")
    if hand and pix:
        print(f"hand-written fn under jax.vmap / dm-pix = {hand / pix:.2f}x")
    return rows


VMAP_ROW = "jaxreg, jax.vmap(compose(...))"
HAND_ROW = "jaxreg, hand-written fn, jax.vmap"


def main(argv=None):
    """Parses the command line and runs workload A, B or both, printing the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=["A", "B", "both"], default="both")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    try:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
    except ImportError:
        pass
    dev = jax.devices()[0]
    print(
        f"jax {jax.__version__} on {dev.platform} ({dev.device_kind}, {os.cpu_count()} CPU cores); "
        f"'first call s' includes compilation for JAX libraries. JAX libraries and kornia run on "
        f"the accelerator when there is one, albumentations and tf.image on the CPU."
    )
    print(_rng_note())
    print(_warp_note())
    rng = np.random.default_rng(0)
    if args.workload in ("A", "both"):
        x = rng.random((512, 32, 32, 3), dtype=np.float32)
        y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 512)]
        run_workload(
            "A: 512 x 32x32x3, crop+flip+jitter+noise+cutout+mixup",
            [
                ("jaxreg", jaxreg_a),
                (VMAP_ROW, jaxreg_vmap_a),
                (HAND_ROW, jaxreg_hand_a),
                ("dm-pix (vmap+jit)", dmpix_a),
                ("kornia", kornia_a),
                ("albumentations", albumentations_a),
                ("tf.image", tf_image_a),
            ],
            (x, y),
            args.repeats,
        )
    if args.workload in ("B", "both"):
        x = rng.random((64, 224, 224, 3), dtype=np.float32)
        run_workload(
            "B: 64 x 224x224x3, rotate+scale+resized crop+flip",
            [
                ("jaxreg", jaxreg_b),
                (VMAP_ROW, jaxreg_vmap_b),
                (HAND_ROW, jaxreg_hand_b),
                ("jaxreg, XLA path (ref.)", jaxreg_b_xla),
                ("albumentations", albumentations_b),
                ("augmax", augmax_b),
                ("kornia", kornia_b),
                ("dm-pix (vmap+jit)", dmpix_b),
                ("tf.image", tf_image_b),
            ],
            (x,),
            max(3, args.repeats // 2),
            few=("dm-pix (vmap+jit)",),  # seconds per batch on a CPU
        )


if __name__ == "__main__":
    main()
