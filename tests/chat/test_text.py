"""What counts as blank text (chat/text.py): nothing a reader would see."""

from __future__ import annotations

import pytest

from chat.text import is_blank


@pytest.mark.parametrize(
    ("text", "blank"),
    [
        ("", True),
        (" \t\n\u00a0\u3000\u2028", True),
        ("\u200b\u200c\u200d\u2060\ufeff", True),
        ("\u00ad\u034f\u061c\u180e", True),
        ("\u115f\u1160\u3164\uffa0", True),
        ("\u2800\U00016fe4\U0001d159", True),
        ("\ufe0f\U000e0041\U000e007f", True),
        ("\x00\x7f\x85", True),
        ("a", False),
        ("\u200bhi\u200b", False),
        ("\u0301", False),
        ("😀\ufe0f", False),
        (".", False),
    ],
)
def test_blank_means_nothing_a_reader_would_see(text, blank):
    """Whitespace, format and control characters, Unicode's default-ignorable characters
    and a few invisible fillers are blank together; any visible character is not."""
    assert is_blank(text) is blank
