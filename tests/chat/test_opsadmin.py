"""The admin for operators: live runs with a force stop, usage per user per day, and a
message's run (status history, timing, owner) on its page."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from chat import selectors, services
from chat.fanout import channel_process, process_prefix
from chat.models import Conversation, Message
from chat.opsadmin import duration

pytestmark = pytest.mark.django_db

LIVE = "/admin/chat/liverun/"
USAGE = "/admin/chat/usage/"
CHANNEL = "specific.web-3.4242.0123456789abcdef0123456789abcdef"


def chat(owner, title="Ops") -> Conversation:
    return Conversation.objects.create(owner=owner, title=title, model="claude-x")


def answer(conversation, status="complete", content="An answer.", **fields) -> Message:
    return Message.objects.create(
        conversation=conversation, role="assistant", status=status, content=content, **fields
    )


def live(conversation, content="So far", **fields) -> Message:
    now = timezone.now()
    fields = {
        "created_at": now - timedelta(seconds=42),
        "first_token_at": now - timedelta(seconds=41, milliseconds=200),
        "run_owner": CHANNEL,
        "run_lease_expires_at": now + timedelta(seconds=10),
        **fields,
    }
    return answer(conversation, status="streaming", content=content, **fields)


def cells(html: str) -> list[dict[str, str]]:
    """Each row of the changelist as {column: cell html}."""
    body = html.split('id="result_list"')[1].split("</tbody>")[0]
    return [
        dict(re.findall(r'<t[dh] class="[^"]*field-(\w+)[^"]*">(.*?)</t[dh]>', row))
        for row in body.split("<tr")[2:]
    ]


# --- the process a channel names ---------------------------------------------------------


def test_a_process_channel_names_its_host_and_pid():
    """Runs' leases name their process's channel: the admin reads host and pid from it."""
    import os
    import socket

    prefix = process_prefix()
    assert channel_process(prefix + "ab12" * 8) == (
        re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40],
        os.getpid(),
    )
    assert channel_process(CHANNEL) == ("web-3", 4242)
    assert channel_process("specific.abc!def") is None


def test_durations_read_at_a_glance():
    assert [duration(s) for s in (None, 0.84, 42.5, 185, 7620)] == [
        "-",
        "0.8 s",
        "42 s",
        "3 min 05 s",
        "2 h 07 min",
    ]


# --- live runs ---------------------------------------------------------------------------


def test_live_runs_lists_active_answers_on_every_process(admin_client, user, other_user):
    """Only pending and streaming answers, oldest first, each with its conversation, owner,
    process (host · pid, the channel in the title), the text its last checkpoint stored,
    its time to first token, its age and its lease."""
    streaming = live(chat(user, "Streaming one"), content="x" * 1234)
    pending = answer(
        chat(other_user, "Pending one"),
        status="pending",
        content="",
        run_owner="specific.inmemory!abcdefabcdef",
        run_lease_expires_at=timezone.now() - timedelta(seconds=30),
    )
    answer(chat(user, "Done"))

    response = admin_client.get(LIVE)
    assert response.status_code == 200
    assert response.context["title"] == "Live runs"
    assert list(response.context["cl"].result_list) == [streaming, pending]
    html = response.content.decode()
    first, second = cells(html)
    assert str(streaming.pk)[:8] in first["message_link"]
    assert reverse("admin:chat_message_change", args=[streaming.pk]) in first["message_link"]
    assert "Streaming one" in first["conversation_link"]
    assert user.username in first["owner"]
    assert (
        first["process"] == f'<span class="chat-process" title="{CHANNEL}">web-3 · pid 4242</span>'
    )
    assert first["text_so_far"] == "1,234 chars"
    assert first["time_to_first_token"] == "0.8 s"
    assert first["age"] == "42 s"
    assert first["lease"].startswith("held (")
    # A channel of another layer shows as it is (its end); an expired lease stands out.
    assert "abcdefabcdef" in second["process"]
    assert second["time_to_first_token"] == "-"
    assert "chat-status-trouble" in second["lease"] and "lapsed" in second["lease"]
    # It reloads itself from a static script (the CSP allows no inline script).
    assert '<script src="/static/chat/admin_live.js"' in html
    assert "<script>" not in html


def test_live_runs_costs_the_same_queries_for_many_runs(admin_client, user):
    """No query per row (each row's checkbox label would read the text, which the list does
    not load)."""

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(LIVE).status_code == 200
        return len(captured)

    live(chat(user, "c"))
    one = queries()
    for i in range(15):
        live(chat(user, f"c{i}"))
    assert queries() == one


def test_force_stop_asks_the_run_to_stop_as_the_stop_button_does(admin_client, user):
    """The action flags each selected answer `cancel_requested` (the owning process, here
    gone, reads it at its next heartbeat; a live one is also told at once), with the time
    of the request."""
    running = live(chat(user, "a"))
    other = live(chat(user, "b"))
    response = admin_client.post(
        LIVE, {"action": "force_stop", "_selected_action": [str(running.pk)]}, follow=True
    )
    assert response.status_code == 200
    assert "Asked 1 run to stop" in response.content.decode()
    running.refresh_from_db()
    other.refresh_from_db()
    assert running.cancel_requested and running.cancel_requested_at is not None
    assert not other.cancel_requested
    first_request = running.cancel_requested_at
    # Asked again: still one request, at its first time.
    admin_client.post(LIVE, {"action": "force_stop", "_selected_action": [str(running.pk)]})
    running.refresh_from_db()
    assert running.cancel_requested_at == first_request


def test_force_stop_of_an_answer_that_ended_says_so(user):
    done = answer(chat(user))
    assert services.message_force_stop(message=done) is False
    stopped = answer(chat(user, "s"), status="cancelled")
    assert services.message_force_stop(message=stopped) is False
    # Ended since the page was loaded: the row is stale, the database says no.
    stale = live(chat(user, "y"))
    Message.objects.filter(pk=stale.pk).update(status="complete")
    assert services.message_force_stop(message=stale) is False
    assert services.message_force_stop(message=live(chat(user, "x"))) is True


def test_live_runs_is_for_staff_with_message_permissions(client, user, django_user_model):
    staff = django_user_model.objects.create_user(
        "staffer", password="pw-1-not-secret", is_staff=True
    )
    client.force_login(staff)
    assert client.get(LIVE).status_code == 403
    assert client.get(USAGE).status_code == 403
    client.force_login(user)
    assert client.get(LIVE).status_code == 302  # to the admin's login


def test_a_live_runs_page_for_a_run_is_its_message_page(admin_client, user):
    running = live(chat(user))
    response = admin_client.get(f"{LIVE}{running.pk}/change/")
    assert response.status_code == 302
    assert response.url == reverse("admin:chat_message_change", args=[running.pk])


# --- a message's page ---------------------------------------------------------------------


def test_a_message_page_shows_its_run(admin_client, user):
    """Status history, stop reason, error, timing, usage, model and owning process."""
    created = timezone.now() - timedelta(minutes=5)
    message = answer(
        chat(user),
        status="cancelled",
        content="Half an answer",
        model="claude-x",  # the answer's own model (the conversation's may change since)
        created_at=created,
        first_token_at=created + timedelta(milliseconds=850),
        cancel_requested=True,
        cancel_requested_at=created + timedelta(seconds=3),
        completed_at=created + timedelta(seconds=3, milliseconds=400),
        input_tokens=12,
        run_owner=CHANNEL,
    )
    html = admin_client.get(reverse("admin:chat_message_change", args=[message.pk])).content
    html = html.decode()
    history = html.split('class="chat-history"')[1].split("</table>")[0]
    steps = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td></tr>", history)
    # Each to the millisecond: the steps of an answer are often within one second.
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", at) for at, _, _ in steps)
    steps = [(status, detail) for _, status, detail in steps]
    assert steps == [
        ("pending", "created"),
        ("streaming", "first text"),
        ("-", "stop requested"),
        ("cancelled", "ended"),
    ]
    assert "first token after 0.8 s; generating for 2.5 s; ended after 3.4 s" in html
    assert "web-3 · pid 4242" in html
    assert "12 / - tokens in / out; 14 characters" in html
    assert "claude-x" in html


def test_status_history_of_each_kind_of_message(user):
    conversation = chat(user)
    question = Message.objects.create(conversation=conversation, role="user", content="Hi")
    assert [(c.status, c.detail) for c in question.status_history()] == [("complete", "stored")]
    failed = answer(conversation, status="failed", content="", error_code="upstream_overloaded")
    failed.completed_at = failed.created_at + timedelta(seconds=1)
    assert [(c.status, c.detail) for c in failed.status_history()] == [
        ("pending", "created"),
        ("failed", "ended: upstream_overloaded"),
    ]
    # Streaming since a checkpoint of a run that did not store its first text's time.
    streaming = Message(conversation=conversation, role="assistant", status="streaming")
    assert [(c.at, c.status) for c in streaming.status_history()][1:] == [(None, "streaming")]


# --- usage -------------------------------------------------------------------------------


def exchange(conversation, day: date, input_tokens=10, output_tokens=5, hour=12):
    at = datetime(day.year, day.month, day.day, hour, tzinfo=UTC)
    turn = Message.objects.create(
        conversation=conversation, role="user", content="Q", created_at=at
    )
    return answer(
        conversation,
        reply_to=turn,
        created_at=at + timedelta(microseconds=1),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )


def test_usage_per_user_per_utc_day_in_one_query(user, other_user, django_assert_num_queries):
    mine, theirs = chat(user), chat(other_user)
    day1, day2 = date(2026, 11, 30), date(2026, 12, 1)
    exchange(mine, day1)
    exchange(mine, day1, input_tokens=20, output_tokens=None, hour=23)  # stopped: no output
    exchange(mine, day2, hour=0)
    exchange(theirs, day2, input_tokens=100, output_tokens=50)
    with django_assert_num_queries(1):
        rows = selectors.usage_by_user_day()
    table = [
        (
            r["day"],
            r["username"],
            r["messages"],
            r["answers"],
            r["input_tokens"],
            r["output_tokens"],
        )
        for r in rows
    ]
    assert table == [
        (day2, user.username, 1, 1, 10, 5),
        (day2, other_user.username, 1, 1, 100, 50),
        (day1, user.username, 2, 2, 30, 5),
    ]
    only_day2 = selectors.usage_by_user_day(since=day2, until=day2)
    assert {r["username"] for r in only_day2} == {user.username, other_user.username}
    assert [r["day"] for r in selectors.usage_by_user_day(until=day1)] == [day1]
    assert [r["day"] for r in selectors.usage_by_user_day(user_id=other_user.pk)] == [day2]


def test_the_usage_page_filters_by_days_and_user(admin_client, user, other_user):
    today = timezone.now().date()
    exchange(chat(user), today, input_tokens=1234, output_tokens=56)
    exchange(chat(other_user), today, input_tokens=7, output_tokens=8)
    exchange(chat(user), today - timedelta(days=90))  # outside the default 30 days

    response = admin_client.get(USAGE)
    assert response.status_code == 200
    html = response.content.decode()
    assert [r["username"] for r in response.context["rows"]] == sorted(
        [user.username, other_user.username]
    )
    assert '<td class="chat-number">1234</td>' in html
    assert response.context["totals"]["input_tokens"] == 1241
    # Each user links to their own usage over the same days.
    since = (today - timedelta(days=29)).isoformat()
    assert f'href="{USAGE}?user={user.pk}&amp;since={since}"' in html

    theirs = admin_client.get(USAGE, {"user": other_user.pk, "since": "2000-01-01"})
    assert [r["username"] for r in theirs.context["rows"]] == [other_user.username]
    assert len(admin_client.get(USAGE, {"since": "2000-01-01"}).context["rows"]) == 3


@pytest.mark.parametrize(
    "query",
    [
        {"since": "yesterday"},
        {"since": "2026-12-02", "until": "2026-12-01"},
        {"user": "not-a-number"},
        {"until": "2026-02-30"},
    ],
)
def test_the_usage_page_answers_bad_filters_with_the_form_not_an_error(admin_client, query):
    response = admin_client.get(USAGE, query)
    assert response.status_code == 200
    assert response.context["form"].errors
    assert response.context["rows"] == []
    assert 'class="errorlist' in response.content.decode()


def test_the_usage_page_takes_the_first_and_last_days_there_are(admin_client, user):
    exchange(chat(user), timezone.now().date())
    response = admin_client.get(USAGE, {"since": "0001-01-01", "until": "9999-12-31"})
    assert response.status_code == 200
    assert len(response.context["rows"]) == 1


def test_a_user_links_to_their_usage(admin_client, user):
    url = f"{USAGE}?user={user.pk}"
    assert url in admin_client.get(reverse("admin:auth_user_changelist")).content.decode()
    page = admin_client.get(reverse("admin:auth_user_change", args=[user.pk]))
    assert url in page.content.decode()
