"""Regularizers side by side on limited mnist5k: L1, L1-prox, L2, weight decay, BN, dropout, LS, EMA, early stopping.

Run: `jaxreg run regularization` (`--workdir runs/regularization`; `--config.smoke=true`
shrinks it to seconds; `--config.variants=none,l1_prox` runs a subset; `--config.seeds=(0,1)`).
About 15 minutes on 2 free CPU cores (11 variants x 3 seeds x 20 epochs of `cnn_small`).

Question: with 500 training images (50 per class of mnist5k), which of the usual regularizers
improve a small CNN's test accuracy by more than the seed-to-seed noise, and what do they do to
calibration (ECE), sparsity (exact-zero weights) and the epoch of the best validation loss?

Expectation (written before running; the report repeats it next to what was measured):
  * none: the CNN fits the 500 images perfectly within ~15 epochs and its validation loss
    bottoms out a few epochs before the end (mild overfitting); ~0.91 test accuracy.
  * l1 (subgradient, added to the gradient before Adam): about the baseline; no exact zeros,
    because a subgradient step jumps over zero instead of landing on it.
  * l1_prox (soft-thresholding after the Adam step): about the baseline's accuracy with a
    sizeable fraction (> 10 %) of exactly-zero kernel weights.
  * l2 (coupled, before Adam): at most a small gain; Adam rescales the penalty per weight, so
    it is not the weight decay it would be under SGD (Loshchilov & Hutter, 2019).
  * weight_decay (decoupled, AdamW-style): a small gain.
  * batch_norm: a gain beyond the noise (better-conditioned optimisation in few steps).
  * dropout (0.5 before the last layer): a small gain and a later best epoch.
  * label_smoothing (0.1): about the baseline's accuracy, lower ECE (less overconfident).
  * ema (0.99): a small gain and smoother validation curves.
  * early_stopping (patience 5 on val_loss, best epoch restored): stops before the last epoch,
    lower test loss, accuracy about the baseline.
  * combo (BN + dropout 0.3 + decoupled weight decay + EMA): the best accuracy, beyond noise.

Protocol: every variant and seed trains on the same stratified subset per seed (seed k draws
subset k, so the comparison is paired) and is evaluated on the full mnist5k validation (1,000)
and test (1,000) splits. Nothing is chosen on the test split: the rates are fixed in
`get_config` and early stopping monitors validation loss. Variants other than
`early_stopping` report the weights after the last epoch (`restore_best=False`), so that
early stopping is the only one that selects an epoch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ml_collections import ConfigDict

from jaxreg import experiment, report
from jaxreg.train.config import default_config, validate_config
from jaxreg.train.loop import prepare_data

BASELINE = "none"

# name -> (expected effect on test accuracy: +1 gain beyond noise, 0 within noise, -1 loss;
#          the expectation in words)
EXPECTED: dict[str, tuple[int, str]] = {
    "none": (0, "mild overfitting: best val loss a few epochs before the end"),
    "l1": (0, "about the baseline; no exact zeros (subgradient steps jump over 0)"),
    "l1_prox": (0, "about the baseline; > 10 % exact-zero kernel weights"),
    "l2": (0, "at most a small gain (Adam rescales the coupled penalty)"),
    "weight_decay": (0, "a small gain"),
    "batch_norm": (1, "a gain beyond the noise"),
    "dropout": (0, "a small gain, later best epoch"),
    "label_smoothing": (0, "about the baseline; lower ECE"),
    "ema": (0, "a small gain, smoother curves"),
    "early_stopping": (0, "stops early, lower test loss, accuracy about the baseline"),
    "combo": (1, "the best accuracy, beyond the noise"),
}
ALL_VARIANTS = tuple(EXPECTED)
SMOKE_VARIANTS = ("none", "l1_prox", "early_stopping")
CHECK_COLUMNS = (
    "variant",
    "expected",
    "test acc vs none",
    "accuracy",
    "accuracy as expected",
    "other check",
    "measured",
    "other as expected",
)


def get_config() -> ConfigDict:
    """Returns the config: `cnn_small` on 50 mnist5k images per class, Adam at a constant rate."""
    c = default_config()
    c.data = "mnist5k"
    c.train_per_class = 50
    c.model = "cnn_small"
    c.epochs = 20
    c.batch_size = 50
    c.optimizer = "adam"
    c.learning_rate = 1e-3
    c.schedule = "constant"  # a constant rate lets overfitting show; cosine would hide it
    c.monitor = "val_loss"
    c.monitor_mode = "min"
    c.restore_best = False  # only the early_stopping variant restores its best epoch
    c.progress = False
    # experiment keys (removed before training)
    c.seeds = (0, 1, 2)
    c.variants = ""  # comma-separated subset of the variant names; "" = all
    c.rates = ConfigDict(
        {
            "l1": 1e-4,  # coefficient of ||w||_1 in the loss (subgradient before Adam)
            # prox threshold per step = learning_rate * l1_prox. After Adam the update is already
            # normalised (|step| ~ learning_rate), so this rate is in units of Adam's normalised
            # gradient: weights whose |m / sqrt(v)| stays below it are held at exactly 0.
            "l1_prox": 0.1,
            "l2": 5e-4,  # coupled: rate * w added to the gradient before Adam
            # decoupled: w -= learning_rate * rate * w per step; with 200 steps at lr 1e-3 a rate of
            # 1e-2 would shrink weights by 0.2 % in total (a no-op), 1.0 by up to ~18 %.
            "weight_decay": 1.0,
            "dropout": 0.5,
            "label_smoothing": 0.1,
            "ema_decay": 0.99,
            "patience": 5,
            "combo_dropout": 0.3,
        }
    )
    return c


def variant_overrides(rates: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Variant name -> config overrides for the training loop."""
    return {
        "none": {},
        "l1": {"l1": rates["l1"]},
        "l1_prox": {"l1_prox": rates["l1_prox"]},
        "l2": {"l2": rates["l2"]},
        "weight_decay": {"weight_decay": rates["weight_decay"]},
        "batch_norm": {"batch_norm": True},
        "dropout": {"dropout": rates["dropout"]},
        "label_smoothing": {"label_smoothing": rates["label_smoothing"]},
        "ema": {"ema_decay": rates["ema_decay"]},
        "early_stopping": {"early_stopping.patience": int(rates["patience"]), "restore_best": True},
        "combo": {
            "batch_norm": True,
            "dropout": rates["combo_dropout"],
            "weight_decay": rates["weight_decay"],
            "ema_decay": rates["ema_decay"],
            "ema_batch_stats": "recompute",
        },
    }


def _settings(overrides: Mapping[str, Any]) -> str:
    shown = {k: v for k, v in overrides.items() if k not in ("restore_best", "ema_batch_stats")}
    return (
        ", ".join(
            f"{k.split('.')[-1]}={v:g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
            for k, v in shown.items()
        )
        or "-"
    )


def _mean_curves(
    workdir: Path, names: Sequence[str], seeds: Sequence[int], key: str
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Variant -> (epochs, mean of `key` over the seeds that reached each epoch)."""
    out = {}
    for name in names:
        paths = [experiment.run_dir(workdir, name, seed) / "metrics.jsonl" for seed in seeds]
        out[name] = experiment.mean_curve(
            [report.read_metrics(p) for p in paths if p.exists()], key
        )
    return out


def _curves_figure(workdir: Path, names: Sequence[str], seeds: Sequence[int], path: Path) -> Path:
    """Mean validation loss and accuracy per epoch of every variant, the baseline in black."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.6))
    cmap = matplotlib.colormaps["tab20"]
    for i, (key, label) in enumerate(
        (("val_loss", "validation loss"), ("val_accuracy", "validation accuracy"))
    ):
        ax = fig.add_subplot(1, 2, i + 1)
        curves = _mean_curves(workdir, names, seeds, key)
        shown = []  # values after the first quarter of training set the y range
        for j, (name, (ep, mean)) in enumerate(curves.items()):
            style = (
                {"color": "k", "lw": 2.2, "zorder": 5}
                if name == BASELINE
                else {"color": cmap(j % 20), "lw": 1.4}
            )
            ax.plot(ep, mean, label=name, **style)
            if len(ep):
                shown.extend(mean[ep > ep.max() // 4] if ep.max() >= 8 else mean)
        if shown:
            lo, hi = float(np.min(shown)), float(np.max(shown))
            pad = max((hi - lo) * 0.08, 1e-3)
            ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{label} (mean over {len(seeds)} seeds)")
        ax.grid(alpha=0.3)
    fig.axes[-1].legend(fontsize=8, loc="lower right", ncol=2)
    fig.suptitle("Validation curves per regularizer (mean over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _compare(
    agg: Mapping[str, Mapping[str, Any]], name: str, metric: str
) -> tuple[float, float, int]:
    """(mean difference to the baseline, noise = sqrt(std_b^2 + std_v^2), sign beyond noise)."""
    b, v = agg[BASELINE], agg[name]
    diff = v[f"{metric}_mean"] - b[f"{metric}_mean"]
    noise = math.hypot(b[f"{metric}_std"], v[f"{metric}_std"])
    sign = 0 if abs(diff) <= noise else (1 if diff > 0 else -1)
    return diff, noise, sign


def _side_check(
    name: str, agg: Mapping[str, Mapping[str, Any]], epochs: int
) -> tuple[str, str, bool] | None:
    """The expectation other than accuracy: (expected, measured, whether it held)."""
    v, b = agg[name], agg[BASELINE]
    zf = v["zero_fraction_mean"]
    if name == BASELINE:
        return (
            "best val loss before the last epoch",
            f"epoch {v['best_epoch_mean']:.1f} of {epochs}",
            v["best_epoch_mean"] < epochs,
        )
    if name == "l1":
        return "no exact zeros", f"{zf * 100:.2f} % zeros", zf == 0
    if name == "l1_prox":
        return "> 10 % exact zeros", f"{zf * 100:.1f} % zeros", zf > 0.10
    if name == "label_smoothing":
        diff, noise, sign = _compare(agg, name, "test_ece")
        return ("lower ECE beyond noise", f"ECE {diff:+.3f} (noise {noise:.3f})", sign < 0)
    if name == "dropout":
        return (
            "later best epoch",
            f"epoch {v['best_epoch_mean']:.1f} vs {b['best_epoch_mean']:.1f}",
            v["best_epoch_mean"] > b["best_epoch_mean"],
        )
    if name == "early_stopping":
        d = v["test_loss_mean"] - b["test_loss_mean"]
        return (
            "stops early, lower test loss",
            f"{v['epochs_run_mean']:.1f} epochs run, test loss {d:+.3f}",
            v["epochs_run_mean"] < epochs and d < 0,
        )
    return None


def make_verdict(
    agg_rows: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]], epochs: int
) -> tuple[str, list[dict]]:
    """The verdict paragraph and the expectation-vs-measurement rows, from the numbers only."""
    agg = {r["variant"]: r for r in agg_rows}
    b = agg[BASELINE]
    n = int(b["n"])
    better, worse, within, checks = [], [], [], []
    word = {1: "gain beyond noise", 0: "within noise", -1: "loss beyond noise"}
    for name in agg:
        check = {"variant": name, "expected": EXPECTED[name][1]}
        if name != BASELINE:
            diff, noise, sign = _compare(agg, name, "test_accuracy")
            paired = experiment.paired_differences(rows, name, "test_accuracy", baseline=BASELINE)
            wins = sum(d > 0 for d in paired)
            text = (
                f"{name} ({diff * 100:+.1f} pts, noise {noise * 100:.1f}, "
                f"{wins}/{len(paired)} seeds above)"
            )
            (better if sign > 0 else worse if sign < 0 else within).append(text)
            check.update(
                {
                    "test acc vs none": f"{diff * 100:+.1f} ± {noise * 100:.1f} pts",
                    "accuracy": word[sign],
                    "accuracy as expected": "yes" if sign == EXPECTED[name][0] else "NO",
                }
            )
        side = _side_check(name, agg, epochs)
        if side is not None:
            check.update(
                {
                    "other check": side[0],
                    "measured": side[1],
                    "other as expected": "yes" if side[2] else "NO",
                }
            )
        checks.append(check)
    parts = [
        f"Against the baseline 'none' (test accuracy {b['test_accuracy']}, n={n} seeds, "
        f"ECE {b['test_ece']}), a variant counts as better or worse only when its mean test "
        f"accuracy differs by more than the noise sqrt(std_none^2 + std_variant^2)."
    ]
    parts.append(f"Better beyond the noise: {experiment.join_names(better)}.")
    if worse:
        parts.append(f"Worse beyond the noise: {experiment.join_names(worse)}.")
    parts.append(f"Within the noise of the baseline: {experiment.join_names(within)}.")
    best_ece = min(agg_rows, key=lambda r: r["test_ece_mean"])
    worst_ece = max(agg_rows, key=lambda r: r["test_ece_mean"])
    parts.append(
        f"Calibration: the lowest mean test ECE is {best_ece['variant']}'s "
        f"({best_ece['test_ece_mean']:.3f}), the highest {worst_ece['variant']}'s "
        f"({worst_ece['test_ece_mean']:.3f}); the baseline has {b['test_ece_mean']:.3f}."
    )
    sparse = [r for r in agg_rows if r["zero_fraction_mean"] > 0]
    if sparse:
        parts.append(
            "Exact zeros among kernel weights: "
            + experiment.join_names(
                [f"{r['variant']} {r['zero_fraction_mean'] * 100:.1f} %" for r in sparse]
            )
            + "; every other variant has none."
        )
    else:
        parts.append("No variant produced exact-zero weights.")
    best = (
        f"The baseline's validation loss was lowest at epoch {b['best_epoch_mean']:.1f} "
        f"on average (of {epochs})"
    )
    if "early_stopping" in agg:
        es = agg["early_stopping"]
        best += (
            f"; early stopping ran {es['epochs_run_mean']:.1f} epochs, restored epoch "
            f"{es['best_epoch_mean']:.1f} and changed test loss by "
            f"{es['test_loss_mean'] - b['test_loss_mean']:+.3f} "
            f"({b['test_loss_mean']:.3f} -> {es['test_loss_mean']:.3f})"
        )
    parts.append(best + ".")
    missed = []
    for c in checks:
        failed = (["accuracy"] if c.get("accuracy as expected") == "NO" else []) + (
            [c["other check"]] if c.get("other as expected") == "NO" else []
        )
        if failed:
            missed.append(f"{c['variant']} ({'; '.join(failed)})")
    parts.append(
        "Compared with the expectation stated before the run, "
        + (
            f"the measurement disagrees for {experiment.join_names(missed)}."
            if missed
            else "every checked outcome matched."
        )
    )
    return " ".join(parts), checks


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What `run` trains: the base training config, the seeds and every variant's overrides."""

    config: ConfigDict  # the training config (experiment keys removed, smoke settings applied)
    seeds: tuple[int, ...]
    names: tuple[str, ...]  # the selected variants, the baseline first
    variants: dict[str, dict[str, Any]]  # name -> config overrides


def _plan(config: ConfigDict) -> _Plan:
    """Parses `config` into what `run` trains; trains, loads and writes nothing."""
    config = ConfigDict(config.to_dict())
    seeds = experiment.parse_seeds(config.seeds)
    rates = dict(config.rates)
    smoke = bool(config.smoke)
    names = experiment.select_variants(
        config.variants,
        allowed=ALL_VARIANTS,
        baseline=BASELINE,
        default=SMOKE_VARIANTS if smoke else ALL_VARIANTS,
    )
    for key in ("seeds", "variants", "rates"):
        del config[key]
    if smoke:
        config = experiment.shrink(
            config,
            data="digits",
            train_per_class=20,
            model="tiny",
            epochs=2,
            batch_size=40,
            **{"checkpoint.enabled": False},
        )
        config.learning_rate = 3e-3  # a smoke setting, not a shrink (above the default)
        seeds = seeds[:2]
        # 10 steps are too few for a 0.1 threshold to pin weights at zero; make it visible
        rates["l1_prox"] = max(float(rates["l1_prox"]), 1.0)
        rates["patience"] = min(rates["patience"], 1)
    all_overrides = variant_overrides(rates)
    return _Plan(config, seeds, names, {n: all_overrides[n] for n in names})


def _check(plan: _Plan) -> None:
    validate_config(plan.config)
    experiment.validate_variants(plan.config, plan.variants, seed=plan.seeds[0])


def validate(config: ConfigDict) -> None:
    """Checks every training config `run` would train, before anything trains or is written.

    The base config and each selected variant's config (`validate_config`: ranges, names,
    the rates in `rates` as the variants use them), after the smoke settings (which only lower
    numbers, so an invalid value stays invalid) and once more as given.

    Raises:
      ValueError, TypeError: a bad value; the message names the config key (and the variant).
    """
    experiment.validate_with_smoke(config, lambda c: _check(_plan(c)))


def run(config: ConfigDict, workdir: str) -> dict:
    """Trains every variant with every seed; writes the table, curves, bar plots and verdict."""
    t0 = time.perf_counter()
    validate(config)
    plan = _plan(config)
    config, seeds, names, variants = plan.config, plan.seeds, plan.names, plan.variants
    # absolute: Orbax (>= 0.12) refuses relative checkpoint paths
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)

    cache: dict[int, dict] = {}

    def data_fn(c: ConfigDict, seed: int) -> dict:
        if seed not in cache:  # subset k for seed k, shared by every variant (paired)
            d = ConfigDict(c.to_dict())
            d.data_seed = seed
            cache[seed] = prepare_data(d)
        return cache[seed]

    print(
        f"regularization: {len(variants)} variants x {len(seeds)} seeds on {config.data} "
        f"({config.train_per_class} per class), {config.model}, {config.epochs} epochs"
    )
    rows = experiment.run_variants(config, workdir, variants, seeds=seeds, data_fn=data_fn)
    for r in rows:
        res = json.loads(
            (experiment.run_dir(workdir, r["variant"], r["seed"]) / "results.json").read_text()
        )
        r["epochs_run"] = res.get("epochs_run")
        r["wall_time_s"] = res.get("wall_time_s")
    metrics = experiment.METRICS + ("epochs_run",)
    agg = experiment.aggregate(rows, metrics=metrics)
    for a in agg:
        a["settings"] = _settings(variants[a["variant"]])
        if a["variant"] != BASELINE:
            diff, _noise, sign = _compare(
                {x["variant"]: x for x in agg}, a["variant"], "test_accuracy"
            )
            a["vs none"] = (
                f"{diff * 100:+.1f} pts "
                + {1: "(better)", 0: "(within noise)", -1: "(worse)"}[sign]
            )
        else:
            a["vs none"] = "baseline"
        mine = [r for r in rows if r["variant"] == a["variant"]]
        for key, fmt in (("zero_fraction", ".4f"), ("best_epoch", ".1f"), ("epochs_run", ".1f")):
            a[key] = report.mean_std(
                [math.nan if r[key] is None else float(r[key]) for r in mine], fmt=fmt
            )

    verdict, checks = make_verdict(agg, rows, int(config.epochs))
    columns = [
        "variant",
        "settings",
        "n",
        "test_accuracy",
        "vs none",
        "test_ece",
        "test_loss",
        "val_accuracy",
        "zero_fraction",
        "best_epoch",
        "epochs_run",
    ]
    table_rows = [{c: a[c] for c in columns} for a in agg]

    figures = []
    figures.append(_curves_figure(workdir, names, seeds, workdir / "val_curves.png").name)
    figures.append(
        experiment.bar_plot(
            agg,
            "test_accuracy",
            workdir / "test_accuracy.png",
            baseline=BASELINE,
            title="Test accuracy",
        ).name
    )
    figures.append(
        experiment.bar_plot(
            agg,
            "test_ece",
            workdir / "test_ece.png",
            baseline=BASELINE,
            title="Test ECE (lower is better)",
        ).name
    )
    wall = time.perf_counter() - t0
    expectation = "Before running: " + "; ".join(f"{n}: {EXPECTED[n][1]}" for n in names) + "."
    extra = [
        "## Expectation vs measurement",
        "",
        report.markdown_table(checks, CHECK_COLUMNS).rstrip("\n"),
        "",
        "## Protocol",
        "",
        f"- Data: {config.data}, {config.train_per_class} training images per class (subset k "
        f"for seed k, the same for every variant), full validation and test splits.",
        f"- Model {config.model}, {config.optimizer} lr {config.learning_rate:g} "
        f"({config.schedule}), batch {config.batch_size}, {config.epochs} epochs, seeds {list(seeds)}.",
        "- The test split chooses nothing: rates are fixed in advance, early stopping watches "
        "validation loss; all variants except early_stopping report their last epoch.",
        "- 'best_epoch' is the epoch with the lowest validation loss; 'zero_fraction' counts "
        "exact zeros among conv/dense kernels (biases and norm scales are never decayed).",
        "- The prox rate is in Adam-normalised units (threshold learning_rate x rate per step), "
        "not the same scale as the subgradient l1 coefficient.",
        f"- Wall time of this invocation: {wall:.0f} s (finished runs are read back, not re-run).",
        "",
        "<details><summary>Per-seed results</summary>",
        "",
        report.markdown_table(
            rows,
            [
                "variant",
                "seed",
                "val_accuracy",
                "test_accuracy",
                "test_loss",
                "test_ece",
                "zero_fraction",
                "best_epoch",
                "epochs_run",
                "wall_time_s",
            ],
        ).rstrip("\n"),
        "",
        "</details>",
    ]
    print()
    experiment.write_report(
        workdir,
        title="Regularizers on limited mnist5k",
        question=(
            "Which regularizers improve a small CNN trained on 50 images per class by more "
            "than seed noise, and what do they do to calibration, sparsity and the best epoch?"
        ),
        expectation=expectation,
        table_rows=table_rows,
        verdict=verdict,
        figures=figures,
        extra_md="\n".join(extra),
        wall_time_s=wall,
    )
    return {
        "rows": rows,
        "aggregate": agg,
        "table": table_rows,
        "verdict": verdict,
        "checks": checks,
        "wall_time_s": wall,
    }
