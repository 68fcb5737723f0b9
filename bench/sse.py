"""A small incremental Server-Sent Events parser (WHATWG HTML, "Parsing an event stream").

The load client feeds it raw bytes as they arrive. It follows the spec's line rules
(CRLF, CR or LF end a line, also across chunk boundaries; a leading BOM is dropped),
its field rules (`event`, `data` joined with LF, `id` without NUL, `retry` digits
only, a single space after the colon is removed, lines starting with `:` are
comments), and dispatches on a blank line only when data was seen. It also counts
comments (heartbeats) and remembers the last `retry:`, which chatsite sends first.
"""

from __future__ import annotations

import codecs
from typing import NamedTuple


class Event(NamedTuple):
    type: str
    data: str
    id: str


class SSEParser:
    __slots__ = ("_buf", "_data", "_decoder", "_event", "_started", "comments", "last_id", "retry")

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buf = ""
        self._event = ""
        self._data: list[str] = []
        self._started = False
        self.last_id = ""
        self.retry: int | None = None
        self.comments = 0

    def feed(self, chunk: bytes) -> list[Event]:
        text = self._decoder.decode(chunk)
        if not self._started and text:
            self._started = True
            if text[0] == "\ufeff":
                text = text[1:]
        buf = self._buf + text
        held = ""
        if "\r" in buf:
            if buf.endswith("\r"):  # a CR at the end may be the first half of a CRLF
                buf, held = buf[:-1], "\r"
            buf = buf.replace("\r\n", "\n").replace("\r", "\n")
        lines = buf.split("\n")
        self._buf = lines.pop() + held
        events: list[Event] = []
        for line in lines:
            if not line:
                if self._data:
                    events.append(
                        Event(self._event or "message", "\n".join(self._data), self.last_id)
                    )
                self._data = []
                self._event = ""
                continue
            if line[0] == ":":
                self.comments += 1
                continue
            name, colon, value = line.partition(":")
            if colon and value[:1] == " ":
                value = value[1:]
            if name == "data":
                self._data.append(value)
            elif name == "event":
                self._event = value
            elif name == "id":
                if "\0" not in value:
                    self.last_id = value
            elif name == "retry" and value.isdigit():
                self.retry = int(value)
        return events
