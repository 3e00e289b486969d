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


def _write_folder(root, splits):
    """An image folder (root/split/class/i.png) holding the given splits as 8-bit PNGs."""
    from PIL import Image

    for split, ds in splits.items():
        for i, (x, y) in enumerate(zip(ds.images, ds.labels)):
            folder = root / split / f"c{int(y)}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = np.round(np.asarray(x)[..., 0] * 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")


def test_a_folder_streams_without_loading_its_training_split(tmp_path, digits_small, monkeypatch):
    import jaxreg.data.api as api

    small = {"train": digits_small["train"]}
    small["val"] = digits_small["val"].subset(np.arange(30))
    small["test"] = digits_small["test"].subset(np.arange(30))
    _write_folder(tmp_path / "images", small)
    cfg = {"epochs": 2, "data": f"folder:{tmp_path / 'images'}", "augment": "flip"}
    in_memory = train_and_evaluate(tiny_config(**cfg), tmp_path / "memory")

    real = api.load_folder

    def no_train(root, *, split="train"):
        assert split != "train", "the streamed run loaded the training split into memory"
        return real(root, split=split)

    monkeypatch.setattr(api, "load_folder", no_train)
    streamed = train_and_evaluate(tiny_config(loop="stream", **cfg), tmp_path / "stream")
    assert streamed["train_size"] == 120
    for a, b in zip(in_memory["history"], streamed["history"]):
        for k in a:
            if k != "time_s":
                assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), k
    with pytest.raises(ValueError, match="train_per_class"):
        train_and_evaluate(
            tiny_config(loop="stream", train_per_class=5, **cfg), tmp_path / "subset"
        )
    source = stream.open_source(cfg["data"], split="train")
    assert stream.image_shape(source) == (8, 8, 1) and source.num_classes == 10
    with pytest.raises(ValueError, match="needs config\\.loop='stream'"):
        train_and_evaluate(tiny_config(), tmp_path / "scan", data={**small, "train": source})
    assert not (tmp_path / "subset").exists() and not (tmp_path / "scan").exists()
