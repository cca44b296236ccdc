"""The chat path's fast lane (translate/chat_simple.py): the common request shape, translated without the request model.

Properties: whenever `simple_chat` takes a body, the request model accepts the same body and `to_gemini` gives exactly
the same call for it (body, options, signature counts) on every model and upstream kind; it takes the bodies real
clients send (so it is really used); it declines everything else, leaving it to the general path.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.schemas.openai import ChatCompletionRequest
from app.translate import signatures
from app.translate.capabilities import ModelCapabilities
from app.translate.chat_request import TranslationEnv, to_gemini
from app.translate.chat_simple import FIELDS, simple_chat

CAPS = (
    ModelCapabilities(),
    ModelCapabilities(signatures_required=True, drop_params=frozenset({"temperature", "seed", "max_tokens", "stop"})),
)

# Values of every JSON type, valid and invalid for the fields the lane knows (and for fields it does not).
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 300), st.sampled_from([0, 1, 2, 128, 129, 2**63, -(2**63) - 1]),
    st.floats(-3, 3, allow_nan=False), st.sampled_from([0.0, 1.0, 2.0, 2.5, -2.0]), st.text(max_size=5),
)
values = st.one_of(
    scalars, st.lists(st.one_of(st.text(max_size=4), st.integers(0, 3)), max_size=3),
    st.dictionaries(st.sampled_from(["include_usage", "x", "team"]), scalars, max_size=2),
)
messages = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "model", 3]),
        "content": st.one_of(st.sampled_from(["Hi", "again", "", "<t>x</t>y"]), st.text(max_size=6), st.none(),
                             st.just([{"type": "text", "text": "part"}])),
    },
    optional={"name": st.one_of(st.text(max_size=3), st.none(), st.integers()), "tool_calls": st.just([])},
)
field_names = st.sampled_from([*FIELDS, "tools", "extra_body", "reasoning_effort", "top_k", "unknown"])
# Mostly valid bodies: every field the lane knows, with values at and near the edges of what the model allows.
num = st.one_of(st.integers(-3, 3), st.floats(-2.5, 2.5, allow_nan=False), st.sampled_from([0, 1, 2, 0.0, 1.0, 2.0]))
valid_values = {
    "stream": st.one_of(st.booleans(), st.none()),
    "stream_options": st.one_of(st.none(), st.just({}), st.fixed_dictionaries({"include_usage": st.one_of(st.booleans(), st.none())})),
    "max_tokens": st.one_of(st.integers(0, 5000), st.none()),
    "max_completion_tokens": st.one_of(st.integers(0, 5000), st.none()),
    "temperature": num, "top_p": num, "presence_penalty": num, "frequency_penalty": num,
    "n": st.one_of(st.integers(0, 130), st.none()),
    "stop": st.one_of(st.text(max_size=3), st.lists(st.text(max_size=3), max_size=3), st.none()),
    "seed": st.one_of(st.integers(), st.none()),
    "logprobs": st.one_of(st.just(False), st.none()),
    "user": st.text(max_size=8), "store": st.booleans(), "service_tier": st.just("auto"), "safety_identifier": st.just("x"),
    "metadata": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
}
good_messages = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant"]),
     "content": st.one_of(st.sampled_from(["Hi", "again", "Hello!"]), st.text(min_size=1, max_size=6))},
    optional={"name": st.text(max_size=3)},
)
good_bodies = st.builds(
    lambda model, msgs, rest: {"model": model, "messages": msgs, **rest},
    st.sampled_from(["gemini-2.5-flash", "gemini-3-pro-preview"]),
    st.lists(good_messages, min_size=1, max_size=5),
    st.fixed_dictionaries({}, optional=valid_values),
)
wild_bodies = st.builds(
    lambda model, msgs, rest: {"model": model, "messages": msgs, **rest},
    st.one_of(st.just("gemini-2.5-flash"), scalars),
    st.one_of(st.lists(messages, max_size=5), scalars),
    st.dictionaries(field_names.filter(lambda n: n not in ("model", "messages")), values, max_size=6),
)
bodies = st.one_of(good_bodies, wild_bodies)


def envs(body: dict[str, Any]) -> list[TranslationEnv]:
    """No look-ups; and a Vertex upstream where every other assistant text has a stored signature."""
    texts = [m.get("content") for m in body.get("messages") or () if isinstance(m, dict) and m.get("role") == "assistant"]
    found = {signatures.text_key(t): f"sig{i}" for i, t in enumerate(texts) if isinstance(t, str) and i % 2 == 0}
    return [TranslationEnv(), TranslationEnv(signatures=found, vertex=True, images="both")]


def check_same(body: dict[str, Any]) -> bool:
    """The lane's translation equals the general path's (True if the lane took the body)."""
    simple = simple_chat(body)
    if simple is None:
        return False
    req = ChatCompletionRequest.model_validate(body)  # must not raise: the lane takes only valid requests
    assert simple.model == req.model
    assert simple.stream == bool(req.stream)
    assert simple.max_output == (req.max_completion_tokens or req.max_tokens)
    assert simple.wanted_keys() == signatures.wanted_keys(req.messages)
    for caps in CAPS:
        for env in envs(body):
            fast, general = simple.to_gemini(caps, env), to_gemini(req, caps, env)
            assert fast == general
            assert orjson.dumps(fast.body) == orjson.dumps(general.body)  # the same bytes upstream, key order included
    return True


@settings(max_examples=1500, deadline=None)
@given(bodies)
def test_the_lane_translates_as_the_general_path(body: dict[str, Any]) -> None:
    check_same(body)


CLIENT_BODIES = [
    # openai-python / openai-node: only what the caller gave
    {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "Hello"}]},
    {"model": "gemini-2.5-flash", "messages": [{"role": "system", "content": "You are terse."},
                                               {"role": "user", "content": "Say hello."}], "max_tokens": 256},
    # a conversation, streamed with usage
    {"model": "gemini-3-pro-preview", "stream": True, "stream_options": {"include_usage": True},
     "messages": [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "And now?"}]},
    # LangChain's ChatOpenAI, LlamaIndex: defaults sent explicitly
    {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "Hi", "name": "ada"}], "n": 1,
     "temperature": 0.7, "stream": False, "logprobs": False},
    {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0, "top_p": 1,
     "max_completion_tokens": 64, "seed": 7, "stop": ["\n\n"], "presence_penalty": 0.5, "frequency_penalty": 0,
     "user": "u-1", "metadata": {"app": "x"}, "store": False, "service_tier": "auto", "safety_identifier": "h"},
]


@pytest.mark.parametrize("body", CLIENT_BODIES)
def test_the_bodies_clients_send_take_the_lane(body: dict[str, Any]) -> None:
    assert check_same(body)


DECLINED = [
    {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]},  # parts
    {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "tools": []},  # a field the lane does not know
    {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "extra_body": {"google": {}}},
    {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": True},  # a bool is no int here
    {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10.0},  # the model would coerce
    {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "temperature": 2.5},  # out of range: a 400
    {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "stream_options": {"include_usage": True}},
    {"model": "m", "messages": [{"role": "system", "content": "Only rules"}]},  # no conversation: a 400
    {"model": "m", "messages": [{"role": "assistant", "content": "x", "tool_calls": []}]},
    {"model": "m", "messages": [{"role": "tool", "content": "x"}]},
    {"model": "m", "messages": [{"role": "user", "content": ""}]},
    {"model": "m", "messages": [{"role": ["user"], "content": "Hi"}]},
    {"model": "", "messages": [{"role": "user", "content": "Hi"}]},
    {"messages": [{"role": "user", "content": "Hi"}]},
    {"model": "m", "messages": []},
]


@pytest.mark.parametrize("body", DECLINED)
def test_everything_else_takes_the_general_path(body: dict[str, Any]) -> None:
    assert simple_chat(body) is None


def test_signatures_of_assistant_texts_are_restored() -> None:
    body = CLIENT_BODIES[2]
    simple = simple_chat(body)
    assert simple is not None
    env = TranslationEnv(signatures={signatures.text_key("Hello!"): "c2ln"})
    call = simple.to_gemini(ModelCapabilities(signatures_required=True), env)
    assert call.body["contents"][1] == {"role": "model", "parts": [{"text": "Hello!", "thoughtSignature": "c2ln"}]}
    assert call.signatures_restored == 1
    assert call.options.include_usage
