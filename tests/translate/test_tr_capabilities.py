"""`translate/capabilities.py`: per-model facts, config overrides, and `reasoning_effort`.

Expected values follow docs/gemini-facts.md#thinking (the models' ranges and levels) and
docs/design.md#thinking (the effort table).
"""

from __future__ import annotations

from typing import Any

import pytest

from app.schemas.openai import ChatCompletionRequest
from app.settings import CapabilityOverrides
from app.translate.capabilities import LEVELS, ModelCapabilities, capabilities_for, effort_to_thinking
from app.translate.chat_request import to_gemini

EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


@pytest.mark.parametrize(
    "model, expected",
    [
        ("gemini-3-pro-preview", dict(thinking="level", thinking_levels=("low", "high"), signatures_required=True, per_part_media_resolution=True, multimodal_function_response=True)),
        ("gemini-3-flash-preview", dict(thinking="level", thinking_levels=LEVELS, signatures_required=True)),
        ("gemini-3.1-pro-preview", dict(thinking="level", thinking_levels=("low", "medium", "high"), signatures_required=True)),
        ("gemini-3.6-flash", dict(thinking="level", thinking_levels=LEVELS, signatures_required=True)),
        ("gemini-4-ultra", dict(thinking="level", signatures_required=True)),
        ("gemini-3-pro-image-preview", dict(image_output=True, signatures_required=False, per_part_media_resolution=True, thinking="none")),
        ("gemini-2.5-flash-image", dict(image_output=True, thinking="none")),
        ("gemini-2.5-pro", dict(thinking="budget", thinking_budget_min=128, thinking_budget_max=32768, thinking_can_disable=False, signatures_required=False)),
        ("gemini-2.5-flash", dict(thinking="budget", thinking_budget_min=0, thinking_budget_max=24576, thinking_can_disable=True, json_schema=True)),
        ("gemini-2.5-flash-lite", dict(thinking="budget", thinking_budget_min=512, thinking_budget_max=24576)),
        ("gemini-2.0-flash", dict(thinking="none", json_schema=False)),
        ("gemini-1.5-pro", dict(json_schema=False)),
        ("gemma-3-27b-it", dict(json_schema=False)),
        ("some-tuned-model", dict(thinking="none", json_schema=True, signatures_required=False)),
        ("Gemini-2.5-Flash", dict(thinking="budget")),  # case does not matter
    ],
)
def test_built_in_defaults(model: str, expected: dict[str, Any]) -> None:
    caps = capabilities_for(model)
    assert {k: getattr(caps, k) for k in expected} == expected


def test_config_patterns_then_route_overrides() -> None:
    patterns = {"gemini-2.5-*": {"json_schema": False, "drop_params": ["seed"]}, "gemini-*": {"image_output": True}}
    caps = capabilities_for("gemini-2.5-flash", patterns)
    assert caps.json_schema is False and caps.drop_params == frozenset({"seed"})
    assert caps.image_output is False  # first matching pattern only
    assert caps.thinking == "budget"  # built-in facts kept where the config says nothing
    route = CapabilityOverrides(thinking_levels=["low", "high"], thinking="level", json_schema=None)
    caps = capabilities_for("gemini-2.5-flash", patterns, route)
    assert caps.thinking == "level" and caps.thinking_levels == ("low", "high")
    assert caps.json_schema is False  # None in the route keeps the pattern's value


def test_pattern_matching_ignores_case() -> None:
    assert capabilities_for("gemini-2.5-flash", {"GEMINI-2.5-FLASH": {"json_schema": False}}).json_schema is False


def test_overrides_from_settings_objects() -> None:
    caps = capabilities_for("x", {"x": CapabilityOverrides(reasoning_effort={"high": 5000}, thinking="budget", drop_params=["n"])})
    assert caps.reasoning_effort == {"high": 5000} and caps.drop_params == frozenset({"n"})
    assert effort_to_thinking("high", caps) == {"thinkingBudget": 5000}


# -- reasoning_effort ------------------------------------------------------------------------

EXPECTED_THINKING = {
    # 2.5: Google's budgets 1024 / 8192 / 24576, `none` -> 0 only where allowed, clamped to range
    "gemini-2.5-flash": {"none": 0, "minimal": 1024, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 24576, "max": 24576},
    "gemini-2.5-flash-lite": {"none": 0, "minimal": 1024, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 24576, "max": 24576},
    "gemini-2.5-pro": {"none": ValueError, "minimal": 1024, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768, "max": 32768},
    # 3.x: thinkingLevel, clamped to the levels the model has
    "gemini-3-pro-preview": {"none": "low", "minimal": "low", "low": "low", "medium": "high", "high": "high", "xhigh": "high", "max": "high"},
    "gemini-3-flash-preview": {"none": "minimal", "minimal": "minimal", "low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"},
    "gemini-3.1-pro-preview": {"none": "low", "minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"},
    # no thinking: nothing is sent
    "gemini-2.0-flash": dict.fromkeys(EFFORTS),
    "gemini-2.5-flash-image": dict.fromkeys(EFFORTS),
}


@pytest.mark.parametrize("model, effort", [(m, e) for m in EXPECTED_THINKING for e in EFFORTS])
def test_reasoning_effort_per_model_family(model: str, effort: str) -> None:
    caps = capabilities_for(model)
    expected = EXPECTED_THINKING[model][effort]
    if expected is ValueError:
        with pytest.raises(ValueError):
            effort_to_thinking(effort, caps)
        return
    result = effort_to_thinking(effort, caps)
    if expected is None:
        assert result is None
    elif isinstance(expected, int):
        assert result == {"thinkingBudget": expected}
        assert caps.thinking_budget_min <= expected <= caps.thinking_budget_max or expected == 0
    else:
        assert result == {"thinkingLevel": expected.upper()}  # the enum's names, as google-genai sends them
        assert expected in caps.thinking_levels


@pytest.mark.parametrize("levels", [("low", "high"), ("minimal",), ("medium",), ("high",), ("low", "medium", "high"), LEVELS])
@pytest.mark.parametrize("effort", EFFORTS)
def test_levels_are_always_ones_the_model_has(levels: tuple[str, ...], effort: str) -> None:
    caps = ModelCapabilities(thinking="level", thinking_levels=levels)
    result = effort_to_thinking(effort, caps)
    assert result is not None and set(result) == {"thinkingLevel"}  # never level and budget together
    assert result["thinkingLevel"].lower() in levels


@pytest.mark.parametrize("low, high", [(0, 24576), (128, 32768), (512, 24576), (2000, 3000)])
@pytest.mark.parametrize("effort", [e for e in EFFORTS if e != "none"])
def test_budgets_are_clamped_to_the_models_range(low: int, high: int, effort: str) -> None:
    caps = ModelCapabilities(thinking="budget", thinking_budget_min=low, thinking_budget_max=high)
    result = effort_to_thinking(effort, caps)
    assert result is not None and set(result) == {"thinkingBudget"}
    assert low <= result["thinkingBudget"] <= high


def test_explicit_per_model_table_from_config() -> None:
    level = ModelCapabilities(thinking="level", thinking_levels=("low", "high"), reasoning_effort={"medium": "LOW"})
    assert effort_to_thinking("medium", level) == {"thinkingLevel": "LOW"}
    assert effort_to_thinking("high", level) == {"thinkingLevel": "HIGH"}  # derived for the others
    budget = ModelCapabilities(thinking="budget", thinking_budget_min=128, thinking_budget_max=32768, reasoning_effort={"low": 10, "high": 99999, "none": 256})
    assert effort_to_thinking("low", budget) == {"thinkingBudget": 128}  # still clamped
    assert effort_to_thinking("high", budget) == {"thinkingBudget": 32768}
    assert effort_to_thinking("none", budget) == {"thinkingBudget": 256}


def test_nothing_is_sent_to_a_model_that_does_not_think_even_with_an_explicit_table() -> None:
    assert effort_to_thinking("high", ModelCapabilities(thinking="none", reasoning_effort={"high": "high"})) is None


# -- drop_params: per-model overrides may drop fields ------------------------------------------


def test_drop_params_removes_the_gemini_fields_of_those_parameters() -> None:
    req = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "presence_penalty": 0.5,
            "frequency_penalty": 0.5,
            "logprobs": True,
            "top_logprobs": 2,
            "seed": 1,
            "temperature": 0.2,
            "reasoning_effort": "low",
        }
    )
    caps = capabilities_for("gemini-2.5-flash", None, {"drop_params": ["presence_penalty", "logprobs", "reasoning_effort"]})
    gen = to_gemini(req, caps).body["generationConfig"]
    assert gen == {"temperature": 0.2, "seed": 1, "frequencyPenalty": 0.5}


# -- which endpoints serve a model, and the Vertex verb of embedding models ----------------------


@pytest.mark.parametrize(
    "model, endpoints, api",
    [
        ("gemini-2.5-flash", ("chat",), "embed_content"),
        ("gemini-2.5-flash-image", ("chat", "images"), "embed_content"),
        ("gemini-3-pro-image-preview", ("chat", "images"), "embed_content"),
        ("imagen-4.0-generate-001", ("images",), "embed_content"),
        ("gemini-embedding-001", ("embeddings",), "embed_content"),
        ("gemini-embedding-2", ("embeddings",), "embed_content"),
        ("gemini-embedding-exp-03-07", ("embeddings",), "embed_content"),
        ("text-embedding-005", ("embeddings",), "predict"),
        ("text-multilingual-embedding-002", ("embeddings",), "predict"),
        ("multimodalembedding", ("embeddings",), "predict"),
    ],
)
def test_endpoints_and_embeddings_api(model: str, endpoints: tuple[str, ...], api: str) -> None:
    caps = capabilities_for(model)
    assert caps.endpoints == endpoints and caps.embeddings_api == api


def test_endpoints_can_be_overridden_in_the_config() -> None:
    override = {"my-embedder*": CapabilityOverrides(endpoints=["embeddings"], embeddings_api="predict")}
    caps = capabilities_for("my-embedder-v2", override)
    assert caps.endpoints == ("embeddings",) and caps.embeddings_api == "predict"


@pytest.mark.parametrize(
    "model, api, sizes",
    [
        ("gemini-2.5-flash-image", "generate_content", ()),  # refuses imageSize (Google's 500)
        ("gemini-3-pro-image-preview", "generate_content", ("1K", "2K", "4K")),
        ("imagen-4.0-generate-001", "predict", ("1K", "2K")),
        ("imagen-4.0-ultra-generate-001", "predict", ("1K", "2K")),
        ("imagen-4.0-fast-generate-001", "predict", ()),
        ("imagen-3.0-generate-002", "predict", ()),
    ],
)
def test_image_models(model: str, api: str, sizes: tuple[str, ...]) -> None:
    caps = capabilities_for(model)
    assert (caps.images_api, caps.image_sizes) == (api, sizes)


def test_image_facts_can_be_overridden_in_config() -> None:
    caps = capabilities_for("gemini-2.5-flash-image", {"gemini-2.5-flash-image": {"image_sizes": ["1K"]}})
    assert caps.image_sizes == ("1K",)
