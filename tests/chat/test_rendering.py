"""Server-side markdown rendering: model output becomes HTML that cannot run or fetch anything."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from chat.rendering import TAGS, render_markdown, sanitize_html


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag


def tags(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(html)
    return parser.tags


def links(html: str) -> list[dict[str, str | None]]:
    return [attrs for tag, attrs in tags(html) if tag == "a"]


def assert_inert(html: str) -> None:
    """Only allow-listed tags, no event handlers, no styles, no non-http(s)/mailto URLs."""
    for tag, attrs in tags(html):
        assert tag in TAGS, f"unexpected <{tag}> in {html!r}"
        for name, value in attrs.items():
            assert not name.startswith("on"), f"event handler {name} in {html!r}"
            assert name not in {"style", "src", "srcset"}, f"{name} in {html!r}"
            if name == "href":
                assert value.startswith(("http://", "https://", "mailto:")), html


# --- raw HTML is text -----------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        "<script>window.__xss = 1</script>",
        "<img src=x onerror=window.__xss=1>",
        '<svg onload="window.__xss=1"></svg>',
        '<a href="javascript:window.__xss=1">click</a>',
        '<iframe src="https://evil.example/"></iframe>',
        "<style>body { display: none }</style>",
        '<div onclick="window.__xss=1">block <b>html</b></div>',
        "text with <span onmouseover=window.__xss=1>inline html</span>",
    ],
)
def test_raw_html_is_shown_as_text(payload):
    """Raw HTML in the answer, block or inline, is escaped: it shows up as text, never as tags."""
    html = render_markdown(payload)

    assert_inert(html)
    assert {tag for tag, _ in tags(html)} <= {"p"}
    assert "&lt;" in html


def test_script_text_never_becomes_a_script_element():
    """A <script> split over lines, or inside markdown, is still only text."""
    html = render_markdown("**bold** <script>\nwindow.__xss = 1\n</script> end")

    assert "<script" not in html
    assert "&lt;script&gt;" in html
    assert "<strong>bold</strong>" in html


# --- links --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "markdown",
    [
        "[x](javascript:window.__xss=1)",
        "[x](JAVASCRIPT:alert(1))",
        "[x](  javascript:alert(1))",
        "[x](java%0ascript:alert(1))",
        "[x](vbscript:msgbox(1))",
        "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
        "[x](file:///etc/passwd)",
        "[x](/relative/path)",
        "[x](//evil.example/protocol-relative)",
        "<javascript:alert(1)>",
    ],
)
def test_links_other_than_http_and_mailto_stay_text(markdown):
    """`javascript:`, `data:`, `file:`, relative and other links are not made into links."""
    html = render_markdown(markdown)

    assert links(html) == []
    assert_inert(html)


def test_http_links_open_in_a_new_tab_without_opener_or_referrer():
    """Kept links get rel="noopener noreferrer" and target="_blank"."""
    html = render_markdown(
        'See [the docs](https://example.com/docs "Docs"), <http://example.org> '
        "and [mail](mailto:someone@example.com)."
    )

    found = links(html)
    assert [link["href"] for link in found] == [
        "https://example.com/docs",
        "http://example.org",
        "mailto:someone@example.com",
    ]
    for link in found:
        assert link["rel"] == "noopener noreferrer"
        assert link["target"] == "_blank"
    assert found[0]["title"] == "Docs"


def test_a_rel_attribute_cannot_be_smuggled_in():
    """Sanitizing any HTML forces our rel and target on links and drops the author's."""
    html = sanitize_html('<a href="https://x.example" rel="opener" target="_self">x</a>')

    (link,) = links(html)
    assert link["rel"] == "noopener noreferrer"
    assert link["target"] == "_blank"


# --- images -------------------------------------------------------------------------


def test_markdown_image_is_a_link_not_an_image():
    """`![alt](url)` renders as a link labelled with the alt text; no <img> is ever made."""
    html = render_markdown("![a tracking pixel](http://203.0.113.9/pixel.png)")

    assert "<img" not in html
    (link,) = links(html)
    assert link["href"] == "http://203.0.113.9/pixel.png"
    assert link["class"] == "md-image"
    assert link["rel"] == "noopener noreferrer"
    assert ">a tracking pixel</a>" in html


@pytest.mark.parametrize(
    "markdown",
    [
        "![x](javascript:alert(1))",
        "![x](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+)",
        '![x](x" onerror="alert(1))',
    ],
)
def test_images_with_other_urls_stay_text(markdown):
    """Images whose URL is not http(s) are left as literal text."""
    html = render_markdown(markdown)

    assert "<img" not in html
    assert_inert(html)
    assert all(link["href"].startswith("http") for link in links(html))


def test_sanitizer_drops_img_and_svg_from_any_html():
    """The allow-list is the second line of defence: even given HTML, no img/svg survive."""
    html = sanitize_html(
        '<p>a<img src="http://203.0.113.9/p.png">b<svg onload="alert(1)"><circle/></svg>'
        '<script>alert(1)</script><span style="color:red" onclick="x()">c</span></p>'
    )

    assert html == "<p>abc</p>"


# --- code ---------------------------------------------------------------------------


def test_fenced_code_keeps_its_language_class_and_escapes_its_text():
    """A fence's language becomes `class="language-x"` on <code>, for the page's highlighter."""
    html = render_markdown('```python\nprint("<b>hi</b>")\n```')

    assert html == (
        '<pre><code class="language-python">print("&lt;b&gt;hi&lt;/b&gt;")\n</code></pre>\n'
    )


@pytest.mark.parametrize("language", ["c++", "c#", "objective-c", "shell-session", "py3.11"])
def test_usual_language_names_are_kept(language):
    """Language names with +, #, - and . are kept as they are."""
    html = render_markdown(f"```{language}\nx\n```")

    assert f'<code class="language-{language}">' in html


def test_hostile_fence_info_cannot_add_attributes():
    """A fence info string that tries to break out of the class attribute is dropped."""
    html = render_markdown('```"><script>alert(1)</script>\nx\n```')

    assert "<script" not in html
    assert "<pre><code>x\n</code></pre>" in html


def test_inline_code_and_indented_code():
    """Inline and indented code render as <code> / <pre><code> with escaped text."""
    html = render_markdown("Use `<br>` here.\n\n    indented <code>\n")

    assert "<code>&lt;br&gt;</code>" in html
    assert "<pre><code>indented &lt;code&gt;\n</code></pre>" in html


def test_classes_other_than_ours_are_removed():
    """Only `language-*` on code, alignment on cells and `md-image` on links survive."""
    html = sanitize_html(
        '<p class="x"><code class="language-js evil">a</code><a class="btn" '
        'href="https://e.example">b</a></p>'
    )

    assert '<p><code class="language-js">a</code><a ' in html
    (link,) = links(html)
    assert "class" not in link
    assert link["href"] == "https://e.example"


# --- the rest of the markdown -------------------------------------------------------


def test_tables_render_with_alignment_classes_not_styles():
    """Table alignment becomes a class, because our CSP forbids style attributes."""
    html = render_markdown("| a | b | c |\n|:--|:-:|--:|\n| 1 | 2 | 3 |")

    assert "style=" not in html
    assert '<th class="align-left">a</th>' in html
    assert '<td class="align-center">2</td>' in html
    assert '<td class="align-right">3</td>' in html


def test_common_markdown_renders():
    """Headings, emphasis, lists, quotes, rules and strikethrough render as expected."""
    html = render_markdown(
        "# Title\n\nSome *em* and **strong** and ~~gone~~.\n\n"
        "- one\n- two\n\n3. three\n4. four\n\n> quoted\n\n---\n"
    )

    assert "<h1>Title</h1>" in html
    assert "<em>em</em>" in html and "<strong>strong</strong>" in html
    assert "<s>gone</s>" in html
    assert "<ul>\n<li>one</li>" in html
    assert '<ol start="3">' in html
    assert "<blockquote>\n<p>quoted</p>\n</blockquote>" in html
    assert "<hr>" in html
    assert_inert(html)


def test_empty_text_renders_nothing():
    """An empty answer is an empty string."""
    assert render_markdown("") == ""
