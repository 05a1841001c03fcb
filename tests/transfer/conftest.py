"""Fixtures shared by the Llama and GGUF import tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def llama_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random transformers Llama saved with save_pretrained (see helpers.tiny_llama)."""
    pytest.importorskip("transformers")
    from tests.transfer.helpers import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("llama") / "hf")
