"""GAN samples as training data: few real images alone, with a conditional GAN's samples, with classic augmentation.

Run: `jaxreg run gan_augment` (`--config.smoke=true` shrinks it to seconds;
`--config.sizes=(20,)`; `--config.ratios=(0.25,0.5)`; `--config.gan_steps=800`). About 38
minutes on the shared 2-core CPU (3 seeds, 20 and 50 per class; GAN samples stayed within noise
of real-only, classic augmentation gained +4.7 and +1.0 points).
For each training-set size (real images per class of mnist5k) and seed, three stages:
1. `judge` (once): a CNN trained on the whole mnist5k training split; it scores the samples
   (classifier accuracy on generated images, Fréchet distance in its feature space).
2. `gan` (per size and seed): `jaxreg.gan.train_gan` on that seed's real subset only
   (DiffAugment on), then a pool of `pool_per_class` samples per class from the EMA generator,
   cached as `pool.npz` with its grids and quality numbers.
3. `train` (per variant): the classifier on the real subset alone, with classic augmentation,
   with GAN samples filling a `synthetic_ratio` of every batch (`config.synthetic_ratio`), and
   both; every variant takes the same number of optimizer steps (`steps`).
Validation picks the ratio (and the variant); test accuracy reports. The recorded full run is
in `benchmarks/results/gan_augment.md`.
"""

from __future__ import annotations

import math
import shutil
import time

import numpy as np
from ml_collections import ConfigDict

from jaxreg import experiment as ex
from jaxreg.experiment import Findings, Stage, Study, Unit
from jaxreg.experiments import how_many

_DROP = ("history", "state", "model")


def _ratios(p: ConfigDict) -> tuple[float, ...]:
    ratios = tuple(float(r) for r in p.ratios)
    if not ratios or any(not 0.0 < r < 1.0 for r in ratios) or len(set(ratios)) != len(ratios):
        raise ValueError(f"config key 'ratios' must be distinct numbers in (0, 1), got {p.ratios}")
    return ratios


def _name(ratio: float) -> str:
    return f"gan{round(100 * ratio)}"


def _variants(c: ConfigDict, p: ConfigDict) -> dict[str, dict]:
    out: dict[str, dict] = {"real": {}, "augment": {"augment": p.policy}}
    for r in _ratios(p):
        out[_name(r)] = {"synthetic_ratio": r}
    first = _ratios(p)[0]
    out[f"{_name(first)}+augment"] = {"synthetic_ratio": first, "augment": p.policy}
    return out


def gan_config(params: ConfigDict, config: ConfigDict, seed: int) -> ConfigDict:
    """The `jaxreg.gan.train_gan` config of one (size, seed): the study's GAN settings."""
    from jaxreg import gan

    g = gan.gan_config()
    g.data, g.data_dir, g.train_per_class = config.data, config.data_dir, config.train_per_class
    g.seed, g.progress = int(seed), False
    g.batch_size = int(params.gan_batch_size)
    g.gan.width, g.gan.diff_augment = int(params.gan_width), params.diff_augment
    g.gan.epoch_steps = min(int(g.gan.epoch_steps), int(params.gan_steps))
    g.epochs = max(1, math.ceil(int(params.gan_steps) / int(g.gan.epoch_steps)))
    return g


def _judge(unit: Unit) -> dict:
    """A classifier trained on the whole training split, shared by every size (one folder)."""
    from jaxreg import data as data_lib

    p, c = unit.params, ConfigDict(unit.config.to_dict())
    splits = data_lib.load_splits(c.data, data_dir=c.data_dir)
    c.model, c.train_per_class, c.epochs = p.judge_model, None, int(p.judge_epochs)
    c.augment, c.synthetic_ratio, c.checkpoint.enabled = "", 0.0, True  # restored by `gan`
    folder = (unit.dir.parent.parent / "judge").resolve()  # <workdir>/judge, not per size
    r = unit.train(c, name=str(folder), data=splits)
    return {"judge_dir": str(folder), "judge_test_accuracy": float(r["test_accuracy"])}


def _quality(judge, x, y, data, train) -> dict:
    from jaxreg import gan

    q = gan.sample_quality(x, y, judge, data["test"].images, data["val"].images)
    f_test = gan.classifier_features(judge, data["test"].images)
    q["frechet_real_subset"] = gan.frechet_distance(
        f_test, gan.classifier_features(judge, train.images)
    )
    return q


def _gan(unit: Unit) -> dict:
    """Trains the GAN on this seed's real subset; caches its sample pool, grids and quality."""
    import jax

    from jaxreg import gan
    from jaxreg.train.restoring import restore

    p, data = unit.params, unit.data
    judge = restore(unit.result("judge")["judge_dir"]).model
    out: dict = {}
    runs = [("", p.diff_augment)] + ([("plain_", "")] if p.compare_diff_augment else [])
    for prefix, policy in runs:
        g = gan_config(p, unit.config, unit.seed)
        g.gan.diff_augment = policy
        t0 = time.perf_counter()
        r = gan.train_gan(g, unit.dir / f"{prefix}gan", data=data)
        seconds = time.perf_counter() - t0
        key = jax.random.fold_in(jax.random.key(int(p.sample_key)), unit.seed)
        x, y = gan.synthesize(key, r["generator"], int(p.pool_per_class))
        gan.write_class_grids(unit.dir / f"{prefix}grids", x, y)
        if not prefix:
            np.savez(unit.dir / "pool.npz", images=x, labels=y)
        q = _quality(judge, x, y, data, data["train"])
        q["worst_class_accuracy"] = min(q["per_class_accuracy"].values())
        out |= {f"{prefix}{k}": v for k, v in q.items()}
        out |= {f"{prefix}gan_steps": r["steps"], f"{prefix}gan_seconds": round(seconds, 1)}
    return out


def _train(unit: Unit) -> dict:
    """The classifier for `steps` optimizer steps; GAN variants draw from the seed's pool."""
    from jaxreg.train.loop import load_pool, synthetic_count

    c, data = ConfigDict(unit.config.to_dict()), dict(unit.data)
    per_batch = 0
    if float(c.synthetic_ratio) > 0:
        per_batch = synthetic_count(c.synthetic_ratio, c.batch_size)
        data["synthetic"] = load_pool(unit.artifact("gan") / "pool.npz", data["train"])
    real = int(c.batch_size) - per_batch
    c.epochs = ex.epochs_for(len(data["train"]), real, 1, int(unit.params.steps))
    r = unit.train(c, name=".", data=data)
    return {k: v for k, v in r.items() if k not in _DROP}


def _mean_std(rows: list[dict], key: str, fmt: str = ".3f") -> str:
    vals = np.array([r[key] for r in rows if r.get(key) is not None], np.float64)
    if not len(vals):
        return "—"
    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    return f"{np.mean(vals):{fmt}} ± {std:{fmt}}"


def _analyze(a) -> Findings:
    """GAN sample quality per size, the ratio and variant chosen on validation, the grids."""
    p, verdict, sections, figures = a.params, [], [], []
    sizes = list(dict.fromkeys(r["sweep"] for r in a.stage_rows("gan")))
    quality = []
    for size in sizes:
        rows = a.stage_rows("gan", sweep=size)
        q = {"real per class": size, "seeds": len(rows)}
        for key, label in (
            ("classifier_accuracy", "judge accuracy on samples"),
            ("worst_class_accuracy", "worst class"),
            ("frechet_distance", "FD samples↔test"),
            ("frechet_real_subset", "FD real subset↔test"),
            ("frechet_floor", "FD val↔test (floor)"),
            ("plain_classifier_accuracy", "no DiffAugment: judge accuracy"),
            ("plain_frechet_distance", "no DiffAugment: FD"),
            ("gan_seconds", "GAN training s"),
        ):
            if any(r.get(key) is not None for r in rows):
                q[label] = _mean_std(rows, key, ".1f" if "seconds" in key else ".3f")
        quality.append(q)
        src = a.stage_rows("gan", sweep=size)[0]["dir"]
        grid = f"gan_samples_{size}.png"
        if (a.workdir / grid).exists() or _copy(f"{src}/grids/samples.png", a.workdir / grid):
            figures.append(grid)
    judge = a.stage_rows("judge")
    head = "| " + " | ".join(quality[0]) + " |" if quality else ""
    lines = [head, "|" + " --- |" * len(quality[0])] if quality else []
    lines += ["| " + " | ".join(str(v) for v in q.values()) + " |" for q in quality]
    sections.append(
        "## GAN sample quality\n\n"
        f"Judge: a {p.judge_model} trained on the whole training split "
        f"(test accuracy {judge[0]['judge_test_accuracy']:.3f}); "
        f"{p.pool_per_class} samples per class from the EMA generator of each seed. Judge "
        "accuracy = the fraction of samples the judge labels as their class (GAN-test); FD = "
        "Fréchet distance in the judge's penultimate features, to the test split (the floor: "
        "validation vs test; 'real subset': the GAN's own training images vs test).\n\n"
        + "\n".join(lines)
    )
    ratios = [_name(r) for r in _ratios(p)]
    for size in sizes:
        rows = [t for t in a.table if t.get("train_per_class") == size]
        by = {t["variant"]: t for t in rows}
        gans = [by[n] for n in ratios if n in by]
        if not gans or "real" not in by:
            continue
        pick = max(gans, key=lambda t: t["val_accuracy_mean"])
        best = max(rows, key=lambda t: t["val_accuracy_mean"])
        q = next(x for x in quality if x["real per class"] == size)
        ci = a.comparisons.get((size, pick["variant"]))
        delta = f"{ex.format_pm(ci[0], ci[1])} points" if ci else "n/a"
        aug = a.comparisons.get((size, "augment"))
        verdict.append(
            f"At {size} real images per class the GAN's samples were labelled correctly by the "
            f"judge {q.get('judge accuracy on samples', '—')} of the time (FD "
            f"{q.get('FD samples↔test', '—')} vs {q.get('FD real subset↔test', '—')} for the "
            f"real subset itself); validation chose {pick['variant']} among the ratios, whose "
            f"test accuracy differs from real-only by {delta} ({pick.get('effect', '—')}), "
            + (
                f"while classic augmentation moved it by {ex.format_pm(aug[0], aug[1])} points; "
                if aug
                else ""
            )
            + f"the variant with the best validation accuracy overall was {best['variant']} "
            f"(test {best['test_accuracy']})."
        )
        both = f"{ratios[0]}+augment"
        train_rows = a.stage_rows("train", sweep=size)
        if both in by and "augment" in by:
            m, h, _, _ = ex.paired_ci(train_rows, both, "test_accuracy", baseline="augment")
            verdict.append(
                f"Adding GAN samples on top of classic augmentation ({both} vs augment) changed "
                f"test accuracy by {ex.format_pm(m, h)} points ({ex.effect(m, h)})."
            )
    helped = [
        f"{t['variant']} at {t.get('train_per_class')}"
        for t in a.table
        if t["variant"] in ratios and t.get("effect") == "helps"
    ]
    verdict.append(
        "GAN samples alone (any ratio) did not raise test accuracy beyond noise at any size."
        if not helped
        else "GAN samples alone raised test accuracy beyond the 95 % interval for "
        f"{ex.join_names(helped)}."
    )
    return Findings(verdict=verdict, figures=figures, sections=sections)


def _copy(src: str, dst) -> bool:
    try:
        shutil.copyfile(src, dst)
    except OSError:
        return False
    return True


def _check(p: ConfigDict, c: ConfigDict) -> None:
    from jaxreg import gan

    _ratios(p)
    ex.check_spec("policy", p.policy)
    try:
        gan.parse_policy(p.diff_augment)
    except (TypeError, ValueError) as e:
        raise type(e)(f"config key 'diff_augment': {e}") from None
    for key in ("steps", "gan_steps", "pool_per_class", "judge_epochs", "gan_batch_size"):
        ex.check_int(p[key], name=key, minimum=1)
    ex.check_int(p.gan_width, name="gan_width", minimum=1)
    ex.check_int(p.sample_key, name="sample_key")
    if not isinstance(p.compare_diff_augment, bool):
        raise TypeError(
            f"config key 'compare_diff_augment' must be a bool, got {p.compare_diff_augment!r}"
        )
    ex.check_int(c.train_per_class, name="train_per_class", minimum=1)
    gan.validate_gan_config(gan_config(p, c, 0))


STUDY = Study(
    name="gan_augment",
    title="GAN samples as training data vs classic augmentation (few real labels)",
    question="With 20 or 50 real mnist5k images per class, does mixing a class-conditional GAN's "
    "samples (trained on those images only) into every batch raise test accuracy, and how does "
    "it compare with classic augmentation and with both?",
    expectation="Classic augmentation helps clearly; GAN samples from a GAN trained on the same "
    "few images help little or not at all (within noise), less than classic augmentation, and "
    "add little on top of it.",
    source="Pinetz, Ruisz & Soukup 2019, 'Actual Impact of GAN Augmentation on CNN Classification "
    "Performance' (digit images, Fig. 5 and conclusion: GAN augmentation based only on the "
    "available real images helps 'to a much lesser extent and not necessarily reliably' than "
    "rendering/classic generation); Ravuri & Vinyals 2019, 'Seeing is Not Necessarily "
    "Believing' (ImageNet + BigGAN samples: 'at best only marginally improves').",
    regime="mnist5k digits at 28x28, a small DCGAN trained for 750 steps on 200 or 500 "
    "images on a 2-core CPU (the sources: banknote digits with WGANs; ImageNet with BigGAN); a "
    "small CNN trained for a fixed number of steps.",
    config=how_many.classifier_config,  # how_many's classifier, so the studies compare
    variants=_variants,
    baseline="real",
    expected={"augment": 1, "gan25": 0, "gan50": 0},
    sweep=("train_per_class", (20, 50)),
    sweep_key="sizes",
    params={
        "ratios": (0.25, 0.5),  # GAN fraction of each batch, one variant each
        "policy": "digits+shear(max_degrees=8)",  # classic augmentation (on the fly)
        "steps": 500,  # classifier optimizer steps, the same for every variant
        "gan_steps": 750,  # GAN optimizer steps per (size, seed)
        "gan_batch_size": 32,
        "gan_width": 32,
        "diff_augment": "color,translation,cutout",
        "compare_diff_augment": False,  # also train a GAN without DiffAugment (quality only)
        "pool_per_class": 500,  # generated once per (size, seed), cached as pool.npz
        "sample_key": 7,  # folded with the seed
        "judge_model": "cnn",
        "judge_epochs": 6,
    },
    smoke={"data": "digits", "model": "tiny", "batch_size": 20, "train_per_class": 10}
    | {"steps": 10, "gan_steps": 4, "gan_batch_size": 16, "gan_width": 8}
    | {"pool_per_class": 10, "judge_epochs": 1},
    smoke_set={"judge_model": "tiny", "learning_rate": 3e-3},
    smoke_sweep=(10,),
    stages=(
        Stage("judge", fn=_judge, per="once"),
        Stage("gan", fn=_gan, per="seed"),
        Stage("train", fn=_train),
    ),
    compare="train",
    check=_check,
    metrics=("val_accuracy", "test_accuracy", "best_epoch"),
    analyze=_analyze,
)

get_config, validate, run = STUDY.get_config, STUDY.validate, STUDY.run
