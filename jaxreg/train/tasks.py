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
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg import losses

__all__ = ["RECONSTRUCTION_LOSSES", "Classification", "Reconstruction", "Task"]

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
    of the corrupted input itself (`input_psnr`) when there is a corruption.

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
        """Reported names: loss, mse, psnr, ssim (and input_psnr with a corruption)."""
        base = ("loss", "mse", "psnr", "ssim")
        return base + (("input_psnr",) if self.corrupt is not None else ())

    def _inputs(self, key, images):
        return images if self.corrupt is None else self.corrupt(key, images)

    def _image(self, outputs):
        if self.loss_kind == "bce":
            return jax.nn.sigmoid(outputs)
        return jnp.clip(outputs, 0.0, 1.0)

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
        import dm_pix

        del labels
        inputs = self._inputs(key, images)
        outputs = model(inputs)
        recon = self._image(outputs)
        size = min(11, images.shape[1], images.shape[2])
        size -= 1 - size % 2  # an odd SSIM window that fits small images (dm-pix: 11)
        with jax.numpy_dtype_promotion("standard"):  # dm-pix mixes Python floats and arrays
            out = {
                "loss": losses.reconstruction_loss(outputs, images, kind=self.loss_kind),
                "mse": jnp.mean(jnp.square(recon - images), axis=(1, 2, 3)),
                "psnr": dm_pix.psnr(images, recon),
                "ssim": dm_pix.ssim(images, recon, filter_size=size),
            }
            if self.corrupt is not None:
                out["input_psnr"] = dm_pix.psnr(images, jnp.clip(inputs, 0.0, 1.0))
        return out

    def summarize(self, outputs, labels):
        """Means over the split (PSNR averaged per image, in dB)."""
        del labels
        return {name: float(np.mean(outputs[name])) for name in self.metrics}
