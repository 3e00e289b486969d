"""Regularizers side by side on limited mnist5k: L1, L1-prox, L2, weight decay, BN, dropout, LS, EMA, early stopping.

Run: `jaxreg run regularization` (`--config.smoke=true` shrinks it to seconds;
`--config.variants=none,l1_prox` runs a subset; `--config.seeds=(0,1)`; rates in
`--config.rates.*`). About 15 minutes on 2 free CPU cores (11 variants x 3 seeds x 20 epochs).
Every variant except early stopping reports its last epoch (`restore_best=False`); nothing is
chosen on the test split.
"""

from __future__ import annotations

import math

from ml_collections import ConfigDict

from jaxreg import report
from jaxreg.experiment import Findings, Study, bar_plot, effect, join_names, paired_ci
from jaxreg.train.config import default_config

# variant -> (expected effect on test accuracy vs none: +1, 0 or -1; the expectation in words)
EXPECTED = {
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


def _config() -> ConfigDict:
    c = default_config()
    c.data, c.train_per_class, c.model = "mnist5k", 50, "cnn_small"
    c.epochs, c.batch_size, c.optimizer, c.learning_rate = 20, 50, "adam", 1e-3
    c.schedule = "constant"  # a constant rate lets overfitting show; cosine would hide it
    c.monitor, c.monitor_mode = "val_loss", "min"
    c.restore_best, c.progress = False, False  # only early_stopping restores its best epoch
    return c


def _variants(c: ConfigDict, p: ConfigDict) -> dict[str, dict]:
    r = p.rates
    return {
        "none": {},
        "l1": {"l1": r.l1},
        "l1_prox": {"l1_prox": r.l1_prox},
        "l2": {"l2": r.l2},
        "weight_decay": {"weight_decay": r.weight_decay},
        "batch_norm": {"batch_norm": True},
        "dropout": {"dropout": r.dropout},
        "label_smoothing": {"label_smoothing": r.label_smoothing},
        "ema": {"ema_decay": r.ema_decay},
        "early_stopping": {"early_stopping.patience": int(r.patience), "restore_best": True},
        "combo": {"batch_norm": True, "dropout": r.combo_dropout, "ema_decay": r.ema_decay}
        | {"weight_decay": r.weight_decay, "ema_batch_stats": "recompute"},
    }


def _settings(delta: dict) -> str:
    shown = [(k.split(".")[-1], f"{v:g}" if isinstance(v, float) else v) for k, v in delta.items()]
    hidden = ("restore_best", "ema_batch_stats")
    return ", ".join(f"{k}={v}" for k, v in shown if k not in hidden) or "-"


def _side_check(name: str, agg: dict, rows: list[dict], epochs: int) -> tuple | None:
    """The expectation other than accuracy: (expected, measured, whether it held)."""
    v, b = agg[name], agg["none"]
    zf, best = v["zero_fraction_mean"], v["best_epoch_mean"]
    if name == "none":
        return "best val loss before the last epoch", f"epoch {best:.1f} of {epochs}", best < epochs
    if name == "l1":
        return "no exact zeros", f"{zf * 100:.2f} % zeros", zf == 0
    if name == "l1_prox":
        return "> 10 % exact zeros", f"{zf * 100:.1f} % zeros", zf > 0.10
    if name == "label_smoothing":
        m, h, *_ = paired_ci(rows, name, "test_ece", baseline="none")
        return "lower ECE (95 % interval)", f"ECE {m:+.3f} ± {h:.3f}", effect(-m, h) == "helps"
    if name == "dropout":
        base = b["best_epoch_mean"]
        return "later best epoch", f"epoch {best:.1f} vs {base:.1f}", best > base
    if name == "early_stopping":
        d, ran = v["test_loss_mean"] - b["test_loss_mean"], v["epochs_run_mean"]
        measured = f"{ran:.1f} epochs run, test loss {d:+.3f}"
        return "stops early, lower test loss", measured, ran < epochs and d < 0
    return None


def _analyze(a) -> Findings:
    """Settings and finer formats in the table, side checks, calibration, sparsity, curves."""
    rows, epochs, c = a.stage_rows("train"), int(a.config.epochs), a.config
    agg, deltas = {t["variant"]: t for t in a.table}, _variants(c, a.params)
    table, checks, missed = [], [], []
    for t in a.table:
        name, mine = t["variant"], [r for r in rows if r["variant"] == t["variant"]]
        table.append({"variant": name, "settings": _settings(deltas[name]), **t})
        for key, fmt in (("zero_fraction", ".4f"), ("best_epoch", ".1f"), ("epochs_run", ".1f")):
            table[-1][key] = report.mean_std([_nan(r[key]) for r in mine], fmt=fmt)
        if (side := _side_check(name, agg, rows, epochs)) is not None:
            check, measured, held = side
            checks.append({"variant": name, "expected": EXPECTED[name][1], "check": check})
            checks[-1] |= {"measured": measured, "as expected": "yes" if held else "NO"}
            missed += [] if held else [f"{name} ({check})"]
    b, ece = agg["none"], sorted(a.table, key=lambda r: r["test_ece_mean"])
    zf = {t["variant"]: t["zero_fraction_mean"] * 100 for t in a.table}
    zeros = [f"{name} {z:.1f} %" for name, z in zf.items() if z > 0]
    verdict = [
        f"Calibration: the lowest mean test ECE is {ece[0]['variant']}'s "
        f"({ece[0]['test_ece_mean']:.3f}), the highest {ece[-1]['variant']}'s "
        f"({ece[-1]['test_ece_mean']:.3f}); the baseline has {b['test_ece_mean']:.3f}.",
        f"Exact zeros among kernel weights: {join_names(zeros)}; every other variant has none."
        if zeros
        else "No variant produced exact-zero weights.",
        f"The baseline's validation loss was lowest at epoch {b['best_epoch_mean']:.1f} on "
        f"average (of {epochs})",
    ]
    if (es := agg.get("early_stopping")) is not None:
        verdict[-1] += (
            f"; early stopping ran {es['epochs_run_mean']:.1f} epochs, restored epoch "
            f"{es['best_epoch_mean']:.1f} and changed test loss by "
            f"{es['test_loss_mean'] - b['test_loss_mean']:+.3f} "
            f"({b['test_loss_mean']:.3f} -> {es['test_loss_mean']:.3f})"
        )
    verdict[-1] += ". Beyond test accuracy, " + (
        f"the side checks disagree with the expectation for {join_names(missed)}."
        if missed
        else "every side check matched the expectation."
    )
    keys = {"val_loss": "validation loss", "val_accuracy": "validation accuracy"}
    title = "Validation curves per regularizer (mean over seeds)"
    figures = [a.curves_figure("val_curves.png", keys, title=title), "test_ece.png"]
    bar_plot(
        a.table,
        "test_ece",
        a.workdir / figures[1],
        baseline="none",
        title="Test ECE (lower is better)",
    )
    protocol = f"""## Protocol

- Data: {c.data}, {c.train_per_class} training images per class (subset k for seed k, the same \
for every variant), full validation and test splits.
- Model {c.model}, {c.optimizer} lr {c.learning_rate:g} ({c.schedule}), batch {c.batch_size}, \
{c.epochs} epochs, seeds {sorted({r["seed"] for r in rows})}.
- The test split chooses nothing: rates are fixed in advance, early stopping watches validation \
loss; all variants except early_stopping report their last epoch.
- 'best_epoch' is the epoch with the lowest validation loss; 'zero_fraction' counts exact zeros \
among conv/dense kernels (biases and norm scales are never decayed).
- The prox rate is in Adam-normalised units (threshold learning_rate x rate per step), not the \
same scale as the subgradient l1 coefficient."""
    per_seed = ["variant", "seed", "val_accuracy", "test_accuracy", "test_loss", "test_ece"]
    per_seed += ["zero_fraction", "best_epoch", "epochs_run", "wall_time_s"]
    sections = [
        "## Expectation vs measurement\n\n" + report.markdown_table(checks).rstrip("\n"),
        protocol,
        "<details><summary>Per-seed results</summary>\n\n"
        + report.markdown_table(rows, per_seed)
        + "\n</details>",
    ]
    return Findings(table=table, verdict=verdict, figures=figures, sections=sections)


def _nan(value) -> float:
    return math.nan if value is None else float(value)


STUDY = Study(
    name="regularization",
    title="Regularizers on limited mnist5k",
    question="Which regularizers improve a small CNN trained on 50 images per class by more than "
    "seed noise, and what do they do to calibration, sparsity and the best epoch?",
    expectation="Before running: " + "; ".join(f"{n}: {w}" for n, (_, w) in EXPECTED.items()) + ".",
    source="Srivastava et al. 2014 (JMLR, dropout), Ioffe & Szegedy 2015 (batch norm), "
    "Loshchilov & Hutter 2019 (ICLR, decoupled weight decay vs L2 under Adam), Müller et al. 2019 "
    "(NeurIPS, label smoothing and calibration), Prechelt 1998 (early stopping); exact zeros "
    "from the proximal (soft-thresholding) L1 step. No single table gives these numbers.",
    regime="500 training images of mnist5k, a small CNN, Adam at a constant rate for 20 epochs "
    "(about 200 steps), rates fixed in advance rather than tuned per regularizer.",
    config=_config,
    variants=_variants,
    baseline="none",
    expected={n: s for n, (s, _) in EXPECTED.items() if n != "none"},
    params={
        "rates": {
            "l1": 1e-4,  # coefficient of ||w||_1 in the loss (subgradient before Adam)
            # prox threshold per step = learning_rate * l1_prox, in units of Adam's normalised
            # gradient: weights whose |m / sqrt(v)| stays below it are held at exactly 0.
            "l1_prox": 0.1,
            "l2": 5e-4,  # coupled: rate * w added to the gradient before Adam
            # decoupled: w -= learning_rate * rate * w per step; over 200 steps at lr 1e-3 a rate
            # of 1e-2 would shrink weights by 0.2 % in total (a no-op), 1.0 by up to ~18 %.
            "weight_decay": 1.0,
            "dropout": 0.5,
            "label_smoothing": 0.1,
            "ema_decay": 0.99,
            "patience": 5,
            "combo_dropout": 0.3,
        }
    },
    smoke={"data": "digits", "train_per_class": 20, "model": "tiny", "epochs": 2}
    | {"batch_size": 40, "checkpoint.enabled": False, "rates.patience": 1},
    # 10 steps are too few for a 0.1 prox threshold to pin weights at zero: make it visible
    smoke_set={"learning_rate": 3e-3, "rates.l1_prox": 1.0},
    smoke_variants=("none", "l1_prox", "early_stopping"),
    metrics=("test_accuracy", "test_ece", "test_loss", "val_accuracy", "zero_fraction")
    + ("best_epoch", "epochs_run"),
    analyze=_analyze,
)

get_config, validate, run = STUDY.get_config, STUDY.validate, STUDY.run
