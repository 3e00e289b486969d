"""Run and experiment reports: metrics.jsonl reading, overfitting onset, curve PNGs, Markdown and HTML."""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import mimetypes
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "format_value",
    "html_index",
    "markdown_table",
    "mean_std",
    "overfitting_onset",
    "plot_curves",
    "read_metrics",
    "write_experiment_report",
    "write_run_report",
]

_log = logging.getLogger(__name__)

_LOSS_KEYS = ("train_loss", "val_loss")
_ACC_KEYS = ("train_accuracy", "val_accuracy")


# --------------------------------------------------------------------------- metrics file


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Reads the per-epoch records that the training loop appends to `metrics.jsonl`.

    Each non-blank line is one JSON object with at least an integer `"epoch"` (1-based);
    other keys (`train_loss`, `val_accuracy`, `lr`, `val_ece`, ...) are passed
    through untouched. `NaN`/`Infinity` written by Python's `json` are accepted.

    Robustness rules:
      * A last line that does not parse (a process killed mid-write) is skipped with a
        log warning; an unparsable line anywhere else is corruption and raises.
      * If an epoch appears more than once (a run resumed from an older checkpoint
        re-writes epochs), the last record for that epoch wins.
      * Records are returned sorted by epoch.

    Args:
      path: the `metrics.jsonl` file.

    Returns:
      A list of dicts, one per epoch, sorted by `"epoch"`. An empty file gives `[]`.

    Raises:
      FileNotFoundError: `path` does not exist.
      ValueError: a complete line is not a JSON object or lacks an integer `"epoch"`.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    numbered = [(i + 1, line) for i, line in enumerate(text.splitlines()) if line.strip()]
    by_epoch: dict[int, dict] = {}
    for k, (lineno, line) in enumerate(numbered):
        is_last = k == len(numbered) - 1
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if is_last:
                _log.warning("%s: skipping truncated last line %d (%s)", path, lineno, e)
                break
            raise ValueError(f"path {str(path)!r}: line {lineno} is not valid JSON: {e}") from e
        if not isinstance(record, dict):
            raise ValueError(
                f"path {str(path)!r}: line {lineno} must be a JSON object; "
                f"got {type(record).__name__}."
            )
        epoch = record.get("epoch")
        if isinstance(epoch, bool) or not isinstance(epoch, int):
            raise ValueError(
                f"path {str(path)!r}: line {lineno} needs an integer 'epoch' key; got {epoch!r}."
            )
        by_epoch[epoch] = record
    return [by_epoch[e] for e in sorted(by_epoch)]


# --------------------------------------------------------------------------- validation


def _check_history(history: Any, name: str = "history") -> list[Mapping]:
    if isinstance(history, (str, bytes, Mapping)) or not isinstance(history, Sequence):
        raise TypeError(
            f"{name} must be a list of dicts (one per epoch); got {type(history).__name__}."
        )
    for i, rec in enumerate(history):
        if not isinstance(rec, Mapping):
            raise TypeError(f"{name}[{i}] must be a dict; got {type(rec).__name__}.")
    return list(history)


def _require_keys(history: list[Mapping], keys: Sequence[str], name: str = "history") -> None:
    for i, rec in enumerate(history):
        missing = [k for k in keys if k not in rec]
        if missing:
            raise ValueError(
                f"{name}[{i}] (epoch {rec.get('epoch', '?')}) is missing key(s) {missing}; "
                f"required: {list(keys)}."
            )


def _as_float(value: Any) -> float:
    """A metric value as float; None and anything non-numeric become NaN."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _series(history: list[Mapping], key: str) -> np.ndarray:
    return np.array([_as_float(rec.get(key)) for rec in history], dtype=np.float64)


def _check_epoch_arg(value: Any, name: str, epochs: np.ndarray) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int epoch or None; got {type(value).__name__}.")
    value = int(value)
    lo, hi = np.nanmin(epochs), np.nanmax(epochs)
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be an epoch in the history [{lo:g}, {hi:g}]; got {value}.")
    return value


# --------------------------------------------------------------------------- onset detection


def overfitting_onset(
    history: Sequence[Mapping],
    *,
    patience: int = 2,
    min_delta: float = 0.0,
    rel_delta: float = 0.0,
    train_key: str = "train_accuracy",
) -> int | None:
    """Finds the epoch where validation loss starts to rise while training accuracy still rises.

    Exact rule. Let `m` be the epoch of the lowest finite `val_loss` of the whole
    history (the first one on ties) and `delta = max(min_delta, rel_delta * val_loss[m])`.
    A record `j` after `m` is *rising* when both hold:

      * `val_loss[j] > val_loss[m] + delta` (finite), and
      * `train_accuracy[j] >= train_accuracy[m]` (both finite): training accuracy still
        rises or holds (a model already at 100 % cannot rise further, yet overfits).

    The onset is the first epoch of the first run of `patience` *consecutive* rising
    records after `m`. A record within `delta` of the minimum (noise), a rising val loss
    with train accuracy not above its value at `m` (underfitting / instability) or a
    non-finite value ends a run. Using the global minimum means a dip followed by a lower
    minimum later is not reported (a noisy curve that keeps improving is not overfitting).

    The returned epoch is the **first epoch of the rise** (`m`, the validation-loss
    minimum that early stopping would restore, is before it; usually `onset - 1`).
    Short histories and an empty history give `None`.

    Args:
      history: per-epoch dicts with keys `"epoch"`, `"val_loss"` and
        `"train_accuracy"` (values may be NaN or None), in epoch order.
      patience: int >= 1, consecutive rising epochs needed.
      min_delta: float >= 0, how far above the minimum the val loss must be to count.
      rel_delta: float >= 0, the same as a fraction of the minimum (e.g. 0.05 = 5 %).
      train_key: the training signal that must still improve: `"train_accuracy"` (higher
        is better), or `"train_loss"` for tasks without accuracy (lower is better: the rule
        reads `train_loss[j] <= train_loss[m]`).

    Returns:
      The epoch (as stored in `"epoch"`) where the rise starts, or `None`.

    Raises:
      TypeError: `history` is not a list of dicts, or `patience` is not an int.
      ValueError: a record misses one of the keys above; `patience < 1`;
        `min_delta`/`rel_delta` negative or not finite.
    """
    history = _check_history(history)
    if isinstance(patience, bool) or not isinstance(patience, numbers.Integral):
        raise TypeError(f"patience must be an int >= 1; got {type(patience).__name__}.")
    if patience < 1:
        raise ValueError(f"patience must be >= 1; got {patience}.")
    for name, value in (("min_delta", min_delta), ("rel_delta", rel_delta)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a float >= 0; got {type(value).__name__}.")
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite float >= 0; got {value}.")
    if train_key not in ("train_accuracy", "train_loss"):
        raise ValueError(f"train_key must be 'train_accuracy' or 'train_loss'; got {train_key!r}.")
    _require_keys(history, ("epoch", "val_loss", train_key))

    val = _series(history, "val_loss")
    acc = _series(history, train_key)
    if train_key == "train_loss":  # lower is better: negate so the rule reads the same
        acc = [-a for a in acc]
    finite = [j for j in range(len(history)) if math.isfinite(val[j])]
    if not finite:
        return None
    m = min(finite, key=lambda j: (val[j], j))
    best = val[m]
    delta = max(float(min_delta), float(rel_delta) * abs(best))
    run_start, run_len = -1, 0
    for j in range(m + 1, len(history)):
        v, a = val[j], acc[j]
        rising = (
            math.isfinite(v)
            and v > best + delta
            and math.isfinite(a)
            and math.isfinite(acc[m])
            and a >= acc[m]
        )
        if not rising:
            run_start, run_len = -1, 0
            continue
        if run_len == 0:
            run_start = j
        run_len += 1
        if run_len >= patience:
            return int(history[run_start]["epoch"])
    return None


# --------------------------------------------------------------------------- plotting


def plot_curves(
    history: Sequence[Mapping],
    path: str | os.PathLike,
    *,
    onset: int | None = None,
    best_epoch: int | None = None,
    title: str | None = None,
) -> Path:
    """Writes a PNG with two panels: loss and accuracy per epoch, train vs validation.

    Series missing from a record (or NaN) leave a gap. The loss panel needs `train_loss` or
    `val_loss`. The second panel shows `train_accuracy`/`val_accuracy`; a history without
    them (e.g. a reconstruction task) shows its first other validation metric there (e.g.
    `val_psnr`), or no second panel when it has none.
    Vertical markers: a dashed red line at `onset` (overfitting onset) and a dotted
    green line at `best_epoch` (the restored / best epoch), both in the legend.

    Args:
      history: per-epoch dicts with an `"epoch"` key and the metric keys above.
      path: output PNG path; parent folders are created.
      onset: epoch of the overfitting onset to mark, or None.
      best_epoch: epoch of the best (restored) model to mark, or None.
      title: optional figure title.

    Returns:
      The path written.

    Raises:
      TypeError: `history` not a list of dicts; `onset`/`best_epoch` not ints;
        `title` not a str.
      ValueError: empty `history`; a record without `"epoch"`; a panel with none of its
        series; `onset`/`best_epoch` outside the history's epochs.
    """
    history = _check_history(history)
    if not history:
        raise ValueError("history is empty; nothing to plot.")
    _require_keys(history, ("epoch",))
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a str or None; got {type(title).__name__}.")
    if not any(k in rec for rec in history for k in _LOSS_KEYS):
        raise ValueError(
            f"history has none of the keys {list(_LOSS_KEYS)}; at least one is needed."
        )
    panels = [(_LOSS_KEYS, "loss")]
    if any(k in rec for rec in history for k in _ACC_KEYS):
        panels.append((_ACC_KEYS, "accuracy"))
    else:
        other = [
            k[len("val_") :]
            for k in history[0]
            if k.startswith("val_") and k != "val_loss" and isinstance(history[0][k], numbers.Real)
        ]
        if other:
            panels.append(((f"train_{other[0]}", f"val_{other[0]}"), other[0]))
    epochs = _series(history, "epoch")
    if np.isnan(epochs).any():
        raise ValueError("history: every 'epoch' must be a number.")
    onset = _check_epoch_arg(onset, "onset", epochs)
    best_epoch = _check_epoch_arg(best_epoch, "best_epoch", epochs)

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(5.0 * len(panels), 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    for col, (keys, ylabel) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), col + 1)
        for key, style in zip(keys, ("-o", "-s")):
            if any(key in rec for rec in history):
                label = "train" if key.startswith("train") else "validation"
                ax.plot(epochs, _series(history, key), style, markersize=3, label=label)
        if onset is not None:
            ax.axvline(
                onset,
                color="tab:red",
                linestyle="--",
                linewidth=1.2,
                label=f"overfitting onset (epoch {onset})",
            )
        if best_epoch is not None:
            ax.axvline(
                best_epoch,
                color="tab:green",
                linestyle=":",
                linewidth=1.5,
                label=f"best epoch ({best_epoch})",
            )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path


# --------------------------------------------------------------------------- formatting


def _plain(value: Any) -> Any:
    """Numpy scalars/arrays to Python values (for formatting and JSON)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def format_value(value: Any, floatfmt: str = ".4f") -> str:
    """Formats one table cell.

    `None` -> `""`; bools and ints as is; floats with `floatfmt`, except that a
    fixed-point format (`"f"`) switches to 3 significant digits (`".3g"`) for a
    nonzero `|value| < 1e-3` (e.g. a learning rate of `3e-4`), one it would show as
    zero, or `|value| >= 1e6`; NaN/inf as
    `nan`/`inf`/`-inf`; strings as is; other objects (lists, dicts) as compact JSON.

    Args:
      value: the cell value (numpy scalars are accepted).
      floatfmt: a `format` spec for floats.

    Returns:
      The formatted string.
    """
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, (bool, numbers.Integral)):
        return str(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        if not math.isfinite(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        out = format(value, floatfmt)
        if floatfmt.endswith("f") and value != 0:
            try:
                shown = float(out.replace(",", "").replace("_", ""))
            except ValueError:
                return out
            if abs(value) >= 1e6 or abs(value) < 1e-3 or shown == 0.0:
                out = format(value, ".3g")
        return out
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, default=str, separators=(",", ":"))
    except (TypeError, ValueError):
        return str(value)


def mean_std(values: Sequence[float], *, fmt: str = ".3f", ddof: int = 1) -> str:
    """Formats a metric over seeds as `"mean ± std"`, e.g. `"0.912 ± 0.004"`.

    The std is the sample standard deviation (`ddof=1`) by default. A single value is
    shown alone (its std is undefined). NaN values are kept, so a diverged seed shows as
    `"nan ± nan"` instead of being hidden.

    Args:
      values: the per-seed values (a non-empty 1-D sequence of numbers).
      fmt: a `format` spec used for both the mean and the std.
      ddof: delta degrees of freedom for the std (0 = population std).

    Returns:
      The formatted string.

    Raises:
      TypeError: `values` is a string or a scalar.
      ValueError: `values` is empty or not 1-D.
    """
    if isinstance(values, (str, bytes)) or np.ndim(values) == 0:
        raise TypeError(f"values must be a sequence of numbers; got {type(values).__name__}.")
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"values must be 1-D; got shape {arr.shape}.")
    if arr.size == 0:
        raise ValueError("values is empty.")
    mean = float(np.mean(arr))
    if arr.size <= ddof:
        return format(mean, fmt)
    return f"{format(mean, fmt)} ± {format(float(np.std(arr, ddof=ddof)), fmt)}"


def _check_rows(rows: Any, name: str) -> list[Mapping]:
    if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Sequence):
        raise TypeError(f"{name} must be a list of dicts; got {type(rows).__name__}.")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"{name}[{i}] must be a dict; got {type(row).__name__}.")
    return list(rows)


def _columns(rows: list[Mapping], columns: Sequence[str] | None) -> list[str]:
    if columns is None:
        cols: dict[str, None] = {}
        for row in rows:
            for k in row:
                cols.setdefault(str(k), None)
        return list(cols)
    if isinstance(columns, str) or not isinstance(columns, Sequence):
        raise TypeError(f"columns must be a list of str or None; got {type(columns).__name__}.")
    return [str(c) for c in columns]


def _is_numeric(value: Any) -> bool:
    value = _plain(value)
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def markdown_table(
    rows: Sequence[Mapping], columns: Sequence[str] | None = None, floatfmt: str = ".4f"
) -> str:
    r"""Renders dicts as a GitHub-flavoured Markdown table.

    Columns default to the union of the rows' keys in first-seen order; a missing cell is
    empty. Cells are formatted by `format_value`; `|` is escaped and newlines
    become spaces. Columns whose non-empty cells are all numbers are right-aligned.

    Args:
      rows: list of dicts, one per table row.
      columns: column names (keys) in order, or None for all keys.
      floatfmt: `format` spec for floats, e.g. `".4f"` or `".3g"`.

    Returns:
      The table, lines joined by `"\n"`, with a trailing newline.

    Raises:
      TypeError: `rows` is not a list of dicts, or `columns` not a list of str.
      ValueError: no rows and no `columns` (nothing to render).
    """
    rows = _check_rows(rows, "rows")
    cols = _columns(rows, columns)
    if not cols:
        raise ValueError("rows is empty and no columns were given; nothing to render.")
    lookup = [{str(k): v for k, v in row.items()} for row in rows]
    body = [[_md_escape(format_value(r.get(c), floatfmt)) for c in cols] for r in lookup]
    aligns = []
    for c in cols:
        present = [r[c] for r in lookup if r.get(c) is not None]
        aligns.append("---:" if present and all(_is_numeric(v) for v in present) else "---")
    lines = [
        "| " + " | ".join(_md_escape(c) for c in cols) + " |",
        "| " + " | ".join(aligns) + " |",
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- run report


def _config_dict(config: Any) -> Any:
    if isinstance(config, Mapping):
        return dict(config)
    to_dict = getattr(config, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    raise TypeError(f"config must be a dict (or have .to_dict()); got {type(config).__name__}.")


def _json_default(obj: Any) -> Any:
    plain = _plain(obj)
    if plain is not obj:
        return plain
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    return repr(obj)


def _check_str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str; got {type(value).__name__}.")
    return value


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _fence(text: str, lang: str = "") -> str:
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return f"{ticks}{lang}\n{text}\n{ticks}"


def write_run_report(
    workdir: str | os.PathLike,
    *,
    title: str,
    config: Mapping,
    history: Sequence[Mapping],
    results: Mapping,
    notes: Sequence[str] | None = None,
    onset_patience: int = 2,
    onset_min_delta: float = 0.0,
    onset_rel_delta: float = 0.05,
) -> Path:
    """Writes `workdir/report.md` for one training run (and `workdir/curves.png`).

    The report has: the title; a results table (one row per `results` item, in order,
    floats via `format_value`); the overfitting-onset statement ("Validation loss
    started rising at epoch N while training accuracy kept rising." or "No overfitting
    onset detected in N epochs."), using `overfitting_onset`; notes as a bullet
    list; the loss/accuracy curves (`curves.png`, written by `plot_curves`, with
    `results["best_epoch"]` marked when it is an epoch of the history); the per-epoch
    metrics and the config (as JSON), each in a collapsed `<details>` block.
    With an empty history the report is still written, without curves.

    Args:
      workdir: the run folder (created if missing).
      title: report title.
      config: the run's config (a dict, or an object with `.to_dict()` such as
        `ml_collections.ConfigDict`); non-JSON values are shown with `repr`.
      history: per-epoch dicts as returned by `read_metrics`.
      results: final numbers, e.g. `{"test_accuracy": 0.91, "best_epoch": 7}`.
      notes: optional lines added as a bullet list.
      onset_patience: `patience` for `overfitting_onset`.
      onset_min_delta: `min_delta` for `overfitting_onset`.
      onset_rel_delta: `rel_delta` for `overfitting_onset` (default 5 % of the
        minimum validation loss, so epoch-to-epoch noise is not called overfitting).

    Returns:
      The path of `report.md`.

    Raises:
      TypeError: an argument has the wrong type (named in the message).
      ValueError: records miss `"epoch"`/`"val_loss"`/`"train_accuracy"`, or bad
        onset options.
    """
    title = _check_str(title, "title")
    cfg = _config_dict(config)
    history = _check_history(history)
    if not isinstance(results, Mapping):
        raise TypeError(f"results must be a dict; got {type(results).__name__}.")
    if notes is not None:
        if isinstance(notes, str) or not isinstance(notes, Sequence):
            raise TypeError(f"notes must be a list of str or None; got {type(notes).__name__}.")
        for i, n in enumerate(notes):
            _check_str(n, f"notes[{i}]")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    train_key = "train_accuracy" if all("train_accuracy" in r for r in history) else "train_loss"
    onset = overfitting_onset(
        history,
        patience=onset_patience,
        min_delta=onset_min_delta,
        rel_delta=onset_rel_delta,
        train_key=train_key,
    )
    n = len(history)
    if onset is not None:
        signal = "accuracy kept rising" if train_key == "train_accuracy" else "loss kept falling"
        onset_md = (
            f"Validation loss started rising at epoch {onset} while training {signal} "
            f"(patience {onset_patience}, min_delta {onset_min_delta:g}, "
            f"rel_delta {onset_rel_delta:g})."
        )
    else:
        onset_md = f"No overfitting onset detected in {n} epoch{'s' if n != 1 else ''}."

    smoke = bool(cfg.get("smoke"))
    parts = [f"# {SMOKE_MARK + ' ' if smoke else ''}{_one_line(title)}", ""]
    if smoke:
        parts += [f"> {SMOKE_NOTE}", ""]
    parts += ["## Results", ""]
    if smoke:
        parts += [f"{SMOKE_MARK} (smoke run: sizes shrunk to seconds)", ""]
    if results:
        rows = [{"metric": str(k), "value": v} for k, v in results.items()]
        parts += [markdown_table(rows, ["metric", "value"]).rstrip("\n"), ""]
    else:
        parts += ["(no results)", ""]
    parts += ["## Overfitting", "", onset_md, ""]
    if notes:
        parts += ["## Notes", ""] + [f"- {line}" for line in notes] + [""]

    parts += ["## Curves", ""]
    if n:
        epochs = _series(history, "epoch")
        best = _plain(results.get("best_epoch"))
        best_epoch = (
            int(best)
            if isinstance(best, numbers.Integral)
            and not isinstance(best, bool)
            and np.nanmin(epochs) <= best <= np.nanmax(epochs)
            else None
        )
        plot_curves(
            history, workdir / "curves.png", onset=onset, best_epoch=best_epoch, title=title
        )
        parts += ["![Loss and accuracy per epoch](curves.png)", ""]
        metric_cols = ["epoch"] + [c for c in _columns(history, None) if c != "epoch"]
        parts += [
            "<details><summary>Per-epoch metrics</summary>",
            "",
            markdown_table(history, metric_cols).rstrip("\n"),
            "",
            "</details>",
            "",
        ]
    else:
        parts += ["No epochs recorded; no curves.", ""]

    cfg_json = json.dumps(cfg, indent=2, default=_json_default)
    parts += [
        "## Config",
        "",
        "<details><summary>Config</summary>",
        "",
        _fence(cfg_json, "json"),
        "",
        "</details>",
        "",
    ]
    path = workdir / "report.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- experiment report


def _figure_name(workdir: Path, fig: Any, i: int) -> str:
    if not isinstance(fig, (str, os.PathLike)):
        raise TypeError(f"figures[{i}] must be a path (str); got {type(fig).__name__}.")
    p = Path(fig)
    full = p if p.is_absolute() else workdir / p
    try:
        rel = full.resolve().relative_to(workdir.resolve())
    except ValueError:
        raise ValueError(
            f"figures[{i}] must be inside workdir {str(workdir)!r}; got {str(fig)!r}."
        ) from None
    if not full.is_file():
        raise ValueError(f"figures[{i}]: file {str(full)!r} does not exist.")
    return rel.as_posix()


def write_experiment_report(
    workdir: str | os.PathLike,
    *,
    title: str,
    question: str,
    expectation: str,
    table_rows: Sequence[Mapping],
    verdict: str,
    figures: Sequence[str],
    extra_md: str = "",
    smoke: bool = False,
) -> Path:
    """Writes `workdir/report.md` and `workdir/summary.json` for one experiment.

    `summary.json` holds `title`, `question`, `expectation`, `verdict`,
    `table_rows` and `figures` (file names relative to `workdir`), which is what
    `html_index` collects. The report shows the same plus `extra_md` at the end.

    Args:
      workdir: the experiment run folder (created if missing).
      title: experiment title.
      question: the question the experiment answers.
      expectation: what we expected before running it.
      table_rows: result rows (list of dicts, e.g. one per method with `mean_std`
        strings); values must be JSON-serialisable or numpy scalars.
      verdict: the answer, as found.
      figures: image files (PNG, JPEG, SVG, GIF) already saved inside `workdir`, given
        relative to it or as absolute paths inside it.
      extra_md: extra Markdown appended to the report (not stored in the summary).
      smoke: the numbers come from a smoke run (shrunk to seconds): the report, its table and
        its verdict say so, and `summary.json` records it.

    Returns:
      The path of `report.md`.

    Raises:
      TypeError: an argument has the wrong type (named in the message).
      ValueError: a figure is missing or outside `workdir`.
    """
    title = _check_str(title, "title")
    question = _check_str(question, "question")
    expectation = _check_str(expectation, "expectation")
    verdict = _check_str(verdict, "verdict")
    extra_md = _check_str(extra_md, "extra_md")
    rows = _check_rows(table_rows, "table_rows")
    if isinstance(figures, str) or not isinstance(figures, Sequence):
        raise TypeError(f"figures must be a list of file names; got {type(figures).__name__}.")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    names = [_figure_name(workdir, f, i) for i, f in enumerate(figures)]
    if smoke:
        verdict = f"{SMOKE_MARK} {verdict}"

    parts = [f"# {_one_line(title)}", ""]
    if smoke:
        parts += [f"> {SMOKE_NOTE}", ""]
    parts += [
        "## Question",
        "",
        question,
        "",
        "## Expectation",
        "",
        expectation,
        "",
        "## Results",
        "",
    ]
    if smoke:
        parts += [f"{SMOKE_MARK} (smoke run: sizes shrunk to seconds)", ""]
    parts += [markdown_table(rows).rstrip("\n") if rows else "(no rows)", ""]
    parts += ["## Verdict", "", verdict, ""]
    if names:
        parts += ["## Figures", ""] + [f"![{name}]({name})\n" for name in names]
    if extra_md.strip():
        parts += [extra_md.rstrip("\n"), ""]
    path = workdir / "report.md"
    path.write_text("\n".join(parts), encoding="utf-8")

    summary = {
        "title": title,
        "question": question,
        "expectation": expectation,
        "verdict": verdict,
        "table_rows": [dict(r) for r in rows],
        "figures": names,
        "smoke": bool(smoke),
    }
    (workdir / "summary.json").write_text(
        json.dumps(summary, indent=2, default=_json_default) + "\n", encoding="utf-8"
    )
    return path


# --------------------------------------------------------------------------- HTML index

SMOKE_MARK = "[smoke]"
SMOKE_NOTE = (
    "Smoke run: every size was shrunk so that it finishes in seconds. The numbers test that "
    "the code runs; they say nothing about the question."
)

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
section { border-top: 1px solid #ccc; padding-top: 1em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; }
.text { white-space: pre-wrap; }
.verdict { background: #f5f9f0; border-left: 4px solid #6a4; padding: 0.5em 0.8em; }
.error { color: #a00; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
.run { color: #777; font-size: 0.85em; }
.smoke { background: #fff4e0; border-left: 4px solid #e90; padding: 0.4em 0.8em; }
"""


def _html_table(rows: list[Mapping]) -> str:
    if not rows:
        return "<p>(no rows)</p>"
    cols = _columns(rows, None)
    lookup = [{str(k): v for k, v in row.items()} for row in rows]
    out = [
        "<table>",
        "<thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr></thead>",
        "<tbody>",
    ]
    for r in lookup:
        cells = []
        for c in cols:
            v = r.get(c)
            cls = ' class="num"' if _is_numeric(v) else ""
            cells.append(f"<td{cls}>{html.escape(format_value(v))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out += ["</tbody>", "</table>"]
    return "\n".join(out)


def _data_uri(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"data:{mime};base64,{data}"


def _html_section(run_dir: Path, anchor: str) -> tuple[str, str]:
    """Returns (title, section HTML) for one run folder."""
    esc = html.escape
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        if not isinstance(summary, dict):
            raise ValueError("summary.json is not a JSON object")
    except (OSError, ValueError) as e:
        title = run_dir.name
        body = f'<p class="error">Could not read summary.json: {esc(str(e))}</p>'
        return title, f'<section id="{esc(anchor)}">\n<h2>{esc(title)}</h2>\n{body}\n</section>'
    title = str(summary.get("title") or run_dir.name)
    if summary.get("smoke"):
        title = f"{SMOKE_MARK} {title}"
    out = [
        f'<section id="{esc(anchor)}">',
        f"<h2>{esc(title)}</h2>",
        f'<p class="run">folder: {esc(str(run_dir))}</p>',
    ]
    if summary.get("smoke"):
        out.append(f'<p class="smoke">{esc(SMOKE_NOTE)}</p>')
    for key, heading in (("question", "Question"), ("expectation", "Expectation")):
        if summary.get(key):
            out += [f"<h3>{heading}</h3>", f'<p class="text">{esc(str(summary[key]))}</p>']
    rows = summary.get("table_rows") or []
    if isinstance(rows, list) and all(isinstance(r, dict) for r in rows):
        out += ["<h3>Results</h3>", _html_table(rows)]
    else:
        out.append('<p class="error">table_rows is not a list of objects.</p>')
    if summary.get("verdict"):
        out += ["<h3>Verdict</h3>", f'<p class="text verdict">{esc(str(summary["verdict"]))}</p>']
    figures = summary.get("figures") or []
    if figures:
        out.append("<h3>Figures</h3>")
    for name in figures:
        fig = run_dir / str(name)
        if fig.is_file():
            out.append(
                f'<figure><img src="{_data_uri(fig)}" alt="{esc(str(name))}">'
                f"<figcaption>{esc(str(name))}</figcaption></figure>"
            )
        else:
            out.append(f'<p class="error">Missing figure: {esc(str(name))}</p>')
    out.append("</section>")
    return title, "\n".join(out)


def _single_run_section(run_dir: Path, anchor: str) -> tuple[str, str]:
    """Returns (title, section HTML) for one `train_and_evaluate` folder."""
    esc = html.escape
    try:
        results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
        config = {}
        if (run_dir / "config.json").is_file():
            config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        body = f'<p class="error">Could not read results.json: {esc(str(e))}</p>'
        return (
            run_dir.name,
            f'<section id="{esc(anchor)}">\n<h2>{esc(run_dir.name)}</h2>\n{body}\n</section>',
        )
    smoke = bool(config.get("smoke"))
    title = f"run {run_dir.name}" + (
        f" ({config['data']}, {config.get('model')})" if "data" in config else ""
    )
    if smoke:
        title = f"{SMOKE_MARK} {title}"
    rows = [
        {"metric": k, "value": v}
        for k, v in results.items()
        if (isinstance(v, (int, float, str)) and not isinstance(v, bool)) or v is None
    ]
    out = [
        f'<section id="{esc(anchor)}">',
        f"<h2>{esc(title)}</h2>",
        f'<p class="run">folder: {esc(str(run_dir))}</p>',
    ]
    if smoke:
        out.append(f'<p class="smoke">{esc(SMOKE_NOTE)}</p>')
    out += ["<h3>Results</h3>", _html_table(rows)]
    curves = run_dir / "curves.png"
    if curves.is_file():
        out.append(f'<figure><img src="{_data_uri(curves)}" alt="curves"></figure>')
    out.append("</section>")
    return title, "\n".join(out)


def find_runs(root: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """Experiment folders and single-run folders under `root` (which may itself be either).

    An experiment folder holds `summary.json`; a single run holds `results.json` (from
    `train_and_evaluate`) and is not inside an experiment folder (an experiment's own runs are
    summarised by the experiment).

    Returns:
      `(experiments, runs)`, each sorted by path.
    """
    root = Path(root)
    experiments = sorted({p.parent for p in root.rglob("summary.json")})
    runs = sorted(
        p.parent
        for p in root.rglob("results.json")
        if not (p.parent / "summary.json").exists()
        and not any(e == p.parent or e in p.parent.parents for e in experiments)
    )
    return experiments, runs


def html_index(root: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Writes one self-contained HTML page of every experiment and single run under `root`.

    `root` may be a folder of many runs (e.g. `runs/`), one experiment's folder or one run's
    folder. One section per experiment (`summary.json`) and per single `train_and_evaluate`
    run (`results.json` outside any experiment), with a table of contents: title, question,
    expectation, the results table, the verdict and the figures (a run's `curves.png`)
    embedded as base64 `data:` URIs, so the page works when moved or opened from disk. Smoke
    runs are marked in the table of contents, the section title and above every table. All
    text is HTML-escaped. A folder whose files cannot be read gets a section with the error
    instead of aborting the index; a missing figure file is noted in place.

    Args:
      root: a folder holding runs or experiments, or one of them.
      out_path: the HTML file to write (parent folders are created).

    Returns:
      The path written.

    Raises:
      ValueError: `root` is not an existing folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"root must be an existing folder; got {str(root)!r}.")
    experiments, runs = find_runs(root)
    run_dirs = experiments + runs
    sections, toc = [], []
    for k, run_dir in enumerate(run_dirs):
        anchor = f"exp-{k}"
        make = _html_section if run_dir in experiments else _single_run_section
        title, section = make(run_dir, anchor)
        sections.append(section)
        toc.append(
            f'<li><a href="#{anchor}">{html.escape(title)}</a> '
            f'<span class="run">({html.escape(str(run_dir.relative_to(root)) if run_dir != root else run_dir.name)})</span></li>'
        )
    page = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        "<title>jaxreg experiments</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<h1>jaxreg experiments</h1>",
    ]
    if run_dirs:
        page += [
            f"<p>{len(experiments)} experiment(s), {len(runs)} single run(s).</p>",
            "<ul>",
        ]
        page += toc + ["</ul>"]
        page += sections
    else:
        page.append(f"<p>No experiments or runs found under {html.escape(str(root))}.</p>")
    page += ["</body>", "</html>", ""]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("\n".join(page), encoding="utf-8")
    return out_path
