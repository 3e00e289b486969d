"""The training configuration (ml_collections) and command-line style overrides of it."""

from __future__ import annotations

import ast
import json
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

from ml_collections import ConfigDict, FieldReference
from ml_collections.config_dict import placeholder


def default_config() -> ConfigDict:
    """Every option of `train_and_evaluate`, with defaults for limited mnist5k on a CPU.

    Groups: data (`data`, `train_per_class`, `imbalance_factor`, `balanced_sampling`),
    model (`model`, `batch_norm`, `dropout`, `bn_momentum`), optimisation
    (`optimizer`, `learning_rate`, `schedule`, `epochs`, `batch_size`), regularization
    (`l1`, `l1_prox`, `l2`, `weight_decay`, `label_smoothing`, `ema_decay`,
    `early_stopping`), augmentation (`augment`, `mix` as spec strings, see
    `jaxreg.augment.from_spec`), model selection (`monitor`, `monitor_mode`), and
    run control (`checkpoint`, `resume`, `progress`, `smoke`).
    """
    c = ConfigDict()
    c.seed = 0  # parameter init, shuffling, augmentation and dropout keys
    c.task = "classification"  # or "reconstruction" (images in, images out; see train.tasks)
    # data
    c.data = "mnist5k"
    c.data_dir = placeholder(str)
    c.data_seed = 0  # which examples a subset keeps
    c.train_per_class = placeholder(int)  # None: the whole training split
    c.imbalance_factor = 1.0  # > 1: long-tailed class sizes, largest / smallest class
    c.balanced_sampling = False  # draw batches with class-balanced weights
    # generated examples mixed into every batch: round(synthetic_ratio * batch_size) of each
    # batch come from a synthetic pool (data["synthetic"], or the .npz file `synthetic`),
    # the rest from the real training set; an epoch is one pass over the real examples
    c.synthetic = ""  # .npz with images (N, H, W, C) in [0, 1] and labels (N,); "" for none
    c.synthetic_ratio = 0.0  # in [0, 1): the generated fraction of each training batch
    # model
    c.model = "cnn"
    c.pretrained = True  # models with pretrained weights (vgg16: ImageNet) start from them
    c.code_size = 32  # autoencoder / encoder_classifier: length of the code
    c.ae_channels = (32, 64)  # autoencoder / encoder_classifier: encoder channels per stage
    c.upsample = "deconv"  # autoencoder decoder: "deconv" | "unpool" | "resize"
    c.batch_norm = False
    c.dropout = 0.0
    c.bn_momentum = 0.9
    # optimisation
    c.epochs = 20
    c.batch_size = 64
    c.optimizer = "adam"
    c.learning_rate = 1e-3
    c.momentum = 0.9
    c.schedule = "constant"
    c.warmup_epochs = 0.0
    c.grad_clip = 0.0
    # regularization
    c.l1 = 0.0
    c.l1_prox = 0.0
    c.l2 = 0.0
    c.weight_decay = 0.0
    c.decay_mask = "kernels"
    c.label_smoothing = 0.0
    c.smoothing_kind = "uniform"  # or "wrong_classes": the mass goes to the K-1 other classes
    c.ema_decay = 0.0  # > 0: evaluate an exponential moving average of the weights
    c.ema_warmup = True
    c.ema_batch_stats = "recompute"  # "average" | "copy" | "recompute"
    c.early_stopping = ConfigDict({"patience": 0, "min_delta": 0.0, "warmup_epochs": 0})
    # augmentation (spec strings of jaxreg.augment)
    c.augment = ""
    c.mix = ""
    # reconstruction: the loss, and a corruption of the inputs (denoising), a spec string
    c.reconstruction_loss = "mse"  # or "bce" (outputs are logits)
    c.corrupt = ""
    # model selection: the best epoch by this validation metric is restored at the end
    c.monitor = "val_loss"
    c.monitor_mode = "min"
    c.restore_best = True
    # transfer learning (jaxreg.transfer): start from another run's best weights, and what trains
    c.init_from = ""  # a train_and_evaluate workdir; a head of another size stays fresh
    c.init_head = True  # also copy the source's head when its shape fits; False: a fresh head
    c.finetune = "full"  # "full" | "linear_probe" | "last" | "layerwise"
    c.finetune_last = 1  # "last": the top N parameter groups train (the head is one)
    c.layerwise_decay = 0.5  # "layerwise": group d below the head trains at decay**d x the rate
    c.head_warmup_epochs = 0  # only the head trains for this many epochs first
    # run control
    c.loop = "auto"  # "scan": one lax.scan per epoch on device; "python": host-fed batches;
    # "stream": batches read through grain (jaxreg.data.stream), checkpoints at epoch ends
    c.device_data_limit_mb = 1024.0  # "auto" scans when the training images fit in this
    c.eval_batch_size = 1000
    # devices and hosts (jaxreg.train.parallel): the batch is split over `devices` devices
    c.devices = 0  # 0: every device JAX sees (all local ones, or all hosts' after distributed)
    c.distributed = ConfigDict(  # jax.distributed: "" single process, "auto", or "host:port"
        {"coordinator": "", "num_processes": 0, "process_id": -1}
    )
    c.checkpoint = ConfigDict({"enabled": True, "keep": 2})
    c.resume = True  # continue from the latest good checkpoint in workdir, if any
    c.progress = True
    c.smoke = False
    return c


def _parse_value(text: str, current: Any) -> Any:
    if isinstance(current, bool):
        low = text.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ValueError(f"expected a boolean (true/false), got {text!r}")
    if isinstance(current, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(config: ConfigDict, overrides: Iterable[str]) -> ConfigDict:
    """Applies `key.sub=value` overrides (the part after `--config.`) to a copy of `config`.

    Values are parsed as Python literals (`3`, `0.1`, `(1, 2)`, `None`, `true`);
    string fields take the text as is. Unknown keys raise `ValueError` naming the allowed
    ones; type mismatches raise `TypeError`.
    """
    config = ConfigDict(config.to_dict(preserve_field_references=True), type_safe=True)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"config override must look like key=value, got {item!r}")
        key, text = item.split("=", 1)
        parts = key.split(".")
        node = config
        for i, part in enumerate(parts):
            if not isinstance(node, ConfigDict) or part not in node:
                where = ".".join(parts[:i]) or "config"
                allowed = sorted(node.keys()) if isinstance(node, ConfigDict) else []
                raise ValueError(
                    f"unknown config key {key!r}: {where} has no {part!r}; allowed: {allowed}"
                )
            if i < len(parts) - 1:
                node = node[part]
        field = parts[-1]
        ref = node.get_ref(field) if hasattr(node, "get_ref") else None
        current = node[field]
        value = _parse_value(text, current)
        if current is None and isinstance(ref, FieldReference) and value is not None:
            want = ref.get_type()
            if want is float and isinstance(value, int):
                value = float(value)
            if want is not None and not isinstance(value, want):
                raise TypeError(f"config key {key!r} takes {want.__name__}, got {value!r}")
        if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        try:
            node[field] = value
        except TypeError as e:
            raise TypeError(f"config key {key!r}: {e}") from None
    return config


TASKS = ("classification", "reconstruction")
MONITORS = {
    "classification": ("val_loss", "val_accuracy", "val_ece"),
    "reconstruction": (
        "val_loss",
        "val_mse",
        "val_psnr",
        "val_ssim",
        "val_input_psnr",
        "val_input_ssim",
    ),
}
EMA_BATCH_STATS = ("average", "copy", "recompute")
LOOPS = ("auto", "scan", "python", "stream")

# (key, lowest allowed, whether the lowest is excluded): numeric fields and their ranges.
_RANGES = (
    ("epochs", 1, False),
    ("batch_size", 1, False),
    ("eval_batch_size", 1, False),
    ("learning_rate", 0.0, True),
    ("momentum", 0.0, False),
    ("warmup_epochs", 0.0, False),
    ("grad_clip", 0.0, False),
    ("l1", 0.0, False),
    ("l1_prox", 0.0, False),
    ("l2", 0.0, False),
    ("weight_decay", 0.0, False),
    ("imbalance_factor", 1.0, False),
    ("device_data_limit_mb", 0.0, True),
    ("checkpoint.keep", 1, False),
    ("early_stopping.patience", 0, False),
    ("early_stopping.min_delta", 0.0, False),
    ("early_stopping.warmup_epochs", 0, False),
    ("finetune_last", 1, False),
    ("code_size", 1, False),
    ("head_warmup_epochs", 0, False),
    ("devices", 0, False),
    ("distributed.num_processes", 0, False),
    ("distributed.process_id", -1, False),
)
# Fields in [0, 1).
_UNIT = ("dropout", "bn_momentum", "label_smoothing", "ema_decay", "synthetic_ratio")


def _get(config: ConfigDict, key: str) -> Any:
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def _walk(node: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    items = node.items() if isinstance(node, (ConfigDict, Mapping)) else ()
    for k, v in items:
        key = f"{prefix}{k}"
        if isinstance(v, (ConfigDict, Mapping)):
            yield from _walk(v, key + ".")
        elif isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                yield f"{key}[{i}]", x
        else:
            yield key, v


def check_finite(config: ConfigDict) -> None:
    """Raises `ValueError` naming the first field (nested ones too) that holds NaN or +-inf.

    A learning rate of `1e400` parses as `inf`; no field of a training config means anything
    when it is not finite.
    """
    for key, value in _walk(config):
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            if not math.isfinite(float(value)):
                raise ValueError(f"config key {key!r} must be a finite number, got {value!r}")


def validate_config(config: ConfigDict) -> None:
    """Checks a whole training config before anything trains, deletes or writes.

    Every value is checked: finite numbers, ranges, the names of the monitor, loop, optimizer,
    schedule, decay mask, model and data set (its name only; the files are read later), and
    the augmentation and mixing spec strings, which are parsed and built here.

    Args:
      config: a `default_config()`-shaped `ConfigDict`.

    Raises:
      ValueError: a value out of its range or not among the allowed names (the message names
        the key and the allowed values).
      TypeError: a value of the wrong type.
    """
    from jaxreg import models
    from jaxreg.optim import factory

    if not isinstance(config, ConfigDict):
        raise TypeError(f"config must be an ml_collections ConfigDict, got {type(config).__name__}")
    check_finite(config)
    for key, lo, strict in _RANGES:
        value = _get(config, key)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"config key {key!r} must be a number, got {value!r}")
        if value < lo or (strict and value == lo):
            raise ValueError(
                f"config key {key!r} must be {'>' if strict else '>='} {lo}, got {value}"
            )
    for key in _UNIT:
        value = _get(config, key)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"config key {key!r} must be a number in [0, 1), got {value!r}")
        if not 0.0 <= value < 1.0:
            raise ValueError(f"config key {key!r} must be in [0, 1), got {value}")
    if config.train_per_class is not None and int(config.train_per_class) < 1:
        raise ValueError(
            f"config key 'train_per_class' must be >= 1 or None, got {config.train_per_class}"
        )
    if config.task not in TASKS:
        raise ValueError(f"config key 'task' must be one of {list(TASKS)}, got {config.task!r}")
    choices = (
        ("monitor", MONITORS[config.task]),
        ("smoothing_kind", ("uniform", "wrong_classes")),
        ("reconstruction_loss", ("mse", "bce")),
        ("finetune", ("full", "linear_probe", "last", "layerwise")),
        ("upsample", ("deconv", "unpool", "resize")),
        ("monitor_mode", ("min", "max")),
        ("ema_batch_stats", EMA_BATCH_STATS),
        ("loop", LOOPS),
        ("optimizer", factory.OPTIMIZERS),
        ("schedule", factory.SCHEDULES),
        ("decay_mask", factory.DECAY_MASKS),
        ("model", tuple(models.MODELS)),
    )
    for key, allowed in choices:
        if _get(config, key) not in allowed:
            raise ValueError(
                f"config key {key!r} must be one of {list(allowed)}, got {_get(config, key)!r}"
            )
    if not 0.0 < float(config.layerwise_decay) <= 1.0:
        raise ValueError(
            f"config key 'layerwise_decay' must be in (0, 1], got {config.layerwise_decay}"
        )
    if not isinstance(config.distributed.coordinator, str):
        raise TypeError(
            "config key 'distributed.coordinator' must be '', 'auto' or 'host:port', got "
            f"{config.distributed.coordinator!r}"
        )
    _check_init_from(config.init_from)
    if not isinstance(config.init_head, bool):
        raise TypeError(f"config key 'init_head' must be true or false, got {config.init_head!r}")
    _check_synthetic(config)
    _check_data_name(config.data)
    _check_spec("augment", config.augment)
    _check_spec("mix", config.mix)
    _check_spec("corrupt", config.corrupt)


def _check_init_from(path: Any) -> None:
    from pathlib import Path

    if not isinstance(path, str):
        raise TypeError(f"config key 'init_from' must be a workdir path or '', got {path!r}")
    if path and not (Path(path) / "checkpoints" / "best").is_dir():
        raise ValueError(
            f"config key 'init_from': {path!r} is not a train_and_evaluate workdir with "
            "checkpoints/best (train the source run first)"
        )


def _check_synthetic(config: ConfigDict) -> None:
    from pathlib import Path

    path, ratio = config.synthetic, float(config.synthetic_ratio)
    if not isinstance(path, str):
        raise TypeError(f"config key 'synthetic' must be an .npz path or '', got {path!r}")
    if path and not Path(path).is_file():
        raise ValueError(f"config key 'synthetic': {path!r} is not a file")
    if ratio > 0:
        n = math.floor(ratio * int(config.batch_size) + 0.5)
        if not 1 <= n < int(config.batch_size):
            raise ValueError(
                f"config key 'synthetic_ratio': {ratio} of batch_size {config.batch_size} gives "
                f"{n} synthetic examples per batch; it must give at least 1 and leave at least "
                "1 real example"
            )
    if path and ratio == 0:
        raise ValueError(
            "config key 'synthetic' names a pool but 'synthetic_ratio' is 0; set the fraction "
            "of each batch it fills"
        )


def _check_data_name(name: Any) -> None:
    from jaxreg.data.api import FOLDER_PREFIX, TFDS_PREFIX
    from jaxreg.data.builtin import BUILTIN

    if not isinstance(name, str):
        raise TypeError(f"config key 'data' must be a string, got {name!r}")
    if name in BUILTIN or (name.startswith((TFDS_PREFIX, FOLDER_PREFIX)) and name.split(":", 1)[1]):
        return
    raise ValueError(
        f"config key 'data' must be one of {sorted(BUILTIN)}, '{TFDS_PREFIX}NAME' or "
        f"'{FOLDER_PREFIX}PATH', got {name!r}"
    )


def _check_spec(key: str, spec: Any) -> None:
    if callable(spec):
        return
    if not isinstance(spec, str):
        raise TypeError(f"config key {key!r} must be a spec string, got {spec!r}")
    from jaxreg import augment

    build = augment.mix_from_spec if key == "mix" else augment.from_spec
    try:
        build(spec)
    except (ValueError, TypeError) as e:
        raise type(e)(f"config key {key!r}: {e}") from None


def config_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The fields that differ between two config dicts, as `"key: old -> new"` lines.

    Args:
      saved: the config a workdir's checkpoints were written with (a plain dict).
      current: the config of this run (a plain dict).

    Returns:
      One line per changed, added or removed key (nested keys dotted), sorted by key.
    """
    old, new = dict(_walk(saved)), dict(_walk(current))
    missing = object()
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, missing), new.get(key, missing)
        if a != b:
            fa = "(absent)" if a is missing else json.dumps(a, default=str)
            fb = "(absent)" if b is missing else json.dumps(b, default=str)
            out.append(f"{key}: {fa} -> {fb}")
    return out
