"""`data.name: chat_jsonl`: conversations rendered by the base run's chat template, scored on the answers.

A tiny random Llama run with a ChatML template stands in for an imported SmolLM2.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("tokenizers")

import ember  # noqa: E402
from ember.cli import main  # noqa: E402
from ember.data import build  # noqa: E402
from ember.data.text_config import ChatJsonlConfig  # noqa: E402
from ember.tasks import IGNORE_INDEX  # noqa: E402
from tests.transfer.helpers import TINY_CHAT_LLAMA, chat_lines, tiny_chat_llama  # noqa: E402

LORA = 8


def _write(path: Path, conversations: list[dict]) -> Path:
    path.write_text("".join(json.dumps(c) + "\n" for c in conversations), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def chat_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_chat_llama(tmp_path_factory.mktemp("chat-llama") / "base")


@pytest.fixture(scope="session")
def chat_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("chat-data") / "chat.jsonl", chat_lines(40))


@pytest.fixture(scope="session")
def chat_tuned(chat_base: Path, chat_file: Path, tmp_path_factory: pytest.TempPathFactory) -> ember.Run:
    """The smollm2-chat-lora recipe on the tiny Llama: 20 LoRA steps on 32 conversations."""
    over = [*TINY_CHAT_LLAMA, f"model.init_from={chat_base}", f"data.tokenizer_from={chat_base}",
            f"data.paths=[{chat_file}]", "data.max_length=128", "train.max_steps=20", "train.epochs=20",
            "optim.lr=0.01", "train.eval_every=100", "schedule.warmup_steps=0", "train.threads=1",
            f"log.runs_dir={tmp_path_factory.mktemp('chat-runs')}", "log.report=false"]
    return ember.train("smollm2-chat-lora", over, verbose=False)


def test_targets_are_the_answers_and_their_end_of_turn_markers(chat_base: Path, chat_file: Path) -> None:
    cfg = ChatJsonlConfig(paths=[chat_file], tokenizer_from=str(chat_base), max_length=128, val_fraction=0,
                          test_fraction=0)
    bundle = build(cfg, 0)
    tok = bundle.tokenizer.tok
    conversations = chat_lines(40)  # no held-out split: the rows are the file's lines, in order
    assert len(bundle.train) == len(conversations)
    x, y = bundle.train.batch(torch.arange(len(conversations)))
    for i, conv in enumerate(conversations):
        row_y, row_x = y[i].tolist(), x[i].tolist()
        targets = [t for t in row_y if t != IGNORE_INDEX]
        answers = "".join(m["content"] + "<|im_end|>" for m in conv["messages"] if m["role"] == "assistant")
        assert tok.decode(targets, skip_special_tokens=False) == answers
        n = int(bundle.train.lengths[i])  # each target is the next input token; padding is never scored
        assert all(t == IGNORE_INDEX or t == row_x[j + 1] for j, t in enumerate(row_y[:n - 1]))
        assert all(t == IGNORE_INDEX for t in row_y[n:])
    system = tok.decode(x[0].tolist(), skip_special_tokens=False)
    assert system.startswith("<|im_start|>system\nAnswer briefly.<|im_end|>")  # the run's template, its markup
    assert "You are a tiny assistant" in tok.decode(x[1].tolist(), skip_special_tokens=False)  # its default
    assert bundle.train.batch(torch.tensor([1]))[0].shape[1] == int(bundle.train.lengths[1])  # cut to its length
    short = build(cfg.model_copy(update={"max_length": 96}), 0).info.extra["conversations"]["train"]
    dropped = build(cfg.model_copy(update={"max_length": 96, "overflow": "drop"}), 0).info.extra["conversations"]
    assert short["truncated"] == 14 and short["conversations"] == 40
    assert dropped["train"]["dropped"] == 14 and dropped["train"]["conversations"] == 26


def test_lora_steps_lower_the_answer_loss_and_chat_uses_the_tuned_run(chat_base: Path, chat_file: Path,
                                                                      chat_tuned: ember.Run) -> None:
    from ember.chat_session import ChatSession
    from ember.tasks import for_info
    from ember.training.evaluation import evaluate_split

    summary = json.loads(chat_tuned.summary.read_text())
    cfg = ember.load_config(chat_tuned.config)
    bundle = build(cfg.data, cfg.train.seed)
    base = ember.load_run(chat_base).model
    before = evaluate_split(base, bundle.train, for_info(bundle.info), torch.device("cpu"), 16)["loss"]
    assert summary["train"]["loss"] < 0.85 * before, (summary["train"]["loss"], before)
    # LoRA adds r * (in + out) per adapted Linear: q, k, v, o and the three MLP projections per layer
    adapted = [m for name, m in base.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in name]
    assert len(adapted) == 2 * 7
    assert summary["trainable_params"] == sum(LORA * (m.in_features + m.out_features) for m in adapted)
    assert summary["trainable_share"] == pytest.approx(
        summary["trainable_params"] / (summary["trainable_params"] + summary["frozen_params"]))
    # the child carries the base's tokenizer and template; chat stops at the template's <|im_end|>
    assert (chat_tuned.path / "chat_template.jinja").read_text() == (chat_base / "chat_template.jinja").read_text()
    assert (chat_tuned.path / "tokenizer.json").is_file()
    tuned = ember.load_run(chat_tuned.path).model
    assert not torch.equal(tuned.layers[0].self_attn.q_proj.weight, base.layers[0].self_attn.q_proj.weight)
    session = ChatSession(chat_tuned.path, max_new_tokens=12, temperature=0)
    end = session.tok.tok.token_to_id("<|im_end|>")
    assert session.stop_ids == {end}
    session.history.append({"role": "user", "content": "What is the capital number 3?"})
    prompt = torch.tensor([session.tok.encode(session.prompt())])
    greedy = torch.cat(list(tuned.eval().generate(prompt, 12, temperature=0.0)), dim=1)[0].tolist()
    expected = greedy[:greedy.index(end)] if end in greedy else greedy  # the tuned weights, cut at <|im_end|>
    assert "".join(session.answer()).strip() == session.tok.decode(expected).strip()


BAD = {
    "bad.jsonl": ('{"messages": [}\n', "line 1 is not JSON"),
    "nomessages.jsonl": ('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}'
                         '\n\n{"text": "hello"}\n', "line 3 has no 'messages' list"),
    "role.jsonl": ('{"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]}\n',
                   "line 1, message 2: role 'bot' is not one of system, user, assistant"),
    "noanswer.jsonl": ('{"messages": [{"role": "user", "content": "a"}]}\n', "line 1 has no assistant message"),
    "content.jsonl": ('{"messages": [{"role": "user", "content": 3}]}\n', "line 1, message 1: each message needs"),
    "empty.jsonl": ("\n", "holds no conversations"),
}


def test_bad_files_are_one_line_naming_the_file_and_line(chat_base: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    for name, (text, expected) in {**BAD, "absent.jsonl": (None, "does not exist")}.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        argv = ["train", "smollm2-chat-lora", *TINY_CHAT_LLAMA, f"model.init_from={chat_base}",
                f"data.tokenizer_from={chat_base}", f"data.paths=[{tmp_path / name}]", f"log.runs_dir={runs}"]
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert str(tmp_path / name) in err and expected in err, err
    assert not runs.exists()  # nothing was created for a bad file
    no_template = tmp_path / "plain"
    no_template.mkdir()
    (no_template / "tokenizer.json").write_text((chat_base / "tokenizer.json").read_text())
    argv = ["train", "smollm2-chat-lora", *TINY_CHAT_LLAMA, f"data.tokenizer_from={no_template}",
            f"data.paths=[{_write(tmp_path / 'ok.jsonl', chat_lines(10))}]", f"log.runs_dir={runs}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "has no chat template" in err and err.count("\n") == 1, err


def test_answer_segments_follow_the_prompt_chat_sends_and_refuse_other_templates() -> None:
    from ember.chat_format import answer_segments, format_chat
    from tests.transfer.helpers import CHATML

    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    pieces = answer_segments(messages, CHATML)
    assert "".join(t for t, _ in pieces[:1]) == format_chat(messages[:1], CHATML)  # the prompt `ember chat` sends
    assert pieces[1:] == [("Hello", "answer"), ("<|im_end|>\n", "end")]
    with pytest.raises(ValueError, match="extend the previous one"):
        answer_segments(messages, "{{ messages | length }}")  # "0" then "1": no turn-by-turn rendering
    with pytest.raises(ValueError, match="rewrites the text"):
        answer_segments(messages, "{% for m in messages %}{{ m.content | upper }}{% endfor %}")


def test_openai_client_streams_the_tuned_chat_and_stops_at_its_end_of_turn(chat_tuned: ember.Run) -> None:
    """The official client against the OpenAI routes of a served chat run: the streamed answer is
    the one `ember chat` gives (the same template, greedy), and <|im_end|> ends it unseen."""
    pytest.importorskip("openai")
    from openai import OpenAI

    from ember.chat_session import ChatSession
    from ember.serve import create_app
    from tests.serve.helpers import serving

    question = [{"role": "user", "content": "What is the capital number 3?"}]
    session = ChatSession(chat_tuned.path, max_new_tokens=16, temperature=0)
    session.history.extend(question)
    expected = "".join(session.answer())
    end = session.tok.tok.token_to_id("<|im_end|>")
    prompt = torch.tensor([session.tok.encode(session.prompt())])
    greedy = torch.cat(list(session.loaded.model.generate(prompt, 16, temperature=0.0)), dim=1)[0].tolist()
    with serving(create_app(chat_tuned.path, max_batch=2)) as port:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        chunks = list(client.chat.completions.create(model=client.models.list().data[0].id, messages=question,
                                                     stream=True, max_tokens=16, temperature=0,
                                                     stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text.strip() == expected.strip() and "<|im_end|>" not in text
    assert reasons == ["stop" if end in greedy else "length"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == (
        greedy.index(end) if end in greedy else 16)
