"""Every experiment checks its whole config before the first run trains, also in smoke mode."""

import time

import pytest

from jaxreg import cli
from jaxreg.train import workdir as workdir_lib

EXPERIMENTS = (
    "autoencoder",
    "main",
    "regularization",
    "augmentation_ablation",
    "when_to_augment",
    "domain_fit",
    "how_many",
    "overfitting",
    "transfer",
    "style",
    "gan_augment",
)


def _config(name, smoke, **values):
    module = cli.load_module(name)
    config = module.get_config()
    config.smoke = smoke
    for key, value in values.items():
        node = config
        *path, field = key.split(".")
        for part in path:
            node = node[part]
        node[field] = value
    return module, config


@pytest.fixture
def no_training(monkeypatch):
    """Makes any training call fail the test: validation must stop a bad config before it."""

    def train(*args, **kwargs):
        raise AssertionError("a run started training")

    import jaxreg.experiment
    import jaxreg.train.loop

    monkeypatch.setattr(jaxreg.experiment, "train_and_evaluate", train)
    monkeypatch.setattr(jaxreg.train.loop, "train_and_evaluate", train)  # the study runner's


def test_every_experiment_is_covered():
    assert set(cli.list_experiments()) == set(EXPERIMENTS)


@pytest.mark.parametrize("smoke", [False, True])
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_default_config_validates(name, smoke):
    module, config = _config(name, smoke)
    module.validate(config)


@pytest.mark.parametrize("smoke", [False, True])
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_negative_epochs_are_rejected_also_in_smoke_mode(name, smoke):
    module, config = _config(name, smoke, epochs=-1)
    with pytest.raises(ValueError, match="config key 'epochs' must be >= 1, got -1"):
        module.validate(config)


@pytest.mark.parametrize("smoke", [False, True])
@pytest.mark.parametrize(
    "name,key",
    [
        ("main", "augment_spec"),
        ("overfitting", "augment_spec"),
        ("when_to_augment", "augment_spec"),
        ("when_to_augment", "thicken_spec"),
        ("domain_fit", "degrade_spec"),  # a smoke run trains a lighter spec: still checked
        ("how_many", "policy"),
        ("gan_augment", "policy"),
    ],
)
def test_experiment_spec_strings_are_built_and_named(name, key, smoke):
    module, config = _config(name, smoke, **{key: "digits+nosuchop"})
    with pytest.raises(ValueError, match=f"config key '{key}': unknown augmentation 'nosuchop'"):
        module.validate(config)


@pytest.mark.parametrize(
    "name,key,value,needle",
    [
        # values the smoke settings replace outright are checked as given
        ("regularization", "learning_rate", -1.0, "'learning_rate'.*checked as given"),
        ("overfitting", "data", "nope", "'data'.*nope"),
        ("regularization", "rates.l1_prox", -1.0, "variant 'l1_prox': config key 'l1_prox'"),
        ("augmentation_ablation", "sizes", (20, 0), "sizes=0: config key 'train_per_class'"),
        ("augmentation_ablation", "min_steps", -1, "'min_steps' must be >= 0"),
        ("augmentation_ablation", "combos", "top2,top9", "unknown combos"),
        ("augmentation_ablation", "learning_rate", -1.0, "'learning_rate'.*checked as given"),
        ("augmentation_ablation", "data", "nope", "'data'.*nope"),
        ("when_to_augment", "imbalance", 0.5, "'imbalance' must be >= 1"),
        ("when_to_augment", "narrow_fraction", 0.0, "'narrow_fraction' must be > 0"),
        ("when_to_augment", "sizes", (0,), "sizes=0: config key 'train_per_class'"),
        ("when_to_augment", "parts", "abd", "'parts' must be letters from 'abc'"),
        ("domain_fit", "corruption.jpeg_quality", 0, "'corruption.jpeg_quality'"),
        ("how_many", "steps", -1, "'steps' must be >= 0"),
        ("how_many", "copies", (1, 2), "'copies' must be increasing ints from 0"),
        ("how_many", "copies", (0, -3), "checked as given"),  # smoke replaces the amounts
        ("how_many", "source", "vae", "'source' must be one of"),
        ("gan_augment", "ratios", (0.25, 1.0), "'ratios' must be distinct numbers in"),
        ("gan_augment", "diff_augment", "flip", "'diff_augment': DiffAugment policy"),
        ("gan_augment", "gan_steps", 0, "'gan_steps' must be >= 1"),
        ("overfitting", "onset_patience", 0, "'onset_patience' must be >= 1"),
        ("overfitting", "reg.dropout", 1.5, "variant 'all': config key 'dropout'"),
        ("transfer", "digits.data", "nope", r"part a \(digits\): .*'data'.*nope"),
        ("transfer", "photos.val_per_class", 0, "'val_per_class' must be >= 1"),
        ("transfer", "digits.sizes", (5, 0), "sizes=0: config key 'train_per_class'"),
        ("style", "layers.size", 8, "'layers.size' must be >= 16"),
        ("style", "layers.steps", 0, "'layers.steps' must be >= 1"),
        ("style", "layers.blocks", (3, 1), "'layers.blocks' must be increasing VGG16 blocks"),
        ("style", "layers.blocks", (1, 6), "'layers.blocks' must be increasing VGG16 blocks"),
        ("style", "layers.content", "nope", "'layers.content' must be a sample photo"),
        ("style", "shift.colour_gain", 1.5, "'shift.colour_gain' must be <= 0.99"),
        ("style", "shift.fourier_band", 0.0, "'shift.fourier_band' must be > 0"),
        ("style", "digits_data", "cifar", "'digits_data'.*checked as given"),
        ("style", "amplitude_spec", "amplitude_mix(alpha=2.0)", "'amplitude_spec'"),
        ("style", "jitter_spec", "jitter+nosuchop", "'jitter_spec'"),
        ("style", "data", "mnist5k", "'data' must be 'textures'"),
        ("style", "variants", "none,bogus", "unknown variants"),
        ("style", "model", "cnn_small", "variant 'mixstyle': config key 'model'"),
    ],
)
def test_smoke_mode_does_not_hide_bad_values(name, key, value, needle):
    module, config = _config(name, True, **{key: value})
    with pytest.raises(ValueError, match=needle):
        module.validate(config)


def test_smoke_keeps_a_smaller_user_value():
    module, config = _config("overfitting", True, epochs=3, batch_size=8)
    c = module.STUDY._plan(config).training
    assert (c.epochs, c.batch_size) == (3, 8)  # smoke would give 6, 20
    _, config = _config("overfitting", True)
    c = module.STUDY._plan(config).training
    assert (c.epochs, c.batch_size, c.train_per_class, c.learning_rate) == (6, 20, 10, 1e-2)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_run_validates_before_anything_trains_or_is_written(name, tmp_path, no_training):
    module, config = _config(name, True, epochs=-1)
    with pytest.raises(ValueError, match="'epochs'"):
        module.run(config, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_main_rejects_a_bad_augment_spec_before_the_baseline_trains(tmp_path):
    module, config = _config("main", True, augment_spec="nosuchop")
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="config key 'augment_spec': unknown augmentation"):
        module.run(config, str(tmp_path / "w"))
    assert time.perf_counter() - t0 < 20
    assert not (tmp_path / "w").exists()
    assert not list(tmp_path.rglob("metrics.jsonl"))


@pytest.mark.parametrize(
    "name,overrides,needle",
    [
        ("main", ["--config.augment_spec=nosuchop"], "augment_spec"),
        ("main", ["--config.smoke=true", "--config.epochs=-1"], "epochs"),
        ("domain_fit", ["--config.smoke=true", "--config.degrade_spec=blurr"], "degrade_spec"),
    ],
)
def test_cli_fresh_with_a_bad_config_leaves_the_workdir_untouched(
    name, overrides, needle, tmp_path, capsys, no_training
):
    w = tmp_path / "w"
    with workdir_lib.lock(w):  # a workdir jaxreg made, with a previous run's file
        (w / "results.json").write_text("{}")
    before = sorted(p.name for p in w.iterdir())
    assert workdir_lib.is_jaxreg_workdir(w)
    code = cli.main(["run", name, "--workdir", str(w), "--fresh", *overrides])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxreg: error:") and needle in err
    assert sorted(p.name for p in w.iterdir()) == before
    assert (w / "results.json").read_text() == "{}"
