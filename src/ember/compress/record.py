"""`compression.json`: what a compressed child run records, and finding a run's relatives.

Pure JSON, no torch: the report reads these records to draw every compressed child of a
run next to its parent. A child names its parent both by absolute path and by folder
name, so a runs folder that is moved as a whole keeps its family together.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ember.errors import RunError
from ember.safe_paths import read_text

__all__ = ["RECORD", "read_record", "lineage", "family"]

RECORD = "compression.json"


def read_record(path: Path) -> dict[str, Any] | None:
    """The run's compression record, or None for a run that was trained, not compressed.

    Raises:
        RunError: the file exists but is not a JSON object.
    """
    file = path / RECORD
    if not file.is_file():
        return None
    try:
        record = json.loads(read_text(file))
    except (OSError, ValueError) as exc:
        raise RunError(f"'{file}' is not valid JSON ({exc})") from None
    if not isinstance(record, dict):
        raise RunError(f"'{file}' is not a JSON object")
    return record


def _locate(entry: dict[str, Any], near: Path) -> Path | None:
    """A lineage entry's folder: its recorded path, else a folder of that name beside `near`."""
    for candidate in (Path(entry.get("path", "")), near.parent / str(entry.get("name", ""))):
        if str(candidate) and (candidate / "config.yaml").is_file():
            return candidate
    return None


def lineage(run_path: Path) -> list[dict[str, Any]]:
    """Ancestors of a run, root first, as `{"name", "path"}` (empty for a trained run)."""
    record = read_record(run_path)
    return list(record.get("lineage", [])) if record else []


def family(run_path: Path) -> tuple[Path | None, list[tuple[Path, dict[str, Any]]]]:
    """The root (trained) run of `run_path`'s family and every compressed descendant found.

    Descendants are looked for beside the root, beside `run_path` and beside each ancestor
    (where `ember compress` puts children unless told `--run-dir`), and recognised by the
    root's folder name at the head of their lineage.

    Returns:
        (root folder or None when it no longer exists, [(child folder, its record), ...])
        sorted by creation time.
    """
    run_path = run_path.resolve()
    ancestors = lineage(run_path)
    root_entry = ancestors[0] if ancestors else {"name": run_path.name, "path": str(run_path)}
    root = run_path if not ancestors else _locate(root_entry, run_path)
    folders = {run_path.parent}
    if root is not None:
        folders.add(root.parent)
    for entry in ancestors:
        found = _locate(entry, run_path)
        if found is not None:
            folders.add(found.parent)
    children: dict[Path, dict[str, Any]] = {}
    for folder in folders:
        for path in folder.iterdir() if folder.is_dir() else []:
            try:
                record = read_record(path) if path.is_dir() else None
            except RunError:
                continue  # a damaged sibling is left out of the report, not fatal
            if record and record.get("lineage") and record["lineage"][0].get("name") == root_entry["name"] \
                    and "child" in record:
                children[path.resolve()] = record
    ordered = sorted(children.items(), key=lambda kv: str(kv[1].get("created", "")))
    return root, ordered
