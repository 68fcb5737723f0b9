"""A conversation's messages as a tree, and the branch a reader sees by default.

A user message follows an answer (`parent`); an answer replies to a user message
(`reply_to`). Several user messages with one parent are edits, several answers to one
user message are regenerations: each is a branch point, and the reader sees one child at
each, the path the page shows. By default that is the path to the newest message: at each
branch point, the child whose subtree holds the newest message.

This works on the messages a page has, which may be a window of the history: a message
whose parent is not among them starts the path, as the window's first turn does.
`static/chat/messages.js` does the same in the browser when the reader switches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .models import Message

_ROOT = object()  # the parent of the messages whose own parent is not among them


@dataclass(frozen=True)
class Place:
    """Where a message stands among its siblings, and whether the default path shows it."""

    number: int  # 1-based, oldest first
    siblings: int  # itself included
    visible: bool


def link_of(message: Message):
    """The id of the message `message` hangs under: a user message's parent answer, an
    answer's question."""
    return message.parent_id if message.role == Message.Role.USER else message.reply_to_id


def default_branch(messages: Sequence[Message]) -> dict[object, Place]:
    """Each message's `Place` (by id), for `messages` oldest first."""
    ids = {message.pk for message in messages}
    children: dict[object, list[Message]] = {}
    for message in messages:
        link = link_of(message)
        children.setdefault(link if link in ids else _ROOT, []).append(message)
    # The newest message under each message (itself included): children are always newer
    # than their parent, so one pass from the newest carries each one's figure up.
    newest = {message.pk: index for index, message in enumerate(messages)}
    for message in reversed(messages):
        link = link_of(message)
        if link in ids:
            newest[link] = max(newest[link], newest[message.pk])
    visible: set[object] = set()
    group = children.get(_ROOT, [])
    while group:
        chosen = max(group, key=lambda message: newest[message.pk])
        visible.add(chosen.pk)
        group = children.get(chosen.pk, [])
    return {
        message.pk: Place(number, len(group), message.pk in visible)
        for group in children.values()
        for number, message in enumerate(group, start=1)
    }
