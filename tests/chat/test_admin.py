"""The admin shows which model produced each answer, and whether its usage is an estimate."""

from __future__ import annotations

import pytest
from django.urls import reverse

from chat.models import Message

pytestmark = pytest.mark.django_db


def test_the_message_list_shows_and_filters_by_model(client, django_user_model, conversation):
    admin = django_user_model.objects.create_superuser(username="root", password="unused-pw-9")
    Message.objects.create(conversation=conversation, role="assistant", model="model-x")
    Message.objects.create(conversation=conversation, role="assistant", model="model-y")
    client.force_login(admin)

    url = reverse("admin:chat_message_changelist")
    html = client.get(url, {"model": "model-x"}).content.decode()

    assert "model-x" in html
    assert '<td class="field-model">model-y</td>' not in html
    assert '<td class="field-model">model-x</td>' in html


def test_a_message_page_says_whether_its_usage_is_estimated(
    client, django_user_model, conversation
):
    admin = django_user_model.objects.create_superuser(username="root", password="unused-pw-9")
    message = Message.objects.create(
        conversation=conversation, role="assistant", model="model-x", usage_estimated=True
    )
    client.force_login(admin)

    html = client.get(reverse("admin:chat_message_change", args=[message.pk])).content.decode()

    assert "Usage estimated" in html
