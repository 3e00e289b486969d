"""The study runner: stages with cached artifacts, paired seeds, smoke, verdicts, reports."""

import itertools
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
_SCORES = {"base": 0.50, "good": 0.60, "bad": 0.40, "same": 0.50, "best": 0.70}


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
    def curves(a):  # mean curves over seeds; a diverged run draws no line
        return Findings(figures=[a.curves_figure("c.png", {"val_loss": "loss"}, marks={"base": 1})])

    study = _synthetic(
        variants={"base": {}, "wild": {"learning_rate": 1e30}},
        expected={},
        stages=(Stage(),),
        seeds=(0,),
        metrics=("test_accuracy",),
        analyze=curves,
    )
    out = study.run(study.get_config(), tmp_path)
    rows = {r["variant"]: r for r in out["rows"]}
    assert rows["wild"]["diverged"] is True and rows["wild"]["test_accuracy"] is None
    assert isinstance(rows["base"]["test_accuracy"], float)
    assert {r["variant"]: r for r in out["table"]}["wild"]["diverged"] == 1
    assert (tmp_path / "c.png").stat().st_size > 1000
    assert "![c.png](c.png)" in (tmp_path / "report.md").read_text()


def test_an_adaptive_stage_skips_variants_once_its_rule_says_stop(tmp_path):
    def skip(rows, variant, params):  # stop at the first variant not above the one before
        tried = dict.fromkeys(r["variant"] for r in rows)
        means = [np.mean([r["test_accuracy"] for r in rows if r["variant"] == v]) for v in tried]
        return variant != "same" and any(b <= a for a, b in itertools.pairwise(means))

    study = _synthetic(
        variants={v: {} for v in ("base", "good", "bad", "best", "same")},
        expected={},
        stages=(Stage("score", fn=_score, skip=skip),),
    )
    out = study.run(study.get_config(), tmp_path)
    ran = list(dict.fromkeys(r["variant"] for r in out["rows"]))
    assert ran == ["base", "good", "bad", "same"]  # best skipped, "same" is never skipped
    assert not (tmp_path / "best").exists()
    again = study.run(study.get_config(), tmp_path)  # the rule sees the cached rows alike
    assert again["table"] == out["table"]


def test_smoke_set_replaces_values_that_must_still_be_valid_as_given(tmp_path):
    study = _synthetic(smoke={"data": "digits"}, smoke_set={"learning_rate": 0.5})
    c = study.get_config()
    c.smoke = True
    plan = study._plan(c)
    assert plan.training.learning_rate == 0.5  # above the default: set, not shrunk
    c.learning_rate = -1.0
    with pytest.raises(ValueError, match=r"'learning_rate'.*checked as given"):
        study.validate(c)
    c.learning_rate, c.data = 1e-3, "nosuchdata"  # smoke replaces the data set: still checked
    with pytest.raises(ValueError, match=r"nosuchdata.*checked as given"):
        study.validate(c)
    with pytest.raises(ValueError, match="unknown config key 'nosuch' in smoke_set"):
        _synthetic(smoke_set={"nosuch": 1})._plan(c)


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


def _combine(rows, sweep, params):
    """Stage variants from earlier rows and the params: the best variant on test, doubled."""
    best = max((r for r in rows if r["variant"] != "base"), key=lambda r: r["test_accuracy"])
    return {f"{best['variant']}_x{params.factor}": {}}


def _combined(unit):
    return {"test_accuracy": 0.55 + 0.004 * (unit.seed - 1)}


def test_stage_variants_from_earlier_rows_are_compared_with_the_first_stage_baseline(tmp_path):
    study = _synthetic(
        stages=(Stage("score", fn=_score), Stage("combo", fn=_combined, variants=_combine)),
        compare=("score", "combo"),
        params={"factor": 2},
        expected={},
        default_variants=("base", "good", "bad"),
        sweep=("train_per_class", (5, 10)),
        sweep_key="sizes",
    )
    c = study.get_config()
    assert c.sizes == (5, 10) and "sweep" not in c
    c.sizes = (5,)
    out = study.run(c, tmp_path)
    names = [r["variant"] for r in out["table"]]
    assert names == ["base", "good", "bad", "good_x2"]  # "same" is not a default variant
    combo = next(r for r in out["table"] if r["variant"] == "good_x2")
    assert combo["delta_test_accuracy"].startswith("+5.0 ± 0.0")
    assert out["analysis"].comparisons[(5, "good_x2")][0] == pytest.approx(0.05)
    c.sizes = (0,)  # a sweep value's error names the sweep key and the value
    with pytest.raises(ValueError, match="sizes=0: config key 'train_per_class' must be >= 1"):
        study.validate(c)


def test_smoke_set_values_are_set_outright_and_the_given_config_is_checked_too(tmp_path):
    seen = []
    study = _synthetic(
        stages=(Stage("score", fn=lambda u: seen.append(u.config.learning_rate) or _score(u)),),
        smoke_set={"learning_rate": 0.5, "data": "digits"},
        expected={},
    )
    c = study.get_config()
    c.smoke = True
    study.run(c, tmp_path)
    assert set(seen) == {0.5}  # raised above the config's value: not a shrink
    c.data = "nope"  # replaced by the smoke run, but still checked as given
    with pytest.raises(ValueError, match=r"'data'.*nope.*checked as given"):
        study.validate(c)


def _recall(row, unit):
    return {"pred_test_size": len(row["pred"]["test"]), "labels": len(unit.data["test"])}


def test_derive_adds_metrics_from_predictions_also_when_read_back(tmp_path, monkeypatch):
    study = _synthetic(
        variants={"base": {}, "smooth": {"label_smoothing": 0.1}},
        stages=(Stage(keep_predictions=True, derive=_recall),),
        seeds=(0,),
        expected={},
        metrics=("test_accuracy", "pred_test_size"),
    )
    out = study.run(study.get_config(), tmp_path)
    assert all(r["pred_test_size"] == r["labels"] > 0 for r in out["rows"])
    import jaxreg.train.loop as loop

    monkeypatch.setattr(loop, "train_and_evaluate", lambda *a, **k: 1 / 0)
    again = study.run(study.get_config(), tmp_path)
    sizes = [r["pred_test_size"] for r in out["rows"]]
    assert [r["pred_test_size"] for r in again["rows"]] == sizes


def test_delta_plot_draws_the_comparisons(tmp_path):
    comparisons = {(5, "a"): (0.1, 0.05, 2, 3), (10, "a"): (0.02, float("nan"), 1, 1)}
    path = experiment.delta_plot(comparisons, tmp_path / "d.png", baseline="base")
    assert path.stat().st_size > 1000


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


def _shared(unit):
    """A stage outside the sweep: writes a file every sweep value's units read."""
    (unit.dir / "weights.txt").write_text(str(unit.seed))
    return {"source": 10.0 + unit.seed}


def _uses_shared(unit):
    assert unit.artifact("shared").name == "shared"
    assert (unit.artifact("shared") / "weights.txt").read_text() == str(unit.seed)
    return {"test_accuracy": unit.result("shared")["source"] / 100 + 0.01 * unit.sweep}


def test_a_stage_outside_the_sweep_runs_once_per_seed_for_every_value(tmp_path):
    study = _synthetic(
        variants={"base": {}, "good": {}},
        expected={},
        sweep=("train_per_class", (5, 10)),
        stages=(
            Stage("shared", fn=_shared, per="seed", per_sweep=False),
            Stage("score", fn=_uses_shared),
        ),
        seeds=(0, 1),
    )
    out = study.run(study.get_config(), tmp_path)
    shared = [r for r in out["rows"] if r["stage"] == "shared"]
    assert [(r["sweep"], r["seed"]) for r in shared] == [(None, 0), (None, 1)]
    assert (tmp_path / "seed1" / "shared" / "result.json").exists()
    assert not (tmp_path / "train_per_class=5" / "seed0" / "shared").exists()
    scores = {
        (r["sweep"], r["seed"]): r["test_accuracy"] for r in out["rows"] if r["stage"] == "score"
    }
    assert scores[(10, 1)] == pytest.approx(0.21) and scores[(5, 0)] == pytest.approx(0.15)
    with pytest.raises(ValueError, match="per_sweep=False needs per='seed' or 'once'"):
        Stage("x", per="variant", per_sweep=False)


def test_a_study_data_function_may_take_the_params(tmp_path):
    seen = []

    def data(config, seed, params):
        seen.append((seed, params.factor))
        from jaxreg import data as data_lib

        s = data_lib.load_splits("digits")
        return {
            "train": data_lib.stratified_subset(s["train"], 5, seed=seed),
            "val": s["val"],
            "test": s["test"],
        }

    study = _synthetic(data=data, params={"factor": 3}, expected={}, seeds=(0, 1))
    study.run(study.get_config(), tmp_path)
    assert set(seen) == {(0, 3), (1, 3)}  # one call per seed: the runner caches the data


def test_line_plot_draws_reference_lines(tmp_path):
    path = experiment.line_plot(
        {"a": ([5, 10], [0.5, 0.6], [0.01, 0.02])},
        tmp_path / "l.png",
        xlabel="x",
        ylabel="y",
        references={"ceiling": 0.9, "floor": 0.1},
    )
    assert path.stat().st_size > 1000
