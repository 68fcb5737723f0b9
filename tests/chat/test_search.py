"""Finding conversations (`?search=`), pinning and archiving them, on PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.postgres.search import SearchQuery
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from chat import selectors
from chat.models import SEARCH_CONFIG, Conversation, Message, message_search_vector
from chat.search import SEARCH_MAX_CHARS, search
from chat.services import conversation_create, conversation_update

pytestmark = pytest.mark.django_db

LIST_URL = "/api/v1/conversations/"
on_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="full-text search is PostgreSQL's"
)


def detail_url(conversation) -> str:
    return f"/api/v1/conversations/{conversation.pk}/"


def make(owner, title: str = "", *messages: str, age_minutes: int = 0) -> Conversation:
    """A conversation with `messages` (user and assistant turns, alternately), last
    updated `age_minutes` ago."""
    conversation = conversation_create(owner=owner, title=title)
    start = timezone.now() - timedelta(hours=1)
    for number, content in enumerate(messages):
        Message.objects.create(
            conversation=conversation,
            role=Message.Role.USER if number % 2 == 0 else Message.Role.ASSISTANT,
            content=content,
            created_at=start + timedelta(seconds=number),
        )
    Conversation.objects.filter(pk=conversation.pk).update(
        updated_at=timezone.now() - timedelta(minutes=age_minutes)
    )
    return conversation


def found(client, query: str, **params) -> list[dict]:
    response = client.get(LIST_URL, {"search": query, **params})
    assert response.status_code == 200, response.content
    return response.json()["results"]


def ids(results) -> list[str]:
    return [item["id"] for item in results]


def assert_invalid(response, field: str) -> dict:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid"
    assert field in body["errors"]
    return body


# --- search ------------------------------------------------------------------------


def test_search_finds_a_conversation_by_its_title(api_client, user):
    """A title word finds its conversation, with no snippet (no message matched)."""
    wanted = make(user, "Tidal physics", "What pulls the sea?")
    make(user, "Baking bread", "How long to knead?")

    results = found(api_client, "tidal")

    assert ids(results) == [str(wanted.pk)]
    assert results[0]["snippet"] is None


def test_search_finds_a_title_by_part_of_a_word(api_client, user):
    """A title is found while its word is still being typed."""
    wanted = make(user, "Kubernetes upgrade")
    make(user, "Something else")

    assert ids(found(api_client, "kuber")) == [str(wanted.pk)]


def test_search_finds_a_conversation_by_message_text_with_a_snippet(api_client, user):
    """A word in any message (question or answer) finds the conversation, once, and the
    snippet shows the text around it on one line."""
    filler = " ".join(f"word{n}" for n in range(60))
    wanted = make(
        user,
        "Untouched title",
        "Tell me about the sea.",
        f"{filler} The Mariana\n\nTrench is the deepest point. {filler}",
        "And the trench's depth?",
        "The trench is nearly eleven kilometres deep.",
    )
    make(user, "Other", "Nothing to see", "here")

    results = found(api_client, "trench")

    assert ids(results) == [str(wanted.pk)]
    snippet = results[0]["snippet"]
    assert "trench" in snippet.lower()
    assert "\n" not in snippet
    assert len(snippet) < 300


def test_search_only_finds_the_users_own_conversations(api_client, user, other_user):
    """Someone else's conversation never matches, whatever it holds."""
    mine = make(user, "Mine", "secret plans for the weekend")
    make(other_user, "secret plans", "secret plans for the weekend")

    assert ids(found(api_client, "secret")) == [str(mine.pk)]


def test_a_title_match_ranks_above_a_message_match(api_client, user):
    """A conversation titled with the word outranks one that only mentions it, however
    recent the other one is."""
    mentions = make(user, "Weekend", "Any good volcano documentaries?", age_minutes=0)
    titled = make(user, "Volcano trip", "Which one should we visit?", age_minutes=60)

    assert ids(found(api_client, "volcano")) == [str(titled.pk), str(mentions.pk)]


@on_postgresql
def test_more_mentions_rank_higher(api_client, user):
    """Full-text search ranks by relevance: a message dense with the word ranks above a
    passing mention, even in an older conversation."""
    passing = make(user, "A", "We talked about many things, the glacier once.", age_minutes=0)
    dense = make(user, "B", "Glacier, glacier, glacier: the glacier melts.", age_minutes=60)

    assert ids(found(api_client, "glacier")) == [str(dense.pk), str(passing.pk)]


@on_postgresql
def test_full_text_search_matches_other_forms_of_a_word(api_client, user):
    """English stemming: "streams" finds a message about streaming."""
    wanted = make(user, "SSE", "How does streaming work over SSE?")

    results = found(api_client, "streams")

    assert ids(results) == [str(wanted.pk)]
    assert "streaming" in results[0]["snippet"]


@on_postgresql
def test_full_text_search_reads_the_query_as_a_web_search(api_client, user):
    """Quoted phrases must appear as written, and `-word` excludes."""
    phrase = make(user, "A", "the red panda sleeps")
    scattered = make(user, "B", "a panda that is red")
    assert ids(found(api_client, '"red panda"')) == [str(phrase.pk)]
    assert ids(found(api_client, "panda -sleeps")) == [str(scattered.pk)]


HOSTILE = [
    "'",
    '"',
    "''",
    '"unclosed',
    "&|!:*",
    "a & b | !c",
    "foo:*",
    "foo:A",
    "(((",
    ")",
    "<->",
    "a <-> b",
    "\\",
    "\\'",
    "%",
    "_",
    "%_%",
    "--",
    "-",
    "or",
    "'; DROP TABLE chat_message; --",
    "🦀",
    "🦀 rust",
    "‮reversed",
    "ǅ",
    "\u200b",
    "\ufeff",
    "\x01\x02",
    "a\tb",
    "x" * SEARCH_MAX_CHARS,
    "the",  # only a stop word: an empty query on PostgreSQL
]


@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_queries_are_searched_not_a_500(api_client, user, query):
    """Whatever is typed, the answer is a page of results (and `%`/`_` are no wildcards)."""
    make(user, "Plain title", "plain text")
    weird = make(user, f"x{query}x"[:200], f"y{query}y")

    response = api_client.get(LIST_URL, {"search": query})

    assert response.status_code == 200, response.content
    if query in ("%", "_", "%_%"):
        assert ids(response.json()["results"]) == [str(weird.pk)]


def test_a_query_with_nul_is_400(api_client, user):
    """NUL cannot be searched for (PostgreSQL cannot hold it): a 400, not a 500."""
    assert_invalid(api_client.get(LIST_URL, {"search": "a\x00b"}), "search")


def test_a_query_over_the_limit_is_400(api_client, user):
    """Queries are capped at SEARCH_MAX_CHARS characters."""
    response = api_client.get(LIST_URL, {"search": "x" * (SEARCH_MAX_CHARS + 1)})
    body = assert_invalid(response, "search")
    assert str(SEARCH_MAX_CHARS) in body["message"]


@pytest.mark.parametrize("query", ["", "   ", "\t\n", "\u200b\u2060"])
def test_a_blank_query_is_the_usual_list(api_client, user, query):
    """A blank (or invisible-only) query lists as without one: archived ones left out."""
    shown = make(user, "Shown")
    archived = make(user, "Archived")
    conversation_update(conversation=archived, archived=True)

    results = found(api_client, query)

    assert ids(results) == [str(shown.pk)]
    assert results[0]["snippet"] is None


def test_search_results_are_paginated(api_client, user):
    """Results come in the list's pages; `next` keeps the query."""
    for number in range(55):
        make(user, f"Report {number}")
    make(user, "Unrelated")

    first = api_client.get(LIST_URL, {"search": "report"}).json()
    assert first["count"] == 55
    assert len(first["results"]) == 50
    assert "search=report" in first["next"]
    second = api_client.get(first["next"]).json()
    assert len(second["results"]) == 5
    assert not set(ids(first["results"])) & set(ids(second["results"]))


def test_search_covers_archived_conversations_unless_told(api_client, user):
    """Search finds archived conversations too (marked `archived`); `archived=` narrows it."""
    kept = make(user, "Kept notes")
    gone = make(user, "Archived notes")
    conversation_update(conversation=gone, archived=True)

    results = found(api_client, "notes")
    assert set(ids(results)) == {str(kept.pk), str(gone.pk)}
    assert {item["id"]: item["archived"] for item in results} == {
        str(kept.pk): False,
        str(gone.pk): True,
    }
    assert ids(found(api_client, "notes", archived="true")) == [str(gone.pk)]
    assert ids(found(api_client, "notes", archived="false")) == [str(kept.pk)]


@pytest.mark.parametrize("vendor", ["postgresql", "sqlite"])
def test_the_selector_finds_each_conversation_once(user, vendor):
    """However many messages match, a conversation is one result."""
    if vendor == "postgresql" and connection.vendor != "postgresql":
        pytest.skip("full-text search is PostgreSQL's")
    many = make(user, "Echo chamber", *["echo echo"] * 6)

    results = list(search(Conversation.objects.filter(owner=user), "echo", vendor=vendor))

    assert [conversation.pk for conversation in results] == [many.pk]


def test_the_contains_search_matches_title_and_text_with_a_window(user):
    """The contains-search (SQLite's, run here on whichever database the tests use): titles
    first, case-insensitively, and a snippet cut around the first match in the latest
    matching message."""
    before = "a" * 100
    text_match = make(user, "Other", "first", f"{before} needle in the haystack {'z' * 300}")
    title_match = make(user, "The NEEDLE files", age_minutes=60)

    results = list(search(Conversation.objects.filter(owner=user), "Needle", vendor="sqlite"))

    assert [conversation.pk for conversation in results] == [title_match.pk, text_match.pk]
    assert results[0].snippet is None
    snippet = results[1].snippet
    assert snippet.startswith("a" * 39 + " needle in the haystack")
    assert len(snippet) == 160


def test_conversation_search_selector_is_the_users_own(user, other_user):
    """`conversation_search` reads only the user's conversations."""
    mine = make(user, "Shared word")
    make(other_user, "Shared word")

    assert list(selectors.conversation_search(user=user, query="shared")) == [mine]


@on_postgresql
def test_message_search_uses_its_index():
    """The GIN index exists on PostgreSQL and answers the message-text match."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'message_content_search'")
        (definition,) = cursor.fetchone()
        assert "gin" in definition.lower()
        assert "to_tsvector('english'" in definition
        cursor.execute("SET LOCAL enable_seqscan = off")
        query = SearchQuery("tide", config=SEARCH_CONFIG, search_type="websearch")
        matching = Message.objects.annotate(vector=message_search_vector()).filter(vector=query)
        assert "message_content_search" in matching.explain()


# --- pinned and archived -------------------------------------------------------------


def test_the_list_shows_pinned_conversations_first(api_client, user):
    """Pinned conversations come first (most recent first among them), then the rest."""
    old_pinned = make(user, "old pinned", age_minutes=30)
    newest = make(user, "newest", age_minutes=0)
    new_pinned = make(user, "new pinned", age_minutes=10)
    older = make(user, "older", age_minutes=20)
    for conversation in (old_pinned, new_pinned):
        response = api_client.patch(detail_url(conversation), {"pinned": True}, format="json")
        assert response.status_code == 200

    results = api_client.get(LIST_URL).json()["results"]

    assert ids(results) == [str(c.pk) for c in (new_pinned, old_pinned, newest, older)]
    assert [item["pinned"] for item in results] == [True, True, False, False]


def test_archived_conversations_are_listed_only_with_archived_true(api_client, user):
    """The list leaves archived conversations out; `?archived=true` lists only them."""
    kept = make(user, "kept")
    gone = make(user, "gone")
    response = api_client.patch(detail_url(gone), {"archived": True}, format="json")
    assert response.status_code == 200
    assert response.json()["archived"] is True

    assert ids(api_client.get(LIST_URL).json()["results"]) == [str(kept.pk)]
    assert api_client.get(LIST_URL).json()["count"] == 1
    assert ids(api_client.get(LIST_URL, {"archived": "true"}).json()["results"]) == [str(gone.pk)]
    assert ids(api_client.get(LIST_URL, {"archived": "false"}).json()["results"]) == [str(kept.pk)]


@pytest.mark.parametrize("value", ["yes", "1", "0", "", "null"])
def test_archived_must_be_true_or_false(api_client, user, value):
    """`?archived=` takes `true` or `false` only."""
    assert_invalid(api_client.get(LIST_URL, {"archived": value}), "archived")


def test_pinning_and_archiving_keep_updated_at(api_client, user):
    """Pinning and archiving do not count as activity: `updated_at` stays."""
    conversation = make(user, "quiet", age_minutes=90)
    before = Conversation.objects.get(pk=conversation.pk).updated_at
    for body in ({"pinned": True}, {"pinned": False}, {"archived": True}, {"archived": False}):
        assert api_client.patch(detail_url(conversation), body, format="json").status_code == 200
    assert Conversation.objects.get(pk=conversation.pk).updated_at == before


def test_archiving_unpins_and_pinning_unarchives(api_client, user):
    """A conversation is in one place: pinned, recent or archived."""
    conversation = make(user, "moving")

    body = api_client.patch(detail_url(conversation), {"pinned": True}, format="json").json()
    assert (body["pinned"], body["archived"]) == (True, False)
    body = api_client.patch(detail_url(conversation), {"archived": True}, format="json").json()
    assert (body["pinned"], body["archived"]) == (False, True)
    body = api_client.patch(detail_url(conversation), {"pinned": True}, format="json").json()
    assert (body["pinned"], body["archived"]) == (True, False)
    conversation.refresh_from_db()
    assert (conversation.pinned, conversation.archived) == (True, False)


@pytest.mark.parametrize("place", ["pinned", "archived"])
def test_a_conversation_can_be_created_pinned_or_archived(api_client, user, place):
    """POST takes `pinned` and `archived` as PATCH does."""
    response = api_client.post(LIST_URL, {place: True}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()[place] is True
    assert getattr(Conversation.objects.get(pk=response.json()["id"]), place) is True


def test_created_pinned_and_archived_at_once_is_archived(api_client, user):
    """Asked for both on create, archiving wins."""
    response = api_client.post(LIST_URL, {"pinned": True, "archived": True}, format="json")
    assert response.status_code == 201, response.content
    assert (response.json()["pinned"], response.json()["archived"]) == (False, True)


def test_pinned_and_archived_at_once_archives(api_client, user):
    """Asked for both at once (a schema-valid request), archiving wins: the conversation
    is in one place."""
    conversation = make(user, "torn")
    conversation_update(conversation=conversation, pinned=True)
    response = api_client.patch(
        detail_url(conversation), {"pinned": True, "archived": True}, format="json"
    )
    assert response.status_code == 200, response.content
    conversation.refresh_from_db()
    assert (conversation.pinned, conversation.archived) == (False, True)


def test_the_database_refuses_a_pinned_archived_conversation(user):
    """The invariant is the database's too."""
    conversation = make(user, "both")
    with pytest.raises(IntegrityError), transaction.atomic():
        Conversation.objects.filter(pk=conversation.pk).update(pinned=True, archived=True)


@pytest.mark.parametrize("value", ["yes", "true", 1, 0, None, []])
def test_pinned_and_archived_must_be_json_booleans(api_client, user, value):
    """`pinned` and `archived` are JSON booleans, not DRF's lenient truthy strings."""
    conversation = make(user, "strict")
    for field in ("pinned", "archived"):
        response = api_client.patch(detail_url(conversation), {field: value}, format="json")
        assert_invalid(response, field)


def test_an_archived_conversation_is_still_its_owners(api_client, user, other_user):
    """Archiving hides a conversation from the list, nothing more: it can be read and
    written to, and it stays private."""
    conversation = make(user, "archived but mine")
    conversation_update(conversation=conversation, archived=True)
    assert api_client.get(detail_url(conversation)).json()["archived"] is True
    stranger = APIClient()
    stranger.force_authenticate(other_user)
    assert stranger.get(detail_url(conversation)).status_code == 404
    assert stranger.get(LIST_URL, {"archived": "true"}).json()["count"] == 0
    assert stranger.get(LIST_URL, {"search": "archived"}).json()["count"] == 0


# --- the schema ----------------------------------------------------------------------


def test_the_schema_documents_search_and_archived(api_client):
    """`search` and `archived` are query parameters of the list, which documents its 400;
    conversations carry `snippet`, `pinned` and `archived`."""
    schema = api_client.get("/api/v1/schema/", {"format": "json"}).json()
    operation = schema["paths"]["/api/v1/conversations/"]["get"]
    parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}
    assert parameters["archived"]["schema"] == {"type": "boolean"}
    assert parameters["archived"]["in"] == "query"
    assert parameters["search"]["in"] == "query"
    assert str(SEARCH_MAX_CHARS) in str(parameters["search"]["schema"])
    assert "400" in operation["responses"]
    item = schema["components"]["schemas"]["Conversation"]["properties"]
    assert item["snippet"]["nullable"] is True
    assert {"pinned", "archived"} <= set(item)
