"""Data sources: `build(cfg, seed)` returns a `DataBundle`; `name` in the config picks one.

Adding a source: write its config class (deriving `BaseDataConfig`) and a loader
`load(cfg, seed) -> DataBundle`, then list both in `SOURCES` and the `DataConfig` union. A
user's own source comes in by name through `register_data` or an `ember.data` entry point
(see `ember.plugins`), or as Dataset objects passed to `ember.train(data=...)`.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Annotated, Any

from pydantic import Field

from ember import plugins
from ember.data.bundle import ArrayDataset, DataBundle, DataInfo
from ember.data.config import (
    BaseDataConfig,
    Cifar10Config,
    CsvConfig,
    DigitsConfig,
    IdxImagesConfig,
    ImageFolderConfig,
    ObjectDataConfig,
    TabularConfig,
    XorConfig,
)
from ember.data.rec_config import InteractionsCsvConfig, MovieLensConfig
from ember.data.speech_config import AudioFolderConfig, SpokenDigitsConfig
from ember.data.table_config import TableConfig
from ember.data.text_config import (
    AddingConfig,
    AustenConfig,
    ChatJsonlConfig,
    CopyConfig,
    CsvSeriesConfig,
    NewsgroupsConfig,
    ReutersConfig,
    RottenTomatoesConfig,
    SeriesConfig,
    StdlibModulesConfig,
    StdlibTextConfig,
    TextCsvConfig,
    TextFilesConfig,
)
from ember.errors import DataError

__all__ = ["DataConfig", "DataBundle", "DataInfo", "ArrayDataset", "SOURCES", "build", "static_info",
           "estimated_info", "register_data"]

DataConfig = Annotated[
    DigitsConfig
    | XorConfig
    | TabularConfig
    | IdxImagesConfig
    | Cifar10Config
    | ImageFolderConfig
    | CsvConfig
    | StdlibTextConfig
    | TextFilesConfig
    | AustenConfig
    | ChatJsonlConfig
    | RottenTomatoesConfig
    | NewsgroupsConfig
    | ReutersConfig
    | StdlibModulesConfig
    | TextCsvConfig
    | SeriesConfig
    | CsvSeriesConfig
    | AddingConfig
    | CopyConfig
    | ObjectDataConfig
    | TableConfig
    | MovieLensConfig
    | InteractionsCsvConfig
    | SpokenDigitsConfig
    | AudioFolderConfig,
    Field(discriminator="name"),
]

# name -> "module:function". Imported lazily so a source's dependencies load only when used.
SOURCES: dict[str, str] = {
    "digits": "ember.data.builtin:load_digits",
    "xor": "ember.data.builtin:load_xor",
    "iris": "ember.data.builtin:load_tabular",
    "wine": "ember.data.builtin:load_tabular",
    "breast_cancer": "ember.data.builtin:load_tabular",
    "mnist": "ember.data.idx:load_idx_images",
    "fashion_mnist": "ember.data.idx:load_idx_images",
    "cifar10": "ember.data.cifar:load_cifar10",
    "image_folder": "ember.data.image_folder:load_image_folder",
    "csv": "ember.data.user:load_csv",
    "stdlib_text": "ember.data.text:load_stdlib_text",
    "text_files": "ember.data.text:load_text_files",
    "austen": "ember.data.text:load_austen",
    "chat_jsonl": "ember.data.chat_jsonl:load_chat_jsonl",
    "rotten_tomatoes": "ember.data.text_corpora:load_rotten_tomatoes",
    "newsgroups20": "ember.data.text_corpora:load_newsgroups20",
    "reuters": "ember.data.text_corpora:load_reuters",
    "stdlib_modules": "ember.data.stdlib_modules:load_stdlib_modules",
    "text_csv": "ember.data.stdlib_modules:load_text_csv",
    "sunspots": "ember.data.series:load_series",
    "co2": "ember.data.series:load_series",
    "csv_series": "ember.data.series:load_csv_series",
    "adding": "ember.data.series:load_adding",
    "copy": "ember.data.series:load_copy",
    "object": "ember.data.objects:refuse_rebuild",
    "parquet": "ember.data.tables:load_table",
    "jsonl": "ember.data.tables:load_table",
    "movielens": "ember.data.ratings:load_interactions",
    "interactions_csv": "ember.data.ratings:load_interactions",
    "spoken_digits": "ember.data.speech:load_spoken_digits",
    "audio_folder": "ember.data.speech:load_audio_folder",
}

# What `ember plan` assumes for sources whose files may be absent: (info, train size).
_STATIC: dict[str, tuple[DataInfo, int]] = {
    "mnist": (DataInfo("classification", "image", (1, 28, 28), 10,
                       tuple(str(i) for i in range(10))), 60000),
    "fashion_mnist": (DataInfo("classification", "image", (1, 28, 28), 10), 60000),
    "cifar10": (DataInfo("classification", "image", (3, 32, 32), 10), 50000),
}


def _resolve(target: str) -> Callable[..., Any]:
    module, func = target.split(":")
    return getattr(import_module(module), func)


def register_data(name: str, load_fn: Callable[[Any, int], DataBundle],
                  config_cls: type[BaseDataConfig] | None = None) -> None:
    """Make `data.name: <name>` in a recipe load `load_fn(cfg, seed)` in this process.

    Args:
        name: the name recipes use; built-in names are refused.
        load_fn: `load_fn(cfg, seed) -> DataBundle`; `ember.data_bundle(train, val, test,
            task=...)` makes one from torch Datasets.
        config_cls: a `BaseDataConfig` subclass (batch sizes, split fractions and the
            source's own options); None: the base fields only.
    """
    plugins.register("data", name, load_fn, config_cls, reserved=SOURCES)


def build(cfg: BaseDataConfig, seed: int) -> DataBundle:
    """Load the source named by `cfg.name` (built-in or plug-in) with splits derived from `seed`."""
    name = cfg.name  # type: ignore[attr-defined]
    if name in SOURCES:
        return _resolve(SOURCES[name])(cfg, seed)
    plugin = plugins.lookup("data", name)
    if plugin is None:
        raise DataError(plugins.missing_message("data", name, None))
    bundle = plugin.target(cfg, seed)
    if not isinstance(bundle, DataBundle):
        raise DataError(f"data plug-in '{name}' returned {type(bundle).__name__}; it must return a DataBundle "
                        "(ember.data_bundle makes one from Datasets)")
    return bundle


def estimated_info(cfg: BaseDataConfig) -> tuple[DataInfo, int] | None:
    """A cheap estimate for sources that are slow to build (tokenizing a large corpus)."""
    if not isinstance(cfg, StdlibTextConfig):
        return None
    chars_per_token = 1.0 if cfg.tokenizer == "char" else 3.0  # typical for code
    vocab = 100 if cfg.tokenizer == "char" else cfg.bpe_vocab_size
    if cfg.tokenizer_from:  # a reused tokenizer (an imported GPT-2's) knows its vocabulary
        from ember.data.tokenizer import tokenizer_from

        vocab = tokenizer_from(cfg.tokenizer_from).vocab_size
        chars_per_token = 3.0
    train_chars = cfg.max_chars * (1 - cfg.val_fraction - cfg.test_fraction)
    windows = int(train_chars / chars_per_token / cfg.block_size)
    info = DataInfo("lm", "tokens", (cfg.block_size,), vocab,
                    extra={"vocab_size": vocab, "chars_per_token": chars_per_token})
    return info, windows


def static_info(cfg: BaseDataConfig) -> tuple[DataInfo, int] | None:
    """Info and train-split size known without reading files, for sources that have it."""
    name = cfg.name  # type: ignore[attr-defined]
    if name not in _STATIC:
        return None
    info, n = _STATIC[name]
    held = cfg.val_fraction + cfg.test_fraction
    return info, int(n * (1 - (cfg.val_fraction if name in _STATIC else held)))
