"""Streaming through grain: every example once per epoch, exact resume, same numbers as in memory."""

import jax
import numpy as np
import pytest
from PIL import Image

from jaxreg.data.stream import ArraySource, EpochStream, FolderSource
from jaxreg.train.step import epoch_permutation


def _ids_source(n):
    """Image i is filled with i; label i: what was read can be told from either."""
    images = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None], (n, 2, 2, 1))
    return ArraySource(images, np.arange(n))


def _perm(n, steps, batch, epoch=1):
    return np.asarray(epoch_permutation(jax.random.key(0), epoch, n, steps, batch))


def test_a_streamed_epoch_reads_every_example_once_over_two_hosts():
    n, steps, batch = 53, 6, 8  # 48 examples an epoch, 5 left over (dropped, as in memory)
    src, perm = _ids_source(n), _perm(n, 6, 8)
    seen = []
    for lo, hi in ((0, 4), (4, 8)):  # two processes, each its half of every batch
        rows = list(EpochStream(src, perm, columns=(lo, hi), read_threads=3))
        assert len(rows) == steps and all(x.shape == (4, 2, 2, 1) for x, _ in rows)
        for (x, y), want in zip(rows, perm[:, lo:hi]):
            np.testing.assert_array_equal(y, want)
            np.testing.assert_array_equal(x[:, 0, 0, 0], want.astype(np.float32))
        seen += [int(i) for _, y in rows for i in y]
    assert len(seen) == steps * batch == len(set(seen))  # each example once
    assert set(seen) == set(perm.ravel().tolist())
    # another epoch, another order, again each example once
    other = _perm(n, steps, batch, epoch=2)
    assert not np.array_equal(other, perm) and len(set(other.ravel().tolist())) == 48


def test_resume_mid_epoch_counts_consumed_batches_not_prefetched_ones():
    src, perm = _ids_source(40), _perm(40, 5, 8)
    whole = [y for _, y in EpochStream(src, perm)]
    stream = EpochStream(src, perm, prefetch=4, read_threads=4)
    it = iter(stream)
    first = [next(it)[1] for _ in range(2)]
    assert stream.consumed == 2  # grain has read ahead, but only 2 batches were handed out
    resumed = EpochStream(src, perm, start=stream.consumed)  # a new process after a kill
    assert len(resumed) == 3
    rest = [y for _, y in resumed]
    for a, b in zip(first + rest, whole):
        np.testing.assert_array_equal(a, b)
    assert resumed.consumed == 5


def test_folder_source_reads_files_lazily(tmp_path):
    for k, cls in enumerate(("a", "b")):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(3):
            value = 40 * (3 * k + i)
            Image.fromarray(np.full((4, 4), value, np.uint8)).save(
                tmp_path / "train" / cls / f"{i}.png"
            )
    src = FolderSource(tmp_path, split="train")
    assert len(src) == 6 and src.num_classes == 2 and not src.rgb
    image, label = src[4]
    assert image.shape == (4, 4, 1) and label == 1
    assert image[0, 0, 0] == pytest.approx(160 / 255)
    from jaxreg.data import load

    ds = load(f"folder:{tmp_path}")
    np.testing.assert_array_equal(np.stack([src[i][0] for i in range(6)]), ds.images)
    rows = list(EpochStream(src, np.arange(6).reshape(3, 2)))
    assert [list(y) for _, y in rows] == [[0, 0], [0, 1], [1, 1]]


def test_bad_arguments():
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        ArraySource(np.zeros((3, 2, 2, 1)), np.zeros(2))
    with pytest.raises(ValueError, match="perm must be"):
        EpochStream(_ids_source(4), np.arange(4))
    with pytest.raises(ValueError, match="start must be in"):
        EpochStream(_ids_source(4), np.arange(4).reshape(2, 2), start=3)
