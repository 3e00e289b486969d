"""The how_many study: amounts grown while validation improves, from a pluggable source."""

import json

import numpy as np
import pytest
from ml_collections import ConfigDict

from jaxreg import cli


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("how_many")
    return workdir, cli.run("how_many", ["smoke=true"], workdir=str(workdir))


def test_the_search_stops_after_patience_amounts_without_a_gain():
    mod = cli.load_module("how_many")
    p = ConfigDict({"patience": 2, "min_delta": 0.01})
    vals = {0: 0.50, 1: 0.60, 2: 0.605, 4: 0.58, 8: 0.9}
    rows = [{"variant": f"k{k}", "copies": k, "val_accuracy": v} for k, v in vals.items()]
    rows.append({"variant": "online", "copies": "online", "val_accuracy": 1.0})
    curve, best, stop = mod._search(rows, p)
    assert (best, stop) == (1, 4)  # 2 and 4 gain less than min_delta over 1: stop before 8
    assert curve[:2] == [(0, 0.5), (1, 0.6)]
    assert mod._skip(rows[:4], "k8", p) and not mod._skip(rows[:4], "online", p)
    assert not mod._skip(rows[:3], "k4", p)


def test_copies_are_nested_and_fixed():
    mod = cli.load_module("how_many")
    from jaxreg import data

    train = data.stratified_subset(data.load_splits("digits")["train"], 3, seed=0)
    two = mod.make_copies(train, "digits", 2, key=5)
    three = mod.make_copies(train, "digits", 3, key=5)
    assert len(two) == 3 * len(train) and len(three) == 4 * len(train)
    np.testing.assert_array_equal(three.images[: len(two)], two.images)
    np.testing.assert_array_equal(two.labels, np.tile(train.labels, 3))
    assert not np.array_equal(two.images[len(train) : 2 * len(train)], train.images)


def test_smoke_grows_copies_and_chooses_on_validation(smoke_run):
    workdir, result = smoke_run
    table = result["table"]
    tried = [t["copies per real"] for t in table]
    assert tried[0] == 0 and tried == sorted(tried) and len(tried) < 3  # patience 1 in smoke
    assert all(
        t["train images"] == table[0]["train images"] * (k + 1) for t, k in zip(table, tried)
    )
    best, best_val = None, -1.0  # the documented rule: improve by more than min_delta
    for t in table:
        if t["val_accuracy_mean"] > best_val + 0.002:
            best, best_val = t["copies per real"], t["val_accuracy_mean"]
    assert [t["copies per real"] for t in table if t["chosen"]] == [best]
    assert f"k={best}" in result["verdict"] and "not tried: [3]" in result["verdict"]
    summary = json.loads((workdir / "summary.json").read_text())
    assert "curve.png" in summary["figures"] and (workdir / "curve.png").stat().st_size > 1000
    assert not (workdir / "k3").exists()


def test_the_source_of_extra_examples_is_pluggable(tmp_path, monkeypatch):
    mod = cli.load_module("how_many")
    calls = []

    def repeat(unit, real, k):  # k exact copies of the real images
        calls.append((unit.variant, k))
        return real.__class__(
            np.concatenate([real.images] * (k + 1)),
            np.concatenate([real.labels] * (k + 1)),
            real.num_classes,
            real.class_names,
            "repeat",
        )

    monkeypatch.setitem(mod.SOURCES, "repeat", repeat)
    out = cli.run("how_many", ["smoke=true", "seeds=(0,)", "source=repeat"], workdir=str(tmp_path))
    assert calls and calls[0] == ("k1", 1)
    assert [r["train_size"] for r in out["rows"]][:2] == [100, 200]


def test_the_gan_source_trains_one_generator_per_seed_and_appends_its_samples(tmp_path):
    out = cli.run(
        "how_many",
        ["smoke=true", "seeds=(0,)", "source=gan"],
        workdir=str(tmp_path),
    )
    sizes = {r["variant"]: r["train_size"] for r in out["rows"]}
    assert sizes["k0"] == 100 and sizes["k1"] == 200 and sizes.get("k3", 400) == 400
    assert (tmp_path / "gan" / "seed0" / "results.json").exists()  # trained once, read back
    assert len(list((tmp_path / "gan").iterdir())) == 1
