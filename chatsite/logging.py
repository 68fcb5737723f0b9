"""Keep stream tokens out of logs.

Stream tokens travel in the query string (EventSource cannot set headers), and
servers log request paths with their query strings. This filter rewrites
`token=<...>` wherever a log record carries it.
"""

from __future__ import annotations

import logging
import re

_TOKEN_RE = re.compile(r"((?:^|[?&;])(?:token|access|refresh)=)[^&\s\"']+")


def redact(text: str) -> str:
    return _TOKEN_RE.sub(r"\1[redacted]", text)


class RedactTokensFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, dict):
            record.args = {
                k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        elif isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


class OneLineErrors(logging.Filter):
    """Turn a record's traceback into one line: for libraries that log a full
    traceback for an expected outage every second (channels_redis's pub/sub
    receive loop while Redis is down), which would bury everything else."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()}: {record.exc_info[1]!r}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True
