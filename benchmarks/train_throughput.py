"""Training images/s: CNN on mnist5k and ResNet-20 on 32x32 colour, augmentation on/off, 1 vs 8 devices.

Run: `.venv/bin/python benchmarks/train_throughput.py [--train-size 1024] [--batch-size 128]
[--repeats 2] [--devices 1,8] [--models cnn,resnet20] [--loops scan,stream]`

What is timed: the epoch the training loop runs, with the batch sharded over a
`jaxreg.train.parallel` mesh, the state replicated, BatchNorm on, Adam, on the first
`--train-size` training images: `scan` is the in-memory `lax.scan` epoch (`make_train_epoch`),
`stream` reads the same images through grain a batch at a time (`make_stream_epoch`, 8
reading threads, 2 batches prefetched) into the same jitted step. Rows:

- `cnn / mnist5k`: the default CNN on 28x28x1 MNIST digits; "full" augmentation is the
  `digits` policy (rotate, scale, shift: one bilinear warp) plus `mixup_or_cutmix`.
- `resnet20 / textures`: ResNet-20 on the 32x32x3 `textures` crops; "full" is the `cifar`
  policy (pad 4 + random crop + flip) plus `mixup_or_cutmix`.

Devices: each count runs in a process of its own. On a CPU, "8" is 8 host devices forced
with `XLA_FLAGS=--xla_force_host_platform_device_count=8` (they share the machine's cores: the
column shows what data parallel costs or saves on one CPU, not 8 machines); on a GPU/TPU host,
N of its accelerators (a count larger than the devices present is reported as skipped).
Images/s is the best of `--repeats` epochs after the compile epoch; "aug cost" is the step
time with full augmentation over the step time without, minus 1. Compare ratios, not absolute
numbers: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

AUG = {"cnn": "digits", "resnet20": "cifar"}
DATA = {"cnn": "mnist5k", "resnet20": "textures"}
MIX = "mixup_or_cutmix"


def measure(
    n_devices: int,
    models: list[str],
    train_size: int,
    batch_size: int,
    repeats: int,
    loops: list[str],
):
    """In this process: images/s for each model x {none, full} x loop on `n_devices` devices.

    The variants of one model are compiled first, then timed in turns (none, full, none, ...)
    so that a change of load on a shared machine hits them alike; the best epoch counts.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from jaxreg import _cpu, data
    from jaxreg import models as models_lib
    from jaxreg.data.stream import ArraySource
    from jaxreg.train import parallel
    from jaxreg.train.loop import resolve_augment, resolve_mix
    from jaxreg.train.state import TrainState
    from jaxreg.train.step import make_train_epoch
    from jaxreg.train.streaming import make_stream_epoch
    from jaxreg.train.tasks import Classification

    if n_devices > jax.device_count():
        return {"skipped": f"{jax.device_count()} {jax.default_backend()} device(s) here"}
    mesh = parallel.make_mesh(n_devices)
    out = {"backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind}

    def run(epoch, st, x, y, e):
        t0 = time.perf_counter()
        st, m = epoch(st, x, y, jnp.int32(e))
        jax.block_until_ready(m)
        return st, m, time.perf_counter() - t0

    for name in models:
        train = data.load_splits(DATA[name])["train"]
        reps = -(-train_size // len(train))
        x_host = np.concatenate([train.images] * reps)[:train_size]
        y_host = np.concatenate([train.labels] * reps)[:train_size].astype(np.int32)
        x, y = parallel.replicate((x_host, y_host), mesh)
        variants = {}
        for loop in loops:
            for aug in ("none", "full"):
                task = Classification(
                    num_classes=train.num_classes,
                    augment=resolve_augment(AUG[name] if aug == "full" else None),
                    mix=resolve_mix(MIX if aug == "full" else None),
                )
                net = models_lib.create(
                    name,
                    num_classes=train.num_classes,
                    input_shape=train.images.shape[1:],
                    batch_norm=True,
                )
                st = parallel.replicate(
                    TrainState.create(net, optax.adam(1e-3), key=jax.random.key(0)), mesh
                )
                if loop == "scan":
                    epoch = make_train_epoch(
                        batch_size=batch_size,
                        task=task,
                        batch_sharding=parallel.batch_sharding(mesh),
                    )
                else:
                    epoch = make_stream_epoch(
                        source=ArraySource(x_host, y_host),
                        batch_size=batch_size,
                        task=task,
                        mesh=mesh,
                    )
                st, m, first = run(epoch, st, x, y, 0)  # compile + one epoch
                variants[f"{name}/{aug}/{loop}"] = [epoch, st, first, float("inf"), m]
        for e in range(1, repeats + 1):
            for v in variants.values():
                v[1], v[4], dt = run(v[0], v[1], x, y, e)
                v[3] = min(v[3], dt)
        steps = train_size // batch_size
        for key, (_, _, first, best, m) in variants.items():
            out[key] = {
                "images_per_s": steps * batch_size / best,
                "step_ms": 1000 * best / steps,
                "first_epoch_s": first,
                "loss": float(np.mean(np.asarray(m["loss"]))),
            }
            print(f"  [{n_devices} device(s)] {key}: {out[key]}", flush=True)
    out["cpu_paths"] = _cpu.status()
    return out


def _child(n: int, args) -> dict:
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")  # this checkout's jaxreg
    if n > 1:
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n}"
        ).strip()
    cmd = [
        sys.executable,
        __file__,
        "--child",
        str(n),
        "--models",
        args.models,
        "--train-size",
        str(args.train_size),
        "--batch-size",
        str(args.batch_size),
        "--repeats",
        str(args.repeats),
        "--loops",
        args.loops,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    sys.stderr.write(proc.stdout.split("RESULT ")[0])
    if proc.returncode != 0:
        return {"skipped": f"failed: {proc.stderr.strip().splitlines()[-1:]}"}
    return json.loads(proc.stdout.split("RESULT ", 1)[1])


def table(results: dict[int, dict], models: list[str], loops: list[str]) -> str:
    """The markdown table: one row per model x augmentation x loop, one column per device count."""
    counts = sorted(results)
    head = "| model / data | augmentation | loop | " + " | ".join(
        f"{n} device{'s' if n > 1 else ''}: images/s (step ms)" for n in counts
    )
    head += " | " + " | ".join(f"{n}: aug cost" for n in counts) + " |"
    lines = [head, "|" + " --- |" * (3 + 2 * len(counts))]
    for name in models:
        for loop in loops:
            for aug in ("none", "full"):
                cells, costs = [], []
                for n in counts:
                    r = results[n].get(f"{name}/{aug}/{loop}")
                    cells.append(
                        "skipped" if r is None else f"{r['images_per_s']:.0f} ({r['step_ms']:.1f})"
                    )
                    a = results[n].get(f"{name}/none/{loop}")
                    if aug == "none" or a is None or r is None:
                        costs.append("")
                    else:
                        costs.append(f"{r['step_ms'] / a['step_ms'] - 1:+.0%}")
                policy = "none" if aug == "none" else f"{AUG[name]} + {MIX}"
                row = f"| {name} / {DATA[name]} | {policy} | {loop} | "
                lines.append(row + " | ".join(cells + costs) + " |")
    return "\n".join(lines)


def main():
    """Runs one child process per device count and prints the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-size", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--devices", default="1,8")
    p.add_argument("--models", default="cnn,resnet20")
    p.add_argument("--loops", default="scan", help="scan and/or stream (grain), e.g. scan,stream")
    p.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    models = [m for m in args.models.split(",") if m]
    loops = [x for x in args.loops.split(",") if x]
    if args.child:
        r = measure(args.child, models, args.train_size, args.batch_size, args.repeats, loops)
        print("RESULT " + json.dumps(r))
        return
    results = {int(n): _child(int(n), args) for n in args.devices.split(",")}
    any_r = next((r for r in results.values() if "backend" in r), {})
    print(
        f"\nTraining throughput, {any_r.get('backend', '?')} ({any_r.get('device_kind', '?')}), "
        f"{args.train_size} images in memory, batch {args.batch_size}, BatchNorm on, Adam, "
        f"best of {args.repeats} epochs after the compile epoch\n"
    )
    print(table(results, models, loops))
    for n, r in results.items():
        if "skipped" in r:
            print(f"\n{n} devices: skipped ({r['skipped']})")
        elif "cpu_paths" in r:
            paths = r["cpu_paths"]
            print(
                f"\n{n} device(s): native warp {paths['native_warp']}; "
                f"sharded programs: {paths['sharded_warp']}"
            )


if __name__ == "__main__":
    main()
