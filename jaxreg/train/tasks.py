"""Tasks: what a batch is, what is minimised and what is reported (classification, reconstruction).

The training loop is the same for every task. A task is a small object with four members;
write your own by following `Task` (any object with these members works):

- `metrics`: the names `evaluate`/`summarize` report, e.g. `("loss", "accuracy", "ece")`;
  the loop reports them as `val_<name>` and `test_<name>`, and `config.monitor` must be
  one of the `val_` names.
- `loss(model, key, images, labels) -> (loss, metrics)`: one training step's objective on a
  batch, with the model in training mode (call it as `model(x)`; BatchNorm statistics and
  dropout work as in any NNX code). `key` is this step's key for the task's own randomness
  (augmentation, mixing, corruption). Returns a float32 scalar to minimise and a dict of
  float32 scalars to log (e.g. `{"loss": ..., "accuracy": ...}`).
- `evaluate(model, key, images, labels) -> dict of per-example arrays`: the model in
  evaluation mode on one batch; every array has the batch as its first axis.
- `summarize(outputs, labels) -> dict[str, float]`: the metrics of a whole split from the
  concatenated per-example outputs.

Images are (B, H, W, C) float32 in [0, 1]; labels are (B,) int32 (a reconstruction task
ignores them).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg import losses

__all__ = [
    "RECONSTRUCTION_LOSSES",
    "Classification",
    "DomainReconstruction",
    "Reconstruction",
    "Task",
    "image_metrics",
    "psnr",
]

RECONSTRUCTION_LOSSES = ("mse", "bce")

Augment = Callable[[jax.Array, jax.Array], jax.Array]  # batched: (key, images) -> images
Mix = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


class Task(Protocol):
    """The interface the training loop needs (see the module docstring)."""

    metrics: tuple[str, ...]

    def loss(
        self, model: Any, key: jax.Array, images: jax.Array, labels: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Training objective and logged scalars on one batch (model in training mode)."""
        ...

    def evaluate(
        self, model: Any, key: jax.Array, images: jax.Array, labels: jax.Array
    ) -> dict[str, jax.Array]:
        """Per-example outputs on one batch (model in evaluation mode)."""
        ...

    def summarize(self, outputs: Mapping[str, np.ndarray], labels: np.ndarray) -> dict[str, float]:
        """Split-level metrics from the concatenated per-example outputs."""
        ...


@dataclasses.dataclass(frozen=True)
class Classification:
    """K-way classification with soft labels: augmentation, batch mixing, label smoothing.

    Per training step: `augment` (batched, e.g. `jaxreg.augment.batch(fn)`), one-hot labels,
    `mix` (Mixup/CutMix giving soft labels), the model's logits, and the mean soft
    cross-entropy with `label_smoothing` (`jaxreg.losses.soft_cross_entropy`). Accuracy is
    measured against the un-mixed labels. Evaluation reports loss, accuracy and the expected
    calibration error (Guo et al., 2017).

    Attributes:
      num_classes: K.
      augment: batched augmentation `(key, images) -> images`, or None.
      mix: batch mixing `(key, images, soft_labels) -> (images, soft_labels)`, or None.
      label_smoothing: in [0, 1).
      smoothing_kind: "uniform" or "wrong_classes" (`jaxreg.losses.smooth_labels`).
    """

    num_classes: int
    augment: Augment | None = None
    mix: Mix | None = None
    label_smoothing: float = 0.0
    smoothing_kind: str = "uniform"
    metrics: tuple[str, ...] = ("loss", "accuracy", "ece")

    def loss(self, model, key, images, labels):
        """Mean soft cross-entropy of augmented, mixed batches; accuracy on the true labels."""
        k_aug, k_mix = jax.random.split(key)
        if self.augment is not None:
            images = self.augment(k_aug, images)
        soft = jax.nn.one_hot(labels, self.num_classes, dtype=jnp.float32)
        if self.mix is not None:
            images, soft = self.mix(k_mix, images, soft)
        logits = model(images)
        per = losses.soft_cross_entropy(
            logits,
            soft,
            label_smoothing=self.label_smoothing,
            smoothing_kind=self.smoothing_kind,
        )
        loss = jnp.mean(per)
        accuracy = jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
        return loss, {"loss": loss, "accuracy": accuracy}

    def evaluate(self, model, key, images, labels):
        """Logits and per-example cross-entropy (no smoothing) of clean images."""
        del key
        logits = model(images).astype(jnp.float32)
        return {"logits": logits, "loss": losses.soft_cross_entropy(logits, labels)}

    def summarize(self, outputs, labels):
        """Mean loss, accuracy and ECE (15 bins) over the split."""
        logits, labels = jnp.asarray(outputs["logits"]), jnp.asarray(labels, jnp.int32)
        return {
            "loss": float(np.mean(outputs["loss"])),
            "accuracy": float(losses.accuracy(logits, labels)),
            "ece": float(losses.expected_calibration_error(jax.nn.softmax(logits), labels)),
        }


@dataclasses.dataclass(frozen=True)
class Reconstruction:
    """Images in, images out: an autoencoder's task, denoising when `corrupt` is given.

    Per training step: `augment` the clean batch (the targets), `corrupt` it to make the inputs
    (None: the inputs are the targets), and minimise the mean `loss` between the model's output
    and the targets: "mse" on the outputs, or "bce" with the outputs taken as logits (the
    reconstruction is `sigmoid(output)`). Evaluation corrupts with a fixed key per split, so
    validation numbers are comparable across epochs, and reports the loss, MSE, PSNR and SSIM
    (dm-pix; Wang et al., 2004) of the reconstruction against the clean image, plus the PSNR
    and SSIM of the corrupted input itself (`input_psnr`, `input_ssim`: what the denoiser
    started from) when there is a corruption.

    Attributes:
      loss_kind: "mse" or "bce".
      augment: batched augmentation of the clean images, or None.
      corrupt: batched corruption `(key, images) -> images` making the inputs, or None.
    """

    loss_kind: str = "mse"
    augment: Augment | None = None
    corrupt: Augment | None = None

    def __post_init__(self):
        if self.loss_kind not in RECONSTRUCTION_LOSSES:
            raise ValueError(
                f"loss_kind must be one of {RECONSTRUCTION_LOSSES}, got {self.loss_kind!r}"
            )

    @property
    def metrics(self) -> tuple[str, ...]:
        """Reported names: loss, mse, psnr, ssim (and input_psnr, input_ssim with a corruption)."""
        base = ("loss", "mse", "psnr", "ssim")
        return base + (("input_psnr", "input_ssim") if self.corrupt is not None else ())

    def _inputs(self, key, images):
        return images if self.corrupt is None else self.corrupt(key, images)

    def loss(self, model, key, images, labels):
        """Mean reconstruction loss of (corrupted) inputs against the clean targets."""
        del labels
        k_aug, k_cor = jax.random.split(key)
        targets = images if self.augment is None else self.augment(k_aug, images)
        outputs = model(self._inputs(k_cor, targets))
        loss = jnp.mean(losses.reconstruction_loss(outputs, targets, kind=self.loss_kind))
        return loss, {"loss": loss}

    def evaluate(self, model, key, images, labels):
        """Per-example loss, MSE, PSNR and SSIM of the reconstruction of the clean images."""
        del labels
        inputs = self._inputs(key, images)
        out = image_metrics(model(inputs), images, self.loss_kind)
        if self.corrupt is not None:
            out.update(_input_metrics(inputs, images))
        return out

    def summarize(self, outputs, labels):
        """Means over the split (PSNR averaged per image, in dB)."""
        del labels
        return {name: float(np.mean(outputs[name])) for name in self.metrics}


def as_image(outputs: jax.Array, loss_kind: str) -> jax.Array:
    """The image a reconstruction model's outputs stand for: `sigmoid` for "bce", else clipped."""
    if loss_kind == "bce":
        return jax.nn.sigmoid(outputs)
    return jnp.clip(outputs, 0.0, 1.0)


def _ssim_size(images: jax.Array) -> int:
    """An odd SSIM window that fits small images (dm-pix's default is 11)."""
    size = min(11, images.shape[1], images.shape[2])
    return size - (1 - size % 2)


PSNR_CAP_DB = 100.0  # an exact copy (MSE 0) would be +inf dB and make every mean infinite


def psnr(a: jax.Array, b: jax.Array) -> jax.Array:
    """Per-image PSNR in dB of images in [0, 1], `10 log10(1 / MSE)`, capped at 100 dB.

    As `dm_pix.psnr` (peak 1), except that an image equal to its reference (MSE 0: e.g. an
    erasing box that missed the ink) gets `PSNR_CAP_DB` instead of +inf.

    Args:
      a: (B, H, W, C) images.
      b: (B, H, W, C) reference images.

    Returns:
      (B,) float32.
    """
    mse = jnp.mean(jnp.square(a - b), axis=(1, 2, 3))
    return -10.0 * jnp.log10(jnp.maximum(mse, 10.0 ** (-PSNR_CAP_DB / 10.0)))


def image_metrics(outputs: jax.Array, images: jax.Array, loss_kind: str) -> dict[str, jax.Array]:
    """Per-example `loss`, `mse`, `psnr` (dB) and `ssim` of outputs against clean images.

    Args:
      outputs: (B, H, W, C) model outputs (logits for "bce").
      images: (B, H, W, C) clean targets in [0, 1].
      loss_kind: "mse" or "bce" (`jaxreg.losses.reconstruction_loss`).

    Returns:
      dict of (B,) float32 arrays; PSNR (`psnr`) and SSIM (dm-pix; Wang et al., 2004) are
      measured on the reconstructed image (`as_image`), the loss on the raw outputs.
    """
    import dm_pix

    recon = as_image(outputs, loss_kind)
    with jax.numpy_dtype_promotion("standard"):  # dm-pix mixes Python floats and arrays
        return {
            "loss": losses.reconstruction_loss(outputs, images, kind=loss_kind),
            "mse": jnp.mean(jnp.square(recon - images), axis=(1, 2, 3)),
            "psnr": psnr(images, recon),
            "ssim": dm_pix.ssim(images, recon, filter_size=_ssim_size(images)),
        }


def _input_metrics(inputs: jax.Array, images: jax.Array) -> dict[str, jax.Array]:
    """PSNR and SSIM of the corrupted inputs (clipped to [0, 1]) against the clean images."""
    import dm_pix

    x = jnp.clip(inputs, 0.0, 1.0)
    with jax.numpy_dtype_promotion("standard"):
        return {
            "input_psnr": psnr(images, x),
            "input_ssim": dm_pix.ssim(images, x, filter_size=_ssim_size(images)),
        }


@dataclasses.dataclass(frozen=True)
class DomainReconstruction:
    """One encoder, one decoder per domain: each image is reconstructed by its domain's decoder.

    The "deepfake" autoencoder: a shared encoder learns one code for images of several domains
    (two digit styles, two faces), each domain has its own decoder, and an image is translated
    by decoding its code with another domain's decoder. The domain travels in the labels: a
    batch holds images of every domain and `labels[i]` is image i's domain, `0 <=
    labels < num_domains` (build such a set by concatenating the domains' images with their
    domain ids as labels). The model must have `encode(x) -> (code, switches)` and
    `decode(code, switches, domain=d)`, as `jaxreg.models.Autoencoder(decoders=num_domains)`.

    Every decoder runs on the whole batch and each example keeps its own domain's output (one
    static program; the cost is `num_domains` decoder passes). Evaluation reports the loss, MSE,
    PSNR and SSIM of each image's reconstruction by its own decoder, and the PSNR per domain
    (`psnr_domain<d>`).

    Attributes:
      num_domains: how many decoders (domains), >= 2.
      loss_kind: "mse" or "bce" (outputs are logits).
      augment: batched augmentation of the clean images, or None.
    """

    num_domains: int = 2
    loss_kind: str = "mse"
    augment: Augment | None = None

    def __post_init__(self):
        if isinstance(self.num_domains, bool) or int(self.num_domains) < 2:
            raise ValueError(f"num_domains must be an int >= 2, got {self.num_domains!r}")
        if self.loss_kind not in RECONSTRUCTION_LOSSES:
            raise ValueError(
                f"loss_kind must be one of {RECONSTRUCTION_LOSSES}, got {self.loss_kind!r}"
            )

    @property
    def metrics(self) -> tuple[str, ...]:
        """Reported names: loss, mse, psnr, ssim and psnr_domain0, psnr_domain1, ..."""
        return ("loss", "mse", "psnr", "ssim") + tuple(
            f"psnr_domain{d}" for d in range(self.num_domains)
        )

    def outputs(self, model, images: jax.Array, domains: jax.Array) -> jax.Array:
        """Each image decoded by decoder `domains[i]` (B, H, W, C)."""
        code, switches = model.encode(images)
        outs = jnp.stack([model.decode(code, switches, domain=d) for d in range(self.num_domains)])
        hot = jax.nn.one_hot(domains, self.num_domains, dtype=outs.dtype)  # (B, D)
        return jnp.einsum("dbhwc,bd->bhwc", outs, hot)

    def loss(self, model, key, images, labels):
        """Mean reconstruction loss, each image by its own domain's decoder."""
        if self.augment is not None:
            images = self.augment(key, images)
        outputs = self.outputs(model, images, labels)
        loss = jnp.mean(losses.reconstruction_loss(outputs, images, kind=self.loss_kind))
        return loss, {"loss": loss}

    def evaluate(self, model, key, images, labels):
        """Per-example loss, MSE, PSNR and SSIM by the own domain's decoder."""
        del key
        return image_metrics(self.outputs(model, images, labels), images, self.loss_kind)

    def summarize(self, outputs, labels):
        """Means over the split, and the mean PSNR of each domain's images (NaN if absent)."""
        labels = np.asarray(labels)
        out = {name: float(np.mean(outputs[name])) for name in ("loss", "mse", "psnr", "ssim")}
        for d in range(self.num_domains):
            mine = labels == d
            out[f"psnr_domain{d}"] = (
                float(np.mean(outputs["psnr"][mine])) if mine.any() else math.nan
            )
        return out
