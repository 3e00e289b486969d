"""The in-memory `Dataset` container, image normalisation (`to_float_image`) and argument checks."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

#: Split names of the built-in and folder data sets, in their canonical order.
SPLITS: tuple[str, ...] = ("train", "val", "test")

#: Largest channel count `to_float_image` accepts on the last axis (gray, gray+alpha, RGB, RGBA).
_MAX_CHANNELS = 4


def check_str(value: object, argument: str) -> str:
    """Returns `value` if it is a `str`, else raises `TypeError` naming `argument`."""
    if not isinstance(value, str):
        raise TypeError(f"`{argument}` must be a str, got {type(value).__name__}: {value!r}")
    return value


def check_int(value: object, argument: str, *, minimum: int | None = None) -> int:
    """Returns `value` as `int` if it is an integer (not bool) >= `minimum`, else raises."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{argument}` must be an int, got {type(value).__name__}: {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"`{argument}` must be >= {minimum}, got {value}")
    return int(value)


def check_split(split: object, allowed: Sequence[str] = SPLITS) -> str:
    """Returns `split` if it is one of `allowed`, else raises `TypeError`/`ValueError`."""
    check_str(split, "split")
    if split not in allowed:
        allowed_text = ", ".join(map(repr, allowed))
        raise ValueError(f"unknown split {split!r}; allowed splits: {allowed_text}")
    return split


def to_float_image(array: object) -> np.ndarray:
    """Converts an image (or a batch of images) to float32 HWC (or NHWC) with values in [0, 1].

    Rules by dtype:
      * `uint8` -> divided by 255; `uint16` -> divided by 65535 (16-bit images).
      * `bool` -> 0.0 / 1.0.
      * other integer dtypes -> read as 8-bit values: they must lie in [0, 255] and are divided
        by 255 (a `ValueError` names the offending range otherwise).
      * floating dtypes -> must already lie in [0, 1] (no NaN); cast to float32.

    Args:
      array: array-like of shape (H, W) (a channel axis is added), (H, W, C) or (N, H, W, C),
        with 1 <= C <= 4. A batch of 2-D gray images (N, H, W) is ambiguous with HWC and must be
        given as `images[..., None]`.

    Returns:
      A new float32 `np.ndarray` of shape (H, W, C) or (N, H, W, C) with values in [0, 1].

    Raises:
      TypeError: if `array` is not numeric (e.g. strings, objects, complex numbers).
      ValueError: on a wrong rank, more than 4 channels, an empty axis, or values out of range.
    """
    if isinstance(array, (str, bytes)):
        raise TypeError(f"`array` must be a numeric array, got {type(array).__name__}")
    try:
        x = np.asarray(array)
    except Exception as err:  # ragged nested lists and the like
        raise TypeError(f"`array` could not be converted to a numeric array: {err}") from None
    kind = x.dtype.kind
    if kind not in "biuf":
        raise TypeError(f"`array` must have a bool, integer or floating dtype, got dtype {x.dtype}")
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim not in (3, 4):
        raise ValueError(
            f"`array` must have shape (H, W), (H, W, C) or (N, H, W, C); got rank {x.ndim} "
            f"shape {x.shape}"
        )
    if not 1 <= x.shape[-1] <= _MAX_CHANNELS:
        raise ValueError(
            f"the last axis of `array` is the channel axis and must have 1..{_MAX_CHANNELS} "
            f"entries, got shape {x.shape} (for a batch of gray images use `images[..., None]`)"
        )
    if 0 in x.shape:
        raise ValueError(f"`array` must not have an empty axis, got shape {x.shape}")
    if kind == "b":
        return x.astype(np.float32)
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    if x.dtype == np.uint16:
        return x.astype(np.float32) / np.float32(65535.0)
    lo, hi = x.min(), x.max()
    if kind in "iu":
        if lo < 0 or hi > 255:
            raise ValueError(
                f"integer images of dtype {x.dtype} are read as 8-bit and must lie in [0, 255], "
                f"got range [{lo}, {hi}]"
            )
        return x.astype(np.float32) / np.float32(255.0)
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"floating-point images must already lie in [0, 1] (no NaN/inf), got range [{lo}, {hi}]"
        )
    return x.astype(np.float32)


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """An image classification data set held in host memory.

    Attributes:
      images: float32 array of shape (N, H, W, C), values in [0, 1].
      labels: int32 array of shape (N,), values in [0, num_classes).
      num_classes: number of classes (>= 1); classes may be absent from a given split.
      class_names: tuple of `num_classes` strings; `class_names[k]` names label k.
      name: where the data came from, e.g. "mnist5k:train" or "tfds:mnist:test".

    The constructor checks all of the above and raises `TypeError`/`ValueError` otherwise. The
    arrays are not copied; treat them as read-only (derive new data sets with `subset`).
    """

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]
    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.images, np.ndarray) or self.images.dtype != np.float32:
            raise TypeError(
                "`images` must be a float32 np.ndarray (use `to_float_image`), got "
                f"{type(self.images).__name__} of dtype {getattr(self.images, 'dtype', None)}"
            )
        if self.images.ndim != 4:
            raise ValueError(f"`images` must have shape (N, H, W, C), got {self.images.shape}")
        if not isinstance(self.labels, np.ndarray) or self.labels.dtype != np.int32:
            raise TypeError(
                "`labels` must be an int32 np.ndarray, got "
                f"{type(self.labels).__name__} of dtype {getattr(self.labels, 'dtype', None)}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"`labels` must have shape ({self.images.shape[0]},) to match `images` "
                f"{self.images.shape}, got {self.labels.shape}"
            )
        check_int(self.num_classes, "num_classes", minimum=1)
        if not isinstance(self.class_names, tuple) or not all(
            isinstance(c, str) for c in self.class_names
        ):
            raise TypeError(f"`class_names` must be a tuple of str, got {self.class_names!r}")
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"`class_names` has {len(self.class_names)} entries but num_classes is "
                f"{self.num_classes}"
            )
        check_str(self.name, "name")
        if self.labels.size and (self.labels.min() < 0 or self.labels.max() >= self.num_classes):
            raise ValueError(
                f"`labels` must lie in [0, {self.num_classes}), got range "
                f"[{self.labels.min()}, {self.labels.max()}]"
            )
        if self.images.size:
            lo, hi = self.images.min(), self.images.max()
            if not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
                raise ValueError(f"`images` must lie in [0, 1], got range [{lo}, {hi}]")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, n={len(self)}, image_shape={self.image_shape}, "
            f"num_classes={self.num_classes})"
        )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one example."""
        return tuple(int(d) for d in self.images.shape[1:])  # type: ignore[return-value]

    def class_counts(self) -> np.ndarray:
        """Returns an int64 array of shape (num_classes,): examples per class."""
        return np.bincount(self.labels, minlength=self.num_classes)

    def subset(self, indices: object) -> Dataset:
        """Returns a new `Dataset` holding the selected examples (copies of them), same classes.

        Args:
          indices: 1-D integer array-like of positions in [0, N) (order kept, repeats allowed),
            or a bool mask of shape (N,).

        Raises:
          TypeError: if `indices` is neither integer nor bool.
          ValueError: on a wrong shape or out-of-range positions.
        """
        idx = np.asarray(indices)
        if idx.dtype.kind == "b":
            if idx.shape != (len(self),):
                raise ValueError(f"a bool mask must have shape ({len(self)},), got {idx.shape}")
            idx = np.flatnonzero(idx)
        elif idx.size == 0:
            idx = idx.astype(np.int64)
        elif idx.dtype.kind not in "iu":
            raise TypeError(f"`indices` must be integers or a bool mask, got dtype {idx.dtype}")
        if idx.ndim != 1:
            raise ValueError(f"`indices` must be 1-D, got shape {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise ValueError(
                f"`indices` must lie in [0, {len(self)}), got [{idx.min()}, {idx.max()}]"
            )
        return dataclasses.replace(self, images=self.images[idx], labels=self.labels[idx])
