"""Each user's daily token budget (`CHAT_DAILY_TOKEN_BUDGET`; off by default).

What counts: the input and output tokens the model reported for the user's answers
created since the start of the current UTC day. Both, because both are paid for, and
input is most of it in a long conversation (every answer is sent the history again).
An answer counts once it ends, when its usage is stored with its final state: also when
it is stopped, breaks or is ended by the sweeper, with estimates where the model did not
report (chat/runs/run.py: the input it reported at the start of its stream, the output
estimated from the text that streamed). An answer still streaming counts nothing yet: the
run writes nothing per token, and usage is only known at the end.

When: before each send and regenerate, with one aggregate query over the user's answers
of the day. A send is let through while the total is below the budget, and the answer it
starts may take the total past it: by at most that one answer. There is no lock: sends
that race each other (in two tabs or two conversations), or that start while another
conversation's answer streams, are checked against usage that does not include those
answers yet, and each can overshoot by one answer. One answer runs per conversation, so
the overshoot is at most one answer per conversation answering at that moment — one, for
a person in one tab.

Refused sends get 429 `token_budget_exhausted` with `Retry-After`: the seconds until the
next UTC midnight, when the count starts again.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from django.utils import timezone

from . import selectors
from .conf import chat_settings
from .errors import TokenBudgetExhausted


def day_start(now: datetime) -> datetime:
    """The start of `now`'s UTC day: where the budget's count begins."""
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def ensure_budget_left(*, user_id: int) -> None:
    """Raise `TokenBudgetExhausted` if the user has used their tokens for today."""
    budget = chat_settings.DAILY_TOKEN_BUDGET
    if not budget:
        return
    now = timezone.now()
    since = day_start(now)
    used = selectors.tokens_used_since(user_id=user_id, since=since)
    if used < budget:
        return
    resets_at = since + timedelta(days=1)
    wait = max(1, math.ceil((resets_at - now).total_seconds()))
    raise TokenBudgetExhausted(
        f"You have used today's allowance of {budget:,} tokens. You can send again after "
        f"midnight UTC, in {_duration(wait)}.",
        retry_after=wait,
        resets_at=resets_at.isoformat().replace("+00:00", "Z"),
    )


def _duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes = math.ceil(rest / 60)
    if minutes == 60:
        hours, minutes = hours + 1, 0
    if not hours:
        return f"{max(minutes, 1)} min"
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"
