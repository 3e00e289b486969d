"""Counter-based random numbers keyed by a JAX PRNG key (fast bulk draws for per-example ops).

`jax.random` (threefry2x32) costs about 20 rounds of mixing per pair of words; per-pixel noise
fields and per-example parameters need many words but no cryptographic strength. This module
derives two 32-bit seeds from the key's words and hashes a counter with them:

    x = mix(mix(counter * 0x9E3779B9 + s0) ^ s1)

where `mix` is the 32-bit integer finalizer with constants (0x7FEB352D, 0x846CA68B) from
Chris Wellons' hash-prospector ("lowbias32"). It is a bijection on 32-bit words with low
avalanche bias; two rounds with key-derived offsets give streams that pass the moment, uniformity,
bit-balance and correlation checks in tests/augment/test_rng.py. The key is consumed the same way
`jax.random` consumes one: call sites split keys and never reuse one for two draws.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxreg.augment import _core

__all__ = []  # private module

NAME = "jaxreg counter hash (2 rounds of lowbias32 over a counter, seeded from the key's words)"

_M1 = np.uint32(0x7FEB352D)
_M2 = np.uint32(0x846CA68B)
_GOLDEN = np.uint32(0x9E3779B9)
_C1 = np.uint32(0x85EBCA6B)
_C2 = np.uint32(0xC2B2AE35)


def _mix(x: jax.Array) -> jax.Array:
    x = x ^ (x >> np.uint32(16))
    x = x * _M1
    x = x ^ (x >> np.uint32(15))
    x = x * _M2
    return x ^ (x >> np.uint32(16))


def _seeds(key: jax.Array, stream: int) -> tuple[jax.Array, jax.Array]:
    words = _core.key_words(key)
    s0 = _mix(words[0] ^ _C1)
    s1 = _mix(words[1 % words.shape[0]] ^ s0 ^ _C2)
    for i in range(2, words.shape[0]):  # keys with more than two words (e.g. rbg)
        s1 = _mix(s1 ^ words[i])
    if stream:  # independent sub-streams of one key, without the cost of a threefry split
        t = np.uint32((stream * 0x632BE5AB) & 0xFFFFFFFF)
        s0 = _mix(s0 ^ t)
        s1 = _mix(s1 + t)
    return s0, s1


def bits(key: jax.Array, shape: tuple[int, ...], stream: int = 0) -> jax.Array:
    """Uniform random uint32 words of the given shape, generated as one flat 1-D stream.

    `stream` (a static int) selects one of many independent streams of the same key.
    """
    n = int(np.prod(shape, dtype=np.int64))
    s0, s1 = _seeds(key, stream)
    counter = lax.iota(jnp.uint32, n)
    x = _mix(_mix(counter * _GOLDEN + s0) ^ s1)
    return x.reshape(shape)


def uniform(
    key: jax.Array, shape: tuple[int, ...] = (), minval=0.0, maxval=1.0, *, stream: int = 0
) -> jax.Array:
    """float32 uniform on [minval, maxval) with 24 random bits per value."""
    u = (bits(key, shape, stream) >> np.uint32(8)).astype(jnp.float32) * np.float32(2.0**-24)
    if (
        isinstance(minval, (int, float))
        and isinstance(maxval, (int, float))
        and (minval, maxval) == (0.0, 1.0)
    ):
        return u
    return minval + u * (maxval - minval)


def _quarter_sincos(t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Cos and sin of (pi / 2) t for t in [0, 1], as Taylor polynomials (no range reduction).

    XLA:CPU evaluates jnp.sin / jnp.cos as scalar calls; these polynomials vectorise. Absolute
    error below 1e-7 (terms up to x^12 and x^13 on [0, pi/2]).
    """
    x = t * np.float32(np.pi / 2)
    x2 = x * x
    c = 1.0 + x2 * (
        -1 / 2
        + x2
        * (1 / 24 + x2 * (-1 / 720 + x2 * (1 / 40320 + x2 * (-1 / 3628800 + x2 * (1 / 479001600)))))
    )
    s = x * (
        1.0
        + x2
        * (
            -1 / 6
            + x2
            * (
                1 / 120
                + x2
                * (-1 / 5040 + x2 * (1 / 362880 + x2 * (-1 / 39916800 + x2 * (1 / 6227020800))))
            )
        )
    )
    return c, s


def _with_sign(x: jax.Array, bit: jax.Array) -> jax.Array:
    """X with its sign flipped where `bit` (uint32, 0 or 1) is 1 (one xor of the sign bit)."""
    return lax.bitcast_convert_type(
        lax.bitcast_convert_type(x, jnp.uint32) ^ (bit << np.uint32(31)), jnp.float32
    )


def normal(key: jax.Array, shape: tuple[int, ...] = (), *, stream: int = 0) -> jax.Array:
    """float32 standard normal by the Box-Muller transform, two values per pair of words.

    r = sqrt(-2 ln u1) with u1 on (0, 1] (24 bits: |z| <= 5.8). The angle is uniform on the
    circle as a uniform angle in the first quadrant (24 bits) with independent random signs of
    its cosine and sine (two more bits of the second word): no range reduction or quadrant
    selects, which cost more than the rest of the transform on XLA:CPU. The pair gives r cos
    and r sin; the first half of the flat output holds the cosines, the second the sines.
    """
    n = int(np.prod(shape, dtype=np.int64))
    m = (n + 1) // 2
    b = bits(key, (2, m), stream)
    u1 = ((b[0] >> np.uint32(8)).astype(jnp.float32) + 1.0) * np.float32(2.0**-24)
    u2 = (b[1] >> np.uint32(8)).astype(jnp.float32) * np.float32(2.0**-24)
    r = jnp.sqrt(-2.0 * jnp.log(u1))
    cos, sin = _quarter_sincos(u2)
    z = jnp.concatenate(
        [
            _with_sign(r * cos, b[1] & np.uint32(1)),
            _with_sign(r * sin, (b[1] >> np.uint32(1)) & np.uint32(1)),
        ]
    )
    return z[:n].reshape(shape)


def randint(
    key: jax.Array, shape: tuple[int, ...], minval, maxval, *, stream: int = 0
) -> jax.Array:
    """int32 uniform on [minval, maxval) (maxval > minval; either may be traced)."""
    u = uniform(key, shape, stream=stream)
    lo = jnp.asarray(minval, jnp.int32)
    span = (jnp.asarray(maxval, jnp.int32) - lo).astype(jnp.float32)
    return lo + jnp.minimum(jnp.floor(u * span), span - 1.0).astype(jnp.int32)


_GAMMA_TRIES = 8


def log_gamma_variate(
    key: jax.Array, a: float, shape: tuple[int, ...] = (), *, stream: int = 0
) -> jax.Array:
    """Log of Gamma(a, 1) samples, a > 0 static (Marsaglia & Tsang 2000, unrolled rejection).

    Eight proposals are drawn at once and the first accepted one is used (acceptance is above
    0.95 per proposal for the shifted shape a + 1 >= 1, so all eight fail with probability
    below 1e-10; the mode is returned then). Shapes a < 1 use Gamma(a) = Gamma(a + 1) U^(1/a),
    kept in log space so that tiny alphas do not underflow.
    """
    boost = a < 1.0
    d = (a + 1.0 if boost else a) - 1.0 / 3.0
    c = 1.0 / np.sqrt(9.0 * d)
    base = 1000 + 3 * stream  # three sub-streams per call, away from the ops' small numbers
    x = normal(key, (_GAMMA_TRIES,) + tuple(shape), stream=base)
    u = uniform(key, (_GAMMA_TRIES,) + tuple(shape), stream=base + 1)
    v = (1.0 + np.float32(c) * x) ** 3
    vv = jnp.where(v > 0, v, 1.0)
    ok = (v > 0) & (jnp.log(u + np.float32(2.0**-25)) < 0.5 * x * x + d - d * vv + d * jnp.log(vv))
    first = jnp.argmax(ok, axis=0)
    v_pick = jnp.take_along_axis(vv, first[None], axis=0)[0]
    v_pick = jnp.where(jnp.any(ok, axis=0), v_pick, 1.0)
    out = np.float32(np.log(d)) + jnp.log(v_pick)
    if boost:
        ub = (
            (bits(key, tuple(shape), base + 2) >> np.uint32(8)).astype(jnp.float32) + 0.5
        ) * np.float32(2.0**-24)
        out = out + jnp.log(ub) / np.float32(a)
    return out


def beta(key: jax.Array, a: float, b: float, shape: tuple[int, ...] = ()) -> jax.Array:
    """float32 Beta(a, b) samples (a, b > 0 static) as X / (X + Y) of two Gamma variates."""
    return jax.nn.sigmoid(
        log_gamma_variate(key, a, shape, stream=0) - log_gamma_variate(key, b, shape, stream=1)
    )


def dirichlet(key: jax.Array, alpha: float, n: int) -> jax.Array:
    """float32 Dirichlet(alpha, ..., alpha) sample of length n (alpha > 0 static)."""
    return jax.nn.softmax(log_gamma_variate(key, alpha, (n,)))
