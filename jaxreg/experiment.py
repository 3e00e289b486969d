"""Helpers for experiment modules: run variants over seeds, aggregate mean ± std, bar plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from ml_collections import ConfigDict

from jaxreg import report
from jaxreg.train.loop import prepare_data, train_and_evaluate

METRICS = ("val_accuracy", "test_accuracy", "test_loss", "test_ece", "best_epoch", "zero_fraction")


def variant_config(base: ConfigDict, overrides: Mapping[str, Any], seed: int) -> ConfigDict:
    """A copy of ``base`` with ``overrides`` (dotted keys allowed) and ``seed`` set.

    Unknown keys raise ``ValueError`` naming the key.
    """
    c = ConfigDict(base.to_dict())
    for key, value in overrides.items():
        node = c
        parts = key.split(".")
        for part in parts[:-1]:
            node = node[part]
        if parts[-1] not in node:
            raise ValueError(f"unknown config key {key!r} in variant overrides")
        node[parts[-1]] = value
    c.seed = int(seed)
    return c


def run_variants(base: ConfigDict, workdir: str | Path, variants: Mapping[str, Mapping[str, Any]], *,
                 seeds: Sequence[int], data: Mapping[str, Any] | None = None,
                 data_fn: Callable[[ConfigDict, int], Mapping[str, Any]] | None = None,
                 augment_fns: Mapping[str, Callable] | None = None,
                 extra_eval: Mapping[str, Any] | None = None,
                 log: Callable[[str], None] = print) -> list[dict]:
    """Trains every variant with every seed; returns one row per (variant, seed).

    Each run lives in ``workdir/<variant>/seed<k>`` (so a killed experiment resumes where it
    stopped: finished runs are read back from their ``results.json``).

    Args:
      base: the experiment's base config.
      workdir: output folder.
      variants: name -> config overrides.
      seeds: seeds; each changes initialisation, shuffling, augmentation and dropout keys.
      data: fixed ``{"train", "val", "test"}`` sets for every run (default: from the config).
      data_fn: ``(config, seed) -> data`` when the data depend on the variant or seed.
      augment_fns: optional name -> per-example augmentation overriding ``config.augment``.
      extra_eval: extra labelled sets evaluated at the end of every run.
      log: progress printer.

    Returns:
      list of dicts: ``variant``, ``seed`` and the ``METRICS`` plus ``extra`` results.
    """
    workdir = Path(workdir)
    rows = []
    for name, overrides in variants.items():
        for seed in seeds:
            c = variant_config(base, overrides, seed)
            run_dir = workdir / name / f"seed{seed}"
            done = run_dir / "results.json"
            if done.exists():
                r = json.loads(done.read_text())
            else:
                d = data_fn(c, seed) if data_fn is not None else (data or prepare_data(c))
                fn = (augment_fns or {}).get(name)
                r = train_and_evaluate(c, run_dir, data=d, augment_fn=fn, extra_eval=extra_eval,
                                       title=f"{workdir.name}: {name}, seed {seed}")
            row = {"variant": name, "seed": seed, **{k: r.get(k) for k in METRICS}}
            if r.get("extra"):
                row["extra"] = r["extra"]
            rows.append(row)
            log(f"  {name:28s} seed {seed}: val {row['val_accuracy']:.4f} test {row['test_accuracy']:.4f}")
    return rows


def aggregate(rows: Sequence[Mapping[str, Any]], *, metrics: Sequence[str] = METRICS,
              key: str = "variant") -> list[dict]:
    """Mean ± std over seeds per ``key`` value, in first-seen order.

    Returns rows with ``key``, ``n`` (seeds), ``<metric>`` formatted as "mean ± std" and
    ``<metric>_mean`` / ``<metric>_std`` floats (std with ddof=1; 0 for one seed).
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


def bar_plot(agg_rows: Sequence[Mapping[str, Any]], metric: str, path: str | Path, *,
             key: str = "variant", title: str | None = None, baseline: str | None = None) -> Path:
    """Horizontal bars of ``<metric>_mean`` with ± std error bars; a line at ``baseline``'s mean."""
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
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path


def line_plot(series: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
              path: str | Path, *, xlabel: str, ylabel: str, title: str | None = None,
              logx: bool = False, marker_x: float | None = None) -> Path:
    """Lines with ± std bands: ``series[name] = (x, mean, std)``; optional vertical marker."""
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
    if logx:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path
