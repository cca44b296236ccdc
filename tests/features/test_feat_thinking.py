"""Thinking end to end (issue 3, "Thinking"; docs/design.md#thinking; docs/gemini-facts.md#thinking).

`reasoning_effort` reaches Gemini through the per-model table (Gemini 3
`thinkingLevel`, 2.5 budgets, nothing for models that do not think); the fake
refuses what the real models refuse, so every 200 here also proves the value
was acceptable to that model. `extra_body.google.thinking_config` overrides it
(both spellings the SDK produces), thoughts come back only when asked for, and
`reasoning_tokens` is reported, streamed and not.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest

from .feat_support import prompt

THOUGHTS = "First I weigh the options. Then I pick the best one. Done thinking now."

EFFORT_TABLE = [
    ("gemini-3-pro-preview", "none", {"thinkingLevel": "LOW"}),
    ("gemini-3-pro-preview", "minimal", {"thinkingLevel": "LOW"}),
    ("gemini-3-pro-preview", "low", {"thinkingLevel": "LOW"}),
    ("gemini-3-pro-preview", "medium", {"thinkingLevel": "HIGH"}),
    ("gemini-3-pro-preview", "high", {"thinkingLevel": "HIGH"}),
    ("gemini-3-flash-preview", "none", {"thinkingLevel": "MINIMAL"}),
    ("gemini-3-flash-preview", "minimal", {"thinkingLevel": "MINIMAL"}),
    ("gemini-3-flash-preview", "low", {"thinkingLevel": "LOW"}),
    ("gemini-3-flash-preview", "medium", {"thinkingLevel": "MEDIUM"}),
    ("gemini-3-flash-preview", "high", {"thinkingLevel": "HIGH"}),
    ("gemini-3.1-pro-preview", "minimal", {"thinkingLevel": "LOW"}),
    ("gemini-3.1-pro-preview", "medium", {"thinkingLevel": "MEDIUM"}),
    ("gemini-2.5-flash", "none", {"thinkingBudget": 0}),
    ("gemini-2.5-flash", "minimal", {"thinkingBudget": 1024}),
    ("gemini-2.5-flash", "low", {"thinkingBudget": 1024}),
    ("gemini-2.5-flash", "medium", {"thinkingBudget": 8192}),
    ("gemini-2.5-flash", "high", {"thinkingBudget": 24576}),
    ("gemini-2.5-flash-lite", "none", {"thinkingBudget": 0}),
    ("gemini-2.5-flash-lite", "minimal", {"thinkingBudget": 1024}),
    ("gemini-2.5-pro", "minimal", {"thinkingBudget": 1024}),
    ("gemini-2.5-pro", "high", {"thinkingBudget": 24576}),
    ("gemini-2.0-flash", "high", None),
    ("gemini-2.0-flash", "none", None),
    ("gemini-2.5-flash-image", "medium", None),
]


@pytest.mark.parametrize("model, effort, expected", EFFORT_TABLE)
def test_reasoning_effort_per_model_family(client, fake, model, effort, expected):
    completion = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Think about it"}], reasoning_effort=effort
    )
    assert completion.choices[0].message.content.startswith("Echo: Think about it")
    gen = fake.last_body().get("generationConfig", {})
    assert gen.get("thinkingConfig") == expected
    assert fake.stats()["errors_returned"] == 0


def test_reasoning_effort_none_on_a_model_that_always_thinks_is_a_400(client, fake):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="gemini-2.5-pro", messages=[{"role": "user", "content": "x"}], reasoning_effort="none"
        )
    assert info.value.body["param"] == "reasoning_effort"
    assert fake.stats()["generate_requests"] == 0


def test_reasoning_effort_table_from_config(make_gateway, fake):
    gateway = make_gateway(capabilities={"gemini-2.5-flash": {"reasoning_effort": {"high": 4096, "low": 512}}})
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0) as client:
        for effort, budget in (("high", 4096), ("low", 512), ("medium", 8192)):
            client.chat.completions.create(
                model="gemini-2.5-flash", messages=[{"role": "user", "content": "x"}], reasoning_effort=effort
            )
            assert fake.last_body()["generationConfig"]["thinkingConfig"] == {"thinkingBudget": budget}


def test_thinking_level_changes_reasoning_tokens(client, fake):
    """The fake thinks 24 tokens at LOW and 96 at HIGH (plus the same summary): the usage shows it."""
    usage = {}
    for effort in ("low", "high"):
        completion = client.chat.completions.create(
            model="gemini-3-pro-preview", messages=[{"role": "user", "content": "x"}], reasoning_effort=effort
        )
        usage[effort] = completion.usage
    assert usage["high"].completion_tokens_details.reasoning_tokens - usage["low"].completion_tokens_details.reasoning_tokens == 72
    assert usage["high"].completion_tokens - usage["low"].completion_tokens == 72


# -- extra_body.google.thinking_config -------------------------------------------------------------


def _google(options: dict[str, Any], spelling: str) -> dict[str, Any]:
    """`extra_body.google` as the seed's SDK example sends it, or top-level `google`."""
    return {"extra_body": {"google": options}} if spelling == "seed" else {"google": options}


@pytest.mark.parametrize("spelling", ["seed", "top-level"])
def test_thinking_config_both_spellings(client, fake, spelling):
    completion = client.chat.completions.create(
        model="gemini-2.5-flash",
        messages=[{"role": "user", "content": prompt("Primes?", thoughts=THOUGHTS)}],
        extra_body=_google({"thinking_config": {"include_thoughts": True, "thinking_budget": 1000}}, spelling),
    )
    assert fake.last_body()["generationConfig"]["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": 1000}
    message = completion.choices[0].message
    assert message.content == "Echo: Primes?"
    assert message.model_extra["reasoning_content"] == THOUGHTS
    completion = client.chat.completions.create(
        model="gemini-3-flash-preview",
        messages=[{"role": "user", "content": "x"}],
        extra_body=_google({"thinking_config": {"thinking_level": "MEDIUM"}}, spelling),
    )
    assert fake.last_body()["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "MEDIUM"}
    assert "reasoning_content" not in (completion.choices[0].message.model_extra or {})


def test_thinking_config_with_reasoning_effort_is_a_400(client, fake):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="gemini-2.5-flash",
            messages=[{"role": "user", "content": "x"}],
            reasoning_effort="low",
            extra_body={"extra_body": {"google": {"thinking_config": {"thinking_budget": 100}}}},
        )
    assert info.value.status_code == 400
    assert "reasoning_effort" in info.value.body["message"] and "thinking_config" in info.value.body["message"]
    assert fake.stats()["generate_requests"] == 0


def test_thinking_config_on_a_model_that_does_not_think_is_a_400(client, fake):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="gemini-2.0-flash",
            messages=[{"role": "user", "content": "x"}],
            extra_body={"google": {"thinking_config": {"include_thoughts": True}}},
        )
    assert "Thinking is not enabled" in info.value.body["message"]


# -- thoughts in the answer ------------------------------------------------------------------------


def test_thoughts_only_when_asked(client, fake):
    completion = client.chat.completions.create(
        model="gemini-3-pro-preview", messages=[{"role": "user", "content": prompt("Hi", thoughts=THOUGHTS)}]
    )
    assert "includeThoughts" not in fake.last_body().get("generationConfig", {}).get("thinkingConfig", {})
    message = completion.choices[0].message
    assert message.content == "Echo: Hi"
    assert "reasoning_content" not in (message.model_extra or {})
    assert completion.usage.completion_tokens_details.reasoning_tokens > 0  # it thought, silently
    chunks = list(client.chat.completions.create(
        model="gemini-3-pro-preview", messages=[{"role": "user", "content": prompt("Hi", thoughts=THOUGHTS)}], stream=True
    ))
    assert not any("reasoning_content" in (c.choices[0].delta.model_extra or {}) for c in chunks if c.choices)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: Hi"


@pytest.mark.parametrize("model", ["gemini-2.5-flash", "gemini-3-pro-preview"])
def test_streamed_reasoning_content(client, fake, model):
    chunks = list(client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt("Why is the sky blue?", thoughts=THOUGHTS)}],
        extra_body={"google": {"thinking_config": {"include_thoughts": True}}},
        stream=True,
        stream_options={"include_usage": True},
    ))
    reasoning = [c.choices[0].delta.model_extra.get("reasoning_content") for c in chunks if c.choices]
    content = [c.choices[0].delta.content for c in chunks if c.choices]
    assert "".join(r or "" for r in reasoning) == THOUGHTS
    assert sum(1 for r in reasoning if r) > 1  # streamed in pieces
    assert "".join(c or "" for c in content) == "Echo: Why is the sky blue?"
    last_thought = max(i for i, r in enumerate(reasoning) if r)
    first_text = min(i for i, c in enumerate(content) if c)
    assert last_thought < first_text  # thoughts first
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens > 0


@pytest.mark.parametrize("spelling", ["seed", "top-level"])
def test_thought_tag_marker(client, fake, spelling):
    options = {"thinking_config": {"include_thoughts": True, "thinking_budget": 10000}, "thought_tag_marker": "think"}
    messages = [{"role": "user", "content": prompt("Are there primes of the form n*ceil(log(n))?", thoughts=THOUGHTS)}]
    completion = client.chat.completions.create(model="gemini-2.5-flash", messages=messages, extra_body=_google(options, spelling))
    answer = "Echo: Are there primes of the form n*ceil(log(n))?"
    message = completion.choices[0].message
    assert message.content == f"<think>{THOUGHTS}</think>{answer}"
    assert message.model_extra["reasoning_content"] == THOUGHTS
    # Streamed, as in the seed's curl example: the tags open and close across chunks.
    chunks = list(client.chat.completions.create(
        model="gemini-2.5-flash", messages=messages, extra_body=_google(options, spelling), stream=True
    ))
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(pieces) == f"<think>{THOUGHTS}</think>{answer}"
    opened = next(i for i, p in enumerate(pieces) if "<think>" in p)
    closed = next(i for i, p in enumerate(pieces) if "</think>" in p)
    assert opened < closed
    # Sending the tagged answer back: the thoughts are not replayed to Gemini as text.
    client.chat.completions.create(
        model="gemini-2.5-flash",
        messages=messages + [{"role": "assistant", "content": message.content}, {"role": "user", "content": "More?"}],
        extra_body=_google(options, spelling),
    )
    model_turn = fake.last_body()["contents"][1]
    assert model_turn["role"] == "model" and model_turn["parts"][0]["text"] == answer


def test_thought_tag_marker_without_thoughts_adds_nothing(client, fake):
    completion = client.chat.completions.create(
        model="gemini-2.5-flash",
        messages=[{"role": "user", "content": "plain"}],
        extra_body={"google": {"thought_tag_marker": "think"}},
    )
    assert completion.choices[0].message.content == "Echo: plain"


# -- usage -----------------------------------------------------------------------------------------

USAGE = {"promptTokenCount": 11, "candidatesTokenCount": 5, "thoughtsTokenCount": 77}


def test_reasoning_tokens_in_usage(client, fake):
    completion = client.chat.completions.create(
        model="gemini-3-pro-preview", messages=[{"role": "user", "content": prompt("x", usage=USAGE)}]
    )
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (11, 82, 93)
    assert usage.completion_tokens_details.reasoning_tokens == 77


def test_reasoning_tokens_in_streamed_usage(client, fake):
    chunks = list(client.chat.completions.create(
        model="gemini-3-pro-preview",
        messages=[{"role": "user", "content": prompt("one two three four five six seven", usage=USAGE)}],
        stream=True,
        stream_options={"include_usage": True},
    ))
    assert all(c.usage is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.choices == []
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (11, 82, 93)
    assert last.usage.completion_tokens_details.reasoning_tokens == 77
