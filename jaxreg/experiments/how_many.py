"""How many generated examples per real one: grow the augmented copies (0, 1, 2, 4, ...) until validation stops improving.

Run: `jaxreg run how_many` (`--config.smoke=true` shrinks it to seconds;
`--config.copies=(0,1,2,4,8)`; `--config.patience=2`; `--config.seeds=(0,1,2)`).
About 12 minutes on 2 free CPU cores (up to 7 amounts x 3 seeds of `cnn_small`, 500
optimizer steps each, plus an on-the-fly reference).

Question (the study note's "how many examples to generate?"): for each real training image,
make k augmented versions once (a fixed, enlarged training set, as if generated), and train
on originals + copies with augmentation off. Growing k step by step and watching validation,
where does it stop paying, and does more generated data ever hurt (overfitting to the
generator's artefacts, or crowding out the real images)?

Expectation (written before running): the first few copies raise validation and test accuracy
by several points (20 real images per class), the curve flattens by k = 4-8 and further
copies add nothing; we do not expect a clear drop, but with a fixed step budget the largest
sets see each real image only a few times.

Protocol: seed k draws real subset k; its copies come from `jaxreg.augment.batch(policy)` on device
with the fixed key `fold_in(key(generate_key), seed)`, copy j using `fold_in(that, j)`, so
the copies of a smaller k are a subset of those of a larger k (the set grows, nothing is
re-drawn). Every amount trains for the same number of optimizer steps (`steps`; epochs =
ceil(steps / steps per epoch)), so only the data change, not the compute. The amount is chosen
on validation accuracy (mean over seeds): the search stops after `patience` consecutive
amounts without an improvement above `min_delta`; the test split chooses nothing. The
`online` row is a reference: the real images only, with the same policy applied on the fly
(fresh augmentation every step) and the same step budget.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from ml_collections import ConfigDict

from jaxreg import data as data_lib
from jaxreg import experiment, report
from jaxreg.experiment import format_pm
from jaxreg.train.config import default_config, validate_config

EXPERIMENT_KEYS = (
    "seeds",
    "copies",
    "policy",
    "generate_key",
    "steps",
    "patience",
    "min_delta",
    "online_reference",
    "compile_cache",
)


def get_config() -> ConfigDict:
    """Returns the experiment's config: `cnn_small` on 20 mnist5k images per class, 0-32 copies."""
    c = default_config()
    c.data = "mnist5k"
    c.train_per_class = 20
    c.model = "cnn_small"
    c.batch_norm = True
    c.batch_size = 32
    c.learning_rate = 2e-3
    c.schedule = "cosine"
    c.monitor = "val_accuracy"
    c.monitor_mode = "max"
    c.checkpoint.enabled = False  # finished runs are read back from results.json instead
    c.progress = False
    # experiment keys (removed before training)
    c.seeds = (0, 1, 2)
    c.copies = (0, 1, 2, 4, 8, 16, 32)  # augmented copies per real image, tried in this order
    c.policy = "digits+shear(max_degrees=8)"  # how a copy is made
    c.generate_key = 42
    c.steps = 500  # optimizer steps per run, the same for every amount
    c.patience = 2  # stop after this many amounts without a validation improvement
    c.min_delta = 0.002  # an improvement must exceed this (mean validation accuracy)
    c.online_reference = True
    c.compile_cache = True
    return c


# ----------------------------------------------------------------------------- generation

_COPY_FNS: dict[str, Any] = {}  # policy spec -> jitted batch augmentation (compiled once)


def make_copies(train: data_lib.Dataset, policy: str, k: int, key: int) -> data_lib.Dataset:
    """`train` followed by `k` augmented copies of every image (labels repeated).

    Copy j of the whole set is `jaxreg.augment.batch(from_spec(policy))(fold_in(key(key), j), images)`,
    computed on device; copy j does not depend on k, so growing k only appends.
    """
    if k < 0:
        raise ValueError(f"copies must be >= 0, got {k}")
    if k == 0:
        return train
    import jax
    import jax.numpy as jnp

    from jaxreg import augment

    if policy not in _COPY_FNS:
        _COPY_FNS[policy] = jax.jit(augment.batch(augment.from_spec(policy)))
    fn = _COPY_FNS[policy]
    x = jnp.asarray(train.images)
    root = jax.random.key(int(key))
    copies = [np.asarray(fn(jax.random.fold_in(root, j), x), np.float32) for j in range(k)]
    images = np.concatenate([np.asarray(train.images, np.float32)] + copies)
    labels = np.concatenate([np.asarray(train.labels)] * (k + 1))
    return data_lib.Dataset(
        images, labels, train.num_classes, train.class_names, f"{train.name}+{k}copies"
    )


# ----------------------------------------------------------------------------- run


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What `run` trains: the base config, the seeds, the amounts and the search's settings."""

    config: ConfigDict  # the training config (experiment keys removed, smoke settings applied)
    seeds: tuple[int, ...]
    copies: tuple[int, ...]  # amounts tried, in this order
    policy: str
    gen_key: int
    steps: int  # optimizer steps per run
    patience: int
    min_delta: float
    online: bool
    use_cache: bool


def _plan(config: ConfigDict) -> _Plan:
    """Parses `config` into what `run` trains; trains, loads and writes nothing."""
    config = ConfigDict(config.to_dict())
    smoke = bool(config.smoke)
    seeds = experiment.parse_seeds(config.seeds)
    copies = experiment.int_tuple(config.copies, name="copies")
    if not copies or any(k < 0 for k in copies) or list(copies) != sorted(set(copies)):
        raise ValueError(f"copies must be increasing non-negative ints, got {copies}")
    policy = config.policy
    gen_key = experiment.check_int(config.generate_key, name="generate_key")
    steps = experiment.check_int(config.steps, name="steps", minimum=0)
    patience = experiment.check_int(config.patience, name="patience", minimum=1)
    min_delta = experiment.check_real(config.min_delta, name="min_delta")
    online, use_cache = bool(config.online_reference), bool(config.compile_cache)
    for key in EXPERIMENT_KEYS:
        del config[key]
    if smoke:
        config = experiment.shrink(
            config, data="digits", model="tiny", batch_size=20, train_per_class=10
        )
        config.learning_rate = 3e-3  # a smoke setting, not a shrink (above the default)
        seeds, copies, online = seeds[:2], (0, 1, 3), False
        steps, patience = min(steps, 10), min(patience, 1)
    return _Plan(
        config, seeds, copies, policy, gen_key, steps, patience, min_delta, online, use_cache
    )


def _check(plan: _Plan) -> None:
    experiment.check_spec("policy", plan.policy)
    experiment.check_int(plan.config.train_per_class, name="train_per_class", minimum=1)
    validate_config(plan.config)
    # Every run's epochs give `steps` optimizer steps on its training-set size (epochs_for with
    # at least 1 epoch), known once the data are loaded; 1, the fewest, stands in for them.
    variants = {f"k{k}": {"epochs": 1, "augment": ""} for k in plan.copies}
    if plan.online:
        variants["online"] = {"epochs": 1, "augment": plan.policy}
    experiment.validate_variants(plan.config, variants, seed=plan.seeds[0])


def validate(config: ConfigDict) -> None:
    """Checks every training config `run` may train, before anything trains or is written.

    `policy` is built (`jaxreg.augment.from_spec`), the search's settings checked (`copies`,
    `steps`, `patience`, `min_delta`, `generate_key`), then the base config and the config of
    every amount and of the online reference (their epochs, which follow from each training
    set's size, stand in by 1, the fewest they can be); after the smoke settings (which only
    lower numbers, so an invalid value stays invalid) and once more as given.

    Raises:
      ValueError, TypeError: a bad value; the message names the config key (and the variant).
    """
    experiment.validate_with_smoke(config, lambda c: _check(_plan(c)))


def run(config: ConfigDict, workdir: str) -> dict:
    """Grows the number of copies until validation stops improving; writes the curve and verdict."""
    t0 = time.perf_counter()
    validate(config)
    plan = _plan(config)
    config, seeds, copies, policy = plan.config, plan.seeds, plan.copies, plan.policy
    gen_key, steps, patience, min_delta = plan.gen_key, plan.steps, plan.patience, plan.min_delta
    online = plan.online
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    splits = data_lib.load_splits(config.data)
    real = {
        s: data_lib.stratified_subset(splits["train"], int(config.train_per_class), seed=s)
        for s in seeds
    }
    n_real = len(real[seeds[0]])
    bs = int(config.batch_size)

    def data_for(k):
        def data_fn(c, seed):
            import jax

            key = int(jax.random.key_data(jax.random.fold_in(jax.random.key(gen_key), seed))[-1])
            return {
                "train": make_copies(real[seed], policy, k, key),
                "val": splits["val"],
                "test": splits["test"],
            }

        return data_fn

    def epochs_for(n):  # the same step budget for every amount
        return experiment.epochs_for(n, bs, 1, steps)

    rows, curve, stop_note = [], [], ""
    best_k, best_val, bad = None, -math.inf, 0
    with experiment.compile_cache(plan.use_cache):
        for k in copies:
            n = n_real * (k + 1)
            print(
                f"how_many: {k} copies per real image ({n} training images, "
                f"{epochs_for(n)} epochs = {epochs_for(n) * (n // bs)} steps)"
            )
            rs = experiment.run_variants(
                config,
                workdir,
                {f"k{k}": {"epochs": epochs_for(n), "augment": ""}},
                seeds=seeds,
                data_fn=data_for(k),
            )
            for r in rs:
                r["copies"] = k
                r["train_size"] = n
                _add_history(r, workdir)
            rows += rs
            val = float(np.mean([r["val_accuracy"] for r in rs]))
            curve.append((k, val))
            if val > best_val + min_delta:
                best_k, best_val, bad = k, val, 0
            else:
                bad += 1
                if bad >= patience:
                    rest = [x for x in copies if x > k]
                    stop_note = (
                        f"stopped after k={k}: {patience} amount(s) without a mean "
                        f"validation gain above {min_delta:g}"
                        + (f"; not tried: {list(rest)}" if rest else "")
                    )
                    break
        if not stop_note:
            stop_note = "every listed amount was tried (validation still improving or flat)"
        if online:

            def online_fn(c, seed):
                return {"train": real[seed], "val": splits["val"], "test": splits["test"]}

            rs = experiment.run_variants(
                config,
                workdir,
                {"online": {"epochs": epochs_for(n_real), "augment": policy}},
                seeds=seeds,
                data_fn=online_fn,
            )
            for r in rs:
                r["copies"] = "online"
                r["train_size"] = n_real
                _add_history(r, workdir)
            rows += rs

    metrics = ("val_accuracy", "test_accuracy", "train_accuracy", "gap", "best_epoch")
    agg = experiment.aggregate(rows, metrics=metrics)
    table = []
    for a in agg:
        name = a["variant"]
        mine = [r for r in rows if r["variant"] == name]
        m, h, _above, n = experiment.paired_ci(rows, name, "test_accuracy", baseline="k0")
        a["d_test"], a["h_test"] = m, h
        a["copies"], a["train_size"] = mine[0]["copies"], mine[0]["train_size"]
        onsets = [r["onset"] for r in mine if r["onset"] is not None]
        table.append(
            {
                "copies per real": a["copies"],
                "train images": a["train_size"],
                "epochs": mine[0]["epochs"],
                "n": a["n"],
                "val_accuracy": a["val_accuracy"],
                "test_accuracy": a["test_accuracy"],
                "Δ test vs k=0 (pts, 95% CI)": "-" if name == "k0" else format_pm(m, h),
                "final train acc": a["train_accuracy"],
                "train − val gap (last epoch)": a["gap"],
                "overfitting onset (seeds)": f"{len(onsets)}/{len(mine)}"
                + (f", epoch {np.mean(onsets):.0f}" if onsets else ""),
                "chosen": "←" if name == f"k{best_k}" else "",
            }
        )
    fig = _curve_figure(agg, best_k, workdir / "curve.png")
    verdict = make_verdict(agg, best_k, stop_note, int(config.train_per_class))
    wall = time.perf_counter() - t0
    extra_md = "\n".join(
        [
            "## Protocol",
            "",
            f"- {config.data}, {config.train_per_class} real images per class (subset k for seed k); "
            f"copies made once with '{policy}' (key {gen_key} folded with the seed, then the copy "
            "index); training on originals + copies with augmentation off.",
            f"- {steps} optimizer steps for every amount (batch {bs}); model {config.model}, "
            f"lr {config.learning_rate:g} ({config.schedule}); best epoch by validation accuracy.",
            f"- Search: amounts {list(copies)} in order; {stop_note}.",
            "- 'train − val gap' = training accuracy of the last epoch (on originals + copies) minus "
            "validation accuracy of the last epoch; 'overfitting onset' = "
            "jaxreg.report.overfitting_onset on the run's curves.",
            f"- Wall time of this invocation: {wall:.0f} s (finished runs are read back).",
        ]
    )
    experiment.write_report(
        workdir,
        title="How many generated examples per real one?",
        question=(
            "With 20 real images per class, how many augmented copies per real image "
            "should be generated, found by growing the amount while watching validation?"
        ),
        expectation=(
            "Several points from the first copies, flat by 4-8 copies, no clear drop "
            "at the largest amounts."
        ),
        table_rows=table,
        verdict=verdict,
        figures=[fig.name],
        extra_md=extra_md,
        wall_time_s=wall,
    )
    return {
        "rows": rows,
        "aggregate": agg,
        "table": table,
        "verdict": verdict,
        "chosen_copies": best_k,
        "stop": stop_note,
        "wall_time_s": wall,
    }


def _add_history(r: dict, workdir: Path) -> None:
    hist = report.read_metrics(
        experiment.run_dir(workdir, r["variant"], r["seed"]) / "metrics.jsonl"
    )
    last = hist[-1]
    r["train_accuracy"] = float(last["train_accuracy"])
    r["gap"] = float(last["train_accuracy"]) - float(last["val_accuracy"])
    r["epochs"] = len(hist)
    r["onset"] = report.overfitting_onset(hist) if len(hist) > 2 else None


def _curve_figure(agg, best_k, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    ks = [a for a in agg if a["copies"] != "online"]
    ref = [a for a in agg if a["copies"] == "online"]
    x = np.arange(len(ks))
    fig = Figure(figsize=(11, 4.2))
    ax = fig.add_subplot(1, 2, 1)
    for m, label in (("val_accuracy", "validation"), ("test_accuracy", "test")):
        mean = np.array([a[f"{m}_mean"] for a in ks])
        std = np.array([a[f"{m}_std"] for a in ks])
        ax.plot(x, mean, marker="o", label=label)
        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
        if ref:
            ax.axhline(
                ref[0][f"{m}_mean"],
                ls=":",
                lw=1,
                color=ax.lines[-1].get_color(),
                label=f"on-the-fly augmentation ({label})",
            )
    if best_k is not None:
        ax.axvline(
            [a["copies"] for a in ks].index(best_k),
            color="k",
            ls="--",
            lw=1,
            label=f"chosen on validation: k={best_k}",
        )
    ax.set_xticks(x, [str(a["copies"]) for a in ks])
    ax.set_xlabel("augmented copies per real image (k)")
    ax.set_ylabel("accuracy (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.errorbar(
        x, [a["gap_mean"] for a in ks], yerr=[a["gap_std"] for a in ks], marker="o", capsize=2
    )
    ax2.set_xticks(x, [str(a["copies"]) for a in ks])
    ax2.set_xlabel("augmented copies per real image (k)")
    ax2.set_ylabel("train − validation accuracy, last epoch")
    ax2.grid(alpha=0.3)
    fig.suptitle("Growing the generated set (fixed optimizer-step budget)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def make_verdict(agg, best_k, stop_note: str, per_class: int) -> str:
    """One paragraph from the measured curve."""
    ks = [a for a in agg if a["copies"] != "online"]
    by = {a["copies"]: a for a in ks}
    base = by.get(0, ks[0])
    text = (
        f"With {per_class} real images per class and no copies, the model reached "
        f"{base['val_accuracy']} validation and {base['test_accuracy']} test accuracy. "
        f"Curve (mean validation accuracy by copies per real image): "
        + ", ".join(f"k={a['copies']}: {a['val_accuracy_mean']:.3f}" for a in ks)
        + ". "
    )
    chosen = by.get(best_k)
    if best_k == 0:
        text += (
            f"No amount of copies beat the real images alone on validation by more than the "
            f"threshold, so k=0 was chosen ({stop_note}). "
        )
    elif chosen is not None:
        text += (
            f"The amount chosen on validation is k={best_k} ({stop_note}); its test accuracy "
            f"was {chosen['test_accuracy']}, "
            f"{format_pm(chosen['d_test'], chosen['h_test'])} pts vs no copies (paired by "
            "seed, 95% CI). "
        )
    after = [a for a in ks if best_k is not None and a["copies"] > best_k]
    drops = [a for a in after if a["val_accuracy_mean"] < chosen["val_accuracy_mean"]]
    if drops:
        worst = min(drops, key=lambda a: a["val_accuracy_mean"])
        text += (
            f"Beyond it, more copies did not help: validation fell to "
            f"{worst['val_accuracy_mean']:.3f} at k={worst['copies']} "
            f"({(worst['val_accuracy_mean'] - chosen['val_accuracy_mean']) * 100:+.1f} pts); "
        )
    elif after:
        text += "Beyond it, validation stayed within the stopping threshold (flat, no drop); "
    else:
        text += "No larger amount was tried after the chosen one, so no drop was observed; "
    gaps = [a["gap_mean"] for a in ks]
    i = int(np.argmax(gaps))
    text += (
        f"the train−validation gap at the last epoch was largest at k={ks[i]['copies']} "
        f"({gaps[i]:.3f}) and {gaps[-1]:.3f} at k={ks[-1]['copies']}."
    )
    ref = [a for a in agg if a["copies"] == "online"]
    if ref and chosen is not None:
        r = ref[0]
        word = "above" if r["test_accuracy_mean"] > chosen["test_accuracy_mean"] else "not above"
        text += (
            f" On-the-fly augmentation with the same policy and steps reached "
            f"{r['test_accuracy']} test accuracy, {word} the chosen fixed set."
        )
    return text
