"""train_and_evaluate with loop="stream": batches read through grain (jaxreg.data.stream)."""

import jax
import numpy as np
import pytest

from jaxreg.data import stream
from jaxreg.train.loop import train_and_evaluate
from tests.train.conftest import tiny_config


def test_streamed_run_equals_the_in_memory_run_and_resumes_exactly(
    tmp_path, digits_small, monkeypatch
):
    """loop="stream" gives the scan's numbers; a kill mid-epoch resumes to the same parameters.

    Streaming checkpoints are taken at epoch ends: the killed epoch reruns from its start.
    """
    cfg = {"epochs": 3, "batch_norm": True, "augment": "flip"}
    scan = train_and_evaluate(tiny_config(**cfg), tmp_path / "scan", data=digits_small)
    streamed = train_and_evaluate(
        tiny_config(loop="stream", **cfg), tmp_path / "stream", data=digits_small
    )
    for e, (a, b) in enumerate(zip(scan["history"], streamed["history"])):
        for k in a:
            if k != "time_s":
                assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), f"epoch {e + 1}: {k}"

    # a kill during epoch 2: the source fails after a few reads of that epoch
    reads = {"n": 0}
    real = stream.ArraySource.__getitem__

    def dying(self, i):
        reads["n"] += 1
        if reads["n"] > 120 + 45:  # epoch 1 reads 120 examples; die inside epoch 2
            raise KeyboardInterrupt("killed")
        return real(self, i)

    with monkeypatch.context() as m:
        m.setattr(stream.ArraySource, "__getitem__", dying)
        with pytest.raises(KeyboardInterrupt):
            train_and_evaluate(
                tiny_config(loop="stream", **cfg), tmp_path / "killed", data=digits_small
            )
    lines = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1  # epoch 1 finished and was checkpointed, epoch 2 was not
    resumed = train_and_evaluate(
        tiny_config(loop="stream", **cfg), tmp_path / "killed", data=digits_small
    )
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    for a, b in zip(
        jax.tree.leaves(streamed["state"].params), jax.tree.leaves(resumed["state"].params)
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
