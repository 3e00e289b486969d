"""The wheel installs like a library: `jaxreg list` and a smoke run work from a fresh venv."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


_NOT_SOURCE = (".git", ".venv*", "build", "dist", "runs", "*.egg-info", "__pycache__", ".*cache")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    # Built from a copy of the project's files, so no build/ folder lands in the source tree.
    src = tmp_path_factory.mktemp("src") / "jaxreg"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*_NOT_SOURCE))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(src)],
        check=True, capture_output=True, text=True, cwd=src, timeout=300,
    )  # fmt: skip
    (whl,) = out.glob("jaxreg-*.whl")
    return whl


def test_the_wheel_ships_the_experiments_and_the_native_source_but_no_generic_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "jaxreg/experiments/main.py" in names
    assert "jaxreg/_cpu/warp_native.cc" in names
    tops = {n.split("/")[0] for n in names if not n.startswith("jaxreg-")}
    assert tops == {"jaxreg"}, tops  # no top-level `experiments`, `tests` or `benchmarks`


def test_jaxreg_runs_from_a_fresh_venv(wheel, tmp_path):
    """`jaxreg list` and a smoke run from a venv holding only the wheel's jaxreg.

    Dependencies come from the test venv (one .pth line: nothing is downloaded); jaxreg itself
    only from the installed wheel, never from this source tree.
    """
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    Path(site, "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q",
         str(wheel)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    work = tmp_path / "elsewhere"  # not the source tree: nothing to import from the cwd
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    where = subprocess.run(
        [str(py), "-c", "import jaxreg, json; print(json.dumps(jaxreg.__file__))"],
        check=True, capture_output=True, text=True, cwd=work, env=env,
    )  # fmt: skip
    assert Path(json.loads(where.stdout)).is_relative_to(venv)
    jaxreg = venv / "bin" / "jaxreg"
    listed = subprocess.run(
        [str(jaxreg), "list"], capture_output=True, text=True, cwd=work, env=env, timeout=120
    )
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "main" in listed.stdout and "regularization" in listed.stdout
    run = subprocess.run(
        [str(jaxreg), "run", "main", "--config.smoke=true", "--workdir", str(work / "runs")],
        capture_output=True, text=True, cwd=work, env=env, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert (work / "runs" / "report.md").is_file()
