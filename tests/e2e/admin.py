"""Django's admin driven over HTTP, as a staff member's browser would: log in, load a form,
change a field, submit it with its CSRF token."""

from __future__ import annotations

from html.parser import HTMLParser

import httpx


class _FormFields(HTMLParser):
    """What a browser would submit from the page's form with the given `id` (or the first
    form that posts): every named input, checked box, selected option and textarea."""

    def __init__(self, form_id: str | None = None) -> None:
        super().__init__()
        self.form_id = form_id
        self.fields: list[tuple[str, str]] = []
        self._in_form = False
        self._done = False
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and not self._done:
            wanted = a.get("id") == self.form_id if self.form_id else a.get("method") == "post"
            self._in_form = wanted
            return
        if not self._in_form:
            return
        name = a.get("name")
        if tag == "input" and name and "disabled" not in a:
            kind = a.get("type", "text")
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    self.fields.append((name, a.get("value", "on")))
            elif kind not in ("submit", "button", "image", "file"):
                self.fields.append((name, a.get("value", "")))
        elif tag == "select" and name:
            self._select = name
        elif tag == "option" and self._select and "selected" in a:
            self.fields.append((self._select, a.get("value", "")))
        elif tag == "textarea" and name:
            self._textarea = name
            self.fields.append((name, ""))

    def handle_data(self, data):
        if self._textarea:
            name, value = self.fields[-1]
            self.fields[-1] = (name, value + data)

    def handle_endtag(self, tag):
        if tag == "form" and self._in_form:
            self._in_form, self._done = False, True
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None


class AdminClient:
    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30.0)
        self._submit("/admin/login/", {"username": username, "password": password})
        assert "sessionid" in self.http.cookies, "admin login failed"

    def _form(self, path: str, form_id: str | None) -> dict[str, list[str]]:
        page = self.http.get(path)
        assert page.status_code == 200, page.text
        parser = _FormFields(form_id)
        parser.feed(page.text)
        fields: dict[str, list[str]] = {}
        for name, value in parser.fields:
            fields.setdefault(name, []).append(value)
        return fields

    def _submit(
        self, path: str, changes: dict[str, str | None], form_id: str | None = None
    ) -> None:
        fields = self._form(path, form_id)
        for name, value in changes.items():
            if value is None:
                fields.pop(name, None)  # an unticked checkbox is not sent
            else:
                fields[name] = [value]
        response = self.http.post(path, data=fields, headers={"Referer": str(self.http.base_url)})
        # The admin redirects after a successful save and re-renders the form on errors.
        assert response.status_code == 302, response.text[:2000]

    def deactivate(self, user_id) -> None:
        """Untick "Active" on the user's change form and save."""
        self._submit(f"/admin/auth/user/{user_id}/change/", {"is_active": None}, "user_form")

    def set_password(self, user_id, password: str) -> None:
        """The admin's "Reset password" form for the user."""
        self._submit(
            f"/admin/auth/user/{user_id}/password/",
            {"password1": password, "password2": password, "usable_password": "true"},
            "user_form",
        )

    def run_action(self, changelist: str, action: str, ids: list[str]) -> httpx.Response:
        """Tick the rows of `ids` on a changelist, choose `action` and press Go, as a
        browser submits it (with the page's CSRF token); the page the admin redirects to."""
        fields = self._form(changelist, "changelist-form")
        fields["action"] = [action]
        fields["_selected_action"] = ids
        fields["select_across"] = ["0"]
        response = self.http.post(
            changelist, data=fields, headers={"Referer": str(self.http.base_url)}
        )
        assert response.status_code == 302, response.text[:2000]
        return self.http.get(response.headers["location"])
