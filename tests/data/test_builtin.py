"""Built-in real data sets: sizes, fixed splits, value ranges, determinism, real content."""

import numpy as np
import pytest

from jaxreg.data import builtin, load, load_splits


def _nearest_mean_accuracy(train, test):
    """Accuracy of a nearest-class-mean classifier: high only if images and labels are real."""
    means = np.stack(
        [train.images[train.labels == c].mean(0).ravel() for c in range(train.num_classes)]
    )
    flat = test.images.reshape(len(test), -1)
    dist = ((flat[:, None, :] - means[None]) ** 2).sum(-1)
    return float((dist.argmin(1) == test.labels).mean())


@pytest.fixture(scope="module", params=["mnist5k", "digits", "textures", "photos"])
def splits(request):
    return request.param, load_splits(request.param)


EXPECTED = {
    "mnist5k": ((28, 28, 1), {"train": 3000, "val": 1000, "test": 1000}),
    "digits": ((8, 8, 1), {"train": 1078, "val": 362, "test": 357}),
    "textures": ((32, 32, 3), {"train": 1500, "val": 500, "test": 500}),
    "photos": ((64, 64, 3), {"train": 1000, "val": 300, "test": 300}),
}


def test_shapes_dtypes_ranges(splits):
    name, sets = splits
    shape, sizes = EXPECTED[name]
    for split, ds in sets.items():
        assert ds.images.shape == (sizes[split], *shape)
        assert ds.images.dtype == np.float32 and ds.labels.dtype == np.int32
        assert 0.0 <= ds.images.min() and ds.images.max() <= 1.0
        assert ds.images.max() > 0.9  # really spans the range, not e.g. 0..1/255
        assert ds.num_classes == 10 == len(ds.class_names)
        assert set(np.unique(ds.labels)) == set(range(10))
        assert ds.name == f"{name}:{split}"


def test_deterministic(splits):
    name, sets = splits
    builtin._build_textures.cache_clear()
    builtin._build_photos.cache_clear()
    builtin._mnist5k_arrays.cache_clear()
    again = load(name, split="val")
    np.testing.assert_array_equal(again.images, sets["val"].images)
    np.testing.assert_array_equal(again.labels, sets["val"].labels)


def test_real_content(splits):
    name, sets = splits
    accuracy = _nearest_mean_accuracy(sets["train"], sets["test"])
    # Chance is 0.1; measured: mnist5k 0.82, digits 0.91, textures 0.45, photos 0.57 (whole-crop
    # means blur).
    limits = {"mnist5k": 0.7, "digits": 0.8, "textures": 0.3, "photos": 0.4}
    assert accuracy > limits[name], accuracy
    means = np.stack([sets["train"].images[sets["train"].labels == c].mean(0) for c in range(10)])
    assert min(np.abs(means[i] - means[j]).mean() for i in range(10) for j in range(i)) > 0.01


def test_no_example_shared_across_splits(splits):
    _, sets = splits
    seen = {}
    for split, ds in sets.items():
        for row in ds.images.reshape(len(ds), -1):
            key = row.tobytes()
            assert seen.setdefault(key, split) == split
    # Also the mean image of a split is plausible for every split (no empty / garbage split).
    for ds in sets.values():
        assert 0.05 < ds.images.mean() < 0.95


def test_mnist5k_split_indices_partition_the_csv():
    parts = builtin.split_indices("mnist5k")
    everything = np.concatenate(list(parts.values()))
    assert np.array_equal(np.sort(everything), np.arange(5000))
    _, labels = builtin._mnist5k_arrays()
    for split, per_class in {"train": 300, "val": 100, "test": 100}.items():
        assert (np.bincount(labels[parts[split]], minlength=10) == per_class).all()
    ds = load("mnist5k", split="test")
    images, _ = builtin._mnist5k_arrays()
    np.testing.assert_array_equal(ds.images, images[parts["test"]] / np.float32(255))
    assert 0.10 < ds.images.mean() < 0.16  # MNIST's well-known pixel mean is about 0.13


def test_digits_match_sklearn_and_partition():
    from sklearn.datasets import load_digits

    parts = builtin.split_indices("digits")
    assert np.array_equal(np.sort(np.concatenate(list(parts.values()))), np.arange(1797))
    ds = load("digits", split="train")
    bunch = load_digits()
    np.testing.assert_array_equal(ds.labels, bunch.target[parts["train"]])
    np.testing.assert_allclose(ds.images[..., 0], bunch.images[parts["train"]] / 16.0, rtol=1e-6)


def test_textures_crops_come_from_their_band():
    # Every test crop must occur inside its photo's test band and nowhere in the train band.
    ds = load("textures", split="test")
    for label in (0, 4, 8):  # a colour photo, a gray texture, a scikit-learn photo
        _, package, relative = builtin.TEXTURE_PHOTOS[label]
        photo = builtin._load_photo(package, relative).astype(np.float32) / 255
        width = photo.shape[1]
        lo = round(builtin.TEXTURE_BANDS["test"][0] * width)
        crop = ds.images[ds.labels == label][0]
        windows = np.lib.stride_tricks.sliding_window_view(photo, crop.shape)[..., 0, :, :, :]
        hits = np.argwhere(np.all(windows == crop, axis=(2, 3, 4)))
        assert len(hits) >= 1
        assert (hits[:, 1] >= lo).all()


def test_returned_arrays_are_fresh():
    a = load("mnist5k", split="val")
    a.images[0] = 0.5  # writing into the result must not change the cache
    b = load("mnist5k", split="val")
    assert not np.array_equal(a.images[0], b.images[0])


def _find(photo, crop):
    """(y, x) of every place where `crop` lies in `photo` (candidates by the top-left pixel)."""
    ys, xs = np.nonzero(
        np.all(photo[: 1 - crop.shape[0] or None, : 1 - crop.shape[1] or None] == crop[0, 0], -1)
    )
    h, w = crop.shape[:2]
    return [(y, x) for y, x in zip(ys, xs) if np.array_equal(photo[y : y + h, x : x + w], crop)]


def test_photos_crops_lie_in_tiles_of_their_own_split():
    # Every crop of a split sits inside one 96x96 tile, and no tile serves two splits.
    sets = load_splits("photos")
    t, s = builtin.PHOTO_TILE, builtin.PHOTO_SIZE
    for label in (0, 4, 9):  # a colour photo, a gray texture, a scikit-learn photo
        _, package, relative = builtin.TEXTURE_PHOTOS[label]
        photo = builtin._load_photo(package, relative, builtin.PHOTO_HEIGHT)
        tiles = {}
        for split, ds in sets.items():
            crops = np.round(ds.images[ds.labels == label] * 255).astype(np.uint8)
            assert len(crops) == builtin.PHOTO_CROPS[split]
            for crop in crops[:12]:
                hits = _find(photo, crop)
                assert hits, (split, label)
                y, x = hits[0]
                assert y % t + s <= t and x % t + s <= t  # inside one tile
                tiles.setdefault(split, set()).add((y // t, x // t))
        assert not tiles["train"] & tiles["val"] and not tiles["train"] & tiles["test"]
        assert not tiles["val"] & tiles["test"]
