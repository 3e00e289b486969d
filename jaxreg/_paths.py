"""Private per-user folders for what jaxreg caches (compiled XLA programs, the native CPU kernel).

Whatever jaxreg later loads from a cache (a shared library, a compiled XLA executable) must
come from a folder that no other local user can write to: otherwise another user could plant
a file there and have it run in this process. So every cache folder is

- under the user's own cache root (`$XDG_CACHE_HOME/jaxreg`, else `~/.cache/jaxreg`), or a
  folder the user names in an environment variable;
- created with mode 0700, and used only when `lstat` says it is a real directory (not a
  symbolic link), owned by the current user, and not writable by group or others.

A folder that fails these checks is refused with `UnsafePathError` (nothing in it is read),
never repaired or reused.
"""

from __future__ import annotations

import os
import stat
import tempfile
import warnings
from pathlib import Path

__all__ = [
    "UnsafePathError",
    "cache_root",
    "check_private_dir",
    "check_private_file",
    "private_dir",
    "temp_private_dir",
    "xla_cache_dir",
]

XLA_CACHE_ENV = "JAXREG_XLA_CACHE"
_OFF = ("", "0", "off", "none", "false", "no")


class UnsafePathError(OSError):
    """A cache path another local user could control (wrong owner, open permissions, a link)."""


def _uid() -> int | None:
    return os.getuid() if hasattr(os, "getuid") else None  # None: no uids (Windows)


def _check(path: Path, *, want_dir: bool) -> os.stat_result:
    st = os.lstat(path)
    kind = "directory" if want_dir else "file"
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePathError(f"{path} is a symbolic link, not a {kind} of this user")
    if want_dir and not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(f"{path} is not a directory")
    if not want_dir and not stat.S_ISREG(st.st_mode):
        raise UnsafePathError(f"{path} is not a regular file")
    uid = _uid()
    if uid is not None and st.st_uid != uid:
        raise UnsafePathError(f"{path} is owned by uid {st.st_uid}, not by this user (uid {uid})")
    if uid is not None and st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafePathError(
            f"{path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
        )
    return st


def check_private_dir(path: str | os.PathLike) -> Path:
    """Returns `path` if it is a directory only this user can write to.

    Args:
      path: an existing directory.

    Returns:
      `path` as a `Path`.

    Raises:
      UnsafePathError: a symbolic link, not a directory, another owner, or group/world-writable.
      FileNotFoundError: it does not exist.
    """
    path = Path(path)
    _check(path, want_dir=True)
    return path


def check_private_file(path: str | os.PathLike) -> Path:
    """Returns `path` if it is a regular file (not a link) of this user that nobody else can write.

    Raises:
      UnsafePathError: a symbolic link, not a regular file, another owner, or group/world-writable.
      FileNotFoundError: it does not exist.
    """
    path = Path(path)
    _check(path, want_dir=False)
    return path


def private_dir(path: str | os.PathLike) -> Path:
    """Creates `path` (mode 0700, parents as needed) or accepts it if it is already private.

    Args:
      path: the folder; missing parents are created with the default permissions.

    Returns:
      `path` as an absolute `Path`, checked with `check_private_dir`.

    Raises:
      UnsafePathError: the folder exists but another user could write to it or it is a link.
      OSError: it cannot be created (e.g. a read-only home).
    """
    path = Path(path).expanduser().absolute()
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    return check_private_dir(path)


def cache_root() -> Path:
    """The user's cache folder for jaxreg: `$XDG_CACHE_HOME/jaxreg`, else `~/.cache/jaxreg`."""
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "jaxreg"


def temp_private_dir(name: str) -> Path:
    """A per-user folder in the system temporary directory: `<tmp>/jaxreg-<uid>/<name>`.

    The name is predictable, so a folder somebody else created first is refused
    (`UnsafePathError`), never used.

    Args:
      name: the sub-folder, e.g. "native".
    """
    uid = _uid()
    user = str(uid) if uid is not None else os.environ.get("USERNAME", "user")
    top = private_dir(Path(tempfile.gettempdir()) / f"jaxreg-{user}")
    return private_dir(top / name)


def xla_cache_dir() -> Path | None:
    """The private folder for JAX's persistent compilation cache, or None when it is off.

    `$JAXREG_XLA_CACHE` names the folder (`off` disables the cache); default
    `cache_root() / "xla"`. A folder that is not private (see the module docstring) is refused
    with one `RuntimeWarning` and the cache stays off: JAX loads compiled programs from it.
    """
    env = os.environ.get(XLA_CACHE_ENV)
    if env is not None and env.strip().lower() in _OFF:
        return None
    path = Path(env).expanduser() if env else cache_root() / "xla"
    try:
        return private_dir(path)
    except OSError as err:
        warnings.warn(
            f"jaxreg: not using {path} as the XLA compilation cache ({err}); compiling without "
            f"a persistent cache. Set {XLA_CACHE_ENV} to a folder of your own, or to off.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
