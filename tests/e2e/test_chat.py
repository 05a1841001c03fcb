"""`ember chat` and the sampling controls end to end on a tiny char GPT: --once, a piped
session with /reset, Ctrl-C mid-answer (SIGINT to a real subprocess), the run's chat template,
history trimmed to the context, ember.chat, penalties on the OpenAI routes, bad flags."""

from __future__ import annotations

import io
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import ember
from ember.chat_session import ChatSession
from ember.cli import main

TEMPLATE = "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}<assistant>"


@pytest.fixture
def templated(tiny_lm_run: Path, tmp_path: Path) -> Path:
    run = shutil.copytree(tiny_lm_run, tmp_path / "templated")
    (run / "chat_template.jinja").write_text(TEMPLATE)
    return run


def test_chat_once_prints_an_answer(tiny_lm_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chat", str(tiny_lm_run), "--once", "def add(a, b):", "--max-new-tokens", "12",
                 "--repetition-penalty", "1.3", "--presence-penalty", "0.5", "--stop", r"\n\n", "--seed", "4"]) == 0
    first = capsys.readouterr().out
    assert first.strip() and first.endswith("\n") and "\n\n" not in first.rstrip("\n")
    main(["chat", str(tiny_lm_run), "--once", "def add(a, b):", "--max-new-tokens", "12",
          "--repetition-penalty", "1.3", "--presence-penalty", "0.5", "--stop", r"\n\n", "--seed", "4"])
    assert capsys.readouterr().out == first  # seeded: the same answer


def test_piped_session_with_reset_and_trimming(tiny_lm_run: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\nhow are you\n/reset\n/nope\nagain\n"))
    assert main(["chat", str(tiny_lm_run), "--max-new-tokens", "8", "--temperature", "0"]) == 0
    out, err = capsys.readouterr()
    assert "(history cleared)" in err and "unknown command '/nope'" in err
    assert err.count("the oldest turns are dropped") == 1  # said once
    assert out.count("\n") >= 3  # three answers, each ended by a newline


def test_session_trims_the_oldest_turns_and_uses_the_template(templated: Path) -> None:
    s = ChatSession(templated, system="Be brief.", max_new_tokens=8, temperature=0)
    assert s.template == TEMPLATE and s.prompt() == "<system>Be brief.\n<assistant>"
    for text in ("one", "two", "three", "four"):
        "".join(s.reply(text))
    assert s.trimmed and s.history[0]["role"] == "user" and s.history[-1]["role"] == "assistant"
    assert s.messages()[0] == {"role": "system", "content": "Be brief."}  # the system message stays
    s.history.append({"role": "user", "content": "five"})
    assert len(s.tok.encode(s.prompt())) <= s.context - 8 and s.history[0]["content"] == "five"
    messages = [{"role": "user", "content": "def f"}]
    a = ember.chat(templated, messages, max_new_tokens=10, temperature=0.9, seed=2)
    assert isinstance(a, str) and a == "".join(ember.chat_stream(templated, messages, max_new_tokens=10,
                                                                 temperature=0.9, seed=2))
    with pytest.raises(ember.ConfigError, match="role"):
        ember.chat(templated, [{"content": "x"}])


def _default_sigint() -> None:
    """In the child: Ctrl-C as a terminal delivers it (a test started in the background inherits SIG_IGN)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_an_answer_and_returns_to_the_prompt(tiny_lm_run: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(ember.__file__).parents[1]), "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ember", "chat", str(tiny_lm_run), "--max-new-tokens", "1000000",
                             "--temperature", "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, preexec_fn=_default_sigint)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(b"hello\n")
        proc.stdin.flush()
        got = b""
        deadline = time.time() + 120
        while len(got) < 20 and time.time() < deadline:  # the answer is streaming
            if select.select([proc.stdout], [], [], 1)[0]:
                got += os.read(proc.stdout.fileno(), 4096)
        assert len(got) >= 20, proc.stderr.read() if proc.poll() is not None else "no answer streamed"
        proc.send_signal(signal.SIGINT)
        proc.stdin.write(b"/reset\n/exit\n")
        proc.stdin.flush()
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # show where it hangs: faulthandler dumps every thread
            proc.send_signal(signal.SIGABRT)
            _, err = proc.communicate(timeout=30)
            pytest.fail(f"ember chat did not end after Ctrl-C:\n{err.decode()[-4000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
    text = err.decode()
    assert proc.returncode == 0, text
    assert "[stopped]" in text and "(history cleared)" in text and "Traceback" not in text


def test_openai_routes_take_penalties_per_request(tiny_lm_run: Path) -> None:
    from ember.serve import create_app

    body = {"messages": [{"role": "user", "content": "import"}], "max_tokens": 12, "seed": 5,
            "presence_penalty": 1.5, "frequency_penalty": 0.8, "repetition_penalty": 1.2, "top_k": 8}
    with TestClient(create_app(tiny_lm_run)) as client:
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == \
            client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"]
        plain = client.post("/v1/completions", json={"prompt": "import", "max_tokens": 12, "temperature": 0})
        pen = client.post("/v1/completions", json={"prompt": "import", "max_tokens": 12, "temperature": 0,
                                                    "frequency_penalty": 2})
        assert plain.status_code == pen.status_code == 200
        assert plain.json()["choices"][0]["text"] != pen.json()["choices"][0]["text"]
        gen = client.post("/v1/generate", json={"prompt": "def ", "max_new_tokens": 10, "repetition_penalty": 1.5,
                                                "presence_penalty": 0.5, "stop": ["\n"]})
        assert gen.status_code == 200 and "\n" not in gen.json()["text"]
        bad = client.post("/v1/completions", json={"prompt": "x", "repetition_penalty": 0})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "repetition_penalty"
        assert client.post("/v1/generate", json={"prompt": "x", "frequency_penalty": 9}).status_code == 422


@pytest.mark.parametrize("argv", [
    ["chat", "RUN", "--repetition-penalty", "0"],
    ["chat", "RUN", "--presence-penalty", "2.5"],
    ["chat", "RUN", "--frequency-penalty", "nan"],
    ["chat", "RUN", "--max-new-tokens", "0"],
    ["generate", "RUN", "--repetition-penalty", "abc"],
    ["generate", "RUN", "--presence-penalty", "-3"],
])
def test_bad_sampling_flags_exit_2_in_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and argv[2] in err


def test_chat_on_a_missing_run_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chat", str(tmp_path / "nope"), "--once", "hi"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
