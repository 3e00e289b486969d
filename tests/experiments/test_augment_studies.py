"""augmentation_ablation's combinations of the best singles; when_to_augment's parts and resume."""

import json

import pytest

from jaxreg import cli


def _tiny(name, **values):
    config = cli.load_module(name).get_config()
    config.data, config.model, config.epochs, config.batch_size = "digits", "tiny", 1, 20
    config.min_steps, config.seeds = 0, (0,)
    for key, value in values.items():
        config[key] = value
    return config


def test_ablation_top2_combines_the_best_singles_on_validation(tmp_path):
    mod = cli.load_module("augmentation_ablation")
    config = _tiny("augmentation_ablation", sizes=(5,), variants="rotate,mixup", combos="top2")
    out = mod.run(config, str(tmp_path))
    rows = {r["variant"]: r for r in out["rows"]}
    assert list(rows) == ["none", "rotate", "mixup", "top2"]
    assert rows["top2"]["stage"] == "combos"
    picked = mod._top_singles(out["rows"], ["none", "rotate", "mixup"], 2)
    top2 = next(r for r in out["table"] if r["variant"] == "top2")
    assert top2["augmentation"] == "+".join(picked) + " (best on val)"
    saved = json.loads(
        (tmp_path / "train_per_class=5" / "top2" / "seed0" / "combos" / "config.json").read_text()
    )
    aug, mix = mod._combine(picked)
    assert (saved["augment"], saved["mix"]) == (aug, mix)
    assert "The best combination (top2" in out["verdict"]


def test_when_to_augment_runs_the_selected_parts_and_resumes(tmp_path, monkeypatch):
    mod = cli.load_module("when_to_augment")
    config = _tiny("when_to_augment", parts="b", smoke=True)
    out = mod.run(config, str(tmp_path))
    assert set(out["parts"]) == {"b"} and out["verdict"].startswith("(b) ")
    assert {r["part"] for r in out["table"]} == {"b"}
    assert (tmp_path / "b_imbalance" / "report.md").is_file()
    assert not (tmp_path / "a_size").exists()
    md = (tmp_path / "report.md").read_text()
    assert "(b) long-tailed training split (factor 5" in md  # the smoke run's factor
    import jaxreg.train.loop as loop

    monkeypatch.setattr(loop, "train_and_evaluate", lambda *a, **k: pytest.fail("retrained"))
    again = mod.run(config, str(tmp_path))  # every run and its predictions read back
    assert again["verdict"] == out["verdict"] and again["table"] == out["table"]
