"""Plug-ins from an installed package (entry points) and from the user's own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

import ember
from ember import plugins
from ember.errors import ConfigError

PLUGIN_SOURCE = '''
"""A model plug-in as a third-party package would ship it."""
from torch import nn
import ember


class ToyConfig(ember.Section):
    hidden: int = 24


def build(cfg, info):
    width = 1
    for d in info.input_shape:
        width *= d
    return nn.Sequential(nn.Flatten(), nn.Linear(width, cfg.hidden), nn.ReLU(),
                         nn.Linear(cfg.hidden, info.num_outputs))


model = ember.ModelPlugin(build=build, config=ToyConfig)
'''

RECIPE = {
    "recipe": "toy-digits",
    "data": {"name": "digits", "limit": 240, "batch_size": 32},
    "model": {"name": "toy_mlp", "hidden": 20},
    "optim": {"name": "adam", "lr": 0.01},
    "train": {"epochs": 2, "threads": 1},
    "log": {"image_grid": 0},
}


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A package `ember_toy_plugin` 1.2.0 with an `ember.models` entry point, importable by path."""
    root = tmp_path_factory.mktemp("site")
    (root / "ember_toy_plugin").mkdir()
    (root / "ember_toy_plugin" / "__init__.py").write_text(PLUGIN_SOURCE)
    info = root / "ember_toy_plugin-1.2.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ember-toy-plugin\nVersion: 1.2.0\n")
    (info / "entry_points.txt").write_text("[ember.models]\ntoy_mlp = ember_toy_plugin:model\n")
    (info / "top_level.txt").write_text("ember_toy_plugin\n")
    return root


def _cli(*args: str | Path, cwd: Path, extra_path: Path | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "ember", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def plugin_run(plugin_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("plugin-run")
    recipe = work / "toy.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    proc = _cli("train", recipe, "--quiet", "--run-dir", work / "run", cwd=work, extra_path=plugin_path)
    assert proc.returncode == 0, proc.stderr
    return work / "run"


@pytest.fixture
def plugin_importable(plugin_path: Path):  # noqa: ANN201
    sys.path.insert(0, str(plugin_path))
    plugins.rediscover()
    yield
    sys.path.remove(str(plugin_path))
    plugins.unregister("model", "toy_mlp")
    plugins.rediscover()


def test_entry_point_model_trains_and_records_its_package(plugin_run: Path) -> None:
    cfg = yaml.safe_load((plugin_run / "config.yaml").read_text())
    assert cfg["model"] == {"name": "toy_mlp", "hidden": 20}
    assert cfg["plugins"]["model"] == {"name": "toy_mlp", "package": "ember-toy-plugin", "version": "1.2.0",
                                       "module": "ember_toy_plugin"}
    summary = json.loads((plugin_run / "summary.json").read_text())
    assert summary["plugins"]["model"]["package"] == "ember-toy-plugin"
    assert summary["test"]["accuracy"] > 0.5
    assert summary["params"] == 64 * 20 + 20 + 20 * 10 + 10


def test_plugin_run_evaluates_from_the_cli(plugin_run: Path, plugin_path: Path) -> None:
    proc = _cli("evaluate", plugin_run, "--json", cwd=plugin_run.parent, extra_path=plugin_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((plugin_run / "summary.json").read_text())
    assert json.loads(proc.stdout)["accuracy"] == pytest.approx(summary["test"]["accuracy"])


def test_missing_plugin_names_the_package_to_install(plugin_run: Path) -> None:
    proc = _cli("evaluate", plugin_run, cwd=plugin_run.parent, extra_path=None)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "pip install 'ember-toy-plugin==1.2.0'" in proc.stderr


def test_plugin_run_serves_and_compresses(plugin_run: Path, plugin_importable: None, tmp_path: Path) -> None:
    import base64
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from ember.compress import compress
    from ember.compress.config import QuantizeStep
    from ember.serve import create_app

    png = io.BytesIO()
    Image.new("L", (8, 8), 128).save(png, format="PNG")
    with TestClient(create_app(plugin_run)) as client:
        assert client.get("/v1/model").status_code == 200
        reply = client.post("/v1/predict", json={"inputs": [{"image": base64.b64encode(png.getvalue()).decode()}]})
        assert reply.status_code == 200, reply.text
        assert reply.json()["predictions"][0]["label"] in [str(i) for i in range(10)]
    [child] = compress(plugin_run, [QuantizeStep(mode="dynamic")], tmp_path / "int8", verbose=False)
    record = json.loads((child.path / "compression.json").read_text())
    assert record["child"]["accuracy"] == pytest.approx(record["parent"]["accuracy"], abs=0.05)
    assert ember.evaluate(child.path)["accuracy"] > 0.5


def test_register_model_in_process(tmp_path: Path) -> None:
    from torch import nn

    class WideConfig(ember.Section):
        width: int = 8

    built: list[int] = []

    def build(cfg: WideConfig, info: ember.DataInfo) -> nn.Module:
        built.append(cfg.width)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, cfg.width), nn.Tanh(), nn.Linear(cfg.width, 10))

    ember.register_model("wide", build, WideConfig)
    try:
        run = ember.train("digits-mlp", ["model.name=wide", "model.width=12", "data.limit=200", "train.epochs=1",
                                          "log.report=false"], run_dir=tmp_path / "run", verbose=False)
        assert built[0] == 12
        assert ember.load_run(run.path).config.model.width == 12
        with pytest.raises(ConfigError, match="model.widht: unknown key"):
            ember.load_config("digits-mlp", ["model.name=wide", "model.widht=3"])
        with pytest.raises(ConfigError, match="built in"):
            ember.register_model("mlp", build)
    finally:
        plugins.unregister("model", "wide")
    with pytest.raises(ConfigError, match=r"was registered in the process that made this run \(in tests"):
        ember.load_run(run.path)


def test_register_data_in_process(tmp_path: Path) -> None:
    import torch

    from ember.data.config import BaseDataConfig

    class NoisyConfig(BaseDataConfig):
        n: int = 200

    def load(cfg: NoisyConfig, seed: int) -> ember.DataBundle:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(cfg.n, 4, generator=g)
        y = (x[:, 0] > 0).long()
        items = list(zip(x, y))
        return ember.data_bundle(items[:150], items[150:175], items[175:], class_names=["neg", "pos"])

    ember.register_data("noisy", load, NoisyConfig)
    try:
        run = ember.train("iris-mlp", ["data.name=noisy", "data.n=240", "train.epochs=30", "log.report=false"],
                          run_dir=tmp_path / "run", verbose=False)
        summary = json.loads(run.summary.read_text())
        assert summary["class_names"] == ["neg", "pos"]
        assert summary["test"]["accuracy"] > 0.8
        with pytest.raises(ConfigError, match="must subclass"):
            from ember.plugins import config_class, lookup

            ember.register_data("bad", load, ember.Section)  # not a BaseDataConfig
            config_class(lookup("data", "bad"), BaseDataConfig)
    finally:
        plugins.unregister("data", "noisy")
        plugins.unregister("data", "bad")


def test_callback_entry_point_names_and_unknown(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown callback 'nope'"):
        ember.train("xor-mlp", ["log.callbacks=[nope]"], run_dir=tmp_path / "r", verbose=False)
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_plugin_config_never_names_an_import_path() -> None:
    with pytest.raises(ConfigError, match="unknown model 'os:system'"):
        ember.load_config("digits-mlp", ["model.name=os:system"])
    assert textwrap.dedent(plugins.__doc__ or "").count("never names an import path") == 1
