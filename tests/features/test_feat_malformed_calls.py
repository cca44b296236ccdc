"""MALFORMED_FUNCTION_CALL / UNEXPECTED_TOOL_CALL (docs/design.md#endings): retried, then an error.

Never a silent `stop`: by default the gateway retries once; when Gemini keeps
failing the client gets an error with `code: "malformed_function_call"`, as an
HTTP error before the first byte of a stream and as an error event after it.
"""

from __future__ import annotations

import json

import openai
import pytest

from .feat_support import TOOLS, prompt

BROKEN = ["MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL"]


@pytest.mark.parametrize("reason", BROKEN)
@pytest.mark.parametrize("stream", [False, True])
def test_one_broken_answer_is_retried(client, fake, reason, stream):
    fake.script({"finish_reason": reason})  # only the first attempt is broken
    messages = [{"role": "user", "content": prompt("Weather in Rome?", tool_steps=1)}]
    raw = client.chat.completions.with_raw_response.create(
        model="gemini-3-pro-preview", messages=messages, tools=TOOLS, stream=stream
    )
    assert raw.headers["x-gemini-proxy-attempts"] == "2"
    answer = raw.parse()
    if stream:
        chunks = list(answer)
        calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert [tc.function.name for tc in calls] == ["get_weather"] and finish == ["tool_calls"]
    else:
        assert answer.choices[0].finish_reason == "tool_calls"
        assert answer.choices[0].message.tool_calls[0].function.name == "get_weather"
    stats = fake.stats()
    assert stats["generate_requests"] == 2 and stats["scripts_applied"] == 1


@pytest.mark.parametrize("reason", BROKEN)
def test_persistent_broken_answer_is_an_error(client, fake, reason):
    messages = [{"role": "user", "content": prompt("Weather in Rome?", finish_reason=reason)}]
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="gemini-3-pro-preview", messages=messages, tools=TOOLS)
    error = info.value
    assert error.status_code == 502
    assert isinstance(error, openai.InternalServerError)
    assert error.body["code"] == "malformed_function_call"
    assert error.body["type"] == "server_error"
    assert reason in error.body["message"]
    assert set(error.body) >= {"message", "type", "param", "code"}
    assert error.response.headers["x-gemini-proxy-attempts"] == "2"
    assert fake.stats()["generate_requests"] == 2  # first try + one retry


def test_broken_answer_with_text_is_not_a_silent_stop(client, fake):
    """Even when Gemini sent some text with the bad ending, the client must not see a normal answer."""
    messages = [{"role": "user", "content": prompt("x", reply="Calling the tool now.", finish_reason="MALFORMED_FUNCTION_CALL")}]
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="gemini-2.5-flash", messages=messages, tools=TOOLS)
    assert info.value.body["code"] == "malformed_function_call"


@pytest.mark.parametrize("retries, attempts", [(0, 1), (2, 3)])
def test_retry_count_is_configurable(make_gateway, fake, retries, attempts):
    gateway = make_gateway(retry={"malformed_function_call": retries})
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0) as client:
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(
                model="gemini-2.5-flash",
                messages=[{"role": "user", "content": prompt("x", finish_reason="UNEXPECTED_TOOL_CALL")}],
                tools=TOOLS,
            )
    assert info.value.body["code"] == "malformed_function_call"
    assert fake.stats()["generate_requests"] == attempts


@pytest.mark.parametrize("reason", BROKEN)
def test_streamed_before_anything_was_sent_is_an_http_error(client, fake, reason):
    messages = [{"role": "user", "content": prompt("x", finish_reason=reason)}]
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="gemini-3-flash-preview", messages=messages, tools=TOOLS, stream=True)
    assert info.value.status_code == 502
    assert info.value.body["code"] == "malformed_function_call"
    assert fake.stats()["generate_requests"] == 2


def test_streamed_after_content_is_an_error_event(client, fake):
    text = "I will look that up for you right now, one moment please."
    directive = {"reply": text, "chunks": 4, "chunk_delay_ms": 40, "finish_reason": "MALFORMED_FUNCTION_CALL"}
    messages = [{"role": "user", "content": prompt("x", **directive)}]
    received = []
    stream = client.chat.completions.create(model="gemini-2.5-flash", messages=messages, tools=TOOLS, stream=True)
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            assert not (chunk.choices and chunk.choices[0].finish_reason), "no normal ending may reach the client"
            received.append(chunk.choices[0].delta.content or "")
    assert info.value.body["code"] == "malformed_function_call"
    assert "".join(received) and text.startswith("".join(received))
    assert fake.stats()["generate_requests"] == 1  # nothing is retried once the answer has started


def test_streamed_error_event_on_the_wire(gateway, fake):
    """The raw frames: content, then one `data: {"error": ...}` event, and no `[DONE]`."""
    import httpx

    directive = {"reply": "one two three four five six", "chunks": 3, "chunk_delay_ms": 40, "finish_reason": "UNEXPECTED_TOOL_CALL"}
    body = {
        "model": "gemini-2.5-flash",
        "messages": [{"role": "user", "content": prompt("x", **directive)}],
        "tools": TOOLS,
        "stream": True,
    }
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body, timeout=30) as response:
        assert response.status_code == 200
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] != "[DONE]" and "[DONE]" not in events
    error = json.loads(events[-1])["error"]
    assert error["code"] == "malformed_function_call" and "UNEXPECTED_TOOL_CALL" in error["message"]
    assert any(json.loads(e).get("choices") and json.loads(e)["choices"][0]["delta"].get("content") for e in events[:-1])
