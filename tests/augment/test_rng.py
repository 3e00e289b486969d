"""Statistical checks of jaxreg's counter-based generator (_rng.py)."""

import jax
import numpy as np
import scipy.stats as ss

from jaxreg.augment import _rng

N = 1 << 16
_bits = jax.jit(lambda k: _rng.bits(k, (N,)))
_unif = jax.jit(lambda k: _rng.uniform(k, (N,)))
_norm = jax.jit(lambda k: _rng.normal(k, (N,)))


def test_uniform_moments_and_ks_over_keys():
    pvals = []
    for i in range(8):
        u = np.asarray(_unif(jax.random.key(i)), np.float64)
        assert 0.0 <= u.min() and u.max() < 1.0
        assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.003
        pvals.append(ss.kstest(u, "uniform").pvalue)
    # p-values of a good generator are themselves uniform
    assert ss.kstest(pvals, "uniform").pvalue > 1e-3
    assert min(pvals) > 1e-4


def test_bit_balance_and_byte_histogram():
    b = np.asarray(_bits(jax.random.key(7))).astype(np.uint64)
    ones = np.array([((b >> np.uint64(i)) & np.uint64(1)).mean() for i in range(32)])
    assert np.all(np.abs(ones - 0.5) < 0.01)
    counts = np.bincount((b & np.uint64(255)).astype(np.int64), minlength=256)
    assert ss.chisquare(counts).pvalue > 1e-4


def test_no_correlation_between_neighbours_or_split_keys():
    k1, k2 = jax.random.split(jax.random.key(3))
    u1 = np.asarray(_unif(k1), np.float64)
    u2 = np.asarray(_unif(k2), np.float64)
    lim = 4 / np.sqrt(N)
    assert abs(np.corrcoef(u1[:-1], u1[1:])[0, 1]) < lim
    assert abs(np.corrcoef(u1, u2)[0, 1]) < lim
    # consecutive integer seeds (raw keys differing in one bit) are unrelated too
    u3 = np.asarray(_unif(jax.random.PRNGKey(0)), np.float64)
    u4 = np.asarray(_unif(jax.random.PRNGKey(1)), np.float64)
    assert abs(np.corrcoef(u3, u4)[0, 1]) < lim
    assert np.mean(u3 == u4) < 1e-3
    # a 2-D uniformity check of pairs: chi-square on an 8x8 grid
    grid = np.histogram2d(u1[0::2], u1[1::2], bins=8)[0].ravel()
    assert ss.chisquare(grid).pvalue > 1e-4


def test_normal_moments():
    z = np.asarray(_norm(jax.random.key(11)), np.float64)
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02
    assert abs(ss.skew(z)) < 0.05 and abs(ss.kurtosis(z)) < 0.1
    assert ss.kstest(z, "norm").pvalue > 1e-4


def test_normal_pairs_are_isotropic_and_independent():
    # Box-Muller pairs: the first half holds r cos, the second r sin of the same draws. Their
    # angle must be uniform on the circle (the quadrant comes from two sign bits), the radius
    # Rayleigh, and the two coordinates uncorrelated, also in magnitude and sign.
    z = np.asarray(_norm(jax.random.key(12)), np.float64)
    c, s = z[: N // 2], z[N // 2 :]
    angle = np.arctan2(s, c)
    assert ss.kstest(angle, "uniform", args=(-np.pi, 2 * np.pi)).pvalue > 1e-4
    assert ss.kstest(np.hypot(c, s), "rayleigh").pvalue > 1e-4
    quadrants = np.histogram(angle, bins=8, range=(-np.pi, np.pi))[0]
    assert ss.chisquare(quadrants).pvalue > 1e-4
    for a, b in ((c, s), (np.abs(c), np.abs(s)), (np.sign(c), np.sign(s))):
        assert abs(np.corrcoef(a, b)[0, 1]) < 0.02


def test_beta_and_gamma_distributions():
    grid = np.linspace(0.02, 0.98, 25)
    for a in (0.2, 1.0, 4.0):
        x = np.asarray(
            jax.jit(_rng.beta, static_argnums=(1, 2, 3))(jax.random.key(1), a, a, (20000,)),
            np.float64,
        )
        assert np.all((x >= 0) & (x <= 1))
        # float32 rounds Beta(0.2, 0.2) mass near 0 and 1: compare the CDF on an inner grid
        ecdf = np.searchsorted(np.sort(x), grid, side="right") / x.size
        assert np.max(np.abs(ecdf - ss.beta(a, a).cdf(grid))) < 0.015
    g = np.exp(
        np.asarray(
            jax.jit(lambda k: _rng.log_gamma_variate(k, 0.3, (20000,)))(jax.random.key(2)),
            np.float64,
        )
    )
    assert ss.kstest(g, ss.gamma(0.3).cdf).pvalue > 1e-4
    d = np.asarray(_rng.dirichlet(jax.random.key(3), 1.0, 4))
    assert abs(d.sum() - 1) < 1e-5 and np.all(d >= 0)
