"""Agent loops through `/v1/responses` against Gemini 3 (issue 10, "Responses": thought signatures).

The fake Gemini enforces Gemini 3's rule (the first functionCall of every
model step in the current turn carries the signature it issued, or a 400).
Each loop runs 4 tool steps with 2 parallel calls, then the final answer, and
must see zero 400s, no bypass value (fake and gateway counters) and no
re-encoded signature. The ways a client carries the conversation:

* `previous_response_id`: only the function outputs are sent; the history
  (with its signatures) comes from the gateway's response store;
* the full input list, keeping the output items as the SDK returns them
  (`extra_content` kept), through a gateway whose signature store is off, so
  the signatures can only have come back from the client;
* the full input list rebuilt from call_id / name / arguments only: the
  signature store restores every signature;
* the full input list with `store: false`, keeping only the reasoning items'
  `encrypted_content` (`include: ["reasoning.encrypted_content"]`), again
  through the gateway without a signature store.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gateway_harness import signature_bypasses

from .feat_support import CALL_ID, recorded_generate

MODELS = ["gemini-3-pro-preview", "gemini-3-flash-preview"]
STEPS = 4
WEATHER = {
    "type": "function", "name": "get_weather", "description": "Current weather in a city.", "strict": True,
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False},
}  # fmt: skip
CLOCK = {
    "type": "function", "name": "get_time", "description": "Local time.",
    "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]},
}  # fmt: skip
TOOLS = [WEATHER, CLOCK]
FIRST = {"role": "user", "content": 'Plan my trip.\n#fake {"tool_steps": 4, "parallel": 2}'}


def output_for(call: Any, step: int) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call.call_id, "output": json.dumps({"step": step, "tool": call.name})}


def ask(client: Any, stream: bool, **kwargs: Any) -> Any:
    if not stream:
        return client.responses.create(tools=TOOLS, **kwargs)
    with client.responses.stream(tools=TOOLS, **kwargs) as s:
        return s.get_final_response()


def check_step(response: Any, step: int, seen: set[str]) -> list[Any]:
    calls = [o for o in response.output if o.type == "function_call"]
    assert response.status == "completed"
    assert [c.name for c in calls] == ["get_weather", "get_time"], f"step {step}"
    for call in calls:
        assert CALL_ID.match(call.call_id) and call.call_id not in seen
        seen.add(call.call_id)
        assert isinstance(json.loads(call.arguments), dict)
    extra = [(c.model_extra or {}).get("extra_content") for c in calls]
    assert extra[0] and extra[0]["google"]["thought_signature"], "the first call of a step carries its signature"
    assert extra[1] is None
    return calls


def check_final(response: Any, fake: Any, server: Any, bypasses_before: int) -> None:
    assert [o.type for o in response.output if o.type != "reasoning"] == ["message"]  # (+ its signature, if asked)
    assert response.output_text.startswith(f"Function results after {STEPS} round(s): ")
    stats = fake.stats()
    assert stats["errors_returned"] == 0 and stats["signature_bypasses"] == 0 and stats["signatures_reencoded"] == 0
    assert signature_bypasses(server) == bypasses_before  # (the gateway's counter lives as long as the session)
    assert len(recorded_generate(fake)) == STEPS + 1


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize("model", MODELS)
def test_loop_with_previous_response_id(client, gateway, fake, model, stream):
    before = signature_bypasses(gateway)
    seen: set[str] = set()
    response = ask(client, stream, model=model, input=[FIRST])
    for step in range(STEPS):
        calls = check_step(response, step, seen)
        response = ask(client, stream, model=model, previous_response_id=response.id, input=[output_for(c, step) for c in calls])
    check_final(response, fake, gateway, before)
    last = recorded_generate(fake)[-1]["body"]["contents"]
    assert [c["role"] for c in last] == ["user"] + ["model", "user"] * STEPS


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize("model", MODELS)
def test_loop_with_the_full_input_list_kept(storeless_client, storeless_gateway, fake, model, stream):
    before = signature_bypasses(storeless_gateway)
    seen: set[str] = set()
    items: list[Any] = [FIRST]
    for step in range(STEPS + 1):
        response = ask(storeless_client, stream, model=model, input=items, store=False)
        if step == STEPS:
            break
        calls = check_step(response, step, seen)
        items += [*response.output, *(output_for(c, step) for c in calls)]  # SDK objects, as returned
    check_final(response, fake, storeless_gateway, before)


@pytest.mark.parametrize("model", MODELS)
def test_loop_with_the_full_input_list_rebuilt(client, gateway, fake, model):
    """Items rebuilt from call_id / name / arguments (no extra fields): the signature store restores them."""
    before = signature_bypasses(gateway)
    seen: set[str] = set()
    items: list[Any] = [FIRST]
    for step in range(STEPS + 1):
        response = ask(client, False, model=model, input=items)
        if step == STEPS:
            break
        calls = check_step(response, step, seen)
        items += [{"type": "function_call", "call_id": c.call_id, "name": c.name, "arguments": c.arguments} for c in calls]
        items += [output_for(c, step) for c in calls]
    check_final(response, fake, gateway, before)


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_stateless_loop_carries_signatures_in_reasoning_items(storeless_client, storeless_gateway, fake, stream):
    """`store: false` + `include: ["reasoning.encrypted_content"]`, items rebuilt keeping only the reasoning items' blobs."""
    before = signature_bypasses(storeless_gateway)
    seen: set[str] = set()
    items: list[Any] = [FIRST]
    for step in range(STEPS + 1):
        response = ask(storeless_client, stream, model=MODELS[0], input=items, store=False, include=["reasoning.encrypted_content"])
        if step == STEPS:
            break
        calls = check_step(response, step, seen)
        [reasoning] = [o for o in response.output if o.type == "reasoning"]
        assert reasoning.encrypted_content
        items.append({"type": "reasoning", "id": reasoning.id, "summary": [], "encrypted_content": reasoning.encrypted_content})
        items += [{"type": "function_call", "call_id": c.call_id, "name": c.name, "arguments": c.arguments} for c in calls]
        items += [output_for(c, step) for c in calls]
    check_final(response, fake, storeless_gateway, before)


def test_two_user_turns_with_previous_response_id(client, gateway, fake):
    """A second user turn after a finished tool loop: earlier steps are history, the new ones are checked."""
    before = signature_bypasses(gateway)
    seen: set[str] = set()
    response = ask(client, False, model=MODELS[1], input=[FIRST])
    for step in range(STEPS):
        calls = check_step(response, step, seen)
        response = ask(client, False, model=MODELS[1], previous_response_id=response.id, input=[output_for(c, step) for c in calls])
    assert response.output_text.startswith("Function results")
    second = {"role": "user", "content": 'Now the way back.\n#fake {"tool_steps": 1, "parallel": 2}'}
    response = ask(client, False, model=MODELS[1], previous_response_id=response.id, input=[second])
    calls = check_step(response, 0, seen)
    response = ask(client, False, model=MODELS[1], previous_response_id=response.id, input=[output_for(c, 9) for c in calls])
    assert response.output_text.startswith("Function results after 1 round(s)")
    assert fake.stats()["errors_returned"] == 0 and signature_bypasses(gateway) == before


def test_store_false_leaves_no_signature_behind(client, gateway, fake):
    """`store: false` keeps nothing: the call's signature is not in the signature store (the client carries it)."""
    response = ask(client, False, model=MODELS[0], input=[FIRST], store=False)
    calls = check_step(response, 0, set())
    store = gateway.state.signatures
    assert asyncio.run(store.get_many([c.call_id for c in calls])) == {}
    kept = ask(client, False, model=MODELS[0], input=[FIRST])
    kept_calls = check_step(kept, 0, set())
    assert list(asyncio.run(store.get_many([kept_calls[0].call_id]))) == [kept_calls[0].call_id]
