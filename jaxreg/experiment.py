"""The study runner: experiments declared as a `Study`, run with seeds, caches, verdicts, reports.

A study states its question, expectation, variants and stages; the runner adds seeds,
caching, paired comparisons, figures, a verdict computed from the numbers and the report.
An experiment module declares one `Study` and exposes its `get_config`, `validate` and `run`;
the runner does the rest (see `Study`). Also here: the config checks studies share, paired
statistics over seeds, prediction metrics (confusion matrices) and the figure helpers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import math
import numbers
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ml_collections import ConfigDict
from tqdm.auto import tqdm

from jaxreg import report
from jaxreg.train.config import validate_config
from jaxreg.train.loop import train_and_evaluate

METRICS = ("val_accuracy", "test_accuracy", "test_loss", "test_ece", "best_epoch", "zero_fraction")


# ----------------------------------------------------------------------------- config values


def int_tuple(value: Any, *, name: str = "value") -> tuple[int, ...]:
    """One integer or a list/tuple of integers as a tuple of Python ints.

    Args:
      value: an integer (`3`) or a list/tuple of integers (`(0, 1, 2)`), as a config holds.
      name: the config key, named in errors.

    Returns:
      tuple of ints, in the given order (possibly empty).

    Raises:
      TypeError: an element is not an integer (bools and floats are rejected).
    """
    items = value if isinstance(value, (list, tuple)) else (value,)
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, numbers.Integral):
            raise TypeError(f"{name} must be an int or a sequence of ints, got {value!r}")
        out.append(int(item))
    return tuple(out)


def parse_seeds(value: Any) -> tuple[int, ...]:
    """The `seeds` config value as a non-empty tuple of ints.

    Args:
      value: an integer or a list/tuple of integers.

    Returns:
      tuple of ints with at least one element.

    Raises:
      TypeError: an element is not an integer.
      ValueError: no seed is given.
    """
    seeds = int_tuple(value, name="seeds")
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    return seeds


def split_names(spec: str) -> tuple[str, ...]:
    """Comma-separated names as a tuple, blanks and surrounding spaces dropped.

    Raises:
      TypeError: `spec` is not a string.
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a comma-separated string, got {type(spec).__name__}")
    return tuple(s.strip() for s in spec.split(",") if s.strip())


def select_variants(
    spec: str, *, allowed: Iterable[str], default: Sequence[str], baseline: str
) -> tuple[str, ...]:
    """The variants named in `spec` (comma-separated), the baseline always among them.

    Args:
      spec: e.g. `"none,rotate"`; empty or blank selects `default`.
      allowed: every known variant name (listed in the error message, in this order).
      default: what an empty `spec` selects (returned as given).
      baseline: prepended when `spec` does not name it (comparisons need it).

    Returns:
      tuple of variant names, in the order given.

    Raises:
      TypeError: `spec` is not a string.
      ValueError: `spec` names an unknown variant ("unknown variants [...]; allowed: [...]").
    """
    allowed = list(allowed)
    if baseline not in allowed:
        raise ValueError(f"baseline {baseline!r} is not among the allowed variants {allowed}")
    names = split_names(spec)
    if not names:
        return tuple(default)
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; allowed: {allowed}")
    return names if baseline in names else (baseline,) + names


def epochs_for(n_train: int, batch_size: int, epochs: int, min_steps: int) -> int:
    """Epochs so that a run takes at least `min_steps` optimizer steps.

    `max(epochs, ceil(min_steps / steps_per_epoch))` with `steps_per_epoch =
    max(1, n_train // batch_size)` (the loop drops the last partial batch).

    Args:
      n_train: training-set size, >= 0.
      batch_size: examples per step, >= 1.
      epochs: the configured number of epochs, >= 0.
      min_steps: the step budget to reach at least, >= 0.

    Returns:
      the number of epochs (an int >= `epochs`).

    Raises:
      ValueError: an argument is out of its range (the message names it).
    """
    for arg, value, lo in (
        ("n_train", n_train, 0),
        ("batch_size", batch_size, 1),
        ("epochs", epochs, 0),
        ("min_steps", min_steps, 0),
    ):
        if int(value) < lo:
            raise ValueError(f"{arg} must be >= {lo}, got {value}")
    steps_per_epoch = max(1, int(n_train) // int(batch_size))
    return max(int(epochs), -(-int(min_steps) // steps_per_epoch))


def least_epochs(epochs: Any, min_steps: Any) -> Any:
    """The fewest epochs `epochs_for` can give for any training-set size.

    For checks made before the data are loaded: `epochs_for` returns `max(epochs,
    ceil(min_steps / steps_per_epoch))`, which is at least 1 whenever `min_steps` > 0, whatever
    the size. A training config holding this value passes `validate_config` exactly when the
    config of every size does (only a lower bound is checked on `epochs`).

    Args:
      epochs: the configured number of epochs.
      min_steps: the step budget, an int >= 0.

    Returns:
      `max(epochs, 1)` when `min_steps` > 0, else `epochs`; a negative or non-integer
      `epochs` is returned as is, for validation to name.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 0:
        return epochs
    return max(int(epochs), 1) if int(min_steps) > 0 else int(epochs)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def shrink(config: ConfigDict, **smoke_values: Any) -> ConfigDict:
    """A copy of `config` made smaller for a smoke run, which validation then checks as usual.

    A number field (int or float, not bool) becomes `min(current, value)`: a larger value is
    lowered to the smoke value, a smaller one the user chose is kept, and an invalid one
    (`epochs=-1`, NaN) stays, so that validation rejects it instead of smoke mode hiding it.
    A field holding `None` (`train_per_class`: the whole split) counts as unbounded and takes
    the value; a number field holding a non-number is left as it is, for validation to name.
    Every other field (a data set or model name, a bool) is set to the value.

    Args:
      config: the training config (not changed).
      **smoke_values: key -> smoke value of the field's type; nested keys dotted, passed as
        `**{"checkpoint.enabled": False}`.

    Returns:
      a new `ConfigDict`.

    Raises:
      ValueError: a key that `config` lacks.
    """
    out = ConfigDict(config.to_dict())
    for key, value in smoke_values.items():
        *path, field = key.split(".")
        node = out
        for part in path:
            node = node[part] if isinstance(node, ConfigDict) and part in node else None
        if not isinstance(node, ConfigDict) or field not in node:
            raise ValueError(f"unknown config key {key!r} in smoke values")
        current = node[field]
        if _is_number(value) and current is not None:
            if not _is_number(current) or not value < current:
                continue  # already smaller, or invalid: kept for validation
        node[field] = value
    return out


def _same_kind(error: Exception, message: str) -> Exception:
    """A `TypeError` for a type error, else a `ValueError`, with `message`."""
    return (TypeError if isinstance(error, TypeError) else ValueError)(message)


def check_spec(key: str, spec: Any, *, mix: bool = False) -> None:
    """Builds an augmentation spec string of an experiment's config; errors name the key.

    Args:
      key: the config key holding the spec (e.g. `"augment_spec"`), named in errors.
      spec: the spec string (`jaxreg.augment.from_spec`, or `mix_from_spec` with `mix`).
      mix: whether `spec` is a mixing spec.

    Raises:
      TypeError: `spec` is not a string.
      ValueError: the spec does not build (unknown name, bad options).
    """
    if not isinstance(spec, str):
        raise TypeError(f"config key {key!r} must be a spec string, got {spec!r}")
    from jaxreg import augment

    build = augment.mix_from_spec if mix else augment.from_spec
    try:
        build(spec)
    except (ValueError, TypeError) as e:
        raise _same_kind(e, f"config key {key!r}: {e}") from None


def check_int(value: Any, *, name: str, minimum: int | None = None) -> int:
    """`value` as an int after checking it is an int >= `minimum`; errors name config key `name`.

    Raises:
      TypeError: not an integer (bools are rejected).
      ValueError: below `minimum` (`None`: no lower bound).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"config key {name!r} must be an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"config key {name!r} must be >= {minimum}, got {value}")
    return int(value)


def check_real(
    value: Any,
    *,
    name: str,
    minimum: float | None = None,
    maximum: float | None = None,
    strict: bool = False,
) -> float:
    """`value` as a float after checking it is a finite number in range; errors name `name`.

    Args:
      value: the config value.
      name: the config key, named in errors.
      minimum: the lowest allowed value (`None`: no lower bound).
      maximum: the highest allowed value, included (`None`: no upper bound).
      strict: whether `minimum` itself is excluded.

    Returns:
      the value as a float.

    Raises:
      TypeError: not a real number (bools are rejected).
      ValueError: not finite, or out of range.
    """
    if not _is_number(value):
        raise TypeError(f"config key {name!r} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"config key {name!r} must be a finite number, got {value!r}")
    if minimum is not None and (v < minimum or (strict and v == minimum)):
        raise ValueError(
            f"config key {name!r} must be {'>' if strict else '>='} {minimum}, got {v}"
        )
    if maximum is not None and v > maximum:
        raise ValueError(f"config key {name!r} must be <= {maximum}, got {v}")
    return v


# ----------------------------------------------------------------------------- compile cache


@contextlib.contextmanager
def compile_cache(enabled: bool = True) -> Iterator[None]:
    """JAX's persistent compilation cache in the user's private cache folder, for the block.

    Every run builds a new jitted epoch function, so without a persistent cache every seed
    recompiles the same program (10-15 s on a CPU). The folder is `jaxreg._paths.xla_cache_dir()`
    (`~/.cache/jaxreg/xla`, or `$JAXREG_XLA_CACHE`), checked to be private to this user: JAX
    loads compiled programs from it, so it never lives in a shared place such as the temporary
    folder. A cache the caller configured already (`jax_compilation_cache_dir` set, e.g. by the
    tests or the `jaxreg` command) is left alone; otherwise the previous settings are restored
    on exit, also when the block raises.

    Args:
      enabled: `False` makes this a no-op.
    """
    import jax

    from jaxreg import _paths

    if not enabled or jax.config.jax_compilation_cache_dir:
        yield
        return
    path = _paths.xla_cache_dir()
    if path is None:
        yield
        return
    from jax.experimental.compilation_cache import compilation_cache as cc

    old_dir = jax.config.jax_compilation_cache_dir
    old_min = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    cc.reset_cache()
    try:
        yield
    finally:
        jax.config.update("jax_compilation_cache_dir", old_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", old_min)
        cc.reset_cache()


# ----------------------------------------------------------------------------- running


def variant_config(base: ConfigDict, overrides: Mapping[str, Any], seed: int) -> ConfigDict:
    """A copy of `base` with `overrides` (dotted keys allowed) and `seed` set.

    Unknown keys raise `ValueError` naming the key.
    """
    c = ConfigDict(base.to_dict())
    for key, value in overrides.items():
        node = c
        parts = key.split(".")
        for part in parts[:-1]:
            node = node[part] if isinstance(node, ConfigDict) and part in node else None
        if not isinstance(node, ConfigDict) or parts[-1] not in node:
            raise ValueError(f"unknown config key {key!r} in variant overrides")
        node[parts[-1]] = value
    c.seed = int(seed)
    return c


def validate_variants(
    base: ConfigDict, variants: Mapping[str, Mapping[str, Any]], *, seed: int = 0
) -> None:
    """Builds every variant's training config and validates it, before anything trains.

    Each config is `variant_config(base, overrides, seed)`, checked by
    `jaxreg.train.config.validate_config` (ranges, names, spec strings built). The seed only
    sets `config.seed`, so one seed checks every run of a variant.

    Args:
      base: the experiment's base training config.
      variants: name -> config overrides (dotted keys allowed).
      seed: the seed set in the checked configs.

    Raises:
      ValueError, TypeError: the first bad variant; the message names the variant and the key
        (`"variant 'rot': config key 'augment': unknown augmentation ..."`).
    """
    if not isinstance(variants, Mapping):
        raise TypeError(f"variants must map names to overrides, got {type(variants).__name__}")
    for name, overrides in variants.items():
        try:
            if not isinstance(overrides, Mapping):
                raise TypeError(f"overrides must be a mapping, got {type(overrides).__name__}")
            validate_config(variant_config(base, overrides, seed))
        except (ValueError, TypeError) as e:
            raise _same_kind(e, f"variant {name!r}: {e}") from None


def aggregate(
    rows: Sequence[Mapping[str, Any]], *, metrics: Sequence[str] = METRICS, key: str = "variant"
) -> list[dict]:
    """Mean ± std over seeds per `key` value, in first-seen order.

    Returns rows with `key`, `n` (seeds), `<metric>` formatted as "mean ± std" and
    `<metric>_mean` / `<metric>_std` floats (std with ddof=1; 0 for one seed).
    """
    groups: dict[Any, list] = {}
    for r in rows:
        groups.setdefault(r[key], []).append(r)
    out = []
    for name, rs in groups.items():
        row: dict[str, Any] = {key: name, "n": len(rs)}
        for m in metrics:
            vals = np.array([np.nan if r.get(m) is None else float(r[m]) for r in rs], np.float64)
            row[f"{m}_mean"] = float(np.mean(vals))
            row[f"{m}_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
            row[m] = report.mean_std(vals)
        out.append(row)
    return out


def _save_figure(fig, ax, title: str | None, path: str | Path) -> Path:
    """Sets the optional title, lays out and writes `fig` to `path` (PNG, 110 dpi)."""
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path


def bar_plot(
    agg_rows: Sequence[Mapping[str, Any]],
    metric: str,
    path: str | Path,
    *,
    key: str = "variant",
    title: str | None = None,
    baseline: str | None = None,
) -> Path:
    """Horizontal bars of `<metric>_mean` with ± std error bars; a line at `baseline`'s mean."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    names = [str(r[key]) for r in agg_rows]
    means = [r[f"{metric}_mean"] for r in agg_rows]
    stds = [r[f"{metric}_std"] for r in agg_rows]
    fig = Figure(figsize=(7, 0.45 * len(names) + 1.5))
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(range(len(names)), means, xerr=stds, color="#4c72b0", capsize=3)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    lo = min(m - s for m, s in zip(means, stds))
    hi = max(m + s for m, s in zip(means, stds))
    pad = max((hi - lo) * 0.15, 0.005)
    ax.set_xlim(max(lo - pad, 0.0), hi + pad)
    if baseline is not None:
        base = next(r for r in agg_rows if r[key] == baseline)[f"{metric}_mean"]
        ax.axvline(base, color="k", ls="--", lw=1, label=f"{baseline}")
        ax.legend(loc="lower right")
    ax.set_xlabel(f"{metric} (mean ± std over seeds)")
    return _save_figure(fig, ax, title, path)


def line_plot(
    series: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
    path: str | Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    logx: bool = False,
    marker_x: float | None = None,
    references: Mapping[str, float] | None = None,
) -> Path:
    """Lines with ± std bands: `series[name] = (x, mean, std)`; optional vertical marker.

    `references` draws labelled horizontal dashed lines (e.g. a ceiling: `{"ceiling": 0.97}`).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    for name, (x, mean, std) in series.items():
        x, mean, std = map(np.asarray, (x, mean, std))
        ax.plot(x, mean, marker="o", label=name)
        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    if marker_x is not None:
        ax.axvline(marker_x, color="k", ls="--", lw=1, label=f"chosen: {marker_x:g}")
    for i, (name, y) in enumerate((references or {}).items()):
        ax.axhline(float(y), color="0.3", ls=("--", ":", "-.")[i % 3], lw=1, label=name)
    if logx:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save_figure(fig, ax, title, path)


def delta_plot(
    comparisons: Mapping[tuple[Any, str], Sequence[float]],
    path: str | Path,
    *,
    baseline: str,
    metric: str = "test_accuracy",
    scale: float = 100.0,
    sweep_label: str = "{}",
    title: str | None = None,
) -> Path:
    """Horizontal bars of paired differences to the baseline with their 95 % intervals.

    Args:
      comparisons: `(sweep value, variant) -> (mean, half_width, ...)`, as
        `Analysis.comparisons`; one bar colour per sweep value, one row per variant.
      path: the PNG written.
      baseline: the variant the differences are taken to (named on the axis).
      metric: the compared metric (named on the axis).
      scale: factor applied to the differences (100: accuracy points).
      sweep_label: legend entry of a sweep value, a format string (e.g. "{} per class").
      title: optional title.

    Returns:
      `path` as a `Path`.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    sweeps = list(dict.fromkeys(s for s, _ in comparisons))
    names = list(dict.fromkeys(n for _, n in comparisons))
    fig = Figure(figsize=(8, 0.4 * len(names) + 1.8))
    ax = fig.add_subplot(1, 1, 1)
    height = 0.8 / max(1, len(sweeps))
    for i, sweep in enumerate(sweeps):
        got = [
            (j, comparisons[(sweep, n)]) for j, n in enumerate(names) if (sweep, n) in comparisons
        ]
        y = [j + i * height for j, _ in got]
        means = [c[0] * scale for _, c in got]
        halves = [c[1] * scale if math.isfinite(c[1]) else 0.0 for _, c in got]
        label = sweep_label.format(sweep) if sweep is not None else None
        ax.barh(y, means, height=height, xerr=halves, capsize=2, label=label)
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(names))], names)
    ax.invert_yaxis()
    ax.axvline(0, color="k", lw=1)
    unit = "points; " if scale == 100.0 else ""
    ax.set_xlabel(f"{metric} minus {baseline!r} ({unit}paired mean, 95% t-interval)")
    if sweeps != [None]:
        ax.legend()
    ax.grid(axis="x", alpha=0.3)
    return _save_figure(fig, ax, title, path)


def mean_curve(
    histories: Iterable[Sequence[Mapping[str, Any]]], key: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per-epoch mean of `key` over several runs' histories (e.g. one per seed).

    An epoch is averaged over the runs that reached it (early-stopped runs are shorter).

    Args:
      histories: per run, the records of `report.read_metrics` (dicts with `epoch`).
      key: the metric to average, e.g. `"val_loss"`.

    Returns:
      `(epochs, means)`: int array of the sorted epochs seen, shape `(E,)`, and the float
      mean of `key` at each, shape `(E,)` (both empty when there are no records).

    Raises:
      ValueError: a record lacks `epoch` or `key`.
    """
    per_epoch: dict[int, list[float]] = {}
    for history in histories:
        for rec in history:
            if "epoch" not in rec or key not in rec:
                raise ValueError(f"history records need 'epoch' and key {key!r}; got {sorted(rec)}")
            per_epoch.setdefault(int(rec["epoch"]), []).append(float(rec[key]))
    epochs = np.array(sorted(per_epoch))
    return epochs, np.array([np.mean(per_epoch[e]) for e in epochs])


# ----------------------------------------------------------------------------- paired statistics


def paired_differences(
    rows: Sequence[Mapping[str, Any]],
    name: str,
    metric: str,
    *,
    baseline: str,
    key: str = "variant",
) -> np.ndarray:
    """Per-seed differences `metric(name) - metric(baseline)`, paired by `seed`.

    Args:
      rows: one dict per run with `seed`, `key` and `metric` (the study runner's rows).
      name: the variant compared.
      metric: the row field compared.
      baseline: the reference variant.
      key: the row field that names the variant.

    Returns:
      float64 array of shape `(n,)`, in the order of `name`'s rows; seeds without a
      baseline run and runs where either value is `None` are left out.

    Raises:
      ValueError: `name` or `baseline` is empty.
    """
    for arg, value in (("name", name), ("baseline", baseline)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{arg} must be a non-empty variant name, got {value!r}")
    base = {r["seed"]: r[metric] for r in rows if r[key] == baseline}
    return np.array(
        [
            r[metric] - base[r["seed"]]
            for r in rows
            if r[key] == name
            and r["seed"] in base
            and r[metric] is not None
            and base[r["seed"]] is not None
        ],
        np.float64,
    )


def paired_ci(
    rows: Sequence[Mapping[str, Any]],
    name: str,
    metric: str,
    *,
    baseline: str,
    key: str = "variant",
    confidence: float = 0.95,
) -> tuple[float, float, int, int]:
    """Paired (by seed) difference to the baseline with a Student-t confidence interval.

    The interval is `mean ± t_{(1+confidence)/2, n-1} * std(d, ddof=1) / sqrt(n)` over the
    per-seed differences `d` of `paired_differences`.

    Args:
      rows: one dict per run with `seed`, `key` and `metric` (the study runner's rows).
      name: the variant compared.
      metric: the row field compared.
      baseline: the reference variant.
      key: the row field that names the variant.
      confidence: two-sided level in (0, 1).

    Returns:
      `(mean, half_width, n_above, n)`: mean difference (NaN when no seed pairs up), the
      interval's half-width (NaN for fewer than two pairs), how many differences are > 0, and
      the number of pairs.

    Raises:
      ValueError: `confidence` is outside (0, 1), or a name is empty.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    d = paired_differences(rows, name, metric, baseline=baseline, key=key)
    if d.size == 0:
        return math.nan, math.nan, 0, 0
    if d.size < 2:
        return float(d.mean()), math.nan, int((d > 0).sum()), 1
    from scipy import stats

    q = stats.t.ppf(0.5 + confidence / 2, d.size - 1)
    half = float(q * d.std(ddof=1) / math.sqrt(d.size))
    return float(d.mean()), half, int((d > 0).sum()), int(d.size)


def effect(mean: float, half: float, *, above: str = "helps", below: str = "hurts") -> str:
    """Word for a paired difference and its interval half-width (see `paired_ci`).

    Args:
      mean: mean difference.
      half: interval half-width; NaN (one seed) gives `"one seed"`.
      above: word when the whole interval is above 0.
      below: word when the whole interval is below 0.

    Returns:
      `above`, `below`, `"within noise"` (the interval contains 0) or `"one seed"`.

    Raises:
      TypeError: `mean` or `half` is not a real number.
    """
    for arg, value in (("mean", mean), ("half", half)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{arg} must be a real number, got {type(value).__name__}")
    if not math.isfinite(half):
        return "one seed"
    if mean - half > 0:
        return above
    if mean + half < 0:
        return below
    return "within noise"


def format_pm(mean: float, half: float, scale: float = 100.0) -> str:
    """`"+1.2 ± 0.8"`: a signed difference and its half-width times `scale` (points).

    A NaN half-width (one seed) prints the difference alone (`"+1.2"`).

    Raises:
      TypeError: an argument is not a real number.
    """
    for arg, value in (("mean", mean), ("half", half), ("scale", scale)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{arg} must be a real number, got {type(value).__name__}")
    if not math.isfinite(half):
        return f"{mean * scale:+.1f}"
    return f"{mean * scale:+.1f} ± {half * scale:.1f}"


def join_names(items: Iterable[str], *, empty: str = "no variant") -> str:
    """English list: `"a"`, `"a and b"`, `"a, b and c"`; `empty` for none.

    Raises:
      TypeError: an item is not a string.
    """
    items = list(items)
    bad = [x for x in items if not isinstance(x, str)]
    if bad:
        raise TypeError(f"items must be strings, got {bad!r}")
    if not items:
        return empty
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# ----------------------------------------------------------------------------- predictions


def _check_labels(pred: Any, labels: Any, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise TypeError(f"num_classes must be an int, got {type(num_classes).__name__}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    pred, labels = np.asarray(pred), np.asarray(labels)
    for arg, a in (("pred", pred), ("labels", labels)):
        if a.ndim != 1:
            raise ValueError(f"{arg} must be 1-D class indices, got shape {a.shape}")
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"{arg} must hold integer class indices, got dtype {a.dtype}")
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{arg} must be in [0, {num_classes}), got [{a.min()}, {a.max()}]")
    if pred.shape != labels.shape:
        raise ValueError(
            f"pred and labels must have the same shape, got {pred.shape} and {labels.shape}"
        )
    return pred.astype(np.int64), labels.astype(np.int64)


def confusion_matrix(pred: Any, labels: Any, num_classes: int) -> np.ndarray:
    """Confusion counts: entry `[i, j]` = examples of true class i predicted as class j.

    Args:
      pred: predicted classes, int array of shape `(N,)` in `[0, num_classes)`.
      labels: true classes, int array of shape `(N,)` in `[0, num_classes)`.
      num_classes: K >= 1.

    Returns:
      int64 array of shape `(K, K)`; rows sum to the class counts of `labels`.

    Raises:
      TypeError: non-integer inputs.
      ValueError: shapes differ or are not 1-D, or a class is out of range.
    """
    pred, labels = _check_labels(pred, labels, num_classes)
    m = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(m, (labels, pred), 1)
    return m


def per_class_recall(pred: Any, labels: Any, num_classes: int) -> np.ndarray:
    """Recall of every class: the fraction of its examples predicted as that class.

    Args:
      pred: predicted classes, int array of shape `(N,)` in `[0, num_classes)`.
      labels: true classes, int array of shape `(N,)` in `[0, num_classes)`.
      num_classes: K >= 1.

    Returns:
      float64 array of shape `(K,)` in [0, 1]; NaN for a class absent from `labels`
      (`np.nanmean` of it is the balanced accuracy).

    Raises:
      TypeError, ValueError: as in `confusion_matrix`.
    """
    m = confusion_matrix(pred, labels, num_classes)
    support = m.sum(axis=1)
    out = np.full(num_classes, np.nan)
    present = support > 0
    out[present] = np.diag(m)[present] / support[present]
    return out


# ----------------------------------------------------------------------------- report


# ============================================================================= the study runner


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of a study: it trains or computes something for each unit and may be cached.

    Attributes:
      name: the stage's name (its folder in each unit's directory, its key in the rows).
      fn: `fn(unit) -> dict` of JSON-able results; `None` trains the unit's config with
        `train_and_evaluate` on the unit's data (the common case). A function may call
        `unit.train(...)` (cached sub-runs), read earlier stages' results or artifacts
        (`unit.result(stage)`, `unit.artifact(stage)`) and write files into `unit.dir`.
      per: "variant" (every sweep value x variant x seed), "seed" (once per sweep value and
        seed, shared by the variants: e.g. a pretraining) or "once".
      variants: for a stage whose variants depend on earlier results (e.g. combinations of
        the best single augmentations): `variants(rows, sweep) -> {name: config delta}`,
        called with the rows of the earlier stages (and the study's params as a third
        argument when it takes three); `None` uses the study's variants.
      extra_eval: `extra_eval(config, data) -> {name: Dataset}` evaluated at the end of each
        training run (e.g. corrupted test sets), for the default training stage; a function
        of three parameters is called `extra_eval(config, data, params)` with the study's
        settings (e.g. the corruption strengths).
      keep_predictions: store the evaluated model's predicted classes for val, test and the
        `extra_eval` sets (`predictions.npz`), read back as `row["pred"]`.
      skip: an adaptive stage (e.g. grow an amount while validation improves):
        `skip(rows, variant, params) -> bool` is asked before each variant (whose seeds run
        together, variants in order) with this stage's rows of the sweep value so far; True
        skips the variant (no rows).
      derive: `derive(row, unit) -> dict` of metrics computed from a finished unit's row (e.g.
        balanced accuracy from `row["pred"]` and `unit.data`), added to the row before the
        table is aggregated, also when the row is read back; skipped for a diverged run.
      per_sweep: False for a stage that does not depend on the sweep value (a pretraining on
        another data set, a ceiling run on every label): it runs once per seed ("seed") or
        once ("once") for the whole study, its folder has no sweep level, its rows have
        `sweep` None, and every sweep value's units read the same results and artifacts.
    """

    name: str = "train"
    fn: Callable[[Unit], dict] | None = None
    per: str = "variant"
    variants: Callable[[list[dict], Any], Mapping[str, Mapping[str, Any]]] | None = None
    extra_eval: Callable[[ConfigDict, Mapping[str, Any]], Mapping[str, Any]] | None = None
    keep_predictions: bool = False
    skip: Callable[[list[dict], str, ConfigDict], bool] | None = None
    derive: Callable[[dict, Unit], Mapping[str, Any]] | None = None
    per_sweep: bool = True

    def __post_init__(self):
        if self.per not in ("variant", "seed", "once"):
            raise ValueError(f"per must be 'variant', 'seed' or 'once', got {self.per!r}")
        if not self.per_sweep and self.per == "variant":
            raise ValueError(
                f"stage {self.name!r}: per_sweep=False needs per='seed' or 'once' (variants are "
                "compared per sweep value)"
            )


@dataclasses.dataclass
class Unit:
    """What a stage computes for: one (sweep value, variant, seed) of a study.

    Attributes:
      stage: the stage's name.
      sweep: the sweep value (None without a sweep, and for a stage with `per_sweep=False`).
      variant: the variant's name (None for a per-seed or once stage).
      seed: the seed (seed k trains on training subset k for every variant).
      config: the unit's training config (study keys removed, variant delta and seed set).
      params: the study's own settings (the config keys that are not training keys).
      dir: the unit's folder (created), where its results and artifacts live.
      smoke: whether this is a smoke run.
    """

    stage: str
    sweep: Any
    variant: str | None
    seed: int
    config: ConfigDict
    params: ConfigDict
    dir: Path
    smoke: bool
    _runner: _Runner = dataclasses.field(repr=False)

    @property
    def data(self) -> dict[str, Any]:
        """The unit's `{"train", "val", "test"}` data: training subset k for seed k."""
        return self._runner.data(self.config, self.seed)

    def artifact(self, stage: str) -> Path:
        """The folder of an earlier stage's unit for this sweep value and seed (and variant)."""
        return self._runner.unit_dir(stage, self.sweep, self.variant, self.seed)

    def result(self, stage: str) -> dict:
        """The results an earlier stage produced for the same sweep value and seed (and variant)."""
        return self._runner.cached_result(stage, self.sweep, self.variant, self.seed)

    def train(
        self,
        config: ConfigDict | None = None,
        *,
        name: str = "run",
        data: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> dict:
        """`train_and_evaluate` in `self.dir / name`, read back from its `results.json` on rerun.

        Args:
          config: the training config (default: the unit's).
          name: the sub-folder.
          data: the data (default: the unit's).
          **kwargs: passed to `train_and_evaluate` (`model=`, `task=`, `extra_eval=`, ...).

        Returns:
          the results (JSON part: no `state` or `model` when read back).
        """
        return self._runner.train(
            config if config is not None else self.config,
            self.dir / name,
            data if data is not None else self.data,
            title=f"{self._runner.study.name}: {self.variant or self.stage}, seed {self.seed}",
            **kwargs,
        )


@dataclasses.dataclass
class Analysis:
    """Everything a study's `analyze` hook gets: the rows, aggregates and paired comparisons.

    Attributes:
      study: the study.
      params: the study's own settings, after the smoke shrink.
      config: the study's base training config, after the smoke shrink.
      rows: one dict per unit of every stage: `stage`, `sweep`, `variant`, `seed`, the stage's
        results (`diverged: True` and `None` metrics for a run whose loss became non-finite).
      table: the default table rows (one per sweep value and variant of the compared stage).
      comparisons: `(sweep, variant) -> (mean, half_width, n_above, n)` paired differences of
        the primary metric to the baseline (`paired_ci`).
      workdir: the study's folder (figures go there).
      smoke: whether this is a smoke run.
    """

    study: Study
    params: ConfigDict
    config: ConfigDict
    rows: list[dict]
    table: list[dict]
    comparisons: dict[tuple[Any, str], tuple[float, float, int, int]]
    workdir: Path
    smoke: bool
    verdict_text: str = ""
    findings: Findings | None = None

    def stage_rows(self, stage: str, sweep: Any = ..., variant: Any = ...) -> list[dict]:
        """The rows of one stage, optionally of one sweep value and one variant."""
        return [
            r
            for r in self.rows
            if r["stage"] == stage
            and (sweep is ... or r["sweep"] == sweep)
            and (variant is ... or r["variant"] == variant)
        ]

    def history(self, row: Mapping[str, Any]) -> list[dict]:
        """The per-epoch records (`metrics.jsonl`) of a training row."""
        return report.read_metrics(Path(row["dir"]) / "metrics.jsonl")

    def curves_figure(
        self,
        filename: str,
        keys: Mapping[str, str],
        *,
        stage: str = "train",
        marks: Mapping[str, float | None] | None = None,
        title: str | None = None,
    ) -> str:
        """Per-epoch curves of every variant, averaged over seeds: one panel per history key.

        An epoch is averaged over the seeds that reached it (`mean_curve`); the baseline is
        drawn in black. Past 8 epochs the y range leaves out the first quarter of training
        (its steep start would flatten the rest).

        Args:
          filename: the PNG's name inside the workdir.
          keys: history key -> axis label, e.g. `{"val_loss": "validation loss"}`.
          stage: the training stage whose rows are drawn.
          marks: variant -> epoch marked by a dashed line of the variant's colour on the first
            panel (e.g. a detected onset); None marks nothing.
          title: the figure's title.

        Returns:
          `filename`, for `Findings.figures`.
        """
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure

        names = list(dict.fromkeys(r["variant"] for r in self.stage_rows(stage)))
        n_seeds = len({r["seed"] for r in self.stage_rows(stage)})
        fig, cmap = Figure(figsize=(6 * len(keys), 4.6)), matplotlib.colormaps["tab10"]
        for i, (key, label) in enumerate(keys.items()):
            ax, shown = fig.add_subplot(1, len(keys), i + 1), []
            for j, name in enumerate(names):
                rows = self.stage_rows(stage, variant=name)
                ep, mean = mean_curve([self.history(r) for r in rows if not r.get("diverged")], key)
                base = name == self.study.baseline
                color = "k" if base else cmap(j % 10)
                ax.plot(ep, mean, label=name, color=color, lw=2.2 if base else 1.4)
                if len(ep):
                    shown.extend(mean[ep > ep.max() // 4] if ep.max() >= 8 else mean)
                if i == 0 and (marks or {}).get(name) is not None:
                    ax.axvline(marks[name], color=color, ls="--", lw=1)
            if shown:
                lo, hi = float(np.nanmin(shown)), float(np.nanmax(shown))
                pad = max((hi - lo) * 0.08, 1e-3)
                ax.set_ylim(lo - pad, hi + pad)
            ax.set_xlabel("epoch")
            ax.set_ylabel(f"{label} (mean over {n_seeds} seeds)")
            ax.grid(alpha=0.3)
        fig.axes[-1].legend(fontsize=8, ncol=2)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(self.workdir / filename, dpi=110)
        return filename


@dataclasses.dataclass
class Findings:
    """What a study's `analyze` hook adds to the report.

    Attributes:
      table: replaces the default table when not None.
      verdict: sentences appended to the default verdict (computed from the numbers).
      figures: file names inside the workdir, shown after the default figures.
      sections: Markdown appended to the report (e.g. extra tables with their headings).
      replace_verdict: the hook's sentences replace the default verdict.
    """

    table: list[dict] | None = None
    verdict: list[str] = dataclasses.field(default_factory=list)
    figures: list[str] = dataclasses.field(default_factory=list)
    sections: list[str] = dataclasses.field(default_factory=list)
    replace_verdict: bool = False


@dataclasses.dataclass(frozen=True)
class Study:
    """An experiment declared as data: question, expectation, variants, stages, metrics.

    The runner (`Study.run`) does the rest: smoke shrinking then validation of every run's
    config before anything trains, seeds (seed k uses training subset k for every variant, so
    comparisons pair by seed), stages with cached results (a rerun resumes: finished units
    are read back, a killed run resumes from its checkpoint), one progress bar over all units,
    aggregation, paired differences to the baseline with 95 % intervals, figures, a verdict
    computed from the numbers (saying where the expectation did not appear and how the regime
    differs from its source), and the report (`report.md`, `summary.json`, `rows.json`).

    A study module then needs only:
    `get_config = STUDY.get_config; validate = STUDY.validate; run = STUDY.run`.

    Attributes:
      name: the study's name (`jaxreg run NAME`).
      title: report title.
      question: the question answered.
      expectation: what we expect, in words.
      source: where the expectation comes from: a paper and its table or figure, or the
        reasoning when there is none.
      config: `() -> ConfigDict`: the study's training config (a `default_config()`).
      variants: `{name: config delta}` (dotted keys), or `(config, params) -> {...}` when the
        deltas depend on the study's settings.
      baseline: the variant the others are compared with.
      expected: variant -> +1 (a gain beyond noise on the primary metric), 0 (within noise)
        or -1 (a loss); the verdict checks each.
      regime: how this study's setting differs from the source's (said in the verdict when an
        expectation did not appear).
      params: the study's own settings (seeds excluded), exposed as config keys.
      seeds: default seeds.
      sweep: `(name, values)`: the study is repeated for each value (e.g. training set
        sizes); `name` is a training config key (e.g. "train_per_class") or a param. The
        default figure draws the primary metric over the values (on a log axis when they
        span a decade or more).
      sweep_key: the config key holding the sweep's values (e.g. "sizes").
      default_variants: the variants a run keeps when `variants` is empty (default: all).
      smoke: config key -> smoke value, applied with `shrink` (numbers only lowered).
      smoke_set: config key -> value set outright in a smoke run (e.g. a learning rate raised
        for a tiny model). A smoke run's config is also validated as given, so a value the
        smoke run replaces must still be valid.
      smoke_variants: the variants a smoke run keeps by default (default: all).
      smoke_sweep: the sweep values of a smoke run.
      smoke_seeds: how many seeds a smoke run keeps.
      stages: the stages, in order; the default is one training stage.
      compare: the stage whose rows are aggregated and compared (default: the last), or a
        tuple of stages whose rows are pooled (e.g. single augmentations, then combinations
        compared with the same baseline).
      primary: the metric compared to the baseline (a result key, e.g. "test_accuracy").
      higher_is_better: the primary metric's direction.
      metrics: result keys aggregated into the table.
      min_steps: each training run takes at least this many optimizer steps (epochs are
        raised for small training sets, `epochs_for`).
      data: `(config, seed) -> {"train", "val", "test"}` replacing the default (`config.data`,
        `train_per_class` examples per class drawn with the seed); given the study's params as
        a third argument when it takes three.
      check: `(params, config) -> None` raising for a bad study setting.
      analyze: `(Analysis) -> Findings` for study-specific tables, figures and verdicts.
    """

    name: str
    title: str
    question: str
    expectation: str
    source: str
    config: Callable[[], ConfigDict]
    variants: Mapping[str, Mapping[str, Any]] | Callable[..., Mapping[str, Mapping[str, Any]]]
    baseline: str
    expected: Mapping[str, int] = dataclasses.field(default_factory=dict)
    regime: str = ""
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    seeds: tuple[int, ...] = (0, 1, 2)
    sweep: tuple[str, tuple] | None = None
    sweep_key: str = "sweep"
    default_variants: tuple[str, ...] | None = None
    smoke: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    smoke_set: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    smoke_variants: tuple[str, ...] | None = None
    smoke_sweep: tuple | None = None
    smoke_seeds: int = 2
    stages: tuple[Stage, ...] = (Stage(),)
    compare: str | tuple[str, ...] | None = None
    primary: str = "test_accuracy"
    higher_is_better: bool = True
    metrics: tuple[str, ...] = METRICS
    min_steps: int = 0
    data: Callable[[ConfigDict, int], Mapping[str, Any]] | None = None
    check: Callable[[ConfigDict, ConfigDict], None] | None = None
    analyze: Callable[[Analysis], Findings] | None = None

    # ------------------------------------------------------------------ the study's config

    def get_config(self) -> ConfigDict:
        """The study's whole config: its training config plus the study keys.

        Study keys: `seeds`, `variants` (comma-separated names; empty: the default set),
        `sweep_key` (the sweep's values, when there is a sweep), `min_steps`, `compile_cache`,
        and the study's `params`. Every other key is a training config key.
        """
        c = self.config()
        c.seeds = tuple(self.seeds)
        c.variants = ""
        if self.sweep is not None:
            c[self.sweep_key] = tuple(self.sweep[1])
        c.min_steps = int(self.min_steps)
        c.compile_cache = True
        for key, value in self.params.items():
            c[key] = value
        return c

    def _study_keys(self) -> tuple[str, ...]:
        keys = ("seeds", "variants", "min_steps", "compile_cache") + tuple(self.params)
        return keys + ((self.sweep_key,) if self.sweep is not None else ())

    def _plan(self, config: ConfigDict) -> _Plan:
        """Splits the config, applies the smoke shrink, selects variants, seeds and sweep."""
        config = ConfigDict(config.to_dict())
        smoke = bool(config.get("smoke", False))
        if smoke and self.smoke:
            config = shrink(config, **self.smoke)
        for key, value in self.smoke_set.items() if smoke else ():
            *path, field = key.split(".")
            node = config
            for part in path:
                node = node[part] if isinstance(node, ConfigDict) and part in node else None
            if not isinstance(node, ConfigDict) or field not in node:
                raise ValueError(f"unknown config key {key!r} in smoke_set")
            node[field] = value
        seeds = parse_seeds(config.seeds)
        if smoke:
            seeds = seeds[: self.smoke_seeds]
        sweep_values = (None,)
        if self.sweep is not None:
            given = config[self.sweep_key]
            sweep_values = tuple(given) if isinstance(given, (list, tuple)) else (given,)
            if smoke and self.smoke_sweep is not None:
                sweep_values = tuple(self.smoke_sweep)
            if not sweep_values:
                raise ValueError(f"config key {self.sweep_key!r} must name at least one value")
        params = ConfigDict({k: config[k] for k in self._study_keys() if k in config})
        training = ConfigDict(config.to_dict())
        for key in self._study_keys():
            if key in training:
                del training[key]
        all_variants = dict(
            self.variants(training, params) if callable(self.variants) else self.variants
        )
        names = select_variants(
            config.variants,
            allowed=all_variants,
            default=self.smoke_variants
            if smoke and self.smoke_variants
            else self.default_variants or tuple(all_variants),
            baseline=self.baseline,
        )
        check_int(params.min_steps, name="min_steps", minimum=0)
        return _Plan(
            training=training,
            params=params,
            seeds=seeds,
            sweep=sweep_values,
            variants={n: dict(all_variants[n]) for n in names},
            smoke=smoke,
        )

    def validate(self, config: ConfigDict) -> None:
        """Checks the whole config before anything trains, deletes or writes.

        The smoke shrink is applied first (it only lowers numbers, so an invalid value stays
        invalid), then every training config the study will run (each sweep value x variant)
        is validated, and the study's own `check`. A smoke config is then checked once more as
        given (smoke off): a value that smoke mode replaces (a data set, `smoke_set`) must be
        valid too.

        Raises:
          ValueError, TypeError: a bad value; the message names the key and the variant.
        """
        self._validate(self._plan(config))
        if bool(config.get("smoke", False)):
            given = ConfigDict(config.to_dict())
            given.smoke = False
            try:
                self._validate(self._plan(given))
            except (ValueError, TypeError) as e:
                raise _same_kind(
                    e,
                    f"{e} (checked as given: smoke mode replaces the value, but it must be valid)",
                ) from None

    def _validate(self, plan: _Plan) -> None:
        if self.check is not None:
            self.check(plan.params, plan.training)
        for value in plan.sweep:
            base = self._with_sweep(plan.training, plan.params, value)
            try:
                validate_config(base)
                validate_variants(base, plan.variants)
            except (ValueError, TypeError) as e:
                if self.sweep is None:
                    raise
                raise _same_kind(e, f"{self.sweep_key}={value!r}: {e}") from None

    def _with_sweep(self, training: ConfigDict, params: ConfigDict, value: Any) -> ConfigDict:
        c = ConfigDict(training.to_dict())
        if self.sweep is not None and self.sweep[0] in c:
            c[self.sweep[0]] = value
        return c

    # ------------------------------------------------------------------ running

    def run(self, config: ConfigDict, workdir: str | os.PathLike) -> dict:
        """Runs the study in `workdir` (resuming what is there); returns rows, table, verdict.

        Returns:
          dict with `rows` (one per unit), `table` (the report's rows), `verdict` (str),
          `report` (the path of report.md), `wall_time_s` and `analysis` (the `Analysis`:
          params and config after the smoke shrink, comparisons, findings).
        """
        self.validate(config)
        plan = self._plan(config)
        workdir = Path(workdir)
        t0 = time.perf_counter()
        runner = _Runner(self, plan, workdir)
        with workdir_lock(workdir), compile_cache(bool(plan.params.compile_cache)):
            rows = runner.run_all()
            analysis = self._analyze(plan, rows, workdir)
            path = self._report(analysis, time.perf_counter() - t0)
        return {
            "rows": rows,
            "table": analysis.table,
            "verdict": analysis.verdict_text,
            "report": str(path),
            "wall_time_s": time.perf_counter() - t0,
            "analysis": analysis,
        }

    # ------------------------------------------------------------------ analysis

    def _analyze(self, plan: _Plan, rows: list[dict], workdir: Path) -> Analysis:
        compare = self.compare or self.stages[-1].name
        stages = (compare,) if isinstance(compare, str) else tuple(compare)
        comp_rows = [r for r in rows if r["stage"] in stages and r["variant"] is not None]
        table, comparisons = [], {}
        scale = 100.0 if self.primary.endswith("accuracy") else 1.0
        for value in plan.sweep:
            sub = [r for r in comp_rows if r["sweep"] == value]
            for agg in aggregate(sub, metrics=self.metrics):
                name = agg["variant"]
                row: dict[str, Any] = {}
                if self.sweep is not None:
                    row[self.sweep[0]] = value
                row["variant"] = name
                row["n"] = agg["n"]
                diverged = sum(1 for r in sub if r["variant"] == name and r.get("diverged"))
                if diverged:
                    row["diverged"] = diverged
                for m in self.metrics:
                    row[m] = agg[m]
                    row[f"{m}_mean"] = agg[f"{m}_mean"]
                    row[f"{m}_std"] = agg[f"{m}_std"]
                if name != self.baseline:
                    ci = paired_ci(sub, name, self.primary, baseline=self.baseline)
                    comparisons[(value, name)] = ci
                    mean, half = ci[0], ci[1]
                    sign = 1.0 if self.higher_is_better else -1.0
                    row[f"delta_{self.primary}"] = format_pm(mean, half, scale)
                    row["effect"] = effect(sign * mean, half)
                    if name in self.expected:
                        row["expected"] = _EXPECT_WORDS[self.expected[name]]
                table.append(row)
        analysis = Analysis(
            study=self,
            params=plan.params,
            config=plan.training,
            rows=rows,
            table=table,
            comparisons=comparisons,
            workdir=workdir,
            smoke=plan.smoke,
        )
        findings = self.analyze(analysis) if self.analyze is not None else Findings()
        lines = [] if findings.replace_verdict else self._default_verdict(plan, table)
        analysis.verdict_text = " ".join(lines + list(findings.verdict)).strip() or "No runs."
        analysis.findings = findings
        if findings.table is not None:
            analysis.table = findings.table
        return analysis

    def _default_verdict(self, plan: _Plan, table: list[dict]) -> list[str]:
        out = []
        scale = 100.0 if self.primary.endswith("accuracy") else 1.0
        unit = " points" if scale == 100.0 else ""
        missed = []
        for value in plan.sweep:
            rows = [r for r in table if self.sweep is None or r[self.sweep[0]] == value]
            where = f"At {self.sweep[0]}={value}: " if self.sweep is not None else ""
            words = {"helps": [], "hurts": [], "within noise": [], "one seed": []}
            for r in rows:
                if r["variant"] == self.baseline:
                    continue
                words[r["effect"]].append(f"{r['variant']} ({r[f'delta_{self.primary}']}{unit})")
                exp = self.expected.get(r["variant"])
                got = {"helps": 1, "hurts": -1}.get(r["effect"], 0)
                if exp is not None and r["effect"] != "one seed" and exp != got:
                    missed.append(
                        f"{r['variant']}{f' at {value}' if self.sweep else ''} "
                        f"(expected {_EXPECT_WORDS[exp]}, measured {r['effect']})"
                    )
            better = "raised" if self.higher_is_better else "lowered"
            parts = []
            if words["helps"]:
                parts.append(
                    f"{join_names(words['helps'])} {better} {self.primary} beyond the 95 % interval"
                )
            if words["hurts"]:
                parts.append(f"{join_names(words['hurts'])} made it worse beyond the interval")
            if words["within noise"]:
                parts.append(f"{join_names(words['within noise'])} stayed within noise")
            if words["one seed"]:
                parts.append(
                    f"{join_names(words['one seed'])} ran with one seed only (no interval)"
                )
            out.append(
                where
                + ("; ".join(parts) or "no variant besides the baseline")
                + f" (vs {self.baseline})."
            )
        judged = [
            r
            for r in table
            if r["variant"] in self.expected and r.get("effect") not in (None, "one seed")
        ]
        if judged:
            if missed:
                out.append(
                    f"The expectation did not appear for {join_names(missed)}."
                    + (f" Regime: {self.regime}" if self.regime else "")
                )
            else:
                out.append("Every stated expectation appeared.")
        return out

    def _report(self, analysis: Analysis, wall: float) -> Path:
        workdir, findings = analysis.workdir, analysis.findings
        figures = list(self._default_figures(analysis)) + list(findings.figures)
        shown = [
            {k: v for k, v in r.items() if not k.endswith(("_mean", "_std"))}
            for r in analysis.table
        ]
        expectation = f"{self.expectation}\n\nSource: {self.source}"
        if self.regime:
            expectation += f"\n\nThis regime: {self.regime}"
        extra = "\n\n".join(findings.sections)
        path = report.write_experiment_report(
            workdir,
            title=self.title,
            question=self.question,
            expectation=expectation,
            table_rows=shown,
            verdict=analysis.verdict_text,
            figures=figures,
            extra_md=extra,
            smoke=analysis.smoke,
        )
        (workdir / "rows.json").write_text(
            json.dumps(
                [{k: v for k, v in r.items() if k != "pred"} for r in analysis.rows],
                indent=1,
                default=_json_default,
            )
            + "\n"
        )
        print(report.markdown_table(shown))
        print(("[smoke] " if analysis.smoke else "") + analysis.verdict_text)
        print(f"Report: {path} ({wall:.0f} s)")
        return path

    def _default_figures(self, analysis: Analysis) -> list[str]:
        table = [r for r in analysis.table if f"{self.primary}_mean" in r]
        if not table:
            return []
        if self.sweep is None or len({r.get(self.sweep[0]) for r in table}) < 2:
            agg = [
                {
                    "variant": r["variant"],
                    f"{self.primary}_mean": r[f"{self.primary}_mean"],
                    f"{self.primary}_std": r[f"{self.primary}_std"],
                }
                for r in table
            ]
            bar_plot(
                agg,
                self.primary,
                analysis.workdir / "primary.png",
                title=self.title,
                baseline=self.baseline if any(a["variant"] == self.baseline for a in agg) else None,
            )
            return ["primary.png"]
        series: dict[str, tuple[list, list, list]] = {}
        for r in table:
            x, m, s = series.setdefault(r["variant"], ([], [], []))
            x.append(r[self.sweep[0]])
            m.append(r[f"{self.primary}_mean"])
            s.append(r[f"{self.primary}_std"])
        xs = [v for x, _, _ in series.values() for v in x]
        # sweep values spanning a decade or more (e.g. training set sizes) on a log axis
        logx = all(_is_number(x) and x > 0 for x in xs) and max(xs) >= 10 * min(xs)
        line_plot(
            series,
            analysis.workdir / "primary.png",
            xlabel=self.sweep[0] + (" (log scale)" if logx else ""),
            ylabel=f"{self.primary} (mean ± std)",
            title=self.title,
            logx=logx,
        )
        return ["primary.png"]


_EXPECT_WORDS = {1: "a gain", 0: "no change beyond noise", -1: "a loss"}


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


@dataclasses.dataclass
class _Plan:
    training: ConfigDict
    params: ConfigDict
    seeds: tuple[int, ...]
    sweep: tuple
    variants: dict[str, dict[str, Any]]
    smoke: bool


class _Runner:
    """Runs a study's units in order, caching each unit's results in its folder."""

    def __init__(self, study: Study, plan: _Plan, workdir: Path):
        self.study, self.plan, self.workdir = study, plan, workdir
        self._splits: dict[tuple, dict] = {}
        self._data: dict[tuple, dict] = {}
        self._rows: list[dict] = []
        self.bar = None

    # ---- data: seed k -> training subset k for every variant
    def data(self, config: ConfigDict, seed: int) -> dict:
        if self.study.data is not None:
            key = ("custom", json.dumps(config.to_dict(), sort_keys=True, default=str), seed)
            if key not in self._data:
                args = (config, seed, self.plan.params)
                n = len(inspect.signature(self.study.data).parameters)
                self._data[key] = dict(self.study.data(*args[: max(2, min(n, 3))]))
            return self._data[key]
        from jaxreg import data as data_lib

        name = (config.data, config.data_dir)
        if name not in self._splits:
            self._splits[name] = data_lib.load_splits(config.data, data_dir=config.data_dir)
        splits = self._splits[name]
        per_class = config.train_per_class
        key = (name, per_class, float(config.imbalance_factor), seed)
        if key not in self._data:
            train = splits["train"]
            if per_class is not None:
                train = data_lib.stratified_subset(train, int(per_class), seed=seed)
            if float(config.imbalance_factor) != 1.0:
                ratios = data_lib.long_tail_ratios(
                    train.num_classes, float(config.imbalance_factor)
                )
                train = data_lib.imbalance(train, ratios, seed=seed)
            self._data[key] = {"train": train, "val": splits["val"], "test": splits["test"]}
        return self._data[key]

    # ---- folders and cache
    def unit_dir(self, stage: str, sweep: Any, variant: str | None, seed: int | None) -> Path:
        st = next((s for s in self.study.stages if s.name == stage), None)
        if st is None:
            raise ValueError(
                f"unknown stage {stage!r}; stages: {[s.name for s in self.study.stages]}"
            )
        d = self.workdir
        if self.study.sweep is not None and st.per_sweep:
            d = d / f"{self.study.sweep[0]}={sweep}"
        if st.per == "variant" and variant is not None:
            d = d / variant
        if st.per != "once" and seed is not None:
            d = d / f"seed{seed}"
        return d / stage if len(self.study.stages) > 1 else d

    def cached_result(self, stage: str, sweep: Any, variant: str | None, seed: int) -> dict:
        path = self.unit_dir(stage, sweep, variant, seed) / "result.json"
        if not path.exists():
            raise FileNotFoundError(f"stage {stage!r} has no result for {variant}, seed {seed} yet")
        return json.loads(path.read_text())

    def train(self, config, folder: Path, data, *, title: str, **kwargs) -> dict:
        done = folder / "results.json"
        if done.exists():
            return json.loads(done.read_text())

        return train_and_evaluate(config, folder, data=data, title=title, **kwargs)

    # ---- the units
    def _units(self, stage: Stage, sweep: Any) -> list[tuple[str | None, dict]]:
        if stage.per != "variant":
            return [(None, {})]
        if stage.variants is not None:
            prior = [r for r in self._rows if r["sweep"] == sweep]
            args = (prior, sweep, self.plan.params)
            n = len(inspect.signature(stage.variants).parameters)
            return list(stage.variants(*args[: max(2, min(n, 3))]).items())
        return list(self.plan.variants.items())

    def run_all(self) -> list[dict]:
        plan = self.plan
        total = 0
        for st in self.study.stages:
            seeds = len(plan.seeds) if st.per != "once" else 1
            variants = len(plan.variants) if st.per == "variant" and st.variants is None else 1
            total += (len(plan.sweep) if st.per_sweep else 1) * seeds * variants
        self.bar = tqdm(total=total, desc=self.study.name, unit="run", dynamic_ncols=True)
        try:
            for st in self.study.stages:
                for value in plan.sweep if st.per_sweep else (None,):
                    units = self._units(st, value)
                    if st.variants is not None:
                        self.bar.total += len(units) * len(plan.seeds) - len(plan.seeds)
                        self.bar.refresh()
                    seeds = plan.seeds if st.per != "once" else (plan.seeds[0],)
                    for variant, delta in units:
                        done = [
                            r for r in self._rows if r["stage"] == st.name and r["sweep"] == value
                        ]
                        if st.skip is not None and st.skip(done, variant, plan.params):
                            self.bar.total -= len(seeds)
                            self.bar.refresh()
                            continue
                        for seed in seeds:
                            self._rows.append(self._run_unit(st, value, variant, delta, seed))
                            self.bar.update(1)
        finally:
            self.bar.close()
        return self._rows

    def _run_unit(self, st: Stage, sweep: Any, variant, delta, seed: int) -> dict:
        if st.per_sweep:
            base = self.study._with_sweep(self.plan.training, self.plan.params, sweep)
        else:  # shared by every sweep value: the study's config as given
            base = ConfigDict(self.plan.training.to_dict())
        config = variant_config(base, delta, seed)
        if st.variants is not None:
            validate_config(config)
        folder = self.unit_dir(st.name, sweep, variant, seed)
        folder.mkdir(parents=True, exist_ok=True)
        unit = Unit(
            st.name, sweep, variant, seed, config, self.plan.params, folder, self.plan.smoke, self
        )
        cached = folder / "result.json"
        row = {
            "stage": st.name,
            "sweep": sweep,
            "variant": variant,
            "seed": seed,
            "dir": str(folder),
        }
        if cached.exists():
            row.update(json.loads(cached.read_text()))
            return self._finish(st, unit, row)
        if self.study.min_steps and st.fn is None:
            n = len(unit.data["train"])
            config.epochs = epochs_for(
                n, int(config.batch_size), int(config.epochs), self.study_min_steps()
            )
            unit.config = config
        result = self._compute(st, unit)
        cached.write_text(json.dumps(result, indent=1, default=_json_default) + "\n")
        row.update(result)
        row = self._finish(st, unit, row)
        self.bar.write(_describe(row, self.study.primary))
        return row

    def _finish(self, st: Stage, unit: Unit, row: dict) -> dict:
        row["pred"] = self._predictions(unit.dir)
        if st.derive is not None and not row.get("diverged"):
            row.update(st.derive(row, unit))
        return row

    def study_min_steps(self) -> int:
        return int(self.plan.params.min_steps)

    def _compute(self, st: Stage, unit: Unit) -> dict:
        from jaxreg.train.loop import NonFiniteLossError

        try:
            if st.fn is not None:
                return dict(st.fn(unit))
            extra = _extra_sets(st.extra_eval, unit) if st.extra_eval is not None else None
            r = unit.train(name=".", extra_eval=extra)
        except NonFiniteLossError as err:
            return {"diverged": True, "error": str(err), **dict.fromkeys(self.study.metrics)}
        out = {k: v for k, v in r.items() if k not in ("history", "state", "model")}
        if st.keep_predictions:
            self._save_predictions(unit, r, extra or {})
        return out

    def _save_predictions(self, unit: Unit, r: dict, extra: Mapping[str, Any]) -> None:
        from jaxreg.train.step import predict

        sets = {"val": unit.data["val"], "test": unit.data["test"], **extra}
        preds = {
            k: np.asarray(np.argmax(np.asarray(predict(r["state"], ds.images)), -1), np.int16)
            for k, ds in sets.items()
        }
        np.savez(unit.dir / "predictions.npz", **preds)

    def _predictions(self, folder: Path) -> dict | None:
        path = folder / "predictions.npz"
        if not path.exists():
            return None
        with np.load(path) as z:
            return {k: z[k] for k in z.files}


def _extra_sets(fn: Callable[..., Mapping[str, Any]], unit: Unit) -> Mapping[str, Any]:
    """`fn(config, data)`, or `fn(config, data, params)` for a function of three parameters."""
    try:
        takes_params = len(inspect.signature(fn).parameters) >= 3
    except (TypeError, ValueError):  # a callable without a signature: the two-argument form
        takes_params = False
    if takes_params:
        return fn(unit.config, unit.data, unit.params)
    return fn(unit.config, unit.data)


def _describe(row: Mapping[str, Any], primary: str) -> str:
    who = " ".join(
        str(x)
        for x in (row["sweep"], row["variant"], f"seed {row['seed']}", row["stage"])
        if x is not None
    )
    if row.get("diverged"):
        return f"  {who}: diverged"
    value = row.get(primary)
    return f"  {who}: {primary} {value:.4f}" if isinstance(value, float) else f"  {who}: done"


@contextlib.contextmanager
def workdir_lock(workdir: Path):
    """The workdir's lock for the study (re-entrant: the CLI may hold it already)."""
    from jaxreg.train import workdir as workdir_lib

    with workdir_lib.lock(workdir):
        yield
