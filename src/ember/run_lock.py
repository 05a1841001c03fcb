"""A run folder's exclusive writer lock: one process writes a run at a time, and a dead one never blocks."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

from ember.errors import RunError
from ember.safe_paths import inside

__all__ = ["LOCK_NAME", "lock_run", "unlock_run"]

LOCK_NAME = ".lock"  # in a run folder: locked (lockf) by the one process writing it, holds its pid
_held: dict[Path, int] = {}  # run folder -> the open lock file this process holds


def lock_run(path: Path) -> None:
    """Take this run folder's exclusive writer lock (a POSIX `fcntl.lockf` on `.lock`) until `unlock_run`.

    The kernel drops the lock when the process dies, however it dies, so a killed run never
    leaves a stale lock; the pid written in the file names the holder. A POSIX lock belongs to
    the process, not the open file: forked children (DataLoader workers, which can outlive a
    SIGKILLed trainer by seconds) do not inherit it, so a dead writer never blocks the next
    run, as a `flock` shared with its orphans would. (Such a lock also drops when the holder
    closes any descriptor of `.lock`; nothing in Ember opens it but this function.)

    Raises:
        RunError: another process holds it (its pid in the message).
    """
    key = path.resolve()
    if key in _held:
        return
    lock_file = inside(path, LOCK_NAME)  # a planted link would have ftruncate empty its target
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as exc:
        raise RunError(f"cannot lock run folder '{path}': {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RunError(f"'{lock_file}' is not a regular file; a run folder must not hold links or devices")
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EAGAIN):
            os.close(fd)
            raise RunError(f"cannot lock run folder '{path}': {exc.strerror}") from None
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunError(f"run folder '{path}' is in use by another ember process (pid {holder}); "
                       "wait for it to finish or stop it") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[key] = fd


def unlock_run(path: Path) -> None:
    """Release the lock `lock_run` took (no-op when this process holds none)."""
    fd = _held.pop(path.resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the file releases the lock


