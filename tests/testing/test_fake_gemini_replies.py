"""The fake Gemini server: what it answers (defaults, directives, structured output, usage)."""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson

from fake_harness import Harness, user

FLASH = "gemini-2.0-flash"


def fake_line(**directive: Any) -> str:
    return "#fake " + json.dumps(directive)


def parts_of(data: dict[str, Any], index: int = 0) -> list[dict[str, Any]]:
    return data["candidates"][index].get("content", {}).get("parts", [])


def streamed_parts(chunks: list[dict[str, Any]], index: int = 0) -> list[dict[str, Any]]:
    found = []
    for chunk in chunks:
        for cand in chunk.get("candidates", []):
            if cand.get("index", 0) == index:
                found += cand.get("content", {}).get("parts", [])
    return found


def test_reply_directive_is_removed_from_echo(fake: Harness) -> None:
    data = fake.generate(FLASH, "hello\n" + fake_line(reply="Scripted!"))
    assert parts_of(data) == [{"text": "Scripted!"}]
    echo = fake.generate(FLASH, "hello\n#fake {}\nworld")
    assert parts_of(echo)[0]["text"] == "Echo: hello\nworld"


def test_bad_directive_is_a_400(fake: Harness) -> None:
    for line in ("#fake {nope}", fake_line(replly="x"), fake_line(chunks=0), fake_line(finish_reason="DONE")):
        response = fake.post(FLASH, line)
        assert response.status_code == 400, line
        assert "invalid #fake directive" in response.json()["error"]["message"]


def test_chunks_and_delay(fake: Harness) -> None:
    chunks = fake.stream(FLASH, fake_line(reply="a b c d e f g h", chunks=4, chunk_delay_ms=10))
    assert [p["text"] for p in streamed_parts(chunks)] == ["a b", " c d", " e f", " g h"]
    tiny = fake.stream(FLASH, fake_line(reply="abc", chunks=3))
    assert [p["text"] for p in streamed_parts(tiny)] == ["a", "b", "c"]


def test_script_is_fifo_and_beats_inline(fake: Harness) -> None:
    fake.script({"reply": "first"}, {"reply": "second"})
    prompt = fake_line(reply="inline", usage={"promptTokenCount": 99})
    got = [parts_of(fake.generate(FLASH, prompt))[0]["text"] for _ in range(3)]
    assert got == ["first", "second", "inline"]
    assert fake.stats()["scripts_applied"] == 2
    bad = fake.http.post("/_fake/script", json={"nope": 1})
    assert bad.status_code == 400


def test_usage_override_and_cached_content(fake: Harness) -> None:
    data = fake.generate(FLASH, fake_line(usage={"promptTokenCount": 100, "candidatesTokenCount": 7}))
    assert data["usageMetadata"]["totalTokenCount"] == 107
    cached = fake.generate(FLASH, "hi", cachedContent="cachedContents/abc")["usageMetadata"]
    assert cached["cachedContentTokenCount"] == 1024 and cached["promptTokenCount"] > 1024


def test_finish_reasons(fake: Harness) -> None:
    max_tokens = fake.generate(FLASH, fake_line(finish_reason="MAX_TOKENS"))["candidates"][0]
    assert max_tokens == {"content": {"role": "model"}, "finishReason": "MAX_TOKENS"}
    malformed = fake.generate(FLASH, fake_line(finish_reason="MALFORMED_FUNCTION_CALL"))["candidates"][0]
    assert malformed["content"] == {} and malformed["finishMessage"].startswith("Malformed function call")
    chunks = fake.stream(FLASH, "one two three four\n" + fake_line(finish_reason="SAFETY"))
    assert streamed_parts(chunks)  # text went out first
    last = chunks[-1]["candidates"][0]
    assert "content" not in last and last["finishReason"] == "SAFETY"
    assert any(r.get("blocked") for r in last["safetyRatings"])
    other = fake.generate(FLASH, fake_line(finish_reason="OTHER", reply="partial", finish_message="why"))
    cand = other["candidates"][0]
    assert cand["finishReason"] == "OTHER" and cand["finishMessage"] == "why"
    assert parts_of(other) == [{"text": "partial"}]


def test_block_prompt(fake: Harness) -> None:
    data = fake.generate(FLASH, fake_line(block_prompt="PROHIBITED_CONTENT"))
    assert "candidates" not in data
    assert data["promptFeedback"]["blockReason"] == "PROHIBITED_CONTENT"
    chunks = fake.stream(FLASH, fake_line(block_prompt="SAFETY"))
    assert len(chunks) == 1 and chunks[0]["promptFeedback"]["blockReason"] == "SAFETY"


def test_json_without_schema_echoes(fake: Harness) -> None:
    config = {"responseMimeType": "application/json"}
    text = parts_of(fake.generate(FLASH, "give json", generationConfig=config))[0]["text"]
    assert orjson.loads(text) == {"echo": "give json"}


def test_json_schema_output_validates(fake: Harness) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 18, "maximum": 99},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "kind": {"enum": ["cat", "dog"]},
            "when": {"type": "string", "format": "date-time"},
            "friend": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/Person"}]},
        },
        "required": ["name", "age"],
        "$defs": {"Person": {"type": "object", "properties": {"nick": {"type": "string"}}, "required": ["nick"]}},
    }
    config = {"responseMimeType": "application/json", "responseJsonSchema": schema}
    value = orjson.loads(parts_of(fake.generate("gemini-2.5-flash", "x", generationConfig=config))[-1]["text"])
    assert value == {
        "name": "example name",
        "age": 18,
        "tags": ["example tag", "example tag"],
        "kind": "cat",
        "when": "2024-01-01T00:00:00Z",
        "friend": {"nick": "example nick"},
    }
    gemini_schema = {
        "type": "OBJECT",
        "properties": {"score": {"type": "NUMBER", "maximum": 0.5}, "ok": {"type": "BOOLEAN", "nullable": True}},
        "propertyOrdering": ["ok", "score"],
    }
    config = {"responseMimeType": "application/json", "responseSchema": gemini_schema}
    text = parts_of(fake.generate(FLASH, "x", generationConfig=config))[0]["text"]
    assert text == '{"ok":true,"score":0}'


def test_enum_mime_type(fake: Harness) -> None:
    config = {"responseMimeType": "text/x.enum", "responseSchema": {"type": "STRING", "enum": ["RED", "BLUE"]}}
    assert parts_of(fake.generate(FLASH, "x", generationConfig=config)) == [{"text": "RED"}]


def test_candidate_count(fake: Harness) -> None:
    data = fake.generate(FLASH, "hi", generationConfig={"candidateCount": 3})
    texts = [c["content"]["parts"][0]["text"] for c in data["candidates"]]
    assert len(set(texts)) == 3
    assert "index" not in data["candidates"][0] and data["candidates"][2]["index"] == 2
    chunks = fake.stream(FLASH, "hi", generationConfig={"candidateCount": 2})
    assert "".join(p["text"] for p in streamed_parts(chunks, 1)) == texts[1]


def test_logprobs(fake: Harness) -> None:
    config = {"responseLogprobs": True, "logprobs": 2}
    cand = fake.generate("gemini-2.5-flash", "one two", generationConfig=config)["candidates"][0]
    result = cand["logprobsResult"]
    tokens = [c["token"] for c in result["chosenCandidates"]]
    assert "".join(tokens) == "Echo: one two"
    assert len(result["topCandidates"]) == len(tokens)
    assert all(len(step["candidates"]) == 2 for step in result["topCandidates"])
    assert cand["avgLogprobs"] < 0
    again = fake.generate("gemini-2.5-flash", "one two", generationConfig=config)["candidates"][0]
    assert again["logprobsResult"] == result  # deterministic
    chunks = fake.stream(FLASH, "one two three four five", generationConfig=config)
    streamed = [t["token"] for c in chunks for t in c["candidates"][0].get("logprobsResult", {}).get("chosenCandidates", [])]
    assert "".join(streamed) == "Echo: one two three four five"


def test_thoughts_only_when_included(fake: Harness) -> None:
    hidden = fake.generate("gemini-2.5-flash", fake_line(thoughts="Hmm, let me think."))
    assert all(not p.get("thought") for p in parts_of(hidden))
    assert hidden["usageMetadata"]["thoughtsTokenCount"] > 0
    config = {"thinkingConfig": {"includeThoughts": True}}
    shown = fake.generate("gemini-2.5-flash", fake_line(thoughts="Hmm, let me think."), generationConfig=config)
    assert parts_of(shown)[0] == {"text": "Hmm, let me think.", "thought": True}
    usage = shown["usageMetadata"]
    assert usage["totalTokenCount"] == (
        usage["promptTokenCount"] + usage["candidatesTokenCount"] + usage["thoughtsTokenCount"]
    )
    chunks = fake.stream("gemini-2.5-flash", "a b c d e f g", generationConfig=config)
    flags = [bool(p.get("thought")) for p in streamed_parts(chunks)]
    assert flags[0] and flags == sorted(flags, reverse=True)  # thoughts stream first
    off = fake.generate("gemini-2.5-flash", "x", generationConfig={"thinkingConfig": {"thinkingBudget": 0}})
    assert "thoughtsTokenCount" not in off["usageMetadata"]
    assert "thoughtsTokenCount" not in fake.generate("gemini-2.5-flash-lite", "x")["usageMetadata"]


def test_max_output_tokens_spent_on_thinking(fake: Harness) -> None:
    data = fake.generate("gemini-2.5-flash", "a long question", generationConfig={"maxOutputTokens": 10})
    cand = data["candidates"][0]
    assert cand["finishReason"] == "MAX_TOKENS" and "parts" not in cand["content"]
    truncated = fake.generate(FLASH, fake_line(reply="word " * 40), generationConfig={"maxOutputTokens": 5})
    assert truncated["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert len(parts_of(truncated)[0]["text"]) <= 20


def test_stop_sequences(fake: Harness) -> None:
    data = fake.generate(FLASH, fake_line(reply="keep this STOP not this"), generationConfig={"stopSequences": ["STOP"]})
    assert parts_of(data) == [{"text": "keep this "}]


def test_image_part_is_a_png(fake: Harness) -> None:
    data = fake.generate(FLASH, fake_line(image=True))
    blob = parts_of(data)[-1]["inlineData"]
    assert blob["mimeType"] == "image/png"
    assert base64.b64decode(blob["data"]).startswith(b"\x89PNG\r\n\x1a\n")
    image_model = fake.generate("gemini-2.5-flash-image", "draw a cat")
    assert "inlineData" in parts_of(image_model)[-1]
    text_only = fake.generate("gemini-2.5-flash-image", "x", generationConfig={"responseModalities": ["TEXT"]})
    assert all("inlineData" not in p for p in parts_of(text_only))


def test_grounding_uses_byte_offsets(fake: Harness) -> None:
    data = fake.generate("gemini-2.5-flash", "coffee?\n" + fake_line(grounding=True))
    cand = data["candidates"][0]
    text = "".join(p["text"] for p in cand["content"]["parts"])
    assert "é" in text
    meta = cand["groundingMetadata"]
    assert meta["groundingChunks"][0]["web"]["uri"].startswith("https://")
    encoded = text.encode("utf-8")
    for support in meta["groundingSupports"]:
        segment = support["segment"]
        start = segment.get("startIndex", 0)
        assert encoded[start : segment["endIndex"]].decode("utf-8") == segment["text"]
    assert "startIndex" not in meta["groundingSupports"][0]["segment"]
    assert data["usageMetadata"]["toolUsePromptTokenCount"] > 0
    chunks = fake.stream("gemini-2.5-flash", "coffee?\n" + fake_line(grounding=True))
    assert "groundingMetadata" in chunks[-1]["candidates"][0]


def test_code_execution_parts(fake: Harness) -> None:
    parts = parts_of(fake.generate(FLASH, fake_line(code_execution=True)))
    assert parts[1]["executableCode"]["language"] == "PYTHON"
    assert parts[2]["codeExecutionResult"] == {"outcome": "OUTCOME_OK", "output": "sum=10\n"}
    assert parts[-1]["text"] == "Hello from fake Gemini"


def test_gemini3_answer_signature(fake: Harness) -> None:
    whole = parts_of(fake.generate("gemini-3-flash-preview", "hi"))
    assert whole[-1]["text"] == "Echo: hi" and whole[-1]["thoughtSignature"]
    chunks = fake.stream("gemini-3-flash-preview", "hi")
    last = chunks[-1]["candidates"][0]
    assert last["content"]["parts"] == [{"text": "", "thoughtSignature": whole[-1]["thoughtSignature"]}]
    assert last["finishReason"] == "STOP"
    assert "thoughtSignature" not in parts_of(fake.generate("gemini-2.5-flash", "hi"))[0]


def test_requests_see_the_merged_directive(fake: Harness) -> None:
    fake.generate(FLASH, [user(fake_line(reply="r"))])
    assert fake.requests()[-1]["directive"] == {"reply": "r"}
