"""Prepare chatsite's database for one benchmark point (run with the server's environment).

`python -m bench.chatsite_setup --users N --conversations K --out FILE [--stream-tokens]`

* ensures users `bench-0` … `bench-{N-1}` exist (one password hash computed once and
  shared, so creating 10,000 users takes a second, not an hour of PBKDF2);
* creates K fresh conversations, spread over the users round-robin, so each point
  starts with empty histories;
* mints one access JWT per user — what `POST /api/v1/auth/token/` returns, without
  spending ~0.3 s of the server's core per login on PBKDF2 (the load client still
  does one real login as a check);
* with `--stream-tokens`, also mints one stream token per conversation (the idle test
  opens thousands of streams; minting them over the API would measure the API).

Writes `{"users": [{"username", "access", "conversations": [...]}], "stream_urls": [...]}`.
"""

from __future__ import annotations

import argparse
import json
import os

PASSWORD = "bench-password"  # noqa: S105 (a throwaway benchmark login on 127.0.0.1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--conversations", type=int, required=True)
    parser.add_argument("--stream-tokens", action="store_true")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings.production")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.urls import reverse
    from rest_framework_simplejwt.tokens import AccessToken

    from chat import catalog
    from chat.models import Conversation
    from chat.tokens import StreamToken

    User = get_user_model()
    names = [f"bench-{i}" for i in range(args.users)]
    existing = set(User.objects.filter(username__in=names).values_list("username", flat=True))
    missing = [n for n in names if n not in existing]
    if missing:
        hashed = make_password(PASSWORD)
        User.objects.bulk_create(
            [User(username=n, password=hashed) for n in missing], batch_size=1000
        )
    users = {u.username: u for u in User.objects.filter(username__in=names)}
    ordered = [users[n] for n in names]

    conversations = [
        Conversation(
            owner=ordered[i % len(ordered)], title="bench", model=catalog.default_model().id
        )
        for i in range(args.conversations)
    ]
    Conversation.objects.bulk_create(conversations, batch_size=1000)

    out = {"users": [], "stream_urls": [], "login": {"username": names[0], "password": PASSWORD}}
    by_user: dict[int, list[str]] = {}
    for conv in conversations:
        by_user.setdefault(conv.owner_id, []).append(str(conv.pk))
    for user in ordered:
        out["users"].append(
            {
                "username": user.username,
                "access": str(AccessToken.for_user(user)),
                "conversations": by_user.get(user.pk, []),
            }
        )
    if args.stream_tokens:
        for conv in conversations:
            token = StreamToken.for_conversation(user=conv.owner, conversation=conv)
            url = reverse("conversation-stream", kwargs={"conversation_id": conv.pk})
            out["stream_urls"].append(f"{url}?token={token}")
    with open(args.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
