"""Overfitting: train long on little data; detected onset with and without regularization (augmentation, dropout, weight decay, early stopping).

Run: `jaxreg run overfitting` (`--config.smoke=true` shrinks it to seconds;
`--config.variants=plain,early_stopping` runs a subset; `--config.epochs=80`).
About 10 minutes on 2 free CPU cores (5 variants x 3 seeds x 60 epochs of `cnn_small` on
300 images).

Question: when a small CNN trains far longer than it needs on 30 images per class, where does
it start to overfit (validation loss rising while training accuracy still rises, found by
`jaxreg.report.overfitting_onset`), how much does that cost on the test split, and what do
augmentation, dropout + weight decay and early stopping change about the onset and the cost?

Expectation (written before running): the plain model fits the training set within ~15 epochs
and its validation loss turns up soon after (onset in every seed) and keeps rising; test
accuracy after 60 epochs is about that at the minimum but test loss is much worse. Early
stopping restores the minimum (lower test loss, same accuracy). Augmentation delays the onset
or removes it and raises test accuracy; dropout + weight decay shrink the rise; all together
give the best test accuracy with no or a late onset.

Protocol: seed k draws training subset k (shared by all variants, paired by seed); constant
learning rate (a decaying schedule would hide the rise); no BatchNorm, so 'plain' has no
regularizer at all. Every variant except those with early stopping reports its last epoch
(`restore_best=False`); early stopping watches validation loss (patience in the config)
and restores its best epoch. Onsets use `overfitting_onset(history, patience=2)`; the test
split chooses nothing.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from ml_collections import ConfigDict

from jaxreg import data as data_lib
from jaxreg import experiment, report
from jaxreg.experiment import format_pm
from jaxreg.train.config import default_config, validate_config

BASELINE = "plain"
ALL_VARIANTS = ("plain", "early_stopping", "augment", "dropout_wd", "all")
SMOKE_VARIANTS = ("plain", "early_stopping", "all")
EXPERIMENT_KEYS = ("seeds", "variants", "augment_spec", "reg", "onset_patience", "compile_cache")


def get_config() -> ConfigDict:
    """Returns the config: `cnn_small` on 30 mnist5k images per class, 60 constant-rate epochs."""
    c = default_config()
    c.data = "mnist5k"
    c.train_per_class = 30
    c.model = "cnn_small"
    c.batch_norm = False
    c.epochs = 60
    c.batch_size = 32
    c.learning_rate = 1e-3
    c.schedule = "constant"
    c.monitor = "val_loss"
    c.monitor_mode = "min"
    c.restore_best = False  # only the early-stopping variants restore their best epoch
    c.checkpoint.enabled = False  # finished runs are read back from results.json instead
    c.progress = False
    # experiment keys (removed before training)
    c.seeds = (0, 1, 2)
    c.variants = ""  # comma-separated subset of ALL_VARIANTS; "" = all
    c.augment_spec = "digits"
    c.reg = ConfigDict({"dropout": 0.5, "weight_decay": 0.5, "patience": 8})
    c.onset_patience = 2
    c.compile_cache = True
    return c


def variant_overrides(spec: str, reg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Variant name -> config overrides, with augment `spec` and rates from `reg`.

    Args:
        spec: The augment spec of the "augment" and "all" variants.
        reg: Regularisation settings with keys "dropout", "weight_decay" (the "dropout_wd" and
            "all" variants) and "patience" (early-stopping patience, with the best epoch restored,
            in "early_stopping" and "all").
    """
    es = {"early_stopping.patience": int(reg["patience"]), "restore_best": True}
    return {
        "plain": {},
        "early_stopping": dict(es),
        "augment": {"augment": spec},
        "dropout_wd": {
            "dropout": float(reg["dropout"]),
            "weight_decay": float(reg["weight_decay"]),
        },
        "all": {
            "augment": spec,
            "dropout": float(reg["dropout"]),
            "weight_decay": float(reg["weight_decay"]),
            **es,
        },
    }


def _effect(mean: float, half: float) -> str:
    """`experiment.effect` with neutral words: a higher test loss is not a help."""
    return experiment.effect(mean, half, above="higher", below="lower")


# ----------------------------------------------------------------------------- run


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What `run` trains: the base config, the seeds and every selected variant's overrides."""

    config: ConfigDict  # the training config (experiment keys removed, smoke settings applied)
    seeds: tuple[int, ...]
    names: tuple[str, ...]  # the selected variants, the baseline first
    spec: str  # the augment spec of "augment" and "all"
    onset_patience: int
    use_cache: bool
    variants: dict[str, dict[str, Any]]  # name -> config overrides


def _plan(config: ConfigDict) -> _Plan:
    """Parses `config` into what `run` trains; trains, loads and writes nothing."""
    config = ConfigDict(config.to_dict())
    smoke = bool(config.smoke)
    seeds = experiment.parse_seeds(config.seeds)
    names = experiment.select_variants(
        config.variants,
        allowed=ALL_VARIANTS,
        baseline=BASELINE,
        default=SMOKE_VARIANTS if smoke else ALL_VARIANTS,
    )
    spec = config.augment_spec
    overrides = variant_overrides(spec, dict(config.reg))
    onset_patience = experiment.check_int(config.onset_patience, name="onset_patience", minimum=1)
    use_cache = bool(config.compile_cache)
    for key in EXPERIMENT_KEYS:
        del config[key]
    if smoke:
        config = experiment.shrink(
            config, data="digits", model="tiny", epochs=6, batch_size=20, train_per_class=10
        )
        config.learning_rate = 1e-2  # a smoke setting, not a shrink (above the default)
        seeds = seeds[:2]
        for o in overrides.values():
            if "early_stopping.patience" in o:
                o["early_stopping.patience"] = min(o["early_stopping.patience"], 2)
    variants = {n: overrides[n] for n in names}
    return _Plan(config, seeds, names, spec, onset_patience, use_cache, variants)


def _check(plan: _Plan) -> None:
    experiment.check_spec("augment_spec", plan.spec)
    experiment.check_int(plan.config.train_per_class, name="train_per_class", minimum=1)
    validate_config(plan.config)
    experiment.validate_variants(plan.config, plan.variants, seed=plan.seeds[0])


def validate(config: ConfigDict) -> None:
    """Checks every training config `run` would train, before anything trains or is written.

    `augment_spec` is built (`jaxreg.augment.from_spec`), `onset_patience` checked, then the
    base config and every selected variant's config (with the rates of `reg`); after the
    smoke settings (which only lower numbers, so an invalid value stays invalid) and once more
    as given.

    Raises:
      ValueError, TypeError: a bad value; the message names the config key (and the variant).
    """
    experiment.validate_with_smoke(config, lambda c: _check(_plan(c)))


def run(config: ConfigDict, workdir: str) -> dict:
    """Trains every variant long; detects overfitting onsets; writes curves, table and verdict."""
    t0 = time.perf_counter()
    validate(config)
    plan = _plan(config)
    config, seeds, names, overrides = plan.config, plan.seeds, plan.names, plan.variants
    onset_patience = plan.onset_patience
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    splits = data_lib.load_splits(config.data)
    data_fn = experiment.subset_data_fn(splits, int(config.train_per_class))

    print(
        f"overfitting: {len(names)} variants x {len(seeds)} seeds, {config.epochs} epochs on "
        f"{config.train_per_class} per class"
    )
    with experiment.compile_cache(plan.use_cache):
        rows = experiment.run_variants(config, workdir, overrides, seeds=seeds, data_fn=data_fn)
    hists = {}
    for r in rows:
        h = report.read_metrics(
            experiment.run_dir(workdir, r["variant"], r["seed"]) / "metrics.jsonl"
        )
        hists[(r["variant"], r["seed"])] = h
        vl = np.array([x["val_loss"] for x in h], np.float64)
        i = int(np.nanargmin(vl))
        r["onset"] = report.overfitting_onset(h, patience=onset_patience)
        r["min_val_loss"], r["min_epoch"] = float(vl[i]), int(h[i]["epoch"])
        r["final_val_loss"] = float(vl[-1])
        r["rise"] = float(vl[-1] - vl[i])
        r["final_train_accuracy"] = float(h[-1]["train_accuracy"])
        r["final_gap"] = float(h[-1]["train_accuracy"] - h[-1]["val_accuracy"])
        r["epochs_run"] = len(h)
    metrics = (
        "test_accuracy",
        "test_loss",
        "min_val_loss",
        "final_val_loss",
        "rise",
        "final_train_accuracy",
        "final_gap",
        "epochs_run",
        "min_epoch",
    )
    agg = experiment.aggregate(rows, metrics=metrics)
    table = []
    for a in agg:
        name = a["variant"]
        mine = [r for r in rows if r["variant"] == name]
        onsets = [r["onset"] for r in mine if r["onset"] is not None]
        a["onsets"], a["onset_mean"] = onsets, (float(np.mean(onsets)) if onsets else None)
        a["d_acc"] = experiment.paired_ci(rows, name, "test_accuracy", baseline=BASELINE)
        a["d_loss"] = experiment.paired_ci(rows, name, "test_loss", baseline=BASELINE)
        table.append(
            {
                "variant": name,
                "settings": ", ".join(
                    f"{k.split('.')[0]}={v}"
                    for k, v in overrides[name].items()
                    if k != "restore_best"
                )
                or "no regularization",
                "n": a["n"],
                "onset epoch (seeds with onset)": (
                    f"{np.mean(onsets):.1f} ({len(onsets)}/{len(mine)})"
                    if onsets
                    else f"none (0/{len(mine)})"
                ),
                "min val loss @ epoch": f"{a['min_val_loss_mean']:.3f} @ {a['min_epoch_mean']:.0f}",
                "val loss rise after min": a["rise"],
                "final train acc": a["final_train_accuracy"],
                "train − val gap": a["final_gap"],
                "epochs run": a["epochs_run"],
                "test_accuracy": a["test_accuracy"],
                "Δ test acc vs plain (pts)": "-"
                if name == BASELINE
                else format_pm(*a["d_acc"][:2]),
                "test_loss": a["test_loss"],
            }
        )
    figures = [_mean_curves_figure(agg, hists, names, seeds, workdir / "val_loss_curves.png").name]
    for name in names:
        seed = seeds[0]
        r = next(x for x in rows if x["variant"] == name and x["seed"] == seed)
        h = hists[(name, seed)]
        best = r["best_epoch"] if overrides[name].get("restore_best") else r["min_epoch"]
        p = report.plot_curves(
            h,
            workdir / f"curves_{name}.png",
            onset=r["onset"],
            best_epoch=best if best else None,
            title=f"{name}, seed {seed}",
        )
        figures.append(p.name)
    verdict = make_verdict(agg, int(config.epochs))
    wall = time.perf_counter() - t0
    extra_md = "\n".join(
        [
            "## Protocol",
            "",
            f"- {config.data}, {config.train_per_class} training images per class (subset k for "
            f"seed k); model {config.model} without BatchNorm; {config.optimizer} lr "
            f"{config.learning_rate:g} constant; batch {config.batch_size}; up to {config.epochs} "
            f"epochs; seeds {list(seeds)}.",
            "- Onset: first epoch of the first run of "
            f"{onset_patience} epochs whose validation loss is above the running minimum while "
            "training accuracy is above its value at that minimum (jaxreg.report.overfitting_onset).",
            "- 'rise' = last-epoch validation loss minus the minimum; variants without early "
            "stopping report the last epoch, early stopping restores the epoch of minimum "
            "validation loss.",
            f"- Wall time of this invocation: {wall:.0f} s (finished runs are read back).",
        ]
    )
    experiment.write_report(
        workdir,
        title="Overfitting: long training on little data, with and without regularization",
        question=(
            "Where does a small CNN trained long on 30 images per class start to overfit, "
            "what does it cost, and what do augmentation, dropout + weight decay and early "
            "stopping change?"
        ),
        expectation=(
            "Plain: onset in every seed soon after the training set is fitted, rising "
            "validation loss; early stopping restores the minimum; augmentation delays "
            "or removes the onset; all together give the best test accuracy."
        ),
        table_rows=table,
        verdict=verdict,
        figures=figures,
        extra_md=extra_md,
        wall_time_s=wall,
    )
    return {"rows": rows, "aggregate": agg, "table": table, "verdict": verdict, "wall_time_s": wall}


def _mean_curves_figure(agg, hists, names, seeds, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.4))
    by = {a["variant"]: a for a in agg}
    for col, (key, label) in enumerate(
        (("val_loss", "validation loss"), ("train_accuracy", "training accuracy"))
    ):
        ax = fig.add_subplot(1, 2, col + 1)
        for name in names:
            ep, mean = experiment.mean_curve((hists.get((name, seed), []) for seed in seeds), key)
            (line,) = ax.plot(ep, mean, label=name)
            onset = by[name]["onset_mean"]
            if onset is not None and key == "val_loss":
                ax.axvline(onset, color=line.get_color(), ls="--", lw=1)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{label} (mean over seeds)")
        ax.grid(alpha=0.3)
        if key == "val_loss":
            ax.set_title("validation loss; dashed: mean detected onset")
    fig.axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def make_verdict(agg, epochs: int) -> str:
    """One paragraph from the measured onsets, rises and test numbers."""
    by = {a["variant"]: a for a in agg}
    b = by[BASELINE]
    n = b["n"]
    if b["onsets"]:
        text = (
            f"Without regularization, overfitting was detected in {len(b['onsets'])}/{n} "
            f"seeds, at epoch {b['onset_mean']:.1f} on average: validation loss bottomed at "
            f"{b['min_val_loss_mean']:.3f} (epoch {b['min_epoch_mean']:.0f}) and ended "
            f"{b['rise_mean']:+.3f} higher after {epochs} epochs, while training accuracy "
            f"reached {b['final_train_accuracy_mean']:.3f}."
        )
    else:
        text = (
            f"Without regularization no overfitting onset was detected in any of {n} seeds "
            f"within {epochs} epochs (validation loss rise after its minimum: "
            f"{b['rise_mean']:+.3f}), so the expected overfitting did not appear here."
        )
    text += f" Its last-epoch test accuracy was {b['test_accuracy']} (test loss {b['test_loss']})."
    for name, a in by.items():
        if name == BASELINE:
            continue
        (am, ah), (lm, lh) = a["d_acc"][:2], a["d_loss"][:2]
        onset = (
            f"onset in {len(a['onsets'])}/{a['n']} seeds (mean epoch {a['onset_mean']:.1f})"
            if a["onsets"]
            else f"no onset in {a['n']} seeds"
        )
        text += (
            f" {name}: {onset}, val-loss rise {a['rise_mean']:+.3f}, "
            f"{a['epochs_run_mean']:.0f} epochs run, test accuracy {format_pm(am, ah)} pts "
            f"({_effect(am, ah)}), test loss {lm:+.3f} ({_effect(lm, lh)})."
        )
    best = max(agg, key=lambda a: a["test_accuracy_mean"])
    text += (
        f" Highest mean test accuracy: {best['variant']} ({best['test_accuracy']}); this is "
        f"a report, not a choice (no model was selected on test)."
    )
    return text
