"""Do the digits 0-4 networks of the transfer study carry features that serve digits 5-9?

Run: `python benchmarks/transfer_digits_probe.py runs/transfer/a_digits [--sizes 5 20]`
(after `jaxreg run transfer --config.parts=a`, whose per-seed source networks it reads).

A control for part (a) of `jaxreg run transfer`: for each seed's source network (the CNN
trained on digits 0-4) it checks that the loaded checkpoint reproduces its source test
accuracy, then fits the study's linear probe (`jaxreg.transfer.fit_linear_probe`, L2 chosen
on validation) on the target's features at three depths -- after conv block 0, after conv
block 1 (flattened), and the hidden layer the head reads -- of the pretrained network and of
the same architecture at its random initialisation (same seed), and on raw pixels. Training
subsets, validation and test sets are the study's (seed k: stratified subset k). Prints the
test accuracy of each probe, mean ± std over seeds, and the number of principal components
holding 90 % of the hidden features' variance on source and target test images.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from jaxreg import data as data_lib
from jaxreg import models, transfer
from jaxreg.experiments import transfer as study
from jaxreg.models.layers import max_pool_2x2

DEPTHS = ("conv0", "conv1", "hidden")


def depths(model, images: np.ndarray) -> dict[str, np.ndarray]:
    """Inference-mode features of a BatchNorm `cnn` at each depth, and its logits."""
    model.eval()
    out: dict[str, list] = {}
    for lo in range(0, len(images), 500):
        h, got = jnp.asarray(images[lo : lo + 500]), {}
        for i, (conv, norm) in enumerate(zip(model.convs, model.norms)):
            h = jax.nn.relu(max_pool_2x2(norm(conv(h))))
            got[f"conv{i}"] = h.reshape(h.shape[0], -1)
        got["hidden"] = jax.nn.relu(model.hidden_norm(model.hidden(got[f"conv{i}"])))
        got["logits"] = model.head(got["hidden"])
        for k, v in got.items():
            out.setdefault(k, []).append(np.asarray(v))
    return {k: np.concatenate(v) for k, v in out.items()}


def rank90(features: np.ndarray) -> int:
    """Principal components holding 90 % of the variance."""
    s = np.linalg.svd(features - features.mean(0), compute_uv=False) ** 2
    return int(np.searchsorted(np.cumsum(s) / s.sum(), 0.9) + 1)


def probe(train, val, test, xtr, xv, xt) -> float:
    """Test accuracy of the study's linear probe on features xtr / xv / xt of the three sets."""
    fit = transfer.fit_linear_probe(xtr, train.labels, xv, val.labels, train.num_classes)
    return fit.evaluate(xt, test.labels)["accuracy"]


def main() -> None:
    """Prints the probe table for the seeds' source networks in the given workdir."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workdir", type=Path, help="the study's a_digits folder")
    ap.add_argument("--sizes", type=int, nargs="+", default=[5, 20])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    t0 = time.time()
    c = study.DIGITS.get_config()
    p = ConfigDict({k: c[k] for k in study.DIGITS.params})
    tgt, src = study.pools(c, p), study.pools(c, p, "source_digits")
    acc: dict[str, list[float]] = {}
    ranks: dict[str, list[int]] = {}
    for seed in args.seeds:
        for kind in ("pretrained", "random init"):
            net = models.create(
                "cnn", num_classes=5, input_shape=(28, 28, 1), seed=seed, batch_norm=True
            )
            if kind == "pretrained":
                transfer.load(net, args.workdir / f"seed{seed}" / "pretrain" / "run")
                fs = depths(net, src["test"].images)
                hit = fs["logits"].argmax(1) == src["test"].labels
                acc.setdefault("source test accuracy (0-4)", []).append(float(hit.mean()))
                ranks.setdefault("source test", []).append(rank90(fs["hidden"]))
            fv, ft = depths(net, tgt["val"].images), depths(net, tgt["test"].images)
            if kind == "pretrained":
                ranks.setdefault("target test", []).append(rank90(ft["hidden"]))
            for n in args.sizes:
                tr = data_lib.stratified_subset(tgt["train"], n, seed=seed)
                ftr = depths(net, tr.images)
                for d in DEPTHS:
                    a = probe(tr, tgt["val"], tgt["test"], ftr[d], fv[d], ft[d])
                    acc.setdefault(f"{n}/class: probe on {kind} {d}", []).append(a)
        for n in args.sizes:
            tr = data_lib.stratified_subset(tgt["train"], n, seed=seed)
            flat = [d.images.reshape(len(d), -1) for d in (tr, tgt["val"], tgt["test"])]
            acc.setdefault(f"{n}/class: probe on pixels", []).append(
                probe(tr, tgt["val"], tgt["test"], *flat)
            )
    print(f"seeds {args.seeds}; target test set: {len(tgt['test'])} images of digits 5-9\n")
    print("| measure | test accuracy (mean ± std) |\n| --- | --- |")
    rows = ["source test accuracy (0-4)"] + [
        f"{n}/class: probe on {what}"
        for n in args.sizes
        for what in [f"{k} {d}" for k in ("pretrained", "random init") for d in DEPTHS] + ["pixels"]
    ]
    for k in rows:
        print(f"| {k} | {np.mean(acc[k]):.3f} ± {np.std(acc[k]):.3f} |")
    print("\nhidden features (128 units): components for 90 % of the variance")
    for k, v in ranks.items():
        print(f"- {k}: {v}")
    print(f"\nwall {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
