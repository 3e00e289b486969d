"""TFDS path: data sets built here with the real TFDS builder API, read back without TensorFlow."""

import io
import os
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from jaxreg.data import load, load_splits, tfds_source
from jaxreg.data.tfds import find_prepared

NAMES = ("circle", "square", "cross")


def _example(i: int, size: int) -> tuple[np.ndarray, int]:
    """A deterministic gray image whose mean brightness encodes its class."""
    label = i % 3
    rng = np.random.default_rng(i)
    image = (rng.integers(0, 40, (size, size)) + 100 * label).astype(np.uint8)
    return image, label


class JaxregTinyTensor(tfds.core.GeneratorBasedBuilder):
    """Tensor image feature (HWC uint8) + ClassLabel; train / validation / test."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(6, 6, 3), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(names=list(NAMES)),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {
            "train": self._generate_examples(0, 12),
            "validation": self._generate_examples(100, 6),
            "test": self._generate_examples(200, 6),
        }

    def _generate_examples(self, start, n):
        for i in range(start, start + n):
            image, label = _example(i, 6)
            yield str(i), {"image": np.repeat(image[..., None], 3, axis=-1), "label": label}


class JaxregTinyPng(tfds.core.GeneratorBasedBuilder):
    """Image feature stored as PNG bytes (as real TFDS image sets are), decoded with PIL."""

    VERSION = tfds.core.Version("2.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "picture": tfds.features.Image(shape=(5, 5, 1), encoding_format="png"),
                    "target": tfds.features.ClassLabel(names=list(NAMES)),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 9)}

    def _generate_examples(self, start, n):
        for i in range(start, start + n):
            image, label = _example(i, 5)
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG")
            yield str(i), {"picture": buffer.getvalue(), "target": label}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds")
    for cls in (JaxregTinyTensor, JaxregTinyPng):
        cls(data_dir=str(root), file_format="array_record").download_and_prepare()
    return str(root)


def test_tensor_feature_round_trip(data_dir):
    ds = load("tfds:jaxreg_tiny_tensor", split="train", data_dir=data_dir)
    assert ds.images.shape == (12, 6, 6, 3) and ds.images.dtype == np.float32
    assert ds.labels.dtype == np.int32 and ds.num_classes == 3 and ds.class_names == NAMES
    assert ds.name == "tfds:jaxreg_tiny_tensor:train"
    # Exact values: records are stored shuffled, so compare as a set of (image, label).
    expected = sorted(
        (np.repeat(_example(i, 6)[0][..., None], 3, -1).astype(np.float32) / 255).tobytes()
        + bytes([_example(i, 6)[1]])
        for i in range(12)
    )
    got = sorted(im.tobytes() + bytes([int(y)]) for im, y in zip(ds.images, ds.labels))
    assert got == expected
    assert "tensorflow" not in sys.modules


def test_image_feature_and_non_standard_keys(data_dir):
    ds = load("tfds:jaxreg_tiny_png:2.0.0", data_dir=data_dir)
    assert ds.images.shape == (9, 5, 5, 1)
    means = [ds.images[ds.labels == c].mean() for c in range(3)]
    assert means[0] < means[1] < means[2]  # the labels travel with their images


def test_splits_val_alias_and_slicing(data_dir):
    sets = load_splits("tfds:jaxreg_tiny_tensor", data_dir=data_dir)
    assert {k: len(v) for k, v in sets.items()} == {"train": 12, "val": 6, "test": 6}
    assert len(load("tfds:jaxreg_tiny_tensor", split="train[:50%]", data_dir=data_dir)) == 6
    assert len(load("tfds:jaxreg_tiny_tensor", split="train+test", data_dir=data_dir)) == 18
    source = tfds_source("jaxreg_tiny_tensor", split="val", data_dir=data_dir)
    assert len(source) == 6 and source[0]["image"].dtype == np.uint8


def test_unknown_split_names_allowed(data_dir):
    with pytest.raises(ValueError, match=r"unknown split 'val'.*allowed splits: \['train'\]"):
        load("tfds:jaxreg_tiny_png", split="val", data_dir=data_dir)
    with pytest.raises(ValueError, match="allowed splits: \\['train', 'validation', 'test'\\]"):
        load("tfds:jaxreg_tiny_tensor", split="train+dev", data_dir=data_dir)
    assert len(load("tfds:jaxreg_tiny_tensor", split="validation", data_dir=data_dir)) == 6


def test_env_default_data_dir(data_dir, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", data_dir)
    assert len(load("tfds:jaxreg_tiny_png")) == 9
    assert find_prepared("jaxreg_tiny_png").name == "2.0.0"


def test_not_prepared_fails_fast_and_offline(tmp_path):
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match=r"not prepared.*tfds build mnist --data_dir"):
        load("tfds:mnist", split="train", data_dir=str(tmp_path))
    assert time.perf_counter() - start < 3.0
    assert os.listdir(tmp_path) == []  # nothing was downloaded or created


def test_missing_version_and_bad_names(data_dir):
    with pytest.raises(FileNotFoundError, match=r"prepared versions: \['1\.0\.0'\]"):
        load("tfds:jaxreg_tiny_tensor:9.9.9", data_dir=data_dir)
    with pytest.raises(ValueError, match="malformed TFDS name"):
        load("tfds:../etc", data_dir=data_dir)
    with pytest.raises(TypeError, match="data_dir"):
        load("tfds:jaxreg_tiny_tensor", data_dir=3)


def test_tfrecord_prepared_set_is_refused(tmp_path, data_dir):
    import json
    import shutil

    src = find_prepared("jaxreg_tiny_tensor", data_dir)
    dst = tmp_path / "jaxreg_tiny_tensor" / "1.0.0"
    shutil.copytree(src, dst)
    info = json.loads((dst / "dataset_info.json").read_text())
    info["fileFormat"] = "tfrecord"
    (dst / "dataset_info.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="array_record"):
        load("tfds:jaxreg_tiny_tensor", data_dir=str(tmp_path))


def test_find_prepared_configs_and_incomplete(tmp_path):
    def fake(*parts):
        folder = tmp_path.joinpath(*parts)
        folder.mkdir(parents=True)
        (folder / "dataset_info.json").write_text("{}")

    fake("one", "incomplete.ABC_1.0.0")  # an interrupted preparation does not count
    with pytest.raises(FileNotFoundError, match="not prepared"):
        find_prepared("one", tmp_path)
    fake("two", "small", "1.0.0")
    fake("two", "small", "1.2.0")
    assert find_prepared("two", tmp_path) == tmp_path / "two" / "small" / "1.2.0"
    assert find_prepared("two:1.0.0", tmp_path) == tmp_path / "two" / "small" / "1.0.0"
    fake("two", "large", "1.0.0")
    with pytest.raises(ValueError, match=r"several prepared configs.*\['large', 'small'\]"):
        find_prepared("two", tmp_path)
    assert find_prepared("two/large", tmp_path) == tmp_path / "two" / "large" / "1.0.0"


def test_config_cannot_climb_out_of_data_dir(tmp_path):
    with pytest.raises(ValueError, match="malformed"):
        find_prepared("mnist/..", tmp_path)


def test_streaming_source_reads_what_load_reads(data_dir):
    """`jaxreg.data.stream.TfdsSource`: per-example reads, the values `load` gives, via grain."""
    from jaxreg.data.stream import EpochStream, TfdsSource

    ds = load("tfds:jaxreg_tiny_tensor", split="train", data_dir=data_dir)
    src = TfdsSource("jaxreg_tiny_tensor", split="train", data_dir=data_dir)
    assert len(src) == 12 and src.num_classes == 3
    for i in (0, 7):
        image, label = src[i]
        np.testing.assert_array_equal(image, ds.images[i])
        assert label == ds.labels[i]
    rows = list(EpochStream(src, np.arange(12).reshape(3, 4)[::-1], read_threads=2))
    np.testing.assert_array_equal(
        np.concatenate([y for _, y in rows]), ds.labels[[8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3]]
    )
    assert "tensorflow" not in sys.modules
