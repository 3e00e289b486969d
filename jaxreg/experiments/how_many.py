"""How many generated examples per real one: grow the augmented copies (0, 1, 2, 4, ...) until validation stops improving.

Run: `jaxreg run how_many` (`--config.smoke=true` shrinks it to seconds;
`--config.copies=(0,1,2,4)`; `--config.patience=2`). About 12 minutes on 2 free CPU cores.
Amount k (variant `k<k>`) trains on the real images + k generated examples per real one for
`steps` optimizer steps; amounts run in order until `patience` of them in a row gave no mean
validation gain above `min_delta`. The extra examples come from a `source` (`SOURCES`;
`augment`: copies made once with `policy`; `gan`: samples of a class-conditional GAN trained
on the same real images, `--config.source=gan`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from ml_collections import ConfigDict

from jaxreg import data as data_lib
from jaxreg import experiment as ex
from jaxreg import report
from jaxreg.experiment import Findings, Stage, Study, Unit
from jaxreg.train.config import default_config

_COPY_FNS: dict[str, Callable] = {}  # policy spec -> jitted batch augmentation (compiled once)


def make_copies(train: data_lib.Dataset, policy: str, k: int, key: int) -> data_lib.Dataset:
    """`train` followed by `k` augmented copies of every image (labels repeated).

    Copy j is `jaxreg.augment.batch(from_spec(policy))(fold_in(key(key), j), images)`, made
    on device; it does not depend on k, so growing k only appends.
    """
    if k < 0:
        raise ValueError(f"copies must be >= 0, got {k}")
    if k == 0:
        return train
    import jax

    from jaxreg import augment

    if policy not in _COPY_FNS:
        _COPY_FNS[policy] = jax.jit(augment.batch(augment.from_spec(policy)))
    x, root = jax.numpy.asarray(train.images), jax.random.key(int(key))
    fn = _COPY_FNS[policy]
    copies = [np.asarray(fn(jax.random.fold_in(root, j), x), np.float32) for j in range(k)]
    images = np.concatenate([np.asarray(train.images, np.float32)] + copies)
    labels = np.concatenate([np.asarray(train.labels)] * (k + 1))
    name = f"{train.name}+{k}copies"
    return data_lib.Dataset(images, labels, train.num_classes, train.class_names, name)


def _augment_source(unit: Unit, real: data_lib.Dataset, k: int) -> data_lib.Dataset:
    """Copies made once with `policy`, keyed by `generate_key` folded with the seed."""
    import jax

    key = jax.random.fold_in(jax.random.key(int(unit.params.generate_key)), unit.seed)
    return make_copies(real, unit.params.policy, k, int(jax.random.key_data(key)[-1]))


def _gan_source(unit: Unit, real: data_lib.Dataset, k: int) -> data_lib.Dataset:
    """Samples of a class-conditional GAN trained on `real` only (`jaxreg.gan.train_gan`).

    One GAN per seed, trained once in `<workdir>/gan/seed<seed>` (`gan_steps` steps, width
    `gan_width`, DiffAugment) and read back for every amount; batch j of `len(real)` samples
    (the same count per class) comes from key `generate_key` folded with the seed, then j, so
    growing k only appends.
    """
    import jax

    from jaxreg import gan

    p, c = unit.params, gan.gan_config()
    c.data, c.data_dir, c.train_per_class = unit.config.data, unit.config.data_dir, None
    c.seed, c.progress, c.gan.width = int(unit.seed), False, int(p.gan_width)
    c.gan.epoch_steps = min(int(c.gan.epoch_steps), int(p.gan_steps))
    c.epochs = max(1, math.ceil(int(p.gan_steps) / int(c.gan.epoch_steps)))
    data = {"train": real, "val": unit.data["val"], "test": unit.data["test"]}
    generator = gan.train_gan(c, unit.dir.parent.parent / "gan" / f"seed{unit.seed}", data=data)[
        "generator"
    ]
    per_class = max(1, len(real) // real.num_classes)
    root = jax.random.fold_in(jax.random.key(int(p.generate_key)), unit.seed)
    parts = [gan.synthesize(jax.random.fold_in(root, j), generator, per_class) for j in range(k)]
    images = np.concatenate([np.asarray(real.images, np.float32)] + [x for x, _ in parts])
    labels = np.concatenate([np.asarray(real.labels)] + [y for _, y in parts])
    name = f"{real.name}+{k}gan"
    return data_lib.Dataset(images, labels, real.num_classes, real.class_names, name)


# name -> `source(unit, real, k)`: the real images followed by k generated examples per real one
# (a source may read an earlier stage's artifacts, e.g. a generator: `unit.artifact(stage)`).
SOURCES: dict[str, Callable[[Unit, data_lib.Dataset, int], data_lib.Dataset]] = {
    "augment": _augment_source,
    "gan": _gan_source,
}


def classifier_config() -> ConfigDict:
    """The few-label classifier's training config, shared with `gan_augment` (same regime)."""
    c = default_config()
    c.data, c.train_per_class, c.model, c.batch_norm = "mnist5k", 20, "cnn_small", True
    c.batch_size, c.learning_rate, c.schedule = 32, 2e-3, "cosine"
    c.monitor, c.monitor_mode = "val_accuracy", "max"
    c.checkpoint.enabled, c.progress = False, False  # finished runs are read back instead
    return c


def _amounts(p: ConfigDict) -> tuple[int, ...]:
    copies = ex.int_tuple(p.copies, name="copies")
    if not copies or copies[0] != 0 or list(copies) != sorted(set(copies)):
        raise ValueError(f"config key 'copies' must be increasing ints from 0, got {copies}")
    return copies


def _variants(c: ConfigDict, p: ConfigDict) -> dict[str, dict]:
    out = {f"k{k}": {"augment": ""} for k in _amounts(p)}
    return out | ({"online": {"augment": p.policy}} if p.online_reference else {})


def _copies(variant: str) -> int | str:
    """The amount of a variant: k for `k<k>`, "online" for the on-the-fly reference."""
    return variant if variant == "online" else int(variant[1:])


def _train(unit: Unit) -> dict:
    """Trains amount k (or the on-the-fly reference) for `steps` optimizer steps."""
    real, c = unit.data["train"], ConfigDict(unit.config.to_dict())
    k = 0 if unit.variant == "online" else _copies(unit.variant)
    train = SOURCES[unit.params.source](unit, real, k) if k else real
    c.epochs = ex.epochs_for(len(train), int(c.batch_size), 1, int(unit.params.steps))
    r = unit.train(c, name=".", data={**unit.data, "train": train})
    h = report.read_metrics(unit.dir / "metrics.jsonl")
    last = h[-1]
    return {key: v for key, v in r.items() if key not in ("history", "state", "model")} | {
        "train_size": len(train),
        "epochs": len(h),
        "train_accuracy": float(last["train_accuracy"]),
        "gap": float(last["train_accuracy"]) - float(last["val_accuracy"]),
        "onset": report.overfitting_onset(h) if len(h) > 2 else None,
    }


def _search(rows: list[dict], p: ConfigDict) -> tuple[list, int | None, int | None]:
    """(the curve [(k, mean val)], the chosen k, the k after which the search stopped or None)."""
    vals: dict[int, list[float]] = {}
    for r in rows:
        if r["variant"] != "online":
            val = r["val_accuracy"]  # None: diverged, never an improvement
            vals.setdefault(_copies(r["variant"]), []).append(np.nan if val is None else val)
    curve = [(k, float(np.mean(v))) for k, v in vals.items()]
    best, best_val, bad = None, -math.inf, 0
    for k, val in curve:
        if val > best_val + float(p.min_delta):
            best, best_val, bad = k, val, 0
        elif (bad := bad + 1) >= int(p.patience):
            return curve, best, k
    return curve, best, None


def _skip(rows: list[dict], variant: str, p: ConfigDict) -> bool:
    return variant != "online" and _search(rows, p)[2] is not None


def _analyze(a) -> Findings:
    """The curve, the amount chosen on validation, the stop, the gap; table and figure."""
    p, rows = a.params, a.stage_rows("grow")
    curve, best, stop = _search(rows, p)
    tried = [k for k, _ in curve]
    rest = [k for k in _amounts(p) if k > tried[-1]]
    note = "every listed amount was tried (validation still improving or flat)"
    if stop is not None:
        note = (
            f"stopped after k={stop}: {p.patience} amount(s) without a mean validation gain "
            f"above {p.min_delta:g}" + (f"; not tried: {rest}" if rest else "")
        )
    table = []
    for t in a.table:
        mine = [r for r in rows if r["variant"] == t["variant"]]
        onsets = [r["onset"] for r in mine if r.get("onset") is not None]
        t["copies"] = _copies(t["variant"])
        table.append(
            {
                "copies per real": t["copies"],
                "train images": mine[0].get("train_size"),  # None: diverged
                "epochs": mine[0].get("epochs"),
                **{k: v for k, v in t.items() if k != "copies"},
                "overfitting onset (seeds)": f"{len(onsets)}/{len(mine)}"
                + (f", epoch {np.mean(onsets):.0f}" if onsets else ""),
                "chosen": "←" if t["copies"] == best else "",
            }
        )
    ks = [t for t in a.table if t["copies"] != "online"]
    by, ref = {t["copies"]: t for t in ks}, [t for t in a.table if t["copies"] == "online"]
    base, chosen = by[0], by.get(best)
    verdict = [
        f"With {a.config.train_per_class} real images per class and no copies, the model reached "
        f"{base['val_accuracy']} validation and {base['test_accuracy']} test accuracy. Curve "
        "(mean validation accuracy by copies per real image): "
        + ", ".join(f"k={k}: {v:.3f}" for k, v in curve)
        + "."
    ]
    if best == 0:
        verdict.append(
            "No amount of copies beat the real images alone on validation by more than the "
            f"threshold, so k=0 was chosen ({note})."
        )
    elif chosen is not None:
        verdict.append(f"The amount chosen on validation is k={best} ({note}).")
    after = [t for t in ks if chosen is not None and t["copies"] > best]
    worst = min(after, key=lambda t: t["val_accuracy_mean"], default=None)
    fall = (worst["val_accuracy_mean"] - chosen["val_accuracy_mean"]) * 100 if worst else 0.0
    text = "No larger amount was tried after the chosen one, so no drop was observed; "
    if fall < 0:
        text = "Beyond it, more copies did not help: validation fell to "
        text += f"{worst['val_accuracy_mean']:.3f} at k={worst['copies']} ({fall:+.1f} pts); "
    elif after:
        text = "Beyond it, validation stayed within the stopping threshold (flat, no drop); "
    widest = max(ks, key=lambda t: t["gap_mean"])
    verdict.append(
        text + f"the train−validation gap at the last epoch was largest at k={widest['copies']} "
        f"({widest['gap_mean']:.3f}) and {ks[-1]['gap_mean']:.3f} at k={ks[-1]['copies']}."
    )
    if ref and chosen is not None:
        above = ref[0]["test_accuracy_mean"] > chosen["test_accuracy_mean"]
        verdict.append(
            f"On-the-fly augmentation with the same policy and steps reached "
            f"{ref[0]['test_accuracy']} test accuracy, {'above' if above else 'not above'} "
            "the chosen fixed set."
        )
    _figure(ks, ref, best, a.workdir / "curve.png")
    c = a.config
    protocol = f"""## Protocol

- {c.data}, {c.train_per_class} real images per class (subset k for seed k); extra examples from \
source '{p.source}' (augment: copies made once with '{p.policy}', key {p.generate_key} folded with \
the seed, then the copy index); training on originals + copies with augmentation off.
- {p.steps} optimizer steps for every amount (batch {c.batch_size}); model {c.model}, lr \
{c.learning_rate:g} ({c.schedule}); best epoch by validation accuracy.
- Search: amounts {list(_amounts(p))} in order; {note}.
- 'gap' = training accuracy of the last epoch (on originals + copies) minus validation accuracy \
of the last epoch; 'overfitting onset' = jaxreg.report.overfitting_onset on the run's curves."""
    return Findings(table=table, verdict=verdict, figures=["curve.png"], sections=[protocol])


def _figure(ks: list[dict], ref: list[dict], best, path) -> None:
    """Validation and test accuracy by amount (online reference dotted), and the gap."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    x, names = np.arange(len(ks)), [str(t["copies"]) for t in ks]
    fig = Figure(figsize=(11, 4.2))
    ax, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for m, label in (("val_accuracy", "validation"), ("test_accuracy", "test")):
        mean, std = (np.array([t[f"{m}_{s}"] for t in ks]) for s in ("mean", "std"))
        (line,) = ax.plot(x, mean, marker="o", label=label)
        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
        for r in ref:
            kw = {"ls": ":", "lw": 1, "color": line.get_color()}
            ax.axhline(r[f"{m}_mean"], label=f"on-the-fly augmentation ({label})", **kw)
    if best is not None:
        ax.axvline(names.index(str(best)), color="k", ls="--", lw=1, label=f"chosen: k={best}")
    gap = [t["gap_mean"] for t in ks], [t["gap_std"] for t in ks]
    ax2.errorbar(x, gap[0], yerr=gap[1], marker="o", capsize=2)
    ax.set_ylabel("accuracy (mean ± std over seeds)")
    ax2.set_ylabel("train − validation accuracy, last epoch")
    for axis in (ax, ax2):
        axis.set_xticks(x, names)
        axis.set_xlabel("augmented copies per real image (k)")
        axis.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle("Growing the generated set (fixed optimizer-step budget)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _check(p: ConfigDict, c: ConfigDict) -> None:
    if p.source not in SOURCES:
        raise ValueError(f"config key 'source' must be one of {sorted(SOURCES)}, got {p.source!r}")
    ex.check_spec("policy", p.policy)
    ex.check_int(p.generate_key, name="generate_key")
    ex.check_int(p.gan_steps, name="gan_steps", minimum=1)
    ex.check_int(p.gan_width, name="gan_width", minimum=1)
    ex.check_int(p.steps, name="steps", minimum=0)
    ex.check_int(p.patience, name="patience", minimum=1)
    ex.check_real(p.min_delta, name="min_delta")
    ex.check_int(c.train_per_class, name="train_per_class", minimum=1)


STUDY = Study(
    name="how_many",
    title="How many generated examples per real one?",
    question="With 20 real images per class, how many augmented copies per real image should be "
    "generated, found by growing the amount while watching validation?",
    expectation="Several points from the first copies, flat by 4-8 copies, no clear drop at the "
    "largest amounts (with a fixed step budget the largest sets see each real image only a few "
    "times).",
    source="Reasoning, no paper's table: augmented copies act like more data while they add "
    "variation; once the policy's variety is covered, more copies repeat it.",
    regime="20 real images per class of mnist5k, a small CNN, 500 optimizer steps per amount.",
    config=classifier_config,
    variants=_variants,
    baseline="k0",
    expected={"k1": 1, "k2": 1},
    params={
        "copies": (0, 1, 2, 4, 8, 16, 32),  # generated examples per real image, in this order
        "source": "augment",  # where they come from (SOURCES)
        "policy": "digits+shear(max_degrees=8)",  # augment source: how a copy is made
        "generate_key": 42,
        "gan_steps": 750,  # gan source: GAN optimizer steps (one GAN per seed)
        "gan_width": 32,  # gan source: base channels of generator and discriminator
        "steps": 500,  # optimizer steps per run, the same for every amount
        "patience": 2,  # stop after this many amounts without a validation improvement
        "min_delta": 0.002,  # an improvement must exceed this (mean validation accuracy)
        "online_reference": True,  # the real images with `policy` on the fly, same steps
    },
    smoke={"data": "digits", "model": "tiny", "batch_size": 20, "train_per_class": 10}
    | {"steps": 10, "patience": 1, "online_reference": False, "gan_steps": 4, "gan_width": 8},
    smoke_set={"learning_rate": 3e-3, "copies": (0, 1, 3)},
    stages=(Stage("grow", fn=_train, skip=_skip),),
    check=_check,
    metrics=("val_accuracy", "test_accuracy", "train_accuracy", "gap"),
    analyze=_analyze,
)

get_config, validate, run = STUDY.get_config, STUDY.validate, STUDY.run
