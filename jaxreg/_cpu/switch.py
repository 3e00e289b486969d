"""The switch of jaxreg's XLA:CPU workarounds: `JAXREG_CPU_WORKAROUNDS`, `JAXREG_NATIVE`."""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

__all__ = []  # private module

ENV = "JAXREG_CPU_WORKAROUNDS"  # everything in jaxreg._cpu
NATIVE_ENV = "JAXREG_NATIVE"  # the native warp kernel only

_ON = ("1", "true", "on", "yes")
_OFF = ("0", "false", "off", "no")

# Set by `workarounds(on)` for the code it wraps; None: the environment decides.
_OVERRIDE: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
    "jaxreg_cpu_workarounds", default=None
)


def env_flag(name: str, default: bool) -> bool:
    """The on/off environment variable `name` (unset or empty: `default`).

    Raises:
      ValueError: a value other than 1/true/on/yes or 0/false/off/no.
    """
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise ValueError(
        f"{name} must be one of {', '.join(_ON)} (on) or {', '.join(_OFF)} (off); "
        f"got {os.environ[name]!r}."
    )


def enabled() -> bool:
    """True unless `JAXREG_CPU_WORKAROUNDS` (or an enclosing `workarounds(False)`) turns them off.

    Raises:
      ValueError: `JAXREG_CPU_WORKAROUNDS` has an unknown value.
    """
    override = _OVERRIDE.get()
    return env_flag(ENV, True) if override is None else override


def native_enabled() -> bool:
    """True when the native warp kernel may be used: the workarounds on and `JAXREG_NATIVE` on."""
    return enabled() and env_flag(NATIVE_ENV, True)


def why_native_off() -> str:
    """Which switch turns the native kernel off (empty when none does)."""
    if _OVERRIDE.get() is False:
        return "disabled by jaxreg._cpu.workarounds(False)"
    if not enabled():
        return f"disabled by {ENV}=0"
    if not env_flag(NATIVE_ENV, True):
        return f"disabled by {NATIVE_ENV}=0"
    return ""


@contextlib.contextmanager
def workarounds(on: bool) -> Iterator[None]:
    """Turns the workarounds on or off for programs traced and lowered inside the block.

    Overrides `JAXREG_CPU_WORKAROUNDS` in this thread (and its async context) only; for
    benchmarks and tests that compare both paths in one process. Functions jitted before the
    block keep the path they were compiled with.
    """
    token = _OVERRIDE.set(bool(on))
    try:
        yield
    finally:
        _OVERRIDE.reset(token)
