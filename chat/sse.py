"""Server-Sent Events framing: the only place that writes SSE bytes.

Event names and ids are ours; everything that can carry model or user text
goes through `data`, which is one line of JSON. JSON already escapes CR, LF
and NUL; we also escape U+0085, U+2028 and U+2029, which some line splitters
(Python's `str.splitlines`, for one) treat as line breaks. So no text can end
a field, start a new one, or split an event.
"""

from __future__ import annotations

import json

_LINE_BREAKERS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

HEARTBEAT = b": ping\n\n"


def _check_field(value: str) -> str:
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError(f"SSE field contains a line break or NUL: {value!r}")
    return value


def encode_data(data: object) -> str:
    return _dumps(data).translate(_LINE_BREAKERS)


def event(name: str, data: object, *, id: str | None = None) -> bytes:
    """One complete SSE event: `id:` (optional), `event:`, one `data:` line."""
    head = f"id: {_check_field(id)}\n" if id is not None else ""
    return f"{head}event: {_check_field(name)}\ndata: {encode_data(data)}\n\n".encode()


def retry(milliseconds: int) -> bytes:
    return f"retry: {int(milliseconds)}\n\n".encode()
