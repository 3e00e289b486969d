"""Why swapping decoders does not translate: a diagnostic of the two-decoder autoencoder.

Run from the repository root after `python -m jaxreg run autoencoder --workdir RUNS`:

    python benchmarks/results/autoencoder/diagnose_translation.py RUNS

Prints (1) that the two decoders differ and `translate(x, d)` is decoder d (no routing bug),
(2) how well a logistic regression tells the domain from the shared code (test codes, fitted
on the training codes): near 100 % means the encoder keeps the domains apart, so a decoder
given the other domain's code is asked about codes it never saw in training, and (3) the
distance between the two domains' mean codes against the spread within a domain.
"""

import sys
from pathlib import Path

import jax
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from jaxreg.experiments.autoencoder import DOMAINS, domain_data
from jaxreg.models import Autoencoder
from jaxreg.train.restoring import restore

runs = Path(sys.argv[1])
data, digits = domain_data(28, 100, 0)  # the study's defaults (translate_size, per_class, seed 0)
net = restore(
    runs / "translate" / "two_decoders",
    model=lambda rngs: Autoencoder(
        (28, 28, 1), channels=(16, 32), code_size=32, upsample="deconv", decoders=2, rngs=rngs
    ),
).model
x = data["test"].images[:200]
d0, d1 = np.asarray(net.translate(x, 0)), np.asarray(net.translate(x, 1))
code, sw = net.encode(x)
same0 = np.abs(d0 - np.asarray(net.decoders[0](code, sw))).max()
k0, k1 = net.decoders[0].expand.kernel[...], net.decoders[1].expand.kernel[...]
print(
    f"decoders differ: max |translate(x,0) - translate(x,1)| {np.abs(d0 - d1).max():.2f}, "
    f"max |translate(x,0) - decoders[0](code)| {same0:.1e}, "
    f"expand kernels differ by {float(np.abs(k0 - k1).mean()):.3f} (mean |.|)"
)

enc = jax.jit(lambda v: net.encode(v)[0])
c_tr, c_te = np.asarray(enc(data["train"].images)), np.asarray(enc(data["test"].images))
y_tr, y_te = data["train"].labels, data["test"].labels
s = StandardScaler().fit(c_tr)
dom = LogisticRegression(max_iter=5000).fit(s.transform(c_tr), y_tr)
print(f"domain from the code (test, logistic regression): {dom.score(s.transform(c_te), y_te):.3f}")
cls = LogisticRegression(max_iter=5000).fit(s.transform(c_tr), digits["train"])
print(
    f"digit class from the code (test, both domains): {cls.score(s.transform(c_te), digits['test']):.3f}"
)
m0, m1 = c_te[y_te == 0].mean(0), c_te[y_te == 1].mean(0)
spread = np.mean(
    [np.sqrt(((c_te[y_te == d] - c_te[y_te == d].mean(0)) ** 2).sum(1)).mean() for d in (0, 1)]
)
print(
    f"|mean code {DOMAINS[0]} - mean code {DOMAINS[1]}| {np.linalg.norm(m0 - m1):.1f}; "
    f"mean distance to own domain mean {spread:.1f}"
)
# how far is a source code from the target domain's training codes, vs from its own domain's
for src, tgt in ((0, 1), (1, 0)):
    q = c_te[y_te == src]

    def nn(ref, q=q):
        """Mean distance of each code in q to its nearest code in ref."""
        d = (q**2).sum(1)[:, None] - 2 * q @ ref.T + (ref**2).sum(1)[None]
        return np.sqrt(np.maximum(d.min(1), 0)).mean()

    print(
        f"{DOMAINS[src]} test codes: mean distance to nearest {DOMAINS[src]} training code "
        f"{nn(c_tr[y_tr == src]):.1f}, to nearest {DOMAINS[tgt]} training code {nn(c_tr[y_tr == tgt]):.1f}"
    )
