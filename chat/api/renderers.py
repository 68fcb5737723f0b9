"""The browsable API: a form for every write the schema documents, under the strict CSP.

DRF builds its HTML forms from `view.get_serializer()`, which only generic views have, and
only for POST and PUT. Our views are mostly plain `APIView`s that declare their request
body with `extend_schema(request=...)`, so this renderer asks the schema instead: the
serializer it documents for the method (the same one the schema and generated clients
see), or, for a write without a body (stop, regenerate, a stream token), a form that is
just its button. PATCH gets an HTML form too, filled with the object's current values.

The page itself is `templates/rest_framework/base.html`: DRF's, without inline styles.
"""

from __future__ import annotations

from django.utils.html import format_html
from rest_framework import renderers, serializers
from rest_framework.request import override_method
from rest_framework.views import get_view_name

WRITES = ("POST", "PUT", "PATCH")


def view_name(view) -> str:
    """DRF's name for a view (`VIEW_NAME_FUNCTION`), without our classes' `Api` suffix:
    "Message Cancel", not "Message Cancel Api"."""
    return get_view_name(view).removesuffix(" Api")


def documented_request_serializer(view, method: str):
    """The request serializer the schema documents for `view`'s `method`, or None for an
    operation without a body.

    Read through drf-spectacular's own schema class for the handler (what `extend_schema`
    made of it), so the form and the schema cannot disagree."""
    handler = getattr(view, method.lower())
    schema_class = getattr(handler, "kwargs", {}).get("schema")
    schema = schema_class() if schema_class is not None else type(view.schema)()
    schema.view = view
    schema.method = method
    return schema.get_request_serializer()


class BrowsableAPIRenderer(renderers.BrowsableAPIRenderer):
    NO_BODY = "This request takes no body: press the button."

    def get_context(self, data, accepted_media_type, renderer_context):
        context = super().get_context(data, accepted_media_type, renderer_context)
        # DRF's template has no HTML form for PATCH (only its raw-data form); ours does.
        context["patch_form"] = self.get_rendered_html_form(
            data, renderer_context["view"], "PATCH", renderer_context["request"]
        )
        # Pygments' CSS would be an inline <style>, which the CSP refuses; it is only for
        # descriptions rendered with Python-Markdown, which the API does not use.
        context["code_style"] = None
        return context

    def get_rendered_html_form(self, data, view, method, request):
        if method in WRITES and (method == "PATCH" or not hasattr(view, "get_serializer")):
            return self._form_from_schema(data, view, method, request)
        return super().get_rendered_html_form(data, view, method, request)

    def _form_from_schema(self, data, view, method, request):
        if method not in view.allowed_methods:
            return None
        if method == "PUT" and "PATCH" in view.allowed_methods:
            return None  # a partial update's HTML form is offered as PATCH, not both
        # The object this page shows, for an update form that starts from its values.
        serializer = getattr(data, "serializer", None)
        instance = getattr(serializer, "instance", None) if method != "POST" else None
        with override_method(view, request, method) as request:
            if not self.show_form_for_method(view, method, request, instance):
                return None
            documented = documented_request_serializer(view, method)
            if documented is None:
                return format_html('<p class="help-block">{}</p>', self.NO_BODY)
            if isinstance(documented, type) and issubclass(documented, serializers.Serializer):
                documented = documented(
                    instance=instance, context={"request": request, "view": view}
                )
            if not isinstance(documented, serializers.Serializer):
                return None  # a body by media type, a list, ...: the raw-data form will do
            return self.render_form_for_serializer(documented)
