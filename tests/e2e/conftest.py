"""Fixtures for end-to-end tests against real daphne processes."""

from __future__ import annotations

import pytest

from .client import ChatApi


@pytest.fixture
def demo_api(daphne_demo, user, password):
    return ChatApi(daphne_demo.url, user.username, password)


@pytest.fixture
def claude_api(daphne_anthropic, user, password):
    return ChatApi(daphne_anthropic.url, user.username, password)


@pytest.fixture(scope="session")
def uvicorn_demo(start_daphne):
    """uvicorn (`chatsite.uvicorn_server`) serving the site with the offline demo provider."""
    return start_daphne(server="uvicorn", ANTHROPIC_API_KEY="", CHAT_DEMO_TOKENS_PER_SECOND="400")


@pytest.fixture(params=["daphne", "uvicorn"])
def site(request):
    """The site on each of its two servers."""
    return request.getfixturevalue(f"{request.param}_demo")


@pytest.fixture
def site_api(site, user, password):
    return ChatApi(site.url, user.username, password)
