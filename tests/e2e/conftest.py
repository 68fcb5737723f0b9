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
