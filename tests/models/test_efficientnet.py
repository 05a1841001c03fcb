"""EfficientNet-Lite0 with the packaged TF-release weights: a functional reference forward over the
raw state dict (which proves the key map, TF "SAME" padding and the Lite normalisation), Grace
Hopper's ImageNet labels, freezing, and a tiny training run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import ember
from ember import pretrained
from ember.data.bundle import DataInfo
from ember.data.imagenet import IMAGENET_MEAN, IMAGENET_STD, imagenet_eval
from ember.data.packaged import find_package_file
from ember.errors import ConfigError
from ember.models import build
from ember.models.efficientnet import (
    STAGES,
    EfficientNetLite0,
    EfficientNetLite0Config,
    packaged_key,
    same_padding,
)

ENTRY = pretrained.VISION_WEIGHTS["efficientnet_lite0"]
if find_package_file(ENTRY.package, *ENTRY.parts) is None:
    pytest.skip(f"the EfficientNet-Lite0 weights are not installed ({ENTRY.install})", allow_module_level=True)

FASHION = DataInfo("classification", "image", (1, 28, 28), 10, mean=(0.286,), std=(0.353,),
                   extra={"source": "fashion_mnist"})


@pytest.fixture(scope="module")
def raw_state() -> dict[str, torch.Tensor]:
    return torch.load(pretrained.packaged_weights("efficientnet_lite0", "test"), map_location="cpu",
                      weights_only=True)


@pytest.fixture(scope="module")
def imagenet_model(cache_home: Path) -> EfficientNetLite0:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(cache_home))
        info = DataInfo("classification", "image", (3, 224, 224), 1000, mean=IMAGENET_MEAN, std=IMAGENET_STD)
        return build(EfficientNetLite0Config(), info).eval()


@pytest.fixture(scope="module")
def hopper() -> Path:
    matplotlib = pytest.importorskip("matplotlib")
    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def _tf_same(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow's SAME padding written out: total = (ceil(n/s) - 1)·s + k - n, the odd pixel last."""
    pads = []
    for n in (x.shape[-1], x.shape[-2]):  # F.pad wants the last dimension first
        total = max((math.ceil(n / stride) - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def _conv_bn(x: torch.Tensor, sd: dict[str, torch.Tensor], conv: str, bn: str, stride: int = 1,
             depthwise: bool = False, relu6: bool = True) -> torch.Tensor:
    w = sd[f"{conv}.weight"]
    x = F.conv2d(_tf_same(x, w.shape[-1], stride), w, None, stride, 0, 1, w.shape[0] if depthwise else 1)
    x = F.batch_norm(x, sd[f"{bn}.running_mean"], sd[f"{bn}.running_var"], sd[f"{bn}.weight"], sd[f"{bn}.bias"],
                     training=False, eps=1e-3)
    return F.relu6(x) if relu6 else x


def reference_forward(sd: dict[str, torch.Tensor], pixels: torch.Tensor) -> torch.Tensor:
    """EfficientNet-Lite0 over the packaged names, torch.nn.functional only, from pixels in [0, 1]."""
    h = _conv_bn((pixels * 255 - 127) / 128, sd, "_conv_stem", "_bn0", stride=2)
    i = 0
    for t, _, s, _, n in STAGES:
        for j in range(n):
            p = f"_blocks.{i}"
            e = _conv_bn(h, sd, f"{p}._expand_conv", f"{p}._bn0") if t != 1 else h
            e = _conv_bn(e, sd, f"{p}._depthwise_conv", f"{p}._bn1", stride=s if j == 0 else 1, depthwise=True)
            e = _conv_bn(e, sd, f"{p}._project_conv", f"{p}._bn2", relu6=False)
            h = h + e if e.shape == h.shape else e
            i += 1
    h = _conv_bn(h, sd, "_conv_head", "_bn1").mean((2, 3))  # (B, 1280)
    return F.linear(h, sd["_fc.weight"], sd["_fc.bias"])


def test_key_map_matches_a_functional_forward_over_the_raw_state_dict(
        imagenet_model: EfficientNetLite0, raw_state: dict[str, torch.Tensor], hopper: Path) -> None:
    x = torch.cat([imagenet_eval(hopper)[None], torch.randn(1, 3, 224, 224)])  # ImageNet-normalised
    pixels = x * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(imagenet_model(x), reference_forward(raw_state, pixels), atol=1e-4, rtol=1e-4)
    assert sorted(packaged_key(k) for k in raw_state) == sorted(imagenet_model.state_dict())
    for bad in ("_blocks.16._bn0.weight", "_blocks.0._expand_conv.weight", "_se_reduce.weight"):
        with pytest.raises(KeyError):
            packaged_key(bad)


def test_grace_hopper_is_dressed_for_a_ceremony(imagenet_model: EfficientNetLite0, hopper: Path) -> None:
    with torch.no_grad():
        probs = imagenet_model(imagenet_eval(hopper)[None]).softmax(-1)[0]
    top5 = probs.topk(5).indices.tolist()
    # academic gown, mortarboard, military uniform, vestment, Windsor tie: what these weights give
    assert top5 == [400, 667, 652, 887, 906]


def test_tf_same_padding_is_asymmetric_only_where_tf_pads_asymmetrically() -> None:
    assert same_padding(224, 3, 2) == (0, 1) and same_padding(225, 3, 2) == (1, 1)
    assert same_padding(112, 5, 2) == (1, 2) and same_padding(14, 5, 1) == (2, 2) and same_padding(7, 1, 1) == (0, 0)


def test_freeze_keeps_the_backbone_and_the_run_reloads(imagenet_model: EfficientNetLite0, tmp_path: Path) -> None:
    model = build(EfficientNetLite0Config(freeze=True, input_size=32), FASHION)
    assert model.head.out_features == 10 and not any(p.requires_grad for p in model.features.parameters())
    imagenet = imagenet_model.state_dict()
    assert all(torch.equal(t, imagenet[k]) for k, t in model.state_dict().items() if k.startswith("features."))
    model.train()
    assert not model.features.training and model.head.training
    with pytest.raises(ConfigError, match="model.num_classes: 7, but data 'fashion_mnist' has 10 outputs"):
        build(EfficientNetLite0Config(num_classes=7, pretrained=False), FASHION)
    tiny = ["model.name=efficientnet_lite0", "model.input_size=32", "model.freeze=true", "train.max_steps=2",
            "train.threads=1", "log.report=false", f"log.runs_dir={tmp_path}"]
    run = ember.train("digits-cnn", tiny, verbose=False)
    assert json.loads(run.summary.read_text())["trainable_params"] == 1280 * 10 + 10
    with torch.no_grad():
        assert ember.load_run(run.path).model.eval()(torch.randn(2, 1, 8, 8)).shape == (2, 10)
