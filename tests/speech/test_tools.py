"""A tiny audio run end to end: predict a WAV (CLI), serve an uploaded WAV, explain, report, an RNN."""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from fastapi.testclient import TestClient

from ember.data.bundle import DataInfo
from ember.models import build
from ember.models.rnn import RNNConfig
from ember.serve import create_app
from tests.conftest import run_cli
from tests.speech.conftest import tone


def test_predict_cli_on_a_wav(audio_run: Path, tmp_path: Path) -> None:
    clip = tmp_path / "clip.wav"
    sf.write(clip, tone(2100, 0.4), 16000)
    proc = run_cli("predict", audio_run, clip, "--json", check=True)
    pred = json.loads(proc.stdout)
    assert len(pred) == 1 and pred[0]["label"] in ("high", "low")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF1234WAVEnope")
    proc = run_cli("predict", audio_run, bad)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "cannot read audio" in proc.stderr


def test_server_takes_an_uploaded_wav(audio_run: Path) -> None:
    buf = io.BytesIO()
    sf.write(buf, tone(300, 0.4), 16000, format="WAV")
    payload = base64.b64encode(buf.getvalue()).decode()
    with TestClient(create_app(audio_run)) as client:
        r = client.post("/v1/predict", json={"inputs": {"audio": payload}})
        assert r.status_code == 200 and r.json()["predictions"][0]["label"] in ("high", "low")
        bad = client.post("/v1/predict", json={"inputs": {"audio": base64.b64encode(b"junk").decode()}})
        assert bad.status_code == 400 and "cannot read audio" in bad.json()["detail"]
        assert client.post("/v1/predict", json={"inputs": {"audio": "%%"}}).status_code == 400


def test_explain_saliency_and_report(audio_run: Path) -> None:
    from ember.explain import explain

    page = explain(audio_run, methods=["saliency"], examples=2)
    record = json.loads((page.parent / "explain.json").read_text())
    assert len(record["examples"]) == 2 and (page.parent / "example_0.png").is_file()
    report = (audio_run / "report.html").read_text()
    assert "Misclassified clips" in report and "Explanations" in report


def test_rnn_reads_spectrogram_frames() -> None:
    info = DataInfo("classification", "audio", (1, 40, 51), 10)
    model = build(RNNConfig(cell="gru", hidden_size=8, pooling="mean"), info)
    x = torch.randn(3, 1, 40, 51)
    assert model(x).shape == (3, 10)
    frames = x[:, 0].transpose(1, 2)  # what the GRU reads: (B, frames, mels)
    out, _ = model.rnn(frames)
    assert torch.allclose(model.head(out.mean(1)), model(x), atol=1e-6)
    assert np.isfinite(model(x).detach().numpy()).all()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (make test installs it)")
def test_playground_uploads_a_recording(audio_run: Path, tmp_path: Path) -> None:
    """In headless Chromium: the audio playground's file input sends the WAV and shows a label."""
    playwright = pytest.importorskip("playwright.sync_api")
    from tests.serve.helpers import serving
    from tests.serve.test_playground import CHROMIUM, FLAGS

    clip = tmp_path / "clip.wav"
    sf.write(clip, tone(2000, 0.4), 16000, format="WAV")
    with serving(create_app(audio_run)) as port, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, ignore_default_args=["--headless"],
                                    headless=True)
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        page.set_input_files("#file", str(clip))
        page.wait_for_selector("#label", timeout=20000)
        label = page.inner_text("#label")
        browser.close()
    assert label in ("high", "low")
