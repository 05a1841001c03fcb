"""Multi-turn chat with a language-model run: `ember.chat`, `ember.chat_stream`, `ChatSession`.

The conversation becomes a prompt through the run's chat template (`chat_template.jinja`
in the run folder, see `ember.chat_format`) or Ember's plain fallback ("User: ...\\n
Assistant:"), whose answers end where the next "User:" line would begin. When the prompt
no longer fits the model's context, the oldest turns are dropped (system messages stay).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ember.chat_format import end_of_turn_ids, fallback_stops, find_chat_template, format_chat
from ember.errors import ConfigError
from ember.generation import load_draft, load_lm_run
from ember.loading import load_tokenizer
from ember.models.decoding import generate_text
from ember.models.speculative import DRAFT_TOKENS

__all__ = ["ChatSession", "chat", "chat_stream"]

ROLES = ("system", "user", "assistant", "tool", "developer")


class ChatSession:
    """A loaded run and a conversation; `reply(text)` streams the assistant's answer.

    The sampling settings (`max_new_tokens`, `temperature`, `top_k`, `top_p`,
    `repetition_penalty`, `presence_penalty`, `frequency_penalty`, `stop`) are those of
    `ember.generation.generate`, and so are `compile`, `draft` and `draft_tokens`. Turn n samples with `seed + n`, so a conversation replays
    exactly; `reset` starts the count again.

    Args:
        run_dir: a language-model run folder.
        system: a system message that opens the conversation (kept when history is trimmed).
    """

    def __init__(self, run_dir: str | Path, system: str | None = None, *, max_new_tokens: int = 200,
                 temperature: float = 0.8, top_k: int | None = None, top_p: float | None = None,
                 repetition_penalty: float = 1.0, presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
                 seed: int = 0, stop: list[str] | None = None, compile: bool = False,
                 draft: str | Path | None = None, draft_tokens: int = DRAFT_TOKENS) -> None:
        loaded = load_lm_run(run_dir, "chat", max_new_tokens, temperature, top_k, top_p, repetition_penalty,
                             presence_penalty, frequency_penalty, compile)
        self.loaded = loaded
        self.draft = load_draft(draft, loaded, draft_tokens, compile)
        self.draft_tokens = draft_tokens
        self.tok = load_tokenizer(loaded.run.path)
        self.template = find_chat_template(loaded.run.path)
        self.context = int(getattr(loaded.model, "block_size", loaded.info.input_shape[0]))
        self.system = system
        self.settings: dict[str, Any] = {
            "max_new_tokens": max_new_tokens, "temperature": temperature, "top_k": top_k, "top_p": top_p}
        self.penalties = {"repetition_penalty": repetition_penalty, "presence_penalty": presence_penalty,
                          "frequency_penalty": frequency_penalty}
        self.seed = seed
        eos = getattr(self.tok, "eos_token", None)
        ends = [eos] if self.template and isinstance(eos, str) and eos else []
        self.stop = [*(stop or []), *(ends if self.template else fallback_stops())]
        self.stop_ids = end_of_turn_ids(self.template, self.tok) if self.template else set()
        self.history: list[dict[str, Any]] = []
        self.turns = 0
        self.trimmed = False  # set once the history has lost turns to the context

    def reset(self) -> None:
        """Forget the conversation (the system message stays); seeds start again."""
        self.history.clear()
        self.turns = 0

    def messages(self) -> list[dict[str, Any]]:
        """The conversation as the template sees it: the system message, then the history."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.history

    def prompt(self) -> str:
        """The prompt for the conversation; drops the oldest turns while it exceeds the context.

        Room is kept for the answer: a quarter of the context or `max_new_tokens`, whichever
        is less. The latest message always stays (the model then sees its most recent tokens).
        """
        budget = self.context - min(int(self.settings["max_new_tokens"]), self.context // 4)
        while True:
            text = self._render(self.messages())
            if len(self.tok.encode(text)) <= budget or len(self._body()) <= 1:
                return text
            del self.history[self._body()[0]]  # the oldest turn...
            while len(body := self._body()) > 1 and self.history[body[0]]["role"] == "assistant":
                del self.history[body[0]]  # ...with its answer: the history starts at a user turn
            self.trimmed = True

    def _body(self) -> list[int]:
        return [i for i, m in enumerate(self.history) if m["role"] != "system"]

    def _render(self, messages: list[dict[str, Any]]) -> str:
        try:
            return format_chat(messages, self.template, getattr(self.tok, "bos_token", "") or "",
                               getattr(self.tok, "eos_token", "") or "")
        except Exception as exc:  # noqa: BLE001  (a template error is the run's, told in one line)
            raise ConfigError(f"the run's chat template failed on these messages: {exc}") from None

    def reply(self, text: str) -> Iterator[str]:
        """Add a user message and stream the answer; the answer joins the history when it ends.

        An answer cut short (the caller stops iterating, Ctrl-C) joins as far as it got.
        """
        self.history.append({"role": "user", "content": text})
        return self.answer()

    def answer(self) -> Iterator[str]:
        """Stream the assistant's answer to the conversation so far (see `reply`)."""
        prompt = self.prompt()
        loaded = self.loaded
        pieces = generate_text(loaded.model, self.tok, loaded.info, prompt, seed=self.seed + self.turns,
                               stop=self.stop, stop_ids=self.stop_ids, draft=self.draft,
                               draft_tokens=self.draft_tokens, **self.settings, **self.penalties)
        self.turns += 1
        parts: list[str] = []
        try:
            for piece in pieces:
                if not parts:
                    piece = piece.lstrip()  # the fallback's "Assistant:" is followed by a space
                    if not piece:
                        continue
                parts.append(piece)
                yield piece
        finally:
            pieces.close()
            self.history.append({"role": "assistant", "content": "".join(parts).rstrip()})


def _session(run_dir: str | Path, messages: list[dict[str, Any]], kwargs: dict[str, Any]) -> ChatSession:
    if not messages:
        raise ConfigError("messages: give at least one {'role': 'user', 'content': ...} message")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise ConfigError(f"messages[{i}]: each message needs a 'role' ({', '.join(ROLES)}) and 'content'")
    session = ChatSession(run_dir, **kwargs)
    session.history = [dict(m) for m in messages]
    return session


def chat_stream(run_dir: str | Path, messages: list[dict[str, Any]], **kwargs: Any) -> Iterator[str]:
    """The assistant's next answer to `messages` ([{"role", "content"}, ...]), piece by piece.

    Keyword arguments are `ChatSession`'s (sampling settings, `system`).
    """
    yield from _session(run_dir, messages, kwargs).answer()


def chat(run_dir: str | Path, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    """The assistant's next answer to `messages`, whole (see `chat_stream`).

    Example:
        answer = ember.chat(run.path, [{"role": "user", "content": "def add(a, b):"}],
                            max_new_tokens=40, temperature=0, stop=["\\n\\n"])
    """
    return "".join(chat_stream(run_dir, messages, **kwargs))
