"""The study runner: stages with cached artifacts, paired seeds, smoke, verdicts, reports."""

import json

import numpy as np
import pytest
from flax import nnx

from jaxreg import experiment
from jaxreg.experiment import Findings, Stage, Study
from jaxreg.train import restore
from jaxreg.train.config import default_config


def _tiny_config():
    c = default_config()
    c.data, c.train_per_class, c.model = "digits", 12, "tiny"
    c.epochs, c.batch_size, c.learning_rate, c.progress = 2, 30, 3e-3, False
    return c


# A synthetic study: each "run" returns a score set by its variant and seed, so the verdict's
# words can be checked against numbers chosen here.
_SCORES = {"base": 0.50, "good": 0.60, "bad": 0.40, "same": 0.50}


def _score(unit):
    wobble = 0.004 * (unit.seed - 1)  # the same per seed for every variant: paired noise
    noise = 0.02 * (unit.seed % 2) if unit.variant == "same" else 0.0
    subset = np.asarray(unit.data["train"].images).sum()
    return {"test_accuracy": _SCORES[unit.variant] + wobble + noise, "subset": float(subset)}


def _synthetic(**kw):
    base = {
        "name": "toy",
        "title": "Toy",
        "question": "Which variant wins?",
        "expectation": "good wins, bad loses, same ties; bad was expected to tie.",
        "source": "made up for the test",
        "regime": "synthetic scores",
        "config": _tiny_config,
        "variants": {"base": {}, "good": {}, "bad": {}, "same": {}},
        "baseline": "base",
        "expected": {"good": 1, "bad": 0, "same": 0},
        "stages": (Stage("score", fn=_score),),
        "metrics": ("test_accuracy",),
    }
    base.update(kw)
    return Study(**base)


def test_verdict_and_table_come_from_the_numbers(tmp_path):
    out = _synthetic().run(_synthetic().get_config(), tmp_path)
    table = {r["variant"]: r for r in out["table"]}
    assert table["good"]["effect"] == "helps" and table["bad"]["effect"] == "hurts"
    assert table["same"]["effect"] == "within noise"
    assert table["good"]["delta_test_accuracy"].startswith("+10.0 ± 0.0")
    v = out["verdict"]
    assert "good (+10.0 ± 0.0 points) raised test_accuracy beyond the 95 % interval" in v
    assert "bad (-10.0 ± 0.0 points) made it worse" in v
    assert (
        "The expectation did not appear for bad (expected no change beyond noise, measured hurts)"
        in v
    )
    assert "Regime: synthetic scores" in v
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["verdict"] == v and summary["smoke"] is False
    assert (tmp_path / "primary.png").stat().st_size > 1000
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert len(rows) == 4 * 3
    # Seed k uses training subset k for every variant (paired comparisons).
    for seed in (0, 1, 2):
        subsets = {r["subset"] for r in rows if r["seed"] == seed}
        assert len(subsets) == 1
    assert len({r["subset"] for r in rows}) == 3


def test_smoke_shrinks_then_validates_and_marks_the_report(tmp_path):
    study = _synthetic(smoke={"epochs": 1, "train_per_class": 5}, smoke_variants=("base", "good"))
    c = study.get_config()
    c.smoke = True
    out = study.run(c, tmp_path)
    assert {r["variant"] for r in out["rows"]} == {"base", "good"}
    assert len(out["rows"]) == 2 * 2  # two seeds in smoke mode
    assert "[smoke]" in (tmp_path / "report.md").read_text()
    c.epochs = -1  # smoke lowers numbers but never hides an invalid one
    with pytest.raises(ValueError, match="'epochs' must be >= 1"):
        study.validate(c)
    c.epochs, c.variants = 2, "base,nosuch"
    with pytest.raises(ValueError, match="unknown variants"):
        study.validate(c)


def test_a_variant_with_a_bad_config_is_rejected_before_anything_runs(tmp_path):
    study = _synthetic(variants={"base": {}, "good": {"augment": "nosuchop"}})
    with pytest.raises(ValueError, match="variant 'good': config key 'augment'"):
        study.run(study.get_config(), tmp_path)
    assert not (tmp_path / "base").exists()


def _pretrain(unit):
    r = unit.train(name="run")
    return {"val_accuracy": r["val_accuracy"]}


def _finetune(unit):
    """Starts from the seed's pretrained checkpoint (a cached artifact of the earlier stage)."""
    from jaxreg import models

    net = models.create("tiny", num_classes=10, input_shape=(8, 8, 1))
    restore(unit.artifact("pretrain") / "run", model=net)
    r = unit.train(model=net, name="run")
    return {k: r[k] for k in ("val_accuracy", "test_accuracy", "best_epoch")}


def test_a_two_stage_study_reuses_the_cached_stage_on_rerun(tmp_path, monkeypatch):
    study = _synthetic(
        variants={"base": {}, "smooth": {"label_smoothing": 0.1}},
        expected={},
        stages=(Stage("pretrain", fn=_pretrain, per="seed"), Stage("finetune", fn=_finetune)),
        seeds=(0, 1),
        metrics=("val_accuracy", "test_accuracy"),
    )
    out = study.run(study.get_config(), tmp_path)
    pre = [r for r in out["rows"] if r["stage"] == "pretrain"]
    fine = [r for r in out["rows"] if r["stage"] == "finetune"]
    assert len(pre) == 2 and len(fine) == 4  # pretraining once per seed, shared by variants
    assert (tmp_path / "seed0" / "pretrain" / "run" / "checkpoints").is_dir()
    first = (tmp_path / "report.md").read_text()
    calls = []
    import jaxreg.train.loop as loop

    monkeypatch.setattr(loop, "train_and_evaluate", lambda *a, **k: calls.append(a))
    again = study.run(study.get_config(), tmp_path)
    assert calls == []  # every stage read back from its cache
    assert again["table"] == out["table"] and (tmp_path / "report.md").read_text() == first


def test_a_diverged_variant_is_reported_and_the_study_goes_on(tmp_path):
    study = _synthetic(
        variants={"base": {}, "wild": {"learning_rate": 1e30}},
        expected={},
        stages=(Stage(),),
        seeds=(0,),
        metrics=("test_accuracy",),
    )
    out = study.run(study.get_config(), tmp_path)
    rows = {r["variant"]: r for r in out["rows"]}
    assert rows["wild"]["diverged"] is True and rows["wild"]["test_accuracy"] is None
    assert isinstance(rows["base"]["test_accuracy"], float)
    assert {r["variant"]: r for r in out["table"]}["wild"]["diverged"] == 1


def test_a_sweep_repeats_the_comparison_per_value_and_draws_lines(tmp_path):
    study = _synthetic(sweep=("train_per_class", (5, 10)), expected={})
    out = study.run(study.get_config(), tmp_path)
    assert [r["train_per_class"] for r in out["table"]] == [5] * 4 + [10] * 4
    assert "At train_per_class=5:" in out["verdict"] and "At train_per_class=10:" in out["verdict"]
    assert (tmp_path / "train_per_class=10" / "good" / "seed2" / "result.json").exists()


def test_analyze_adds_findings(tmp_path):
    def analyze(a):
        (a.workdir / "extra.txt").write_text("x")
        return Findings(verdict=["Extra sentence."], sections=["## More\n\ntext"])

    out = _synthetic(analyze=analyze, expected={}).run(_synthetic().get_config(), tmp_path)
    assert out["verdict"].endswith("Extra sentence.")
    assert "## More" in (tmp_path / "report.md").read_text()


def test_bad_stage_options_are_rejected():
    with pytest.raises(ValueError, match="per must be"):
        Stage("x", per="batch")
    assert experiment.Study is Study
    assert nnx  # imported for the finetune helper's models


def _first_test_images(config, data, params):
    """An extra evaluation set sized by a study setting: the first `params.take` test images."""
    return {"test_head": data["test"].subset(np.arange(params.take))}


def test_extra_eval_may_take_the_study_params_and_its_predictions_are_kept(tmp_path):
    study = _synthetic(
        variants={"base": {}},
        expected={},
        params={"take": 40},
        stages=(Stage(extra_eval=_first_test_images, keep_predictions=True),),
        seeds=(0,),
        metrics=("test_accuracy",),
    )
    c = study.get_config()
    c.take = 25
    (row,) = study.run(c, tmp_path)["rows"]
    assert set(row["extra"]) == {"test_head"}
    assert row["pred"]["test_head"].shape == (25,)
    # The two-argument form is still called as before.
    two = _synthetic(
        variants={"base": {}},
        expected={},
        stages=(Stage(extra_eval=lambda config, data: {"again": data["test"]}),),
        seeds=(0,),
        metrics=("test_accuracy",),
    )
    (row,) = two.run(two.get_config(), tmp_path / "two")["rows"]
    assert row["extra"]["again"]["accuracy"] == pytest.approx(row["test_accuracy"])
