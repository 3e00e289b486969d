"""Workdirs: one run at a time (an exclusive lock), a marker that says jaxreg made it, `--fresh`.

A workdir is what `train_and_evaluate` or an experiment writes into. Two files of jaxreg's own
live at its top:

- `.jaxreg-workdir`, the marker: written when jaxreg creates the folder, or finds it empty.
  Only a folder holding it is ever emptied by `fresh` (the CLI's `--fresh`), so a mistyped
  `--workdir` pointing at the user's own files is refused, not deleted.
- `.jaxreg.lock`, the lock: held (`fcntl.flock`, exclusive) for the life of a run; it names
  the process holding it. A second run on the same workdir fails at once saying which
  process holds it. `fresh` never deletes it, so a run that waits on the lock and one that
  empties the folder cannot race. The operating system releases the lock when the process
  ends, also after a kill.

Inside one process the lock is re-entrant (an experiment locks its workdir, and its runs lock
their own sub-folders; the CLI locks a workdir before `--fresh` and then calls the run, which
locks it again): the process keeps a count per folder, the one piece of process-wide state
here, because `flock` locks belong to open files, not processes.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LOCK_FILE", "MARKER_FILE", "WorkdirBusyError", "fresh", "is_jaxreg_workdir", "lock"]

MARKER_FILE = ".jaxreg-workdir"
LOCK_FILE = ".jaxreg.lock"
_OWN = (MARKER_FILE, LOCK_FILE)

_HELD: dict[str, list] = {}  # realpath -> [fd, count]: this process's locks (re-entrant)
_HELD_LOCK = threading.Lock()


class WorkdirBusyError(RuntimeError):
    """Another process is running in this workdir (it holds the workdir's lock)."""


def _write_marker(workdir: Path) -> None:
    info = {
        "created_by": "jaxreg",
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    tmp = workdir / (MARKER_FILE + ".tmp")
    tmp.write_text(json.dumps(info) + "\n")
    os.replace(tmp, workdir / MARKER_FILE)


def is_jaxreg_workdir(workdir: str | os.PathLike) -> bool:
    """Whether `workdir` holds jaxreg's marker (jaxreg created it, or found it empty)."""
    return (Path(workdir) / MARKER_FILE).is_file()


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    return (
        f"process {info.get('pid', '?')} on {info.get('host', '?')} "
        f"(since {info.get('since', '?')}: {info.get('argv', '')})"
    )


def _acquire(workdir: Path) -> int:
    import fcntl

    path = workdir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise WorkdirBusyError(
            f"workdir {workdir} is in use by {_holder(path)}; wait for that run to end or "
            "choose another --workdir"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    import sys

    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.datetime.now().isoformat(timespec="seconds"),
        "argv": " ".join(sys.argv)[:300],
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    return fd


@contextlib.contextmanager
def lock(workdir: str | os.PathLike) -> Iterator[Path]:
    """Holds the exclusive lock of `workdir` for the `with` block; creates the folder if needed.

    The folder gets jaxreg's marker when this call creates it or finds it empty, so that
    `fresh` may later empty it. Re-entrant within one process.

    Args:
      workdir: the run's or experiment's output folder.

    Yields:
      `workdir` as an absolute `Path`.

    Raises:
      WorkdirBusyError: another process holds the lock (the message names it).
      OSError: the folder cannot be created or is not a directory.
    """
    workdir = Path(workdir).absolute()
    if workdir.exists() and not workdir.is_dir():
        raise NotADirectoryError(f"workdir {workdir} exists and is not a folder")
    created = not workdir.exists()
    workdir.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(workdir)
    with _HELD_LOCK:
        held = _HELD.get(key)
        if held is not None:
            held[1] += 1
        else:
            if os.name == "nt":  # no flock: one run per workdir is then up to the user
                fd = -1
            else:
                fd = _acquire(workdir)
            _HELD[key] = held = [fd, 1]
    try:
        if created or not [p for p in workdir.iterdir() if p.name not in _OWN]:
            if not is_jaxreg_workdir(workdir):
                _write_marker(workdir)
        yield workdir
    finally:
        with _HELD_LOCK:
            held[1] -= 1
            if held[1] == 0:
                del _HELD[key]
                if held[0] >= 0:
                    os.close(held[0])  # closing the file releases the flock


def holds_lock(workdir: str | os.PathLike) -> bool:
    """Whether this process holds the lock of `workdir` (inside a `lock` block)."""
    with _HELD_LOCK:
        return os.path.realpath(Path(workdir).absolute()) in _HELD


def fresh(workdir: str | os.PathLike) -> None:
    """Empties a workdir jaxreg made, keeping its lock and marker; call it while holding `lock`.

    Args:
      workdir: the folder to empty. A missing folder is left missing.

    Raises:
      ValueError: the folder lacks jaxreg's marker (it holds files jaxreg did not make), or
        this process does not hold its lock.
    """
    workdir = Path(workdir).absolute()
    if not workdir.exists():
        return
    if not holds_lock(workdir):
        raise ValueError(f"fresh({workdir}) needs the workdir's lock (call it inside lock())")
    others = [p for p in workdir.iterdir() if p.name not in _OWN]
    if not others:
        return
    if not is_jaxreg_workdir(workdir):
        shown = ", ".join(sorted(p.name for p in others)[:5])
        raise ValueError(
            f"--fresh deletes only folders jaxreg made, and {workdir} has no {MARKER_FILE} "
            f"marker (it holds {shown}{' ...' if len(others) > 5 else ''}); delete it yourself "
            "or choose another --workdir"
        )
    for p in others:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
