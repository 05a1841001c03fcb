"""Section HTML that tools left in a run folder, cleaned to a strict allow-list before the report shows it.

A run folder is untrusted input, so `explain/section.html` and its siblings may hold anything a
stranger planted: `<script>`, `onerror=` handlers, `javascript:` links, iframes. The report keeps
only the tags and attributes Ember's own tools write (text, tables, headings, PNG images embedded
as data URIs); everything else is dropped. nh3 (the Rust `ammonia` cleaner) parses like a
browser does, so what it keeps is what a browser would see.
"""

from __future__ import annotations

import nh3

__all__ = ["clean_section"]

_TAGS = {"p", "b", "i", "em", "strong", "code", "pre", "br", "span", "div", "small", "sub", "sup",
         "h2", "h3", "h4", "ul", "ol", "li", "table", "thead", "tbody", "tr", "th", "td", "caption",
         "img", "figure", "figcaption", "details", "summary", "a"}
_ATTRIBUTES = {"*": {"class", "title"}, "img": {"src", "alt", "width", "height"}, "a": {"href"},
               "td": {"colspan", "rowspan"}, "th": {"colspan", "rowspan"}}


def _only_png(tag: str, attribute: str, value: str) -> str | None:
    """Keep an image source only when it is an embedded PNG/JPEG; nothing is fetched from elsewhere."""
    if tag == "img" and attribute == "src":
        return value if value.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) else None
    return value


def clean_section(fragment: str) -> str:
    """`fragment` with everything outside the allow-list removed (scripts and styles with their content)."""
    return nh3.clean(fragment, tags=_TAGS, attributes=_ATTRIBUTES, url_schemes={"data", "https", "http"},
                     attribute_filter=_only_png, clean_content_tags={"script", "style"}, link_rel="noopener noreferrer")
