"""Paths inside a run folder, which is untrusted input: no symbolic links, no way out.

A run folder may come from anyone (a download, a colleague, a shared disk). A link planted in
it (`.lock`, `config.yaml`, `plots/`, `explain/section.html` ...) would make a tool read or
write a file outside the folder, so every path a tool opens under a run folder goes through
`inside` (or `read_bytes` / `read_text`), and every write through `runs.atomic_write`, which
calls `check_chain`. The run folder itself may be a link (the user chose it); what is below it
may not.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ember.errors import RunError

__all__ = ["inside", "check_chain", "check_name", "read_bytes", "read_text", "run_root", "guard"]

_MARKERS = ("config.yaml", ".lock", "tune.json")  # what makes a folder a run (or study) folder


def check_name(name: str, what: str) -> str:
    """`name` as one safe path component (a run or recipe name that becomes a folder name).

    Raises:
        RunError: empty, `.`/`..`, or holding a path separator or NUL.
    """
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name or name.startswith("."):
        raise RunError(f"{what} {name!r} must be a single folder name (letters, digits, '-', '_', '.'; "
                       "no '/', no '..', not starting with '.')")
    return name


def _refuse_link(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise RunError(f"cannot inspect '{path}' ({exc.strerror})") from None
    if stat.S_ISLNK(st.st_mode):
        raise RunError(f"'{path}' is a symbolic link; a run folder must not hold links (refused, nothing read "
                       "or written through it)")


def check_chain(root: Path, path: Path) -> Path:
    """Refuse when `path` is not under `root` or any component below `root` is a symbolic link."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    parts = Path(rel).parts
    if rel == os.curdir:
        return path
    if os.path.isabs(rel) or (parts and parts[0] == os.pardir) or os.pardir in parts:
        raise RunError(f"'{path}' is outside the run folder '{root}' (refused)")
    current = Path(root)  # as the user spelled it, for the message
    for part in parts:
        current = current / part
        _refuse_link(current)
    return path


def inside(root: Path, *names: str | Path) -> Path:
    """`root / names...`, checked: no link below `root`, nothing escaping it."""
    return check_chain(root, Path(root).joinpath(*names))


def run_root(path: Path) -> Path | None:
    """The nearest run (or study) folder holding `path`, found by its marker files; None if none."""
    for folder in Path(os.path.abspath(path)).parents:
        if any(os.path.lexists(folder / m) for m in _MARKERS):
            return folder
    return None


def guard(path: Path) -> Path:
    """`path` checked against the run folder holding it (if any): no link below it, no escape."""
    root = run_root(path)
    return check_chain(root, path) if root is not None else path


def read_bytes(path: Path, root: Path | None = None) -> bytes:
    """The bytes of a file in a run folder, refusing a link anywhere below the run folder.

    `O_NOFOLLOW` closes the gap between the check and the open for the file itself.
    """
    root = root if root is not None else run_root(path)
    if root is not None:
        check_chain(root, path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        if os.path.islink(path):
            _refuse_link(path)
        raise RunError(f"cannot read '{path}' ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        return f.read()


def read_text(path: Path, root: Path | None = None) -> str:
    """`read_bytes` decoded as UTF-8 (RunError when it is not)."""
    try:
        return read_bytes(path, root).decode("utf-8")
    except UnicodeDecodeError:
        raise RunError(f"'{path}' is not UTF-8 text; the run folder is damaged") from None
