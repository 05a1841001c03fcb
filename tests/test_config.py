"""Config loading, overrides and the one-line errors for every kind of mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from ember.config import apply_overrides, list_recipes, load, to_yaml
from ember.errors import ConfigError


def test_every_recipe_loads() -> None:
    names = list_recipes()
    assert {"digits-cnn", "digits-mlp", "xor-mlp", "iris-mlp", "mnist-cnn", "cifar10-cnn"} <= set(names)
    for name in names:
        cfg = load(name)
        assert cfg.recipe == name
        assert cfg.description


def test_required_key_names_exist() -> None:
    cfg = load("digits-cnn", ["train.epochs=5", "train.max_steps=7", "train.seed=3",
                              "train.checkpoint_every=2", "data.batch_size=16"])
    assert (cfg.train.epochs, cfg.train.max_steps, cfg.train.seed) == (5, 7, 3)
    assert cfg.train.checkpoint_every == 2 and cfg.data.batch_size == 16


def test_overrides_parse_yaml_values() -> None:
    cfg = load("digits-cnn", ["model.channels=[16,32]", "optim.lr=0.01", "model.batch_norm=false"])
    assert cfg.model.channels == [16, 32]
    assert cfg.optim.lr == 0.01
    assert cfg.model.batch_norm is False


def test_augment_null_turns_augmentation_off() -> None:
    assert load("cifar10-cnn").data.augment.hflip  # its default augments
    off = load("cifar10-cnn", ["data.augment=null"]).data.augment
    assert (off.shift, off.hflip) == (0, False)


def test_switching_model_keeps_only_fitting_keys() -> None:
    cfg = load("digits-cnn", ["model.name=mlp", "model.hidden=[32]"])
    assert cfg.model.name == "mlp" and cfg.model.hidden == [32]
    assert cfg.model.dropout == 0.2  # shared key kept from the recipe


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = load("digits-cnn", ["train.epochs=3"])
    path = tmp_path / "c.yaml"
    path.write_text(to_yaml(cfg))
    again = load(str(path))
    assert again.model_dump() == cfg.model_dump() | {"recipe": "digits-cnn"}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["train.epoch=5"], "train.epoch: unknown key; valid: "),
        (["train.epoch=5"], "did you mean 'epochs'"),
        (["train.epochs=-1"], "train.epochs: got -1"),
        (["train.epochs=five"], "train.epochs: got 'five'"),
        (["data.val_fraction=1.5"], "data.val_fraction: got 1.5"),
        (["model.name=cnx"], "model.name: unknown model 'cnx'; valid: "),
        (["model.name=cnx"], "did you mean 'cnn'"),
        (["data.name=digitz"], "data.name: unknown dataset 'digitz'"),
        (["model.activation=relux"], "did you mean 'relu'"),
        (["model.channelz=[1]"], "did you mean 'channels'"),
        (["optim.name=adamx"], "optim.name: got 'adamx'"),
        (["optim.nesterov=true", "optim.name=adam"], "nesterov needs name: sgd"),
        (["trainepochs"], "expected key=value"),
        (["bogus.key=1"], "bogus: unknown key"),
    ],
)
def test_bad_overrides_name_field_and_value(overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load("digits-cnn", overrides)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_recipe_suggests() -> None:
    with pytest.raises(ConfigError, match="did you mean 'digits-cnn'"):
        load("digits-cn")


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load("nope/missing.yaml")


def test_yaml_python_tags_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(
        f"data: !!python/object/apply:os.system ['touch {marker}']\nmodel: {{name: mlp}}\n"
    )
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(str(path))
    assert not marker.exists()


def test_apply_overrides_does_not_mutate() -> None:
    raw = {"train": {"epochs": 1}}
    out = apply_overrides(raw, ["train.epochs=2"])
    assert raw["train"]["epochs"] == 1 and out["train"]["epochs"] == 2
