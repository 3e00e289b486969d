"""Streaming training data through grain: random-access sources read a batch at a time.

A source is anything with `len(source)` and `source[i] -> (image, label)` (image float32
(H, W, C) in [0, 1], label int): `ArraySource` (arrays in memory), `FolderSource` (an image
folder read file by file) or `TfdsSource` (a prepared TFDS set through `tfds.data_source`).
Nothing but the batches in flight is held in memory.

One epoch is a `grain.MapDataset` over the rows of the epoch's index matrix `perm` (steps, B)
(`jaxreg.train.step.epoch_permutation`: shuffled by the run key and the epoch, the same one
the in-memory loops use, so a streamed run computes what the in-memory run computes). Each
process reads only its columns `lo:hi` of every row (its devices' part of the global batch),
so with several hosts every example of the epoch is read once, by one host. grain reads the
examples with `read_threads` threads and keeps `prefetch` batches ready; augmentation stays on
the device, in the jitted step.

Resume: an epoch's batches are a function of (run key, epoch) only, so the position in the
stream is `(epoch, batches consumed)`. `EpochStream.consumed` counts batches handed to the
caller (grain's iterator state), not the ones prefetched; `EpochStream(..., start=k)` continues
after the k-th batch. The training loop checkpoints at epoch ends, so a killed run restarts the
interrupted epoch from its first batch with the state of the previous epoch end: no update is
applied twice and none is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from jaxreg.data.dataset import Dataset, to_float_image

__all__ = ["ArraySource", "EpochStream", "FolderSource", "TfdsSource", "image_shape", "open_source"]


class ArraySource:
    """A data set in memory as a source (`Dataset` or arrays)."""

    def __init__(self, images: Any, labels: Any | None = None):
        if isinstance(images, Dataset):
            images, labels = images.images, images.labels
        self.images, self.labels = images, np.asarray(labels, np.int32)
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return np.asarray(self.images[i], np.float32), int(self.labels[i])


class FolderSource:
    """One split of an image folder, each image read from its file when asked for.

    Same layout, order, labels and split rule as `jaxreg.data.load(f"folder:{root}")`.
    """

    def __init__(self, root: str | os.PathLike, *, split: str = "train"):
        from jaxreg.data.folder import list_folder

        self.files, self.labels, self.class_names, self.rgb = list_folder(root, split=split)
        self.num_classes = len(self.class_names)
        self.name = f"folder:{root}"

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        from jaxreg.data.folder import read_image

        return read_image(self.files[i], self.rgb), int(self.labels[i])


class TfdsSource:
    """A prepared TFDS split through `tfds.data_source` (array_record), decoded per example."""

    def __init__(self, name: str, *, split: str = "train", data_dir: str | None = None):
        from jaxreg.data.tfds import tfds_features

        self.source, self.image_key, self.label_key, self.num_classes = tfds_features(
            name, split=split, data_dir=data_dir
        )
        self.name = f"tfds:{name}"
        self.class_names = tuple(str(k) for k in range(self.num_classes))

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        record = self.source[int(i)]
        image = np.asarray(record[self.image_key])
        if image.ndim == 2:
            image = image[..., None]
        return to_float_image(image), int(record[self.label_key])


def open_source(name: str, *, split: str = "train", data_dir: str | None = None) -> Any:
    """The source of one split: lazy for "folder:PATH" and "tfds:NAME", in memory otherwise.

    Args:
      name: as for `jaxreg.data.load` (a built-in set is small and is loaded whole).
      split: "train", "val" or "test" (TFDS also takes its own split names).
      data_dir: TFDS data directory (only for "tfds:").

    Returns:
      `FolderSource`, `TfdsSource`, or an `ArraySource` over the loaded split.
    """
    from jaxreg.data import api

    if not isinstance(name, str):
        raise TypeError(f"`name` must be a data set name string, got {type(name).__name__}")
    if name.startswith(api.FOLDER_PREFIX):
        return FolderSource(name[len(api.FOLDER_PREFIX) :], split=split)
    if name.startswith(api.TFDS_PREFIX):
        return TfdsSource(name[len(api.TFDS_PREFIX) :], split=split, data_dir=data_dir)
    ds = api.load(name, split=split, data_dir=data_dir)
    source = ArraySource(ds)
    source.num_classes, source.class_names, source.name = ds.num_classes, ds.class_names, ds.name
    return source


def image_shape(source: Any) -> tuple[int, ...]:
    """(H, W, C) of a data set (`images.shape[1:]`) or of a source's first example."""
    images = getattr(source, "images", None)
    if images is not None:
        return tuple(images.shape[1:])
    if len(source) == 0:
        raise ValueError("the source is empty")
    return tuple(np.shape(source[0][0]))


class EpochStream:
    """The batches of one epoch, read through grain with threads and prefetch.

    Args:
      source: a source (`len`, `[i] -> (image, label)`).
      perm: (steps, B) int example indices of the epoch, the same on every process.
      columns: `(lo, hi)`: the part of each batch this process reads (default all of it).
      start: batches already consumed (resume mid-epoch): the stream begins with row `start`.
      read_threads: grain's reading threads.
      prefetch: batches grain keeps ready ahead of the caller.

    Iterating yields `(images (hi - lo, H, W, C) float32, labels (hi - lo,) int32)` per row.
    """

    def __init__(
        self,
        source: Any,
        perm: np.ndarray,
        *,
        columns: tuple[int, int] | None = None,
        start: int = 0,
        read_threads: int = 8,
        prefetch: int = 2,
    ):
        import grain

        perm = np.asarray(perm)
        if perm.ndim != 2:
            raise ValueError(f"perm must be (steps, batch_size), got shape {perm.shape}")
        lo, hi = columns if columns is not None else (0, perm.shape[1])
        if not 0 <= start <= perm.shape[0]:
            raise ValueError(f"start must be in [0, {perm.shape[0]}], got {start}")
        self.start, self.steps = int(start), int(perm.shape[0])
        rows = perm[self.start :, lo:hi]

        def read(row):
            examples = [source[int(i)] for i in row]
            images = np.stack([e[0] for e in examples]).astype(np.float32)
            return images, np.asarray([e[1] for e in examples], np.int32)

        ds = grain.MapDataset.source(list(rows)).map(read)
        options = grain.ReadOptions(num_threads=int(read_threads), prefetch_buffer_size=prefetch)
        self._iter = iter(ds.to_iter_dataset(options))

    @property
    def consumed(self) -> int:
        """Batches of this epoch handed out so far (prefetched ones do not count)."""
        return self.start + int(self._iter.get_state()["next_index"])

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self._iter

    def __len__(self) -> int:
        return self.steps - self.start
