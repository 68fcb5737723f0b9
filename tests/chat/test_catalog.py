"""The models an install offers (`CHAT_MODELS`): defaults, the default model, bad settings."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from chat import catalog
from chat.conf import CLAUDE_MODELS, DEMO_MODELS


def test_the_demo_install_offers_the_demo_model_alone(settings):
    settings.CHAT_MODELS = DEMO_MODELS
    assert catalog.offered_ids() == ["demo"]
    assert catalog.default_model().label == "demo model"


def test_claude_models_are_offered_with_sonnet_first():
    ids = [model["id"] for model in CLAUDE_MODELS]
    assert ids[0] == "claude-sonnet-4-5"
    assert all(model_id.startswith("claude-") for model_id in ids)


def test_chat_model_picks_the_default_only_among_the_offered(settings, two_models):
    settings.CHAT_MODEL = "model-b"
    assert catalog.default_model().id == "model-b"
    settings.CHAT_MODEL = "claude-elsewhere"
    assert catalog.default_model().id == "model-a"


def test_labels_for_offered_retired_and_no_model(two_models):
    assert catalog.label_for("model-b") == "Model B"
    assert catalog.label_for("claude-retired") == "claude-retired"
    assert catalog.label_for("") == ""


def test_a_retired_model_is_answered_by_the_default(two_models):
    assert catalog.model_for_run("model-b").id == "model-b"
    assert catalog.model_for_run("claude-retired").id == "model-a"


GOOD = {"id": "x", "label": "X", "context_tokens": 10, "max_output_tokens": 5}


@pytest.mark.parametrize(
    "models",
    [
        pytest.param([], id="empty"),
        pytest.param("demo", id="not-a-list"),
        pytest.param([{"id": "x", "label": "X"}], id="missing-fields"),
        pytest.param([{**GOOD, "colour": "red"}], id="unknown-field"),
        pytest.param([{**GOOD, "id": ""}], id="blank-id"),
        pytest.param([{**GOOD, "label": ""}], id="blank-label"),
        pytest.param([{**GOOD, "context_tokens": 0}], id="zero-window"),
        pytest.param([{**GOOD, "max_output_tokens": "5"}], id="string-count"),
        pytest.param([GOOD, GOOD], id="duplicate"),
    ],
)
def test_a_malformed_setting_is_refused_and_fails_the_system_check(settings, models):
    settings.CHAT_MODELS = models
    with pytest.raises(ImproperlyConfigured):
        catalog.offered_models()
    (error,) = catalog.check_models()
    assert error.id == "chat.E001"


def test_a_well_formed_setting_passes_the_system_check(two_models):
    assert catalog.check_models() == []
