"""The OpenAI-compatible endpoints and continuous batching: the official client and curl
against a real `ember serve`, usage counts, auth, 429, cancelled streams, joins mid-decode."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

import ember
from ember.serve import create_app
from ember.serve.continuous import GenRequest, QueueFull, Scheduler
from ember.serve.openai_api import find_chat_template, format_chat
from tests.serve.helpers import free_port, serving, wait_healthy

KEY = "sk-test-key"


@pytest.fixture(scope="module")
def lm_run(tiny_lm_run: Path) -> Path:
    return tiny_lm_run  # the session's tiny char GPT (tests/conftest.py), shared with tests/e2e/test_chat.py


@pytest.fixture(scope="module")
def server(lm_run: Path) -> Iterator[str]:
    """A real `ember serve` subprocess with an API key; yields its base URL."""
    port = free_port()
    env = {**os.environ, "EMBER_API_KEY": KEY, "PYTHONPATH": str(Path(ember.__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "ember", "serve", str(lm_run), "--port", str(port),
                             "--max-batch", "4"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_openai_client_streams_chat_and_completes_with_usage(server: str) -> None:
    from openai import AuthenticationError, BadRequestError, OpenAI

    client = OpenAI(base_url=f"{server}/v1", api_key=KEY)
    model = client.models.list().data[0].id
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "def f"}],
                                            stream=True, max_tokens=8, temperature=0,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    done = client.completions.create(model=model, prompt="import os", max_tokens=5, temperature=0.7, seed=3)
    assert done.usage.prompt_tokens == len("import os") and done.usage.completion_tokens == 5
    assert done.usage.total_tokens == done.usage.prompt_tokens + 5 and done.choices[0].text
    again = client.completions.create(model=model, prompt="import os", max_tokens=5, temperature=0.7, seed=3)
    assert again.choices[0].text == done.choices[0].text  # a seed repeats the sample
    with pytest.raises(BadRequestError, match="n=2"):
        client.completions.create(model=model, prompt="x", n=2)
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=f"{server}/v1", api_key="wrong").models.list()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_streams_server_sent_events(server: str) -> None:
    body = json.dumps({"prompt": "class ", "max_tokens": 4, "stream": True, "temperature": 0})
    out = subprocess.run(["curl", "-sN", f"{server}/v1/completions", "-H", f"Authorization: Bearer {KEY}",
                          "-H", "Content-Type: application/json", "-d", body],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    lines = [line for line in out.splitlines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    first = json.loads(lines[0][6:])
    assert first["object"] == "text_completion" and "text" in first["choices"][0]
    refused = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{server}/v1/models"],
                             capture_output=True, text=True, timeout=30).stdout
    assert refused == "401"


class _Gated:
    """The model behind a semaphore: each forward pass waits for one permit (tests pace steps)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.permits = threading.Semaphore(0)
        self.new_cache = model.new_cache

    def eval(self) -> _Gated:
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        assert self.permits.acquire(timeout=20)
        return self.model(*args, **kwargs)


def _wait(cond: Any, what: str) -> None:
    deadline = time.time() + 20
    while not cond():
        assert time.time() < deadline, what
        time.sleep(0.01)


def _post_alone(port: int, body: dict[str, Any]) -> None:
    """A completion from another thread, on its own client: httpx pools are not shared across threads."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        client.post("/v1/completions", json=body)


def test_queue_full_is_429_and_a_cancelled_stream_frees_its_slot(lm_run: Path) -> None:
    app = create_app(lm_run, max_batch=1, max_pending=1)
    sched = app.state.scheduler
    gated = _Gated(sched.model)
    sched.model = gated
    body = {"prompt": "def ", "max_tokens": 40, "stream": True}
    with serving(app) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        with http.stream("POST", "/v1/completions", json=body) as first:
            _wait(lambda: sched.active == 1, "the first request never took the slot")
            req = sched.slots[0]
            queued = threading.Thread(target=_post_alone, args=(port, {**body, "stream": False}))
            queued.start()
            _wait(lambda: len(sched.waiting) == 1, "the second request never queued")
            busy = http.post("/v1/completions", json=body)
            assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
            assert busy.json()["error"]["type"] == "rate_limit_exceeded"
            gated.permits.release(3)  # prefill + 2 steps
            lines = first.iter_lines()
            assert next(line for line in lines if line).startswith("data: ")
        _wait(lambda: req.cancelled, "closing the stream did not cancel the request")
        gated.permits.release(1000)
        queued.join(timeout=20)
        _wait(lambda: sched.active == 0, "slots stayed busy")
        assert len(req.completion_ids) < 10  # freed at once, not decoded to its 40 tokens
        assert http.get("/v1/models").json()["data"][0]["active_slots"] == 0
        ok = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}],
                                                      "max_tokens": 3})
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3
        for bad in ({"prompt": "x", "top_p": 0}, {"prompt": "x", "presence_penalty": 3}, {"messages": []}):
            path = "/v1/chat/completions" if "messages" in bad else "/v1/completions"
            r = http.post(path, json=bad)
            assert r.status_code == 400 and r.json()["error"]["message"]


def test_a_request_joining_mid_decode_gets_exactly_its_solo_tokens(lm_run: Path) -> None:
    from ember.loading import load_run, load_tokenizer

    loaded = load_run(lm_run)
    tok = load_tokenizer(lm_run)
    vocab = int(loaded.info.extra.get("vocab_size", loaded.info.num_outputs))
    a_ids, b_ids = tok.encode("import sys\n"), tok.encode("for i in")

    async def run(joined: bool) -> tuple[list[int], list[int]]:
        gated = _Gated(loaded.model)
        sched = Scheduler(gated, tok, vocab, 48, max_batch=3, max_queue=2)
        sched.start()
        a, b = GenRequest(list(a_ids), 20, 0.0), GenRequest(list(b_ids), 12, 0.0)
        try:
            if joined:
                sched.submit(a)
                gated.permits.release(6)  # a prefills and decodes 5 steps alone
                await asyncio.to_thread(_wait, lambda: len(a.completion_ids) == 6, "a did not decode")
                sched.submit(b)
                gated.permits.release(1000)
                for r in (a, b):
                    while (await r.events.get())[0] != "done":
                        pass
                assert sched.steps < 19 + 11  # b decoded in the same steps as a, not after
            else:
                gated.permits.release(1000)
                for r in (a, b):
                    sched.submit(r)
                    while (await r.events.get())[0] != "done":
                        pass
        finally:
            sched.stop()
        return a.completion_ids, b.completion_ids

    solo = asyncio.run(run(False))
    assert asyncio.run(run(True)) == solo and len(solo[0]) == 20 and len(solo[1]) == 12


def test_scheduler_queue_bound_and_chat_formatting(tmp_path: Path) -> None:
    class Tok:
        def decode(self, ids: list[int]) -> str:
            return ""

    class Model:
        def eval(self) -> Model:
            return self

    async def fill() -> None:
        sched = Scheduler(Model(), Tok(), 10, 8, max_batch=1, max_queue=1)
        sched.slots[0] = GenRequest([1], 1)  # a busy slot; the thread is never started
        sched.submit(GenRequest([1], 1))
        with pytest.raises(QueueFull):
            sched.submit(GenRequest([1], 1))

    asyncio.run(fill())
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert format_chat(msgs, None) == "System: Be brief.\nUser: Hi\nAssistant:"
    tpl = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    assert format_chat(msgs, tpl) == "<system>Be brief.<user>Hi<assistant>"
    with pytest.raises(Exception, match="unsafe|access"):
        format_chat(msgs, "{{ messages.__class__.__mro__ }}{{ ''.__class__.__subclasses__() }}")
    assert find_chat_template(tmp_path) is None
    (tmp_path / "chat_template.jinja").write_text(tpl)
    assert find_chat_template(tmp_path) == tpl


@pytest.mark.parametrize(("field", "value"), [("temperature", "NaN"), ("top_p", "Infinity"), ("seed", str(2**70)),
                                              ("n", "1000"), ("frequency_penalty", "NaN")])
def test_openai_sampling_out_of_range_is_400_naming_the_field(lm_run: Path, field: str, value: str) -> None:
    """As OpenAI answers: 400 `invalid_request_error` with `param` (NaN once reached torch as a 500)."""
    with TestClient(create_app(lm_run), raise_server_exceptions=False) as client:
        r = client.post("/v1/completions", content=f'{{"prompt": "a", "{field}": {value}}}',
                        headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"] == field, (r.status_code, r.text)
