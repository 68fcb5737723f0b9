"""Model output as safe HTML: markdown-it-py, then nh3 with an allow-list.

Assistant text is untrusted (a prompt can make the model write anything), so the HTML
produced here must never run script, load anything, or navigate anywhere surprising:

- Markdown is CommonMark plus tables and strikethrough, with raw HTML *disabled*: any
  ``<script>``, ``<img onerror>`` or ``<svg onload>`` in the text is shown as text.
- Links are kept only for ``http:``, ``https:`` and ``mailto:`` URLs; anything else
  (``javascript:``, ``data:``, relative paths) stays literal markdown text. Kept links open
  in a new tab with ``rel="noopener noreferrer"``.
- Images are never rendered as images (a remote image would leak the reader's IP and be a
  tracking pixel): ``![alt](url)`` becomes a link labelled with the alt text.
- nh3 then re-checks the output against an allow-list of tags, attributes and schemes,
  so a bug or a plugin in the markdown step cannot let markup through.

``static/chat/markdown.js`` configures markdown-it and DOMPurify the same way for the text
the browser renders while an answer streams.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from importlib.metadata import version

import nh3
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

# Bump when the rules below change: HTML stored by older rules is then rendered again the
# next time it is read (as it is when markdown-it-py or nh3 is upgraded), so a tightened
# allow-list reaches every stored answer, not only new ones.
RULES_VERSION = 1

ALLOWED_SCHEMES = frozenset({"http", "https", "mailto"})
_ABSOLUTE_URL = re.compile(r"^(?:https?://|mailto:)", re.IGNORECASE)
# Fence info strings become `language-<name>` classes, which the page's highlighter reads.
_LANGUAGE_CLASS = re.compile(r"^language-[A-Za-z0-9_+#.-]{1,40}$")
_ALIGN_CLASS = re.compile(r"^align-(?:left|center|right)$")
_TABLE_ALIGN = re.compile(r"text-align:\s*(left|center|right)")

TAGS = frozenset(
    {
        "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "s", "del",
        "code", "pre", "blockquote", "ul", "ol", "li", "a",
        "table", "thead", "tbody", "tr", "th", "td",
    }
)  # fmt: skip
ATTRIBUTES = {
    "a": {"href", "title", "class"},
    "code": {"class"},
    "ol": {"start"},
    "th": {"class"},
    "td": {"class"},
}


def is_allowed_url(url: str) -> bool:
    """Only absolute http(s) and mailto URLs are ever linked."""
    return bool(_ABSOLUTE_URL.match(url.strip()))


def _render_image(self, tokens, idx, options, env) -> str:
    token = tokens[idx]
    label = self.renderInlineAsText(token.children or [], options, env).strip() or "image"
    href = escape(token.attrGet("src") or "")
    return f'<a href="{href}" class="md-image">{escape(label)}</a>'


def _render_table_cell(self, tokens, idx, options, env) -> str:
    # Alignment comes as a style attribute, which our CSP (style-src 'self') would refuse.
    token = tokens[idx]
    style = token.attrs.pop("style", None)
    if style and (match := _TABLE_ALIGN.search(str(style))):
        token.attrJoin("class", f"align-{match[1]}")
    return self.renderToken(tokens, idx, options, env)


@cache
def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.validateLink = is_allowed_url
    md.add_render_rule("image", _render_image)
    md.add_render_rule("th_open", _render_table_cell)
    md.add_render_rule("td_open", _render_table_cell)
    return md


def _filter_attribute(element: str, attribute: str, value: str) -> str | None:
    if attribute == "href":
        return value if is_allowed_url(value) else None
    if attribute == "class":
        allowed = {
            "code": _LANGUAGE_CLASS,
            "th": _ALIGN_CLASS,
            "td": _ALIGN_CLASS,
        }.get(element)
        if element == "a":
            return value if value == "md-image" else None
        if allowed is None:
            return None
        kept = [name for name in value.split() if allowed.match(name)]
        return " ".join(kept) or None
    return value


@cache
def _cleaner() -> nh3.Cleaner:
    return nh3.Cleaner(
        tags=set(TAGS),
        clean_content_tags={"script", "style"},
        attributes={tag: set(names) for tag, names in ATTRIBUTES.items()},
        attribute_filter=_filter_attribute,
        url_schemes=set(ALLOWED_SCHEMES),
        url_relative="deny",
        link_rel="noopener noreferrer",
        set_tag_attribute_values={"a": {"target": "_blank"}},
    )


def sanitize_html(html: str) -> str:
    """Reduce any HTML to the allow-list (the second line of defence)."""
    return _cleaner().clean(html)


def render_markdown(text: str) -> SafeString:
    """Untrusted markdown as HTML that is safe to put into a page."""
    if not text:
        return mark_safe("")
    return mark_safe(sanitize_html(_markdown().render(text)))  # noqa: S308 - sanitized above


@cache
def _rules() -> bytes:
    libraries = " ".join(f"{name} {version(name)}" for name in ("markdown-it-py", "nh3"))
    return f"{RULES_VERSION} {libraries}\0".encode()


def html_key(text: str) -> str:
    """What HTML rendered from `text` by these rules is stored under (`Message.html_key`).

    A digest of the rules (with the libraries' versions) and the text itself: stored HTML
    is used only for exactly the text and rules it was made from, so neither an edited
    message (in the admin) nor a sanitizer upgrade can leave stale HTML on the page.
    """
    return hashlib.sha256(_rules() + text.encode("utf-8", "surrogatepass")).hexdigest()
