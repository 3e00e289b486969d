"""Why the linear probe on the denoising encoder's code is weak: a diagnostic.

Run from the repository root after `python -m jaxreg run autoencoder --workdir RUNS`:

    python benchmarks/results/autoencoder/diagnose_probe.py RUNS

For each seed: the scale of the pretrained code, and test accuracy of an L2 logistic
regression (sklearn, fitted to convergence) on 10 labelled mnist5k images per class, on
(a) the pretrained code, (b) ReLU(code) as `EncoderClassifier` feeds its head, (c) the code of
a randomly initialised encoder, (d) pixels; features standardised on the training images.
"""

import sys
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from jaxreg import data as data_lib
from jaxreg.models.autoencoder import Encoder
from jaxreg.train.restoring import restore

runs = Path(sys.argv[1])
splits = data_lib.load_splits("mnist5k")
test = splits["test"]


def probe(f_train, y_train, f_test, y_test):
    """Test accuracy of an L2 logistic regression on standardised features."""
    s = StandardScaler().fit(f_train)
    clf = LogisticRegression(max_iter=5000, C=1.0).fit(s.transform(f_train), y_train)
    return clf.score(s.transform(f_test), y_test)


rows = []
for seed in (0, 1, 2):
    train = data_lib.stratified_subset(splits["train"], 10, seed=seed)
    ae = restore(runs / f"seed{seed}" / "pretrain" / "ae").model
    rnd = Encoder(test.images.shape[1:], channels=(16, 32), code_size=32, rngs=nnx.Rngs(seed))

    def code(enc, x):
        """The code (N, 32) of images x."""
        return np.asarray(jax.jit(lambda v: enc(v)[0])(x))

    c_tr, c_te = code(ae.encoder, train.images), code(ae.encoder, test.images)
    r_tr, r_te = code(rnd, train.images), code(rnd, test.images)
    px_tr, px_te = train.images.reshape(len(train), -1), test.images.reshape(len(test), -1)
    relu_dead = float(np.mean((c_te <= 0).all(0)))
    print(
        f"seed {seed}: pretrained code |mean| {np.abs(c_te).mean():.2f}, std {c_te.std():.2f}, "
        f"max |x| {np.abs(c_te).max():.1f}, negative {np.mean(c_te < 0):.0%}, "
        f"dims never > 0 {relu_dead:.0%}; random code |mean| {np.abs(r_te).mean():.2f}"
    )
    rows.append(
        (
            probe(c_tr, train.labels, c_te, test.labels),
            probe(np.maximum(c_tr, 0), train.labels, np.maximum(c_te, 0), test.labels),
            probe(r_tr, train.labels, r_te, test.labels),
            probe(px_tr, train.labels, px_te, test.labels),
        )
    )
    a = rows[-1]
    print(
        f"  test accuracy: code {a[0]:.3f}  relu(code) {a[1]:.3f}  random code {a[2]:.3f}  "
        f"pixels {a[3]:.3f}"
    )
m = np.mean(rows, 0)
print(
    f"mean over seeds: code {m[0]:.3f}  relu(code) {m[1]:.3f}  random code {m[2]:.3f}  "
    f"pixels {m[3]:.3f}"
)
