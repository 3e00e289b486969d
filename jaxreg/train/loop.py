"""train_and_evaluate(config, workdir): epochs, evaluation, early stopping, checkpoints, report."""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict
from tqdm.auto import tqdm

from jaxreg import _cpu
from jaxreg import data as data_lib
from jaxreg import models as models_lib
from jaxreg.optim.ema import ema as make_ema
from jaxreg.optim.ema import recompute_batch_stats
from jaxreg.optim.factory import build_optimizer
from jaxreg.train import step as step_lib
from jaxreg.train import workdir as workdir_lib
from jaxreg.train.config import (
    LOOPS,
    config_changes,
    validate_config,
)
from jaxreg.train.early_stopping import EarlyStopping
from jaxreg.train.state import TrainState

__all__ = ["NonFiniteLossError", "prepare_data", "train_and_evaluate"]


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the run stopped without evaluating anything.

    The workdir keeps the checkpoints of the last good epoch (if any), so the run can be
    resumed with another config only by choosing another workdir or `--fresh`.

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


def prepare_data(config: ConfigDict) -> dict[str, data_lib.Dataset]:
    """Loads `config.data` and applies the training-set options (subset, imbalance).

    Only the training split is subsampled or made imbalanced; val and test stay whole.
    """
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


def resolve_augment(spec: str | Callable | None) -> Callable | None:
    """A batched augmentation `(key, images) -> images` from a spec string or a per-example fn."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "none")):
        return None
    from jaxreg import augment as aug  # deferred: the augment package is large

    fn = aug.from_spec(spec) if isinstance(spec, str) else spec
    return None if fn is None else aug.batch(fn)


def resolve_mix(spec: str | Callable | None) -> Callable | None:
    """Batch mixing `(key, images, soft_labels) -> (images, soft_labels)` from a spec or fn."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "none")):
        return None
    if callable(spec):
        return spec
    from jaxreg import augment as aug

    return aug.mix_from_spec(spec)


# ----------------------------------------------------------------------------- checkpoint trees


def _state_tree(state: TrainState) -> dict[str, Any]:
    """The array part of a state as a flat {path: array} dict (typed keys as raw key data)."""
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    out = {}
    for i, (_path, leaf) in enumerate(leaves):
        if jnp.issubdtype(getattr(leaf, "dtype", np.float32), jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out[f"{i:04d}"] = leaf
    return out


def _tree_to_state(tree: Mapping[str, Any], like: TrainState) -> TrainState:
    leaves, treedef = jax.tree_util.tree_flatten(like)
    new = []
    for i, ref in enumerate(leaves):
        value = tree[f"{i:04d}"]
        if jnp.issubdtype(ref.dtype, jax.dtypes.prng_key):
            value = jax.random.wrap_key_data(jnp.asarray(value), impl=jax.random.key_impl(ref))
        else:
            value = jnp.asarray(value, dtype=ref.dtype)
        new.append(value)
    return jax.tree_util.tree_unflatten(treedef, new)


# ----------------------------------------------------------------------------- main entry


def _config_fingerprint(config: ConfigDict) -> str:
    d = config.to_dict()
    for k in ("progress", "resume", "checkpoint", "restore_best"):
        d.pop(k, None)
    d["epochs"] = None  # a resumed run may train for longer
    return json.dumps(d, sort_keys=True, default=str)


# Keys older configs had that no longer change training: ignored when resuming their checkpoints.
_RETIRED_KEYS = ("conv_grad",)  # the conv backward rule, now chosen by jaxreg._cpu


def _without_retired_keys(fingerprint: str) -> str:
    try:
        d = json.loads(fingerprint)
    except ValueError:
        return fingerprint
    if not isinstance(d, dict) or not any(k in d for k in _RETIRED_KEYS):
        return fingerprint
    return json.dumps({k: v for k, v in d.items() if k not in _RETIRED_KEYS}, sort_keys=True)


def _check_same_config(workdir: Path, saved: str | None, current: str) -> None:
    """Refuses to resume checkpoints written with another config, naming what changed."""
    saved = None if saved is None else _without_retired_keys(saved)
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


def _restore_best_epoch(ckpt, es: EarlyStopping, state, latest_step: int, meta, workdir):
    """The state of the best epoch early stopping recorded, checked; see `Checkpointer`.

    The recorded best epoch is found in `best/` or `latest/` (a kill between the two saves of
    one step leaves it in one of them). Its metadata must name that epoch and the metric the
    record holds. When no readable copy is left, this fails instead of evaluating other
    weights under that epoch's name.
    """
    from jaxreg.train.checkpoint import CheckpointError

    best_epoch = int(es.best_epoch)
    if best_epoch < 0:  # no epoch improved yet (e.g. NaN metrics): nothing to restore
        return state
    if best_epoch == int(latest_step):
        if ckpt.best_step() != latest_step:  # the kill came between the two saves: repair
            ckpt.save_best(latest_step, _state_tree(state), meta)
        return state
    found = ckpt.restore_step(best_epoch, _state_tree(state))
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


def _write_jsonl(path: Path, records: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def train_and_evaluate(
    config: ConfigDict,
    workdir: str | os.PathLike,
    *,
    data: Mapping[str, data_lib.Dataset] | None = None,
    augment_fn: Callable | None = None,
    mix_fn: Callable | None = None,
    extra_eval: Mapping[str, data_lib.Dataset] | None = None,
    title: str | None = None,
) -> dict[str, Any]:
    """Trains a classifier as `config` says and evaluates it; resumable after a crash.

    Per epoch: one compiled `lax.scan` over the device-resident training set (shuffle,
    batch, augment, mix, step) — or, when the training images exceed
    `config.device_data_limit_mb` (or `config.loop="python"`), host-fed batches through
    the same jitted step with the same keys — then validation (on EMA weights when `ema_decay > 0`),
    a line in `workdir/metrics.jsonl`, early stopping and checkpoints (latest and best).
    At the end the best epoch by `config.monitor` is restored and evaluated on val and
    test (the test split is never used to choose anything), and `report.md`,
    `curves.png` and `results.json` are written.

    The same config and seed give bit-identical numbers on CPU, also across a resume. On GPU,
    XLA picks non-deterministic kernels (atomics in reductions and convolution backward) unless
    `XLA_FLAGS=--xla_gpu_deterministic_ops=true` is set before JAX starts (the test suite sets
    it); without it reruns agree only to float rounding.

    Args:
      config: a `default_config()`-shaped `ConfigDict`.
      workdir: output folder; a folder holding checkpoints of the same config is resumed.
      data: optional `{"train", "val", "test"}` data sets replacing `config.data`.
      augment_fn: optional per-example `fn(key, image) -> image` replacing `config.augment`.
      mix_fn: optional `fn(key, images, soft_labels) -> (images, soft_labels)` replacing
        `config.mix`.
      extra_eval: more labelled sets evaluated at the end (e.g. corrupted test images).
      title: report title.

    Returns:
      dict of results: `val_*`/`test_*` loss, accuracy and ECE of the restored model,
      `best_epoch`, `epochs_run`, `stopped_early`, `stop_reason`, `wall_time_s`,
      `compile_time_s`, `train_images_per_s`, `cpu_paths` (which XLA:CPU paths ran,
      `jaxreg._cpu.status()`), `history` (list of per-epoch dicts), and `extra` results per
      `extra_eval` set.

    Raises:
      ValueError, TypeError: a bad config value (checked before anything is written), or a
        workdir whose checkpoints were written with another config (the changed keys named).
      WorkdirBusyError: another process is running in `workdir`.
      NonFiniteLossError: the loss became NaN or infinite; nothing is evaluated.
    """
    validate_config(config)
    with workdir_lib.lock(workdir) as workdir:
        return _train_and_evaluate(
            config,
            workdir,
            data=data,
            augment_fn=augment_fn,
            mix_fn=mix_fn,
            extra_eval=extra_eval,
            title=title,
        )


def _train_and_evaluate(config, workdir, *, data, augment_fn, mix_fn, extra_eval, title):
    splits = dict(data) if data is not None else prepare_data(config)
    for name in ("train", "val", "test"):
        if name not in splits:
            raise ValueError(f"data must have 'train', 'val' and 'test', missing {name!r}")
    train, val, test = splits["train"], splits["val"], splits["test"]
    num_classes = train.num_classes
    steps_per_epoch = len(train) // int(config.batch_size)
    if steps_per_epoch < 1:
        raise ValueError(
            f"batch_size {config.batch_size} is larger than the training set "
            f"({len(train)} examples)"
        )

    model = models_lib.create(
        config.model,
        num_classes=num_classes,
        input_shape=train.images.shape[1:],
        seed=config.seed,
        **_model_kwargs(config),
    )
    tx, schedule = build_optimizer(config, total_steps=steps_per_epoch * int(config.epochs))
    ema_fn = None
    if config.ema_decay > 0:
        mode = "average" if config.ema_batch_stats == "recompute" else config.ema_batch_stats
        ema_fn = make_ema(float(config.ema_decay), warmup=bool(config.ema_warmup), batch_stats=mode)
    state = TrainState.create(model, tx, key=jax.random.key(config.seed), ema_fn=ema_fn)

    augment = resolve_augment(augment_fn if augment_fn is not None else config.augment)
    mix = resolve_mix(mix_fn if mix_fn is not None else config.mix)
    loop_kind = _loop_kind(config, train.images.nbytes)
    hooks = {
        "num_classes": num_classes,
        "augment": augment,
        "mix": mix,
        "label_smoothing": float(config.label_smoothing),
    }
    if loop_kind == "scan":
        epoch_fn = step_lib.make_train_epoch(batch_size=int(config.batch_size), **hooks)
        x_train = jnp.asarray(train.images)
        y_train = jnp.asarray(train.labels, jnp.int32)
    else:  # data too large for the device: host batches through the same jitted step
        epoch_fn = step_lib.make_host_epoch(batch_size=int(config.batch_size), **hooks)
        x_train, y_train = train.images, train.labels.astype(np.int32)
    weights = None
    if config.balanced_sampling:
        weights = jnp.asarray(
            data_lib.class_balanced_weights(train.labels, num_classes), jnp.float32
        )

    use_ema = ema_fn is not None
    has_bn = bool(jax.tree.leaves(state.batch_stats))

    def eval_state(st: TrainState) -> TrainState:
        if use_ema and has_bn and config.ema_batch_stats == "recompute":
            return _recompute_ema_stats(st, x_train, int(config.batch_size), config.bn_momentum)
        return st

    # ---- checkpoints and resume
    from jaxreg.train.checkpoint import Checkpointer  # deferred: orbax import is slow

    fingerprint = _config_fingerprint(config)
    ckpt = None
    if config.checkpoint.enabled:
        ckpt = Checkpointer(
            workdir / "checkpoints",
            keep_latest=int(config.checkpoint.keep),
            best_metric=config.monitor,
            best_mode=config.monitor_mode,
        )
    es = EarlyStopping(
        patience=int(config.early_stopping.patience) or 10**9,
        min_delta=float(config.early_stopping.min_delta),
        mode=config.monitor_mode,
        warmup_epochs=int(config.early_stopping.warmup_epochs),
    )
    history: list[dict] = []
    start_epoch = 1
    wall_before = 0.0
    best_state = state
    metrics_path = workdir / "metrics.jsonl"
    try:
        if ckpt is not None and config.resume:
            restored = ckpt.restore_latest(_state_tree(state))
            if restored is not None:
                tree, meta, latest_step = restored
                _check_same_config(workdir, meta.get("fingerprint"), fingerprint)
                state = _tree_to_state(tree, state)
                history = list(meta["history"])
                es = EarlyStopping(**meta["early_stopping"])
                start_epoch = int(meta["epoch"]) + 1
                wall_before = float(meta.get("wall_time_s", 0.0))
                best_state = state
                if config.restore_best:
                    best_state = _restore_best_epoch(ckpt, es, state, latest_step, meta, workdir)
                print(f"Resumed from {workdir} at epoch {start_epoch - 1}.")
        _write_jsonl(metrics_path, history)
        (workdir / "config.json").write_text(json.dumps(config.to_dict(), indent=2, default=str))

        result = _run_epochs(
            config,
            state,
            best_state,
            es,
            history,
            start_epoch,
            epoch_fn,
            x_train,
            y_train,
            weights,
            val,
            eval_state,
            use_ema,
            ckpt,
            fingerprint,
            metrics_path,
            schedule,
            steps_per_epoch,
            wall_before,
        )
    finally:
        if ckpt is not None:
            ckpt.close()
    state, best_state, es, history, stop_reason, wall, compile_s, ips = result

    # ---- final evaluation of the restored (best) model
    final = best_state if config.restore_best else state
    final_eval = eval_state(final)
    ebs = int(config.eval_batch_size)
    results: dict[str, Any] = {}
    for split_name, ds in (("val", val), ("test", test)):
        m = step_lib.evaluate(final_eval, ds.images, ds.labels, batch_size=ebs, use_ema=use_ema)
        results.update({f"{split_name}_{k}": v for k, v in m.items()})
    extra = {}
    for name, ds in (extra_eval or {}).items():
        extra[name] = step_lib.evaluate(
            final_eval, ds.images, ds.labels, batch_size=ebs, use_ema=use_ema
        )
    results.update(
        {
            "best_epoch": int(es.best_epoch) if es.best_epoch >= 0 else None,
            "epochs_run": len(history),
            "stopped_early": stop_reason == "early_stopping",
            "stop_reason": stop_reason,
            "wall_time_s": wall,
            "compile_time_s": compile_s,
            "train_images_per_s": ips,
            "train_size": len(train),
            "zero_fraction": zero_fraction(final.params),
            "cpu_paths": _cpu.status(),
        }
    )
    if extra:
        results["extra"] = extra
    (workdir / "results.json").write_text(json.dumps(results, indent=2))
    _write_report(workdir, config, history, results, title or f"jaxreg run: {config.data}")
    results["history"] = history
    results["state"] = final
    return results


def zero_fraction(params: Any) -> float:
    """Fraction of exactly-zero entries among the decayed weights (conv/dense kernels)."""
    from jaxreg.optim.decay import decay_mask

    mask = jax.tree.leaves(decay_mask(params))
    leaves = jax.tree.leaves(params)
    zeros = sum(int(jnp.sum(p == 0)) for p, m in zip(leaves, mask) if m)
    total = sum(int(p.size) for p, m in zip(leaves, mask) if m)
    return zeros / total if total else 0.0


def _loop_kind(config: ConfigDict, train_bytes: int) -> str:
    """Returns "scan" when the training set fits the device budget (or is forced), else "python"."""
    if config.loop not in LOOPS:
        raise ValueError(f"loop must be one of {LOOPS}, got {config.loop!r}")
    if config.loop != "auto":
        return config.loop
    return "scan" if train_bytes <= config.device_data_limit_mb * 2**20 else "python"


def _model_kwargs(config: ConfigDict) -> dict[str, Any]:
    kw = {
        "dropout": float(config.dropout),
        "bn_momentum": float(config.bn_momentum),
    }
    if config.model == "resnet20":
        if not config.batch_norm:
            kw["batch_norm"] = True  # ResNet always normalises
    else:
        kw["batch_norm"] = bool(config.batch_norm)
    return kw


def _recompute_ema_stats(
    st: TrainState, x_train: jax.Array, batch_size: int, momentum: float
) -> TrainState:
    """BatchNorm statistics re-estimated for the EMA weights over up to 8 training batches."""
    n = min(8, x_train.shape[0] // batch_size)
    batches = [jnp.asarray(x_train[i * batch_size : (i + 1) * batch_size]) for i in range(n)]
    stats = recompute_batch_stats(
        _stats_fn_for(st.graphdef), st.ema.ema_params, st.batch_stats, batches, momentum=momentum
    )
    return st.replace(ema=st.ema._replace(ema_batch_stats=stats))


_STATS_FNS: dict[Any, Callable] = {}


def _stats_fn_for(graphdef) -> Callable:
    if graphdef not in _STATS_FNS:

        @jax.jit
        def stats_fn(params, batch_stats, images):
            # train mode for batch statistics; a fixed dropout key keeps it deterministic
            return step_lib._apply(
                graphdef, params, batch_stats, images, train=True, dropout_key=jax.random.key(0)
            )[1]

        _STATS_FNS[graphdef] = stats_fn
    return _STATS_FNS[graphdef]


def _run_epochs(
    config,
    state,
    best_state,
    es,
    history,
    start_epoch,
    epoch_fn,
    x_train,
    y_train,
    weights,
    val,
    eval_state,
    use_ema,
    ckpt,
    fingerprint,
    metrics_path,
    schedule,
    steps_per_epoch,
    wall_before,
):
    stop_reason = "completed"
    compile_s = None
    ips_samples = []
    wall = wall_before
    epochs = int(config.epochs)
    if es.should_stop:
        stop_reason = "early_stopping"
        start_epoch = epochs + 1
    bar = tqdm(
        range(start_epoch, epochs + 1),
        desc="train",
        unit="epoch",
        disable=not config.progress,
        initial=start_epoch - 1,
        total=epochs,
    )
    for epoch in bar:
        t0 = time.perf_counter()
        new_state, step_metrics = epoch_fn(state, x_train, y_train, jnp.int32(epoch), weights)
        step_metrics = jax.device_get(step_metrics)
        dt = time.perf_counter() - t0
        if compile_s is None and epoch == start_epoch:
            compile_s = dt  # first epoch: compile + run
        else:
            ips_samples.append(steps_per_epoch * int(config.batch_size) / dt)
        losses = np.asarray(step_metrics["loss"])
        if not np.all(np.isfinite(losses)):
            bad = int(np.argmax(~np.isfinite(losses)))
            bar.close()
            last_good = ckpt.latest_step() if ckpt is not None else None
            raise NonFiniteLossError(
                metrics_path.parent, epoch, int(state.step) + bad + 1, losses[bad], last_good
            )
        state = new_state
        val_m = step_lib.evaluate(
            eval_state(state),
            val.images,
            val.labels,
            batch_size=int(config.eval_batch_size),
            use_ema=use_ema,
        )
        wall += time.perf_counter() - t0
        record = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            "train_accuracy": float(np.mean(step_metrics["accuracy"])),
            "val_loss": val_m["loss"],
            "val_accuracy": val_m["accuracy"],
            "val_ece": val_m["ece"],
            "lr": float(schedule(int(state.step) - 1)),
            "time_s": round(time.perf_counter() - t0, 4),
        }
        history.append(record)
        with open(metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        es = es.update(record[config.monitor], epoch)
        if es.has_improved:
            best_state = state
        if ckpt is not None:
            meta = {
                "epoch": epoch,
                "history": history,
                "early_stopping": dataclasses.asdict(es),
                "fingerprint": fingerprint,
                "wall_time_s": wall,
                "metrics": {k: v for k, v in record.items() if k != "epoch"},
            }
            ckpt.save(epoch, _state_tree(state), meta, is_best=es.has_improved)
        bar.set_postfix(
            loss=f"{record['train_loss']:.3f}",
            acc=f"{record['train_accuracy']:.3f}",
            val_loss=f"{record['val_loss']:.3f}",
            val_acc=f"{record['val_accuracy']:.3f}",
        )
        if es.should_stop:
            stop_reason = "early_stopping"
            bar.write(
                f"Early stopping at epoch {epoch}: best {config.monitor} "
                f"{es.best_metric:.4f} at epoch {es.best_epoch}"
            )
            break
    bar.close()
    ips = float(np.median(ips_samples)) if ips_samples else None
    return state, best_state, es, history, stop_reason, wall, compile_s, ips


def _write_report(
    workdir: Path, config: ConfigDict, history: list[dict], results: dict, title: str
) -> None:
    from jaxreg import report

    hidden = ("history", "state", "extra", "cpu_paths")
    shown = {k: v for k, v in results.items() if k not in hidden}
    for name, m in results.get("extra", {}).items():
        for k, v in m.items():
            shown[f"{name}_{k}"] = v
    notes = []
    if results.get("best_epoch"):
        notes.append(f"Restored the best epoch by {config.monitor}: {results['best_epoch']}.")
    if "cpu_paths" in results:
        notes.append(_cpu.summary(results["cpu_paths"]))
    if history:
        report.write_run_report(
            workdir,
            title=title,
            config=config.to_dict(),
            history=history,
            results=shown,
            notes=notes,
        )
