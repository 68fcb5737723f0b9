"""Finding conversations by their title and their messages' text.

On PostgreSQL this is full-text search: the query is read as a web search engine reads
one (`websearch_to_tsquery`: words, "quoted phrases", `or`, `-word`; never a syntax
error, whatever is typed), matched with English stemming against message text (a GIN
index, `message_content_search`) and titles, and ranked: a title match weighs ten times
a message match (weight A against D), and a conversation's rank is its title's plus its
best message's. A title also matches on any part of it (`icontains`), so a title is
found while its words are still being typed. Elsewhere (SQLite) it is a contains-search
on the title and message text, title matches first.

Each result carries `snippet`: the text around the match in its best-matching message
(plain text, no markup), or None when only the title matched.
"""

from __future__ import annotations

from django.contrib.postgres.search import SearchHeadline, SearchQuery, SearchRank, SearchVector
from django.db import connection
from django.db.models import (
    Case,
    Exists,
    F,
    FloatField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce, Greatest, Lower, StrIndex, Substr

from .models import SEARCH_CONFIG, Conversation, Message, message_search_vector

# Longer queries are refused (400): no one types more, and each word costs the search.
SEARCH_MAX_CHARS = 200
# How much text a snippet shows: about this many words (PostgreSQL), characters elsewhere.
SNIPPET_WORDS = (8, 24)  # ts_headline's MinWords, MaxWords
SNIPPET_CHARS = 160
SNIPPET_CHARS_BEFORE = 40  # of those, before the match


def search(
    conversations: QuerySet[Conversation], query: str, *, vendor: str | None = None
) -> QuerySet[Conversation]:
    """`conversations` that match `query`, best first, each annotated with `rank` and
    `snippet`. `vendor` picks the implementation (default: the database's); tests pass
    another to run the contains-search on PostgreSQL."""
    if (vendor or connection.vendor) == "postgresql":
        return _full_text(conversations, query)
    return _contains(conversations, query)


def _full_text(conversations: QuerySet[Conversation], query: str) -> QuerySet[Conversation]:
    tsquery = SearchQuery(query, config=SEARCH_CONFIG, search_type="websearch")
    title = SearchVector("title", config=SEARCH_CONFIG, weight="A")
    # The same expression as the index, so the index answers `@@`.
    matching = Message.objects.annotate(vector=message_search_vector()).filter(
        conversation=OuterRef("pk"), vector=tsquery
    )
    best = matching.annotate(rank=SearchRank(F("vector"), tsquery)).order_by("-rank", "-created_at")
    snippet = SearchHeadline(
        "content",
        tsquery,
        config=SEARCH_CONFIG,
        start_sel="",
        stop_sel="",
        min_words=SNIPPET_WORDS[0],
        max_words=SNIPPET_WORDS[1],
    )
    return (
        conversations.annotate(title_vector=title)
        .filter(Q(title_vector=tsquery) | Q(title__icontains=query) | Exists(matching))
        .annotate(
            rank=Coalesce(SearchRank(F("title_vector"), tsquery), 0.0)
            + Coalesce(Subquery(best.values("rank")[:1]), 0.0, output_field=FloatField()),
            # Computed for the page's rows only: PostgreSQL evaluates an expensive output
            # column after the sort and the LIMIT.
            snippet=Subquery(best.annotate(snippet=snippet).values("snippet")[:1]),
        )
        .order_by("-rank", "-updated_at", "-pk")
    )


def _contains(conversations: QuerySet[Conversation], query: str) -> QuerySet[Conversation]:
    matching = Message.objects.filter(conversation=OuterRef("pk"), content__icontains=query)
    # The text around the first match in the conversation's latest matching message.
    # `Lower` folds what SQLite's LIKE folds (ASCII), so the position is the LIKE's match.
    at = StrIndex(Lower("content"), Lower(Value(query)))
    window = Substr("content", Greatest(at - SNIPPET_CHARS_BEFORE, Value(1)), Value(SNIPPET_CHARS))
    snippet = matching.order_by("-created_at").annotate(snippet=window).values("snippet")[:1]
    return (
        conversations.filter(Q(title__icontains=query) | Exists(matching))
        .annotate(
            rank=Case(When(title__icontains=query, then=Value(1.0)), default=Value(0.0)),
            snippet=Subquery(snippet),
        )
        .order_by("-rank", "-updated_at", "-pk")
    )
