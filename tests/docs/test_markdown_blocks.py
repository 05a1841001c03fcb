"""The example collector's reading of a page: markers, stand-ins, skips, console output."""

from __future__ import annotations

import pytest

from tests.docs.markdown_blocks import (
    MarkerError,
    console_pairs,
    output_matches,
    parse_page,
    requirements,
    shell_commands,
)

PAGE = """# A page

```yaml
data: {name: digits}
```

<!-- test-setup python:
    open("in.txt", "w").write("x")
-->
<!-- test: ember train digits-cnn --run-dir runs/cnn train.epochs=1 -->
```bash
ember train digits-cnn --run-dir runs/cnn
```

<!-- test: skip (a server) -->
```bash
ember serve runs/cnn
```

Quoted in text, `<!-- test: skip -->` is no marker.

```console
$ ember evaluate runs/cnn --split dev
error: --split: got 'dev'; ...
```

<!-- test-requires: espeak-ng python:recbole -->
"""


def test_steps_in_order_with_stand_ins_skips_and_hidden_setup() -> None:
    steps = parse_page(PAGE)
    assert [(s.lang, s.skip) for s in steps] == [("python", None), ("bash", None), ("bash", "a server"),
                                                 ("console", None)]
    assert steps[0].code == 'open("in.txt", "w").write("x")'  # dedented
    assert steps[1].code == "ember train digits-cnn --run-dir runs/cnn train.epochs=1"
    assert steps[1].shown.strip() == "ember train digits-cnn --run-dir runs/cnn"
    assert requirements(PAGE) == ["espeak-ng", "python:recbole"]


@pytest.mark.parametrize("page", [
    "<!-- test: skip -->\n```bash\nls\n```\n",                       # a skip without its reason
    "<!-- test: ls -->\n\nSome text.\n\n```bash\nls\n```\n",          # not right above its block
    "<!-- test: ls -->\n```yaml\na: 1\n```\n",                        # above a block that never runs
    "<!-- test: ls -->\n",                                            # above nothing
])
def test_bad_markers_are_errors(page: str) -> None:
    with pytest.raises(MarkerError):
        parse_page(page)


def test_shell_commands_join_continuations_keep_heredocs_drop_comments() -> None:
    code = ("# a comment\nember train \\\n    digits-cnn   # trailing\n\ncat > a.yaml <<'EOF'\nx: 1\n"
            "# not a comment here\nEOF\nember runs\n")
    assert shell_commands(code) == ["ember train digits-cnn   # trailing",
                                    "cat > a.yaml <<'EOF'\nx: 1\n# not a comment here\nEOF", "ember runs"]


def test_console_pairs_and_output_matching() -> None:
    pairs = console_pairs("$ ember a\nline 1\nline 2\n$ ember b\n")
    assert pairs == [("ember a", "line 1\nline 2"), ("ember b", "")]
    with pytest.raises(MarkerError):
        console_pairs("output before a command\n$ ember a\n")
    assert output_matches("error: valid: a, ... (did you mean 'b'?)", "error: valid: a, b, c (did you mean 'b'?)\n")
    assert output_matches("a  b", "a b")
    assert not output_matches("error: one thing", "error: another thing")
    assert not output_matches("line 1", "line 1\nline 2")  # the whole output, not a prefix
