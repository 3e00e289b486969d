"""Image-folder data sets: one sub-folder per class, pre-split or split here (stratified).

Two layouts are understood (class names are the sub-folder names, sorted; label k is the k-th):

* pre-split: ROOT/{train,val,test}/CLASS/*.png — used as given ('validation' or 'valid' may
  stand for 'val'); the classes are the union over the split folders, so labels agree across
  splits.
* flat: ROOT/CLASS/*.png — each class's files, sorted by name, are split 60 / 20 / 20 by
  `stratified_split_indices(labels, (0.6, 0.2, 0.2), seed=FOLDER_SPLIT_SEED)`; the result
  depends only on the file names, so it is the same on every run and machine.

Files with the extensions in `IMAGE_EXTENSIONS` (any case) are read with PIL; hidden files are
skipped. All images must have the same size. Gray images (PIL modes 1, L, I;16, I) give C = 1
unless some image of the data set is colour, then every image is converted to RGB (C = 3; alpha
is dropped).
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from jaxreg.data.dataset import SPLITS, Dataset, check_split, check_str, to_float_image
from jaxreg.data.sampling import stratified_split_indices

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
FOLDER_SPLIT_SEED = 0
FOLDER_SPLIT_FRACTIONS = (0.6, 0.2, 0.2)
_SPLIT_ALIASES = {"train": ("train",), "val": ("val", "validation", "valid"), "test": ("test",)}
_GRAY_MODES = {"1", "L", "I", "I;16", "I;16B", "I;16L"}


def _subdirs(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _split_folders(root: pathlib.Path) -> dict[str, pathlib.Path]:
    """Split -> folder, for the pre-split layout (empty dict for the flat layout)."""
    names = {p.name: p for p in _subdirs(root)}
    found = {}
    for split, aliases in _SPLIT_ALIASES.items():
        hits = [names[a] for a in aliases if a in names]
        if len(hits) > 1:
            raise ValueError(
                f"image folder {str(root)!r} has several folders for split {split!r}: {hits}"
            )
        if hits:
            found[split] = hits[0]
    if found and set(names) - {a for aliases in _SPLIT_ALIASES.values() for a in aliases}:
        raise ValueError(
            f"image folder {str(root)!r} mixes split folders {sorted(found)} with other folders "
            f"{sorted(set(names) - {p.name for p in found.values()})}; use either "
            "ROOT/{train,val,test}/CLASS/ or ROOT/CLASS/"
        )
    return found


def _read_image(path: pathlib.Path, rgb: bool) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            if rgb:
                return to_float_image(np.asarray(img.convert("RGB")))
            if img.mode.startswith("I"):  # 16-bit gray (PIL may also report 32-bit "I")
                raw = np.asarray(img)
                if raw.min() < 0 or raw.max() > 65535:
                    raise ValueError(f"{str(path)!r}: values outside 0..65535")
                return to_float_image(raw.astype(np.uint16))
            return to_float_image(np.asarray(img.convert("L")))
    except OSError as err:
        raise ValueError(f"cannot read image {str(path)!r}: {err}") from None


def _probe(path: pathlib.Path) -> tuple[bool, tuple[int, int]]:
    """(is gray, (width, height)) of an image file, from its header (palettes are looked at)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            gray = img.mode in _GRAY_MODES or (img.mode == "P" and _palette_is_gray(img))
            return gray, img.size
    except OSError as err:
        raise ValueError(f"cannot read image {str(path)!r}: {err}") from None


def _palette_is_gray(img: object) -> bool:
    rgb = np.asarray(img.convert("RGB"))  # type: ignore[attr-defined]
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def _read_all(files: list[pathlib.Path], rgb: bool, example: pathlib.Path) -> np.ndarray:
    images = [_read_image(f, rgb) for f in files]
    if not images:
        return np.zeros((0, *_read_image(example, rgb).shape), np.float32)
    return np.stack(images)


def list_folder(
    root: str | os.PathLike, *, split: str = "train"
) -> tuple[list[pathlib.Path], np.ndarray, tuple[str, ...], bool]:
    """The files of one split of an image folder, without reading their pixels.

    Returns:
      `(files, labels, class_names, rgb)`: the split's image files in `load_folder`'s order,
      their int32 labels, the class names, and whether images are read as RGB (any colour
      image in the folder) or gray. Raises as `load_folder` does.
    """
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"`root` must be a str or path, got {type(root).__name__}")
    check_split(check_str(split, "split"))
    path = pathlib.Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"image folder {str(path)!r} does not exist or is not a folder")
    folders = _split_folders(path)
    if folders:
        if split not in folders:
            raise ValueError(
                f"split {split!r} has no folder in {str(path)!r}; allowed splits here: "
                f"{[s for s in SPLITS if s in folders]}"
            )
        class_names = sorted({c.name for f in folders.values() for c in _subdirs(f)})
        every = [
            f for folder in folders.values() for c in _subdirs(folder) for f in _image_files(c)
        ]
        files, labels = [], []
        for k, cls in enumerate(class_names):
            cls_dir = folders[split] / cls
            chosen = _image_files(cls_dir) if cls_dir.is_dir() else []
            files += chosen
            labels += [k] * len(chosen)
    else:
        class_dirs = _subdirs(path)
        class_names = [c.name for c in class_dirs]
        per_class = [_image_files(c) for c in class_dirs]
        every = [f for fs in per_class for f in fs]
        all_labels = np.asarray([k for k, fs in enumerate(per_class) for _ in fs], np.int64)
        parts = stratified_split_indices(all_labels, FOLDER_SPLIT_FRACTIONS, seed=FOLDER_SPLIT_SEED)
        idx = parts[SPLITS.index(split)]
        files = [every[i] for i in idx]
        labels = all_labels[idx].tolist()
    if not class_names:
        raise ValueError(
            f"image folder {str(path)!r} has no class sub-folders; expected ROOT/CLASS/*.png "
            "or ROOT/{train,val,test}/CLASS/*.png"
        )
    if not every:
        raise ValueError(
            f"image folder {str(path)!r} has no images ({', '.join(IMAGE_EXTENSIONS)})"
        )
    probes = [_probe(f) for f in every]
    sizes = {size: f for f, (_, size) in zip(every, probes)}
    if len(sizes) > 1:
        (size_a, file_a), (size_b, file_b) = list(sizes.items())[:2]
        raise ValueError(
            f"images in {str(path)!r} differ in size (width, height): {str(file_a)!r} is "
            f"{size_a} but {str(file_b)!r} is {size_b}; resize them to one size first"
        )
    rgb = not all(gray for gray, _ in probes)
    return files, np.asarray(labels, dtype=np.int32), tuple(class_names), rgb


def read_image(path: str | os.PathLike, rgb: bool) -> np.ndarray:
    """One image file as float32 (H, W, C) in [0, 1], C = 3 when `rgb` else 1."""
    return _read_image(pathlib.Path(path), rgb)


def load_folder(root: str | os.PathLike, *, split: str = "train") -> Dataset:
    """Loads one split of an image folder (one sub-folder per class) into memory.

    Args:
      root: the folder; layout ROOT/{train,val,test}/CLASS/*.png or ROOT/CLASS/*.png (see the
        module docstring for the split rule of the flat layout).
      split: "train", "val" or "test".

    Returns:
      `Dataset` named "folder:ROOT:SPLIT", images float32 (N, H, W, C) in [0, 1] with C = 1
      (all gray) or 3, labels int32 (N,) in [0, num_classes), class names = sorted sub-folder
      names. In the flat layout examples are in the split's (seeded) order; in the pre-split
      layout by class, then file name.

    Raises:
      FileNotFoundError: if `root` is not a folder. ValueError: no classes or images, a split
      missing in the pre-split layout, mixed image sizes, unreadable files.
    """
    files, labels, class_names, rgb = list_folder(root, split=split)
    example = files[0] if files else _first_image(pathlib.Path(root).expanduser())
    return Dataset(
        images=_read_all(files, rgb, example),
        labels=labels,
        num_classes=len(class_names),
        class_names=class_names,
        name=f"folder:{root}:{split}",
    )


def _first_image(path: pathlib.Path) -> pathlib.Path:
    return next(f for d in path.rglob("*") if d.is_dir() for f in _image_files(d))
