"""Data at scale: Ember's streaming pipeline against a hand-written DataLoader, and its memory.

Three measurements, each figure printed as JSON:

  images     A generated folder of small JPEGs (10 classes). Images/s of Ember's pipeline
             (`image_folder` + `StepLoader`, the loop's feed) at workers 0, 1 and 2, against a
             hand-written `torch.utils.data.DataLoader` (2 workers, batch 64, shuffled) doing
             the same decode (PIL, resize to 32x32) and the same augmentation (kornia
             crop-and-resize, flip, brightness, contrast, normalisation), with its random
             parameters from torch's RNG as a user would write it. `ratio_w2` is Ember at 2
             workers / the baseline: the comparable figure.
  rss        Peak RSS of a short training run (each in a fresh process, workers 2) on 2,000
             and on all the images: the main process, and the largest worker.
  corpus     A generated text corpus of `--corpus-mb` MB in 8 files, trained for a few steps
             as `text_files` (char tokenizer, a tiny GPT): peak RSS of the process that
             tokenises it into the token files and trains, then of a second run that maps them.

Timed regions exclude building the index and generating data; every generated file is
removed at the end. Heavy: run it when the machine is quiet (the load average is printed).

    python benchmarks/data_throughput.py --images 20000 --corpus-mb 1024
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

SIZE = (32, 32)
BATCH = 64
AUGMENT = {"crop_scale": [0.5, 1.0], "hflip": True, "brightness": 0.2, "contrast": 0.2}
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def make_images(root: Path, n: int, classes: int = 10, side: int = 48) -> None:
    """`n` small JPEGs: per class a colour and stripes, with noise."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        c = i % classes
        base = np.zeros((side, side, 3), dtype=np.float32)
        base[..., c % 3] = 120 + 10 * c
        base[:: 2 + c % 4] += 60
        img = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / f"class{c}" / f"{i:06d}.jpg", quality=90)


def _rss_kb() -> dict[str, int]:
    return {"self_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "largest_child_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}


# ---- images/s -----------------------------------------------------------------------------

def ember_rate(root: Path, workers: int, batches: int) -> float:
    from ember.data import build
    from ember.data.config import ImageFolderConfig
    from ember.data.loader import StepLoader
    from ember.training.batches import BatchPlan

    cfg = ImageFolderConfig(path=root, image_size=SIZE, augment=AUGMENT, normalize="none",
                            val_fraction=0.0, test_fraction=0.0)
    bundle = build(cfg, 0)
    ds = bundle.train
    ds.mean, ds.std = MEAN, STD  # the same fixed normalisation as the baseline
    plan = BatchPlan(len(ds), BATCH, seed=0)
    loader = StepLoader(ds, plan, workers=workers, prefetch=2)
    start = time.perf_counter()
    seen = 0
    for step in loader.steps(plan.order(0), 0, 0, batches):
        seen += sum(len(y) for _, y in step)
    return seen / (time.perf_counter() - start)


class _Folder(torch.utils.data.Dataset):
    """The hand-written dataset: list the files, decode one per __getitem__."""

    def __init__(self, root: Path) -> None:
        self.files = sorted(str(p) for p in root.rglob("*.jpg"))
        classes = sorted({Path(f).parent.name for f in self.files})
        self.labels = [classes.index(Path(f).parent.name) for f in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        with Image.open(self.files[i]) as img:
            arr = np.asarray(img.convert("RGB").resize((SIZE[1], SIZE[0]), Image.Resampling.BILINEAR))
        return torch.from_numpy(arr.transpose(2, 0, 1).copy()), self.labels[i]


def _augment(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Collate + the same augmentation, parameters from torch's RNG (as a user writes it)."""
    import kornia

    x = torch.stack([b[0] for b in batch]).float().div_(255.0)
    y = torch.tensor([b[1] for b in batch])
    n, _, h, w = x.shape
    area = 0.5 + 0.5 * torch.rand(n)
    ratio = torch.exp(torch.empty(n).uniform_(np.log(3 / 4), np.log(4 / 3)))
    cw, ch = (torch.sqrt(area * ratio) * w).clamp(1, w), (torch.sqrt(area / ratio) * h).clamp(1, h)
    x0, y0 = torch.rand(n) * (w - cw), torch.rand(n) * (h - ch)
    x1, y1 = x0 + cw - 1, y0 + ch - 1
    boxes = torch.stack([torch.stack([x0, y0], -1), torch.stack([x1, y0], -1),
                         torch.stack([x1, y1], -1), torch.stack([x0, y1], -1)], 1)
    x = kornia.geometry.transform.crop_and_resize(x, boxes, (h, w))
    x = kornia.enhance.adjust_brightness(x, (2 * torch.rand(n) - 1) * 0.2)
    x = kornia.enhance.adjust_contrast(x, 1 + (2 * torch.rand(n) - 1) * 0.2)
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    x = torch.where((torch.rand(n) < 0.5)[:, None, None, None], x.flip(-1), x)
    return x, y


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)


def baseline_rate(root: Path, workers: int, batches: int) -> float:
    import kornia  # noqa: F401 - imported before the workers fork, as Ember does

    loader = torch.utils.data.DataLoader(_Folder(root), batch_size=BATCH, shuffle=True, num_workers=workers,
                                         collate_fn=_augment, worker_init_fn=_one_thread, prefetch_factor=2,
                                         generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    seen = 0
    for i, (_, y) in enumerate(loader):
        seen += len(y)
        if i + 1 == batches:
            break
    return seen / (time.perf_counter() - start)


# ---- peak RSS, each in a fresh process ----------------------------------------------------

def child_train_images(root: Path, steps: int, runs: Path) -> dict[str, Any]:
    from ember.api import train

    train("digits-cnn", ["data.name=image_folder", f"data.path={root}", "data.image_size=[32,32]",
                         f"data.augment={json.dumps(AUGMENT)}", "data.workers=2", f"train.max_steps={steps}",
                         "data.batch_size=64", "log.report=false", "train.threads=1",
                         "data.stats_images=2000", f"log.runs_dir={runs}"], quiet=True)
    return _rss_kb()


def child_train_corpus(folder: Path, cache: Path, steps: int, runs: Path) -> dict[str, Any]:
    from ember.api import train

    start = time.perf_counter()
    train("stdlib-char-gpt", ["data.name=text_files", f"data.paths=[{folder}]", f"data.token_cache={cache}",
                              "data.block_size=64", "data.batch_size=16", "model.n_layer=1", "model.n_head=2",
                              "model.n_embd=32", f"train.max_steps={steps}", "train.epochs=1",
                              "data.eval_batch_size=64", "log.report=false", f"log.runs_dir={runs}",
                              "data.limit=4096", "data.val_fraction=0.0001", "data.test_fraction=0.0001"],
          quiet=True)
    return {**_rss_kb(), "wall_s": time.perf_counter() - start}


def make_corpus(folder: Path, megabytes: int, files: int = 8) -> None:
    """`megabytes` MB of English-like lines over `files` big files (written 1 MB at a time) and
    four small ones, which the split by file gives to validation and test (small held-out
    splits keep the final evaluation short)."""
    rng = np.random.default_rng(1)
    words = np.array(["the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by",
                      "it", "at", "from", "this", "be", "or", "are", "an", "which", "model", "data", "train",
                      "loss", "batch", "token", "memory", "stream", "worker", "epoch", "value", "layer",
                      "weight", "gradient", "sample", "image", "corpus", "file", "index", "cache"])
    folder.mkdir(parents=True)
    per_file = megabytes * (1 << 20) // files
    for f in range(files):
        with open(folder / f"part{f}.txt", "w") as out:
            written = 0
            while written < per_file:
                picks = words[rng.integers(0, len(words), 200_000)]
                text = " ".join(picks).replace(" the ", "\nthe ", 4000)
                out.write(text + "\n")
                written += len(text) + 1
    for f in range(4):
        picks = words[rng.integers(0, len(words), 10_000)]
        (folder / f"small{f}.txt").write_text(" ".join(picks).replace(" the ", "\nthe ") + "\n")


def _child(args: list[str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--small", type=int, default=2_000)
    ap.add_argument("--batches", type=int, default=100, help="batches timed per configuration")
    ap.add_argument("--corpus-mb", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--child", choices=["images", "corpus"])
    ap.add_argument("--path")
    ap.add_argument("--cache")
    ap.add_argument("--runs")
    args = ap.parse_args()
    if args.child == "images":
        print(json.dumps(child_train_images(Path(args.path), args.steps, Path(args.runs))))
        return
    if args.child == "corpus":
        print(json.dumps(child_train_corpus(Path(args.path), Path(args.cache), args.steps, Path(args.runs))))
        return
    tmp = Path(tempfile.mkdtemp(prefix="ember-data-bench-"))
    out: dict[str, Any] = {"load_average_start": os.getloadavg(), "cpus": os.cpu_count()}
    try:
        t = time.perf_counter()
        make_images(tmp / "big", args.images)
        make_images(tmp / "small", args.small)
        out["images_generated_s"] = time.perf_counter() - t
        rates: dict[str, float] = {}
        for w in (0, 1, 2):
            rates[f"ember_w{w}"] = ember_rate(tmp / "big", w, args.batches)
        rates["baseline_w2"] = baseline_rate(tmp / "big", 2, args.batches)
        rates["ember_w2_again"] = ember_rate(tmp / "big", 2, args.batches)  # drift check
        out["images_per_s"] = rates
        out["ratio_w2"] = max(rates["ember_w2"], rates["ember_w2_again"]) / rates["baseline_w2"]
        runs = tmp / "runs"
        rss = {name: _child(["--child", "images", "--path", str(tmp / name), "--steps", str(args.steps),
                             "--runs", str(runs)]) for name in ("small", "big")}
        out["rss_images"] = {"images": {"small": args.small, "big": args.images}, **rss,
                             "ratio_big_small": rss["big"]["self_kb"] / rss["small"]["self_kb"]}
        shutil.rmtree(tmp / "big")
        shutil.rmtree(tmp / "small")
        t = time.perf_counter()
        make_corpus(tmp / "corpus", args.corpus_mb)
        out["corpus_generated_s"] = time.perf_counter() - t
        out["corpus_bytes"] = sum(f.stat().st_size for f in (tmp / "corpus").iterdir())
        cargs = ["--child", "corpus", "--path", str(tmp / "corpus"), "--cache", str(tmp / "cache"),
                 "--steps", str(args.steps), "--runs", str(runs)]
        first = _child(cargs)
        second = _child(cargs)
        out["rss_corpus"] = {"tokenise_and_train": first, "mapped_and_train": second,
                             "token_file_bytes": sum(f.stat().st_size for f in (tmp / "cache").rglob("*.bin")),
                             "under_1gib": first["self_kb"] < (1 << 20) and second["self_kb"] < (1 << 20)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["load_average_end"] = os.getloadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
