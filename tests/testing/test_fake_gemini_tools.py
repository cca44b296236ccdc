"""The fake Gemini server: function calling, tool loops, streamed arguments, thought signatures."""

from __future__ import annotations

import json
from typing import Any

from fake_harness import Harness, parse_sse, user, validate

G3 = "gemini-3-flash-preview"
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "parametersJsonSchema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
        "required": ["city"],
    },
}
TIME = {"name": "get_time", "parameters": {"type": "OBJECT", "properties": {"tz": {"type": "STRING", "enum": ["UTC"]}}}}
TOOLS = [{"functionDeclarations": [WEATHER, TIME]}]


def fake_line(**directive: Any) -> str:
    return "#fake " + json.dumps(directive)


def model_turn(data: dict[str, Any]) -> dict[str, Any]:
    return data["candidates"][0]["content"]


def responses_for(content: dict[str, Any]) -> dict[str, Any]:
    calls = [p["functionCall"] for p in content["parts"] if "functionCall" in p]
    parts = [{"functionResponse": {"name": c["name"], "response": {"output": f"{c['name']} ok"}}} for c in calls]
    return {"role": "user", "parts": parts}


def run_loop(fake: Harness, model: str, prompt: str, rounds: int, **fields: Any) -> list[dict[str, Any]]:
    """Play the client side of a tool loop; returns the contents sent in the last request."""
    contents = [user(prompt)]
    for _ in range(rounds):
        turn = model_turn(fake.generate(model, contents, tools=TOOLS, **fields))
        contents += [turn, responses_for(turn)]
    return contents


def test_tool_steps_loop_then_answer(fake: Harness) -> None:
    contents = run_loop(fake, G3, "weather?\n" + fake_line(tool_steps=2), 2)
    calls = [p for c in contents if c["role"] == "model" for p in c["parts"]]
    assert [p["functionCall"]["name"] for p in calls] == ["get_weather", "get_time"]
    assert calls[0]["functionCall"]["args"] == {"city": "example city", "days": 1}
    assert calls[1]["functionCall"]["args"] == {"tz": "UTC"}
    assert all(p["thoughtSignature"] for p in calls)
    final = fake.generate(G3, contents, tools=TOOLS)
    text = model_turn(final)["parts"][0]["text"]
    assert text.startswith("Function results after 2 round(s):")
    assert 'get_weather={"output":"get_weather ok"}' in text
    assert final["candidates"][0]["finishReason"] == "STOP"


def test_parallel_calls_only_first_is_signed(fake: Harness) -> None:
    turn = model_turn(fake.generate(G3, fake_line(tool_steps=1, parallel=2), tools=TOOLS))
    first, second = turn["parts"]
    assert first["thoughtSignature"] and "thoughtSignature" not in second
    contents = [user(fake_line(tool_steps=1, parallel=2)), turn, responses_for(turn)]
    assert fake.post(G3, contents, tools=TOOLS).status_code == 200
    moved = dict(turn, parts=[{"functionCall": first["functionCall"]}, {**second, "thoughtSignature": first["thoughtSignature"]}])
    response = fake.post(G3, [contents[0], moved, contents[2]], tools=TOOLS)
    assert response.status_code == 400 and "missing a `thought_signature`" in response.json()["error"]["message"]


def test_explicit_tool_calls_with_ids(fake: Harness) -> None:
    calls = [{"name": "get_weather", "args": {"city": "Oslo"}, "id": "call-1"}, {"name": "get_time", "args": {}}]
    data = fake.generate("gemini-2.5-flash", fake_line(tool_calls=calls), tools=TOOLS)
    parts = model_turn(data)["parts"]
    assert parts[0]["functionCall"] == {"name": "get_weather", "args": {"city": "Oslo"}, "id": "call-1"}
    assert parts[1]["functionCall"] == {"name": "get_time", "args": {}}
    auto_ids = model_turn(fake.generate(G3, fake_line(tool_steps=1, call_ids=True), tools=TOOLS))
    assert auto_ids["parts"][0]["functionCall"]["id"].startswith("fc-")


def test_tool_calls_stop_after_the_responses(fake: Harness) -> None:
    prompt = fake_line(tool_calls=[{"name": "get_time", "args": {"tz": "UTC"}}])
    contents = run_loop(fake, G3, prompt, 1)
    again = model_turn(fake.generate(G3, contents, tools=TOOLS))
    assert "text" in again["parts"][0]


def test_mode_any_calls_first_allowed_function(fake: Harness) -> None:
    config = {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}}
    parts = model_turn(fake.generate("gemini-2.0-flash", "what time", tools=TOOLS, toolConfig=config))["parts"]
    assert parts == [{"functionCall": {"name": "get_time", "args": {"tz": "UTC"}}}]
    none = {"functionCallingConfig": {"mode": "NONE"}}
    text = model_turn(fake.generate("gemini-2.5-flash", fake_line(tool_steps=1), tools=TOOLS, toolConfig=none))
    assert "text" in text["parts"][0]


def test_streamed_call_is_whole_and_signed(fake: Harness) -> None:
    chunks = fake.stream(G3, fake_line(tool_steps=1, parallel=2), tools=TOOLS)
    parts = [p for c in chunks for p in c["candidates"][0]["content"]["parts"]]
    assert [("functionCall" in p, "thoughtSignature" in p) for p in parts] == [(True, True), (True, False)]
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"


def rebuild(parts: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """Put streamed `partialArgs` back together (top-level and one nested level)."""
    name, args, strings = "", {}, {}
    for part in parts:
        call = part["functionCall"]
        name = call.get("name", name)
        for arg in call.get("partialArgs", []):
            keys = arg["jsonPath"].removeprefix("$.").split(".")
            if "stringValue" in arg:
                strings[arg["jsonPath"]] = strings.get(arg["jsonPath"], "") + arg["stringValue"]
                value: Any = strings[arg["jsonPath"]]
            elif "nullValue" in arg:
                value = None
            else:
                value = arg.get("numberValue", arg.get("boolValue"))
            target = args
            for key in keys[:-1]:
                target = target.setdefault(key, {})
            target[keys[-1]] = value
    return name, args


def test_stream_function_call_arguments_on_vertex(fake: Harness) -> None:
    args = {"city": "San Francisco", "days": 3, "metric": True, "note": None, "extra": {"unit": "celsius"}}
    prompt = fake_line(tool_calls=[{"name": "get_weather", "args": args}])
    config = {"functionCallingConfig": {"streamFunctionCallArguments": True}}
    response = fake.vertex_post(
        G3, prompt, fake.token(), method="streamGenerateContent", query="?alt=sse", tools=TOOLS, toolConfig=config
    )
    assert response.status_code == 200, response.text
    chunks = parse_sse(response.content)
    for chunk in chunks:
        validate(chunk)
    parts = [p for c in chunks for p in c["candidates"][0]["content"]["parts"]]
    assert len(parts) > 6  # strings arrive in pieces
    first, last = parts[0], parts[-1]
    assert first["functionCall"]["name"] == "get_weather" and first["functionCall"]["willContinue"] is True
    assert first["thoughtSignature"]
    assert "willContinue" not in last["functionCall"]
    assert all(p["functionCall"].get("willContinue") for p in parts[:-1])
    pieces = [a for p in parts for a in p["functionCall"]["partialArgs"] if a["jsonPath"] == "$.city"]
    assert len(pieces) > 1 and pieces[0]["willContinue"] and "willContinue" not in pieces[-1]
    assert rebuild(parts) == ("get_weather", args)
    whole = fake.vertex_post(G3, prompt, fake.token(), tools=TOOLS, toolConfig=config).json()
    assert model_turn(whole)["parts"][0]["functionCall"]["args"] == args


def test_partial_args_directive_on_the_gemini_backend(fake: Harness) -> None:
    prompt = fake_line(partial_args=True, tool_calls=[{"name": "get_weather", "args": {"city": "Marseille"}}])
    chunks = fake.stream(G3, prompt, tools=TOOLS)
    parts = [p for c in chunks for p in c["candidates"][0]["content"]["parts"]]
    assert rebuild(parts) == ("get_weather", {"city": "Marseille"}) and len(parts) == 3


def test_response_count_must_match_calls(fake: Harness) -> None:
    turn = model_turn(fake.generate(G3, fake_line(tool_steps=1, parallel=2), tools=TOOLS))
    answers = responses_for(turn)
    contents = [user(fake_line(tool_steps=1, parallel=2)), turn, {"role": "user", "parts": answers["parts"][:1]}]
    response = fake.post(G3, contents, tools=TOOLS)
    assert response.status_code == 400
    assert "number of function response parts is equal to the number of function call parts" in response.text


def test_stream_function_call_arguments_needs_gemini3(fake: Harness) -> None:
    config = {"functionCallingConfig": {"streamFunctionCallArguments": True}}
    response = fake.vertex_post("gemini-2.5-flash", "x", fake.token(), tools=TOOLS, toolConfig=config)
    assert response.status_code == 400
    assert "gemini-2.5-flash" in response.json()["error"]["message"]


# --- thought signatures -------------------------------------------------------


def one_step(fake: Harness, model: str = G3) -> list[dict[str, Any]]:
    prompt = user(fake_line(tool_steps=1))
    turn = model_turn(fake.generate(model, [prompt], tools=TOOLS))
    return [prompt, turn, responses_for(turn)]


def with_signature(contents: list[dict[str, Any]], signature: str | None) -> list[dict[str, Any]]:
    part = dict(contents[1]["parts"][0])
    part.pop("thoughtSignature", None)
    if signature is not None:
        part["thoughtSignature"] = signature
    return [contents[0], {"role": "model", "parts": [part]}, contents[2]]


def test_missing_signature_is_rejected(fake: Harness) -> None:
    contents = one_step(fake)
    response = fake.post(G3, with_signature(contents, None), tools=TOOLS)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "Function call `get_weather` in the `1.` content block is missing a `thought_signature`."
    )


def test_corrupted_signature_is_rejected(fake: Harness) -> None:
    contents = one_step(fake)
    signature = contents[1]["parts"][0]["thoughtSignature"]
    assert "+" in signature and "/" in signature and signature.endswith("=") and len(signature) > 80
    flipped = signature[:20] + ("A" if signature[20] != "A" else "B") + signature[21:]
    for changed in (flipped, signature[:-4], "bm90IGEgc2lnbmF0dXJl"):
        response = fake.post(G3, with_signature(contents, changed), tools=TOOLS)
        assert response.status_code == 400
        assert response.json()["error"]["message"] == "Corrupted thought signature."


def test_reencoded_signature_is_accepted_and_counted(fake: Harness) -> None:
    contents = one_step(fake)
    signature = contents[1]["parts"][0]["thoughtSignature"]
    assert fake.post(G3, contents, tools=TOOLS).status_code == 200
    assert fake.stats()["signatures_reencoded"] == 0  # passed through byte for byte
    for changed in (signature.replace("+", "-").replace("/", "_"), signature.rstrip("=")):
        assert fake.post(G3, with_signature(contents, changed), tools=TOOLS).status_code == 200
    assert fake.stats()["signatures_reencoded"] == 2


def test_signature_bound_to_the_call(fake: Harness) -> None:
    contents = one_step(fake)
    part = contents[1]["parts"][0]
    edited = {**part, "functionCall": {**part["functionCall"], "args": {"city": "Elsewhere"}}}
    contents[1] = {"role": "model", "parts": [edited]}
    assert fake.post(G3, contents, tools=TOOLS).json()["error"]["message"] == "Corrupted thought signature."


def test_bypass_values_are_counted(fake: Harness) -> None:
    contents = one_step(fake)
    assert fake.post(G3, with_signature(contents, "skip_thought_signature_validator"), tools=TOOLS).status_code == 200
    assert fake.post(G3, with_signature(contents, "context_engineering_is_the_way_to_go"), tools=TOOLS).status_code == 200
    assert fake.stats()["signature_bypasses"] == 2
    token = fake.token()
    ok = fake.vertex_post(G3, with_signature(contents, "skip_thought_signature_validator"), token, tools=TOOLS)
    assert ok.status_code == 200
    refused = fake.vertex_post(G3, with_signature(contents, "context_engineering_is_the_way_to_go"), token, tools=TOOLS)
    assert refused.status_code == 400 and refused.json()["error"]["message"] == "Corrupted thought signature."
    assert fake.stats()["signature_bypasses"] == 3


def test_older_turns_are_not_checked(fake: Harness) -> None:
    old = with_signature(one_step(fake), None)
    contents = old + [{"role": "model", "parts": [{"text": "done"}]}, user("next question")]
    assert fake.post(G3, contents, tools=TOOLS).status_code == 200


def test_signatures_not_enforced_before_gemini3_or_on_image_model(fake: Harness) -> None:
    contents = with_signature(one_step(fake, "gemini-2.5-flash"), None)
    assert fake.post("gemini-2.5-flash", contents, tools=TOOLS).status_code == 200
    image = with_signature(one_step(fake, "gemini-3-pro-image-preview"), None)
    assert fake.post("gemini-3-pro-image-preview", image, tools=TOOLS).status_code == 200


def test_gemini25_thinking_with_tools_signs_first_part(fake: Harness) -> None:
    parts = model_turn(fake.generate("gemini-2.5-flash", fake_line(tool_steps=1), tools=TOOLS))["parts"]
    assert parts[0]["thoughtSignature"]
    plain = model_turn(fake.generate("gemini-2.0-flash", fake_line(tool_steps=1), tools=TOOLS))["parts"]
    assert "thoughtSignature" not in plain[0]
