"""Epoch checkpoints on Orbax: the latest N and the best kept together, resume after a kill.

Layout on disk (`directory` is typically `workdir/checkpoints`)::

  directory/
    latest/<step>/{state/, meta/, commit_success.txt, ...}   the newest `keep_latest` steps
    best/<step>/{state/, meta/, commit_success.txt, ...}     the best step so far, and the one before

Why two Orbax `CheckpointManager`s: with `best_fn` set, Orbax's `max_to_keep` keeps the
N *best* steps and silently deletes the newest ones, so one manager cannot keep "the latest N"
and "the best" with those options. `latest/` keeps the newest `keep_latest` steps
(`LatestN`); `best/` receives a copy of a step only when that step is the best so far and
keeps its two newest steps: the newest is the best one, and the previous best survives until
the step after it is committed everywhere (see "Consistency" below). The best step is written twice
(in `latest/` too): fine for the small models this toolkit trains, and each directory stays
self-contained. No Orbax metrics files or `best_fn` are involved. (Orbax 0.12.8 could also
keep both in one manager with `preservation_policy=AnyPreservationPolicy([LatestN(n),
BestN(n=1)])`, but `BestN` ranks by the raw metric in Orbax's per-step metrics files, which
are written only when `best_fn` is set, so its best would disagree with `EarlyStopping`'s
`min_delta` and tie rules; the two directories keep the decision with the caller.)

Saving step `s` first deletes every checkpoint with a step `>= s` in both directories (with
a warning): they belong to an abandoned run, e.g. one resumed from an older step after
`restore_latest` skipped a corrupt newest step. Orbax would otherwise refuse (silently) to
save a step that is not newer than its latest one.

Which step is "best": `save(..., is_best=True/False)` lets the caller decide (pass
`early_stopping.has_improved` so the best checkpoint agrees with `EarlyStopping`'s
`min_delta` rule); with `is_best=None` (the default) the checkpointer decides: the step is
best when `metadata`'s `best_metric` is finite and strictly better (`best_mode`) than the
value stored with the current best checkpoint.

Consistency between `latest/` and `best/`: a run records its best epoch in the metadata of
every step (early stopping's record). A kill between the two saves of one step, or two
background saves that commit in either order, can leave `best/`'s newest step other than the
recorded best: one step behind (the new best reached `latest/` only) or one step ahead (the
resumed point is older). `restore_step` finds a given step in either directory, so a resumed
run asks for exactly the recorded best epoch, and keeping the previous best in `best/` makes
that step always findable after a kill. (The training loop checks the step it gets.)

Atomicity: every step is one Orbax `Composite` checkpoint holding two items, `state` (the
array pytree, `StandardSave`) and `meta` (the JSON metadata, `JsonSave`). Orbax writes a
step into `<step>.orbax-checkpoint-tmp-<time>/` and renames it to `<step>/` only after all
items and `commit_success.txt` are written, so after a SIGKILL a step is either complete or
a temporary directory that Orbax ignores (and deletes when the directory is reopened).

Corruption: restoring walks the steps from newest to oldest. A step directory without
`commit_success.txt` (written by something other than a finished Orbax save), or one whose
items fail to read (missing or truncated files, garbage bytes: Orbax's OCDBT storage checks
its data, the JSON must parse), is skipped with a `CheckpointWarning` naming the step and
the error; if no step is readable the result is `None`, also with a warning. A readable step
whose paths, shapes or dtypes differ from `target` (another model in the same workdir) is not
corruption: it raises `ValueError` instead of silently starting over.

Typed PRNG keys (`jax.random.key`) are stored as their `uint32` key data and rewrapped on
restore with the implementation of the matching leaf of `target` (see `keys_to_data` and
`data_to_keys`), so they survive a save/restore bit for bit.

Example::

  with Checkpointer(workdir / "checkpoints", keep_latest=2, best_metric="val_accuracy") as ckpt:
      resumed = ckpt.restore_latest(state_dict)
      if resumed is not None:
          state_dict, meta, step = resumed
      for epoch in range(start, num_epochs):
          ...
          ckpt.save(
              epoch, state_dict, {"epoch": epoch, "metrics": metrics}, is_best=es.has_improved
          )
  # leaving the block waits for the background saves
"""

from __future__ import annotations

import math
import numbers
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

__all__ = [
    "FORMAT_VERSION",
    "CheckpointWarning",
    "Checkpointer",
    "data_to_keys",
    "from_named",
    "keys_to_data",
    "to_named",
]

_MODES = ("min", "max")
# Written by Orbax into a step directory just before the step is committed (renamed from its
# temporary name); a step directory without it never finished saving.
_COMMIT_FILE = "commit_success.txt"
_STATE = "state"
_META = "meta"


# Version 2: trees keyed by parameter path (`params/conv1/kernel`), see `to_named`. Version 1
# (jaxreg 0.1) stored the leaves of the whole train state as "0000", "0001", ...
FORMAT_VERSION = 2


def _is_variable(x: Any) -> bool:
    from flax import nnx

    return isinstance(x, nnx.Variable)


def _name(entry: Any) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def to_named(tree: Any) -> dict[str, Any]:
    """A pytree as nested plain dicts keyed by its path, so that a checkpoint reads by name.

    `nnx.State`s, optax states (tuples and NamedTuples), dicts and lists all become nested
    `dict`s whose keys are the attribute names, dict keys or list indices (as strings); NNX
    variables become their arrays. `{"params": state.params}` thus holds
    `["params"]["conv1"]["kernel"]`, readable with plain Orbax and no jaxreg import.

    Args:
      tree: a pytree of arrays (typed PRNG keys included).

    Returns:
      Nested `dict[str, ...]` with array leaves; empty sub-trees are left out.

    Raises:
      ValueError: two leaves map to the same name.
    """
    out: dict[str, Any] = {}
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_variable)[0]
    for path, leaf in leaves:
        if _is_variable(leaf):
            leaf = leaf.get_value()
        names = [_name(e) for e in path] or ["value"]
        node = out
        for n in names[:-1]:
            node = node.setdefault(n, {})
            if not isinstance(node, dict):
                raise ValueError(f"checkpoint name {'/'.join(names)} collides with a leaf")
        if names[-1] in node:
            raise ValueError(f"two leaves have the checkpoint name {'/'.join(names)}")
        node[names[-1]] = leaf
    return out


def from_named(named: Any, like: Any) -> Any:
    """Inverse of `to_named`: the values of `named` in the structure of `like`.

    Args:
      named: nested dicts as `to_named` makes them (e.g. restored by Orbax).
      like: a pytree of the wanted structure (arrays, NNX variables or abstract leaves).

    Returns:
      A tree like `like` whose leaves come from `named` by path; NNX variables keep their type.

    Raises:
      KeyError: `named` lacks a path of `like` (the message names it).
    """
    leaves, treedef = jax.tree_util.tree_flatten_with_path(like, is_leaf=_is_variable)
    new = []
    for path, leaf in leaves:
        names = [_name(e) for e in path] or ["value"]
        node = named
        for n in names:
            if not isinstance(node, Mapping) or n not in node:
                raise KeyError(f"no checkpoint entry {'/'.join(names)}")
            node = node[n]
        new.append(leaf.replace(node) if _is_variable(leaf) else node)
    return jax.tree_util.tree_unflatten(treedef, new)


class CheckpointWarning(UserWarning):
    """A checkpoint step was unreadable or uncommitted and was skipped."""


class CheckpointError(RuntimeError):
    """The checkpoints of a workdir cannot give what the run needs (e.g. its recorded best)."""


# ---------------------------------------------------------------------------------------------
# Typed PRNG keys.


def _is_key(x: Any) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)


def keys_to_data(tree: Any) -> Any:
    """Replaces every typed PRNG key leaf by its raw key data.

    Args:
      tree: a pytree whose leaves may be typed key arrays (`jax.random.key`, dtype
        `key<impl>`) or `jax.ShapeDtypeStruct`s of a key dtype.

    Returns:
      The same tree with each key leaf replaced by `jax.random.key_data(leaf)` (`uint32`,
      shape `leaf.shape + impl_key_shape`; a `ShapeDtypeStruct` of it for an abstract leaf).
      Other leaves are returned unchanged.
    """

    def convert(x):
        if not _is_key(x):
            return x
        if isinstance(x, jax.ShapeDtypeStruct):
            return jax.eval_shape(jax.random.key_data, x)
        return jax.random.key_data(x)

    return jax.tree.map(convert, tree)


def _key_impl(like: Any):
    if isinstance(like, jax.Array):
        return jax.random.key_impl(like)
    # An abstract leaf (ShapeDtypeStruct): read the implementation off a scalar of its dtype.
    return jax.random.key_impl(jnp.zeros((), like.dtype))


def data_to_keys(tree: Any, like: Any) -> Any:
    """Inverse of `keys_to_data`: rewraps key data where `like` holds a typed key.

    Args:
      tree: a pytree of arrays, as returned by `keys_to_data` or a restore.
      like: a pytree of the original structure (arrays or `jax.ShapeDtypeStruct`s); where its
        leaf has a key dtype, the leaf of `tree` (`uint32` key data) is wrapped with
        `jax.random.wrap_key_data` using that leaf's PRNG implementation.

    Returns:
      `tree` with the key leaves restored to typed keys; other leaves unchanged.
    """

    def convert(like_leaf, x):
        if not _is_key(like_leaf):
            return x
        return jax.random.wrap_key_data(x, impl=_key_impl(like_leaf))

    return jax.tree.map(convert, like, tree)


# ---------------------------------------------------------------------------------------------
# Helpers.


def _to_json(value: Any, where: str = "metadata") -> Any:
    """Converts metadata to plain JSON types (numpy/jax scalars and arrays included)."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} keys must be str for JSON, got {k!r}")
            out[k] = _to_json(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_to_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        if _is_key(value):
            raise TypeError(f"{where} is a PRNG key; put keys in the tree, not the metadata")
        return np.asarray(value).tolist()
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"{where} has a value of type {type(value).__name__} that JSON cannot hold")


def _abstract(x: Any) -> Any:
    """Restore target for one (key-free) leaf: a ShapeDtypeStruct with a sharding."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        return x  # Python scalars restore as themselves.
    sharding = getattr(x, "sharding", None)
    if sharding is None:
        sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)


def _path_key(path) -> tuple:
    parts = []
    for k in path:
        for attr in ("key", "idx", "name"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return tuple(parts)


def _by_path(tree: Any) -> dict[tuple, Any]:
    return {_path_key(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _mismatches(saved: Any, target: Any) -> list[str]:
    """Differences in paths, shapes and dtypes between saved array metadata and a target."""
    saved, target = _by_path(saved), _by_path(target)
    out = [f"{'/'.join(p)}: missing in the checkpoint" for p in target if p not in saved]
    out += [f"{'/'.join(p)}: not in target" for p in saved if p not in target]
    for p, t in target.items():
        s = saved.get(p)
        if s is None or not hasattr(t, "dtype") or not hasattr(s, "dtype"):
            continue
        if tuple(s.shape) != tuple(t.shape) or np.dtype(s.dtype) != np.dtype(t.dtype):
            out.append(
                f"{'/'.join(p)}: saved {np.dtype(s.dtype).name}{list(s.shape)}, "
                f"target {np.dtype(t.dtype).name}{list(t.shape)}"
            )
    return out


def _metric_value(metadata: Mapping[str, Any], name: str) -> float:
    metrics = metadata.get("metrics")
    if isinstance(metrics, Mapping) and name in metrics:
        value = metrics[name]
    elif name in metadata:
        value = metadata[name]
    else:
        raise ValueError(
            f"metadata has no best_metric {name!r} (looked in metadata['metrics'] and "
            "metadata); pass is_best explicitly or set best_metric=None"
        )
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise ValueError(f"metadata's best_metric {name!r} must be a real number, got {value!r}")
    return float(value)


class Checkpointer:
    """Keeps the latest `keep_latest` epoch checkpoints and the best one; see module doc.

    Args:
      directory: root directory (created if missing); holds `latest/` and `best/`.
      keep_latest: int >= 1, how many of the newest steps `latest/` keeps.
      best_metric: metadata key of the metric that ranks steps when `save` gets
        `is_best=None`; looked up in `metadata["metrics"]` first, then in `metadata`.
        `None`: only `is_best=True` saves a best checkpoint.
      best_mode: `"max"` (higher is better, e.g. accuracy) or `"min"` (e.g. loss).
      async_save: write the files in background threads (`save` returns before they are
        written); `close`/`wait_until_finished`/the context manager wait for them.

    Raises:
      ValueError: `keep_latest < 1` or `best_mode` not in `{"min", "max"}`.
      TypeError: `keep_latest` not an int or `best_metric` not a str or None.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        keep_latest: int = 2,
        best_metric: str | None = "val_accuracy",
        best_mode: str = "max",
        async_save: bool = True,
    ):
        if isinstance(keep_latest, bool) or not isinstance(keep_latest, numbers.Integral):
            raise TypeError(f"keep_latest must be an int >= 1, got {keep_latest!r}")
        if keep_latest < 1:
            raise ValueError(f"keep_latest must be >= 1, got {keep_latest}")
        if best_mode not in _MODES:
            raise ValueError(f"best_mode must be one of {_MODES}, got {best_mode!r}")
        if best_metric is not None and not isinstance(best_metric, str):
            raise TypeError(f"best_metric must be a str or None, got {best_metric!r}")
        self.directory = os.fspath(Path(directory).absolute())  # Orbax needs absolute paths
        self.keep_latest = int(keep_latest)
        self.best_metric = best_metric
        self.best_mode = best_mode
        self.async_save = bool(async_save)
        self._latest = self._manager("latest", self.keep_latest)
        self._best = self._manager("best", 2)
        self._best_value: float | None = None  # metric of the best checkpoint, read lazily
        self._best_value_known = False
        self._closed = False

    def _manager(self, name: str, keep: int) -> ocp.CheckpointManager:
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(n=keep),
            enable_async_checkpointing=self.async_save,
            create=True,
            # Removes `<step>.orbax-checkpoint-tmp-*` left by a killed save.
            cleanup_tmp_directories=True,
            # Do not read per-step metadata when opening (a garbled file must not break it).
            lightweight_initialize=True,
            # On several processes the two managers save at once: their barriers need
            # names of their own, or Orbax's coordination service confuses them.
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix=f"jaxreg_{name}"
            ),
        )
        return ocp.CheckpointManager(
            os.path.join(self.directory, name),
            item_handlers={
                _STATE: ocp.StandardCheckpointHandler(),
                _META: ocp.JsonCheckpointHandler(),
            },
            options=options,
        )

    # -- context manager / lifecycle ------------------------------------------------------------

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def wait_until_finished(self) -> None:
        """Blocks until the background saves are committed (re-raises their errors)."""
        self._latest.wait_until_finished()
        self._best.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases Orbax's threads; calling it again is a no-op."""
        if self._closed:
            return
        self._closed = True
        try:
            self.wait_until_finished()
        finally:
            self._latest.close()
            self._best.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"Checkpointer({self.directory!r}) is closed")

    # -- queries ----------------------------------------------------------------------------------

    def latest_step(self) -> int | None:
        """Newest step in `latest/` (a save still in flight counts), or None. Not validated."""
        return self._latest.latest_step()

    def best_step(self) -> int | None:
        """Step held in `best/` (a save still in flight counts), or None. Not validated."""
        return self._best.latest_step()

    def best_steps(self) -> list[int]:
        """Steps in `best/` (the best and the previous best), oldest first."""
        self._best.reload()
        return sorted(self._best.all_steps())

    def all_steps(self) -> list[int]:
        """Steps in `latest/`, oldest first."""
        return sorted(self._latest.all_steps())

    # -- save -------------------------------------------------------------------------------------

    def save(
        self, step: int, tree: Any, metadata: Mapping[str, Any], *, is_best: bool | None = None
    ) -> bool:
        """Saves `tree` and `metadata` as step `step` in `latest/` (and `best/`).

        Saving step `s` first deletes any checkpoint with a step `>= s` (in both
        directories, with a warning): those belong to a run abandoned at an earlier step, e.g.
        after `restore_latest` fell back past a corrupt step.

        Args:
          step: int >= 0, e.g. the epoch.
          tree: pytree of arrays (jax/numpy, any dtype incl. typed PRNG keys) and Python
            scalars; dicts/lists/tuples as nodes.
          metadata: JSON-able mapping with str keys (numpy/jax scalars and arrays are
            converted to Python numbers/lists); saved atomically with `tree`.
          is_best: `True`/`False`: whether this step becomes the best checkpoint.
            `None`: decided from `best_metric`/`best_mode` (strict improvement over the
            stored best; a NaN metric never improves; never best if `best_metric` is None).

        Returns:
          Whether the step was saved as the best checkpoint too.

        Raises:
          ValueError: negative `step`; `is_best=None` and the metric is missing.
          TypeError: non-mapping or non-JSON `metadata`.
          RuntimeError: the checkpointer is closed.
        """
        self._check_open()
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        step = int(step)
        if not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a mapping, got {type(metadata).__name__}")
        if is_best is not None and not isinstance(is_best, (bool, np.bool_)):
            raise TypeError(f"is_best must be a bool or None, got {is_best!r}")
        meta = _to_json(metadata)
        value = None
        if self.best_metric is not None and (is_best is None or is_best):
            try:
                value = _metric_value(meta, self.best_metric)
            except ValueError:
                if is_best is None:
                    raise
        state = keys_to_data(tree)

        self._truncate(self._latest, step, "latest")
        self._truncate(self._best, step, "best")
        if is_best is None:
            is_best = value is not None and self._improves(value)
        is_best = bool(is_best)
        args = ocp.args.Composite(
            **{_STATE: ocp.args.StandardSave(state), _META: ocp.args.JsonSave(meta)}
        )
        saved = self._latest.save(step, args=args, force=True)
        if is_best:
            saved = self._best.save(step, args=args, force=True) and saved
            self._best_value, self._best_value_known = value, True
        if not saved:  # cannot happen with force=True; never let a save go missing silently
            raise RuntimeError(f"Orbax declined to save step {step} in {self.directory}")
        return is_best

    def _truncate(self, manager: ocp.CheckpointManager, step: int, name: str) -> None:
        newer = [s for s in manager.all_steps() if s >= step]
        if not newer:
            return
        manager.wait_until_finished()
        warnings.warn(
            f"saving step {step} deletes the newer checkpoint step(s) {sorted(newer)} in "
            f"{os.path.join(self.directory, name)} (left by an abandoned run)",
            CheckpointWarning,
            stacklevel=3,
        )
        for s in newer:
            manager.delete(s)
        if name == "best":
            self._best_value, self._best_value_known = None, False

    def _improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if not self._best_value_known:
            self._best_value = self._stored_best_value()
            self._best_value_known = True
        best = self._best_value
        if best is None or math.isnan(best):
            return True
        return value > best if self.best_mode == "max" else value < best

    def _stored_best_value(self) -> float | None:
        step = self._best.latest_step()
        if step is None:
            return None
        self._best.wait_until_finished()
        try:
            only_meta = ocp.args.Composite(**{_META: ocp.args.JsonRestore()})
            meta = self._best.restore(step, args=only_meta)
            return _metric_value(meta[_META], self.best_metric)
        except Exception as err:
            warnings.warn(
                f"cannot read the metric of best checkpoint step {step} in "
                f"{os.path.join(self.directory, 'best')} ({type(err).__name__}: {err}); "
                "the next save becomes the best",
                CheckpointWarning,
                stacklevel=4,
            )
            return None

    # -- restore ----------------------------------------------------------------------------------

    def peek_latest(self) -> tuple[int, dict] | None:
        """`(step, metadata)` of the newest committed step of `latest/` whose metadata reads.

        Reads no arrays, so it works whatever the saved tree's structure (e.g. to check a
        format version before restoring). `None` when there is no such step.
        """
        self._check_open()
        self._latest.wait_until_finished()
        self._latest.reload()
        where = os.path.join(self.directory, "latest")
        for step in sorted(self._latest.all_steps(), reverse=True):
            if not os.path.exists(os.path.join(where, str(step), _COMMIT_FILE)):
                continue
            try:
                only_meta = ocp.args.Composite(**{_META: ocp.args.JsonRestore()})
                meta = self._latest.restore(step, args=only_meta)[_META]
            except Exception:  # an unreadable step: restore_latest reports it
                continue
            if isinstance(meta, Mapping):
                return step, dict(meta)
        return None

    def restore_latest(self, target: Any) -> tuple[Any, dict, int] | None:
        """Restores the newest readable step of `latest/`.

        Args:
          target: pytree with the structure, shapes and dtypes of the saved tree: concrete
            arrays or `jax.ShapeDtypeStruct`s (e.g. `jax.eval_shape(init_fn, ...)`);
            typed key leaves (or key-dtype structs) get typed keys back. Array leaves come
            back as `jax.Array` on the leaf's sharding (default device if it has none).

        Returns:
          `(tree, metadata, step)`, or `None` if there is no checkpoint or none is
          readable. Unreadable or uncommitted newer steps are skipped with a
          `CheckpointWarning` naming each.

        Raises:
          ValueError: the newest readable step has other paths, shapes or dtypes than
            `target` (Orbax would silently cast dtypes; this refuses).
          RuntimeError: the checkpointer is closed.
        """
        return self._restore(self._latest, "latest", target)

    def restore_best(self, target: Any) -> tuple[Any, dict, int] | None:
        """Restores the best checkpoint (`best/`'s newest step); same contract as `restore_latest`."""
        return self._restore(self._best, "best", target, newest_only=True)

    def restore_step(self, step: int, target: Any) -> tuple[Any, dict, str] | None:
        """Restores exactly step `step`, from `best/` if it is readable there, else from `latest/`.

        Args:
          step: the step wanted (e.g. the best epoch early stopping recorded).
          target: as for `restore_latest`.

        Returns:
          `(tree, metadata, directory name)` with `metadata["epoch"]`-style fields as saved,
          or `None` when neither directory holds a readable copy of that step (each unreadable
          copy is named in a `CheckpointWarning`).

        Raises:
          ValueError: a readable copy has other paths, shapes or dtypes than `target`.
        """
        for name, manager in (("best", self._best), ("latest", self._latest)):
            out = self._restore(manager, name, target, only_step=int(step))
            if out is not None:
                return out[0], out[1], name
        return None

    def save_best(self, step: int, tree: Any, metadata: Mapping[str, Any]) -> None:
        """Writes step `step` into `best/` only (e.g. to repair `best/` after a resume).

        Args:
          step: int >= 0; must be newer than every step in `best/` (older ones are kept).
          tree: as for `save`.
          metadata: as for `save`.
        """
        self._check_open()
        meta = _to_json(metadata)
        self._truncate(self._best, int(step), "best")
        args = ocp.args.Composite(
            **{_STATE: ocp.args.StandardSave(keys_to_data(tree)), _META: ocp.args.JsonSave(meta)}
        )
        if not self._best.save(int(step), args=args, force=True):
            raise RuntimeError(f"Orbax declined to save step {step} in {self.directory}/best")
        self._best_value_known = False

    def _restore(
        self,
        manager: ocp.CheckpointManager,
        name: str,
        target: Any,
        *,
        newest_only: bool = False,
        only_step: int | None = None,
    ):
        self._check_open()
        manager.wait_until_finished()
        where = os.path.join(self.directory, name)
        manager.reload()  # see steps written or removed since the manager was opened
        steps = sorted(manager.all_steps(), reverse=True)
        if only_step is not None:
            steps = [s for s in steps if s == only_step]
        elif newest_only:
            steps = steps[:1]
        if not steps:
            return None
        target_data = keys_to_data(target)
        abstract = jax.tree.map(_abstract, target_data)
        for step in steps:
            mismatches: list[str] = []
            try:
                if not os.path.exists(os.path.join(where, str(step), _COMMIT_FILE)):
                    raise FileNotFoundError(f"no {_COMMIT_FILE}: the save never committed")
                saved = manager.item_metadata(step)[_STATE]
                if saved is None:
                    raise FileNotFoundError(f"no readable {_STATE!r} item")
                mismatches = _mismatches(getattr(saved, "tree", saved), target_data)
                if not mismatches:
                    restored = manager.restore(
                        step,
                        args=ocp.args.Composite(
                            **{
                                _STATE: ocp.args.StandardRestore(abstract),
                                _META: ocp.args.JsonRestore(),
                            }
                        ),
                    )
                    state, meta = restored[_STATE], restored[_META]
                    if not isinstance(meta, Mapping):
                        raise ValueError(f"metadata is a {type(meta).__name__}, not a dict")
            except Exception as err:
                warnings.warn(
                    f"checkpoint step {step} in {where} is unreadable, skipping it "
                    f"({type(err).__name__}: {str(err)[:300]})",
                    CheckpointWarning,
                    stacklevel=3,
                )
                continue
            if mismatches:
                # A readable checkpoint of another model: a user error, not corruption. Raise
                # rather than return None, or the caller would start over and its next save
                # would delete these checkpoints.
                shown = "; ".join(mismatches[:5]) + (" ..." if len(mismatches) > 5 else "")
                raise ValueError(
                    f"target does not match checkpoint step {step} in {where}: {shown}"
                )
            return data_to_keys(state, target), dict(meta), step
        warnings.warn(
            f"no readable checkpoint in {where} (tried steps {steps})",
            CheckpointWarning,
            stacklevel=3,
        )
        return None
