"""Account pages that django.contrib.auth does not ship: sign-up."""

from __future__ import annotations

from django.contrib.auth import login
from django.contrib.auth.forms import UserCreationForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """Create an account, sign the new user in and take them to the chat."""
    if request.user.is_authenticated:
        return redirect("chat:home")
    form = UserCreationForm(request.POST if request.method == "POST" else None)
    if form.is_valid():
        user = form.save()
        login(request, user)
        return redirect("chat:home")
    return render(request, "accounts/signup.html", {"form": form})
