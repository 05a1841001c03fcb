"""ONNX export through the maintained exporter (`torch.onnx.export(..., dynamo=True)`), then a
parity check against the eager model on real test samples, recorded in `export.json`.

A GPT exports its logits graph (token ids -> logits); generation over ONNX Runtime runs in
Python on top of it (`ember.export.onnx.generate_onnx`).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ember import data as data_mod
from ember.compress import require_float
from ember.errors import ConfigError, RunError
from ember.formatting import Progress, silent
from ember.loading import load_run, load_tokenizer
from ember.models.sampling import sample_next
from ember.runs import atomic_write_text
from ember.safe_paths import inside, read_bytes
from ember.timing import median_ms

__all__ = ["export_onnx", "parity", "latency_ms", "generate_onnx", "onnx_session", "check_external_data"]


class _LastTokenFree(nn.Module):
    """Wraps a model so the exported graph has one tensor in and one out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _dynamic_shapes(info: Any) -> dict[str, dict[int, Any]]:
    batch = torch.export.Dim("batch", min=1, max=65536)
    if info.input_kind == "tokens" and info.task == "lm":
        # Language models take any length up to the block size.
        return {"x": {0: batch, 1: torch.export.Dim("sequence", min=1, max=int(info.input_shape[0]))}}
    return {"x": {0: batch}}


def check_external_data(path: Path) -> None:
    """Refuse an ONNX file whose tensors' external data would be read from outside its folder.

    An `.onnx` file in a run folder is untrusted: a tensor may name `../../etc/passwd` or an
    absolute path as its external data, and ONNX Runtime would read it. Every location must be
    a relative path inside the file's folder with no link on the way (`safe_paths.inside`).

    Raises:
        RunError: a location outside the folder, or a link; ConfigError: not an ONNX file.
    """
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

    try:
        proto = onnx.ModelProto()
        proto.ParseFromString(read_bytes(path))  # the graph only: no external data is read here
    except RunError:
        raise
    except Exception as exc:  # noqa: BLE001  (protobuf's decode errors have no common base)
        raise ConfigError(f"'{path}' is not a valid ONNX file ({str(exc).splitlines()[0][:120]})") from None
    for tensor in _get_all_tensors(proto):
        if not uses_external_data(tensor):
            continue
        location = ExternalDataInfo(tensor).location
        if not location or Path(location).is_absolute() or ".." in Path(location).parts:
            raise RunError(f"'{path}': tensor '{tensor.name}' reads external data from '{location}', outside "
                           "the model's folder (refused)")
        inside(path.parent, location)


def onnx_session(path: Path) -> Any:
    """An ONNX Runtime session on the CPU for `path`, after `check_external_data`."""
    import onnxruntime as ort

    check_external_data(path)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def parity(session: Any, model: nn.Module, x: torch.Tensor, task: str) -> dict[str, float]:
    """Max |onnx - eager| over outputs, and how often their argmax predictions agree."""
    name = session.get_inputs()[0].name
    onnx_out = session.run(None, {name: x.numpy()})[0]
    with torch.no_grad():
        eager = model(x).float().numpy()
    result = {"max_abs_diff": float(np.abs(onnx_out - eager).max()), "samples": int(len(x))}
    if task in ("classification", "lm"):
        result["prediction_agreement"] = float((onnx_out.argmax(-1) == eager.argmax(-1)).mean())
    return result


def latency_ms(session: Any, x: torch.Tensor, repeats: int = 30) -> float:
    """Median latency of one batch through ONNX Runtime, in milliseconds."""
    feed = {session.get_inputs()[0].name: x.numpy()}
    return median_ms(lambda: session.run(None, feed), warmup=1, repeats=repeats)


def export_onnx(run_dir: str | Path, int8: bool = False, opset: int = 18, samples: int = 64,
                progress: Progress = silent) -> dict[str, Any]:
    """Export RUN_DIR's model to RUN_DIR/export/model.onnx (and model.int8.onnx); returns export.json.

    `progress` receives a line per phase (tracing takes 10-40 s; the CLI prints them).
    """
    if not 17 <= opset <= 23:
        raise ConfigError(f"--opset: got {opset}; valid: 17..23")

    loaded = load_run(run_dir)
    require_float(loaded.model, loaded.run.path, "torch's ONNX exporter cannot trace (use ember export --int8)")
    model, info = loaded.model.eval(), loaded.info
    bundle = data_mod.build(loaded.config.data, loaded.config.train.seed)
    test = bundle.test if len(bundle.test) else bundle.val
    x = test.x[:samples]
    out_dir = loaded.run.tool_dir("export")
    out_dir.mkdir(exist_ok=True)
    path = out_dir / "model.onnx"
    start = time.perf_counter()
    progress(f"tracing the model with torch.export (opset {opset})")
    with tempfile.TemporaryDirectory(dir=out_dir) as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        raw = Path(scratch) / "model.onnx"
        try:
            torch.onnx.export(_LastTokenFree(model), (x[:2],), str(raw), dynamo=True, opset_version=opset,
                              input_names=["input"], output_names=["output"],
                              dynamic_shapes=_dynamic_shapes(info), verbose=False)
        except Exception as exc:  # noqa: BLE001  (torch.export's errors are many and long)
            why = str(exc).strip().splitlines()[0][:200]
            raise ConfigError(f"cannot export '{loaded.run.path.name}' to ONNX: {why}") from None
        # The exporter may put weights in a side file; keep one self-contained file instead.
        import onnx

        proto = onnx.load(str(raw))
        onnx.save_model(proto, str(Path(scratch) / "single.onnx"), save_as_external_data=False)
        (Path(scratch) / "single.onnx").replace(path)
    result: dict[str, Any] = {"format": "onnx", "opset": opset, "exporter": "torch.onnx dynamo",
                              "seconds": round(time.perf_counter() - start, 3),
                              "path": str(path.relative_to(loaded.run.path)),
                              "size_mb": round(path.stat().st_size / 2**20, 4)}
    progress(f"wrote {result['path']} ({result['size_mb']:.2f} MB); checking parity with onnxruntime on "
             f"{len(x)} samples")
    session = onnx_session(path)
    result["parity"] = parity(session, model, x, info.task)
    result["latency_ms_b1"] = round(latency_ms(session, x[:1]), 4)
    if info.input_kind == "tokens" and info.task == "lm":
        short = x[:4, : max(1, x.shape[1] // 2)]  # a shorter sequence through the same graph
        result["parity_short_sequence"] = parity(session, model, short, info.task)
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        q_path = out_dir / "model.int8.onnx"
        progress("quantizing the weights to int8 (onnxruntime dynamic quantization)")
        logging.getLogger().setLevel(logging.ERROR)  # the quantizer logs advice at WARNING on the root logger
        quantize_dynamic(str(path), str(q_path), weight_type=QuantType.QInt8)
        q_session = onnx_session(q_path)
        result["int8"] = {"path": str(q_path.relative_to(loaded.run.path)),
                          "size_mb": round(q_path.stat().st_size / 2**20, 4),
                          "parity": parity(q_session, model, x, info.task),
                          "latency_ms_b1": round(latency_ms(q_session, x[:1]), 4)}
    atomic_write_text(out_dir / "export.json", json.dumps(result, indent=2))
    return result


def generate_onnx(run_dir: str | Path, prompt: str, max_new_tokens: int = 100, temperature: float = 0.8,
                  top_k: int | None = None, seed: int = 0) -> str:
    """Text from an exported GPT through ONNX Runtime (the window recomputed each step)."""
    loaded = load_run(run_dir)
    path = loaded.run.tool_dir("export") / "model.onnx"
    if not path.is_file():
        raise ConfigError(f"'{loaded.run.path}' has no export/model.onnx; run: ember export {loaded.run.path}")
    session = onnx_session(path)
    tok = load_tokenizer(loaded.run.path)
    block = int(loaded.info.input_shape[0])
    vocab = int(loaded.info.extra.get("vocab_size", loaded.info.num_outputs))
    ids = tok.encode(prompt) or [0]
    gen = torch.Generator().manual_seed(seed)
    new: list[int] = []
    for _ in range(max_new_tokens):
        window = np.asarray([(ids + new)[-block:]], dtype=np.int64)
        logits = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: window})[0][:, -1, :vocab])
        new.append(int(sample_next(logits, temperature, top_k, None, gen)))
    return tok.decode(new)
