"""The batched bilinear warp as a primitive whose CPU lowering calls the native kernel.

`bilinear_warp(xla, ...)` computes `xla(images, ms, fillv, out_hw=..., mode=...)` (the XLA form,
`jaxreg.augment._warp.apply_batch_xla`). For float32 images, with the workarounds on, it binds
the primitive `jaxreg_bilinear_warp`: lowered for the CPU, that is the custom call of
`warp_native.cc` when `native.warp_target()` has the kernel, else the XLA form; lowered for any
other platform, always the XLA form. Derivatives (JVP, hence also VJP) always come from the XLA
form.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.core import ShapedArray
from jax.extend.core import Primitive
from jax.interpreters import batching, mlir

from jaxreg._cpu import native, switch

__all__ = []  # private module

XlaWarp = Callable[..., jax.Array]  # (images, ms, fillv, *, out_hw, mode) -> images


def bilinear_warp(
    xla: XlaWarp,
    images: jax.Array,
    ms: jax.Array,
    fillv: jax.Array,
    *,
    out_hw: tuple[int, int],
    mode: str,
    native_kernel: bool | None = None,
) -> jax.Array:
    """`xla(images, ms, fillv, out_hw=out_hw, mode=mode)`, on the CPU by the native kernel.

    Args:
      xla: the XLA form of the warp (a module-level function: it is a primitive parameter).
      images: (B, H, W, C) floating images.
      ms: (B, 3, 3) float32 output-to-input maps.
      fillv: (C,) fill values of the images' dtype.
      out_hw: static output size (Ho, Wo).
      mode: border rule, a key of `native.MODES`.
      native_kernel: None uses the native kernel on the CPU when it is available; False
        always uses `xla`; True requires the kernel (RuntimeError when the program is lowered
        for the CPU and the kernel is not available, or at once for non-float32 images or
        with the workarounds off).

    Returns:
      (B, Ho, Wo, C) images of the input's dtype.

    Raises:
      RuntimeError: `native_kernel=True` and the native kernel cannot be used.
    """
    out_hw = tuple(int(n) for n in out_hw)
    if native_kernel is False:
        return xla(images, ms, fillv, out_hw=out_hw, mode=mode)
    if images.dtype != jnp.float32:
        if native_kernel:
            raise RuntimeError(
                f"native=True but the native warp handles float32 images only, not {images.dtype}."
            )
        return xla(images, ms, fillv, out_hw=out_hw, mode=mode)
    if not switch.enabled():
        if native_kernel:
            raise RuntimeError(
                f"native=True but the native warp is off ({switch.why_native_off()})."
            )
        return xla(images, ms, fillv, out_hw=out_hw, mode=mode)
    return _warp_with_xla_derivatives(xla, images, ms, fillv, out_hw, mode, bool(native_kernel))


def _warp_with_xla_derivatives(xla, images, ms, fillv, out_hw, mode, require_native):
    """`warp_p` whose derivatives (JVP, hence also VJP) are those of `xla`."""
    xla_fn = functools.partial(xla, out_hw=out_hw, mode=mode)
    params = {"xla": xla, "out_hw": out_hw, "mode": mode, "require_native": require_native}

    @jax.custom_jvp
    def warp(x, m, f):
        return warp_p.bind(x, m, f, **params)

    @warp.defjvp
    def warp_jvp(primals, tangents):
        _, tangent_out = jax.jvp(xla_fn, primals, tangents)
        return warp(*primals), tangent_out

    return warp(images, ms, fillv)


# The batched bilinear warp as one primitive: operands (images (B, H, W, C) float32, maps
# (B, 3, 3), fill (C,)), parameters xla (the XLA form), out_hw, mode and require_native.
# Lowered for the CPU it asks `native.warp_target` (which builds the kernel the first time);
# lowered for any other platform it is `xla`, so GPU/TPU lowering and export never build it.
warp_p = Primitive("jaxreg_bilinear_warp")


def _warp_abstract_eval(images, ms, fillv, *, xla, out_hw, mode, require_native):
    del ms, fillv, xla, mode, require_native
    return ShapedArray((images.shape[0], *out_hw, images.shape[3]), images.dtype)


def _warp_eager(images, ms, fillv, **params):
    return jax.jit(functools.partial(warp_p.bind, **params))(images, ms, fillv)


def _xla_lowering(ctx, images, ms, fillv, *, xla, out_hw, mode, require_native):
    del require_native
    fn = functools.partial(xla, out_hw=out_hw, mode=mode)
    if partitioned_devices(ctx) > 1:
        # The XLA form gathers from the whole batch as one array of pixels, which XLA can only
        # partition by first all-gathering the batch on every device. Per example (vmapped),
        # the gather has the batch as an explicit batching dimension and stays on its shard.
        whole = fn

        def fn(images, ms, fillv):
            one = lambda x, m: whole(x[None], m[None], fillv)[0]
            return jax.vmap(one)(images, ms)

    return mlir.lower_fun(fn, multiple_results=False)(ctx, images, ms, fillv)


def _native_call(images, ms, fillv, *, target, out_hw, mode, threads, huge_pages):
    """The custom call of `warp_native.cc` (operands and attributes as documented there)."""
    b, h, w, c = images.shape
    if h == 1 or w == 1:  # the kernel reads two taps per axis, as the XLA form pads them
        images = jnp.pad(images, [(0, 0), (0, int(h == 1)), (0, int(w == 1)), (0, 0)], "edge")
    call = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct((b, *out_hw, c), jnp.float32))
    return call(
        images,
        ms[:, :2, :].reshape(b, 6).astype(jnp.float32),
        fillv.reshape(c),
        mode=np.int64(native.MODES[mode]),
        in_h=np.int64(h),
        in_w=np.int64(w),
        threads=np.int64(threads),
        huge_pages=np.int64(huge_pages),
    )


def partitioned_devices(ctx) -> int:
    """Over how many devices XLA's SPMD partitioner splits the program being lowered.

    1 for an ordinary single-device program and inside a `shard_map` whose mesh axes are all
    manual (each device runs its own shard's program); n for a `jax.jit` over n devices.
    """
    ac = ctx.module_context.axis_context
    n = getattr(ac, "num_devices", None)  # ShardingContext: jit with shardings
    if n is not None:
        return int(n)
    mesh = getattr(ac, "mesh", None)  # SPMDAxisContext: shard_map; manual axes run per shard
    if mesh is not None:
        manual = getattr(ac, "manual_axes", frozenset())
        return int(np.prod([mesh.shape[a] for a in mesh.axis_names if a not in manual] or [1]))
    return 1


# Lowerings that took the XLA form because the program is partitioned over several devices
# (the most devices seen, 0 when none): `jaxreg._cpu.status()` reports it.
_SHARDED = {"devices": 0}


def sharded_status() -> str:
    """The warp's path in CPU programs partitioned over several devices, for `status()`."""
    n = _SHARDED["devices"]
    if not n:
        return "not used"
    return (
        f"xla (programs partitioned over up to {n} devices: XLA cannot partition the custom call)"
    )


def _cpu_lowering(ctx, images, ms, fillv, *, xla, out_hw, mode, require_native):
    devices = partitioned_devices(ctx)
    if devices > 1:
        # XLA cannot partition a custom call: it would gather the whole batch and run the
        # kernel on it on every device. The XLA form partitions along the batch.
        if require_native:
            raise RuntimeError(
                f"native=True but this program is partitioned over {devices} devices, and "
                "XLA cannot partition the native warp's custom call (run it in a shard_map)."
            )
        _SHARDED["devices"] = max(_SHARDED["devices"], devices)
        return _xla_lowering(
            ctx, images, ms, fillv, xla=xla, out_hw=out_hw, mode=mode, require_native=False
        )
    target = native.warp_target()  # builds, verifies and registers the kernel the first time
    if target is None:
        if require_native:
            raise RuntimeError(
                "native=True but the native warp is not available: "
                f"{native.native_status()['warp']} (see the RuntimeWarning, if any)."
            )
        return _xla_lowering(
            ctx, images, ms, fillv, xla=xla, out_hw=out_hw, mode=mode, require_native=False
        )
    call = functools.partial(
        _native_call,
        target=target,
        out_hw=out_hw,
        mode=mode,
        threads=native.threads(),
        huge_pages=native.huge_pages(),
    )
    return mlir.lower_fun(call, multiple_results=False)(ctx, images, ms, fillv)


def _leading(x, dim, size):
    """`x` with its vmapped axis `dim` first (broadcast to `size` when it has none)."""
    if dim is None:
        return jnp.broadcast_to(x, (size, *x.shape))
    return jnp.moveaxis(x, dim, 0)


def _warp_batch(args, dims, **params):
    """Batching (vmap) rule: the vmapped axis folds into the batch axis (one call for all of it)."""
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    images, ms = _leading(args[0], dims[0], size), _leading(args[1], dims[1], size)
    fillv = args[2]
    if dims[2] is not None:  # one fill per vmapped element: one call per element
        fills = jnp.moveaxis(fillv, dims[2], 0)
        return lax.map(lambda a: warp_p.bind(*a, **params), (images, ms, fills)), 0
    n, b = images.shape[:2]
    out = warp_p.bind(
        images.reshape(n * b, *images.shape[2:]), ms.reshape(n * b, 3, 3), fillv, **params
    )
    return out.reshape(n, b, *out.shape[1:]), 0


warp_p.def_abstract_eval(_warp_abstract_eval)
warp_p.def_impl(_warp_eager)
mlir.register_lowering(warp_p, _xla_lowering)
mlir.register_lowering(warp_p, _cpu_lowering, platform="cpu")
batching.primitive_batchers[warp_p] = _warp_batch
