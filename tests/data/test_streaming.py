"""Streaming data: lazy image folders, worker processes, augmentation, token files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ember.config import load
from ember.data import build
from ember.data import corpus as corpus_module
from ember.data.config import ImageFolderConfig
from ember.data.corpus import TextCorpus
from ember.data.lazy import LazyRows
from ember.data.loader import StepLoader
from ember.data.text_config import TextFilesConfig
from ember.data.token_files import encode_array
from ember.data.tokenizer import CharTokenizer
from ember.errors import ConfigError, DataError
from ember.models import build as build_model
from ember.runs import new_run_dir
from ember.tasks import for_info
from ember.training.batches import BatchPlan
from ember.training.loop import fit

AUGMENT = ("{crop_scale: [0.5, 1.0], rotate: 15, brightness: 0.2, contrast: 0.2, saturation: 0.2, "
           "hue: 0.05, hflip: true, vflip: true, shift: 1, mixup: 0.4, cutmix: 1.0}")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c in ("ant", "bee", "cat"):
        (root / c).mkdir()
        for i in range(24):
            Image.fromarray(rng.integers(0, 255, (14, 18, 3), dtype=np.uint8)).save(root / c / f"{i}.jpg")
    return root


def _cfg(folder: Path, **kw: object) -> ImageFolderConfig:
    aug = kw.pop("augment", {})
    return ImageFolderConfig(path=folder, image_size=(12, 12), augment=aug, **kw)  # type: ignore[arg-type]


def _train(folder: Path, run: Path, *extra: str) -> dict[str, torch.Tensor]:
    cfg = load("digits-cnn", ["data.name=image_folder", f"data.path={folder}", "data.image_size=[12,12]",
                              f"data.augment={AUGMENT}", "data.batch_size=16", "train.epochs=2",
                              "model.channels=[4,8]", "model.hidden=[16]", "train.threads=1", *extra])
    bundle = build(cfg.data, cfg.train.seed)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, bundle.info)
    fit(model, bundle, for_info(bundle.info), cfg, new_run_dir(run.parent, "r", run), torch.device("cpu"))
    return model.state_dict()


def test_workers_give_the_same_weights(folder: Path, tmp_path: Path) -> None:
    inline = _train(folder, tmp_path / "w0", "data.workers=0")
    workers = _train(folder, tmp_path / "w2", "data.workers=2", "data.prefetch=1")
    assert all(torch.equal(inline[k], workers[k]) for k in inline)


def test_augmented_batch_does_not_depend_on_its_composition(folder: Path) -> None:
    # What makes the weights independent of the world size: each sample's augmentation
    # (mixup partner included) is a function of (seed, epoch, index), not of its batch.
    bundle = build(_cfg(folder, augment=json.loads(json.dumps({
        "crop_scale": [0.4, 1.0], "rotate": 20, "brightness": 0.3, "hue": 0.1, "hflip": True,
        "shift": 2, "mixup": 0.5, "cutmix": 1.0}))), 3)
    idx = torch.tensor([5, 0, 17, 9, 30, 2])
    x, y = bundle.train.batch(idx, epoch=1, train=True)
    parts = [bundle.train.batch(p, epoch=1, train=True) for p in (idx[:1], idx[1:4], idx[4:])]
    assert torch.equal(x, torch.cat([p[0] for p in parts])) and torch.equal(y, torch.cat([p[1] for p in parts]))
    assert y.shape == (6, 3) and torch.allclose(y.sum(1), torch.ones(6))  # soft targets
    other, _ = bundle.train.batch(idx, epoch=2, train=True)
    assert not torch.equal(x, other)  # a new epoch draws anew
    plain, labels = bundle.train.batch(idx)  # evaluation: no augmentation, class ids
    assert labels.dtype == torch.long and not torch.equal(plain, x)


def test_lazy_folder_matches_eager_decoding(folder: Path) -> None:
    bundle = build(_cfg(folder, val_fraction=0.2, test_fraction=0.2), 0)
    assert sum(bundle.sizes().values()) == 72 and bundle.info.class_names == ("ant", "bee", "cat")
    x = bundle.train.x[:]  # normalised with the training split's statistics
    assert x.shape == (len(bundle.train), 3, 12, 12)
    torch.testing.assert_close(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3, rtol=0)
    assert torch.equal(bundle.train.x[[3, 1]], x[[3, 1]]) and bundle.train.x[2].shape == (3, 12, 12)
    assert torch.equal(bundle.train.x[:2, 0], x[:2, 0])
    raw = build(_cfg(folder, normalize="none"), 0)
    assert raw.info.mean == (0.0, 0.0, 0.0) and float(raw.train.x.max()) <= 1.0


def test_loader_restarts_at_any_position(folder: Path) -> None:
    ds = build(_cfg(folder, augment={"hflip": True, "shift": 1}), 0).train
    plan = BatchPlan(len(ds), 8, grad_accum=2, seed=4)
    order = plan.order(0)
    full = list(StepLoader(ds, plan, workers=0).steps(order, 0, 0, plan.steps_per_epoch()))
    tail = list(StepLoader(ds, plan, workers=2).steps(order, 0, 2, plan.steps_per_epoch()))
    assert len(tail) == len(full) - 2
    for a, b in zip(full[2:], tail, strict=True):
        assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True))


def test_image_errors_are_one_line(folder: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    for c in ("a", "b"):
        (bad / c).mkdir(parents=True)
        Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(bad / c / "0.png")
    (bad / "b" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="broken.png"):
        build(_cfg(bad), 0)  # found at start-up, not mid-training
    (bad / "b" / "broken.png").unlink()
    ds = build(_cfg(bad, val_fraction=0.0, test_fraction=0.0, normalize="none"), 0).train
    (bad / "a" / "0.png").write_bytes(b"gone bad")  # changed after the index was built
    plan = BatchPlan(len(ds), 2, shuffle=False)
    with pytest.raises(DataError, match=r"^cannot read image .*0\.png"):
        list(StepLoader(ds, plan, workers=1).steps(plan.order(0), 0, 0, 1))


@pytest.mark.parametrize("override, match", [
    ("data.workers=-1", "workers"),
    ("data.augment.crop_scale=[0.9,0.2]", "crop_scale"),
    ("data.normalize=imagenet", "normalize"),
])
def test_bad_options(folder: Path, override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load("digits-cnn", ["data.name=image_folder", f"data.path={folder}", override])


def test_lazy_rows_index_like_a_tensor() -> None:
    t = torch.arange(40).view(10, 4)
    rows = LazyRows(lambda idx: t[idx], 10, (4,))
    for key in (slice(2, 7), 3, -1, [1, 5], torch.tensor([0, 9]), (slice(None, 2), 1), (4, 2)):
        assert torch.equal(rows[key], t[key]), key
    assert rows.shape == t.shape and torch.equal(rows.max(), t.max()) and torch.equal(torch.cat([rows]), t)


# ---- token files ----------------------------------------------------------------------------

def _text_files(root: Path) -> list[Path]:
    root.mkdir()
    words = ["alpha", "beta", "gamma", "délta", "ε", "zeta"]
    files = []
    for i in range(4):
        lines = [" ".join(words[(i + j + k) % 6] for k in range(7)) for j in range(300)]
        f = root / f"doc{i}.txt"
        f.write_text("\n".join(lines) + "\n", encoding="utf-8")
        files.append(f)
    return files


def test_token_files_are_built_once_then_mapped(tmp_path: Path) -> None:
    files = _text_files(tmp_path / "docs")
    cfg = TextFilesConfig(paths=[tmp_path / "docs"], block_size=16, token_cache=tmp_path / "cache")
    first = build(cfg, 0)
    folder = Path(first.info.extra["token_files"])
    meta = json.loads((folder / "train.json").read_text())
    assert meta["dtype"] == "uint16" and meta["count"] == first.info.extra["tokens"]["train"]
    assert (folder / "train.bin").stat().st_size == 2 * meta["count"]
    built = (folder / "train.bin").stat().st_mtime_ns
    again = build(cfg, 1)
    assert (folder / "train.bin").stat().st_mtime_ns == built  # mapped, not re-tokenised
    assert torch.equal(again.train.x[:], first.train.x[:]) and torch.equal(again.val.y[:], first.val.y[:])
    # Windows and next-token targets, as the in-memory windows were.
    ids = torch.from_numpy(np.fromfile(folder / "train.bin", dtype=np.uint16).astype(np.int64))
    assert torch.equal(first.train.x[1], ids[16:32]) and torch.equal(first.train.y[1], ids[17:33])
    text = first.tokenizer.decode(first.train.x[0].tolist())
    assert len(text) == 16 and any(text in f.read_text(encoding="utf-8") for f in files)


@pytest.mark.parametrize("damage", ["truncate", "sidecar", "tokenizer", "corpus"])
def test_stale_or_truncated_cache_is_rebuilt(tmp_path: Path, damage: str) -> None:
    files = _text_files(tmp_path / "docs")
    cfg = TextFilesConfig(paths=[tmp_path / "docs"], block_size=16, token_cache=tmp_path / "cache")
    good = build(cfg, 0)
    folder = Path(good.info.extra["token_files"])
    if damage == "truncate":
        data = (folder / "train.bin").read_bytes()
        (folder / "train.bin").write_bytes(data[: len(data) // 2])
    elif damage == "sidecar":
        (folder / "val.json").write_text("{not json")
    elif damage == "tokenizer":
        (folder / "tokenizer.json").write_text(json.dumps({"kind": "char", "chars": ["a", "b"]}))
    else:
        files[0].write_text(files[0].read_text() + "one more line\n", encoding="utf-8")
    again = build(cfg, 0)
    if damage == "corpus":  # a new corpus gets its own folder
        assert again.info.extra["corpus_sha256"] != good.info.extra["corpus_sha256"]
        return
    assert torch.equal(again.train.x[:], good.train.x[:]) and torch.equal(again.val.x[:], good.val.x[:])
    assert (folder / "train.bin").stat().st_size == 2 * again.info.extra["tokens"]["train"]


def test_cache_that_cannot_be_written(tmp_path: Path) -> None:
    _text_files(tmp_path / "docs")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = TextFilesConfig(paths=[tmp_path / "docs"], token_cache=blocker / "cache")
    with pytest.raises(DataError, match="data.token_cache"):
        build(cfg, 0)


def test_streamed_pieces_rebuild_the_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpus_module, "PIECE_BYTES", 7)  # pieces far smaller than the lines
    f = tmp_path / "one.txt"
    text = "short\n" + "é" * 40 + "\nlast line without break ε"
    f.write_text(text, encoding="utf-8")
    corpus = TextCorpus.by_position([f], 0.0, 0.0)
    pieces = list(corpus.pieces("train"))
    assert len(pieces) > 2 and "".join(pieces) == text
    split = TextCorpus.by_position([f, f], 0.25, 0.25)
    joined = {s: "".join(split.pieces(s)) for s in ("train", "val", "test")}
    assert "".join(joined.values()).replace("\n\n", "") == (text + text).replace("\n\n", "")
    assert corpus.sample("train", 20) and len(corpus.sample("train", 20)) <= 20


def test_char_encoding_matches_the_tokenizer() -> None:
    tok = CharTokenizer.fit("hello wörld\n")
    text = "hello, wörld! ε\n"
    assert encode_array(tok, text).tolist() == tok.encode(text)


def test_bpe_fits_on_a_bounded_sample(tmp_path: Path) -> None:
    pytest.importorskip("tokenizers")
    _text_files(tmp_path / "docs")
    cfg = TextFilesConfig(paths=[tmp_path / "docs"], block_size=16, tokenizer="bpe", bpe_vocab_size=300,
                          bpe_sample_chars=10_000, token_cache=tmp_path / "cache")
    bundle = build(cfg, 0)
    assert bundle.info.extra["tokenizer"] == "bpe" and len(bundle.train) > 0
    assert int(bundle.train.x[:].max()) < bundle.info.num_outputs


def test_plan_reports_the_data_side(folder: Path) -> None:
    from ember.plan import plan

    fp = plan("digits-cnn", ["data.name=image_folder", f"data.path={folder}", "data.image_size=[12,12]",
                             "data.workers=2"])["data"]["footprint"]
    assert fp["items"] == {"train": 50, "val": 11, "test": 11} and fp["streamed"] and fp["workers"] == 2
    assert fp["disk_bytes"] == sum(f.stat().st_size for f in folder.rglob("*.jpg"))
    assert fp["memory_bytes"] == 72 * 3 * 12 * 12 * 4 and fp["fits_in_memory"] in (True, None)
    assert fp["decode_s_per_item"] > 0 and fp["decode_s_per_epoch"] > 0
    digits = plan("digits-cnn")["data"]["footprint"]
    assert not digits["streamed"] and digits["disk_bytes"] is None


def test_ranks_with_workers_hold_the_single_process_batch(folder: Path) -> None:
    # Two ranks, each with its own worker, build between them exactly the one-process step.
    ds = build(_cfg(folder, augment={"crop_scale": [0.5, 1.0], "hflip": True, "mixup": 0.3}), 1).train
    single = BatchPlan(len(ds), 10, seed=2)
    order = single.order(1)
    whole = list(StepLoader(ds, single, workers=0).steps(order, 1, 0, 3))
    ranks = [list(StepLoader(ds, BatchPlan(len(ds), 10, seed=2, world_size=2, rank=r), workers=1)
                  .steps(order, 1, 0, 3)) for r in (0, 1)]
    for step in range(3):
        (x, y), = whole[step]
        parts = [b for r in (0, 1) for b in ranks[r][step]]
        assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)
