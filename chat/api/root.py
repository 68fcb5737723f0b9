"""`GET /api/v1/`: where a client (or a person in the browsable API) starts.

The links are read from the URL conf, not listed by hand: every named URL under the API's
root, and the event stream beside it, so an endpoint added to `chat/api/urls.py` is
listed (and documented in the schema) without touching this module. A URL with ids is
an RFC 6570 template named after its path parameters, as in the schema:
`".../conversations/{conversation_id}/"`.
"""

from __future__ import annotations

import uuid

from django.urls import get_resolver, reverse
from django.urls.converters import IntConverter, UUIDConverter
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

ROOT = "api-root"
# Part of the API though not under its root (chatsite/urls.py).
OUTSIDE_ROOT = ("conversation-stream",)


def link_templates() -> dict[str, str]:
    """The API's paths by name, `{"conversation_detail": "/api/v1/conversations/
    {conversation_id}/", ...}`, in path order."""
    resolver = get_resolver()
    root = reverse(ROOT)
    found = {}
    for name in resolver.reverse_dict:
        if not isinstance(name, str) or name == ROOT:
            continue
        path = _path_template(resolver, name)
        if path is not None and (path.startswith(root) or name in OUTSIDE_ROOT):
            found[name.replace("-", "_")] = path
    return dict(sorted(found.items(), key=lambda item: (item[1], item[0])))


def _path_template(resolver, name: str) -> str | None:
    """`reverse(name)` with `{parameter}` for each path parameter: reversed with a stand-in
    value of the parameter's type, which is then replaced."""
    ((_bits, _pattern, _defaults, converters), *_) = resolver.reverse_dict.getlist(name)
    stand_ins = {}
    for number, (parameter, converter) in enumerate(sorted(converters.items()), start=1):
        if isinstance(converter, UUIDConverter):
            stand_ins[parameter] = str(uuid.UUID(int=number))
        elif isinstance(converter, IntConverter):
            stand_ins[parameter] = str(10**12 + number)
        else:
            return None  # no id of a kind the API uses
    path = reverse(name, kwargs=stand_ins)
    for parameter, value in stand_ins.items():
        path = path.replace(value, f"{{{parameter}}}")
    return path


class ApiRootSerializer(serializers.Serializer):
    """Declared by `ApiRootExtension`: its fields are the URL conf's names."""


class ApiRootExtension(OpenApiSerializerExtension):
    target_class = ApiRootSerializer

    def get_name(self):
        return "ApiRoot"

    def map_serializer(self, auto_schema, direction):
        properties = {
            key: {
                "type": "string",
                "format": "uri-template" if "{" in path else "uri",
                "readOnly": True,
                "description": f"`{path}`, as an absolute URL.",
            }
            for key, path in link_templates().items()
        }
        return {"type": "object", "properties": properties, "required": sorted(properties)}


class ApiRootApi(APIView):
    """Links to every endpoint of the API. Those with ids are URI templates
    (`{conversation_id}`): the conversations' and messages' own links fill them in."""

    name = "chatsite API"
    # What it lists is public (the schema says as much); a bad token is still a 401.
    permission_classes = [AllowAny]

    @extend_schema(operation_id="api_root", responses=ApiRootSerializer)
    def get(self, request):
        # Joined by hand: `build_absolute_uri` would percent-encode the templates' braces.
        origin = request.build_absolute_uri("/").removesuffix("/")
        return Response({key: origin + path for key, path in link_templates().items()})
