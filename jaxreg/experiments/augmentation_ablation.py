"""Augmentation ablation on limited mnist5k: each augmentation alone, then combinations (20 and 100 per class).

Run: `jaxreg run augmentation_ablation` (`--config.smoke=true` shrinks it to seconds;
`--config.variants=none,rotate,mixup` runs a subset of the single augmentations;
`--config.sizes=(20,)`; `--config.seeds=(0,1,2)`). About 20 minutes on 2 free CPU cores
(2 sizes x 13 variants x 3 seeds of `cnn_small`, 240+ optimizer steps each).

Question: on limited data, which augmentation helps a small CNN, which hurts, and by how much?
Do the gains add up when augmentations are combined, and do they shrink with more data?

Expectation (written before running):
  * geometric jitter that keeps a digit a digit (small rotations, zoom, crops) helps most, by a
    few points at 20 per class and less at 100 per class;
  * horizontal flips do not help digits (a mirrored 2, 3, 7 is not a digit) and may hurt;
  * noise, brightness/contrast jitter and corner patches are about neutral on clean MNIST;
  * Mixup/CutMix help little in so few optimizer steps;
  * a combination of the best singles (picked on validation) is at least as good as the best
    single augmentation; the 'digits' preset (rotate + scale + shift) is among the best.

Protocol: seed k draws training subset k (the same subset for every variant, so differences
are paired by seed), and changes initialisation, shuffling and augmentation keys. The full
validation (1,000) and test (1,000) splits evaluate every model. Nothing is chosen on test:
the best epoch is restored by validation accuracy, and the combinations `top2`/`top3` are
built from the single augmentations with the largest mean *validation* gain. Every run takes
at least `min_steps` optimizer steps (`epochs = max(epochs, ceil(min_steps / steps per
epoch))`), so the small set is not under-trained. "Clear" effects are those whose 95 %
t-interval of the paired per-seed difference excludes 0.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ml_collections import ConfigDict

from jaxreg import data as data_lib
from jaxreg import experiment, report
from jaxreg.train.config import default_config, validate_config

BASELINE = "none"

# name -> (augment spec, mix spec): one augmentation at a time, magnitudes fixed in advance.
SINGLES: dict[str, tuple[str, str]] = {
    "none": ("", ""),
    "rotate": ("rotate(max_degrees=15)", ""),
    "scale": ("scale(min_scale=0.85,max_scale=1.15)", ""),
    "crop": ("crop(padding=3)", ""),
    "translate": ("translate(max_fraction=0.1)", ""),
    "shear": ("shear(max_degrees=10)", ""),
    "hflip": ("hflip", ""),
    "vflip": ("vflip", ""),
    "corner_patches": ("corner_patches", ""),
    "erasing": ("erasing", ""),
    "noise": ("noise(sigma=(0.0,0.2))", ""),
    "blur": ("blur(sigma=(0.1,1.0))", ""),
    "jitter": ("brightness(strength=0.3)+contrast(strength=0.3)", ""),
    "mixup": ("", "mixup(alpha=0.2)"),
    "cutmix": ("", "cutmix(alpha=1.0)"),
}
DEFAULT_SINGLES = (
    "none",
    "rotate",
    "scale",
    "crop",
    "hflip",
    "corner_patches",
    "noise",
    "jitter",
    "mixup",
    "cutmix",
)
SMOKE_SINGLES = ("none", "mixup")
PRESET = "digits"  # a fixed good combination: rotate +-10, scale 0.9-1.1, shift +-10 %
EXPERIMENT_KEYS = ("seeds", "sizes", "variants", "combos", "min_steps", "compile_cache")


def get_config() -> ConfigDict:
    """Returns the ablation's config: `cnn_small` on mnist5k, 2 sizes x 3 seeds, 12+ epochs."""
    c = default_config()
    c.data = "mnist5k"
    c.model = "cnn_small"
    c.batch_norm = True
    c.epochs = 12
    c.batch_size = 32
    c.learning_rate = 2e-3
    c.schedule = "cosine"
    c.monitor = "val_accuracy"
    c.monitor_mode = "max"
    c.checkpoint.enabled = False  # finished runs are read back from results.json instead
    c.progress = False
    # experiment keys (removed before training)
    c.seeds = (0, 1, 2)
    c.sizes = (20, 100)  # training images per class
    c.variants = ""  # comma-separated single augmentations (see SINGLES); "" = the default set
    c.combos = "digits,top2,top3"  # fixed preset and combinations of the best singles on val
    c.min_steps = 240  # every run takes at least this many optimizer steps
    c.compile_cache = (
        True  # persistent XLA cache (~/.cache/jaxreg/xla): seeds reuse compiled programs
    )
    return c


# ----------------------------------------------------------------------------- the experiment


def _combine(names: Sequence[str]) -> tuple[str, str]:
    """Augment spec and mix spec of several singles (one mix op at most: the first listed)."""
    augs = [SINGLES[n][0] for n in names if SINGLES[n][0]]
    mixes = [SINGLES[n][1] for n in names if SINGLES[n][1]]
    return "+".join(augs), (mixes[0] if mixes else "")


def _top_singles(rows: Sequence[Mapping], singles: Sequence[str], k: int) -> list[str]:
    """The k singles with the largest mean paired validation gain (at most one mix op)."""
    gains = {
        n: experiment.paired_ci(rows, n, "val_accuracy", baseline=BASELINE)[0]
        for n in singles
        if n != BASELINE
    }
    out, has_mix = [], False
    for n in sorted(gains, key=lambda n: -gains[n]):
        is_mix = bool(SINGLES[n][1])
        if is_mix and has_mix:
            continue
        out.append(n)
        has_mix |= is_mix
        if len(out) == k:
            break
    return out


def _describe(aug: str, mix: str) -> str:
    return " | ".join(p for p in (aug, f"mix: {mix}" if mix else "") if p) or "-"


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What `run` trains: the base config, seeds, sizes, singles and combinations."""

    config: ConfigDict  # the training config (experiment keys removed, smoke settings applied)
    seeds: tuple[int, ...]
    sizes: tuple[int, ...]  # training images per class
    singles: tuple[str, ...]  # the selected single augmentations, the baseline first
    combos: tuple[str, ...]  # PRESET, "top2", "top3": run after the singles
    min_steps: int
    use_cache: bool
    variants: dict[str, dict[str, str]]  # single name -> {"augment": ..., "mix": ...}


def _plan(config: ConfigDict) -> _Plan:
    """Parses `config` into what `run` trains; trains, loads and writes nothing."""
    config = ConfigDict(config.to_dict())
    smoke = bool(config.smoke)
    seeds = experiment.parse_seeds(config.seeds)
    sizes = experiment.int_tuple(config.sizes, name="sizes")
    if not sizes:
        raise ValueError("config key 'sizes' must name at least one size")
    for size in sizes:
        experiment.check_int(size, name="sizes", minimum=1)
    singles = experiment.select_variants(
        config.variants,
        allowed=SINGLES,
        baseline=BASELINE,
        default=SMOKE_SINGLES if smoke else DEFAULT_SINGLES,
    )
    combos = experiment.split_names(config.combos)
    bad = [c for c in combos if c not in (PRESET, "top2", "top3")]
    if bad:
        raise ValueError(f"unknown combos {bad}; allowed: {PRESET}, top2, top3")
    min_steps = experiment.check_int(config.min_steps, name="min_steps", minimum=0)
    use_cache = bool(config.compile_cache)
    for key in EXPERIMENT_KEYS:
        del config[key]
    if smoke:
        config = experiment.shrink(config, data="digits", model="tiny", epochs=2, batch_size=20)
        config.learning_rate = 3e-3  # a smoke setting, not a shrink (above the default)
        seeds, sizes, min_steps = seeds[:2], (10,), min(min_steps, 0)
        combos = tuple(c for c in combos if c == PRESET) or (PRESET,)
    variants = {n: {"augment": SINGLES[n][0], "mix": SINGLES[n][1]} for n in singles}
    return _Plan(config, seeds, sizes, singles, combos, min_steps, use_cache, variants)


def _check(plan: _Plan) -> None:
    # Every size trains for epochs_for(size * classes, ...) epochs, known once the data are
    # loaded; the fewest it can be stands in for them (see experiment.least_epochs).
    base = experiment.variant_config(
        plan.config,
        {"epochs": experiment.least_epochs(plan.config.epochs, plan.min_steps)},
        plan.config.seed,
    )
    validate_config(base)
    variants = dict(plan.variants)
    if PRESET in plan.combos:
        variants[PRESET] = {"augment": PRESET, "mix": ""}
    if any(c != PRESET for c in plan.combos):
        # top2/top3 are picked from the singles after they ran (and checked again then, by
        # run_variants); what can be known now is that the singles combine: all their augment
        # specs joined, with the first mix, as `_combine` joins any subset of them.
        aug, mix = _combine(plan.singles)
        variants["top-k (every selected single combined)"] = {"augment": aug, "mix": mix}
    experiment.validate_variants(base, variants, seed=plan.seeds[0])


def validate(config: ConfigDict) -> None:
    """Checks what `run` would train, before anything trains or is written.

    The base config and the config of every selected single augmentation and of the preset,
    for every size (its epochs stand in by the fewest `epochs_for` can give); after the smoke
    settings (which only lower numbers, so an invalid value stays invalid) and once more as
    given. The `top2`/`top3` combinations are made from the singles with the best validation
    gain, known only after the singles ran: here the singles' specs are checked to combine
    (all of them joined, with the first mix op, as `_combine` joins any subset), and
    `run_variants` checks the picked combinations again before they train.

    Raises:
      ValueError, TypeError: a bad value; the message names the config key (and the variant).
    """
    experiment.validate_with_smoke(config, lambda c: _check(_plan(c)))


def run(config: ConfigDict, workdir: str) -> dict:
    """Trains every (size, variant, seed); writes the table, bar plots and the verdict."""
    t0 = time.perf_counter()
    validate(config)
    plan = _plan(config)
    config, seeds, sizes = plan.config, plan.seeds, plan.sizes
    singles, combos, min_steps = plan.singles, plan.combos, plan.min_steps
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    splits = data_lib.load_splits(config.data)
    rows: list[dict] = []
    settings: dict[tuple[int, str], str] = {}
    with experiment.compile_cache(plan.use_cache):
        for size in sizes:
            data_fn = experiment.subset_data_fn(splits, size)  # subset k for seed k, all variants
            epochs = experiment.epochs_for(
                size * len(splits["train"].class_names),
                int(config.batch_size),
                int(config.epochs),
                min_steps,
            )
            base = ConfigDict(config.to_dict())
            base.epochs = epochs
            print(f"augmentation_ablation: {size} per class, {epochs} epochs, seeds {list(seeds)}")
            size_rows = experiment.run_variants(
                base, workdir / f"n{size}", plan.variants, seeds=seeds, data_fn=data_fn
            )
            for n in singles:
                settings[(size, n)] = _describe(*SINGLES[n])
            extra = {}
            for combo in combos:
                if combo == PRESET:
                    extra[combo] = {"augment": PRESET, "mix": ""}
                    settings[(size, combo)] = "preset 'digits': rotate 10, scale 0.9-1.1, shift 10%"
                else:
                    picked = _top_singles(size_rows, singles, int(combo[-1]))
                    if len(picked) < int(combo[-1]):
                        continue  # too few singles to combine
                    aug, mix = _combine(picked)
                    extra[combo] = {"augment": aug, "mix": mix}
                    settings[(size, combo)] = "+".join(picked) + " (best on val)"
            if extra:
                size_rows += experiment.run_variants(
                    base, workdir / f"n{size}", extra, seeds=seeds, data_fn=data_fn
                )
            for r in size_rows:
                r["size"] = size
            rows += size_rows

    # ---- table, figures, verdict
    table_rows, figures, per_size = [], [], {}
    for size in sizes:
        mine = [r for r in rows if r["size"] == size]
        agg = experiment.aggregate(mine, metrics=("val_accuracy", "test_accuracy", "best_epoch"))
        per_size[size] = agg
        for a in agg:
            name = a["variant"]
            dm, dh, above, n = experiment.paired_ci(mine, name, "test_accuracy", baseline=BASELINE)
            vm = experiment.paired_ci(mine, name, "val_accuracy", baseline=BASELINE)[0]
            a["delta_test"], a["delta_half"], a["delta_val"] = dm, dh, vm
            a["effect"] = "baseline" if name == BASELINE else experiment.effect(dm, dh)
            table_rows.append(
                {
                    "per class": size,
                    "variant": name,
                    "augmentation": settings[(size, name)],
                    "n": a["n"],
                    "val_accuracy": a["val_accuracy"],
                    "test_accuracy": a["test_accuracy"],
                    "Δ test vs none (pts, 95% CI)": (
                        "-" if name == BASELINE else f"{dm * 100:+.1f} ± {dh * 100:.1f}"
                    ),
                    "seeds above none": "-" if name == BASELINE else f"{above}/{n}",
                    "effect": a["effect"],
                }
            )
        fig = experiment.bar_plot(
            agg,
            "test_accuracy",
            workdir / f"test_accuracy_n{size}.png",
            baseline=BASELINE,
            title=f"Test accuracy, {size} training images per class",
        )
        figures.append(fig.name)
    figures.append(_delta_figure(per_size, workdir / "delta_vs_none.png").name)
    verdict = make_verdict(per_size)
    wall = time.perf_counter() - t0
    extra_md = "\n".join(
        [
            "## Protocol",
            "",
            f"- Data {config.data}; training subsets of {list(sizes)} images per class (subset k for "
            f"seed k, shared by every variant); full validation and test splits.",
            f"- Model {config.model} (BatchNorm {config.batch_norm}), {config.optimizer} lr "
            f"{config.learning_rate:g} ({config.schedule}), batch {config.batch_size}, at least "
            f"{config.epochs} epochs and {min_steps} steps; best epoch by validation accuracy.",
            "- top2/top3 combine the singles with the largest mean paired validation gain "
            "(chosen on validation, never on test).",
            f"- Wall time of this invocation: {wall:.0f} s (finished runs are read back).",
            "",
            "<details><summary>Per-seed results</summary>",
            "",
            report.markdown_table(
                rows, ["size", "variant", "seed", "val_accuracy", "test_accuracy", "best_epoch"]
            ).rstrip("\n"),
            "",
            "</details>",
        ]
    )
    experiment.write_report(
        workdir,
        title="Augmentation ablation on limited data",
        question=(
            "With 20 and 100 training images per class, which augmentations help a small "
            "CNN, which hurt, by how much, and do combinations add up?"
        ),
        expectation=(
            "Small geometric jitter (rotate, scale, crop) helps by a few points at 20 "
            "per class and less at 100; horizontal flips do not help digits; noise, "
            "jitter and corner patches are about neutral; Mixup/CutMix help little in "
            "few steps; a combination of the best singles is at least as good as the "
            "best single."
        ),
        table_rows=table_rows,
        verdict=verdict,
        figures=figures,
        extra_md=extra_md,
        wall_time_s=wall,
    )
    return {
        "rows": rows,
        "aggregate": per_size,
        "table": table_rows,
        "verdict": verdict,
        "wall_time_s": wall,
    }


def _delta_figure(per_size: Mapping[int, Sequence[Mapping]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    names = []
    for agg in per_size.values():
        names += [
            a["variant"] for a in agg if a["variant"] != BASELINE and a["variant"] not in names
        ]
    fig = Figure(figsize=(8, 0.4 * len(names) + 1.8))
    ax = fig.add_subplot(1, 1, 1)
    height = 0.8 / max(1, len(per_size))
    for i, (size, agg) in enumerate(per_size.items()):
        by = {a["variant"]: a for a in agg}
        y = [j + i * height for j, n in enumerate(names) if n in by]
        m = [by[n]["delta_test"] * 100 for n in names if n in by]
        h = [
            0.0 if not math.isfinite(by[n]["delta_half"]) else by[n]["delta_half"] * 100
            for n in names
            if n in by
        ]
        ax.barh(y, m, height=height, xerr=h, capsize=2, label=f"{size} per class")
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(names))], names)
    ax.invert_yaxis()
    ax.axvline(0, color="k", lw=1)
    ax.set_xlabel("test accuracy minus 'none' (points; paired mean, 95% t-interval)")
    ax.legend()
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def make_verdict(per_size: Mapping[int, Sequence[Mapping[str, Any]]]) -> str:
    """One paragraph from the measured numbers (per size: clear helps/hurts, best on val)."""
    parts = []
    best_gain = {}
    for size, agg in per_size.items():
        by = {a["variant"]: a for a in agg}
        base = by[BASELINE]
        fmt = lambda a: f"{a['variant']} ({a['delta_test'] * 100:+.1f} pts)"
        helps = [fmt(a) for a in agg if a["effect"] == "helps"]
        hurts = [fmt(a) for a in agg if a["effect"] == "hurts"]
        noise = [fmt(a) for a in agg if a["effect"] in ("within noise", "one seed")]
        others = [a for a in agg if a["variant"] != BASELINE]
        join = experiment.join_names
        text = (
            f"With {size} images per class the baseline reached {base['test_accuracy']} test "
            f"accuracy (n={base['n']} seeds). Clearly helped (95% interval of the paired "
            f"gain above 0): {join(helps)}. Clearly hurt: {join(hurts)}. Within the "
            f"seed noise: {join(noise)}."
        )
        if others:
            pick = max(others, key=lambda a: a["delta_val"])
            best_gain[size] = pick
            text += (
                f" The best variant on validation was {pick['variant']} "
                f"({pick['val_accuracy']} val), which changed test accuracy by "
                f"{pick['delta_test'] * 100:+.1f} pts."
            )
            singles = [a for a in others if a["variant"] in SINGLES]
            combos = [a for a in others if a["variant"] not in SINGLES]
            if singles and combos:
                bs = max(singles, key=lambda a: a["delta_test"])
                bc = max(combos, key=lambda a: a["delta_test"])
                word = "above" if bc["delta_test"] > bs["delta_test"] else "not above"
                text += (
                    f" The best combination ({bc['variant']}, {bc['delta_test'] * 100:+.1f}"
                    f" pts) was {word} the best single ({bs['variant']}, "
                    f"{bs['delta_test'] * 100:+.1f} pts)."
                )
        parts.append(text)
    if len(best_gain) >= 2:
        sizes = sorted(best_gain)
        lo, hi = best_gain[sizes[0]], best_gain[sizes[-1]]
        trend = "shrank" if hi["delta_test"] < lo["delta_test"] else "did not shrink"
        parts.append(
            f"The gain of the validation-best variant {trend} with more data: "
            f"{lo['delta_test'] * 100:+.1f} pts at {sizes[0]} per class vs "
            f"{hi['delta_test'] * 100:+.1f} pts at {sizes[-1]} per class."
        )
    return " ".join(parts)
