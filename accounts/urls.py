"""Sign-in, sign-out and sign-up pages (global URL names: `LOGIN_URL = "login"`)."""

from django.contrib.auth import views as auth_views
from django.urls import path

from accounts import views

urlpatterns = [
    path(
        "login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    # Django 5's LogoutView only accepts POST: the page submits a small form with a CSRF token.
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("signup/", views.signup, name="signup"),
]
