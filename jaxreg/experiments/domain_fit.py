"""Domain fit: augmentations must match deployment — flips/large rotations vs digits, degradations vs degraded test images.

Run: `jaxreg run domain_fit` (`--config.smoke=true` shrinks it to seconds;
`--config.variants=none,rotate_large,degrade` runs a subset; `--config.seeds=(0,1,2)`).
About 12 minutes on 2 free CPU cores (7 variants x 3 seeds of `cnn_small` on 100 images
per class).

Question: an augmentation is only a good idea if the transformed image could occur where the
model is used. (1) Digits are not mirror- or rotation-symmetric: do horizontal/vertical flips
and rotations up to 180 degrees hurt, and which confusions do they create (6/9, 2/5, ...)?
(2) If the deployed model sees degraded photos (noise, blur, low resolution, JPEG: the licence
plate case of the study note), does training with those degradations help on a degraded test
set, and what does it cost on clean images?

Expectation (written before running): small rotations/zoom/shifts help on clean digits; flips
and large rotations cost several points and raise the 6<->9 (rotation) and 2<->5 / 3<->8
(mirror) confusions; the baseline loses a lot on the corrupted test set, degradation training
wins most of it back at a small cost (or none) on clean images.

Protocol: seed k draws training subset k (shared by all variants, so differences are paired by
seed). Every model is evaluated on the clean test split and on a corrupted copy of it built
once, deterministically (fixed key), with the library's own degradation functions
(`gaussian_noise`, `gaussian_blur`, `downscale`, `jpeg_compress`): image i gets
corruption i mod 4; the per-type sets are reported too. Validation is clean and chooses the
epoch; the test sets choose nothing. Confusion counts come from the restored model's test
predictions (`jaxreg.train.predict`), summed over seeds.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
from ml_collections import ConfigDict

from jaxreg import data as data_lib
from jaxreg import experiment
from jaxreg.experiment import effect, format_pm, join_names
from jaxreg.train.config import default_config, validate_config

BASELINE = "none"
GEOMETRIC = ("digits", "rotate_large", "hflip", "vflip")
DEGRADING = ("degrade", "digits_degrade")
ALL_VARIANTS = ("none",) + GEOMETRIC + DEGRADING
SMOKE_VARIANTS = ("none", "digits", "degrade")
CORRUPTIONS = ("noise", "blur", "lowres", "jpeg")
WATCHED_PAIRS = ((6, 9), (9, 6), (2, 5), (5, 2), (3, 8), (8, 3))
EXPERIMENT_KEYS = (
    "seeds",
    "train_per_class_",
    "variants",
    "degrade_spec",
    "corruption",
    "min_steps",
    "compile_cache",
)


def get_config() -> ConfigDict:
    """Returns the experiment's config: `cnn_small` on 100 mnist5k images per class, 3 seeds."""
    c = default_config()
    c.data = "mnist5k"
    c.train_per_class = 100
    c.model = "cnn_small"
    c.batch_norm = True
    c.epochs = 15
    c.batch_size = 32
    c.learning_rate = 2e-3
    c.schedule = "cosine"
    c.monitor = "val_accuracy"
    c.monitor_mode = "max"
    c.checkpoint.enabled = False  # finished runs are read back from results.json instead
    c.progress = False
    # experiment keys (removed before training)
    c.seeds = (0, 1, 2)
    c.variants = ""  # comma-separated subset of ALL_VARIANTS; "" = all
    # training-time degradations, covering the deployment conditions below
    c.degrade_spec = (
        "noise(sigma=(0.0,0.3),p=0.5)+blur(sigma=(0.1,2.0),p=0.5)"
        "+downscale(factors=(2,3),p=0.3)+jpeg(quality=(10,50),p=0.3)"
    )
    # the deployment conditions: the corrupted test set (fixed strengths)
    c.corruption = ConfigDict(
        {
            "noise_sigma": 0.25,
            "blur_sigma": 1.5,
            "lowres_factor": 3,
            "jpeg_quality": 15,
            "key": 1234,
        }
    )
    c.min_steps = 300
    c.compile_cache = True
    return c


def variant_specs(degrade_spec: str) -> dict[str, str]:
    """Maps each variant name to its augment spec; the degrading ones use `degrade_spec`."""
    return {
        "none": "",
        "digits": "digits",
        "rotate_large": "rotate(max_degrees=180)",
        "hflip": "hflip",
        "vflip": "vflip",
        "degrade": degrade_spec,
        "digits_degrade": "digits+" + degrade_spec,
    }


# ----------------------------------------------------------------------------- corrupted test set


def corrupt_test_set(
    test: data_lib.Dataset,
    *,
    noise_sigma: float,
    blur_sigma: float,
    lowres_factor: int,
    jpeg_quality: float,
    key: int,
) -> dict[str, data_lib.Dataset]:
    """Deterministic corrupted copies of `test`: one per corruption and a mixed one.

    `test_<type>` applies one corruption to every image; `test_corrupt` gives image i the
    corruption `CORRUPTIONS[i % 4]`. Same `key` -> bit-identical sets.
    """
    import jax
    import jax.numpy as jnp

    from jaxreg import augment

    x = jnp.asarray(test.images)
    keys = jax.random.split(jax.random.key(int(key)), x.shape[0])
    fns = {
        "noise": jax.jit(jax.vmap(lambda k, im: augment.gaussian_noise(k, im, sigma=noise_sigma))),
        "blur": jax.jit(
            jax.vmap(lambda k, im: augment.gaussian_blur(im, blur_sigma, pad_mode="reflect"))
        ),
        "lowres": jax.jit(jax.vmap(lambda k, im: augment.downscale(im, int(lowres_factor)))),
        "jpeg": jax.jit(jax.vmap(lambda k, im: augment.jpeg_compress(im, jpeg_quality))),
    }
    out = {}
    per_type = {}
    for name, fn in fns.items():
        imgs = np.clip(np.asarray(fn(keys, x), np.float32), 0.0, 1.0)
        per_type[name] = imgs
        out[f"test_{name}"] = data_lib.Dataset(
            imgs, test.labels, test.num_classes, test.class_names, f"{test.name}-{name}"
        )
    which = np.arange(x.shape[0]) % len(CORRUPTIONS)
    mixed = np.stack([per_type[CORRUPTIONS[w]][i] for i, w in enumerate(which)])
    out["test_corrupt"] = data_lib.Dataset(
        mixed, test.labels, test.num_classes, test.class_names, f"{test.name}-corrupt"
    )
    return out


# ----------------------------------------------------------------------------- run


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What `run` trains: the base config, seeds, variants and the corrupted test set's settings."""

    config: ConfigDict  # the training config (experiment keys removed, smoke settings applied)
    seeds: tuple[int, ...]
    names: tuple[str, ...]  # the selected variants, the baseline first
    degrade_spec: str  # as given (a smoke run trains a lighter one)
    specs: dict[str, str]  # variant -> augment spec
    corruption: dict[str, Any]  # keyword arguments of `corrupt_test_set`
    min_steps: int
    use_cache: bool
    variants: dict[str, dict[str, str]]  # name -> {"augment": spec}


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
    degrade_spec = config.degrade_spec
    specs = variant_specs(degrade_spec)
    corr = dict(config.corruption)
    min_steps = experiment.check_int(config.min_steps, name="min_steps", minimum=0)
    use_cache = bool(config.compile_cache)
    for key in EXPERIMENT_KEYS:
        if key in config:
            del config[key]
    if smoke:
        config = experiment.shrink(
            config, data="digits", model="tiny", epochs=2, batch_size=20, train_per_class=10
        )
        config.learning_rate = 3e-3  # a smoke setting, not a shrink (above the default)
        seeds, min_steps = seeds[:2], min(min_steps, 0)
        specs = variant_specs("noise(sigma=(0.0,0.3))")  # compiles in a fraction of the time
    variants = {n: {"augment": specs[n]} for n in names}
    return _Plan(config, seeds, names, degrade_spec, specs, corr, min_steps, use_cache, variants)


_CORRUPTION_KEYS = ("noise_sigma", "blur_sigma", "lowres_factor", "jpeg_quality", "key")


def _check_corruption(corr: dict[str, Any]) -> None:
    if sorted(corr) != sorted(_CORRUPTION_KEYS):
        raise ValueError(
            f"config key 'corruption' must have exactly the keys {list(_CORRUPTION_KEYS)}, "
            f"got {sorted(corr)}"
        )
    experiment.check_real(corr["noise_sigma"], name="corruption.noise_sigma", minimum=0.0)
    experiment.check_real(
        corr["blur_sigma"], name="corruption.blur_sigma", minimum=0.0, strict=True
    )
    experiment.check_int(corr["lowres_factor"], name="corruption.lowres_factor", minimum=1)
    experiment.check_real(
        corr["jpeg_quality"], name="corruption.jpeg_quality", minimum=1.0, maximum=100.0
    )
    experiment.check_int(corr["key"], name="corruption.key")


def _check(plan: _Plan) -> None:
    experiment.check_spec("degrade_spec", plan.degrade_spec)
    _check_corruption(plan.corruption)
    # The epochs follow from the training-set size (epochs_for), known once the data are
    # loaded; the fewest they can be stands in for them (see experiment.least_epochs).
    base = experiment.variant_config(
        plan.config,
        {"epochs": experiment.least_epochs(plan.config.epochs, plan.min_steps)},
        plan.config.seed,
    )
    validate_config(base)
    experiment.validate_variants(base, plan.variants, seed=plan.seeds[0])


def validate(config: ConfigDict) -> None:
    """Checks every training config `run` would train, before anything trains or is written.

    `degrade_spec` is built (`jaxreg.augment.from_spec`; also in a smoke run, which trains a
    lighter one), the corrupted test set's settings checked, then the base config and every
    selected variant's config (the epochs, which follow from the training-set size, stand in
    by the fewest `epochs_for` can give); after the smoke settings (which only lower numbers,
    so an invalid value stays invalid) and once more as given.

    Raises:
      ValueError, TypeError: a bad value; the message names the config key (and the variant).
    """
    experiment.validate_with_smoke(config, lambda c: _check(_plan(c)))


def run(config: ConfigDict, workdir: str) -> dict:
    """Trains every variant and seed; evaluates on clean and corrupted test sets; reports."""
    t0 = time.perf_counter()
    validate(config)
    plan = _plan(config)
    config, seeds, names, specs = plan.config, plan.seeds, plan.names, plan.specs
    corr, min_steps = plan.corruption, plan.min_steps
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    splits = data_lib.load_splits(config.data)
    k = splits["train"].num_classes
    extra = corrupt_test_set(splits["test"], **corr)
    per_class = int(config.train_per_class) if config.train_per_class is not None else None
    data_fn = experiment.subset_data_fn(splits, per_class)
    n_train = len(data_fn(None, seeds[0])["train"])
    config.epochs = experiment.epochs_for(
        n_train, int(config.batch_size), int(config.epochs), min_steps
    )
    print(
        f"domain_fit: {len(names)} variants x {len(seeds)} seeds, {n_train} training images, "
        f"{config.epochs} epochs"
    )
    with experiment.compile_cache(plan.use_cache):
        rows = experiment.run_variants_with_predictions(
            config,
            workdir,
            plan.variants,
            seeds=seeds,
            data_fn=data_fn,
            extra_eval=extra,
        )
    for r in rows:
        r["corrupt_accuracy"] = r["extra"]["test_corrupt"]["accuracy"]
        for cname in CORRUPTIONS:
            r[f"{cname}_accuracy"] = r["extra"][f"test_{cname}"]["accuracy"]
        r["confusion"] = experiment.confusion_matrix(r["pred"]["test"], r["labels"]["test"], k)
    metrics = ("val_accuracy", "test_accuracy", "corrupt_accuracy") + tuple(
        f"{c}_accuracy" for c in CORRUPTIONS
    )
    agg = experiment.aggregate(rows, metrics=metrics)
    conf = {n: np.sum([r["confusion"] for r in rows if r["variant"] == n], axis=0) for n in names}
    nseeds = {n: sum(r["variant"] == n for r in rows) for n in names}
    table = []
    for a in agg:
        name = a["variant"]
        dc = experiment.paired_ci(rows, name, "test_accuracy", baseline=BASELINE)
        dk = experiment.paired_ci(rows, name, "corrupt_accuracy", baseline=BASELINE)
        a["d_clean"], a["d_corrupt"] = dc, dk
        diff = (conf[name] / nseeds[name]) - (conf[BASELINE] / nseeds[BASELINE])
        np.fill_diagonal(diff, 0)
        top = np.dstack(np.unravel_index(np.argsort(-diff, axis=None), diff.shape))[0][:3]
        a["top_pairs"] = [(int(i), int(j), float(diff[i, j])) for i, j in top if diff[i, j] > 0]
        watched = " ".join(
            f"{i}→{j}:{conf[name][i, j]}" for i, j in WATCHED_PAIRS if i < k and j < k
        )
        table.append(
            {
                "variant": name,
                "augmentation": specs[name] or "-",
                "n": a["n"],
                "clean test acc": a["test_accuracy"],
                "Δ clean (pts, 95% CI)": "-" if name == BASELINE else format_pm(dc[0], dc[1]),
                "corrupted test acc": a["corrupt_accuracy"],
                "Δ corrupted (pts, 95% CI)": "-" if name == BASELINE else format_pm(dk[0], dk[1]),
                **{f"{c} acc": a[f"{c}_accuracy"] for c in CORRUPTIONS},
                "watched confusions (true→pred: count over seeds)": watched,
                "most increased confusions vs none (per seed)": "-"
                if name == BASELINE
                else (" ".join(f"{i}→{j}:{d:+.1f}" for i, j, d in a["top_pairs"]) or "none"),
            }
        )
    figures = [_accuracy_figure(agg, workdir / "clean_vs_corrupted.png").name]
    geo = [n for n in names if n in GEOMETRIC]
    if geo:
        figures.append(
            _confusion_figure(conf, nseeds, geo, workdir / "confusion_increase.png").name
        )
    verdict = make_verdict(agg, conf, nseeds, k)
    wall = time.perf_counter() - t0
    extra_md = "\n".join(
        [
            "## Protocol",
            "",
            f"- Data {config.data}, {per_class} training images per class (subset k for seed k), "
            f"clean validation chooses the epoch; model {config.model}, {config.epochs} epochs, "
            f"batch {config.batch_size}, lr {config.learning_rate:g} ({config.schedule}); seeds "
            f"{list(seeds)}.",
            f"- Corrupted test set (built once, key {corr['key']}): gaussian_noise sigma "
            f"{corr['noise_sigma']}, gaussian_blur sigma {corr['blur_sigma']}, downscale x"
            f"{corr['lowres_factor']}, jpeg_compress quality {corr['jpeg_quality']}; "
            "'corrupted' mixes them (image i gets corruption i mod 4).",
            "- Confusion counts: clean test split, restored model, summed over seeds.",
            f"- Wall time of this invocation: {wall:.0f} s (finished runs are read back).",
        ]
    )
    experiment.write_report(
        workdir,
        title="Domain fit: augmentations must match deployment",
        question=(
            "Do flips and large rotations hurt digit recognition (which confusions "
            "appear), and does training with degradations help when the test images are "
            "degraded?"
        ),
        expectation=(
            "Flips and large rotations cost accuracy and raise 6↔9 / 2↔5 confusions; "
            "small geometric jitter helps; degradation training recovers most of the "
            "loss on the corrupted test set at little cost on clean images."
        ),
        table_rows=table,
        verdict=verdict,
        figures=figures,
        extra_md=extra_md,
        wall_time_s=wall,
    )
    slim = [
        {k_: v for k_, v in r.items() if k_ not in ("pred", "labels", "confusion")} for r in rows
    ]
    return {
        "rows": slim,
        "aggregate": agg,
        "table": table,
        "verdict": verdict,
        "confusion": {n: conf[n].tolist() for n in names},
        "wall_time_s": wall,
    }


def _accuracy_figure(agg, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    names = [a["variant"] for a in agg]
    fig = Figure(figsize=(9, 4.4))
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(names))
    for i, (m, label) in enumerate(
        (("test_accuracy", "clean test"), ("corrupt_accuracy", "corrupted test"))
    ):
        ax.bar(
            x + (i - 0.5) * 0.38,
            [a[f"{m}_mean"] for a in agg],
            0.38,
            yerr=[a[f"{m}_std"] for a in agg],
            capsize=2,
            label=label,
        )
    ax.set_xticks(x, names, rotation=20)
    lo = min(min(a["test_accuracy_mean"], a["corrupt_accuracy_mean"]) for a in agg)
    ax.set_ylim(max(0.0, lo - 0.1), 1.0)
    ax.set_ylabel("accuracy (mean ± std over seeds)")
    ax.set_title("Clean vs corrupted test accuracy per training augmentation")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _confusion_figure(conf, nseeds, names, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.4 * len(names) + 0.6, 3.6))
    base = conf[BASELINE] / nseeds[BASELINE]
    diffs = []
    for n in names:
        d = conf[n] / nseeds[n] - base
        np.fill_diagonal(d, 0)
        diffs.append(d)
    vmax = max(1.0, max(float(np.abs(d).max()) for d in diffs))
    for i, (n, d) in enumerate(zip(names, diffs)):
        ax = fig.add_subplot(1, len(names), i + 1)
        im = ax.imshow(d, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_title(n, fontsize=9)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_xticks(range(d.shape[0]))
        ax.set_yticks(range(d.shape[0]))
        ax.tick_params(labelsize=6)
    fig.colorbar(im, ax=fig.axes, shrink=0.8, label="errors per seed minus 'none'")
    fig.suptitle("Off-diagonal confusion counts: change vs no augmentation (clean test)")
    fig.savefig(path, dpi=110)
    return path


def make_verdict(agg, conf, nseeds, k) -> str:
    """One paragraph from the measured numbers."""
    by = {a["variant"]: a for a in agg}
    b = by[BASELINE]
    parts = [
        f"Without augmentation the model reached {b['test_accuracy']} on clean and "
        f"{b['corrupt_accuracy']} on corrupted test images (n={b['n']} seeds)."
    ]

    def pair(name, i, j):
        return (conf[name][i, j] + conf[name][j, i]) / nseeds[name]

    geo = [n for n in GEOMETRIC if n in by]
    for n in geo:
        a = by[n]
        m, h = a["d_clean"][0], a["d_clean"][1]
        text = f"{n}: clean accuracy {format_pm(m, h)} pts ({effect(m, h)})"
        if 9 < k:
            text += (
                f", 6↔9 confusions {pair(BASELINE, 6, 9):.1f} → {pair(n, 6, 9):.1f} and "
                f"2↔5 {pair(BASELINE, 2, 5):.1f} → {pair(n, 2, 5):.1f} per seed"
            )
        if a["top_pairs"]:
            text += "; largest increases " + ", ".join(
                f"{i}→{j} (+{d:.1f})" for i, j, d in a["top_pairs"]
            )
        parts.append(text + ".")
    clear = [n for n in geo if effect(*by[n]["d_clean"][:2]) == "hurts"]
    lower = [n for n in geo if by[n]["d_clean"][0] < 0 and n not in clear]
    if geo:
        parts.append(
            "Geometric augmentations that clearly lowered clean accuracy (95% CI below "
            f"0): {join_names(clear)}; lower on average but within the seed noise: "
            f"{join_names(lower)}."
        )
    for n in (x for x in DEGRADING if x in by):
        a = by[n]
        (cm, ch), (km, kh) = a["d_clean"][:2], a["d_corrupt"][:2]
        parts.append(
            f"{n}: corrupted-test accuracy {format_pm(km, kh)} pts ({effect(km, kh)}, "
            f"{b['corrupt_accuracy_mean']:.3f} → {a['corrupt_accuracy_mean']:.3f}), "
            f"clean accuracy {format_pm(cm, ch)} pts ({effect(cm, ch)})."
        )
        worst = min(CORRUPTIONS, key=lambda c: b[f"{c}_accuracy_mean"])
        parts.append(
            f"The corruption that hurt the baseline most was {worst} "
            f"({b[f'{worst}_accuracy_mean']:.3f}); with {n} it reached "
            f"{a[f'{worst}_accuracy_mean']:.3f}."
        )
    return " ".join(parts)
