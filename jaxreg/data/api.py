"""Entry points by name: `load`, `load_splits`, `list_datasets` (built-in, TFDS, folders)."""

from __future__ import annotations

from collections.abc import Sequence

from jaxreg.data.builtin import BUILTIN
from jaxreg.data.dataset import SPLITS, Dataset, check_str
from jaxreg.data.folder import load_folder
from jaxreg.data.tfds import load_tfds

TFDS_PREFIX = "tfds:"
FOLDER_PREFIX = "folder:"


def _unknown(name: str) -> ValueError:
    return ValueError(
        f"unknown data set {name!r}; allowed: built-in {sorted(BUILTIN)}, "
        f"'{TFDS_PREFIX}NAME[/CONFIG][:VERSION]' (a prepared TFDS data set) or "
        f"'{FOLDER_PREFIX}/path/to/root' (an image folder, one sub-folder per class)"
    )


def list_datasets() -> dict[str, str]:
    """Names `load` understands, each with a one-line description.

    Returns:
      Built-in name -> description, plus two pattern entries, "tfds:NAME" and "folder:PATH",
      that describe the prefixes (they are not loadable names themselves).
    """
    out = {name: description for name, (_, description) in BUILTIN.items()}
    out[f"{TFDS_PREFIX}NAME"] = (
        "a TFDS data set prepared offline as array_record in data_dir "
        "(NAME[/CONFIG][:X.Y.Z]); never downloads"
    )
    out[f"{FOLDER_PREFIX}PATH"] = (
        "an image folder PATH/CLASS/*.png (split 60/20/20 here) or "
        "PATH/{train,val,test}/CLASS/*.png"
    )
    return out


def load(name: str, *, split: str = "train", data_dir: str | None = None) -> Dataset:
    """Loads one split of a data set into host memory.

    Args:
      name: a built-in name ("mnist5k", "digits", "textures"; see `list_datasets`),
        "tfds:NAME[/CONFIG][:X.Y.Z]" or "folder:/path/to/root".
      split: "train", "val" or "test" (TFDS also takes its own split names and expressions).
      data_dir: TFDS data directory (only for "tfds:"; default `$TFDS_DATA_DIR` or
        `~/tensorflow_datasets`).

    Returns:
      `Dataset`: images float32 (N, H, W, C) in [0, 1], labels int32 (N,) in [0, num_classes).

    Raises:
      TypeError: if an argument has the wrong type.
      ValueError: on an unknown name or split (naming the allowed ones).
      FileNotFoundError: for a TFDS data set that is not prepared, or a missing folder.
    """
    check_str(name, "name")
    check_str(split, "split")
    if data_dir is not None and not isinstance(data_dir, str):
        import os

        if not isinstance(data_dir, os.PathLike):
            raise TypeError(f"`data_dir` must be a str or path, got {type(data_dir).__name__}")
    if name.startswith(TFDS_PREFIX):
        return load_tfds(name[len(TFDS_PREFIX) :], split=split, data_dir=data_dir)
    if data_dir is not None:
        raise ValueError(f"`data_dir` is only used by 'tfds:' data sets, got it for {name!r}")
    if name.startswith(FOLDER_PREFIX):
        root = name[len(FOLDER_PREFIX) :]
        if not root:
            raise ValueError("'folder:' needs a path, e.g. 'folder:/data/my_images'")
        return load_folder(root, split=split)
    if name in BUILTIN:
        return BUILTIN[name][0](split)
    raise _unknown(name)


def load_splits(
    name: str, *, splits: Sequence[str] = SPLITS, data_dir: str | None = None
) -> dict[str, Dataset]:
    """Loads several splits of one data set.

    Args:
      name: as for `load`.
      splits: split names; default ("train", "val", "test").
      data_dir: as for `load`.

    Returns:
      split name -> `Dataset`, in the order of `splits`.
    """
    if isinstance(splits, str) or not all(isinstance(s, str) for s in splits):
        raise TypeError(f"`splits` must be a sequence of str, got {splits!r}")
    return {split: load(name, split=split, data_dir=data_dir) for split in splits}
