"""Command line: `jaxreg run|list|augment|report|predict|style` (also `python -m jaxreg`)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from ml_collections import ConfigDict

CACHE_ENV = "JAXREG_XLA_CACHE"
EXPERIMENTS_PACKAGE = "jaxreg.experiments"


def enable_compilation_cache() -> str | None:
    """Turns on JAX's persistent compilation cache for this `jaxreg` process.

    Experiments train the same program for several seeds and variants, and each
    `train_and_evaluate` call builds fresh jitted functions: with the cache, identical
    programs compile once (seconds each on a CPU). The folder is `$JAXREG_XLA_CACHE`
    (`off` disables it), default `~/.cache/jaxreg/xla`; it must be private to this user
    (`jaxreg._paths.xla_cache_dir`), since JAX loads compiled programs from it. A cache the
    user configured (`JAX_COMPILATION_CACHE_DIR` or `jax.config`) is left as it is.

    Returns:
      The cache folder in use, or `None` when disabled.
    """
    import jax

    from jaxreg import _paths

    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    path = _paths.xla_cache_dir()
    if path is None:
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    return str(path)


def _module_doc_line(module_name: str) -> str:
    import ast

    spec = importlib.util.find_spec(module_name)
    try:
        source = spec.loader.get_source(module_name) if spec and spec.loader else None
        doc = ast.get_docstring(ast.parse(source or ""))
    except (SyntaxError, ImportError, OSError):
        return "(does not parse)"
    return doc.strip().splitlines()[0] if doc else ""


def list_experiments() -> dict[str, str]:
    """Experiment name -> the first line of its module docstring (jaxreg's own experiments)."""
    import pkgutil

    from jaxreg import experiments

    names = sorted(
        m.name
        for m in pkgutil.iter_modules(experiments.__path__)
        if not m.name.startswith("_") and not m.ispkg
    )
    return {n: _module_doc_line(f"{EXPERIMENTS_PACKAGE}.{n}") for n in names}


def _looks_like_path(target: str) -> bool:
    return target.endswith(".py") or "/" in target or os.sep in target


def load_module(name_or_path: str) -> ModuleType:
    """Imports one of jaxreg's experiments by name, or a config file the caller names by path.

    Names resolve only inside the installed `jaxreg.experiments` package; nothing is looked
    up in the current directory or in other packages. A file runs only when its path is
    given explicitly (`path/to/config.py`).

    Raises:
      ValueError: an unknown name (the allowed ones are listed), a missing file, or a module
        without `get_config()`.
    """
    import importlib

    if _looks_like_path(name_or_path):
        path = Path(name_or_path)
        if not path.is_file():
            raise ValueError(f"config file {name_or_path!r} does not exist")
        spec = importlib.util.spec_from_file_location(f"jaxreg_config_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    else:
        allowed = list_experiments()
        if name_or_path not in allowed:
            raise ValueError(
                f"unknown experiment {name_or_path!r}; allowed: {sorted(allowed)} or a path "
                "to a config .py file"
            )
        module = importlib.import_module(f"{EXPERIMENTS_PACKAGE}.{name_or_path}")
    if not hasattr(module, "get_config"):
        raise ValueError(f"{name_or_path} has no get_config()")
    return module


def run(
    target: str,
    overrides: Sequence[str] = (),
    *,
    workdir: str | None = None,
    fresh: bool = False,
    resume: bool = False,
) -> Any:
    """Runs an experiment (its `run`) or a config file (`train_and_evaluate`).

    Order: load, apply the overrides, validate the whole config (an experiment's `validate`,
    or `validate_config` for a training config), take the workdir's lock, and only then, with
    `fresh`, empty the workdir (only a folder jaxreg made; see `jaxreg.train.workdir`).

    Args:
      target: experiment name (see `jaxreg list`) or path to a Python config file.
      overrides: `key=value` strings (`--config.` already stripped).
      workdir: output folder; default `runs/<name>`.
      fresh: empty `workdir` first (after every check passed).
      resume: require a checkpoint to resume from (otherwise resume is automatic when one exists).

    Returns:
      What the experiment's `run` returns (a dict of results).

    Raises:
      ValueError, TypeError: bad config values, before anything is deleted or written.
      WorkdirBusyError: another process runs in `workdir`.
    """
    from jaxreg.train import workdir as workdir_lib
    from jaxreg.train.config import apply_overrides, validate_config

    module = load_module(target)
    config = module.get_config()
    if not isinstance(config, ConfigDict):
        raise TypeError(f"get_config() of {target!r} must return a ConfigDict")
    config = apply_overrides(config, overrides)
    if hasattr(module, "run"):
        if hasattr(module, "validate"):
            module.validate(config)
    else:
        validate_config(config)
    workdir = Path(workdir or Path("runs") / Path(target).stem).absolute()
    with workdir_lib.lock(workdir):
        if fresh:
            workdir_lib.fresh(workdir)
        if (
            resume
            and not any(workdir.glob("checkpoints"))
            and not any(workdir.glob("**/checkpoints"))
        ):
            raise ValueError(f"--resume: no checkpoints in {workdir}")
        if hasattr(module, "run"):
            return module.run(config, str(workdir))
        from jaxreg.train.loop import train_and_evaluate

        results = train_and_evaluate(config, workdir, title=Path(target).stem)
        _print_results(results, workdir)
        return results


def _print_results(results: dict, workdir: Path) -> None:
    keys = [
        "val_accuracy",
        "test_accuracy",
        "val_loss",
        "test_loss",
        "test_ece",
        "best_epoch",
        "epochs_run",
        "stop_reason",
        "wall_time_s",
    ]
    for k in keys:
        if k in results:
            v = results[k]
            print(f"  {k:16s} {v:.4f}" if isinstance(v, float) else f"  {k:16s} {v}")
    print(f"Report: {workdir / 'report.md'}")


def _cmd_list(_: argparse.Namespace) -> int:
    from jaxreg import augment, data, models

    print("Experiments (jaxreg run NAME):")
    for name, line in list_experiments().items():
        print(f"  {name:24s} {line}")
    print("Data sets (--config.data=NAME):")
    for name, line in data.list_datasets().items():
        print(f"  {name:24s} {line}")
    print("Models (--config.model=NAME):")
    for name, line in models.list_models().items():
        print(f"  {name:24s} {line}")
    print("Augmentations (--config.augment=SPEC, ops joined by '+'):")
    for name, line in augment.list_augmentations().items():
        print(f"  {name:24s} {line}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    enable_compilation_cache()
    run(args.target, args.overrides, workdir=args.workdir, fresh=args.fresh, resume=args.resume)
    return 0


def _cmd_augment(args: argparse.Namespace) -> int:
    import numpy as np

    from jaxreg import augment, data

    ds = data.load(args.data, split="train")
    rng = np.random.default_rng(args.seed)
    idx = rng.choice(len(ds), size=min(args.num, len(ds)), replace=False)
    out = Path(args.out or f"augment_{args.show.split('(')[0]}_{args.data}.png".replace("+", "_"))
    augment.save_grid(args.show, ds.images[np.sort(idx)], out, seed=args.seed, num=args.num)
    print(f"Wrote {out}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from jaxreg.train.restoring import load_images, restore

    workdir = Path(args.workdir)
    if not (workdir / "config.json").is_file():
        raise ValueError(f"{workdir} is not a jaxreg run folder (no config.json)")
    if args.top < 1:
        raise ValueError(f"--top must be >= 1, got {args.top}")
    restored = restore(workdir, which=args.which)
    if restored.config.get("task", "classification") != "classification":
        raise ValueError(f"{workdir} is not a classification run")
    x = load_images(args.images, restored.image_shape)
    import jax

    probs = np.asarray(jax.nn.softmax(restored.model(x), axis=-1))
    names = restored.class_names or [str(i) for i in range(probs.shape[1])]
    print(f"{restored.weights} weights of epoch {restored.epoch} ({args.which}) from {workdir}")
    for path, p in zip(args.images, probs):
        order = np.argsort(-p)[: args.top]
        shown = ", ".join(f"{names[i]} {p[i]:.3f}" for i in order)
        print(f"{path}: {shown}")
    return 0


def _cmd_gan_train(args: argparse.Namespace) -> int:
    from jaxreg import gan
    from jaxreg.train import workdir as workdir_lib
    from jaxreg.train.config import apply_overrides

    enable_compilation_cache()
    config = apply_overrides(gan.gan_config(), args.overrides)
    gan.validate_gan_config(config)
    workdir = Path(args.workdir).absolute()
    with workdir_lib.lock(workdir):
        r = gan.train_gan(config, workdir)
    print(f"  steps            {r['steps']}")
    print(f"  wall_time_s      {r['wall_time_s']:.1f}")
    print(f"Generator: {workdir} (jaxreg gan sample {workdir})")
    return 0


def _cmd_gan_sample(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    from jaxreg import gan

    if args.per_class < 1:
        raise ValueError(f"--per-class must be >= 1, got {args.per_class}")
    g = gan.load_generator(args.workdir)
    x, y = gan.synthesize(jax.random.key(args.seed), g, args.per_class)
    out = Path(args.out or Path(args.workdir) / "samples.png")
    gan.save_grid(out, x, per_row=args.per_class)
    print(f"Wrote {out} (a row per class)")
    if args.npz:
        Path(args.npz).parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.npz, images=x, labels=y)
        print(f"Wrote {args.npz} ({len(y)} images; --config.synthetic={args.npz})")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from jaxreg import report

    root = Path(args.root or args.root_opt or "runs")
    out = report.html_index(root, Path(args.out or root / "index.html"))
    print(f"Wrote {out}")
    return 0


def _cmd_style(args: argparse.Namespace) -> int:
    import inspect
    import time

    from tqdm.auto import tqdm

    from jaxreg import style

    if args.size < 16:
        raise ValueError(f"--size must be >= 16 (VGG16 pools 4 times), got {args.size}")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.lr is not None and not args.lr > 0:
        raise ValueError(f"--lr must be > 0, got {args.lr}")
    if args.style_weight is not None and not args.style_weight >= 0:
        raise ValueError(f"--style-weight must be >= 0, got {args.style_weight}")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"-o/--out must name a .png file, got {args.out!r}")
    if args.side_by_side is not None and Path(args.side_by_side).suffix.lower() != ".png":
        raise ValueError(f"--side-by-side must name a .png file, got {args.side_by_side!r}")
    named = {
        "steps": args.steps,
        "learning_rate": args.lr,
        "style_weight": args.style_weight,
        "init": args.init,
        "seed": args.seed,
    }
    options = {k: v for k, v in named.items() if v is not None}
    steps = options.get(
        "steps", inspect.signature(style.transfer_style).parameters["steps"].default
    )
    content = style.load_image(args.content, args.size)
    style_image = style.load_image(args.style, args.size)
    enable_compilation_cache()
    t0, cpu0 = time.perf_counter(), time.process_time()
    from flax import nnx

    from jaxreg.models.vgg import VGG16Features

    vgg = VGG16Features(rngs=nnx.Rngs(0))
    t_load = time.perf_counter() - t0
    stamps: list[float] = []
    h, w = content.shape[:2]
    with tqdm(total=steps, desc=f"style {w}x{h}", unit="step", dynamic_ncols=True) as bar:

        def progress(step: int, record: dict) -> None:
            stamps.append(time.perf_counter())
            bar.update(step - bar.n)
            bar.set_postfix(content=f"{record['content']:.3g}", style=f"{record['style']:.3g}")

        t1 = time.perf_counter()
        result = style.transfer_style(
            content, style_image, vgg=vgg, progress=progress, log_every=1, **options
        )
    total, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    style.save_image(result.image, out)
    first = stamps[0] - t1
    rest = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else float("nan")
    print(
        f"Wrote {out} ({w}x{h}, {steps} steps): {total:.1f} s in all (weights "
        f"{t_load:.1f} s, first step with compilation {first:.1f} s, then {rest:.2f} s per step; "
        f"CPU time of all threads {cpu:.1f} s)"
    )
    if args.side_by_side is not None:
        path = style.side_by_side([content, style_image, result.image], args.side_by_side)
        print(f"Wrote {path} (content | style | result)")
    return 0


def _split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    rest, overrides = [], []
    it = iter(argv)
    for a in it:
        if a.startswith("--config."):
            item = a[len("--config.") :]
            if "=" not in item:
                try:
                    item = f"{item}={next(it)}"
                except StopIteration:
                    raise ValueError(f"{a} needs a value") from None
            overrides.append(item)
        else:
            rest.append(a)
    return rest, overrides


def build_parser() -> argparse.ArgumentParser:
    """The `jaxreg` parser: run, list, augment, report, predict, style, gan; handlers in `func`."""
    p = argparse.ArgumentParser(prog="jaxreg", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run an experiment or a config file (--config.KEY=VALUE ...)")
    r.add_argument("target", help="experiment name (see `jaxreg list`) or path to a config .py")
    r.add_argument("--workdir", help="output folder (default runs/NAME)")
    r.add_argument("--fresh", action="store_true", help="delete the workdir before running")
    r.add_argument(
        "--resume",
        action="store_true",
        help="require checkpoints to resume from (resume is automatic otherwise)",
    )
    r.set_defaults(func=_cmd_run)
    ls = sub.add_parser("list", help="list experiments, data sets, models and augmentations")
    ls.set_defaults(func=_cmd_list)
    a = sub.add_parser("augment", help="write a PNG grid of originals vs augmented images")
    a.add_argument("--show", required=True, metavar="POLICY", help="augmentation spec, e.g. digits")
    a.add_argument("--data", default="mnist5k")
    a.add_argument("--num", type=int, default=8)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--out", help="PNG path")
    a.set_defaults(func=_cmd_augment)
    rep = sub.add_parser("report", help="one HTML page of every experiment and run under a folder")
    rep.add_argument(
        "root", nargs="?", default=None, help="runs folder, experiment or run (default runs)"
    )
    rep.add_argument("--root", dest="root_opt", help=argparse.SUPPRESS)
    rep.add_argument("--out", help="HTML path (default ROOT/index.html)")
    rep.set_defaults(func=_cmd_report)
    pr = sub.add_parser("predict", help="classify image files with a trained run's best model")
    pr.add_argument("workdir", help="a `jaxreg run` workdir of a built-in classifier")
    pr.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    pr.add_argument("--which", default="best", choices=("best", "latest"))
    pr.add_argument("--top", type=int, default=3, help="classes shown per image")
    pr.set_defaults(func=_cmd_predict)
    st = sub.add_parser(
        "style",
        help="neural style transfer (Gatys et al. 2016) of two images, on ImageNet VGG16",
        description="Optimises an image with CONTENT's VGG16 features and STYLE's Gram "
        "matrices (jaxreg.style.transfer_style). CONTENT and STYLE are image files or "
        f"scikit-image sample photos by name: {', '.join(_STYLE_SAMPLES)}.",
    )
    st.add_argument("content", help="sample photo name (e.g. astronaut) or image file")
    st.add_argument("style", help="sample photo name (e.g. brick) or image file")
    st.add_argument("-o", "--out", required=True, help="the result's PNG path")
    st.add_argument("--size", type=int, default=256, help="longer side in pixels (256)")
    given = "default: transfer_style's"
    st.add_argument("--steps", type=int, help=f"Adam steps ({given})")
    st.add_argument("--lr", type=float, help=f"Adam's learning rate ({given})")
    st.add_argument("--style-weight", type=float, help=f"style loss weight ({given})")
    st.add_argument("--init", choices=("content", "noise"), help=f"start image ({given})")
    st.add_argument("--seed", type=int, help="noise seed (with --init noise)")
    st.add_argument("--side-by-side", metavar="PNG", help="also write content | style | result")
    st.set_defaults(func=_cmd_style)
    g = sub.add_parser("gan", help="train a class-conditional GAN, or sample one (grid, pool)")
    gsub = g.add_subparsers(dest="gan_command", required=True)
    gt = gsub.add_parser("train", help="train_gan with gan_config() (--config.KEY=VALUE ...)")
    gt.add_argument("--workdir", default="runs/gan", help="output folder (default runs/gan)")
    gt.set_defaults(func=_cmd_gan_train)
    gs = gsub.add_parser("sample", help="a PNG grid (a row per class) and optionally a pool")
    gs.add_argument("workdir", help="a `jaxreg gan train` workdir")
    gs.add_argument("--per-class", type=int, default=10, help="images per class")
    gs.add_argument("--seed", type=int, default=0, help="latent seed")
    gs.add_argument("--out", help="PNG path (default WORKDIR/samples.png)")
    gs.add_argument("--npz", help="also write the images and labels (a synthetic pool)")
    gs.set_defaults(func=_cmd_gan_sample)
    return p


_STYLE_SAMPLES = (
    "astronaut",
    "brick",
    "camera",
    "cat",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "colorwheel",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "logo",
    "moon",
    "page",
    "retina",
    "rocket",
    "text",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for bad input, with a one-line message)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        rest, overrides = _split_overrides(argv)
        args = parser.parse_args(rest)
        args.overrides = overrides
        if overrides and args.command not in ("run", "gan"):
            raise ValueError(
                "--config.KEY=VALUE overrides only apply to `jaxreg run` and `jaxreg gan train`"
            )
        if overrides and args.command == "gan" and args.gan_command != "train":
            raise ValueError("--config.KEY=VALUE overrides only apply to `jaxreg gan train`")
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"jaxreg: error: {e}", file=sys.stderr)
        return 2
    except (
        RuntimeError,
        FloatingPointError,
    ) as e:  # a diverged run, a busy workdir, checkpoints that cannot resume
        from jaxreg.train.checkpoint import CheckpointError
        from jaxreg.train.loop import NonFiniteLossError
        from jaxreg.train.workdir import WorkdirBusyError

        if not isinstance(e, (NonFiniteLossError, WorkdirBusyError, CheckpointError)):
            raise
        print(f"jaxreg: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
