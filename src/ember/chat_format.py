"""Chat messages to a prompt: a run's jinja chat template, or Ember's plain fallback.

Shared by `ember chat` and the OpenAI routes of `ember serve`; it imports neither torch nor
FastAPI (jinja2 only when a template is rendered).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

__all__ = ["format_chat", "render_chat", "answer_segments", "end_of_turn_ids", "find_chat_template", "message_text",
           "FALLBACK_ROLES", "TEMPLATE_FILES", "fallback_stops"]

TEMPLATE_FILES = ("chat_template.jinja", "chat_template.txt")
FALLBACK_ROLES = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}


def message_text(content: str | list[dict[str, Any]] | None) -> str:
    """A message's text: a string as is, OpenAI's content parts' text joined, None as ''."""
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]: the text parts joined
        return "".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
    return content or ""


def render_chat(messages: list[dict[str, Any]], template: str, add_generation_prompt: bool = True,
                bos: str = "", eos: str = "") -> str:
    """`messages` rendered by the jinja `template` in a sandbox (run folders are untrusted).

    Raises:
        ValueError: the template raised (its `raise_exception`), or did not render.
    """
    return _compiled(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                      bos_token=bos, eos_token=eos)


def _raise_exception(message: str) -> None:
    raise ValueError(message)


@functools.lru_cache(maxsize=8)
def _compiled(template: str) -> Any:
    """The template compiled once (a data set renders it several times per conversation)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise_exception
    return env.from_string(template)


def format_chat(messages: list[dict[str, Any]], template: str | None, bos: str = "", eos: str = "") -> str:
    """The prompt for `messages`: the run's jinja chat template, or Ember's plain fallback.

    The template is rendered in jinja2's ImmutableSandboxedEnvironment (run folders are
    untrusted) with `messages`, `add_generation_prompt=True`, `bos_token`, `eos_token`.
    Fallback, for runs without a template: one "Role: content" line per message, then
    "Assistant:" for the model to continue.
    """
    if template:
        return render_chat(messages, template, True, bos, eos)
    lines = [f"{FALLBACK_ROLES.get(m['role'], m['role'].title())}: {message_text(m.get('content'))}"
             for m in messages]
    return "\n".join([*lines, "Assistant:"])


def answer_segments(messages: list[dict[str, Any]], template: str, bos: str = "",
                    eos: str = "") -> list[tuple[str, str]]:
    """The whole conversation as the template writes it, cut into (text, kind) pieces, in order.

    kind is "context" (system and user turns, template markup), "answer" (an assistant
    message's content) or "end" (what the template writes after an answer: its first token
    is the end-of-turn marker a model must learn to emit, the rest is context). The pieces
    joined are the rendering of all `messages` without a generation prompt.

    Each answer is found the way `ember chat` meets it: the prompt is the conversation before
    it with the generation prompt, and the answer is what the next rendering adds after that.

    Raises:
        ValueError: a template that does not render the conversation turn by turn (a
            rendering is not a prefix of the next one), or that rewrites an answer's text.
    """
    pieces: list[tuple[str, str]] = []
    done = ""
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        prompt = render_chat(messages[:i], template, True, bos, eos)
        upto = render_chat(messages[:i + 1], template, False, bos, eos)
        if not prompt.startswith(done) or not upto.startswith(prompt):
            raise ValueError(f"the chat template does not render message {i + 1} after the ones before it "
                             "(each rendering must extend the previous one)")
        pieces.append((prompt[len(done):], "context"))
        added, content = upto[len(prompt):], message_text(message.get("content"))
        at = added.find(content) if content else 0
        if at < 0:
            raise ValueError(f"the chat template rewrites the text of message {i + 1} (an assistant turn); "
                             "its content must appear as given")
        pieces += [(added[:at], "context"), (content, "answer"), (added[at + len(content):], "end")]
        done = upto
    full = render_chat(messages, template, False, bos, eos)
    if not full.startswith(done):
        raise ValueError("the chat template does not render the whole conversation as an extension of its turns")
    pieces.append((full[len(done):], "context"))
    return [(text, kind) for text, kind in pieces if text]


def end_of_turn_ids(template: str, tok: Any) -> set[int]:
    """The id of the token the template closes an answer with, when it is a special token.

    A special token (ChatML's <|im_end|>) decodes to nothing, so no stop string can see it:
    generation must stop at its id. Empty when the template's end-of-turn is plain text (a
    stop string handles that) or the tokenizer is not a `tokenizers` one.
    """
    inner = getattr(tok, "tok", None)
    if inner is None:
        return set()
    try:
        pieces = answer_segments([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
                                 template, getattr(tok, "bos_token", "") or "", getattr(tok, "eos_token", "") or "")
    except Exception:  # noqa: BLE001  (a template that cannot say: no end-of-turn id)
        return set()
    end = next((text for text, kind in pieces if kind == "end"), "")
    ids = list(inner.encode(end, add_special_tokens=False).ids) if end else []
    return {int(ids[0])} if ids and not tok.decode(ids[:1]) else set()


def fallback_stops() -> list[str]:
    """Where an answer in the fallback format ends: the start of the next turn's line."""
    return [f"\n{FALLBACK_ROLES[r]}:" for r in ("user", "system")]


def find_chat_template(run_path: Path) -> str | None:
    """The run's chat template: chat_template.jinja/.txt, or tokenizer_config.json's; None if absent."""
    for name in TEMPLATE_FILES:
        path = run_path / name
        if path.is_file():
            return path.read_text(encoding="utf-8", errors="replace") or None
    cfg = run_path / "tokenizer_config.json"
    if cfg.is_file():
        try:
            value = json.loads(cfg.read_text(encoding="utf-8")).get("chat_template")
        except (OSError, ValueError, AttributeError):
            return None
        return value if isinstance(value, str) and value else None
    return None
