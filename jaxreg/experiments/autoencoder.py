"""Autoencoders: decoder types, code size, denoising, the encoder as a few-label backbone, two-decoder translation.

Run: `jaxreg run autoencoder` (`--config.smoke=true` shrinks it to a minute or two;
`--config.seeds=(0,1,2,3,4)` for more classification seeds; `--config.decoders=deconv,unpool`).
About 40 minutes on 2 CPU cores shared with other jobs (load 12-15).

Five stages on mnist5k (`config.data`), every autoencoder trained by the ordinary loop
(`task="reconstruction"`, `model="autoencoder"`) for `ae_steps` Adam steps on the whole
training split, images only (the labels are never read):

1. `reconstruct` (first seed): one autoencoder per decoder type ("deconv", "unpool",
   "resize") at `code_size`, and for `sweep_decoders` one per `code_sizes` value. Test MSE,
   PSNR, SSIM, and the PSNR with each image's code replaced by another image's ("shuffled
   codes"): what the decoder reconstructs from the max-pooling switches alone.
2. `denoise` (first seed): denoising autoencoders (inputs corrupted by a jaxreg spec string,
   targets clean): Gaussian noise at each `noise_levels` sigma with every decoder, and each
   `other_corruptions` spec (erasing, corner patches, blur) with the first decoder; PSNR and
   SSIM of the corrupted input and of the output on the test split.
3. `translate` (first seed): one encoder and a decoder per domain (mnist5k digits and the
   sklearn `digits` set brought to the same frame), trained with
   `jaxreg.train.tasks.DomainReconstruction` (the domain is the label); an image is translated
   by decoding its code with the other domain's decoder.
4. `pretrain` (per seed): a denoising autoencoder (`pretrain_corrupt`) with the classifier's
   encoder shape.
5. `classify` (per seed and variant, the compared stage): `encoder_classifier` on
   `train_per_class` labelled images per class, from scratch, fine-tuned from the pretrained
   encoder (`config.init_from`, loaded by `jaxreg.transfer.load`), or a linear probe on it.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ml_collections import ConfigDict

from jaxreg import experiment as ex
from jaxreg import report
from jaxreg.experiment import Findings, Stage, Study, Unit, format_pm, join_names
from jaxreg.train.config import default_config

BASELINE = "scratch"
PRETRAINED = ("pretrained", "probe")  # the variants that start from the pretrained encoder
UPSAMPLE = ("deconv", "unpool", "resize")
DOMAINS = ("mnist5k", "digits")  # the translation's domains: domain id = label
MNIST_BOX = 20 / 28  # MNIST digits sit in a 20x20 box centred in a 28x28 frame (LeCun et al.)
_SPLITS: dict[str, dict] = {}


# ----------------------------------------------------------------------------- settings


def _config() -> ConfigDict:
    c = default_config()
    c.data, c.train_per_class = "mnist5k", 10  # the few-label classifier's training set
    c.model, c.ae_channels, c.code_size, c.upsample = "encoder_classifier", (16, 32), 32, "deconv"
    c.reconstruction_loss = "bce"  # the autoencoders' loss (digits are nearly binary)
    c.epochs, c.batch_size, c.learning_rate, c.schedule = 1, 10, 1e-3, "cosine"
    c.monitor, c.monitor_mode = "val_accuracy", "max"
    c.checkpoint.enabled, c.progress = False, False
    return c


PARAMS = {
    "decoders": "deconv,unpool,resize",  # decoder types of the reconstruction and denoising grids
    "code_sizes": (4, 128),  # the sweep's other code sizes (code_size is also in it)
    "sweep_decoders": "deconv,unpool",
    "ae_steps": 250,  # Adam steps of every autoencoder
    "ae_batch_size": 64,
    "ae_learning_rate": 2e-3,
    "noise_levels": (0.1, 0.3, 0.5),  # Gaussian noise sigma: noise(sigma=...)
    "other_corruptions": (
        "erasing(p=1.0,fill='noise')",
        "corner_patches(p=1.0)",
        "blur(sigma=(1.5,1.5))",
    ),
    "pretrain_corrupt": "noise(sigma=0.3)",  # the pretraining autoencoder's corruption
    "translate_size": 28,
    "translate_per_class": 100,  # training images per class and domain (digits has 104+)
    "grid_images": 10,  # test images per grid row (one per class first)
}


def _names(spec: Any, key: str) -> tuple[str, ...]:
    if not isinstance(spec, str):
        raise TypeError(f"config key {key!r} must be a comma-separated string, got {spec!r}")
    names = ex.split_names(spec)
    bad = [n for n in names if n not in UPSAMPLE]
    if not names or bad:
        raise ValueError(
            f"config key {key!r} must name decoders from {list(UPSAMPLE)}, got {spec!r}"
        )
    return names


def _specs(value: Any, key: str) -> tuple[str, ...]:
    items = value if isinstance(value, (list, tuple)) else (value,)
    for i, spec in enumerate(items):
        ex.check_spec(f"{key}[{i}]", spec)
    return tuple(items)


def _noise_spec(sigma: float) -> str:
    return f"noise(sigma={float(sigma):g})"


def _recon_grid(c: ConfigDict, p: ConfigDict) -> list[tuple[str, int]]:
    """(decoder, code size) of every reconstruction run: each decoder at `code_size`, the sweep."""
    runs = [(d, int(c.code_size)) for d in _names(p.decoders, "decoders")]
    sizes = sorted({int(c.code_size), *ex.int_tuple(p.code_sizes, name="code_sizes")})
    for d in _names(p.sweep_decoders, "sweep_decoders"):
        runs += [(d, s) for s in sizes if (d, s) not in runs]
    return runs


def _denoise_grid(p: ConfigDict) -> list[tuple[str, str, str]]:
    """(label, spec, decoder): every noise level with every decoder, other specs the first."""
    decoders = _names(p.decoders, "decoders")
    levels = p.noise_levels if isinstance(p.noise_levels, (list, tuple)) else (p.noise_levels,)
    runs = [(f"noise σ={float(s):g}", _noise_spec(s), d) for s in levels for d in decoders]
    return runs + [(s, s, decoders[0]) for s in _specs(p.other_corruptions, "other_corruptions")]


def _ae_config(
    c: ConfigDict, p: ConfigDict, *, upsample: str, code_size: int, corrupt: str = "", n: int = 1
) -> ConfigDict:
    """The training config of an autoencoder: the study's settings, `ae_steps` steps on `n` images."""
    a = ConfigDict(c.to_dict())
    a.task, a.model, a.upsample, a.code_size, a.corrupt = (
        "reconstruction",
        "autoencoder",
        upsample,
        int(code_size),
        corrupt,
    )
    a.train_per_class, a.augment, a.mix, a.dropout = None, "", "", 0.0
    a.batch_size, a.learning_rate = int(p.ae_batch_size), float(p.ae_learning_rate)
    a.monitor, a.monitor_mode = "val_loss", "min"
    a.finetune, a.init_from, a.head_warmup_epochs = "full", "", 0
    a.checkpoint.enabled, a.checkpoint.keep = True, 1  # kept: restored for grids and transfer
    a.epochs = ex.epochs_for(max(int(n), 1), a.batch_size, 1, int(p.ae_steps))
    return a


def _check(p: ConfigDict, c: ConfigDict) -> None:
    from jaxreg.train.config import validate_config

    for key in ("ae_steps", "ae_batch_size", "grid_images", "translate_size"):
        ex.check_int(p[key], name=key, minimum=4 if key == "translate_size" else 1)
    ex.check_int(p.translate_per_class, name="translate_per_class", minimum=1)
    if p.translate_per_class > 104:
        raise ValueError(
            f"config key 'translate_per_class' must be <= 104 (the smallest digits class), "
            f"got {p.translate_per_class}"
        )
    ex.check_real(p.ae_learning_rate, name="ae_learning_rate", minimum=0.0, strict=True)
    sizes = ex.int_tuple(p.code_sizes, name="code_sizes")
    if any(s < 1 for s in sizes):
        raise ValueError(f"config key 'code_sizes' must hold ints >= 1, got {sizes}")
    levels = p.noise_levels if isinstance(p.noise_levels, (list, tuple)) else (p.noise_levels,)
    if not levels:
        raise ValueError("config key 'noise_levels' must name at least one sigma")
    for i, s in enumerate(levels):
        ex.check_real(s, name=f"noise_levels[{i}]", minimum=0.0, maximum=1.0, strict=True)
    ex.check_spec("pretrain_corrupt", p.pretrain_corrupt)
    for d, s in _recon_grid(c, p):
        validate_config(_ae_config(c, p, upsample=d, code_size=s))
    for _, spec, d in _denoise_grid(p):
        validate_config(_ae_config(c, p, upsample=d, code_size=c.code_size, corrupt=spec))
    validate_config(
        _ae_config(c, p, upsample=c.upsample, code_size=c.code_size, corrupt=p.pretrain_corrupt)
    )


# ----------------------------------------------------------------------------- data


def _splits(name: str) -> dict:
    if name not in _SPLITS:
        from jaxreg import data as data_lib

        _SPLITS[name] = data_lib.load_splits(name)
    return _SPLITS[name]


def _ae_data(config: ConfigDict) -> dict:
    """The whole training split of `config.data` (its labels are never read) and val/test."""
    return dict(_splits(config.data))


def _grid_indices(labels: np.ndarray, n: int) -> np.ndarray:
    """`n` test positions, the first image of each class first (0, 1, ..., 9, then more)."""
    firsts = [int(np.flatnonzero(labels == k)[0]) for k in np.unique(labels)]
    rest = [i for i in range(len(labels)) if i not in set(firsts)]
    return np.array((firsts + rest)[:n])


def framed(images: np.ndarray, size: int, box: float = 1.0) -> np.ndarray:
    """Images resized to fill `box` of a `size` x `size` frame, centred on a black background.

    Args:
      images: (N, H, W, C) float32 in [0, 1].
      size: the frame's side in pixels.
      box: the fraction of the frame the image fills (MNIST's digits fill 20/28 of theirs).

    Returns:
      (N, size, size, C) float32 in [0, 1] (bilinear resizing, antialiased when shrinking).
    """
    import jax

    inner = max(1, round(size * box))
    n, _, _, ch = images.shape
    x = np.asarray(
        jax.image.resize(images, (n, inner, inner, ch), "linear", antialias=True), np.float32
    )
    lo = (size - inner) // 2
    out = np.zeros((n, size, size, ch), np.float32)
    out[:, lo : lo + inner, lo : lo + inner] = np.clip(x, 0.0, 1.0)
    return out


def domain_data(size: int, per_class: int, seed: int) -> tuple[dict, dict]:
    """The two-domain sets: mnist5k (domain 0) and sklearn digits (domain 1) in one frame.

    Both are brought to `size` x `size`: mnist5k is resized as it is; the 8x8 `digits`, which
    fill their frame, are resized to MNIST's 20/28 box and centred, so the two styles differ in
    stroke and resolution, not in placement. Training keeps `per_class` images per class of
    each domain (subset `seed`); val and test are whole.

    Returns:
      `(data, digits)`: `{"train", "val", "test"}` Datasets whose label is the domain id, and
      `{split: (N,) digit classes}` for the same images in the same order.
    """
    from jaxreg import data as data_lib

    data, digits = {}, {}
    for split in ("train", "val", "test"):
        parts = []
        for d, name in enumerate(DOMAINS):
            ds = _splits(name)[split]
            if split == "train":
                ds = data_lib.stratified_subset(ds, int(per_class), seed=int(seed))
            box = 1.0 if name == "mnist5k" else MNIST_BOX
            parts.append((framed(ds.images, size, box), np.full(len(ds), d, np.int32), ds.labels))
        images = np.concatenate([p[0] for p in parts])
        data[split] = data_lib.Dataset(
            images,
            np.concatenate([p[1] for p in parts]),
            len(DOMAINS),
            DOMAINS,
            f"{'+'.join(DOMAINS)}:{split}",
        )
        digits[split] = np.concatenate([p[2] for p in parts]).astype(np.int32)
    return data, digits


# ----------------------------------------------------------------------------- model helpers


def _batched(fn: Callable, x: np.ndarray, size: int = 500) -> np.ndarray:
    import jax.numpy as jnp

    return np.concatenate(
        [np.asarray(fn(jnp.asarray(x[i : i + size]))) for i in range(0, len(x), size)]
    )


def _psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image PSNR (dB, capped at 100 as `jaxreg.train.tasks.psnr`)."""
    mse = np.mean(np.square(a - b), axis=(1, 2, 3))
    return -10.0 * np.log10(np.maximum(mse, 1e-10))


def _trained(unit: Unit, name: str, r: dict, compute: Callable, model: Any = None) -> tuple:
    """`compute(model) -> (dict, arrays)` for a trained run, stored beside it (resumable).

    The model is the run's (`r["model"]`) or, when the run was read back, restored from its
    best checkpoint (`model`: the factory of a model of one's own).
    """
    from jaxreg.train.restoring import restore

    folder = unit.dir / name
    side, arrays = folder / "extra.json", folder / "extra.npz"
    if side.exists() and arrays.exists():
        with np.load(arrays) as z:
            return json.loads(side.read_text()), {k: z[k] for k in z.files}
    net = r.get("model")
    if net is None:
        net = restore(folder, model=model).model
    values, arr = compute(net)
    np.savez(arrays, **arr)
    side.write_text(json.dumps(values, indent=1) + "\n")
    return values, arr


_KEEP = ("test_loss", "test_mse", "test_psnr", "test_ssim", "test_input_psnr", "test_input_ssim")


def _summary(r: dict) -> dict:
    out = {k[5:]: r[k] for k in _KEEP if k in r}
    out |= {"best_epoch": r.get("best_epoch"), "wall_time_s": r.get("wall_time_s")}
    return out


# ----------------------------------------------------------------------------- stages


def _reconstruct(unit: Unit) -> dict:
    """One autoencoder per (decoder, code size); test metrics and shuffled-code PSNR."""
    import jax.numpy as jnp

    from jaxreg.train.tasks import as_image

    c, p, data = unit.config, unit.params, _ae_data(unit.config)
    test = data["test"]
    grid = _grid_indices(test.labels, int(p.grid_images))
    perm = np.roll(np.arange(len(test)), 1)  # image i decoded with image i-1's code
    runs, arrays = [], {"originals": test.images[grid]}
    for dec, size in _recon_grid(c, p):
        a = _ae_config(c, p, upsample=dec, code_size=size, n=len(data["train"]))
        name = f"{dec}_code{size}"
        r = unit.train(a, name=name, data=data)

        def compute(net, a=a):
            code = _batched(lambda x: net.encode(x)[0], test.images)

            def shuffled(lo):
                x = jnp.asarray(test.images[lo : lo + 500])
                _, switches = net.encode(x)
                other = jnp.asarray(code[perm[lo : lo + 500]])
                return as_image(net.decode(other, switches), a.reconstruction_loss)

            mixed = np.concatenate([np.asarray(shuffled(i)) for i in range(0, len(test), 500)])
            rec = np.asarray(as_image(net(jnp.asarray(test.images[grid])), a.reconstruction_loss))
            values = {"shuffled_psnr": float(np.mean(_psnr(test.images, mixed)))}
            return values, {"recon": rec, "shuffled": mixed[grid]}

        values, arr = _trained(unit, name, r, compute)
        runs.append({"decoder": dec, "code_size": size, **_summary(r), **values})
        arrays |= {f"{name}/recon": arr["recon"], f"{name}/shuffled": arr["shuffled"]}
    np.savez(unit.dir / "grid.npz", **arrays)
    return {"runs": runs}


def _denoise(unit: Unit) -> dict:
    """Denoising autoencoders: input vs output PSNR/SSIM on the test split per corruption."""
    import jax

    from jaxreg import augment
    from jaxreg.train.tasks import as_image

    c, p, data = unit.config, unit.params, _ae_data(unit.config)
    test = data["test"]
    grid = _grid_indices(test.labels, int(p.grid_images))
    x = test.images[grid]
    runs, arrays = [], {"originals": x}
    for label, spec, dec in _denoise_grid(p):
        a = _ae_config(
            c, p, upsample=dec, code_size=c.code_size, corrupt=spec, n=len(data["train"])
        )
        name = f"{_slug(spec)}_{dec}"
        r = unit.train(a, name=name, data=data)

        def compute(net, spec=spec, a=a):
            fn = jax.jit(augment.batch(augment.from_spec(spec)))
            noisy = np.clip(np.asarray(fn(jax.random.key(0), x)), 0.0, 1.0)
            out = np.asarray(as_image(net(jax.numpy.asarray(noisy)), a.reconstruction_loss))
            return {}, {"inputs": noisy, "outputs": out}

        _, arr = _trained(unit, name, r, compute)
        runs.append({"corruption": label, "spec": spec, "decoder": dec, **_summary(r)})
        arrays |= {f"{name}/inputs": arr["inputs"], f"{name}/outputs": arr["outputs"]}
    np.savez(unit.dir / "grid.npz", **arrays)
    return {"runs": runs}


def _slug(spec: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._=" else "_" for ch in spec).strip("_")


def _nearest(query: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Index of each query image's nearest reference image (Euclidean, pixels)."""
    q, r = query.reshape(len(query), -1), ref.reshape(len(ref), -1)
    d = (q**2).sum(1)[:, None] - 2.0 * q @ r.T + (r**2).sum(1)[None]
    return d.argmin(1)


def _translate(unit: Unit) -> dict:
    """Two decoders on one encoder; translation measured by 1-NN in the target domain."""
    from jaxreg.models import Autoencoder
    from jaxreg.train.tasks import DomainReconstruction, as_image

    c, p = unit.config, unit.params
    size = int(p.translate_size)
    data, digits = domain_data(size, int(p.translate_per_class), unit.seed)
    a = _ae_config(c, p, upsample=c.upsample, code_size=c.code_size, n=len(data["train"]))

    def factory(rngs):
        return Autoencoder(
            (size, size, 1),
            channels=tuple(a.ae_channels),
            code_size=int(a.code_size),
            upsample=a.upsample,
            decoders=len(DOMAINS),
            rngs=rngs,
        )

    task = DomainReconstruction(len(DOMAINS), loss_kind=a.reconstruction_loss)
    r = unit.train(a, name="two_decoders", data=data, model=factory, task=task)
    train, test = data["train"], data["test"]
    grid_n = int(p.grid_images)

    def compute(net):
        def to(domain):
            return lambda x: as_image(net.translate(x, domain), a.reconstruction_loss)

        values, arr = {}, {}
        for src, tgt in ((0, 1), (1, 0)):
            mine = test.labels == src
            x, y = test.images[mine], digits["test"][mine]
            ref = train.labels == tgt
            ref_x, ref_y = train.images[ref], digits["train"][ref]
            moved, own = _batched(to(tgt), x), _batched(to(src), x)
            own_ref = train.labels == src
            tgt_test = test.labels == tgt
            key = f"{DOMAINS[src]}_to_{DOMAINS[tgt]}"
            values[key] = {
                "own_psnr": float(np.mean(_psnr(x, own))),
                "class_kept": float(np.mean(ref_y[_nearest(moved, ref_x)] == y)),
                "class_untranslated": float(np.mean(ref_y[_nearest(x, ref_x)] == y)),
                "class_own_reconstruction": float(
                    np.mean(digits["train"][own_ref][_nearest(own, train.images[own_ref])] == y)
                ),
                "class_within_target": float(
                    np.mean(
                        ref_y[_nearest(test.images[tgt_test], ref_x)] == digits["test"][tgt_test]
                    )
                ),
                "looks_like_target": float(
                    np.mean(train.labels[_nearest(moved, train.images)] == tgt)
                ),
                "untranslated_looks_like_target": float(
                    np.mean(train.labels[_nearest(x, train.images)] == tgt)
                ),
            }
            first = [int(np.flatnonzero(y == k)[0]) for k in np.unique(y)]
            pick = np.array((first + [i for i in range(len(y)) if i not in set(first)])[:grid_n])
            arr |= {f"{key}/inputs": x[pick], f"{key}/own": own[pick], f"{key}/moved": moved[pick]}
        return values, arr

    values, arr = _trained(unit, "two_decoders", r, compute, model=factory)
    np.savez(unit.dir / "grid.npz", **arr)
    return {
        "domains": list(DOMAINS),
        "train_size": len(train),
        "psnr_domain": [r.get(f"test_psnr_domain{d}") for d in range(len(DOMAINS))],
        "test_ssim": r.get("test_ssim"),
        "wall_time_s": r.get("wall_time_s"),
        "translation": values,
    }


def _pretrain(unit: Unit) -> dict:
    """The denoising autoencoder whose encoder the classifier reuses (one per seed)."""
    c, p, data = unit.config, unit.params, _ae_data(unit.config)
    a = _ae_config(
        c, p, upsample=c.upsample, code_size=c.code_size, corrupt=p.pretrain_corrupt,
        n=len(data["train"]),
    )  # fmt: skip
    return _summary(unit.train(a, name="ae", data=data))


def _classify(unit: Unit) -> dict:
    """The few-label classifier, from scratch or from the seed's pretrained encoder."""
    c = ConfigDict(unit.config.to_dict())
    if unit.variant in PRETRAINED:
        c.init_from = str(unit.artifact("pretrain") / "ae")
    c.epochs = ex.epochs_for(
        len(unit.data["train"]), int(c.batch_size), int(c.epochs), int(unit.params.min_steps)
    )
    r = unit.train(c, name=".")
    keep = ("val_accuracy", "test_accuracy", "test_loss", "test_ece", "best_epoch")
    return {k: r.get(k) for k in keep} | {"train_size": len(unit.data["train"]), "epochs": c.epochs}


# ----------------------------------------------------------------------------- analysis


def _image_grid(rows: Sequence[tuple[str, np.ndarray]], path: Path, title: str) -> str:
    """Rows of gray images with a label on the left of each row, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    n = max(len(x) for _, x in rows)
    h, w = rows[0][1].shape[1:3]
    pad = 2
    canvas = np.ones((len(rows) * (h + pad), n * (w + pad)), np.float32)
    for i, (_, imgs) in enumerate(rows):
        for j, im in enumerate(imgs):
            y, x = i * (h + pad), j * (w + pad)
            canvas[y : y + h, x : x + w] = im[..., 0]
    fig = Figure(figsize=(0.75 * n + 2.6, 0.75 * len(rows) + 0.6))  # 0.75 in per image
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(canvas, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_yticks([i * (h + pad) + h / 2 for i in range(len(rows))], [r[0] for r in rows])
    ax.set_xticks([])
    ax.tick_params(length=0, labelsize=8)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path.name


def _load(row: dict) -> dict:
    with np.load(Path(row["dir"]) / "grid.npz") as z:
        return {k: z[k] for k in z.files}


def _analyze(a) -> Findings:
    p, c, w = a.params, a.config, a.workdir
    sections, figures, verdict = [], [], []
    rec_row = a.stage_rows("reconstruct")[0]
    den_row = a.stage_rows("denoise")[0]
    tr_row = a.stage_rows("translate")[0]

    # ---- reconstruction per decoder, and the code-size sweep
    rec = rec_row["runs"]
    at = [r for r in rec if r["code_size"] == int(c.code_size)]
    sections.append(
        f"## Reconstruction per decoder type (code size {c.code_size}, seed {rec_row['seed']})\n\n"
        + report.markdown_table(
            [
                {
                    "decoder": r["decoder"],
                    "test MSE": f"{r['mse']:.4f}",
                    "test PSNR (dB)": f"{r['psnr']:.2f}",
                    "test SSIM": f"{r['ssim']:.3f}",
                    "PSNR, shuffled codes (dB)": f"{r['shuffled_psnr']:.2f}",
                    "drop (dB)": f"{r['psnr'] - r['shuffled_psnr']:.2f}",
                    "best epoch": r["best_epoch"],
                }
                for r in at
            ]
        )
        + "\n\n'Shuffled codes': every test image decoded from another image's code with its own "
        "max-pooling switches (only 'unpool' reads them). A small drop means the decoder "
        "rebuilds the image from the switches, not from the code."
    )
    data = _load(rec_row)
    rows = [("test images", data["originals"])]
    for r in rec:
        rows.append(
            (
                f"{r['decoder']}, code {r['code_size']}",
                data[f"{r['decoder']}_code{r['code_size']}/recon"],
            )
        )
    for r in at:
        rows.append(
            (
                f"{r['decoder']}, shuffled codes",
                data[f"{r['decoder']}_code{r['code_size']}/shuffled"],
            )
        )
    figures.append(_image_grid(rows, w / "reconstructions.png", "Test digits and reconstructions"))
    sweep = {}
    for r in rec:
        if r["decoder"] in _names(p.sweep_decoders, "sweep_decoders"):
            sweep.setdefault(r["decoder"], []).append(r)
    if sweep:
        series = {}
        for d, rs in sweep.items():
            rs = sorted(rs, key=lambda r: r["code_size"])
            series[d] = ([r["code_size"] for r in rs], [r["mse"] for r in rs], [0.0] * len(rs))
        xs = [x for s in series.values() for x in s[0]]
        ex.line_plot(
            series,
            w / "code_size.png",
            xlabel="code size" + (" (log scale)" if max(xs) >= 10 * min(xs) else ""),
            ylabel=f"test MSE (seed {rec_row['seed']})",
            title="Reconstruction error vs code size",
            logx=max(xs) >= 10 * min(xs),
        )
        figures.append("code_size.png")
        sizes = sorted({r["code_size"] for rs in sweep.values() for r in rs})
        table = []
        for s in sizes:
            row = {"code size": s}
            for d, rs in sweep.items():
                got = [r for r in rs if r["code_size"] == s]
                row[f"{d} MSE"] = f"{got[0]['mse']:.4f}" if got else "-"
                row[f"{d} PSNR"] = f"{got[0]['psnr']:.2f}" if got else "-"
            table.append(row)
        sections.append(
            "## Code-size sweep (test reconstruction error)\n\n" + report.markdown_table(table)
        )
        verdict += _sweep_sentences(sweep)
    verdict += _decoder_sentences(at)

    # ---- denoising
    den = den_row["runs"]
    sections.append(
        f"## Denoising (test split, seed {den_row['seed']}, code size {c.code_size})\n\n"
        + report.markdown_table(
            [
                {
                    "corruption": r["corruption"],
                    "decoder": r["decoder"],
                    "input PSNR": f"{r['input_psnr']:.2f}",
                    "output PSNR": f"{r['psnr']:.2f}",
                    "gain (dB)": f"{r['psnr'] - r['input_psnr']:+.2f}",
                    "input SSIM": f"{r['input_ssim']:.3f}",
                    "output SSIM": f"{r['ssim']:.3f}",
                }
                for r in den
            ]
        )
        + "\n\nEach row is one denoising autoencoder trained on inputs corrupted by the spec and "
        "evaluated on test images corrupted the same way (fixed key); 'input' is the corrupted "
        "image itself, 'output' the reconstruction, both against the clean image."
    )
    data = _load(den_row)
    rows, seen = [("clean", data["originals"])], set()
    for r in den:
        name = f"{_slug(r['spec'])}_{r['decoder']}"
        if r["spec"] not in seen:
            rows.append((f"{r['corruption']}: input", data[f"{name}/inputs"]))
            seen.add(r["spec"])
        rows.append((f"{r['corruption']}: {r['decoder']}", data[f"{name}/outputs"]))
    figures.append(
        _image_grid(rows, w / "denoising.png", "Denoising: corrupted inputs and outputs")
    )
    verdict += _denoise_sentences(den, {r["decoder"]: r for r in at})

    # ---- encoder reuse
    pre = a.stage_rows("pretrain")
    sections.append(
        "## Pretraining runs (one denoising autoencoder per seed)\n\n"
        + report.markdown_table(
            [
                {
                    "seed": r["seed"],
                    "corruption": p.pretrain_corrupt or "none",
                    "test PSNR": f"{r['psnr']:.2f}",
                    "input PSNR": f"{r['input_psnr']:.2f}" if r.get("input_psnr") else "-",
                    "wall (s)": f"{r['wall_time_s']:.0f}",
                }
                for r in pre
            ]
        )
    )
    verdict += _classify_sentences(a)

    # ---- translation
    t = tr_row["translation"]
    table = []
    for key, v in t.items():
        table.append(
            {
                "direction": key.replace("_to_", " → "),
                "own-decoder PSNR": f"{v['own_psnr']:.2f}",
                "class kept, translated": f"{v['class_kept']:.3f}",
                "class kept, untranslated": f"{v['class_untranslated']:.3f}",
                "class kept, own reconstruction": f"{v['class_own_reconstruction']:.3f}",
                "within-target 1-NN": f"{v['class_within_target']:.3f}",
                "nearest is target domain, translated": f"{v['looks_like_target']:.3f}",
                "… untranslated": f"{v['untranslated_looks_like_target']:.3f}",
            }
        )
    sections.append(
        f"## Translation with two decoders (seed {tr_row['seed']}, {tr_row['train_size']} "
        "training images)\n\n"
        + report.markdown_table(table)
        + "\n\nAll measures are 1-nearest-neighbour in pixels against the training images: "
        "'class kept' = the nearest image of the target domain has the source image's digit; "
        "'untranslated' applies the same rule to the source image as it is (the cross-domain "
        "reference); 'own reconstruction' is the source domain's decoder against its own "
        "domain; 'within-target' is the target domain's own test images (the ceiling). "
        "'Nearest is target domain' = the nearest of all training images (both domains) "
        "belongs to the target domain."
    )
    data = _load(tr_row)
    rows = []
    for key in t:
        src, tgt = key.split("_to_")
        rows += [
            (f"{src} test", data[f"{key}/inputs"]),
            (f"{src} decoder", data[f"{key}/own"]),
            (f"→ {tgt} decoder", data[f"{key}/moved"]),
        ]
    figures.append(
        _image_grid(rows, w / "translation.png", "One encoder, two decoders: swapping translates")
    )
    verdict += _translate_sentences(t)

    wall = (
        sum((r.get("wall_time_s") or 0) for rows_ in (rec, den, pre) for r in rows_)
        + (tr_row.get("wall_time_s") or 0)
        + sum((r.get("wall_time_s") or 0) for r in a.stage_rows("classify"))
    )
    sections.append(_protocol(a, wall))
    return Findings(verdict=verdict, figures=figures, sections=sections)


def _decoder_sentences(at: list[dict]) -> list[str]:
    if not at:
        return []
    best = max(at, key=lambda r: r["psnr"])
    parts = ", ".join(
        f"{r['decoder']} {r['psnr']:.1f} dB" for r in sorted(at, key=lambda r: -r["psnr"])
    )
    out = [f"Reconstruction (code size {at[0]['code_size']}, one seed): test PSNR {parts}."]
    by = {r["decoder"]: r for r in at}
    others = [r for r in at if r["decoder"] != "unpool"]
    if "unpool" in by and others:
        u = by["unpool"]
        drop_u = u["psnr"] - u["shuffled_psnr"]
        drop_o = min(r["psnr"] - r["shuffled_psnr"] for r in others)
        if drop_o < 1.0:
            out.append(
                f"With the codes shuffled across images no decoder lost 1 dB (unpool "
                f"{drop_u:.1f}, others from {drop_o:.1f}): the codes carry little of the image "
                "yet (undertrained), so the shuffled-code check says nothing here."
            )
        elif drop_u < 0.5 * drop_o:
            out.append(
                f"With the codes shuffled across images, unpool lost only {drop_u:.1f} dB "
                f"(the others at least {drop_o:.1f} dB): its max-pooling switches carry most of "
                "the image around the code, so 'unpool' is not a bottleneck autoencoder and "
                "its lead says little about its code."
            )
        else:
            out.append(
                f"With the codes shuffled, unpool lost {drop_u:.1f} dB and the others at "
                f"least {drop_o:.1f} dB: the code still carries the image for unpool."
            )
    if best["decoder"] == "unpool":
        out.append(
            "As expected from the switches (SegNet, Zeiler & Fergus), unpool reconstructed best."
        )
    elif "unpool" in by:
        out.append(f"Unlike the expectation, {best['decoder']} reconstructed better than unpool.")
    return out


def _sweep_sentences(sweep: dict) -> list[str]:
    out = []
    for d, rs in sweep.items():
        rs = sorted(rs, key=lambda r: r["code_size"])
        if len(rs) < 2:
            continue
        mses = [r["mse"] for r in rs]
        mono = all(b <= a_ for a_, b in itertools.pairwise(mses))
        out.append(
            f"Code size {rs[0]['code_size']} → {rs[-1]['code_size']}: {d} test MSE "
            f"{mses[0]:.4f} → {mses[-1]:.4f} (×{mses[0] / mses[-1]:.1f}, "
            f"{'falling at every step' if mono else 'not monotone'})."
        )
    return out


def _denoise_sentences(den: list[dict], recon: dict) -> list[str]:
    noise = [r for r in den if r["corruption"].startswith("noise")]
    out = []
    won = [r for r in noise if r["psnr"] > r["input_psnr"]]
    lost = [r for r in noise if r["psnr"] <= r["input_psnr"]]
    if noise:
        gains = ", ".join(
            f"{r['corruption'].split()[-1]} {r['decoder']} {r['psnr'] - r['input_psnr']:+.1f}"
            for r in noise
        )
        out.append(
            f"Denoising Gaussian noise: the output PSNR beat the noisy input's in {len(won)} of "
            f"{len(noise)} runs (gain in dB: {gains})."
        )
        for r in lost:
            floor = recon.get(r["decoder"])
            why = (
                f"; the same decoder's clean reconstruction reaches only {floor['psnr']:.1f} dB, "
                "so a bottleneck cannot return a cleaner image than that"
                if floor
                else ""
            )
            out.append(
                f"At {r['corruption']} the {r['decoder']} denoiser ({r['psnr']:.1f} dB) fell "
                f"below its input ({r['input_psnr']:.1f} dB){why}."
            )
        ssim_won = sum(r["ssim"] > r["input_ssim"] for r in noise)
        out.append(f"SSIM rose over the input's in {ssim_won} of {len(noise)} noise runs.")
        grew, not_grew = [], []
        for d in dict.fromkeys(r["decoder"] for r in noise):
            rs = sorted((r for r in noise if r["decoder"] == d), key=lambda r: r["input_psnr"])
            if len(rs) > 1:  # most noise first (lowest input PSNR)
                gains = [r["psnr"] - r["input_psnr"] for r in rs]
                (grew if all(b <= a for a, b in itertools.pairwise(gains)) else not_grew).append(d)
        if grew:
            out.append(f"The gain grew with the noise level for {join_names(grew)}, as expected.")
        if not_grew:
            out.append(f"The gain did not grow steadily with the noise for {join_names(not_grew)}.")
    other = [r for r in den if not r["corruption"].startswith("noise")]
    if other:
        out.append(
            "Other corruptions (first decoder): "
            + "; ".join(
                f"{r['spec']} {r['input_psnr']:.1f} → {r['psnr']:.1f} dB, SSIM "
                f"{r['input_ssim']:.2f} → {r['ssim']:.2f}"
                for r in other
            )
            + "."
        )
    return out


def _classify_sentences(a) -> list[str]:
    out = []
    by = {r["variant"]: r for r in a.table}
    if "probe" in by and BASELINE in by:
        m, h, _, n = a.comparisons.get((None, "probe"), (math.nan, math.nan, 0, 0))
        out.append(
            f"A linear probe on the frozen pretrained code reached {by['probe']['test_accuracy']} "
            f"({format_pm(m, h)} points vs scratch, n={n}): how much class information the "
            "denoising code holds without any fine-tuning."
        )
    return out


def _translate_sentences(t: dict) -> list[str]:
    out = []
    for key, v in t.items():
        src, tgt = key.split("_to_")
        out.append(
            f"Translating {src} test digits with the {tgt} decoder kept the digit for "
            f"{v['class_kept']:.0%} of them by 1-NN in the {tgt} domain (untranslated "
            f"{v['class_untranslated']:.0%}, the {tgt} test digits themselves "
            f"{v['class_within_target']:.0%}); "
            f"the nearest training image was a {tgt} image for {v['looks_like_target']:.0%} "
            f"(untranslated {v['untranslated_looks_like_target']:.0%})."
        )
    helped = [k for k, v in t.items() if v["class_kept"] > v["class_untranslated"]]
    styled = [k for k, v in t.items() if v["looks_like_target"] > 0.5]
    out.append(
        f"Swapping decoders moved the style for {join_names([k.replace('_to_', '→') for k in styled], empty='no direction')} "
        f"and beat the untranslated cross-domain match for "
        f"{join_names([k.replace('_to_', '→') for k in helped], empty='no direction')}."
    )
    if len(helped) < len(t):
        out.append(
            "A shared encoder does not by itself give a shared code: nothing in the loss asks "
            "the two domains' codes to overlap (the face-swap recipe adds random warping of the "
            "inputs for that), so the encoder may keep the domains apart, and a decoder given "
            "the other domain's code is then asked about codes it never saw in training (on "
            "the recorded run a linear classifier told the domain from the code, see "
            "`benchmarks/results/autoencoder/README.md`)."
        )
    return out


def _protocol(a, wall: float) -> str:
    p, c = a.params, a.config
    seeds = sorted({r["seed"] for r in a.stage_rows("classify")})
    cls = a.stage_rows("classify")
    epochs = cls[0].get("epochs") if cls else "?"
    return (
        "## Protocol\n\n"
        f"- Autoencoders: `model=autoencoder`, encoder channels {tuple(c.ae_channels)} (conv 3x3, "
        f"ReLU, 2x2 max-pool per stage), dense code, mirrored decoder; `task=reconstruction`, "
        f"loss {c.reconstruction_loss}, Adam lr {p.ae_learning_rate:g}, batch {p.ae_batch_size}, "
        f"{p.ae_steps} steps on the whole {c.data} training split (labels unused); the epoch "
        "with the lowest validation loss is restored and evaluated on the test split.\n"
        f"- Decoders {p.decoders}; code-size sweep {sorted({int(c.code_size), *ex.int_tuple(p.code_sizes)})} "
        f"for {p.sweep_decoders}; denoising at noise sigma {tuple(p.noise_levels)} with every decoder"
        + (
            f" and {', '.join(f'`{s}`' for s in p.other_corruptions)} with the first"
            if p.other_corruptions
            else ""
        )
        + ". These three parts use one seed (the first) and carry no interval: a difference "
        "of a few tenths of a dB may be seed noise.\n"
        f"- Two-decoder translation: {DOMAINS[0]} (domain 0) and sklearn digits (domain 1, 8x8 "
        f"resized to MNIST's 20/28 box) at {p.translate_size}x{p.translate_size}, "
        f"{p.translate_per_class} training images per class and domain; "
        "`jaxreg.train.tasks.DomainReconstruction`, the domain id as the label.\n"
        f"- Encoder reuse: per seed a denoising autoencoder (`{p.pretrain_corrupt}`) on the "
        f"training images; then `encoder_classifier` on {c.train_per_class} labelled images "
        f"per class (subset k for seed k), batch {c.batch_size}, Adam lr {c.learning_rate:g} "
        f"({c.schedule}), {epochs} epochs (>= {p.min_steps} steps), the epoch chosen on the "
        f"{c.data} validation split; 'pretrained' fine-tunes everything from the loaded encoder "
        "(`config.init_from`, `jaxreg.transfer.load`), 'probe' trains only the head on the "
        "frozen encoder. The head starts at zero in every variant: the pretrained code is "
        "unnormalised (|code| of 5-40 where a fresh encoder gives ~0.3), and a randomly "
        "initialised head on it starts at a loss of 7-11 that 300 Adam steps at this rate do "
        f"not undo. Seeds {seeds}; intervals are paired by seed (95 % t).\n"
        f"- Sum of the runs' training-loop times (`wall_time_s`: compilation included; final "
        f"evaluation, diagnostics and reports excluded): {wall:.0f} s."
    )


STUDY = Study(
    name="autoencoder",
    title="Autoencoders: decoders, code size, denoising, encoder reuse, two-decoder translation",
    question="How do deconvolution, max-unpooling and resizing decoders reconstruct digits as "
    "the code shrinks; how much does a denoising autoencoder clean its input; does its encoder "
    "help a classifier that has 10 labels per class; and does a shared encoder with one decoder "
    "per digit style translate between the styles?",
    expectation="(1) Unpooling reconstructs best and depends least on the code size, because "
    "the encoder's max-pooling switches reach the decoder beside the code; deconvolution and "
    "resizing are limited by the code. (2) Reconstruction error falls as the code grows. "
    "(3) A denoising autoencoder's output is cleaner than its noisy input once the noise "
    "exceeds its own reconstruction error: gains grow with the noise level and may be "
    "negative at the lowest level. (4) Fine-tuning from the denoising encoder raises few-label "
    "test accuracy over the same classifier from scratch. (5) Swapping decoders renders a "
    "digit in the other style while keeping its class.",
    source="(1) Zeiler & Fergus 2014 (ECCV), Sec. 2.1: switches recorded at pooling make "
    "unpooling an approximate inverse that keeps the input's structure; Badrinarayanan et al. "
    "2017 (SegNet, TPAMI), Table 1: decoders upsampling with the encoder's max-pooling indices "
    "come close to FCN decoders that store whole encoder feature maps, at a fraction of the "
    "memory. (3, 4) Vincent et al. 2008 (ICML), Table 1, and 2010 (JMLR 11), Table 3: stacked "
    "denoising autoencoders as pretraining beat stacked ordinary autoencoders on the MNIST "
    "variants (MNIST-basic, 10,000 training digits: 2.80 % / 2.84 % vs 3.46 % test error, "
    "numbers as recalled from the tables, not re-read in this session); Erhan et al. 2010 "
    "(JMLR 11, 'Why does unsupervised pre-training help deep learning?'): pretrained networks "
    "generalise better than randomly initialised ones on MNIST, the effect acts as a "
    "regularizer, grows with depth and layer width, and can turn into a loss for small "
    "layers. (5) The shared-encoder/two-decoder face-swap autoencoder (deepfakes, 2017: no "
    "paper; the reasoning is that a shared code must describe both domains). (2) Reasoning: a "
    "larger code can only carry more.",
    regime="A 2-stage conv autoencoder (16, 32 channels) trained end to end for a few hundred "
    "Adam steps on 3,000 mnist5k digits, not greedy layer-wise stacks of dense layers on "
    "10,000-60,000; the classifier sees 100 labelled digits and the same small encoder (Erhan "
    "et al. find pretraining can hurt small layers); one seed for the reconstruction, "
    "denoising and translation parts.",
    config=_config,
    variants={"scratch": {}, "pretrained": {}, "probe": {"finetune": "linear_probe"}},
    baseline=BASELINE,
    expected={"pretrained": 1},
    params=PARAMS,
    seeds=(0, 1, 2),
    min_steps=300,
    smoke={
        "ae_steps": 8,
        "min_steps": 10,
        "train_per_class": 5,
        "translate_per_class": 5,
        "grid_images": 4,
    },
    smoke_set={
        "data": "digits",
        "ae_channels": (4, 8),
        "code_size": 8,
        "code_sizes": (),  # smoke: 3 autoencoder programs (each costs its compilation)
        "decoders": "deconv",
        "sweep_decoders": "deconv",
        "noise_levels": (0.3,),  # the pretraining's spec: one more program shared
        "other_corruptions": (),
        "translate_size": 8,
        "ae_batch_size": 32,
        "learning_rate": 3e-3,
    },
    stages=(
        Stage("reconstruct", fn=_reconstruct, per="once"),
        Stage("denoise", fn=_denoise, per="once"),
        Stage("translate", fn=_translate, per="once"),
        Stage("pretrain", fn=_pretrain, per="seed"),
        Stage("classify", fn=_classify),
    ),
    compare="classify",
    metrics=("val_accuracy", "test_accuracy", "test_loss", "best_epoch"),
    check=_check,
    analyze=_analyze,
)

get_config, validate, run = STUDY.get_config, STUDY.validate, STUDY.run
