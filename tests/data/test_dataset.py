"""The Dataset container, to_float_image, and the name-based entry points (bad input included)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra import numpy as hnp

from jaxreg.data import Dataset, list_datasets, load, load_splits, to_float_image


def _toy(n=4):
    labels = np.arange(n, dtype=np.int32) % 2
    return Dataset(np.zeros((n, 2, 2, 1), np.float32), labels, 2, ("a", "b"), "toy")


def test_dataset_checks():
    ds = _toy()
    assert len(ds) == 4 and ds.image_shape == (2, 2, 1) and "n=4" in repr(ds)
    with pytest.raises(TypeError, match="float32"):
        Dataset(np.zeros((1, 2, 2, 1)), np.zeros(1, np.int32), 1, ("a",), "x")
    with pytest.raises(TypeError, match="int32"):
        Dataset(np.zeros((1, 2, 2, 1), np.float32), np.zeros(1), 1, ("a",), "x")
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        Dataset(np.zeros((2, 2, 1), np.float32), np.zeros(2, np.int32), 1, ("a",), "x")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Dataset(np.zeros((1, 2, 2, 1), np.float32), np.ones(1, np.int32), 1, ("a",), "x")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Dataset(np.full((1, 2, 2, 1), 2, np.float32), np.zeros(1, np.int32), 1, ("a",), "x")
    with pytest.raises(ValueError, match="class_names"):
        Dataset(np.zeros((1, 2, 2, 1), np.float32), np.zeros(1, np.int32), 2, ("a",), "x")


def test_subset():
    ds = _toy()
    assert ds.subset([3, 0]).labels.tolist() == [1, 0]
    assert len(ds.subset(np.array([True, False, True, False]))) == 2
    assert len(ds.subset([])) == 0
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        ds.subset([4])
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        ds.subset([-1])
    with pytest.raises(TypeError, match="integers"):
        ds.subset([0.5])


def test_to_float_image_dtypes():
    np.testing.assert_array_equal(to_float_image(np.array([[0, 255]], np.uint8)), [[[0.0], [1.0]]])
    assert to_float_image(np.array([[0, 65535]], np.uint16)).max() == 1.0
    assert to_float_image(np.ones((2, 2), bool)).tolist() == [[[1.0], [1.0]]] * 2
    np.testing.assert_allclose(to_float_image(np.array([[51]], np.int64)), [[[0.2]]])
    out = to_float_image(np.full((3, 2, 2, 3), 0.5))
    assert out.dtype == np.float32 and out.shape == (3, 2, 2, 3)
    with pytest.raises(ValueError, match="rank 1"):
        to_float_image(np.zeros(5))
    with pytest.raises(ValueError, match="rank 5"):
        to_float_image(np.zeros((1, 1, 1, 1, 1)))
    with pytest.raises(ValueError, match="channel axis"):
        to_float_image(np.zeros((10, 28, 28)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_float_image(np.full((2, 2), 1.5))
    with pytest.raises(ValueError, match="NaN"):
        to_float_image(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        to_float_image(np.array([[-1, 3]]))
    with pytest.raises(TypeError, match="numeric"):
        to_float_image("image.png")
    with pytest.raises(TypeError, match="dtype"):
        to_float_image(np.zeros((2, 2), complex))


@settings(max_examples=30, deadline=None)
@given(
    hnp.arrays(
        np.uint8,
        hnp.array_shapes(min_dims=2, max_dims=3, max_side=5).filter(
            lambda s: len(s) == 2 or s[-1] <= 4
        ),
    )
)
def test_to_float_image_uint8_round_trips(x):
    y = to_float_image(x)
    assert y.dtype == np.float32 and y.ndim == 3 and 0.0 <= y.min() and y.max() <= 1.0
    np.testing.assert_array_equal(np.round(y * 255).astype(np.uint8).reshape(x.shape), x)


def test_list_and_unknown_names():
    names = list_datasets()
    assert {"mnist5k", "digits", "textures"} <= set(names)
    assert any(k.startswith("tfds:") for k in names) and any(k.startswith("folder:") for k in names)
    assert all(isinstance(v, str) and v for v in names.values())
    with pytest.raises(ValueError, match=r"unknown data set 'cifar'.*mnist5k.*tfds:.*folder:"):
        load("cifar")
    with pytest.raises(ValueError, match=r"unknown split 'validation'.*'train', 'val', 'test'"):
        load("digits", split="validation")
    with pytest.raises(TypeError, match="name"):
        load(3)
    with pytest.raises(TypeError, match="split"):
        load("digits", split=0)
    with pytest.raises(TypeError, match="splits"):
        load_splits("digits", splits="train")
    with pytest.raises(ValueError, match="only used by 'tfds:'"):
        load("digits", data_dir="/tmp")
