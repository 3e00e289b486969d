"""Two local CPU processes through `jax.distributed` (gloo collectives): one run, 4 devices.

Each process has 2 forced host devices; the coordinator listens on localhost. Checked: both
processes see the same metrics as a single-process run (scan, host-fed and grain-streamed
epochs), only process 0 writes the workdir
and holds its lock, each process reads only its part of a host-fed batch, and the 2-process
checkpoint resumes in a single process on 1 device (Orbax reshards).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from jaxreg.train.loop import train_and_evaluate
from tests.train._multidevice import config, digits

ROOT = Path(__file__).resolve().parents[2]
RTOL = 1e-5


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    work = tmp_path_factory.mktemp("distributed")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    port = _free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.train._multiprocess",
                str(i),
                str(port),
                str(work),
                str(work / f"out{i}.json"),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in (0, 1)
    ]
    logs = [p.communicate(timeout=900)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-4000:]
    outs = [json.loads((work / f"out{i}.json").read_text()) for i in (0, 1)]
    return work, outs, logs


def _close(a, b, where):
    a, b = ({k: v for k, v in x.items() if k != "time_s"} for x in (a, b))
    assert a.keys() == b.keys(), where
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=RTOL, abs=1e-6), f"{where}: {k}"


def test_two_processes_train_like_one(two, tmp_path):
    work, outs, logs = two
    assert [o["process_index"] for o in outs] == [0, 1]
    assert all(o["process_count"] == 2 and o["devices"]["devices"] == 4 for o in outs)
    assert outs[0]["history"] == outs[1]["history"]  # every process computes the same numbers
    single = train_and_evaluate(config(devices=1, epochs=3), tmp_path / "single", data=digits())
    for e, (a, b) in enumerate(zip(single["history"], outs[0]["history"])):
        _close(a, b, f"epoch {e + 1}")
    _close(single["history"][0], outs[0]["host_history"][0], "host-fed loop, epoch 1")
    _close(single["history"][0], outs[0]["stream_history"][0], "streamed (grain), epoch 1")
    # only process 0 wrote the files, held the lock and printed the log line
    scan = work / "scan"
    lines = (scan / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
    assert json.loads((scan / ".jaxreg.lock").read_text())["pid"] == outs[0]["pid"]
    assert json.loads((scan / "results.json").read_text())["devices"]["processes"] == 2
    assert logs[0].count("Devices: 4 cpu device(s) in 2 process(es)") == 3  # one per run
    assert "Devices:" not in logs[1]

    # the 2-process checkpoint (4 devices) resumes here, 1 process on 1 device, for epoch 3
    resumed = train_and_evaluate(config(devices=1, epochs=3), scan, data=digits())
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    _close(single["history"][2], resumed["history"][2], "resumed epoch 3")


def test_each_process_reads_only_its_part_of_a_host_batch(two):
    _, outs, _ = two
    idx = [i * 2 for i in range(32)][::-1]
    read = [o["rows_read"] for o in outs]
    assert read[0] == idx[:16] and read[1] == idx[16:]
    assert all(o["batch_shape"] == [32, 1] for o in outs)
    assert outs[0]["local_batch"] == sorted(idx[:16]) and outs[1]["local_batch"] == sorted(idx[16:])
