"""Data parallel training (jaxreg.train.parallel): 1 vs 8 forced host devices, same numbers.

The 8-device checks run in a subprocess (tests/train/_multidevice.py): the device count of the
host platform is fixed when JAX starts. Tolerance: per-epoch metrics within 1e-5 (relative),
parameters within 1e-5: the same program, only the all-reduce sums in another order (seen:
6e-8 on the parameters after 3 epochs).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from jaxreg.train import parallel
from jaxreg.train.loop import train_and_evaluate
from tests.train.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[2]
RTOL = 1e-5


def _run_8(*what):
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-m", "tests.train._multidevice", *what],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


@pytest.fixture(scope="module")
def eight():
    return _run_8()


def _close(a, b, where):
    assert a.keys() == b.keys(), where
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=RTOL, abs=1e-6), f"{where}: {k}"


def test_one_and_eight_devices_give_the_same_run(eight):
    """BatchNorm, rotations (the warp) and flips: the same metrics on 1 and 8 devices."""
    assert eight["device_count"] == 8
    assert eight["devices_1"]["devices"] == 1 and eight["devices_8"]["devices"] == 8
    assert eight["devices_8"]["per_device_batch"] == 4
    assert len(eight["history_8"]) == 2
    for e, (a, b) in enumerate(zip(eight["history_1"], eight["history_8"])):
        _close(a, b, f"epoch {e + 1}")
    # the host-fed loop, batches sharded from the host, gives the scan's numbers too
    for e, (a, b) in enumerate(zip(eight["history_8"], eight["history_host8"])):
        _close(a, b, f"host loop, epoch {e + 1}")
    # BatchNorm statistics replicated (synchronised), not one copy per device
    assert eight["bn_sharding_8"] == "P() on 8"


def test_checkpoint_of_eight_devices_resumes_on_one(eight):
    """Orbax restores the 8-device run's checkpoint on 1 device; it ends where 3 epochs on 1 end."""
    resumed, full = eight["resumed_history"], eight["history_1"]
    assert [h["epoch"] for h in resumed] == [1, 2, 3]
    for e, (a, b) in enumerate(zip(full, resumed)):
        _close(a, b, f"epoch {e + 1}")
    _close(eight["test_1"], eight["resumed_test"], "test")
    assert eight["max_param_diff"] < 1e-5


def test_indivisible_batch_is_a_clear_error_before_any_work(eight):
    msg = eight["indivisible"]
    assert "batch_size" in msg and "multiple of the number of devices (8" in msg, msg
    assert "32" in msg and "24" in msg  # the nearest batch sizes that work
    assert eight["indivisible_wrote"] is False


def test_native_warp_is_not_replicated_under_sharding(eight):
    """The native warp's custom call is in the 1-device epoch, not in the 8-device one."""
    if eight["native_status"] == "native":
        assert eight["custom_call_1"] is True
    assert eight["custom_call_8"] is False
    assert eight["cpu_paths"]["sharded_warp"].startswith("xla (programs partitioned over up to 8")
    assert eight["all_reduce_8"] > 0 and eight["all_reduce_1"] == 0
    # the XLA warp gathers per example under sharding: the batch is never all-gathered
    assert eight["all_gather_8"] == 0


def test_augmentation_keys_distinct_across_devices_and_batchnorm_global(eight):
    # the sharded augmentation equals the single-device one (native vs XLA warp: ~1e-6)
    assert eight["aug_sharded_equals_single"] < 1e-5
    assert eight["aug_shards_differ"] and eight["aug_distinct_examples"] == 32
    # device d holds 4 examples of value d: the batch mean is the global one, 3.5
    assert eight["bn_running_mean"] == pytest.approx(3.5)
    assert abs(eight["bn_output_mean"]) < 1e-5
    assert eight["bn_y_sharding"] == "P('data',)"


def test_devices_config_key_checked_and_recorded(tmp_path, digits_small):
    """In this (1-device or more) process: `devices` is validated and recorded in results."""
    n = jax.device_count()
    with pytest.raises(ValueError, match="config key 'devices' must be between 0"):
        parallel.num_devices(n + 1)
    with pytest.raises(ValueError, match="must be >= 0"):
        train_and_evaluate(tiny_config(devices=-1), tmp_path / "neg", data=digits_small)
    r = train_and_evaluate(tiny_config(epochs=1, devices=1), tmp_path / "one", data=digits_small)
    saved = json.loads((tmp_path / "one" / "results.json").read_text())
    assert saved["devices"]["devices"] == 1 and saved["devices"]["per_device_batch"] == 30
    assert "Data parallel over 1 " in (tmp_path / "one" / "report.md").read_text()
    assert r["devices"] == saved["devices"]


def test_distributed_options_checked_before_anything_starts(monkeypatch):
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
    assert parallel.initialize("") is False  # one process: nothing to start
    with pytest.raises(ValueError, match="0 <= process_id < num_processes"):
        parallel.initialize("localhost:1", num_processes=2, process_id=5)
    with pytest.raises(ValueError, match="num_processes >= 1"):
        parallel.initialize("localhost:1", process_id=0)
    with pytest.raises(TypeError, match=r"distributed\.coordinator"):
        parallel.initialize(3)
    from jaxreg.train.config import validate_config

    c = tiny_config()
    c.distributed.process_id = -2
    with pytest.raises(ValueError, match=r"distributed\.process_id"):
        validate_config(c)
