"""Chat completions end to end: the openai SDK (sync, async, streaming, raw
responses) against the real gateway over HTTP, in front of the fake Gemini."""

from __future__ import annotations

import time

import openai
import pytest

from .api_helpers import data_events, say

MODEL = "gemini-2.5-flash"

# A scripted usageMetadata with every count the mapping reads (docs/gemini-facts.md#usage).
USAGE = {
    "promptTokenCount": 100,
    "candidatesTokenCount": 7,
    "thoughtsTokenCount": 30,
    "cachedContentTokenCount": 40,
    "toolUsePromptTokenCount": 5,
}


def expected_usage(meta: dict[str, int]) -> dict[str, int]:
    """Reference 7.3: completion = candidates + thoughts; prompt + tool-use prompt; cached; reasoning."""
    prompt = meta.get("promptTokenCount", 0) + meta.get("toolUsePromptTokenCount", 0)
    completion = meta.get("candidatesTokenCount", 0) + meta.get("thoughtsTokenCount", 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cached_tokens": meta.get("cachedContentTokenCount", 0),
        "reasoning_tokens": meta.get("thoughtsTokenCount", 0),
    }


def usage_of(usage: openai.types.CompletionUsage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "cached_tokens": usage.prompt_tokens_details.cached_tokens,
        "reasoning_tokens": usage.completion_tokens_details.reasoning_tokens,
    }


# -- non-streamed --------------------------------------------------------------------------------


def test_completion_fields(client, fake):
    before = int(time.time())
    completion = client.chat.completions.create(model=MODEL, messages=say("What a fine day"))
    after = int(time.time())
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-") and len(completion.id) > len("chatcmpl-") + 8
    assert before <= completion.created <= after
    assert completion.model == MODEL
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content == "Echo: What a fine day"
    assert choice.finish_reason == "stop"
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert fake.last_body()["contents"] == [{"role": "user", "parts": [{"text": "What a fine day"}]}]


def test_completion_ids_are_unique(client, fake):
    ids = {client.chat.completions.create(model=MODEL, messages=say("x")).id for _ in range(3)}
    assert len(ids) == 3


def test_usage_mapping_exact(client, fake):
    completion = client.chat.completions.create(model=MODEL, messages=say("count me", usage=USAGE))
    assert usage_of(completion.usage) == expected_usage(USAGE)
    # the fake recomputes totalTokenCount = prompt + candidates + thoughts + toolUse = 142
    assert completion.usage.total_tokens == 142


def test_usage_zero_counts_omitted_upstream(client, fake):
    """proto3 omits zero counts; the gateway still reports every OpenAI usage field, as 0."""
    meta = {"promptTokenCount": 9, "candidatesTokenCount": 4}
    completion = client.chat.completions.create(model="gemini-2.0-flash", messages=say("plain", usage=meta))
    assert usage_of(completion.usage) == expected_usage(meta)


def test_parameters_reach_gemini(client, fake):
    client.chat.completions.create(
        model="gemini-2.0-flash",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi", "name": "bob"},
        ],
        max_completion_tokens=50,
        temperature=0.3,
        top_p=0.9,
        stop="END",
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=0,
        n=1,
        logprobs=False,
    )
    body = fake.last_body()
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["generationConfig"] == {
        "maxOutputTokens": 50,
        "temperature": 0.3,
        "topP": 0.9,
        "stopSequences": ["END"],
        "seed": 7,
        "presencePenalty": 0.5,
    }


def test_hint_and_unknown_fields_accepted(client, fake):
    completion = client.chat.completions.create(
        model=MODEL,
        messages=say("hints"),
        user="user-1",
        metadata={"team": "a"},
        store=True,
        service_tier="auto",
        parallel_tool_calls=True,
        prediction={"type": "content", "content": "x"},
        safety_identifier="sid",
        extra_body={"some_future_field": {"nested": 1}, "another": [1, 2]},
    )
    assert completion.choices[0].message.content == "Echo: hints"
    body = fake.last_body()
    # nothing of it reaches the Gemini API (its validator would refuse unknown fields anyway)
    assert set(body) == {"contents"}


def test_with_raw_response(client, fake):
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=say("raw please"))
    assert raw.status_code == 200
    assert raw.headers["content-type"].startswith("application/json")
    assert int(raw.headers["content-length"]) == len(raw.content)
    completion = raw.parse()
    assert completion.choices[0].message.content == "Echo: raw please"
    body = raw.http_response.json()
    assert body["id"] == completion.id
    assert {"id", "object", "created", "model", "choices", "usage"} <= set(body)
    assert set(body["choices"][0]) >= {"index", "message", "finish_reason"}


@pytest.mark.anyio
async def test_async_completion(async_client, fake):
    completion = await async_client.chat.completions.create(model=MODEL, messages=say("async hello"))
    assert completion.choices[0].message.content == "Echo: async hello"
    assert completion.model == MODEL


@pytest.mark.anyio
async def test_async_with_raw_response_stream(async_client, fake):
    raw = await async_client.chat.completions.with_raw_response.create(
        model=MODEL, messages=say("async raw stream"), stream=True
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    stream = raw.parse()
    text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text == "Echo: async raw stream"


@pytest.mark.anyio
async def test_async_concurrent_requests(async_client, fake):
    import anyio

    results: dict[int, str] = {}

    async def one(i: int) -> None:
        c = await async_client.chat.completions.create(model=MODEL, messages=say(f"request {i}"))
        results[i] = c.choices[0].message.content

    async with anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(one, i)
    assert results == {i: f"Echo: request {i}" for i in range(8)}


def test_alias_reaches_gemini_model_and_echoes_alias(strict_client, fake):
    completion = strict_client.chat.completions.create(model="gpt-4o-mini", messages=say("alias"))
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.content == "Echo: alias"
    assert fake.requests()[-1]["model"] == "gemini-2.5-flash"


def test_alias_streamed(strict_client, fake):
    chunks = list(strict_client.chat.completions.create(model="gpt-4o-mini", messages=say("alias stream"), stream=True))
    assert {c.model for c in chunks} == {"gpt-4o-mini"}
    assert fake.requests()[-1]["model"] == "gemini-2.5-flash"
    assert fake.requests()[-1]["stream"] is True


def test_chat_path_without_v1(gateway, fake):
    """`/chat/completions` (base_url without /v1) is served the same."""
    with openai.OpenAI(base_url=gateway.url, api_key="x", max_retries=0) as c:
        completion = c.chat.completions.create(model=MODEL, messages=say("no v1"))
    assert completion.choices[0].message.content == "Echo: no v1"


# -- streamed ------------------------------------------------------------------------------------


def test_stream_chunks(client, fake):
    before = int(time.time())
    stream = client.chat.completions.create(
        model=MODEL, messages=say("one two three four five six seven eight nine"), stream=True
    )
    chunks = list(stream)
    after = int(time.time())
    assert len(chunks) >= 3  # the fake splits about every 3 words
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert len({c.created for c in chunks}) == 1 and before <= chunks[0].created <= after
    assert {c.model for c in chunks} == {MODEL}
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:])
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "Echo: one two three four five six seven eight nine"
    finishes = [c.choices[0].finish_reason for c in chunks]
    assert finishes[-1] == "stop" and all(f is None for f in finishes[:-1])
    # as OpenAI does it: the finish reason travels on a final, empty delta after the content
    assert chunks[-1].choices[0].delta.content is None and chunks[-1].choices[0].delta.role is None
    assert all(c.usage is None for c in chunks)


def test_stream_without_include_usage_has_no_usage_field(raw, fake):
    r = raw.post("/v1/chat/completions", json={"model": MODEL, "messages": say("a b c d e f g"), "stream": True})
    events = data_events(r.content)
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        assert "usage" not in event or event["usage"] is None
        assert len(event["choices"]) == 1


def test_stream_include_usage_exactly_as_openai(client, fake):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=say("a b c d e f g h", usage=USAGE),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    *content, last = chunks
    assert content and all(c.usage is None and len(c.choices) == 1 for c in content)
    assert last.choices == []
    assert usage_of(last.usage) == expected_usage(USAGE)
    assert last.id == content[0].id


def test_stream_include_usage_raw_nulls(raw, fake):
    r = raw.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": say("a b c d e f g"), "stream": True, "stream_options": {"include_usage": True}},
    )
    events = data_events(r.content)
    assert events[-1] == "[DONE]"
    *content, usage_chunk = events[:-1]
    for event in content:
        assert "usage" in event and event["usage"] is None  # present and null, as OpenAI sends it
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["total_tokens"] > 0


def test_stream_with_raw_response(client, fake):
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=say("raw stream"), stream=True)
    assert raw.status_code == 200
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = list(raw.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Echo: raw stream"


def test_stream_context_manager(client, fake):
    with client.chat.completions.create(model=MODEL, messages=say("ctx mgr words here"), stream=True) as stream:
        text = "".join(c.choices[0].delta.content or "" for c in stream)
    assert text == "Echo: ctx mgr words here"


@pytest.mark.anyio
async def test_async_stream(async_client, fake):
    stream = await async_client.chat.completions.create(
        model=MODEL, messages=say("async streaming words go here"), stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: async streaming words go here"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    assert len({c.id for c in chunks}) == 1


def test_stream_helper_accumulates(client, fake):
    """The SDK's `chat.completions.stream()` helper builds the final completion from the chunks."""
    with client.chat.completions.stream(model=MODEL, messages=say("helper stream text")) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "Echo: helper stream text"
    assert final.choices[0].finish_reason == "stop"


def test_many_chunks_in_order(client, fake):
    words = " ".join(f"w{i}" for i in range(60))
    stream = client.chat.completions.create(model=MODEL, messages=say("go", reply=words, chunks=30), stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == words
    assert len(chunks) >= 30


# -- request mapping seen by Gemini (the fake records what it received) -----------------------------------


def test_roles_merging_and_system_messages(client, fake):
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Rule one."},
            {"role": "developer", "content": [{"type": "text", "text": "Rule two."}]},
            {"role": "user", "content": "first", "name": "alice"},
            {"role": "user", "content": [{"type": "text", "text": "second"}]},
            {"role": "assistant", "content": ""},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": "last question"},
        ],
    )
    assert completion.choices[0].message.content == "Echo: last question"
    body = fake.last_body()
    assert body["systemInstruction"] == {"parts": [{"text": "Rule one."}, {"text": "Rule two."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "first"}, {"text": "second"}]},
        {"role": "model", "parts": [{"text": "an answer"}]},
        {"role": "user", "parts": [{"text": "last question"}]},
    ]


@pytest.mark.parametrize(
    "extra",
    [
        {"extra_body": {"google": {"cached_content": "cachedContents/abc123", "safety_settings": [
            {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]}}},
        {"google": {"cached_content": "cachedContents/abc123", "safety_settings": [
            {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]}},
    ],
    ids=["extra_body.google", "top-level google"],
)
def test_google_extensions_and_cached_tokens(client, fake, extra):
    """`extra_body={"extra_body": {"google": ...}}` (Google's compat spelling) or a top-level `google`."""
    completion = client.chat.completions.create(model=MODEL, messages=say("cached"), extra_body=extra)
    body = fake.last_body()
    assert body["cachedContent"] == "cachedContents/abc123"
    assert body["safetySettings"] == [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]
    # the fake reports 1024 cachedContentTokenCount with cachedContent, inside promptTokenCount
    assert completion.usage.prompt_tokens_details.cached_tokens == 1024
    assert completion.usage.prompt_tokens > 1024


def test_json_object_response_format(client, fake):
    import json

    completion = client.chat.completions.create(
        model=MODEL, messages=say("give json"), response_format={"type": "json_object"}
    )
    assert json.loads(completion.choices[0].message.content) == {"echo": "give json"}
    assert fake.last_body()["generationConfig"] == {"responseMimeType": "application/json"}


def test_stop_sequences_list(client, fake):
    completion = client.chat.completions.create(
        model="gemini-2.0-flash", messages=say("alpha beta STOP gamma"), stop=["STOP", "never"], max_tokens=100
    )
    assert fake.last_body()["generationConfig"] == {"stopSequences": ["STOP", "never"], "maxOutputTokens": 100}
    assert completion.choices[0].message.content == "Echo: alpha beta "
    assert completion.choices[0].finish_reason == "stop"
