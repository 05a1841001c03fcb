"""Chat messages to a prompt: a run's jinja chat template, or Ember's plain fallback.

Shared by `ember chat` and the OpenAI routes of `ember serve`; it imports neither torch nor
FastAPI (jinja2 only when a template is rendered).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["format_chat", "find_chat_template", "message_text", "FALLBACK_ROLES", "TEMPLATE_FILES",
           "fallback_stops"]

TEMPLATE_FILES = ("chat_template.jinja", "chat_template.txt")
FALLBACK_ROLES = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}


def message_text(content: str | list[dict[str, Any]] | None) -> str:
    """A message's text: a string as is, OpenAI's content parts' text joined, None as ''."""
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]: the text parts joined
        return "".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
    return content or ""


def format_chat(messages: list[dict[str, Any]], template: str | None, bos: str = "", eos: str = "") -> str:
    """The prompt for `messages`: the run's jinja chat template, or Ember's plain fallback.

    The template is rendered in jinja2's ImmutableSandboxedEnvironment (run folders are
    untrusted) with `messages`, `add_generation_prompt=True`, `bos_token`, `eos_token`.
    Fallback, for runs without a template: one "Role: content" line per message, then
    "Assistant:" for the model to continue.
    """
    if template:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

        def raise_exception(message: str) -> None:
            raise ValueError(message)

        env.globals["raise_exception"] = raise_exception
        return env.from_string(template).render(messages=messages, add_generation_prompt=True,
                                                 bos_token=bos, eos_token=eos)
    lines = [f"{FALLBACK_ROLES.get(m['role'], m['role'].title())}: {message_text(m.get('content'))}"
             for m in messages]
    return "\n".join([*lines, "Assistant:"])


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
