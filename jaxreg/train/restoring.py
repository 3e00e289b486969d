"""restore(workdir): a trained model back from a run's checkpoints, ready for inference."""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from ml_collections import ConfigDict

__all__ = ["Restored", "load_images", "read_named", "restore"]

WHICH = ("best", "latest")


@dataclasses.dataclass(frozen=True)
class Restored:
    """A restored run.

    Attributes:
      model: the NNX model holding the restored weights (the EMA weights when the run
        evaluated them), in evaluation mode.
      config: the run's config.
      history: per-epoch records up to the restored epoch.
      epoch: the restored epoch.
      metrics: that epoch's logged metrics (e.g. `val_accuracy`).
      weights: "ema" or "live".
      class_names: the training data's class names (when the run recorded them).
      image_shape: (H, W, C) of the training images (when recorded).
    """

    model: nnx.Module
    config: ConfigDict
    history: list[dict]
    epoch: int
    metrics: dict[str, Any]
    weights: str
    class_names: list[str] | None
    image_shape: tuple[int, int, int] | None


def _read_step(directory: Path, which: str) -> tuple[dict, dict, int]:
    import orbax.checkpoint as ocp

    from jaxreg.train.checkpoint import FORMAT_VERSION

    folder = directory / "checkpoints" / which
    if not folder.is_dir():
        raise FileNotFoundError(f"no checkpoints/{which} in {directory}")
    options = ocp.CheckpointManagerOptions(create=False, lightweight_initialize=True)
    with ocp.CheckpointManager(
        os.fspath(folder.absolute()), item_names=("state", "meta"), options=options
    ) as manager:
        steps = sorted(manager.all_steps(), reverse=True)
        for step in steps:
            if not (folder / str(step) / "commit_success.txt").exists():
                continue
            try:
                out = manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()
                    ),
                )
            except Exception as err:  # a broken step: the older one may do
                warnings.warn(
                    f"checkpoint {folder / str(step)} is unreadable ({err})", stacklevel=3
                )
                continue
            meta = dict(out["meta"])
            if meta.get("format_version", 1) != FORMAT_VERSION:
                raise ValueError(
                    f"{folder} holds checkpoints in format {meta.get('format_version', 1)} "
                    f"(an older jaxreg); this jaxreg reads format {FORMAT_VERSION}"
                )
            return out["state"], meta, step
    raise FileNotFoundError(f"no readable checkpoint in {folder}")


def read_named(workdir: str | os.PathLike, which: str = "best") -> tuple[dict, dict]:
    """A run's best or latest checkpoint as a tree keyed by name, and its metadata.

    The tree is what `jaxreg.train.checkpoint.to_named` wrote, read with plain Orbax.

    Raises:
      ValueError: a bad `which`, or an older checkpoint format.
      FileNotFoundError: no readable checkpoint.
    """
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    named, meta, _ = _read_step(Path(workdir), which)
    return named, meta


def _fill(model: nnx.Module, named: dict, use_ema: bool) -> None:
    """Writes the named arrays of a checkpoint into `model`'s variables (in place)."""
    from jaxreg.train.checkpoint import from_named

    source = named["ema"] if use_ema else named
    params = nnx.state(model, nnx.Param)
    stats = nnx.state(model, nnx.BatchStat)
    rngs = nnx.state(model, nnx.RngState)
    new = [from_named(source["params"], params)]
    if jax.tree.leaves(stats):
        new.append(from_named(source.get("batch_stats", named.get("batch_stats", {})), stats))
    if jax.tree.leaves(rngs):
        restored = from_named(named.get("rngs", {}), rngs)
        new.append(
            jax.tree.map(
                lambda like, x: (
                    jax.random.wrap_key_data(jnp.asarray(x), impl=jax.random.key_impl(like))
                    if jnp.issubdtype(like.dtype, jax.dtypes.prng_key)
                    else jnp.asarray(x, like.dtype)
                ),
                rngs,
                restored,
            )
        )
    for state in new:
        nnx.update(model, jax.tree.map(jnp.asarray, state))


def restore(workdir: str | os.PathLike, which: str = "best", model: Any = None) -> Restored:
    """Loads a run's best (or latest) checkpoint into a model ready for inference.

    Built-in models (`config.model`) are rebuilt from the saved config; a model of your own is
    passed in: an `nnx.Module` instance (filled in place and returned) or a factory
    `rngs -> nnx.Module`. The weights are the EMA weights when the run evaluated an EMA.

    Args:
      workdir: a `train_and_evaluate` workdir.
      which: "best" (the epoch the run selected on validation) or "latest".
      model: your model or its factory; None for a built-in model.

    Returns:
      A `Restored` with the model (eval mode), config, history and the restored epoch.

    Raises:
      ValueError: a bad `which`, or a checkpoint of an older format.
      FileNotFoundError: no readable checkpoint.
      KeyError: the model's variables do not match the checkpoint (names the first missing).
    """
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    workdir = Path(workdir)
    config = ConfigDict(json.loads((workdir / "config.json").read_text()))
    info_path = workdir / "data.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    named, meta, step = _read_step(workdir, which)
    if model is None:
        from jaxreg import models as models_lib

        if "image_shape" not in info:
            raise FileNotFoundError(f"{info_path} is missing: pass the model to restore")
        model = models_lib.create(
            config.model,
            num_classes=len(info["class_names"]),
            input_shape=info["image_shape"],
            seed=0,
            **models_lib.config_kwargs(config),
        )
    elif not isinstance(model, nnx.Module):
        if not callable(model):
            raise TypeError(f"model must be an nnx.Module or a factory, got {type(model).__name__}")
        model = model(nnx.Rngs(0))
    use_ema = "ema" in named
    _fill(model, named, use_ema)
    model.eval()
    history = list(meta.get("history", []))
    return Restored(
        model=model,
        config=config,
        history=history,
        epoch=int(meta.get("epoch", step)),
        metrics=dict(meta.get("metrics", {})),
        weights="ema" if use_ema else "live",
        class_names=info.get("class_names"),
        image_shape=tuple(info["image_shape"]) if "image_shape" in info else None,
    )


def load_images(paths, image_shape) -> jax.Array:
    """Image files as a batch the way a run's model expects it.

    Each file is read with Pillow, converted to gray ("L") or RGB to match the channels,
    resized to (H, W) with Pillow's bilinear filter (with antialiasing when shrinking) and
    scaled to [0, 1].

    Args:
      paths: image file paths (anything Pillow reads: PNG, JPEG, ...).
      image_shape: (H, W, C) of the run's training images, C in {1, 3}.

    Returns:
      float32 array (N, H, W, C) in [0, 1].

    Raises:
      ValueError: an unsupported channel count, or a file that is not an image.
      FileNotFoundError: a missing file.
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    if image_shape is None or len(image_shape) != 3 or image_shape[2] not in (1, 3):
        raise ValueError(f"image_shape must be (H, W, C) with C in (1, 3), got {image_shape}")
    h, w, c = (int(v) for v in image_shape)
    out = []
    for path in paths:
        try:
            with Image.open(path) as img:
                img = img.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
                arr = np.asarray(img, np.float32) / 255.0
        except UnidentifiedImageError:
            raise ValueError(f"{path} is not an image file Pillow can read") from None
        out.append(arr.reshape(h, w, c))
    return jnp.asarray(np.stack(out))
