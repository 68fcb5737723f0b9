"""The contract in docs/ keeps up with the code: every operation, error code and stream
event is documented, and the docs link only to what is in the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chat.errors import ChatError
from chat.events import RunError
from tests.conftest import ROOT

DOCS = ROOT / "docs"
API_DOC = (DOCS / "api.md").read_text()
STREAM_DOC = (DOCS / "streaming.md").read_text()
HTTP_METHODS = {"get", "put", "post", "patch", "delete"}


def subclasses(cls) -> list[type]:
    return [cls, *(c for sub in cls.__subclasses__() for c in subclasses(sub))]


@pytest.fixture
def schema(client) -> dict:
    response = client.get("/api/v1/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def test_api_md_documents_every_operation_of_the_schema(schema):
    """Each operation appears as `METHOD path` (relative to /api/v1/, ids as `{id}`)."""
    missing = []
    for path, item in schema["paths"].items():
        relative = re.sub(r"\{\w+_id\}", "{id}", path.removeprefix("/api/v1/"))
        for method in item.keys() & HTTP_METHODS:
            if f"{method.upper()} {relative}" not in API_DOC:
                missing.append(f"{method.upper()} {relative}")
    assert missing == []


def test_every_error_code_is_documented(schema):
    """The codes of the project's errors and those the schema lists in its error responses
    are in api.md's table; the codes a stream's `error` event can carry, in streaming.md."""
    codes = {cls.default_code for cls in subclasses(ChatError)} - {"error"}
    for item in schema["paths"].values():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            for status, response in operation["responses"].items():
                if status[0] in "45":
                    codes |= set(
                        re.findall(r"`([a-z_]+)`(?=[,:])", response.get("description", ""))
                    )
    assert (
        sorted(c for c in codes if f"| `{c}` |" not in API_DOC and f"`{c}`," not in API_DOC) == []
    )

    provider_codes = set()
    for source in (ROOT / "chat" / "providers").glob("*.py"):
        provider_codes |= set(re.findall(r'ProviderError\(\s*"(\w+)"', source.read_text()))
    stream_codes = provider_codes | {code.value for code in RunError} | {"auth_revoked"}
    assert "upstream_overloaded" in stream_codes
    assert sorted(c for c in stream_codes if f"`{c}`" not in STREAM_DOC) == []


def test_streaming_md_documents_every_event_the_server_writes():
    names = set()
    for source in (ROOT / "chat").glob("*.py"):
        names |= set(re.findall(r'sse\.event\(\s*"(\w+)"', source.read_text()))
    assert {"message_start", "reset", "conversation_deleted"} <= names
    names |= {"delta", "message_end", "error"}  # written with a variable name
    assert sorted(n for n in names if f"| `{n}` |" not in STREAM_DOC) == []


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *DOCS.rglob("*.md")]


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_links_stay_inside_the_repository_and_resolve(page: Path):
    """Relative links point to files that exist (and to headings that exist); nothing points
    to a design file outside the repository."""
    text = page.read_text()
    assert "DESIGN.md" not in text and "/work/" not in text
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.is_relative_to(ROOT) or not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", file.read_text(), re.MULTILINE)
            if anchor not in {slug(h) for h in headings}:
                broken.append(target)
    assert broken == []
