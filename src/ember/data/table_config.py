"""Config for the local table sources: Parquet and JSON Lines files, read in row groups."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from ember.data.config import BaseDataConfig

__all__ = ["TableConfig"]


class TableConfig(BaseDataConfig):
    """Your table as Parquet or JSON Lines: numeric features (or one text column) and a label.

    The file is read once, row group by row group (Parquet) or in blocks of lines (JSON Lines),
    into memory-mapped arrays under `cache`; training reads rows from those.
    """

    name: Literal["parquet", "jsonl"]
    path: Path
    label_column: str = "label"
    feature_columns: list[str] | None = Field(None, description="numeric columns (default: all but the "
                                              "label); ignored when text_column is set")
    text_column: str | None = Field(None, description="a text column: text classification on its tokens")
    task: Literal["auto", "classification", "regression"] = "auto"
    tokenizer: Literal["char", "bpe"] = "char"
    bpe_vocab_size: int = Field(2048, ge=260, le=65536)
    bpe_sample_chars: int = Field(20_000_000, ge=10_000)
    max_len: int = Field(256, ge=8, description="tokens per text, truncated or padded")
    cache: Path | None = Field(None, description="folder of the converted arrays "
                               "(default ~/.cache/ember/tables)")
