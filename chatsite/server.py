"""`chatsite-serve` / `python -m chatsite.server`: daphne, with tokens kept out of its access log.

daphne's access log prints each request's full path, query string included,
and stream tokens travel in the query string (EventSource cannot set headers).
This runs daphne's own command line with an access logger that redacts them.
"""

from __future__ import annotations

from daphne.access import AccessLogGenerator
from daphne.cli import CommandLineInterface
from daphne.server import Server

from chatsite.logging import redact


class RedactingAccessLog(AccessLogGenerator):
    def __call__(self, protocol, action, details):
        if "path" in details:
            details = {**details, "path": redact(details["path"])}
        super().__call__(protocol, action, details)


class RedactingServer(Server):
    def __init__(self, *args, action_logger=None, **kwargs):
        if isinstance(action_logger, AccessLogGenerator):
            action_logger = RedactingAccessLog(action_logger.stream)
        super().__init__(*args, action_logger=action_logger, **kwargs)


class ChatsiteCommandLine(CommandLineInterface):
    server_class = RedactingServer


def main() -> None:
    ChatsiteCommandLine.entrypoint()


if __name__ == "__main__":
    main()
