"""The run core's database boundary: the only places runs, leases and the sweeper
touch the ORM. Each is one statement (or two), run on the database thread, and run
again on a new connection if its connection dies under it (chat/reconnect.py): a
database restart or a terminated backend must not lose an answer."""

from __future__ import annotations

from datetime import datetime, timedelta

from channels.db import database_sync_to_async
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from ..conf import chat_settings
from ..models import Message
from ..reconnect import reconnecting, run_reconnecting

# PostgreSQL's text type cannot hold NUL (and a failing checkpoint would leave the
# answer `streaming`). Runs replace it, as it arrives, with U+FFFD (the replacement
# character): one character for one, so offsets, resume positions and what clients
# saw stay the same as what is stored.
_UNSTORABLE = {0: "\ufffd"}


def storable(text: str) -> str:
    return text.translate(_UNSTORABLE) if "\x00" in text else text


def _lease_expiry():
    return timezone.now() + timedelta(seconds=chat_settings.RUN_LEASE_SECONDS)


def lease_for_new_answer(created_at):
    return created_at + timedelta(seconds=chat_settings.RUN_LEASE_SECONDS)


@database_sync_to_async
def claim(message_id: str, owner: str) -> bool:
    """Lease a pending answer that was created without an owner; False if it is gone."""

    def update(attempt: int) -> int:
        # A retry also accepts our own claim: the lost attempt may have been applied.
        owners = [""] if attempt == 0 else ["", owner]
        return Message.objects.filter(
            pk=message_id, status=Message.Status.PENDING, run_owner__in=owners
        ).update(run_owner=owner, run_lease_expires_at=_lease_expiry())

    return bool(run_reconnecting(update, name="claim"))


@database_sync_to_async
@reconnecting
def save_checkpoints(
    texts: dict[str, str], first_tokens: dict[str, datetime | None] | None = None
) -> set[str]:
    """Save the text so far of several runs (and when each got its first text, which the
    first checkpoint stores with the `streaming` status): one transaction, one round trip.

    Returns the ids that are no longer active (ended elsewhere, or deleted): their
    runs must stop.

    Written out, not built with the ORM: a `Case(When(...))` over every run cost 5% of
    the process's CPU at 100 streams on PostgreSQL (most of it compiling the query), where
    one prepared UPDATE sent with `executemany` (psycopg pipelines it) costs a fraction.
    """
    table = connection.ops.quote_name(Message._meta.db_table)
    pk = Message._meta.pk
    first_token = Message._meta.get_field("first_token_at")
    first_tokens = first_tokens or {}
    rows = [
        (
            text,
            first_token.get_db_prep_value(first_tokens.get(message_id), connection),
            pk.get_db_prep_value(message_id, connection),
        )
        for message_id, text in texts.items()
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(
            f'UPDATE {table} SET "content" = %s, "status" = \'streaming\','  # noqa: S608
            ' "first_token_at" = COALESCE("first_token_at", %s)'
            f" WHERE \"id\" = %s AND \"status\" IN ('pending', 'streaming')",
            rows,
        )
        saved = cursor.rowcount
    if saved == len(texts):
        return set()
    still = Message.objects.filter(pk__in=list(texts), status__in=Message.ACTIVE_STATUSES)
    return set(texts) - {str(pk) for pk in still.values_list("pk", flat=True)}


@database_sync_to_async
def save_final(
    message_id: str,
    *,
    text: str,
    status: str,
    stop_reason: str,
    input_tokens: int | None,
    output_tokens: int | None,
    usage_estimated: bool = False,
    error: dict | None,
    orphan: bool,
    first_token_at: datetime | None = None,
) -> bool:
    """Store an answer's final state, if it is still active (and, for an orphan, if its
    lease has lapsed: another process's sweeper may have got there first)."""
    now = timezone.now()
    ours = Q(status__in=Message.ACTIVE_STATUSES)
    if orphan:
        ours &= Q(run_lease_expires_at__lt=now) | Q(run_lease_expires_at__isnull=True)
    fields = {
        "content": text,
        "status": status,
        "stop_reason": stop_reason,
        "error_code": error["code"] if error else "",
        "error_message": error["message"] if error else "",
        "completed_at": now,
        "run_lease_expires_at": None,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "usage_estimated": usage_estimated,
    }
    if first_token_at is not None:  # an answer shorter than one checkpoint interval
        fields["first_token_at"] = first_token_at

    def update(attempt: int) -> int:
        # A retry also matches this very save (its `completed_at`): the lost attempt
        # may have been applied, and the answer is then ours to announce all the same.
        mine = ours if attempt == 0 else ours | Q(status=status, completed_at=now)
        return Message.objects.filter(mine, pk=message_id).update(**fields)

    return bool(run_reconnecting(update, name="save_final"))


@database_sync_to_async
@reconnecting
def renew_leases(message_ids: list[str], owner: str) -> tuple[list[str], list[str]]:
    """Extend our runs' leases. Returns (stop requested, no longer active).

    A run of ours whose message is no longer active was ended by another
    process's sweeper (our lease lapsed, e.g. the loop was blocked), or deleted.
    """
    active = Message.objects.filter(pk__in=message_ids, status__in=Message.ACTIVE_STATUSES)
    active.update(run_owner=owner, run_lease_expires_at=_lease_expiry())
    rows = dict(active.values_list("pk", "cancel_requested"))
    stop = [str(pk) for pk, requested in rows.items() if requested]
    found = {str(pk) for pk in rows}
    return stop, [m for m in message_ids if m not in found]


@database_sync_to_async
@reconnecting
def expired_runs(exclude: list[str], limit: int = 100) -> list[Message]:
    now = timezone.now()
    expired = Message.objects.filter(
        Q(run_lease_expires_at__lt=now) | Q(run_lease_expires_at__isnull=True),
        status__in=Message.ACTIVE_STATUSES,
    ).exclude(pk__in=exclude)
    return list(expired.select_related("conversation")[:limit])
