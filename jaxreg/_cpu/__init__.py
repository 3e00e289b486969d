"""Everything jaxreg does only because of XLA:CPU: one seam, one switch, off GPU/TPU.

Each piece replaces a computation that XLA:CPU runs slowly by one with the same result:

- `warp` (with `native` and `warp_native.cc`): XLA:CPU runs a gather as a scalar loop with
  index arithmetic per element, so a batched bilinear warp (rotations, shears) is, on the CPU,
  an XLA FFI custom call of a small C++ kernel that `native` builds, verifies and loads.
- `conv`: inside a loop body (`lax.scan`) XLA:CPU loses its fast convolution weight-gradient
  kernel (jax-ml/jax#12868) and runs the convolution JAX's transpose rule emits for the input
  gradient (kernel layout `01oi`) off its fast path; the CPU backward rule computes the weight
  gradient as a patch matrix times the output gradient and the input gradient as one HWIO
  convolution.
- `pool`: XLA:CPU's `select_and_scatter` (the gradient of a max `reduce_window`) is slow; the
  CPU backward of 2x2 max pooling is one broadcast select from the first-max positions.
- `fence`: XLA fuses a computation into each consumer and recomputes it per value read;
  `fence.fence(fn, *args)` (each stage of `jaxreg.augment.batch`) runs `fn` behind an
  always-true conditional on the CPU, which makes XLA materialise its result once.

How results compare: the same arithmetic, so the same values to float rounding. The pooling
and the fences give bit-identical values and gradients; the conv weight gradient sums in another
order; the native warp differs from XLA's by ~1e-6 (multiply-add contraction), and its
derivatives are always XLA's.

Where it runs: only in programs lowered for the CPU. `conv`, `pool` and `fence` choose per
lowering platform (`lax.platform_dependent`) and the warp primitive has a CPU lowering rule,
so programs lowered for GPU or TPU contain none of it (no benchmark shows it helps there).

The switch: `JAXREG_CPU_WORKAROUNDS` ("1"/"true"/"on"/"yes", default on; "0"/"false"/"off"/
"no" off; anything else raises ValueError) turns all of it off: plain XLA everywhere, no
native kernel built or loaded. `JAXREG_NATIVE=0` is the narrower switch for the native kernel
only (the rest stays on), e.g. for `jax.export` of CPU programs, which refuses the kernel's
custom call. Both are read when a program is traced and lowered: functions already compiled
keep the path they were compiled with. `workarounds(on)` overrides `JAXREG_CPU_WORKAROUNDS`
for a block of code (benchmarks, tests). The native kernel's settings (`JAXREG_HUGE_PAGES`,
`JAXREG_CACHE_DIR`, `JAXREG_NATIVE_BUILD_TIMEOUT`, `CXX`) are described in `native`.

`status()` says which paths this process took; `train_and_evaluate` records it in the run's
`results.json` (`cpu_paths`) and report. Measurements: benchmarks/results/cpu_seam.md.
"""

from __future__ import annotations

import jax

from jaxreg._cpu import conv, fence, native, pool, switch, warp
from jaxreg._cpu.conv import conv2d
from jaxreg._cpu.native import native_status
from jaxreg._cpu.pool import max_pool_2x2
from jaxreg._cpu.switch import ENV, enabled, workarounds

__all__ = [
    "conv",
    "conv2d",
    "enabled",
    "fence",
    "max_pool_2x2",
    "native",
    "native_status",
    "pool",
    "status",
    "summary",
    "switch",
    "warp",
    "workarounds",
]


def status() -> dict[str, str]:
    """Which XLA:CPU paths this process's programs took, for a run's results and report.

    Returns:
      `{"platform", "switch", "workarounds", "native_warp", "sharded_warp"}`: the default backend
      ("cpu", "gpu", "tpu"); `JAXREG_CPU_WORKAROUNDS` as read now ("on" or "off"); "used"
      (CPU with the switch on), "not used (JAXREG_CPU_WORKAROUNDS=0)" or "not used (platform
      gpu)"; and the batched bilinear warp's path on the CPU, from `native.native_status()`:
      "native", "xla (<why>)", or "not used" (no CPU program with a float32 batched bilinear
      warp was lowered).; and its path in CPU programs
      partitioned over several devices ("not used", or "xla (...)": XLA cannot partition the
      custom call, so sharded programs take the XLA form)

    Raises:
      ValueError: `JAXREG_CPU_WORKAROUNDS` has an unknown value.
    """
    platform = jax.default_backend()
    on = enabled()
    if platform != "cpu":
        used = f"not used (platform {platform})"
    elif not on:
        used = f"not used ({ENV}=0)"
    else:
        used = "used"
    warp = native.native_status()["warp"]
    from jaxreg._cpu import warp as _warp

    return {
        "platform": platform,
        "switch": "on" if on else "off",
        "workarounds": used,
        "native_warp": "not used" if warp == "not used yet" else warp,
        "sharded_warp": _warp.sharded_status(),
    }


def summary(st: dict[str, str] | None = None) -> str:
    """One line for a report: `status()` (or `st`) in words."""
    st = status() if st is None else st
    line = f"XLA:CPU workarounds (jaxreg._cpu, {ENV}): {st['workarounds']}"
    if st["workarounds"] == "used":
        line += f"; batched bilinear warp: {st['native_warp']}"
        if st.get("sharded_warp", "not used") != "not used":
            line += f"; in sharded programs: {st['sharded_warp']}"
    return line + "."
