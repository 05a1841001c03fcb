"""`ember chat RUN`: the terminal loop over a `ChatSession` (tokens streamed to stdout).

Ctrl-C while an answer streams stops that answer and returns to the prompt; Ctrl-C or
Ctrl-D at the prompt, or `/exit`, ends the session; `/reset` clears the history. When
stdin is not a terminal, lines are read from it with no prompt shown (scripts, pipes).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ember.chat_session import ChatSession

__all__ = ["run_chat"]

COMMANDS = ("/reset", "/exit")


def run_chat(run_dir: Path, once: str | None, system: str | None, sampling: dict[str, Any]) -> int:
    """Chat with `run_dir`: answer `once` and return, or read messages until the end of input."""
    try:
        session = ChatSession(run_dir, system, **sampling)
    except KeyboardInterrupt:
        return 130  # Ctrl-C while the model loads: nothing to say
    if once is not None:
        _answer(session, once)
        return 0
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"chatting with {run_dir} ({session.context}-token context, "
              f"{'its chat template' if session.template else 'plain User:/Assistant: turns'}); "
              "/reset clears the history, /exit or Ctrl-D ends", file=sys.stderr)
    while True:
        try:
            line = input("> " if interactive else "")
        except (EOFError, KeyboardInterrupt):
            if interactive:
                print(file=sys.stderr)
            return 0
        text = line.strip()
        if not text:
            continue
        if text == "/exit":
            return 0
        if text == "/reset":
            session.reset()
            print("(history cleared)", file=sys.stderr, flush=True)
        elif text.startswith("/") and " " not in text:
            print(f"unknown command '{text}'; valid: {', '.join(COMMANDS)}", file=sys.stderr, flush=True)
        else:
            _answer(session, text)


def _answer(session: ChatSession, text: str) -> None:
    """Stream one answer; Ctrl-C stops it (what was written stays in the history)."""
    was_trimmed = session.trimmed
    pieces = session.reply(text)
    try:
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
    except KeyboardInterrupt:
        pieces.close()
        sys.stdout.write("\n")
        sys.stdout.flush()
        print("[stopped]", file=sys.stderr, flush=True)
        return
    sys.stdout.write("\n")
    sys.stdout.flush()
    if session.trimmed and not was_trimmed:  # told once: later trims go without saying
        print(f"note: the conversation no longer fits the model's {session.context}-token context; "
              "the oldest turns are dropped from now on", file=sys.stderr, flush=True)
