"""Host-side sampling: stratified splits and subsets, class imbalance, class-balanced weights."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxreg.data.dataset import Dataset, check_int

__all__ = [
    "class_balanced_weights",
    "imbalance",
    "long_tail_ratios",
    "stratified_split_indices",
    "stratified_subset",
]


def _check_dataset(ds: object) -> Dataset:
    if not isinstance(ds, Dataset):
        raise TypeError(f"`ds` must be a jaxreg Dataset, got {type(ds).__name__}")
    return ds


def _check_labels(labels: object, num_classes: int | None = None) -> np.ndarray:
    y = np.asarray(labels)
    if y.dtype.kind not in "iu":
        raise TypeError(f"`labels` must be an integer array, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"`labels` must be 1-D, got shape {y.shape}")
    if y.size and y.min() < 0:
        raise ValueError(f"`labels` must be >= 0, got minimum {y.min()}")
    if num_classes is not None and y.size and y.max() >= num_classes:
        raise ValueError(f"`labels` must lie in [0, {num_classes}), got maximum {y.max()}")
    return y.astype(np.int64)


def _split_counts(n: int, fractions: np.ndarray) -> np.ndarray:
    """Splits n into len(fractions) integer parts by the largest-remainder rule (ties: first)."""
    exact = fractions * n
    counts = np.floor(exact).astype(np.int64)
    remainder = exact - counts
    order = np.argsort(-remainder, kind="stable")
    counts[order[: n - int(counts.sum())]] += 1
    return counts


def stratified_split_indices(
    labels: object, fractions: Sequence[float] = (0.6, 0.2, 0.2), *, seed: int
) -> tuple[np.ndarray, ...]:
    """Splits example positions into disjoint parts with the same class proportions.

    For each class c (ascending), its positions (ascending) are permuted by a
    `np.random.default_rng(seed)` generator shared across classes, and cut into consecutive
    parts of sizes `fractions * count_c`, rounded by the largest-remainder rule (ties go to the
    earlier part), so every example lands in exactly one part. Each part is finally permuted by
    the same generator, so classes are interleaved. The result depends only on `labels`,
    `fractions` and `seed`.

    Args:
      labels: integer array-like of shape (N,), values >= 0.
      fractions: non-negative floats summing to 1 (within 1e-6), one per part; default 60/20/20.
      seed: int >= 0.

    Returns:
      A tuple of int64 arrays (one per fraction), disjoint, whose union is `range(N)`.

    Raises:
      TypeError, ValueError: on bad labels, fractions or seed.
    """
    y = _check_labels(labels)
    seed = check_int(seed, "seed", minimum=0)
    frac = np.asarray(fractions, dtype=np.float64)
    if frac.ndim != 1 or frac.size == 0:
        raise ValueError(f"`fractions` must be a non-empty 1-D sequence, got {fractions!r}")
    if (frac < 0).any() or abs(frac.sum() - 1.0) > 1e-6:
        raise ValueError(f"`fractions` must be >= 0 and sum to 1, got {fractions!r}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in frac]
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        bounds = np.cumsum(_split_counts(members.size, frac))[:-1]
        for part, chunk in zip(parts, np.split(members, bounds)):
            part.append(chunk)
    return tuple(rng.permutation(np.concatenate(p) if p else np.zeros(0, np.int64)) for p in parts)


def stratified_subset(ds: Dataset, n_per_class: int, *, seed: int) -> Dataset:
    """Returns a subset of `ds` with exactly `n_per_class` examples of every class.

    The examples of each class are drawn without replacement by `np.random.default_rng(seed)`;
    the result keeps the original order of `ds`.

    Args:
      ds: the data set; every one of its `num_classes` classes must have >= `n_per_class`
        examples.
      n_per_class: int >= 1.
      seed: int >= 0.

    Returns:
      A `Dataset` with `num_classes * n_per_class` examples, same classes and name.

    Raises:
      ValueError: if some class has fewer than `n_per_class` examples (the message names them).
      TypeError: on wrong argument types.
    """
    ds = _check_dataset(ds)
    n = check_int(n_per_class, "n_per_class", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    counts = ds.class_counts()
    short = {ds.class_names[c]: int(counts[c]) for c in np.flatnonzero(counts < n)}
    if short:
        raise ValueError(
            f"stratified_subset: n_per_class={n} but these classes of {ds.name!r} have fewer "
            f"examples (name: count): {short}"
        )
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(np.flatnonzero(ds.labels == c), n, replace=False) for c in range(ds.num_classes)
    ]
    return ds.subset(np.sort(np.concatenate(chosen)))


def long_tail_ratios(num_classes: int, imbalance_factor: float) -> np.ndarray:
    """Exponential long-tailed class profile: class c keeps `imbalance_factor ** (-c / (K - 1))`.

    Class 0 keeps everything (ratio 1) and the last class keeps `1 / imbalance_factor`, the
    profile used for long-tailed CIFAR (Cui et al., 2019, "Class-Balanced Loss Based on
    Effective Number of Samples"; Cao et al., 2019, LDAM).

    Args:
      num_classes: K >= 1 (K == 1 gives `[1.0]`).
      imbalance_factor: float >= 1; ratio of the largest to the smallest class.

    Returns:
      float64 array of shape (K,), non-increasing, values in [1 / imbalance_factor, 1].
    """
    k = check_int(num_classes, "num_classes", minimum=1)
    if isinstance(imbalance_factor, bool) or not isinstance(
        imbalance_factor, (int, float, np.number)
    ):
        raise TypeError(
            f"`imbalance_factor` must be a number, got {type(imbalance_factor).__name__}"
        )
    factor = float(imbalance_factor)
    if not (np.isfinite(factor) and factor >= 1.0):
        raise ValueError(f"`imbalance_factor` must be a finite number >= 1, got {imbalance_factor}")
    if k == 1:
        return np.ones(1)
    return factor ** (-np.arange(k, dtype=np.float64) / (k - 1))


def imbalance(ds: Dataset, ratios: object, *, seed: int) -> Dataset:
    """Makes `ds` class-imbalanced: keeps a fraction `ratios[c]` of the examples of class c.

    Class c keeps `round(ratios[c] * count_c)` examples (at least one if `ratios[c] > 0` and the
    class is present), drawn without replacement by `np.random.default_rng(seed)`; the result
    keeps the original order of `ds`. Use `long_tail_ratios` for the usual exponential profile.

    Args:
      ds: the data set.
      ratios: float array-like of shape (ds.num_classes,), values in [0, 1].
      seed: int >= 0.

    Returns:
      A `Dataset` with the kept examples, same classes and name.

    Raises:
      ValueError: if `ratios` has the wrong shape or values outside [0, 1].
      TypeError: on wrong argument types.
    """
    ds = _check_dataset(ds)
    seed = check_int(seed, "seed", minimum=0)
    r = np.asarray(ratios)
    if r.dtype.kind not in "iuf":
        raise TypeError(f"`ratios` must be numeric, got dtype {r.dtype}")
    if r.shape != (ds.num_classes,):
        raise ValueError(f"`ratios` must have shape ({ds.num_classes},), got {r.shape}")
    r = r.astype(np.float64)
    if not np.all((r >= 0.0) & (r <= 1.0)):
        raise ValueError(f"`ratios` must lie in [0, 1], got {r.tolist()}")
    rng = np.random.default_rng(seed)
    kept = []
    for c in range(ds.num_classes):
        members = np.flatnonzero(ds.labels == c)
        n = int(np.round(r[c] * members.size))
        if r[c] > 0 and members.size:
            n = max(n, 1)
        kept.append(rng.choice(members, n, replace=False))
    return ds.subset(np.sort(np.concatenate(kept)).astype(np.int64))


def class_balanced_weights(labels: object, num_classes: int) -> np.ndarray:
    """Per-example sampling weights that draw every present class equally often.

    Example i of class c gets `1 / (P * count_c)`, where P is the number of classes present in
    `labels`; so each present class carries total mass 1 / P and absent classes get none. Use
    with `np.random.Generator.choice(N, p=weights)` or `jax.random.choice(key, N, p=weights)`.

    Args:
      labels: integer array-like of shape (N,), N >= 1, values in [0, num_classes).
      num_classes: int >= 1.

    Returns:
      float64 array of shape (N,), positive, summing to 1.

    Raises:
      ValueError: on empty labels or labels outside [0, num_classes).
      TypeError: on non-integer labels or num_classes.
    """
    k = check_int(num_classes, "num_classes", minimum=1)
    y = _check_labels(labels, k)
    if y.size == 0:
        raise ValueError("`labels` must not be empty")
    counts = np.bincount(y, minlength=k).astype(np.float64)
    present = np.count_nonzero(counts)
    weights = 1.0 / (present * counts[y])
    return weights / weights.sum()
