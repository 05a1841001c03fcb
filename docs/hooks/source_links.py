"""MkDocs hook: links from a page to the repository's own files (`../src/ember/...`,
`../tests/...`) are checked and shown as code, not links.

On GitHub such links open the file; the site does not carry the sources, so there they
become the file's path in code style. A link whose file does not exist is a warning, which
`mkdocs build --strict` turns into a failed build: a renamed module cannot leave a page behind.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.source_links")
LINK = re.compile(r"\[([^\]]+)\]\(((?:\.\./)+[^)\s#]+)(#[^)\s]*)?\)")


def on_page_markdown(markdown: str, page: Any, config: Any, **_: Any) -> str:
    docs = Path(config["docs_dir"]).resolve()
    here = (docs / page.file.src_path).parent

    def replace(match: re.Match[str]) -> str:
        target = (here / match.group(2)).resolve()
        if target.is_relative_to(docs):
            return match.group(0)  # a page of the site: MkDocs checks it
        if not target.exists():
            log.warning("%s links to %s, which does not exist", page.file.src_path, match.group(2))
        text = match.group(1)
        return text if text.startswith("`") else f"`{text}`"

    return LINK.sub(replace, markdown)
