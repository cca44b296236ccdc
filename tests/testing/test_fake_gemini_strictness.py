"""The fake Gemini server: per-model refusals (docs/gemini-facts.md#model-limits)."""

from __future__ import annotations

from typing import Any

import pytest

from fake_harness import Harness

REFUSED = [
    ("gemini-2.5-flash", {"thinkingConfig": {"thinkingLevel": "LOW"}}, "Thinking level is not supported for this model."),
    ("gemini-3-pro-preview", {"thinkingConfig": {"thinkingLevel": "MEDIUM"}}, "Thinking level MEDIUM is not supported for this model."),
    ("gemini-3.1-pro-preview", {"thinkingConfig": {"thinkingLevel": "minimal"}}, "Thinking level MINIMAL is not supported for this model."),
    ("gemini-2.5-pro", {"thinkingConfig": {"thinkingBudget": 0}}, "Budget 0 is invalid. This model only works in thinking mode."),
    ("gemini-2.5-pro", {"thinkingConfig": {"thinkingBudget": 64}}, "The thinking budget (64) is invalid."),
    ("gemini-2.5-flash", {"thinkingConfig": {"thinkingBudget": 50000}}, "The thinking budget (50000) is invalid."),
    ("gemini-2.5-flash-lite", {"thinkingConfig": {"thinkingBudget": 100}}, "The thinking budget (100) is invalid."),
    ("gemini-2.0-flash", {"thinkingConfig": {"thinkingBudget": 1024}}, "Thinking is not enabled for models/gemini-2.0-flash"),
    ("gemini-2.5-flash-image", {"thinkingConfig": {"includeThoughts": True}}, "Thinking is not enabled for models/gemini-2.5-flash-image"),
    ("gemini-2.5-flash", {"presencePenalty": 0.5}, "Penalty is not enabled for models/gemini-2.5-flash"),
    ("gemini-3-pro-preview", {"frequencyPenalty": -1}, "Penalty is not enabled for models/gemini-3-pro-preview"),
    ("gemini-3-pro-preview", {"responseLogprobs": True}, "Logprobs is not enabled for models/gemini-3-pro-preview"),
    ("gemini-3-flash-preview", {"candidateCount": 2}, "Multiple candidates is not enabled for this model"),
    ("gemini-2.5-flash", {"responseModalities": ["TEXT", "IMAGE"]}, "Model does not support the requested response modalities: image,text"),
]

ACCEPTED = [
    ("gemini-2.5-flash", {"thinkingConfig": {"thinkingBudget": 0}}),
    ("gemini-2.5-flash", {"thinkingConfig": {"thinkingBudget": -1, "includeThoughts": True}}),
    ("gemini-2.5-flash-lite", {"thinkingConfig": {"thinkingBudget": 512}}),
    ("gemini-2.5-pro", {"thinkingConfig": {"thinkingBudget": 128}}),
    ("gemini-3-pro-preview", {"thinkingConfig": {"thinkingLevel": "low"}}),
    ("gemini-3-flash-preview", {"thinkingConfig": {"thinkingLevel": "MINIMAL"}}),
    ("gemini-3-flash-preview", {"thinkingConfig": {"thinkingBudget": 2048}}),
    ("gemini-2.0-flash", {"presencePenalty": 0.5, "frequencyPenalty": 0.5}),
    ("gemini-2.5-flash", {"presencePenalty": 0, "frequencyPenalty": 0.0}),
    ("gemini-2.5-pro", {"responseLogprobs": True, "logprobs": 3}),
    ("gemini-2.5-flash", {"candidateCount": 2}),
    ("gemini-2.5-flash-image", {"responseModalities": ["TEXT", "IMAGE"]}),
    ("gemini-3-pro-image-preview", {"responseModalities": ["IMAGE"]}),
]


@pytest.mark.parametrize(("model", "config", "message"), REFUSED)
def test_model_refuses(fake: Harness, model: str, config: dict[str, Any], message: str) -> None:
    for response in (
        fake.post(model, "x", generationConfig=config),
        fake.post(model, "x", method="streamGenerateContent", query="?alt=sse", generationConfig=config),
    ):
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["status"] == "INVALID_ARGUMENT" and error["message"] == message


@pytest.mark.parametrize(("model", "config"), ACCEPTED)
def test_model_accepts(fake: Harness, model: str, config: dict[str, Any]) -> None:
    fake.generate(model, "x", generationConfig=config)


def test_vertex_same_rules_and_include_thoughts_without_thinking(fake: Harness) -> None:
    token = fake.token()
    penalty = fake.vertex_post("gemini-2.5-pro", "x", token, generationConfig={"presencePenalty": 1})
    assert penalty.status_code == 400
    config = {"thinkingConfig": {"thinkingBudget": 0, "includeThoughts": True}}
    off = fake.vertex_post("gemini-2.5-flash", "x", token, generationConfig=config)
    assert off.status_code == 400 and "include_thoughts is only enabled" in off.json()["error"]["message"]
    assert fake.post("gemini-2.5-flash", "x", generationConfig=config).status_code == 200


def test_schema_validation_runs_on_both_backends(fake: Harness) -> None:
    unknown = fake.post("gemini-2.5-flash", "x", generationConfig={"temprature": 1})
    assert unknown.status_code == 400 and "temprature" in unknown.json()["error"]["message"]
    vertex = fake.vertex_post("gemini-2.5-flash", "x", fake.token(), bogusField=1)
    assert vertex.status_code == 400
    assert fake.stats()["generate_requests"] == 2  # counted, refused before any answer
