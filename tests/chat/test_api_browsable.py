"""The API root and the browsable API: links to every endpoint, a form for every write."""

from __future__ import annotations

import re

import pytest
from rest_framework.test import APIClient

from chat.api.root import link_templates
from chat.api.urls import urlpatterns
from chat.models import Message
from chat.services import conversation_create
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

ROOT = "/api/v1/"
HTML = {"HTTP_ACCEPT": "text/html"}


@pytest.fixture
def session(client, user):
    client.force_login(user)
    return client


@pytest.fixture
def exchange(user) -> tuple:
    conversation = conversation_create(owner=user, title="Links")
    question = Message.objects.create(
        conversation=conversation, role="user", content="Hi", status="complete"
    )
    answer = Message.objects.create(
        conversation=conversation,
        role="assistant",
        content="Hello",
        status="complete",
        reply_to=question,
    )
    return conversation, answer


def test_root_links_every_endpoint_of_the_api_by_its_url_name(client):
    """The root lists every named URL under /api/v1/ (an endpoint added there is listed
    too) and the event stream, as absolute URLs; ids are `{parameter}` templates."""
    response = client.get(ROOT)
    assert response.status_code == 200
    links = response.json()
    names = {p.name.replace("-", "_") for p in urlpatterns if p.name != "api-root"}
    assert set(links) == names | {"conversation_stream"}
    assert links["conversation_list"] == "http://testserver/api/v1/conversations/"
    assert links["conversation_detail"] == (
        "http://testserver/api/v1/conversations/{conversation_id}/"
    )
    assert links["message_cancel"] == "http://testserver/api/v1/messages/{message_id}/cancel/"
    assert links["conversation_stream"] == (
        "http://testserver/stream/conversations/{conversation_id}/"
    )
    assert links["schema"] == "http://testserver/api/v1/schema/"


def test_root_refuses_a_bad_token_with_401(client):
    """The root is public, but a credential that is not valid is still refused."""
    response = client.get(ROOT, HTTP_AUTHORIZATION="Bearer not-a-token")
    assert response.status_code == 401
    assert response.json()["code"] == "token_not_valid"


def test_every_root_link_resolves_for_its_user(session, exchange):
    """Each link, its template filled with the user's own ids, reaches its view: no 404.
    (The stream is asked with a resume position it refuses, so it answers at once.)"""
    conversation, answer = exchange
    links = session.get(ROOT).json()
    assert links
    for name, url in links.items():
        url = url.replace("{conversation_id}", str(conversation.pk))
        url = url.replace("{message_id}", str(answer.pk))
        assert "{" not in url, name
        response = session.get(url, HTTP_LAST_EVENT_ID="not-a-position")
        assert response.status_code != 404, (name, url)
        if name == "conversation_stream":
            assert response.status_code == 400


def test_schema_documents_the_root_with_each_link(client):
    """`GET /api/v1/` is in the schema; its `ApiRoot` names every link the root sends."""
    schema = client.get("/api/v1/schema/", {"format": "json"}).json()
    operation = schema["paths"]["/api/v1/"]["get"]
    ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/ApiRoot"
    root = schema["components"]["schemas"]["ApiRoot"]
    assert set(root["properties"]) == set(client.get(ROOT).json()) == set(link_templates())
    assert root["properties"]["conversation_list"]["format"] == "uri"
    assert root["properties"]["conversation_detail"]["format"] == "uri-template"


def test_the_browsable_root_makes_its_links_clickable(session):
    """In a browser, the root is DRF's page with each link an <a href>."""
    html = session.get(ROOT, **HTML).content.decode()
    assert 'href="http://testserver/api/v1/conversations/"' in html
    assert 'href="http://testserver/api/v1/schema/"' in html


def _forms(html: str) -> list[str]:
    return re.findall(r"<form\b.*?</form>", html, flags=re.DOTALL)


def _fields(form: str) -> set[str]:
    names = re.findall(r'<(?:input|textarea|select)[^>]*\bname="([^"]+)"', form)
    return set(names) - {"csrfmiddlewaretoken", "_content_type", "_content"}


def _html_form(html: str, method: str) -> str:
    """The HTML (not raw-data) form for `method`."""
    for form in _forms(html):
        head = form.split(">", 1)[0]
        is_raw = "data-override" in form
        if is_raw:
            continue
        if method == "POST" and 'method="POST"' in head:
            return form
        if f'data-method="{method}"' in head:
            return form
    raise AssertionError(f"no HTML {method} form in the page")


def test_browsable_pages_have_a_form_for_every_write(session, exchange):
    """Creating a conversation, sending a message (a textarea), renaming a conversation
    (PATCH, filled with its values) and the body-less POSTs (stop, regenerate, a stream
    token) each have an HTML form: nothing to type as JSON."""
    conversation, answer = exchange
    pages = {
        "/api/v1/conversations/": ("POST", {"title", "system_prompt", "model"}),
        f"/api/v1/conversations/{conversation.pk}/messages/": ("POST", {"content"}),
        f"/api/v1/conversations/{conversation.pk}/": (
            "PATCH",
            {"title", "system_prompt", "model"},
        ),
        f"/api/v1/conversations/{conversation.pk}/stream-token/": ("POST", set()),
        f"/api/v1/messages/{answer.pk}/cancel/": ("POST", set()),
        f"/api/v1/messages/{answer.pk}/regenerate/": ("POST", set()),
    }
    for url, (method, fields) in pages.items():
        response = session.get(url, **HTML)
        assert response["Content-Type"].startswith("text/html"), url
        form = _html_form(response.content.decode(), method)
        assert _fields(form) >= fields, url
        assert f">{method}</button>" in form, url
        if not fields:
            assert "takes no body" in form, url
    messages = session.get(f"/api/v1/conversations/{conversation.pk}/messages/", **HTML)
    assert '<textarea name="content"' in _html_form(messages.content.decode(), "POST")
    detail = session.get(f"/api/v1/conversations/{conversation.pk}/", **HTML).content.decode()
    assert 'value="Links"' in _html_form(detail, "PATCH")
    # DRF's own buttons are still there.
    assert 'data-method="DELETE"' in detail
    assert 'data-method="OPTIONS"' in detail
    assert "<h1>Conversation Detail</h1>" in detail


def test_a_body_less_form_post_does_what_the_button_says(session, exchange):
    """The stream-token form posts as a browser form does (multipart, no fields) and gets
    its token: the browsable API's form works, not just renders."""
    conversation, _ = exchange
    url = f"/api/v1/conversations/{conversation.pk}/stream-token/"
    response = session.post(url, {}, HTTP_ACCEPT="application/json")
    assert response.status_code == 201
    assert response.json()["token"]


def test_a_patch_form_submission_renames_the_conversation(user, exchange):
    """What the PATCH form sends (multipart, every field with its current value, one
    changed) updates that field."""
    conversation, _ = exchange
    api = APIClient()
    api.force_authenticate(user)
    response = api.patch(
        f"/api/v1/conversations/{conversation.pk}/",
        {"title": "Renamed", "system_prompt": "", "model": conversation.model},
        format="multipart",
    )
    assert response.status_code == 200, response.content
    conversation.refresh_from_db()
    assert conversation.title == "Renamed"


def test_browsable_pages_have_no_inline_style(session, exchange):
    """No `style` attribute or element (the CSP refuses them): not on the root, a list with
    its filters, a detail page or a form page."""
    conversation, answer = exchange
    for url in (
        ROOT,
        "/api/v1/conversations/",
        f"/api/v1/conversations/{conversation.pk}/",
        f"/api/v1/conversations/{conversation.pk}/messages/",
        f"/api/v1/messages/{answer.pk}/cancel/",
    ):
        html = session.get(url, **HTML).content.decode()
        assert "/static/api/browsable-api.css" in html, url
        assert not re.search(r"\sstyle=|<style", html), (url, re.findall(r".{60}style.{60}", html))


def test_a_body_the_form_cannot_show_leaves_the_raw_data_form(rf, user):
    """A request body documented as something other than one serializer (here, by media
    type) gets no HTML form, and the page still renders, with DRF's raw-data form."""
    from drf_spectacular.utils import extend_schema
    from rest_framework import serializers
    from rest_framework.response import Response
    from rest_framework.test import force_authenticate
    from rest_framework.views import APIView

    class Item(serializers.Serializer):
        name = serializers.CharField()

    class ListBodyApi(APIView):
        @extend_schema(request={"application/json": Item}, responses={204: None})
        def post(self, request):
            return Response(status=204)

        def get(self, request):
            return Response({})

    request = rf.get("/list-body/", HTTP_ACCEPT="text/html")
    force_authenticate(request, user)
    response = ListBodyApi.as_view()(request)
    html = response.render().content.decode()
    assert response.status_code == 200
    assert 'id="post-object-form"' not in html
    assert 'name="_content"' in html


def test_an_unticked_checkbox_in_a_patch_form_clears_its_flag():
    """A form's checkbox sends `false` when unticked (a hidden input before it), so a PATCH
    form can clear a flag; ticked, DRF reads the `true` after it."""
    from django.http import QueryDict
    from rest_framework import serializers
    from rest_framework.renderers import HTMLFormRenderer

    class Flags(serializers.Serializer):
        pinned = serializers.BooleanField(required=False)

    html = HTMLFormRenderer().render(
        Flags().data, None, {"style": {"template_pack": "rest_framework/horizontal"}}
    )
    inputs = re.findall(r'<input[^>]*name="pinned"[^>]*>', html)
    assert 'type="hidden"' in inputs[0] and 'value="false"' in inputs[0]
    assert 'type="checkbox"' in inputs[1]
    for sent, pinned in (("pinned=false", False), ("pinned=false&pinned=true", True)):
        serializer = Flags(data=QueryDict(sent), partial=True)
        assert serializer.is_valid()
        assert serializer.validated_data == {"pinned": pinned}


def test_the_browsable_api_logs_in_and_out_through_the_site(client, user):
    """Signed out, an API page links to the site's login page, which comes back to it;
    signed in, it names the user and has a log-out button."""
    page = client.get("/api/v1/conversations/?page=1", **HTML)
    assert page.status_code == 401
    html = page.content.decode()
    assert 'href="/accounts/login/?next=/api/v1/conversations/%3Fpage%3D1"' in html
    response = client.post(
        "/accounts/login/?next=/api/v1/conversations/%3Fpage%3D1",
        {"username": user.username, "password": PASSWORD},
    )
    assert response.status_code == 302
    assert response["Location"] == "/api/v1/conversations/?page=1"
    html = client.get("/api/v1/conversations/", **HTML).content.decode()
    assert f'<li class="navbar-text">{user.username}</li>' in html
    assert 'action="/accounts/logout/"' in html
