"""The response store of the Responses API (gateway/responses_store.py) and what it keeps (translate/responses_items.py)."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import asdict
from typing import Any

import orjson
import pytest

from app.gateway.responses_store import MemoryResponseStore, ResponseGone, StoredResponse, conversation, owner_of
from app.pipeline.context import ANONYMOUS, Principal
from app.schemas.responses import ResponsesRequest
from app.translate.responses_items import input_items, stored_input, stored_items, wanted_keys
from app.translate.signatures import text_key


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def record(rid: str, owner: str = "key:a", previous: str | None = None, text: str = "x") -> StoredResponse:
    output = [{"id": f"msg_{rid}", "type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}]
    inputs = [{"id": f"in_{rid}", "type": "message", "role": "user", "content": [{"type": "input_text", "text": rid}]}]
    return StoredResponse(rid, owner, {"id": rid, "status": "completed", "output": output}, inputs, previous)


def size(r: StoredResponse) -> int:
    fields = asdict(r)
    del fields["response_json"]  # (the response serialized already, when the caller has it: not stored apart)
    assert orjson.loads(r.to_json()) == fields
    assert StoredResponse(**{**fields, "response_json": orjson.dumps(r.response)}).to_json() == r.to_json()
    return len(r.to_json())


def test_get_returns_a_copy_for_its_owner_only() -> None:
    store = MemoryResponseStore()
    run(store.put(record("r1")))
    got = run(store.get("r1", "key:a"))
    assert got == record("r1")
    got.response["output"].clear()
    assert run(store.get("r1", "key:a")) == record("r1")  # (kept as JSON: nobody mutates it)
    assert run(store.get("r1", "key:b")) is None
    assert run(store.delete("r1", "key:b")) is False
    assert run(store.delete("r1", "key:a")) is True
    assert run(store.get("r1", "key:a")) is None and len(store) == 0 and store.size_bytes == 0


def test_bounded_in_count_least_recently_used_first_out() -> None:
    store = MemoryResponseStore(max_items=3)
    for rid in ("r1", "r2", "r3"):
        run(store.put(record(rid)))
    run(store.get("r1", "key:a"))  # r1 used: r2 is now the oldest
    run(store.put(record("r4")))
    assert [rid for rid in ("r1", "r2", "r3", "r4") if run(store.get(rid, "key:a"))] == ["r1", "r3", "r4"]


def test_bounded_in_bytes() -> None:
    one = size(record("r1", text="a" * 1000))
    store = MemoryResponseStore(max_items=100, max_bytes=one * 2 + 10)
    for rid in ("r1", "r2", "r3"):
        run(store.put(record(rid, text="a" * 1000)))
    assert len(store) == 2 and store.size_bytes <= one * 2 + 10
    assert run(store.get("r1", "key:a")) is None
    run(store.put(record("big", text="a" * (one * 3))))  # larger than the whole store: not kept, nothing evicted
    assert run(store.get("big", "key:a")) is None and len(store) == 2


def test_replacing_a_record_keeps_the_byte_count_right() -> None:
    store = MemoryResponseStore()
    run(store.put(record("r1", text="short")))
    run(store.put(record("r1", text="a much longer text than before")))
    assert len(store) == 1 and store.size_bytes == size(record("r1", text="a much longer text than before"))


@pytest.mark.parametrize("limits", [(0, 1000), (10, 0)])
def test_zero_keeps_nothing(limits: tuple[int, int]) -> None:
    store = MemoryResponseStore(*limits)
    run(store.put(record("r1")))
    assert run(store.get("r1", "key:a")) is None


def test_conversation_walks_the_chain_oldest_first() -> None:
    store = MemoryResponseStore()
    run(store.put(record("r1")))
    run(store.put(record("r2", previous="r1")))
    run(store.put(record("r3", previous="r2")))
    items = run(conversation(store, "r3", "key:a"))
    assert [i["id"] for i in items] == ["in_r1", "msg_r1", "in_r2", "msg_r2", "in_r3", "msg_r3"]
    with pytest.raises(ResponseGone) as gone:
        run(conversation(store, "r3", "key:b"))
    assert gone.value.response_id == "r3"
    run(store.delete("r2", "key:a"))
    with pytest.raises(ResponseGone) as gone:  # a missing link: the conversation is gone, and which link says so
        run(conversation(store, "r3", "key:a"))
    assert gone.value.response_id == "r2"


def test_conversation_stops_at_a_cycle() -> None:
    store = MemoryResponseStore()
    run(store.put(record("r1", previous="r2")))
    run(store.put(record("r2", previous="r1")))
    assert [i["id"] for i in run(conversation(store, "r2", "key:a"))] == ["in_r1", "msg_r1", "in_r2", "msg_r2"]


def test_owner_of() -> None:
    assert owner_of(ANONYMOUS) == "anonymous"
    assert owner_of(Principal(key_id="key#2", name="bob")) == "key:key#2"
    assert owner_of(Principal(name="team-x")) == "name:team-x"
    byok = owner_of(Principal(google_key="AIza-secret"))
    assert byok.startswith("byok:") and "secret" not in byok and byok != owner_of(Principal(google_key="AIza-other"))


def test_stored_items_are_typed_with_ids_and_parts() -> None:
    counter = itertools.count(1)
    req = ResponsesRequest.model_validate({"model": "m", "input": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"},
        {"type": "message", "id": "msg_mine", "role": "user", "content": [{"type": "input_text", "text": "Kept"}]},
    ]})  # fmt: skip
    items = stored_items(input_items(req), lambda prefix: f"{prefix}_{next(counter)}")
    assert items == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}], "status": "completed", "id": "msg_1"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello"}], "status": "completed",
         "id": "msg_2"},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}", "id": "fc_3"},
        {"type": "function_call_output", "call_id": "c1", "output": "ok", "status": "completed", "id": "fco_4"},
        {"type": "message", "id": "msg_mine", "role": "user", "content": [{"type": "input_text", "text": "Kept"}], "status": "completed"},
    ]  # fmt: skip
    string = stored_items(input_items(ResponsesRequest.model_validate({"model": "m", "input": "Just text"})), lambda p: p + "_1")
    assert string == [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Just text"}],
                       "status": "completed", "id": "msg_1"}]  # fmt: skip


@pytest.mark.parametrize("given", ["Just text", "", "quote \" and \u00e9", [{"role": "user", "content": "Hi"}]])
def test_a_string_input_is_stored_as_the_generic_path_stores_its_message(given: Any) -> None:
    req = ResponsesRequest.model_validate({"model": "m", "input": given})
    items = input_items(req)
    fast = stored_input(req, [] if isinstance(given, str) else items, lambda prefix: f"{prefix}_1")  # (as `_answer`)
    assert orjson.dumps(fast) == orjson.dumps(stored_items(items, lambda prefix: f"{prefix}_1"))  # the same bytes, in order


def test_wanted_keys_ask_only_for_what_the_client_did_not_keep() -> None:
    req = ResponsesRequest.model_validate({"model": "m", "input": [
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{}", "extra_content": {"google": {"thought_signature": "S"}}},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Answer"}]},
        {"role": "assistant", "content": "Signed", "extra_content": {"google": {"thought_signature": "T"}}},
        {"role": "user", "content": "Hi"},
    ]})  # fmt: skip
    assert wanted_keys(input_items(req)) == ["c1", "gid:c1", "gid:c2", text_key("Answer")]
