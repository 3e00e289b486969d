"""The training configuration (ml_collections) and command-line style overrides of it."""

from __future__ import annotations

import ast
from collections.abc import Iterable
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
    # data
    c.data = "mnist5k"
    c.data_dir = placeholder(str)
    c.data_seed = 0  # which examples a subset keeps
    c.train_per_class = placeholder(int)  # None: the whole training split
    c.imbalance_factor = 1.0  # > 1: long-tailed class sizes, largest / smallest class
    c.balanced_sampling = False  # draw batches with class-balanced weights
    # model
    c.model = "cnn"
    c.batch_norm = False
    c.dropout = 0.0
    c.bn_momentum = 0.9
    c.conv_grad = "auto"
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
    c.ema_decay = 0.0  # > 0: evaluate an exponential moving average of the weights
    c.ema_warmup = True
    c.ema_batch_stats = "recompute"  # "average" | "copy" | "recompute"
    c.early_stopping = ConfigDict({"patience": 0, "min_delta": 0.0, "warmup_epochs": 0})
    # augmentation (spec strings of jaxreg.augment)
    c.augment = ""
    c.mix = ""
    # model selection: the best epoch by this validation metric is restored at the end
    c.monitor = "val_loss"
    c.monitor_mode = "min"
    c.restore_best = True
    # run control
    c.loop = "auto"  # "scan": one lax.scan per epoch on device; "python": host-fed batches
    c.device_data_limit_mb = 1024.0  # "auto" scans when the training images fit in this
    c.eval_batch_size = 1000
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
