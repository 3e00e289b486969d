"""Workdir safety: one run per workdir (a lock naming its holder), markers, `--fresh` order."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from jaxreg import cli
from jaxreg.train import workdir as wd
from tests.train.conftest import tiny_config


def test_lock_creates_the_folder_with_a_marker_and_is_reentrant(tmp_path):
    w = tmp_path / "run"
    with wd.lock(w) as path:
        assert path == w.absolute() and wd.is_jaxreg_workdir(w)
        with wd.lock(w):  # the CLI locks, then the run locks the same folder again
            assert wd.holds_lock(w)
        assert wd.holds_lock(w)
    assert not wd.holds_lock(w)
    assert (w / wd.LOCK_FILE).exists()


def test_a_folder_with_foreign_files_gets_no_marker(tmp_path):
    (tmp_path / "thesis.tex").write_text("years of work")
    with wd.lock(tmp_path):
        pass
    assert not wd.is_jaxreg_workdir(tmp_path)


_HOLD = textwrap.dedent(
    """
    import sys, time
    from jaxreg.train import workdir
    with workdir.lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(60)
    """
)


def _hold_lock_in_another_process(path):
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_fails_at_once_naming_the_holder(tmp_path, digits_small):
    proc = _hold_lock_in_another_process(tmp_path)
    try:
        t0 = time.perf_counter()
        with pytest.raises(wd.WorkdirBusyError, match=f"in use by process {proc.pid}"):
            with wd.lock(tmp_path):
                pass
        from jaxreg.train.loop import train_and_evaluate

        with pytest.raises(wd.WorkdirBusyError):  # the training loop takes the same lock
            train_and_evaluate(tiny_config(epochs=1), tmp_path, data=digits_small)
        assert time.perf_counter() - t0 < 10
        assert not (tmp_path / "metrics.jsonl").exists()
    finally:
        proc.kill()
        proc.wait()
    with wd.lock(tmp_path):  # the OS released it when the holder died
        pass


def test_fresh_empties_only_a_jaxreg_folder_and_keeps_lock_and_marker(tmp_path):
    w = tmp_path / "run"
    with wd.lock(w):
        (w / "checkpoints").mkdir()
        (w / "checkpoints" / "x").write_text("1")
        (w / "metrics.jsonl").write_text("{}\n")
        wd.fresh(w)
        assert sorted(p.name for p in w.iterdir()) == sorted([wd.LOCK_FILE, wd.MARKER_FILE])
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data.csv").write_text("1,2,3")
    with wd.lock(precious):
        with pytest.raises(ValueError, match="deletes only folders jaxreg made"):
            wd.fresh(precious)
    assert (precious / "data.csv").read_text() == "1,2,3"
    with pytest.raises(ValueError, match="needs the workdir's lock"):
        wd.fresh(w)


def _tiny_config_file(tmp_path):
    p = tmp_path / "tiny_cfg.py"
    p.write_text(
        textwrap.dedent(
            """
            from jaxreg.train.config import default_config

            def get_config():
                c = default_config()
                c.data, c.train_per_class, c.model = "digits", 10, "tiny"
                c.epochs, c.batch_size, c.progress = 1, 20, False
                return c
            """
        )
    )
    return p


@pytest.mark.parametrize("bad", ["--config.epochs=0", "--config.learning_rate=1e400"])
def test_cli_fresh_with_a_bad_config_deletes_nothing(tmp_path, bad, capsys):
    cfg = _tiny_config_file(tmp_path)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    status = cli.main(["run", str(cfg), "--workdir", str(precious), "--fresh", bad])
    assert status == 2 and "jaxreg: error:" in capsys.readouterr().err
    assert (precious / "notes.txt").read_text() == "keep me"
    # Valid config, but a folder jaxreg did not make: refused, not deleted.
    status = cli.main(["run", str(cfg), "--workdir", str(precious), "--fresh"])
    assert status == 2 and "deletes only folders jaxreg made" in capsys.readouterr().err
    assert (precious / "notes.txt").read_text() == "keep me"


def test_cli_fresh_on_a_jaxreg_workdir_starts_over(tmp_path, capsys):
    cfg = _tiny_config_file(tmp_path)
    w = tmp_path / "w"
    assert cli.main(["run", str(cfg), "--workdir", str(w)]) == 0
    first = json.loads((w / "metrics.jsonl").read_text())
    (w / "stale.txt").write_text("from an older run")
    capsys.readouterr()
    assert cli.main(["run", str(cfg), "--workdir", str(w), "--fresh"]) == 0
    assert "Resumed" not in capsys.readouterr().out
    assert not (w / "stale.txt").exists()
    again = json.loads((w / "metrics.jsonl").read_text())
    first.pop("time_s"), again.pop("time_s")
    assert again == first  # retrained from scratch: the same numbers


def test_cli_refuses_a_busy_workdir_with_exit_status_1(tmp_path, capsys):
    cfg = _tiny_config_file(tmp_path)
    w = tmp_path / "w"
    w.mkdir()
    proc = _hold_lock_in_another_process(w)
    try:
        assert cli.main(["run", str(cfg), "--workdir", str(w), "--fresh"]) == 1
        assert f"process {proc.pid}" in capsys.readouterr().err
    finally:
        proc.kill()
        proc.wait()


def test_lock_file_names_pid_and_host(tmp_path):
    with wd.lock(tmp_path):
        info = json.loads((tmp_path / wd.LOCK_FILE).read_text())
    assert info["pid"] == os.getpid() and info["host"]
