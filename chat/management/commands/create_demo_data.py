"""``manage.py create_demo_data``: a few users and conversations to look at, for local use.

The demo user's conversations show what the site and the admin have to render: markdown
answers (headings, lists, code, a table), a regenerated answer, a failed and a stopped
one; two more users give the usage report something to compare. Messages are written
directly (no model is asked), spread over the last few days. Run it again and it leaves
existing demo data alone; `--reset` replaces it.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from chat.models import Conversation, Message

TAG = "[demo] "  # every demo conversation's title starts with it: how --reset finds them

MARKDOWN = """## Three ways to reverse a list

1. **Slicing** makes a copy: `items[::-1]`
2. `reversed(items)` gives an iterator, without copying
3. `items.reverse()` reverses *in place*

```python
items = [1, 2, 3]
assert items[::-1] == [3, 2, 1]
```

| way | copies | in place |
|---|---|---|
| slicing | yes | no |
| `reversed` | no | no |
| `.reverse()` | no | yes |

> Pick `reversed` when you only loop over it once.
"""


class Command(BaseCommand):
    help = (
        "Create demo users and conversations: markdown answers, a regeneration, a failed "
        "and a stopped answer (for local use; DEBUG only)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default="demo", help="The demo user (staff).")
        parser.add_argument("--password", default="demo")
        parser.add_argument(
            "--reset",
            action="store_true",
            help="Delete the demo conversations and create them again.",
        )

    def handle(self, *args, username: str, password: str, reset: bool, **options):
        if not settings.DEBUG:
            raise CommandError("Refusing to create demo logins with DEBUG off.")
        with transaction.atomic():
            users = [
                _user(username, password, staff=True),
                _user(f"{username}-alice", password),
                _user(f"{username}-bob", password),
            ]
            demo = Conversation.objects.filter(owner__in=users, title__startswith=TAG)
            if reset:
                demo.delete()
            elif demo.exists():
                self.stdout.write("Demo data is already there (--reset to create it again).")
                return
            _conversations(users)
            count = demo.count()
        self.stdout.write(
            f"Created {count} demo conversations for {', '.join(u.username for u in users)} "
            f"(password {password!r})."
        )


def _user(username: str, password: str, *, staff: bool = False):
    user, created = get_user_model().objects.get_or_create(username=username)
    if created or staff:
        user.set_password(password)
        user.is_staff = user.is_superuser = staff
        user.save()
    return user


class _Writer:
    """Messages of one conversation, each a little after the previous one."""

    def __init__(self, conversation: Conversation, at) -> None:
        self.conversation, self.at = conversation, at

    def ask(self, content: str) -> Message:
        self.at += timedelta(minutes=1)
        return Message.objects.create(
            conversation=self.conversation,
            role=Message.Role.USER,
            content=content,
            created_at=self.at,
            completed_at=self.at,
        )

    def answer(self, turn: Message, content: str, status=Message.Status.COMPLETE, **fields):
        created = self.at + timedelta(milliseconds=1)
        first = created + timedelta(milliseconds=700) if content else None
        done = created + timedelta(seconds=4)
        self.at = done
        values = {
            "input_tokens": 40 + len(turn.content) // 3,
            "output_tokens": len(content) // 4 if status == Message.Status.COMPLETE else None,
            "stop_reason": "end_turn" if status == Message.Status.COMPLETE else "",
            **fields,
        }
        return Message.objects.create(
            conversation=self.conversation,
            role=Message.Role.ASSISTANT,
            reply_to=turn,
            content=content,
            status=status,
            created_at=created,
            first_token_at=first,
            completed_at=done,
            **values,
        )


def _conversation(owner, title: str, days_ago: int) -> _Writer:
    conversation = Conversation.objects.create(
        owner=owner, title=TAG + title, model="claude-sonnet-4-5"
    )
    return _Writer(conversation, timezone.now() - timedelta(days=days_ago, hours=1))


def _conversations(users) -> None:
    demo, alice, bob = users
    tour = _conversation(demo, "Markdown tour", days_ago=2)
    tour.answer(tour.ask("How do I reverse a list in Python?"), MARKDOWN)
    tour.answer(tour.ask("And a string?"), "The same slicing works: `'abc'[::-1] == 'cba'`.")

    again = _conversation(demo, "A regenerated answer", days_ago=1)
    turn = again.ask("Give me a name for a cat.")
    again.answer(turn, "How about **Miso**?")
    again.answer(turn, "Maybe *Pixel* — short, and it suits a curious cat.")

    failed = _conversation(demo, "A failed answer", days_ago=1)
    failed.answer(
        failed.ask("Summarise this week's news."),
        "",
        Message.Status.FAILED,
        error_code="upstream_overloaded",
        error_message="Claude is overloaded right now; try again in a moment.",
    )

    stopped = _conversation(demo, "A stopped answer", days_ago=0)
    turn = stopped.ask("Write a long poem about the sea.")
    answer = stopped.answer(
        turn, "The sea, the sea, the grey and restless sea,\nthat", Message.Status.CANCELLED
    )
    Message.objects.filter(pk=answer.pk).update(
        cancel_requested=True, cancel_requested_at=answer.completed_at - timedelta(seconds=1)
    )

    for owner, days_ago in ((alice, 0), (alice, 1), (bob, 0)):
        chat = _conversation(owner, f"{owner.username}'s question", days_ago)
        chat.answer(chat.ask("What is the capital of France?"), "**Paris**.")
