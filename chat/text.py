"""What counts as text in a message."""

from __future__ import annotations

import regex

# A message is blank when nothing in it would show. That is Unicode's White_Space and
# Default_Ignorable_Code_Point characters (zero-width spaces and joiners, the Hangul
# fillers U+115F, U+1160, U+3164 and U+FFA0, variation selectors, bidi controls, the
# soft hyphen, tag characters, ...), format (Cf) and control (Cc) characters, and a few
# characters that are printable by category but drawn as nothing and used as
# "invisible" text: U+2800 BRAILLE PATTERN BLANK, U+16FE4 KHITAN SMALL SCRIPT FILLER
# and U+1D159 MUSICAL SYMBOL NULL NOTEHEAD.
_INVISIBLE = regex.compile(
    r"[\p{White_Space}\p{Default_Ignorable_Code_Point}\p{Cf}\p{Cc}"
    r"\N{BRAILLE PATTERN BLANK}\N{KHITAN SMALL SCRIPT FILLER}\N{MUSICAL SYMBOL NULL NOTEHEAD}]*+"
)


def is_blank(text: str) -> bool:
    """Whether `text` has nothing a reader would see."""
    return _INVISIBLE.fullmatch(text) is not None
