"""train_and_evaluate(config, workdir, model=..., task=...): the training loop, top to bottom.

Per epoch: one compiled `lax.scan` over the device-resident training set (or host-fed batches
through the same jitted step when the set is too large), then evaluation on the validation
split, one line in `metrics.jsonl`, early stopping and checkpoints. At the end the best epoch
is restored and evaluated on validation and test, and the report is written.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from ml_collections import ConfigDict
from tqdm.auto import tqdm

from jaxreg import _cpu
from jaxreg import data as data_lib
from jaxreg.data.stream import image_shape
from jaxreg.optim.ema import param_ema, recompute_batch_stats
from jaxreg.optim.factory import build_optimizer
from jaxreg.train import parallel
from jaxreg.train import step as step_lib
from jaxreg.train import tasks as tasks_lib
from jaxreg.train import workdir as workdir_lib
from jaxreg.train.config import LOOPS, config_changes, validate_config
from jaxreg.train.early_stopping import EarlyStopping
from jaxreg.train.state import TrainState

__all__ = [
    "NonFiniteLossError",
    "load_pool",
    "make_task",
    "prepare_data",
    "synthetic_count",
    "train_and_evaluate",
]


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the run stopped without evaluating anything.

    The workdir keeps the checkpoints of the last good epoch (if any).

    Attributes:
      workdir: the run's folder.
      epoch: the epoch in which the loss stopped being finite (1-based).
      step: the global optimizer step (1-based) of the first non-finite loss.
      value: that loss.
      last_good_epoch: the newest epoch with a checkpoint, or None when none was saved.
    """

    def __init__(self, workdir, epoch, step, value, last_good_epoch):
        self.workdir, self.epoch, self.step = str(workdir), int(epoch), int(step)
        self.value, self.last_good_epoch = float(value), last_good_epoch
        kept = (
            f"the checkpoint of epoch {last_good_epoch} is kept in {workdir}"
            if last_good_epoch is not None
            else "no checkpoint was saved"
        )
        super().__init__(
            f"training diverged: non-finite loss ({self.value}) at step {self.step} "
            f"(epoch {self.epoch}); nothing was evaluated and {kept}. Lower the learning rate "
            "or add gradient clipping (--config.grad_clip)."
        )


# ----------------------------------------------------------------------------- building blocks


def prepare_data(config: ConfigDict) -> dict[str, data_lib.Dataset]:
    """Loads `config.data` and applies the training-set options (subset, imbalance).

    Only the training split is subsampled or made imbalanced; val and test stay whole. With
    `config.loop="stream"`, an image folder's or a TFDS set's training split is not loaded: it
    is a lazy source (`jaxreg.data.stream.open_source`) read a batch at a time.
    """
    if config.loop == "stream" and str(config.data).startswith(("folder:", "tfds:")):
        if config.train_per_class is not None or config.imbalance_factor != 1.0:
            raise ValueError(
                "config keys 'train_per_class' and 'imbalance_factor' select from the training "
                "set in memory; with loop 'stream' over a folder or TFDS set leave them unset"
            )
        from jaxreg.data.stream import open_source

        evals = data_lib.load_splits(config.data, splits=("val", "test"), data_dir=config.data_dir)
        train = open_source(config.data, split="train", data_dir=config.data_dir)
        return {"train": train, **evals}
    splits = data_lib.load_splits(config.data, data_dir=config.data_dir)
    train = splits["train"]
    if config.train_per_class is not None:
        train = data_lib.stratified_subset(
            train, int(config.train_per_class), seed=config.data_seed
        )
    if config.imbalance_factor != 1.0:
        ratios = data_lib.long_tail_ratios(train.num_classes, float(config.imbalance_factor))
        train = data_lib.imbalance(train, ratios, seed=config.data_seed)
    return {"train": train, "val": splits["val"], "test": splits["test"]}


def load_pool(path: str | os.PathLike, like: data_lib.Dataset) -> data_lib.Dataset:
    """A synthetic pool from an `.npz` file (`images` (N, H, W, C) in [0, 1], `labels` (N,)).

    E.g. written by `jaxreg gan sample --npz`; the pool takes `like`'s classes (its labels must
    be among them) and must have its image shape.

    Raises:
      FileNotFoundError: no such file.
      ValueError: missing arrays, another image shape, or labels out of range.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"synthetic pool {path} does not exist")
    with np.load(path) as z:
        if "images" not in z.files or "labels" not in z.files:
            raise ValueError(f"{path} must hold arrays 'images' and 'labels', has {z.files}")
        images, labels = z["images"], z["labels"]
    pool = data_lib.Dataset(
        data_lib.to_float_image(images),
        np.asarray(labels, np.int32),
        like.num_classes,
        like.class_names,
        f"synthetic:{path.name}",
    )
    check_pool(pool, like)
    return pool


def check_pool(pool: data_lib.Dataset, train: data_lib.Dataset) -> None:
    """Raises `ValueError` unless `pool` can be mixed into `train`'s batches."""
    if pool.images.shape[1:] != image_shape(train):
        raise ValueError(
            f"the synthetic pool's images are {pool.images.shape[1:]}, the training images "
            f"{image_shape(train)}"
        )
    if pool.num_classes != train.num_classes or len(pool) == 0:
        raise ValueError(
            f"the synthetic pool must be non-empty with the training set's {train.num_classes} "
            f"classes, got {len(pool)} examples of {pool.num_classes} classes"
        )


def resolve_augment(spec: str | Callable | None) -> Callable | None:
    """A batched augmentation `(key, images) -> images` from a spec string or a per-example fn."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "none")):
        return None
    from jaxreg import augment as aug  # deferred: the augment package is large

    fn = aug.from_spec(spec) if isinstance(spec, str) else spec
    return aug.batch(fn)


def resolve_mix(spec: str | Callable | None) -> Callable | None:
    """Batch mixing `(key, images, soft_labels) -> (images, soft_labels)` from a spec or fn."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "none")):
        return None
    if callable(spec):
        return spec
    from jaxreg import augment as aug

    return aug.mix_from_spec(spec)


def make_task(
    config: ConfigDict,
    num_classes: int,
    *,
    augment_fn: Callable | None = None,
    mix_fn: Callable | None = None,
) -> Any:
    """The built-in task `config.task` names, with its augmentation from the config.

    Args:
      config: a training config.
      num_classes: K of the training data.
      augment_fn: per-example `fn(key, image) -> image` replacing `config.augment`.
      mix_fn: batch mixing replacing `config.mix` (classification only).

    Returns:
      A `jaxreg.train.tasks.Classification` or `Reconstruction`.
    """
    augment = resolve_augment(augment_fn if augment_fn is not None else config.augment)
    if config.task == "reconstruction":
        return tasks_lib.Reconstruction(
            loss_kind=config.reconstruction_loss,
            augment=augment,
            corrupt=resolve_augment(config.corrupt),
        )
    return tasks_lib.Classification(
        num_classes=num_classes,
        augment=augment,
        mix=resolve_mix(mix_fn if mix_fn is not None else config.mix),
        label_smoothing=float(config.label_smoothing),
        smoothing_kind=config.smoothing_kind,
    )


def build_model(config: ConfigDict, model: Any, num_classes: int, input_shape) -> nnx.Module:
    """The model to train: `model` (a module or a factory `rngs -> module`) or `config.model`."""
    from jaxreg import models as models_lib

    if model is None:
        return models_lib.create(
            config.model,
            num_classes=num_classes,
            input_shape=input_shape,
            seed=int(config.seed),
            **models_lib.config_kwargs(config),
        )
    if isinstance(model, nnx.Module):
        return model
    if callable(model):
        built = model(nnx.Rngs(int(config.seed)))
        if not isinstance(built, nnx.Module):
            raise TypeError(
                f"model factory must return a flax.nnx.Module, got {type(built).__name__}"
            )
        return built
    raise TypeError(
        f"model must be a flax.nnx.Module or a factory rngs -> Module, got {type(model).__name__}"
    )


def _optimizer(config: ConfigDict, total_steps: int, use_ema: bool, net, groups, steps_per_epoch):
    """The Optax chain of the config, per fine-tuning strategy when there is one, then the EMA."""
    tx, schedule = build_optimizer(config, total_steps=total_steps)
    warm = int(config.head_warmup_epochs) * steps_per_epoch
    if config.finetune != "full" or warm > 0:
        from jaxreg import transfer

        tx = transfer.strategy_tx(
            lambda: build_optimizer(config, total_steps=total_steps)[0],
            nnx.state(net, nnx.Param),
            groups,
            config.finetune,
            last=int(config.finetune_last),
            decay=float(config.layerwise_decay),
            head_warmup_steps=warm,
        )
    if use_ema:
        tx = optax.chain(tx, param_ema(float(config.ema_decay), warmup=bool(config.ema_warmup)))
    return tx, schedule


def _config_fingerprint(config: ConfigDict) -> str:
    d = config.to_dict()
    for k in ("progress", "resume", "checkpoint", "restore_best", "devices", "distributed"):
        d.pop(k, None)  # how a run is executed, not what it computes (devices: within rounding)
    d["epochs"] = None  # a resumed run may train for longer
    return json.dumps(d, sort_keys=True, default=str)


def _check_same_config(workdir: Path, saved: str | None, current: str) -> None:
    """Refuses to resume checkpoints written with another config, naming what changed."""
    if saved == current:
        return
    try:
        changes = config_changes(json.loads(saved), json.loads(current)) if saved else []
    except ValueError:
        changes = []
    shown = "; ".join(changes[:8]) + (" ..." if len(changes) > 8 else "")
    raise ValueError(
        f"workdir {workdir} holds checkpoints of a different config"
        + (f" (changed: {shown})" if shown else "")
        + "; use another workdir, or --fresh to start over"
    )


def state_tree(state: TrainState) -> dict[str, Any]:
    """What a checkpoint holds, keyed by name.

    `params/...`, `batch_stats/...`, `opt_state/...`, `ema/params/...` and
    `ema/batch_stats/...` (when an EMA is kept), `rngs/...`, `other/...`, `step`, `key`.
    """
    from jaxreg.train.checkpoint import to_named

    tree = {
        "params": state.params,
        "batch_stats": state.batch_stats,
        "rngs": state.rngs,
        "other": state.other,
        "opt_state": state.opt_state,
        "step": state.step,
        "key": state.key,
    }
    if _has_ema(state):
        tree["ema"] = {"params": state.variables(use_ema=True)[0]}
        if state.ema_batch_stats is not None:
            tree["ema"]["batch_stats"] = state.ema_batch_stats
    return to_named(tree)


def _has_ema_tx(tx: optax.GradientTransformation, net) -> bool:
    from jaxreg.optim.ema import ParamEmaState

    st = jax.eval_shape(tx.init, nnx.state(net, nnx.Param))
    leaves = jax.tree.leaves(st, is_leaf=lambda x: isinstance(x, ParamEmaState))
    return any(isinstance(x, ParamEmaState) for x in leaves)


def _has_ema(state: TrainState) -> bool:
    from jaxreg.optim.ema import ParamEmaState

    leaves = jax.tree.leaves(state.opt_state, is_leaf=lambda x: isinstance(x, ParamEmaState))
    return any(isinstance(x, ParamEmaState) for x in leaves)


def _tree_to_state(named: Mapping[str, Any], like: TrainState) -> TrainState:
    from jaxreg.train.checkpoint import from_named

    return like.replace(
        params=from_named(named["params"], like.params) if "params" in named else like.params,
        batch_stats=from_named(named.get("batch_stats", {}), like.batch_stats),
        rngs=from_named(named.get("rngs", {}), like.rngs),
        other=from_named(named.get("other", {}), like.other),
        opt_state=from_named(named.get("opt_state", {}), like.opt_state),
        ema_batch_stats=None
        if like.ema_batch_stats is None
        else from_named(named["ema"]["batch_stats"], like.ema_batch_stats),
        step=jnp.asarray(named["step"], jnp.int32),
        key=named["key"],
    )


def _write_jsonl(path: Path, records: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- the run


@dataclasses.dataclass
class _Loop:
    """What the epochs change: the state, the best state, early stopping, the history."""

    state: TrainState
    best_state: TrainState
    es: EarlyStopping
    history: list[dict]
    start_epoch: int = 1
    wall: float = 0.0


def train_and_evaluate(
    config: ConfigDict,
    workdir: str | os.PathLike,
    *,
    model: Any = None,
    task: Any = None,
    data: Mapping[str, data_lib.Dataset] | None = None,
    augment_fn: Callable | None = None,
    mix_fn: Callable | None = None,
    extra_eval: Mapping[str, data_lib.Dataset] | None = None,
    title: str | None = None,
    groups: Any = None,
    optimizer: Callable[[Any], optax.GradientTransformation] | None = None,
) -> dict[str, Any]:
    """Trains a model on a task as `config` says and evaluates it; resumable after a crash.

    Any Flax NNX model trains here: pass `model` (an `nnx.Module`, or a factory
    `rngs -> nnx.Module` called with `nnx.Rngs(config.seed)`), written the stock NNX way
    (`nnx.Dropout`/`nnx.BatchNorm` with their own `Rngs` and statistics, switched by
    `model.train()`/`model.eval()`); the instance passed in is not modified. Without it,
    `config.model` names a built-in model. `task` says what a batch is and what is minimised
    (`jaxreg.train.tasks`); without it `config.task` picks classification or reconstruction.
    Randomness belongs to the run key (`config.seed`): see `jaxreg.train.state`.

    Per epoch: one compiled `lax.scan` over the device-resident training set — or, when the
    training images exceed `config.device_data_limit_mb` (or `config.loop="python"`),
    host-fed batches through the same jitted step with the same keys — then validation (on
    EMA weights when `ema_decay > 0`), a line in `workdir/metrics.jsonl` and TensorBoard
    event files in `workdir/tensorboard`, early stopping and checkpoints (latest and best,
    keyed by parameter path). At the end the best epoch by `config.monitor` is restored and
    evaluated on val and test (the test split never chooses anything), and `report.md`,
    `curves.png` and `results.json` are written.

    The same config and seed give bit-identical numbers on CPU, also across a resume. On GPU,
    XLA picks non-deterministic kernels unless `XLA_FLAGS=--xla_gpu_deterministic_ops=true`
    is set before JAX starts (the test suite sets it); without it reruns agree only to float
    rounding.

    Args:
      config: a `default_config()`-shaped `ConfigDict`.
      workdir: output folder; a folder holding checkpoints of the same config is resumed.
      model: an `nnx.Module` or a factory `rngs -> nnx.Module`; default `config.model`.
      task: a task object (`jaxreg.train.tasks.Task`); default `config.task`.
      data: optional `{"train", "val", "test"}` data sets replacing `config.data`, and
        optionally `"synthetic"`: a pool of generated examples (e.g. `jaxreg.gan.synthesize`)
        of which `config.synthetic_ratio` fills each training batch (see `default_config`).
      augment_fn: optional per-example `fn(key, image) -> image` replacing `config.augment`
        (built-in tasks only).
      mix_fn: optional `fn(key, images, soft_labels) -> (images, soft_labels)` replacing
        `config.mix` (classification only).
      extra_eval: more labelled sets evaluated at the end (e.g. corrupted test images).
      title: report title.
      groups: the model's parameter path groups, input to output, the head last
        (`jaxreg.transfer.param_groups`), for fine-tuning strategies (`config.finetune`) of a
        model of your own; built-in models declare theirs.
      optimizer: `optimizer(params) -> optax.GradientTransformation` replacing the chain the
        config describes (e.g. `jaxreg.gan.gan_optimizer`: two Adams and an EMA of part of the
        model); a `param_ema` inside it is evaluated as `config.ema_decay` would be.

    Returns:
      dict of results: `val_*`/`test_*` for each of the task's metrics on the restored model,
      `best_epoch`, `evaluated_epoch`, `epochs_run`, `stopped_early`, `stop_reason`,
      `wall_time_s`, `compile_time_s`, `train_images_per_s`, `loop` (the epoch that ran:
      "scan", "python" or "stream"), `cpu_paths` (which XLA:CPU
      paths ran, `jaxreg._cpu.status()`), `history` (per-epoch dicts),
      `extra` results per `extra_eval` set, `state` (the evaluated `TrainState`) and `model`
      (an `nnx.Module` holding the evaluated weights, in eval mode).

    Raises:
      ValueError, TypeError: a bad config value or argument (checked before anything is
        written), or a workdir whose checkpoints were written with another config (the
        changed keys named) or by an older jaxreg.
      WorkdirBusyError: another process is running in `workdir`.
      NonFiniteLossError: the loss became NaN or infinite; nothing is evaluated.
      CheckpointError: the recorded best epoch cannot be restored on resume.
    """
    validate_config(config)
    dist = config.distributed
    parallel.initialize(
        dist.coordinator, num_processes=int(dist.num_processes), process_id=int(dist.process_id)
    )
    splits = dict(data) if data is not None else prepare_data(config)
    for name in ("train", "val", "test"):
        if name not in splits:
            raise ValueError(f"data must have 'train', 'val' and 'test', missing {name!r}")
    train = splits["train"]
    if not isinstance(train, data_lib.Dataset):  # a source (jaxreg.data.stream), read lazily
        _check_source(config, train)
    if config.synthetic and "synthetic" not in splits:  # data["synthetic"] wins over the path
        splits["synthetic"] = load_pool(config.synthetic, train)
    synthetic_batch = _synthetic_batch(config, splits)
    if task is None:
        task = make_task(config, train.num_classes, augment_fn=augment_fn, mix_fn=mix_fn)
    elif augment_fn is not None or mix_fn is not None:
        raise ValueError(
            "augment_fn and mix_fn configure the built-in tasks; a task of your own "
            "applies its own augmentation"
        )
    monitors = tuple(f"val_{m}" for m in task.metrics)
    if config.monitor not in monitors:
        raise ValueError(
            f"config key 'monitor' must be one of {list(monitors)} for this task, "
            f"got {config.monitor!r}"
        )
    steps_per_epoch = len(train) // (int(config.batch_size) - synthetic_batch)
    if steps_per_epoch < 1:
        raise ValueError(
            f"batch_size {config.batch_size} is larger than the training set ({len(train)} examples)"
            + (f" with {synthetic_batch} synthetic examples per batch" if synthetic_batch else "")
        )
    parallel.check_batch_size(int(config.batch_size), config.devices)
    net = build_model(config, model, train.num_classes, image_shape(train))
    transfer_groups = None
    new_head = bool(config.init_from) and not config.init_head
    if config.finetune != "full" or int(config.head_warmup_epochs) > 0 or new_head:
        from jaxreg import transfer

        transfer_groups = transfer.param_groups(net, groups)
    with _workdir_lock(workdir) as workdir:
        return _run(
            config, workdir, net, task, splits, extra_eval or {}, title, steps_per_epoch,
            transfer_groups, optimizer,
        )  # fmt: skip


def _check_source(config: ConfigDict, source: Any) -> None:
    """Raises unless a lazily read training source can be trained on as `config` asks."""
    if config.loop != "stream":
        raise ValueError(
            "a training source read lazily (jaxreg.data.stream) needs config.loop='stream', "
            f"got {config.loop!r}"
        )
    if not hasattr(source, "num_classes") or not hasattr(source, "__getitem__"):
        raise TypeError(
            "data['train'] must be a jaxreg.data.Dataset or a source with len(), "
            "source[i] -> (image, label) and num_classes (jaxreg.data.stream)"
        )
    if config.balanced_sampling and getattr(source, "labels", None) is None:
        raise ValueError(
            "config.balanced_sampling needs the training labels, which this source does not "
            "list (FolderSource and ArraySource do)"
        )


def _workdir_lock(workdir):
    """The workdir's lock in process 0; the other processes wait until process 0 holds it."""
    if jax.process_count() == 1:
        return workdir_lib.lock(workdir)
    return parallel.main_process_lock(workdir, workdir_lib.lock)


def _synthetic_batch(config: ConfigDict, splits: Mapping[str, data_lib.Dataset]) -> int:
    """Synthetic examples per batch: `round(synthetic_ratio * batch_size)`, the pool checked."""
    ratio, pool = float(config.synthetic_ratio), splits.get("synthetic")
    if ratio == 0.0:
        if pool is not None:
            raise ValueError(
                "a synthetic pool was given (data['synthetic'] or config.synthetic) but "
                "config.synthetic_ratio is 0; set the fraction of each batch it fills"
            )
        return 0
    if pool is None:
        raise ValueError(
            f"config.synthetic_ratio={ratio} needs a synthetic pool: data['synthetic'] or "
            "config.synthetic (an .npz of images and labels)"
        )
    if config.loop == "stream":
        raise ValueError(
            "config.synthetic_ratio > 0 needs config.loop 'auto', 'scan' or 'python': the "
            "streamed epoch reads only the training source"
        )
    check_pool(pool, splits["train"])
    return synthetic_count(ratio, int(config.batch_size))


def synthetic_count(ratio: float, batch_size: int) -> int:
    """`round(ratio * batch_size)`: the synthetic examples in each batch (ties round half up)."""
    return math.floor(float(ratio) * int(batch_size) + 0.5)


def _run(config, workdir, net, task, splits, extra_eval, title, steps_per_epoch, groups, optimizer):
    train, val, test = splits["train"], splits["val"], splits["test"]
    mesh = parallel.make_mesh(config.devices)
    devices = parallel.describe(mesh, int(config.batch_size))
    main = parallel.is_main_process()
    if main:
        print(
            f"Devices: {devices['devices']} {devices['platform']} device(s) in "
            f"{devices['processes']} process(es) (config key 'devices'={config.devices}); "
            f"batch {config.batch_size} = {devices['per_device_batch']} per device."
        )
    pool = splits.get("synthetic") if float(config.synthetic_ratio) > 0 else None
    synthetic_batch = synthetic_count(config.synthetic_ratio, config.batch_size) if pool else 0
    use_ema = config.ema_decay > 0
    train_mode = None
    if config.init_from:
        from jaxreg import transfer

        if not (workdir / "checkpoints").exists():  # a resumed run has its own weights
            report = transfer.load(
                net, config.init_from, fresh_head=True, new_head=not config.init_head, groups=groups
            )
            print(f"Initialised from {config.init_from}: {transfer.describe(report)}")
    if groups is not None:
        from jaxreg import transfer

        frozen = transfer.frozen_prefixes(groups, config.finetune, last=int(config.finetune_last))
        train_mode = lambda m: transfer.freeze_batch_norm(m, frozen)
    if optimizer is not None:
        tx = optimizer(nnx.state(net, nnx.Param))
        schedule = optax.constant_schedule(float(config.learning_rate))
        use_ema = use_ema or _has_ema_tx(tx, net)
    else:
        tx, schedule = _optimizer(
            config, steps_per_epoch * int(config.epochs), use_ema, net, groups, steps_per_epoch
        )
    state = TrainState.create(
        net,
        tx,
        key=jax.random.key(int(config.seed)),
        ema_batch_stats=use_ema,
        train_mode=train_mode,
    )
    state = parallel.replicate(state, mesh)
    recompute = state.ema_batch_stats is not None and config.ema_batch_stats == "recompute"
    ema = None
    if state.ema_batch_stats is not None and not recompute:
        ema = step_lib.EmaStats(
            float(config.ema_decay), bool(config.ema_warmup), config.ema_batch_stats
        )
    lazy = not isinstance(train, data_lib.Dataset)
    kind = "stream" if lazy else _loop_kind(config, train.images.nbytes)
    if kind == "scan":  # data parallel: the data replicated on every device, batches split
        epoch_fn = step_lib.make_train_epoch(
            batch_size=int(config.batch_size),
            task=task,
            ema=ema,
            synthetic_batch=synthetic_batch,
            batch_sharding=parallel.batch_sharding(mesh),
        )
        x_train, y_train = parallel.replicate((train.images, train.labels.astype(np.int32)), mesh)
    elif kind == "stream":  # read through grain a batch at a time, same permutation and keys
        from jaxreg.data.stream import ArraySource
        from jaxreg.train.streaming import make_stream_epoch

        epoch_fn = make_stream_epoch(
            source=train if lazy else ArraySource(train),
            batch_size=int(config.batch_size),
            task=task,
            mesh=mesh,
            ema=ema,
        )
        x_train = y_train = None
    else:  # data too large for the device: host batches through the same jitted step
        epoch_fn = step_lib.make_host_epoch(
            batch_size=int(config.batch_size),
            task=task,
            ema=ema,
            synthetic_batch=synthetic_batch,
            load_batch=parallel.batch_loader(mesh),
        )
        x_train, y_train = train.images, train.labels.astype(np.int32)
    epoch_fn = parallel.on_mesh(epoch_fn, mesh)  # the state replicated on every device
    synthetic = None
    if pool is not None:
        synthetic = (pool.images, pool.labels.astype(np.int32))
        if kind == "scan":
            synthetic = parallel.replicate(synthetic, mesh)
    weights = None
    if config.balanced_sampling:
        weights = parallel.replicate(
            data_lib.class_balanced_weights(train.labels, train.num_classes).astype(np.float32),
            mesh,
        )

    def refresh(st: TrainState) -> TrainState:
        """After an epoch: BatchNorm statistics re-estimated for the EMA weights, if asked."""
        if not recompute:
            return st
        stats = _recompute_ema_stats(
            parallel.local_copy(st),
            _first_images(train, 8 * int(config.batch_size)),
            int(config.batch_size),
            config.bn_momentum,
        ).ema_batch_stats
        return st.replace(ema_batch_stats=parallel.replicate(stats, mesh))

    def evaluate(st: TrainState, ds: data_lib.Dataset) -> dict[str, float]:
        """The task's metrics on `ds`, with the weights this run evaluates (EMA or live).

        Every process evaluates the whole split on one device of its own (same numbers).
        """
        return step_lib.evaluate(
            parallel.local_copy(st),
            task,
            ds.images,
            ds.labels,
            batch_size=int(config.eval_batch_size),
            use_ema=use_ema,
        )

    from jaxreg.train.checkpoint import Checkpointer  # deferred: the orbax import is slow

    ckpt = None
    if config.checkpoint.enabled:
        ckpt = Checkpointer(
            workdir / "checkpoints",
            keep_latest=int(config.checkpoint.keep),
            best_metric=config.monitor,
            best_mode=config.monitor_mode,
        )
    loop = _Loop(
        state=state,
        best_state=state,
        es=EarlyStopping(
            patience=int(config.early_stopping.patience) or 10**9,
            min_delta=float(config.early_stopping.min_delta),
            mode=config.monitor_mode,
            warmup_epochs=int(config.early_stopping.warmup_epochs),
        ),
        history=[],
    )
    fingerprint = _config_fingerprint(config)
    writer = _TensorBoard(workdir / "tensorboard" if main else None)
    try:
        if ckpt is not None and config.resume:
            _resume(ckpt, loop, config, workdir, fingerprint)
        if main:  # on several hosts only process 0 writes the workdir's files
            _write_jsonl(workdir / "metrics.jsonl", loop.history)
            (workdir / "config.json").write_text(
                json.dumps(config.to_dict(), indent=2, default=str)
            )
            _write_data_info(workdir, train)
        stop_reason, compile_s, ips = _epochs(
            config, loop, epoch_fn, (x_train, y_train, weights, synthetic), val, (refresh, evaluate), ckpt,
            fingerprint, schedule, steps_per_epoch, workdir, writer,
        )  # fmt: skip
    finally:
        writer.close()
        if ckpt is not None:
            ckpt.close()

    # ---- final evaluation of the restored (best) model
    final = loop.best_state if config.restore_best else loop.state
    results: dict[str, Any] = {}
    for split_name, ds in (("val", val), ("test", test)):
        results.update({f"{split_name}_{k}": v for k, v in evaluate(final, ds).items()})
    extra = {name: evaluate(final, ds) for name, ds in extra_eval.items()}
    best = int(loop.es.best_epoch) if loop.es.best_epoch >= 0 else None
    results.update(
        {
            "best_epoch": best,
            "evaluated_epoch": best if config.restore_best else len(loop.history),
            "evaluated_weights": "ema" if use_ema else "live",
            "epochs_run": len(loop.history),
            "stopped_early": stop_reason == "early_stopping",
            "stop_reason": stop_reason,
            "wall_time_s": loop.wall,
            "compile_time_s": compile_s,
            "train_images_per_s": ips,
            "train_size": len(train),
            "loop": kind,
            "synthetic_size": len(pool) if pool is not None else 0,
            "synthetic_per_batch": synthetic_batch,
            "zero_fraction": zero_fraction(final.params),
            "cpu_paths": _cpu.status(),
            "devices": devices,
        }
    )
    if extra:
        results["extra"] = extra
    if main:
        (workdir / "results.json").write_text(json.dumps(results, indent=2))
        title = title or f"jaxreg run: {config.data}"
        _write_report(workdir, config, loop.history, results, title)
    results["history"] = loop.history
    results["state"] = final
    results["model"] = final.model(use_ema=use_ema)
    return results


def _resume(ckpt, loop: _Loop, config, workdir: Path, fingerprint: str) -> None:
    """Continues from the newest readable checkpoint, if any (see `_restore_best_epoch`)."""
    from jaxreg.train.checkpoint import FORMAT_VERSION

    peek = ckpt.peek_latest()
    if peek is None:
        return
    version = peek[1].get("format_version", 1)
    if version != FORMAT_VERSION:
        raise ValueError(
            f"workdir {workdir} holds checkpoints in format {version} (an older jaxreg); this "
            f"jaxreg reads format {FORMAT_VERSION}. Use another workdir, or --fresh to start over"
        )
    _check_same_config(workdir, peek[1].get("fingerprint"), fingerprint)
    restored = ckpt.restore_latest(state_tree(loop.state))
    if restored is None:
        return
    tree, meta, latest_step = restored
    _check_same_config(workdir, meta.get("fingerprint"), fingerprint)
    loop.state = _tree_to_state(tree, loop.state)
    loop.history = list(meta["history"])
    loop.es = EarlyStopping(**meta["early_stopping"])
    loop.start_epoch = int(meta["epoch"]) + 1
    loop.wall = float(meta.get("wall_time_s", 0.0))
    loop.best_state = loop.state
    if config.restore_best:
        loop.best_state = _restore_best_epoch(ckpt, loop.es, loop.state, latest_step, meta, workdir)
    print(f"Resumed from {workdir} at epoch {loop.start_epoch - 1}.")


def _restore_best_epoch(ckpt, es: EarlyStopping, state, latest_step: int, meta, workdir):
    """The state of the best epoch early stopping recorded, checked; see `Checkpointer`.

    The recorded best epoch is found in `best/` or `latest/` (a kill between the two saves of
    one step leaves it in one of them). Its metadata must name that epoch. When no readable
    copy is left, this fails instead of evaluating other weights under that epoch's name.
    """
    from jaxreg.train.checkpoint import CheckpointError

    best_epoch = int(es.best_epoch)
    if best_epoch < 0:  # no epoch improved yet (e.g. NaN metrics): nothing to restore
        return state
    if best_epoch == int(latest_step):
        if latest_step not in ckpt.best_steps():  # a kill between the two saves: repair
            ckpt.save_best(latest_step, state_tree(state), meta)
        return state
    found = ckpt.restore_step(best_epoch, state_tree(state))
    if found is not None:
        tree, best_meta, where = found
        if int(best_meta.get("epoch", -1)) == best_epoch:
            if where != "best" or ckpt.best_step() != best_epoch:
                warnings.warn(
                    f"the best epoch {best_epoch} of {workdir} was not the newest step of "
                    f"checkpoints/best/ (a kill between two saves); restored it from {where}/",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return _tree_to_state(tree, state)
    raise CheckpointError(
        f"early stopping recorded epoch {best_epoch} as the best of {workdir}, but no readable "
        f"checkpoint of that epoch is left in checkpoints/best/ or checkpoints/latest/ "
        f"(latest is epoch {latest_step}). Resume with --config.restore_best=False to continue "
        "and evaluate the last epoch instead, or --fresh to start over."
    )


def _epochs(
    config, loop, epoch_fn, train_arrays, val, hooks, ckpt, fingerprint, schedule,
    steps_per_epoch, workdir, writer,
):  # fmt: skip
    """Runs the remaining epochs; returns (stop_reason, compile seconds, images per second)."""
    from jaxreg.train.checkpoint import FORMAT_VERSION

    x_train, y_train, weights, synthetic = train_arrays
    refresh, evaluate = hooks
    epochs = int(config.epochs)
    compile_s, ips_samples = None, []
    if loop.es.should_stop:
        return "early_stopping", None, None
    bar = tqdm(
        range(loop.start_epoch, epochs + 1),
        desc="train",
        unit="epoch",
        disable=not config.progress or not parallel.is_main_process(),
        initial=loop.start_epoch - 1,
        total=epochs,
    )
    stop_reason = "completed"
    for epoch in bar:
        t0 = time.perf_counter()
        new_state, step_metrics = epoch_fn(
            loop.state, x_train, y_train, jnp.int32(epoch), weights, synthetic
        )
        step_metrics = jax.device_get(step_metrics)
        dt = time.perf_counter() - t0
        if compile_s is None and epoch == loop.start_epoch:
            compile_s = dt  # first epoch: compile + run
        else:
            ips_samples.append(steps_per_epoch * int(config.batch_size) / dt)
        losses = np.asarray(step_metrics["loss"])
        if not np.all(np.isfinite(losses)):
            bad = int(np.argmax(~np.isfinite(losses)))
            bar.close()
            last_good = ckpt.latest_step() if ckpt is not None else None
            raise NonFiniteLossError(
                workdir, epoch, int(loop.state.step) + bad + 1, losses[bad], last_good
            )
        loop.state = refresh(new_state)
        val_m = evaluate(loop.state, val)
        loop.wall += time.perf_counter() - t0
        record = {"epoch": epoch}
        record.update({f"train_{k}": float(np.mean(v)) for k, v in step_metrics.items()})
        record.update({f"val_{k}": v for k, v in val_m.items()})
        record["lr"] = float(schedule(int(loop.state.step) - 1))
        record["time_s"] = round(time.perf_counter() - t0, 4)
        loop.history.append(record)
        if parallel.is_main_process():
            with open(workdir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        writer.write(epoch, record)
        loop.es = loop.es.update(record[config.monitor], epoch)
        if loop.es.has_improved:
            loop.best_state = loop.state
        if ckpt is not None:
            meta = {
                "format_version": FORMAT_VERSION,
                "epoch": epoch,
                "history": loop.history,
                "early_stopping": dataclasses.asdict(loop.es),
                "fingerprint": fingerprint,
                "wall_time_s": loop.wall,
                "metrics": {k: v for k, v in record.items() if k != "epoch"},
            }
            ckpt.save(epoch, state_tree(loop.state), meta, is_best=loop.es.has_improved)
        bar.set_postfix(loss=f"{record['train_loss']:.3f}", val=f"{record[config.monitor]:.3f}")
        if loop.es.should_stop:
            stop_reason = "early_stopping"
            bar.write(
                f"Early stopping at epoch {epoch}: best {config.monitor} "
                f"{loop.es.best_metric:.4f} at epoch {loop.es.best_epoch}"
            )
            break
    bar.close()
    ips = float(np.median(ips_samples)) if ips_samples else None
    return stop_reason, compile_s, ips


# ----------------------------------------------------------------------------- helpers


def zero_fraction(params: Any) -> float:
    """Fraction of exactly-zero entries among the decayed weights (conv/dense kernels)."""
    from jaxreg.optim.decay import decay_mask

    mask = jax.tree.leaves(decay_mask(params))
    leaves = jax.tree.leaves(params)
    zeros = sum(int(jnp.sum(p == 0)) for p, m in zip(leaves, mask) if m)
    total = sum(int(p.size) for p, m in zip(leaves, mask) if m)
    return zeros / total if total else 0.0


def _loop_kind(config: ConfigDict, train_bytes: int) -> str:
    """Which loop runs: "scan" when the training set fits the device budget, else "python"."""
    if config.loop not in LOOPS:
        raise ValueError(f"loop must be one of {LOOPS}, got {config.loop!r}")
    if config.loop != "auto":
        return config.loop
    return "scan" if train_bytes <= config.device_data_limit_mb * 2**20 else "python"


def _recompute_ema_stats(
    st: TrainState, x_train: jax.Array, batch_size: int, momentum: float
) -> TrainState:
    """BatchNorm statistics re-estimated for the EMA weights over up to 8 training batches."""
    n = min(8, x_train.shape[0] // batch_size)
    batches = [jnp.asarray(x_train[i * batch_size : (i + 1) * batch_size]) for i in range(n)]
    params = st.variables(use_ema=True)[0]
    stats = recompute_batch_stats(
        _stats_fn_for(st), params, st.batch_stats, batches, momentum=momentum
    )
    return st.replace(ema_batch_stats=stats)


def _stats_fn_for(st: TrainState) -> Callable:
    graphdef, rngs, other = st.graphdef, st.rngs, st.other

    @jax.jit
    def stats_fn(params, batch_stats, images):
        # train mode for batch statistics; dropout gets fixed keys, so this is deterministic
        model = nnx.merge(graphdef, params, batch_stats, rngs, other, copy=True)
        model(images)
        return nnx.state(model, nnx.BatchStat)

    return stats_fn


def _first_images(train: Any, n: int) -> np.ndarray:
    """Up to `n` training images in order: (n, H, W, C) float32 (a source reads only those)."""
    if isinstance(train, data_lib.Dataset):
        return train.images[:n]
    return np.stack([train[i][0] for i in range(min(n, len(train)))]).astype(np.float32)


def _write_data_info(workdir: Path, train: Any) -> None:
    """`data.json`: what `jaxreg predict` needs to read new images (shape, class names)."""
    names = getattr(train, "class_names", None) or range(train.num_classes)
    info = {
        "name": getattr(train, "name", "source"),
        "image_shape": list(image_shape(train)),
        "class_names": [str(c) for c in names],
    }
    (workdir / "data.json").write_text(json.dumps(info, indent=2))


class _TensorBoard:
    """Scalars per epoch as TensorBoard event files (`tensorboardX`: no TensorFlow needed)."""

    def __init__(self, logdir: Path | None):
        if logdir is None:  # not process 0: writes nothing
            self._w = None
            return
        try:
            from tensorboardX import SummaryWriter
        except ImportError:  # optional: metrics.jsonl has the same numbers
            self._w = None
            return
        self._w = SummaryWriter(str(logdir), flush_secs=30)

    def write(self, epoch: int, record: Mapping[str, Any]) -> None:
        if self._w is None:
            return
        for k, v in record.items():
            if k != "epoch" and isinstance(v, (int, float)) and np.isfinite(v):
                group = k.split("_", 1)[0] if "_" in k else "misc"
                self._w.add_scalar(f"{group}/{k}", float(v), epoch)

    def close(self) -> None:
        if self._w is not None:
            self._w.close()


def _write_report(
    workdir: Path, config: ConfigDict, history: list[dict], results: dict, title: str
) -> None:
    from jaxreg import report

    hidden = ("history", "state", "extra", "model", "cpu_paths", "devices")
    shown = {k: v for k, v in results.items() if k not in hidden}
    for name, m in results.get("extra", {}).items():
        for k, v in m.items():
            shown[f"{name}_{k}"] = v
    notes = []
    if results.get("best_epoch"):
        notes.append(f"Restored the best epoch by {config.monitor}: {results['best_epoch']}.")
    if "cpu_paths" in results:
        notes.append(_cpu.summary(results["cpu_paths"]))
    if "devices" in results:
        d = results["devices"]
        notes.append(
            f"Data parallel over {d['devices']} {d['platform']} device(s) in {d['processes']} "
            f"process(es), {d['per_device_batch']} examples per device per step."
        )
    if history:
        report.write_run_report(
            workdir,
            title=title,
            config=config.to_dict(),
            history=history,
            results=shown,
            notes=notes,
        )
