"""When to augment: limited data (accuracy vs training-set size), imbalanced data, low-diversity data.

Run: `jaxreg run when_to_augment` (`--config.smoke=true` shrinks it to seconds;
`--config.parts=a` runs one part; `--config.sizes=(10,100)`; `--config.seeds=(0,1,2)`).
About 20 minutes on 2 free CPU cores (`cnn_small`; part a: 4 sizes x 2 x 3 seeds, parts b
and c: 4 variants x 3 seeds). Each part is a study with its own report in its folder; `run`
runs the selected parts and writes one combined report.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from ml_collections import ConfigDict

from jaxreg import data as data_lib
from jaxreg import experiment as ex
from jaxreg import report
from jaxreg.train.config import default_config

SPEC = "digits"  # the augmentation of parts a and b
# (c) adds what the narrow set lacks: bigger digits and thicker strokes (blur then gamma < 1
# brightens the blurred rim, which widens a stroke), on top of the digits preset
THICKEN = "digits+scale(min_scale=1.0,max_scale=1.2)+blur(sigma=(0.3,1.0))"
THICKEN += "+gamma(min_gamma=0.35,max_gamma=1.0)"
BANDS = ("light", "medium", "heavy")  # (c) test terciles by ink


def _config() -> ConfigDict:
    c = default_config()
    c.data, c.model, c.batch_norm = "mnist5k", "cnn_small", True
    c.epochs, c.batch_size, c.learning_rate, c.schedule = 12, 32, 2e-3, "cosine"
    c.monitor, c.monitor_mode = "val_accuracy", "max"
    c.checkpoint.enabled, c.progress = False, False  # finished runs are read back
    return c


SMOKE = {"data": "digits", "model": "tiny", "epochs": 2, "batch_size": 20, "min_steps": 0}
COMMON = {"config": _config, "min_steps": 240, "smoke_set": {"learning_rate": 3e-3}}


def _protocol(line: str) -> list[str]:
    return [f"## Protocol\n\n- {line}"]


# ----------------------------------------------------------------------------- (a) size


def _analyze_a(a) -> ex.Findings:
    """Train-image and seeds-above columns, the gain figure, where the gain fades."""
    sizes = list(dict.fromkeys(r["sweep"] for r in a.rows))
    gains = [(s, *a.comparisons[(s, "augmented")]) for s in sizes]  # size, mean, half, above, n
    table = []
    for r in a.table:
        size, (_, _, _, above, n) = r["train_per_class"], gains[sizes.index(r["train_per_class"])]
        train = a.stage_rows("train", size)[0]["train_size"]
        table.append(r | {"train images": train, "setting": f"{size}/class", "note": "accuracy"})
        table[-1] |= {"seeds above": f"{above}/{n}"} if r["variant"] == "augmented" else {}
    curve = zip(*[(s, m * 100, h * 100 if np.isfinite(h) else 0) for s, m, h, *_ in gains])
    path = a.workdir / "a_gain_vs_size.png"
    ex.line_plot(
        {"augmented - none": tuple(curve)},
        path,
        xlabel="training images per class (log scale)",
        ylabel="test accuracy gain (pts; paired mean, 95% CI)",
        title="(a) gain from augmentation vs training-set size",
        logx=True,
    )
    clear = [s for s, m, h, *_ in gains if m - h > 0]  # NaN half-width (one seed): never clear
    beyond = ", ".join(str(s) for s in sizes if clear and s > max(clear))
    text = "At no size was the gain clear of the seed noise."
    if clear:
        text = f"The gain is clear (95% interval above 0) up to {max(clear)} per class" + (
            f" and not beyond it ({beyond} per class), so the benefit fades there."
            if beyond
            else ", the largest size measured: it had not faded within the sizes measured."
        )
    if len(gains) >= 2:
        (s0, m0, *_), (s1, m1, *_) = gains[0], gains[-1]
        trend = "shrank" if m1 < m0 else "did not shrink"
        text += f" The mean gain {trend} from {m0 * 100:+.1f} pts at {s0} to {m1 * 100:+.1f} pts "
        text += f"at {s1} per class."
    line = f"(a) stratified subsets of {sizes} per class, none vs '{a.params.augment_spec}'."
    return ex.Findings(table, [text], [path.name], _protocol(line))


SIZE = ex.Study(
    name="when_to_augment_a",
    title="(a) limited data: accuracy vs training-set size",
    question="How does test accuracy grow with the number of training images per class, with "
    "and without augmentation, and at what size does augmentation stop paying?",
    expectation="Augmentation helps most at 10-30 per class and the gain fades to about zero "
    "by 300 per class.",
    source="Reasoning: augmentation adds variants of the training images that more real data "
    "would also bring, so its marginal value falls as the training set grows (Simard et al. "
    "2003, ICDAR, Table 1, still measured a gain on all 60,000 MNIST images, with elastic "
    "distortions).",
    regime="10 to 300 images per class of mnist5k (`sizes`); `cnn_small`, at least 240 "
    "optimizer steps.",
    variants=lambda c, p: {"none": {"augment": ""}, "augmented": {"augment": p.augment_spec}},
    baseline="none",
    params={"augment_spec": SPEC},
    sweep=("train_per_class", (10, 30, 100, 300)),
    sweep_key="sizes",
    smoke=SMOKE,
    smoke_sweep=(5, 10),
    check=lambda p, c: ex.check_spec("augment_spec", p.augment_spec),
    metrics=("val_accuracy", "test_accuracy"),
    analyze=_analyze_a,
    **COMMON,
)


# ----------------------------------------------------------------------------- (b) imbalance


def _imbalance_variants(c, p) -> dict[str, dict]:
    """The variants of part b, each on the long-tailed training split (factor `imbalance`)."""
    aug, bal = {"augment": p.augment_spec}, {"balanced_sampling": True}
    deltas = {"baseline": {}, "augment": aug, "oversample": bal, "balanced_augment": bal | aug}
    return {n: d | {"imbalance_factor": p.imbalance} for n, d in deltas.items()}


def _balanced(row, unit) -> dict:
    """Per-class recall, balanced accuracy and the 3 smallest classes' recall, from predictions."""
    k, counts = unit.data["train"].num_classes, unit.data["train"].class_counts()
    rec = {s: ex.per_class_recall(row["pred"][s], unit.data[s].labels, k) for s in ("val", "test")}
    return {
        "recall": rec["test"].tolist(),
        "train_counts": counts.tolist(),
        "val_balanced_accuracy": float(np.nanmean(rec["val"])),
        "test_balanced_accuracy": float(np.nanmean(rec["test"])),
        "minority_recall": float(np.nanmean(rec["test"][np.argsort(counts, kind="stable")[:3]])),
    }


def _analyze_b(a) -> ex.Findings:
    """Settings and per-class recall columns, minority-recall changes, the recall figure."""
    p, deltas = a.params, _imbalance_variants(a.config, a.params)
    counts = next(r["train_counts"] for r in a.rows if not r.get("diverged"))
    base = next(r for r in a.table if r["variant"] == "baseline")
    verdict = [
        f"With class sizes from {max(counts)} down to {min(counts)} (factor {p.imbalance:g}), "
        f"the baseline reached test balanced accuracy {base['test_balanced_accuracy']} and "
        f"minority-class recall {base['minority_recall']} (3 smallest classes)."
    ]
    table, curves = [], {}
    for r in a.table:
        name = r["variant"]
        rec = np.array([x["recall"] for x in a.stage_rows("train", variant=name) if "recall" in x])
        curves[name] = (range(len(counts)), rec.mean(0), rec.std(0, ddof=1) if len(rec) > 1 else 0)
        settings = ", ".join(f"{k}={v}" for k, v in deltas[name].items() if k != "imbalance_factor")
        table.append(r | {"settings": settings or "uniform batches, no augmentation"})
        table[-1]["per-class recall (class: train count → mean recall)"] = " ".join(
            f"{c}:{n}→{m:.2f}" for c, (n, m) in enumerate(zip(counts, rec.mean(0)))
        )
        note = f"balanced accuracy; minority recall {r['minority_recall']}"
        table[-1] |= {"setting": f"long tail x{p.imbalance:g}", "note": note}
        if name != "baseline":
            m, h, _, _ = ex.paired_ci(a.rows, name, "minority_recall", baseline="baseline")
            verdict.append(f"{name} changed minority recall by {ex.format_pm(m, h)} pts.")
    best = max(a.table, key=lambda r: r["val_balanced_accuracy_mean"])
    verdict.append(
        f"Best on validation balanced accuracy: {best['variant']} "
        f"(test {best['test_balanced_accuracy']})."
    )
    if "balanced_augment" in curves and best["variant"] != "balanced_augment":
        verdict.append("Class-balanced augmentation was not the best variant here.")
    x = "class (training examples: " + ", ".join(f"{c}: {n}" for c, n in enumerate(counts)) + ")"
    title, path = "(b) per-class recall under a long-tailed training set", "b_per_class_recall.png"
    y = "test recall (mean ± std over seeds)"
    ex.line_plot(curves, a.workdir / path, xlabel=x, ylabel=y, title=title)
    line = (
        f"(b) long-tailed training split (factor {p.imbalance:g}, exponential profile); "
        "'oversample' = class-balanced batches; 'balanced_augment' = class-balanced batches "
        f"with '{p.augment_spec}' (each re-drawn minority example is augmented afresh). "
        "Balanced accuracy = mean per-class recall on the (balanced) test split."
    )
    return ex.Findings(table, verdict, [path], _protocol(line))


IMBALANCE = ex.Study(
    name="when_to_augment_b",
    title="(b) imbalanced data: long tail, class-balanced augmentation",
    question="With long-tailed class sizes (largest / smallest = `imbalance`), does "
    "class-balanced augmentation (class-balanced batches, so minority examples are drawn more "
    "often, each draw freshly augmented) raise balanced accuracy and minority recall?",
    expectation="Plain augmentation lifts all classes a little, class-balanced sampling lifts "
    "minority recall, and both together give the best balanced accuracy.",
    source="Buda, Maki & Mazurowski 2018 (Neural Networks 106), a systematic study of class "
    "imbalance in CNNs on MNIST, CIFAR-10 and ImageNet: oversampling the minority classes was "
    "the best remedy in almost every setting; augmentation on top of it is reasoning.",
    regime="the whole mnist5k training split made long-tailed (exponential profile, factor "
    "`imbalance` = 20); `cnn_small`, at least 240 optimizer steps; balanced accuracy on the "
    "balanced test split.",
    variants=_imbalance_variants,
    baseline="baseline",
    expected={"oversample": 1, "balanced_augment": 1},
    params={"augment_spec": SPEC, "imbalance": 20.0},  # largest / smallest class
    smoke=SMOKE | {"imbalance": 5.0},
    smoke_variants=("baseline", "balanced_augment"),
    check=lambda p, c: (
        ex.check_spec("augment_spec", p.augment_spec),
        ex.check_real(p.imbalance, name="imbalance", minimum=1.0),
    ),
    stages=(ex.Stage(keep_predictions=True, derive=_balanced),),
    primary="test_balanced_accuracy",
    metrics=("val_balanced_accuracy", "test_balanced_accuracy", "minority_recall"),
    analyze=_analyze_b,
    **COMMON,
)


# ----------------------------------------------------------------------------- (c) diversity


def _ink(images) -> np.ndarray:
    return np.asarray(images, np.float64).reshape(images.shape[0], -1).sum(1)


@functools.lru_cache(maxsize=4)
def _narrow(data: str, data_dir, fraction: float):
    """Splits, the narrow set (the least-ink `fraction` per class), its class size, terciles.

    The test terciles by ink use class-wise edges from the training split (not chosen on test).
    """
    splits = data_lib.load_splits(data, data_dir=data_dir)
    train, test = splits["train"], splits["test"]
    ink, keep, edges = _ink(train.images), [], []
    n_keep = max(1, round(fraction * int(train.class_counts().min())))
    for c in range(train.num_classes):
        members = np.flatnonzero(train.labels == c)
        keep.append(members[np.argsort(ink[members], kind="stable")[:n_keep]])
        edges.append(np.quantile(ink[members], [1 / 3, 2 / 3]))
    band = np.array([np.searchsorted(edges[y], v) for y, v in zip(test.labels, _ink(test.images))])
    bands = {f"test_{b}": test.subset(np.flatnonzero(band == i)) for i, b in enumerate(BANDS)}
    return splits, train.subset(np.sort(np.concatenate(keep))), n_keep, bands


def _train_c(u) -> dict:
    """Trains on the narrow set, or on a random subset of the same size for `random`."""
    c, p = u.config, u.params
    splits, narrow, n_keep, bands = _narrow(c.data, c.data_dir, p.narrow_fraction)
    train = narrow
    if u.variant == "random":
        train = data_lib.stratified_subset(splits["train"], n_keep, seed=u.seed)
    c.epochs = ex.epochs_for(len(narrow), c.batch_size, c.epochs, p.min_steps)
    r = u.train(name=".", data=splits | {"train": train}, extra_eval=bands)
    out = {k: v for k, v in r.items() if k not in ("history", "state", "model")}
    return out | {f"acc_{b}": r["extra"][f"test_{b}"]["accuracy"] for b in BANDS}


def _analyze_c(a) -> ex.Findings:
    """Training-set column, what the lack of diversity cost and what augmentation recovered."""
    frac, p, deltas = a.params.narrow_fraction, a.params, DIVERSITY.variants(a.config, a.params)
    n_keep = _narrow(a.config.data, a.config.data_dir, frac)[2]
    table, by = [], {r["variant"]: r for r in a.table}
    for r in a.table:
        random, aug = r["variant"] == "random", deltas[r["variant"]].get("augment")
        ts = (f"random {n_keep}/class" if random else f"lightest {frac:.0%} per class") + (
            f" + {aug}" if aug else ""
        )
        table.append({"variant": r["variant"], "training set": ts} | r)
        table[-1]["setting"] = "random, same size" if random else f"lightest {frac:.0%}"
        table[-1]["note"] = f"accuracy; heavy-stroke test digits {r['acc_heavy']}"
    nar, ran = by["narrow"], by.get("random")
    verdict = [
        f"Trained only on the lightest {frac:.0%} of each class, the model reached "
        f"{nar['test_accuracy']} test accuracy (light / medium / heavy test digits: "
        + " / ".join(f"{nar[f'acc_{b}_mean']:.3f}" for b in BANDS)
        + ")."
    ]
    if ran:
        gap = ran["test_accuracy_mean"] - nar["test_accuracy_mean"]
        verdict.append(
            f"A random subset of the same size reached {ran['test_accuracy']}, so the lack of "
            f"diversity cost {gap * 100:+.1f} pts overall and "
            f"{(ran['acc_heavy_mean'] - nar['acc_heavy_mean']) * 100:+.1f} pts on heavy digits."
        )
        for name in (n for n in by if n.startswith("narrow_")):
            verdict.append(f"{name} reached {by[name]['acc_heavy_mean']:.3f} on heavy digits")
            if gap > 1e-9:
                share = (by[name]["test_accuracy_mean"] - nar["test_accuracy_mean"]) / gap
                verdict[-1] += f", recovering {share:.0%} of the gap"
            verdict[-1] += "."
    bars = [  # one bar per tercile and variant
        {"bar": f"{b}: {r['variant']}"}
        | {f"test_accuracy_{s}": r[f"acc_{b}_{s}"] for s in ("mean", "std")}
        for b in BANDS
        for r in a.table
    ]
    title, path = "(c) low diversity: test accuracy by ink tercile", "c_accuracy_by_ink.png"
    ex.bar_plot(bars, "test_accuracy", a.workdir / path, key="bar", title=title)
    line = (
        f"(c) narrow = the {frac:.0%} of each class with the least ink (sum of pixel values) in "
        "the training split; test terciles use class-wise ink edges of the training split; "
        f"thicken = '{p.thicken_spec}'."
    )
    return ex.Findings(table, verdict, [path], _protocol(line))


DIVERSITY = ex.Study(
    name="when_to_augment_c",
    title="(c) low diversity: the lightest strokes only",
    question="Trained only on the lightest strokes (the `narrow_fraction` of each class with the "
    "least ink) and tested on the full variety, how much does a model lose against a random "
    "subset of the same size, and does augmentation that adds the missing variation (zoom-in, "
    "blur + gamma that thicken strokes) win it back?",
    expectation="The light-stroke model loses accuracy on heavy digits compared with a random "
    "subset; generic geometric augmentation recovers part of it and stroke-thickening "
    "recovers more.",
    source="Reasoning: augmentation only adds the variation its transforms encode; geometric "
    "jitter does not thicken a stroke, blur followed by gamma < 1 does.",
    regime="the 30 % least-ink images of each mnist5k class (`narrow_fraction`); `cnn_small`, "
    "at least 240 optimizer steps; test terciles by ink.",
    variants=lambda c, p: {
        "random": {},
        "narrow": {},
        "narrow_digits": {"augment": p.augment_spec},
        "narrow_thicken": {"augment": p.thicken_spec},
    },
    baseline="narrow",
    expected={"random": 1, "narrow_digits": 1, "narrow_thicken": 1},
    params={"augment_spec": SPEC, "thicken_spec": THICKEN, "narrow_fraction": 0.3},
    smoke=SMOKE | {"narrow_fraction": 0.1},
    smoke_variants=("random", "narrow", "narrow_digits"),
    check=lambda p, c: (
        ex.check_spec("augment_spec", p.augment_spec),
        ex.check_spec("thicken_spec", p.thicken_spec),
        ex.check_real(p.narrow_fraction, name="narrow_fraction", minimum=0, maximum=1, strict=True),
    ),
    stages=(ex.Stage(fn=_train_c),),
    metrics=("val_accuracy", "test_accuracy") + tuple(f"acc_{b}" for b in BANDS),
    analyze=_analyze_c,
    **COMMON,
)


# ----------------------------------------------------------------------------- the three parts

PARTS = {"a": ("a_size", SIZE), "b": ("b_imbalance", IMBALANCE), "c": ("c_diversity", DIVERSITY)}


def get_config() -> ConfigDict:
    """The config of parts a-c: `cnn_small` on mnist5k with BatchNorm, 3 seeds, every part."""
    c = SIZE.get_config()
    for key, value in (IMBALANCE.params | DIVERSITY.params).items():
        c[key] = value
    del c["variants"]
    c.parts = "abc"
    return c


def _parts(config: ConfigDict) -> dict[str, tuple[ex.Study, ConfigDict]]:
    """Each selected part's study and its config (the keys of the other parts removed)."""
    if not isinstance(config.parts, str):
        raise TypeError(f"config key 'parts' must be a string, got {config.parts!r}")
    letters = config.parts.strip().lower()
    if not letters or set(letters) - set("abc"):
        raise ValueError(f"config key 'parts' must be letters from 'abc', got {config.parts!r}")
    out = {}
    for part in (p for p in "abc" if p in letters):
        study, c = PARTS[part][1], ConfigDict(config.to_dict())
        for key in set(c.keys()) - set(study.get_config().keys()):
            del c[key]
        c.variants = ""
        out[part] = (study, c)
    return out


def validate(config: ConfigDict) -> None:
    """Checks every selected part's config (`Study.validate`) before anything trains."""
    for study, c in _parts(config).values():
        study.validate(c)


def run(config: ConfigDict, workdir: str) -> dict:
    """Runs the selected parts; writes one report with a table, figures and verdict per part."""
    validate(config)
    workdir, parts = Path(workdir), _parts(config)
    with ex.workdir_lock(workdir):
        outs = {p: study.run(c, workdir / PARTS[p][0]) for p, (study, c) in parts.items()}
        table, verdict, path = _report(workdir, outs, bool(config.smoke))
    return {"parts": outs, "table": table, "verdict": verdict, "report": str(path)}


def _report(workdir: Path, outs: dict, smoke: bool) -> tuple[list[dict], str, Path]:
    """The combined report: one table row per part and variant, the parts' figures and verdicts."""
    a = next(iter(outs.values()))["analysis"]
    c, seeds = a.config, list(dict.fromkeys(r["seed"] for r in a.rows))
    protocol = [
        f"- Data {c.data}; model {c.model} (BatchNorm {c.batch_norm}), {c.optimizer} lr "
        f"{c.learning_rate:g} ({c.schedule}), batch {c.batch_size}, at least {c.epochs} epochs "
        f"and {a.params.min_steps} steps per run; seeds {seeds}; best epoch by validation accuracy."
    ]
    table, details, figures, verdict, columns = [], [], [], [], ("setting", "variant", "n")
    for p, out in outs.items():
        (folder, study), a = PARTS[p], out["analysis"]
        test = study.primary
        for r in out["table"]:
            table.append(
                {"part": p} | {k: r[k] for k in columns} | {"val": r[test.replace("test_", "val_")]}
            )
            table[-1] |= {"test": r[test], "Δ test (pts, 95% CI)": r.get(f"delta_{test}", "-")}
            table[-1] |= {"effect": r.get("effect", "reference"), "note": r["note"]}
        hide = lambda k: k in ("setting", "note") or k.endswith(("_mean", "_std"))
        shown = [{"part": p} | {k: v for k, v in r.items() if not hide(k)} for r in out["table"]]
        details.append(report.markdown_table(shown))
        figures += [f"{folder}/{f}" for f in ["primary.png", *a.findings.figures]]
        verdict.append(f"({p}) {out['verdict']}")
        protocol += [s.removeprefix("## Protocol\n\n") for s in a.findings.sections]
    path = report.write_experiment_report(
        workdir,
        title="When to augment: limited, imbalanced and low-diversity data",
        question="Where does augmentation stop helping as data grow? Does class-balanced "
        "augmentation fix a long-tailed training set? Does augmentation recover what a "
        "low-diversity training set lacks?",
        expectation="\n\n".join(
            f"({p}) {PARTS[p][1].expectation} Source: {PARTS[p][1].source}" for p in outs
        ),
        table_rows=table,
        verdict=" ".join(verdict),
        figures=figures,
        extra_md="## Protocol\n\n"
        + "\n".join(protocol)
        + "\n\n## Details per part\n\n"
        + "\n".join(details),
        smoke=smoke,
    )
    print(("[smoke] " if smoke else "") + " ".join(verdict) + f"\nReport: {path}")
    return table, " ".join(verdict), path
