"""Damaged or hostile files a user may hand Ember: each is one clear error, never a traceback or a stall."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ember.config import load as load_config
from ember.errors import ConfigError
from ember.runs import Study
from ember.tune.storage import check_journal
from ember.yaml_safe import YamlTooLarge, load_yaml

BOMB = "\n".join(["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
                 + [f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in zip("abcdefg", "bcdefgh", strict=True)])


def test_yaml_alias_bomb_is_refused_before_anything_walks_it() -> None:
    with pytest.raises(YamlTooLarge, match="alias bomb"):
        load_yaml(BOMB)  # 9**8 = 43 million values once expanded
    assert load_yaml("a: &x [1, 2]\nb: *x") == {"a": [1, 2], "b": [1, 2]}  # ordinary anchors still work


def test_alias_bomb_and_non_utf8_configs_are_one_line_errors(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("data: {name: xor}\nmodel:\n  name: mlp\n" + "\n".join("  " + line for line in BOMB.splitlines())
                    + "\n  hidden: *h\n")
    with pytest.raises(ConfigError, match="alias bomb"):
        load_config(str(bomb))
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("data: {name: xor}\n# caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte \d+ is 0xe9\)"):
        load_config(str(latin))


def _journal(path: Path, lines: list[str], end: str = "\n") -> Path:
    path.write_text("\n".join(lines) + end)
    return path


def test_damaged_tune_journal_names_its_line(tmp_path: Path) -> None:
    good = ['{"op_code":0,"study_name":"s","directions":[1]}', '{"op_code":4,"study_id":0}']
    check_journal(_journal(tmp_path / "ok.log", good))
    check_journal(tmp_path / "absent.log")  # a new study
    with pytest.raises(ConfigError, match="line 2 is not a journal record"):
        check_journal(_journal(tmp_path / "mid.log", [good[0], "garbage", good[1]]))
    with pytest.raises(ConfigError, match="line 3 ends in the middle of a record"):
        check_journal(_journal(tmp_path / "torn.log", [*good, '{"op_code":5,"tri'], end=""))
    with pytest.raises(ConfigError, match="line 1 is not a journal record"):
        check_journal(_journal(tmp_path / "first.log", good[1:]))


@pytest.mark.parametrize("content", [b'{"best": "x"', b"[1, 2]", b"\xff\xfe", b'{"best": {"run": "r", "value": "x"}}'])
def test_runs_lists_a_study_with_a_damaged_study_json(tmp_path: Path, content: bytes,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from ember.cli_tables import print_studies

    monkeypatch.setenv("COLUMNS", "300")  # rich wraps at the terminal width

    study = Study(tmp_path / "st")
    (study.path / "trial-0000").mkdir(parents=True)
    study.settings.write_text(json.dumps({"metric": "val.accuracy", "direction": "max"}))
    (study.path / "trial-0000" / "config.yaml").write_text("recipe: x\n")
    (study.path / "trial-0000" / "trial.json").write_text("{not json")
    study.record.write_bytes(content)
    print_studies([study])
    out = capsys.readouterr().out
    assert "study st" in out and "1 unknown" in out
    if content != b'{"best": {"run": "r", "value": "x"}}':  # valid JSON with a bad value is just no best
        assert "damaged, shown as unknown: study.json, trial-0000/trial.json" in out


@pytest.mark.parametrize("text", ['{"kind": "char"}', '{"kind": "char", "chars": 5}', '{"kind": "char", "chars": ["ab"]}',
                                  '{"kind": "char", "chars": []}', '{"kind": "bpe"}', '{"kind": "bpe", "tokenizer": {}}',
                                  '{"kind": "word"}', "[1]"])
def test_damaged_tokenizer_json_is_a_data_error(text: str) -> None:
    from ember.data.tokenizer import tokenizer_from_json
    from ember.errors import DataError

    with pytest.raises(DataError, match="tokenizer"):
        tokenizer_from_json(text)
    assert tokenizer_from_json('{"kind": "char", "chars": "ab"}').encode("abc") == [1, 2, 0]


def test_an_empty_class_folder_is_named_not_trained_silently(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from ember.data.image_folder import scan_image_folder
    from ember.errors import DataError

    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "cat" / "a.png")
    (tmp_path / "dog" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"class folder '.*dog' holds no images"):
        scan_image_folder(tmp_path)
