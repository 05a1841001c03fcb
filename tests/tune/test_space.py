"""The search space: every mistake is named by its key before any trial runs."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from ember.config import load
from ember.errors import ConfigError
from ember.tune.space import check_space, config_with, load_space, parse_space
from tests.conftest import run_cli
from tests.tune.helpers import write_space


@pytest.fixture(scope="module")
def base():
    return load("digits-mlp")


def test_space_parses_every_kind_and_suggests_config_values(base) -> None:
    space = parse_space({
        "optim.lr": {"loguniform": [1e-4, 1e-1]},
        "data.batch_size": {"int": [16, 128], "log": True},
        "model.hidden": {"choice": [[64], [128, 64]]},
        "model.dropout": {"uniform": [0, 0.5], "step": 0.1},
    })
    check_space(space, base)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    values = space.suggest(study.ask())
    assert 1e-4 <= values["optim.lr"] <= 1e-1
    assert isinstance(values["data.batch_size"], int) and 16 <= values["data.batch_size"] <= 128
    assert values["model.hidden"] in ([64], [128, 64])  # a list again, though Optuna stored a string
    cfg = config_with(base, values)
    assert cfg.model.hidden == values["model.hidden"] and cfg.optim.lr == values["optim.lr"]
    assert space.params[3].grid() == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])


@pytest.mark.parametrize("spec, message", [
    ({"optim.lrr": {"loguniform": [1e-4, 1e-1]}}, "optim.lrr: unknown key"),
    ({"model.dropout": {"uniform": [0, 1.5]}}, "model.dropout: got 1.5"),
    ({"optim.lr": {"uniform": [0.0, 0.1]}}, "optim.lr: got 0.0"),
    ({"data.batch_size": {"uniform": [16, 64]}}, "data.batch_size"),  # an int field refuses 33.85
    ({"model.hidden": {"choice": [[64], "wide"]}}, "model.hidden"),
    ({"optim.lr": {"loguniform": [0.1, 0.001]}}, "optim.lr: empty range [0.1, 0.001]"),
    ({"data.batch_size": {"int": [64, 64]}}, "data.batch_size: empty range"),
    ({"optim.lr": {"loguniform": [0, 0.1]}}, "optim.lr: a log range needs low > 0"),
    ({"optim.lr": {"normal": [0, 1]}}, "optim.lr: unknown entry 'normal'"),
    ({"optim.lr": {"uniform": [0.1, 0.2], "choice": [1]}}, "optim.lr: give exactly one"),
    ({"optim.lr": 0.1}, "optim.lr: expected a mapping"),
    ({"model.hidden": {"choice": []}}, "model.hidden: choice needs a non-empty list"),
    ({"data.batch_size": {"int": [16.5, 64]}}, "data.batch_size: int bounds must be integers"),
    ({"model.name": {"choice": ["mlp", "cnn"]}}, "model.name: searching over the model kind"),
])
def test_bad_space_names_the_key(base, spec: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        check_space(parse_space(spec), base)
    assert message in str(info.value)
    assert str(info.value).startswith("space: ")


def test_grid_needs_finite_values() -> None:
    with pytest.raises(ConfigError, match="optim.lr: the grid sampler needs"):
        parse_space({"optim.lr": {"loguniform": [1e-4, 1e-1]}}).grid()


def test_space_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_space(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim.lr: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_space(bad)
    with pytest.raises(ConfigError, match="expected a mapping of config keys"):
        parse_space([1, 2])


def test_cli_bad_space_exits_2_before_any_trial(tmp_path: Path) -> None:
    space = write_space(tmp_path / "space.yaml", {"optim.lr": {"loguniform": [1e-4, 1e-1]},
                                                  "model.dropuot": {"uniform": [0, 0.5]}})
    proc = run_cli("tune", "digits-mlp", "--space", space, "--trials", "2", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]  # one line, no traceback
    assert "model.dropuot: unknown key" in proc.stderr and "dropout" in proc.stderr
    assert not (tmp_path / "runs").exists()  # nothing was created, no trial ran
