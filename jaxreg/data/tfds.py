"""TFDS data sets read offline from prepared array_record files (no TensorFlow, no network).

`load_tfds` and `tfds_source` only read a data set that was already prepared in `data_dir`
with `file_format='array_record'`. They look for the prepared files on disk *before* touching
TFDS, so a missing data set fails at once with instructions instead of TFDS trying (and, with
no internet, retrying for minutes) to download it. To prepare a data set, on a machine with
internet::

    tfds build mnist --data_dir DATA_DIR --file_format array_record
    # or, in Python:
    tfds.builder("mnist", data_dir=DATA_DIR).download_and_prepare(file_format="array_record")

then copy DATA_DIR over. The prepared folder is read with `tfds.builder_from_directory`, so the
data set's builder class need not be importable.
"""

from __future__ import annotations

import os
import pathlib
import re
from typing import Any

import numpy as np

from jaxreg.data.dataset import Dataset, check_str, to_float_image

#: Environment variable TFDS itself reads for its default data directory.
DATA_DIR_ENV = "TFDS_DATA_DIR"

_NAME_RE = re.compile(
    r"^(?P<name>[a-z][a-z0-9_]*)"
    r"(?:/(?P<config>[A-Za-z0-9_][A-Za-z0-9_.+\-]*))?"
    r"(?::(?P<version>\d+\.\d+\.\d+))?$"
)
_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")


def default_data_dir() -> pathlib.Path:
    """`$TFDS_DATA_DIR` if set, else `~/tensorflow_datasets` (TFDS's own default)."""
    return pathlib.Path(os.environ.get(DATA_DIR_ENV) or "~/tensorflow_datasets").expanduser()


def _how_to_prepare(spec: str, data_dir: pathlib.Path) -> str:
    name = spec.split(":")[0]
    return (
        f"prepare it on a machine with internet with `tfds build {name} --data_dir {data_dir} "
        f"--file_format array_record` (or `tfds.builder({name!r}, data_dir=...)"
        f".download_and_prepare(file_format='array_record')`) and copy the folder here; "
        "jaxreg never downloads"
    )


def _versions(folder: pathlib.Path) -> list[pathlib.Path]:
    """Prepared version folders (X.Y.Z with a dataset_info.json) directly under `folder`."""
    if not folder.is_dir():
        return []
    found = [
        p
        for p in folder.iterdir()
        if _VERSION_RE.match(p.name) and (p / "dataset_info.json").is_file()
    ]
    return sorted(found, key=lambda p: tuple(int(v) for v in p.name.split(".")))


def find_prepared(spec: str, data_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """Finds a TFDS data set's prepared folder on local disk, touching neither TFDS nor the net.

    Args:
      spec: "NAME", "NAME/CONFIG", "NAME:X.Y.Z" or "NAME/CONFIG:X.Y.Z" (TFDS naming). Without a
        version the newest prepared one is used; without a config the only prepared config.
      data_dir: TFDS data directory; default `default_data_dir()`.

    Returns:
      The folder DATA_DIR/NAME[/CONFIG]/X.Y.Z holding dataset_info.json.

    Raises:
      ValueError: on a malformed name, or several prepared configs and none chosen.
      FileNotFoundError: if the data set (or the asked config/version) is not prepared there;
        the message says how to prepare it.
    """
    check_str(spec, "name")
    match = _NAME_RE.match(spec)
    if match is None:
        raise ValueError(
            f"malformed TFDS name {spec!r}; expected 'tfds:NAME', 'tfds:NAME/CONFIG', "
            "'tfds:NAME:X.Y.Z' or 'tfds:NAME/CONFIG:X.Y.Z' (NAME in snake_case)"
        )
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise TypeError(f"`data_dir` must be a str or path, got {type(data_dir).__name__}")
    root = pathlib.Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    name, config, version = match["name"], match["config"], match["version"]
    base = root / name
    missing = f"TFDS data set {spec!r} is not prepared in {str(root)!r}"
    if config is not None:
        base = base / config
    elif not _versions(base) and base.is_dir():
        configs = sorted(p.name for p in base.iterdir() if _versions(p))
        if len(configs) > 1:
            raise ValueError(
                f"TFDS data set {name!r} has several prepared configs in {str(root)!r}: "
                f"{configs}; choose one as 'tfds:{name}/CONFIG'"
            )
        if configs:
            base = base / configs[0]
    versions = _versions(base)
    if not versions:
        raise FileNotFoundError(f"{missing}; {_how_to_prepare(spec, root)}")
    if version is None:
        return versions[-1]
    for path in versions:
        if path.name == version:
            return path
    raise FileNotFoundError(
        f"{missing} (prepared versions: {[p.name for p in versions]}); "
        f"{_how_to_prepare(spec, root)}"
    )


def _builder(spec: str, data_dir: str | os.PathLike | None) -> Any:
    folder = find_prepared(spec, data_dir)  # before importing TFDS: no download path at all
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(os.fspath(folder))
    fmt = getattr(builder.info.file_format, "value", builder.info.file_format)
    if str(fmt) != "array_record":
        raise ValueError(
            f"TFDS data set {spec!r} in {str(folder)!r} was prepared as {fmt!r}; random access "
            "without TensorFlow needs array_record: prepare it again with "
            "`download_and_prepare(file_format='array_record')` or "
            "`tfds build ... --file_format array_record`"
        )
    return builder


def _resolve_split(builder: Any, spec: str, split: str) -> str:
    """Checks every split named in a TFDS split expression; maps 'val' to 'validation'."""
    check_str(split, "split")
    available = list(builder.info.splits)
    parts = []
    for token in split.split("+"):
        token = token.strip()
        base, bracket, rest = token.partition("[")
        base = base.strip()
        if base == "val" and "val" not in available and "validation" in available:
            base = "validation"
        if base not in available:
            raise ValueError(
                f"unknown split {split!r} for TFDS data set {spec!r}; allowed splits: "
                f"{available} (TFDS slicing like 'train[:80%]' and 'train+test' works too)"
            )
        parts.append(base + bracket + rest)
    return "+".join(parts)


def tfds_source(name: str, *, split: str = "train", data_dir: str | None = None) -> Any:
    """Random-access source (`len`, `[i]`) of a prepared TFDS data set, e.g. for grain.

    Args:
      name: TFDS name without the 'tfds:' prefix (see `find_prepared`).
      split: a split of the data set or a TFDS split expression ('train[:80%]'); 'val' means
        'validation' when the data set has no 'val' split.
      data_dir: TFDS data directory; default `$TFDS_DATA_DIR` or `~/tensorflow_datasets`.

    Returns:
      A `tfds` array_record data source; element i is a dict of decoded numpy features.

    Raises:
      FileNotFoundError: if not prepared (fast, with instructions). ValueError: bad split.
    """
    builder = _builder(name, data_dir)
    return builder.as_data_source(split=_resolve_split(builder, name, split))


def tfds_features(
    name: str, *, split: str = "train", data_dir: str | None = None
) -> tuple[Any, str, str, int]:
    """`(source, image key, label key, num_classes)` of a prepared TFDS split, for streaming.

    `source` is `tfds_source(name, split=...)`; the keys are those `load_tfds` reads;
    `num_classes` comes from the ClassLabel feature (0 when the label is a plain integer).
    """
    import tensorflow_datasets as tfds

    builder = _builder(name, data_dir)
    image_key, label_key = _pick_keys(builder, name)
    feature = builder.info.features[label_key]
    k = int(feature.num_classes) if isinstance(feature, tfds.features.ClassLabel) else 0
    source = builder.as_data_source(split=_resolve_split(builder, name, split))
    return source, image_key, label_key, k


def _pick_keys(builder: Any, spec: str) -> tuple[str, str]:
    import tensorflow_datasets as tfds

    features = builder.info.features
    keys = list(features.keys()) if hasattr(features, "keys") else []
    supervised = builder.info.supervised_keys
    if (
        isinstance(supervised, tuple)
        and len(supervised) >= 2
        and all(isinstance(k, str) and k in keys for k in supervised[:2])
    ):
        return supervised[0], supervised[1]
    image_key = (
        "image"
        if "image" in keys
        else next((k for k in keys if isinstance(features[k], tfds.features.Image)), None)
    )
    label_key = (
        "label"
        if "label" in keys
        else next((k for k in keys if isinstance(features[k], tfds.features.ClassLabel)), None)
    )
    if image_key is None or label_key is None:
        raise ValueError(
            f"TFDS data set {spec!r} has features {keys}; jaxreg needs an image feature "
            "('image' or an Image feature) and a label feature ('label' or a ClassLabel)"
        )
    return image_key, label_key


def load_tfds(name: str, *, split: str = "train", data_dir: str | None = None) -> Dataset:
    """Loads a whole split of a prepared TFDS image classification data set into memory.

    Reads the array_record files with `tfds.data_source` machinery (no TensorFlow); never
    downloads. For data too large for host memory, stream `tfds_source(...)` through grain.

    Args:
      name: TFDS name without the 'tfds:' prefix: "NAME[/CONFIG][:X.Y.Z]".
      split: a split of the data set or a TFDS split expression; 'val' means 'validation'
        when the data set has no 'val' split.
      data_dir: TFDS data directory; default `$TFDS_DATA_DIR` or `~/tensorflow_datasets`.

    Returns:
      `Dataset` named "tfds:NAME:SPLIT": images float32 (N, H, W, C) in [0, 1] (uint8 / 255;
      2-D images get C = 1), labels int32 (N,). With a ClassLabel feature, num_classes and
      class_names come from it; with a plain integer label, num_classes is max(label) + 1 of
      this split and class names are the numbers.

    Raises:
      FileNotFoundError: if the data set is not prepared in data_dir (within a second, with
        instructions). ValueError: unknown split, no image/label feature, ragged image shapes.
    """
    import tensorflow_datasets as tfds

    builder = _builder(name, data_dir)
    resolved = _resolve_split(builder, name, split)
    image_key, label_key = _pick_keys(builder, name)
    source = builder.as_data_source(split=resolved)
    images, labels = [], []
    for start in range(0, len(source), 4096):
        batch = source.__getitems__(list(range(start, min(start + 4096, len(source)))))
        images.extend(np.asarray(record[image_key]) for record in batch)
        labels.extend(int(record[label_key]) for record in batch)
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise ValueError(
            f"TFDS data set {name!r} split {split!r} has images of several shapes "
            f"({sorted(shapes)[:5]}...); load it with `tfds_source` and resize per example"
        )
    if images:
        stacked = np.stack(images)
        if stacked.ndim == 3:
            stacked = stacked[..., None]
        array = to_float_image(stacked)
    else:
        shape = tuple(d or 1 for d in builder.info.features[image_key].shape)
        array = np.zeros((0, *shape) + ((1,) if len(shape) == 2 else ()), np.float32)
    label_feature = builder.info.features[label_key]
    y = np.asarray(labels, dtype=np.int64)
    if isinstance(label_feature, tfds.features.ClassLabel):
        num_classes = int(label_feature.num_classes)
        class_names = tuple(str(n) for n in label_feature.names)
    else:
        num_classes = int(y.max()) + 1 if y.size else 1
        class_names = tuple(str(i) for i in range(num_classes))
    return Dataset(
        images=array,
        labels=y.astype(np.int32),
        num_classes=num_classes,
        class_names=class_names,
        name=f"tfds:{name}:{split}",
    )
