"""Request parsing that answers every malformed body with a 400."""

from __future__ import annotations

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            # DRF catches ValueError only; absurdly nested JSON would be a 500.
            raise ParseError("JSON parse error - nested too deeply.") from None
