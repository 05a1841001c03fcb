"""Downloads with checksum verification, written atomically. Only used when asked for."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO

from ember.errors import DataError
from ember.weights import sha256_file

__all__ = ["download", "sha256_file"]

Opener = Callable[[str], IO[bytes]]


def _urlopen(url: str) -> IO[bytes]:
    return urllib.request.urlopen(url, timeout=60)  # noqa: S310  (http(s) and file URLs by design)


def download(url: str, dest: Path, sha256: str, opener: Opener = _urlopen) -> Path:
    """Fetch `url` to `dest` unless a file with the right sha256 is already there.

    The body streams into a temp file beside `dest`; only a verified file is renamed into
    place, so an interrupted or corrupted download never leaves a wrong file behind.
    """
    if dest.is_file() and sha256_file(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    h = hashlib.sha256()
    try:
        with opener(url) as response, open(tmp, "wb") as out:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(
            f"cannot download {url} ({exc}); fetch it by hand and place it at {dest}"
        ) from None
    if h.hexdigest() != sha256:
        tmp.unlink(missing_ok=True)
        raise DataError(
            f"checksum mismatch for {dest.name}: expected sha256 {sha256}, got {h.hexdigest()}; "
            "the download is corrupt or the file has changed upstream"
        )
    os.replace(tmp, dest)
    return dest
