"""Image folders: both layouts, the fixed stratified split, colour handling, bad input."""

import numpy as np
import pytest
from PIL import Image

from jaxreg.data import load, load_splits
from jaxreg.data.folder import load_folder


def _write(path, value, mode="L", size=(4, 3)):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "L":
        array = np.full(size[::-1], value, np.uint8)
    else:
        array = np.zeros((*size[::-1], 3), np.uint8)
        array[..., 0] = value
    Image.fromarray(array, mode=None).save(path)


@pytest.fixture
def flat(tmp_path):
    # 3 classes with 10, 5 and 7 images; pixel value encodes (class, index).
    for k, (cls, n) in enumerate([("zebra", 10), ("ant", 5), ("cat", 7)]):
        for i in range(n):
            _write(tmp_path / cls / f"img_{i:02d}.png", 10 * k + i)
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    (tmp_path / "ant" / ".hidden.png").write_bytes(b"garbage")
    return tmp_path


def test_flat_layout_split(flat):
    sets = load_splits(f"folder:{flat}")
    assert {k: len(v) for k, v in sets.items()} == {"train": 13, "val": 5, "test": 4}
    for ds in sets.values():
        assert ds.class_names == ("ant", "cat", "zebra")  # sorted
        assert ds.images.shape[1:] == (3, 4, 1) and ds.images.dtype == np.float32
    assert sets["train"].class_counts().tolist() == [3, 4, 6]  # 60 % of 5, 7, 10
    # Every file is in exactly one split, with its right label.
    values = np.concatenate([(v.images[:, 0, 0, 0] * 255).round() for v in sets.values()])
    labels = np.concatenate([v.labels for v in sets.values()])
    assert sorted(values.tolist()) == sorted(
        [10 * k + i for k, n in enumerate([10, 5, 7]) for i in range(n)]
    )
    old_class = {"zebra": 0, "ant": 1, "cat": 2}
    names = sets["train"].class_names
    assert all(old_class[names[y]] == v // 10 for v, y in zip(values, labels))


def test_flat_layout_is_deterministic(flat):
    a, b = load(f"folder:{flat}", split="val"), load_folder(flat, split="val")
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_presplit_layout_and_rgb(tmp_path):
    _write(tmp_path / "train" / "b" / "x.png", 200, mode="RGB")
    _write(tmp_path / "train" / "a" / "y.png", 100)
    _write(tmp_path / "validation" / "a" / "z.png", 50)
    sets = load_splits(f"folder:{tmp_path}", splits=("train", "val"))
    assert sets["train"].class_names == ("a", "b") == sets["val"].class_names
    assert sets["train"].images.shape == (2, 3, 4, 3)  # one colour image -> all RGB
    assert sets["train"].labels.tolist() == [0, 1]
    np.testing.assert_allclose(sets["train"].images[1, 0, 0], [200 / 255, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(sets["val"].images[0, 0, 0], [50 / 255] * 3, rtol=1e-6)
    with pytest.raises(ValueError, match=r"split 'test' has no folder.*\['train', 'val'\]"):
        load(f"folder:{tmp_path}", split="test")


def test_sixteen_bit_png(tmp_path):
    path = tmp_path / "c" / "x.png"
    path.parent.mkdir()
    Image.fromarray(np.full((2, 2), 65535, np.uint16)).save(path)
    ds = load(f"folder:{tmp_path}", split="train")
    assert ds.images.shape == (1, 2, 2, 1) and ds.images.max() == 1.0


def test_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(f"folder:{tmp_path / 'nope'}")
    with pytest.raises(ValueError, match="no class sub-folders"):
        load(f"folder:{tmp_path}")
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="no images"):
        load(f"folder:{tmp_path}")
    for i in range(5):
        _write(tmp_path / "k" / f"{i}.png", 1, size=(4, 3) if i else (5, 5))
    with pytest.raises(ValueError, match="differ in size"):
        load_splits(f"folder:{tmp_path}")
    with pytest.raises(ValueError, match="allowed splits"):
        load(f"folder:{tmp_path}", split="dev")
    with pytest.raises(ValueError, match="needs a path"):
        load("folder:")


def test_mixed_layout_rejected(tmp_path):
    _write(tmp_path / "train" / "a" / "x.png", 1)
    _write(tmp_path / "dogs" / "x.png", 1)
    with pytest.raises(ValueError, match="mixes split folders"):
        load(f"folder:{tmp_path}")
