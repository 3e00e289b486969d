"""The training config: overrides, and validation of every field before anything runs."""

import math

import pytest

from jaxreg.train.config import apply_overrides, config_changes, default_config, validate_config
from tests.train.conftest import tiny_config


def test_the_default_config_is_valid():
    validate_config(default_config())


@pytest.mark.parametrize(
    "overrides, err, match",
    [
        (["learning_rate=1e400"], ValueError, "'learning_rate' must be a finite number"),
        (["epochs=-1"], ValueError, "'epochs' must be >= 1"),
        (["learning_rate=0"], ValueError, "'learning_rate' must be > 0"),
        (["dropout=1.0"], ValueError, r"'dropout' must be in \[0, 1\)"),
        (["optimizer=adamax"], ValueError, "'optimizer' must be one of"),
        (["schedule=linear"], ValueError, "'schedule' must be one of"),
        (["model=vgg99"], ValueError, "'model' must be one of"),
        (["data=mnist"], ValueError, "'data' must be one of"),
        (["augment=nosuchop"], ValueError, "config key 'augment': unknown augmentation"),
        (
            ["augment=rotate(max_degrees='x')"],
            TypeError,
            "config key 'augment': option max_degrees",
        ),
        (["mix=mixup(alpha=-1)"], ValueError, "config key 'mix'"),
        (["checkpoint.keep=0"], ValueError, "'checkpoint.keep' must be >= 1"),
        (["train_per_class=0"], ValueError, "'train_per_class' must be >= 1"),
    ],
)
def test_every_field_is_checked(overrides, err, match):
    c = apply_overrides(tiny_config(), overrides)  # parses: only validation can reject it
    with pytest.raises(err, match=match):
        validate_config(c)


def test_infinite_numbers_are_caught_in_nested_fields_too():
    c = tiny_config()
    c.early_stopping.min_delta = math.inf
    with pytest.raises(ValueError, match=r"'early_stopping\.min_delta' must be a finite number"):
        validate_config(c)
    c = tiny_config(learning_rate=float("1e400"))
    with pytest.raises(ValueError, match="'learning_rate' must be a finite number, got inf"):
        validate_config(c)


def test_config_changes_names_each_changed_key():
    a = default_config().to_dict()
    b = apply_overrides(default_config(), ["learning_rate=0.1", "early_stopping.patience=3"])
    assert config_changes(a, b.to_dict()) == [
        "early_stopping.patience: 0 -> 3",
        "learning_rate: 0.001 -> 0.1",
    ]
