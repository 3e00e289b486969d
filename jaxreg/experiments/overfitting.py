"""Overfitting: train long on little data; detected onset with and without regularization (augmentation, dropout, weight decay, early stopping).

Run: `jaxreg run overfitting` (`--config.smoke=true` shrinks it to seconds;
`--config.variants=plain,early_stopping` runs a subset; `--config.epochs=80`). About 10 minutes
on 2 free CPU cores (5 variants x 3 seeds x 60 epochs of `cnn_small` on 300 images). A constant
rate (a decaying one would hide the rise) and no BatchNorm, so 'plain' has no regularizer at
all; only the early-stopping variants restore their best epoch.
"""

from __future__ import annotations

import numpy as np
from ml_collections import ConfigDict

from jaxreg import report
from jaxreg.experiment import Findings, Study, aggregate, check_int, check_spec, effect, paired_ci
from jaxreg.train.config import default_config

_STATS = ("min_val_loss", "min_epoch", "rise", "final_train_accuracy", "final_gap", "epochs_run")


def _config() -> ConfigDict:
    c = default_config()
    c.data, c.train_per_class, c.model, c.batch_norm = "mnist5k", 30, "cnn_small", False
    c.epochs, c.batch_size, c.learning_rate, c.schedule = 60, 32, 1e-3, "constant"
    c.monitor, c.monitor_mode, c.restore_best = "val_loss", "min", False
    c.checkpoint.enabled, c.progress = False, False  # finished runs are read back instead
    return c


def _variants(c: ConfigDict, p: ConfigDict) -> dict[str, dict]:
    es = {"early_stopping.patience": int(p.reg.patience), "restore_best": True}
    dwd = {"dropout": float(p.reg.dropout), "weight_decay": float(p.reg.weight_decay)}
    return {
        "plain": {},
        "early_stopping": es,
        "augment": {"augment": p.augment_spec},
        "dropout_wd": dwd,
        "all": {"augment": p.augment_spec, **dwd, **es},
    }


def _curve_stats(h: list[dict], patience: int) -> dict:
    """Onset, minimum and rise of validation loss, final training accuracy and gap."""
    vl = np.array([x["val_loss"] for x in h], np.float64)
    i = int(np.nanargmin(vl))
    return {
        "onset": report.overfitting_onset(h, patience=patience),
        "min_val_loss": float(vl[i]),
        "min_epoch": int(h[i]["epoch"]),
        "rise": float(vl[-1] - vl[i]),
        "final_train_accuracy": float(h[-1]["train_accuracy"]),
        "final_gap": float(h[-1]["train_accuracy"] - h[-1]["val_accuracy"]),
        "epochs_run": len(h),
    }


def _analyze(a) -> Findings:
    """Onsets from the histories, the table with them, per-run curves and the verdict."""
    rows = [r for r in a.stage_rows("train") if not r.get("diverged")]
    for r in rows:
        r.update(_curve_stats(a.history(r), int(a.params.onset_patience)))
    deltas, epochs = _variants(a.config, a.params), int(a.config.epochs)
    agg = {s["variant"]: s for s in aggregate(rows, metrics=_STATS)}
    table, verdict, onset_mean = [], [], {}
    for t in a.table:
        name, s, n = t["variant"], agg.get(t["variant"]), t["n"]
        if s is None:  # every seed diverged: the default row
            table.append(t)
            continue
        onsets = [r["onset"] for r in rows if r["variant"] == name and r["onset"] is not None]
        onset_mean[name], seen = (float(np.mean(onsets)) if onsets else None), len(onsets)
        when = f"{onset_mean[name]:.1f}" if seen else "none"
        shown = [f"{k.split('.')[0]}={v}" for k, v in deltas[name].items() if k != "restore_best"]
        table.append(
            {
                "variant": name,
                "settings": ", ".join(shown) or "no regularization",
                "n": n,
                "onset epoch (seeds with onset)": f"{when} ({seen}/{n})",
                "min val loss @ epoch": f"{s['min_val_loss_mean']:.3f} @ {s['min_epoch_mean']:.0f}",
                "val loss rise after min": s["rise"],
                "final train acc": s["final_train_accuracy"],
                "train − val gap": s["final_gap"],
                "epochs run": s["epochs_run"],
                **{k: v for k, v in t.items() if k not in ("variant", "n")},
            }
        )
        if name == a.study.baseline:
            verdict.append(
                f"Without regularization, overfitting was detected in {seen}/{n} "
                f"seeds, at epoch {when} on average: validation loss bottomed at "
                f"{s['min_val_loss_mean']:.3f} (epoch {s['min_epoch_mean']:.0f}) and ended "
                f"{s['rise_mean']:+.3f} higher after {epochs} epochs, while training accuracy "
                f"reached {s['final_train_accuracy_mean']:.3f}."
                if onsets
                else f"Without regularization no overfitting onset was detected in any of "
                f"{n} seeds within {epochs} epochs (validation loss rise after its minimum: "
                f"{s['rise_mean']:+.3f}), so the expected overfitting did not appear here."
            )
            verdict.append(
                f"Its last-epoch test accuracy was {t['test_accuracy']} "
                f"(test loss {t['test_loss']})."
            )
            continue
        lm, lh, *_ = paired_ci(rows, name, "test_loss", baseline=a.study.baseline)
        onset = (
            f"onset in {seen}/{n} seeds (mean epoch {when})" if seen else f"no onset in {n} seeds"
        )
        verdict.append(
            f"{name}: {onset}, val-loss rise {s['rise_mean']:+.3f}, {s['epochs_run_mean']:.0f} "
            f"epochs run, test loss {lm:+.3f} "
            f"({effect(lm, lh, above='higher', below='lower')})."
        )
    best = max(a.table, key=lambda t: t["test_accuracy_mean"])
    verdict.append(
        f"Highest mean test accuracy: {best['variant']} ({best['test_accuracy']}); this is a "
        "report, not a choice (no model was selected on test)."
    )
    keys = {"val_loss": "validation loss", "train_accuracy": "training accuracy"}
    title = "Validation loss (dashed: mean detected onset) and training accuracy"
    figures = [a.curves_figure("val_loss_curves.png", keys, marks=onset_mean, title=title)]
    for name in (t["variant"] for t in a.table):
        r = next(r for r in rows if r["variant"] == name and r["seed"] == rows[0]["seed"])
        best_epoch = r["best_epoch"] if deltas[name].get("restore_best") else r["min_epoch"]
        path = a.workdir / f"curves_{name}.png"
        title = f"{name}, seed {r['seed']}"
        report.plot_curves(a.history(r), path, onset=r["onset"], best_epoch=best_epoch, title=title)
        figures.append(path.name)
    c, seeds = a.config, sorted({r["seed"] for r in rows})
    protocol = f"""## Protocol

- {c.data}, {c.train_per_class} training images per class (subset k for seed k); model {c.model} \
without BatchNorm; {c.optimizer} lr {c.learning_rate:g} constant; batch {c.batch_size}; up to \
{c.epochs} epochs; seeds {seeds}.
- Onset: first epoch of the first run of {a.params.onset_patience} epochs whose validation loss \
is above the running minimum while training accuracy is above its value at that minimum \
(jaxreg.report.overfitting_onset).
- 'rise' = last-epoch validation loss minus the minimum; variants without early stopping report \
the last epoch, early stopping restores the epoch of minimum validation loss."""
    return Findings(table=table, verdict=verdict, figures=figures, sections=[protocol])


def _check(p: ConfigDict, c: ConfigDict) -> None:
    check_spec("augment_spec", p.augment_spec)
    check_int(p.onset_patience, name="onset_patience", minimum=1)
    check_int(c.train_per_class, name="train_per_class", minimum=1)


STUDY = Study(
    name="overfitting",
    title="Overfitting: long training on little data, with and without regularization",
    question="Where does a small CNN trained long on 30 images per class start to overfit, "
    "what does it cost, and what do augmentation, dropout + weight decay and early stopping "
    "change?",
    expectation="Plain: onset in every seed soon after the training set is fitted (~15 epochs), "
    "then rising validation loss; test accuracy after 60 epochs about that at the minimum, test "
    "loss much worse. Early stopping restores the minimum (lower test loss, same accuracy); "
    "augmentation delays or removes the onset and raises test accuracy; dropout + weight decay "
    "shrink the rise; all together give the best test accuracy.",
    source="Prechelt 1998 (Early stopping - but when?, Neural Networks: Tricks of the Trade), "
    "Fig. 1-2: validation error that falls, then rises while training error keeps falling.",
    regime="300 training images of mnist5k, a small CNN without BatchNorm, Adam at a constant "
    "rate for 60 epochs; onsets from the loss curves (`overfitting_onset`).",
    config=_config,
    variants=_variants,
    baseline="plain",
    expected={"early_stopping": 0, "augment": 1, "all": 1},
    params={
        "augment_spec": "digits",  # the policy of "augment" and "all"
        "reg": {"dropout": 0.5, "weight_decay": 0.5, "patience": 8},  # patience: early stopping
        "onset_patience": 2,  # rising epochs in a row that make an onset
    },
    smoke={"data": "digits", "model": "tiny", "epochs": 6, "batch_size": 20}
    | {"train_per_class": 10, "reg.patience": 2},
    smoke_set={"learning_rate": 1e-2},
    smoke_variants=("plain", "early_stopping", "all"),
    check=_check,
    metrics=("test_accuracy", "test_loss"),
    analyze=_analyze,
)

get_config, validate, run = STUDY.get_config, STUDY.validate, STUDY.run
