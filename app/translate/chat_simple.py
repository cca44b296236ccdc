"""The common chat request, translated without the request model: the chat path's fast lane. Pure.

Most chat requests are a text conversation: system / developer / user / assistant messages whose content is a
string, and a few sampling parameters. For these, validating the pydantic request model and walking the general
translator (`to_gemini`) cost about a third of the gateway's own CPU per request (bench/README.md, "Session 9").
`simple_chat(data)` takes the parsed JSON body and recognises that shape strictly: every field is one of `FIELDS`,
of exactly the JSON type and within the range the request model allows; every message holds only `role`, a
non-empty string `content` and a string `name`. Anything else (another field, a list of parts, a tool call, a value
the model would coerce or refuse, `extra_body`) gives None, and the endpoint takes the general path, which also
words the errors. A `SimpleChat` translates to exactly the body and options `to_gemini` gives for the same request
validated (tests/translate/test_tr_chat_simple.py checks that on generated requests): the rules are the general
path's (docs/parameters.md), for the subset of the request that this shape can hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.schemas.openai import METADATA_KEY_CHARS, METADATA_PAIRS, METADATA_VALUE_CHARS
from app.translate import signatures
from app.translate.capabilities import ModelCapabilities
from app.translate.chat_request import GeminiCall, ResponseOptions, TranslationEnv, finish_body

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "model"}
MESSAGE_FIELDS = frozenset({"role", "content", "name"})


def _int(value: Any, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _number(value: Any, low: float, high: float) -> bool:
    return type(value) in (int, float) and low <= value <= high


def _text(value: Any) -> bool:
    return type(value) is str


def _flag(value: Any) -> bool:
    return value is None or type(value) is bool


def _stop(value: Any) -> bool:
    return type(value) is str or (type(value) is list and all(type(s) is str for s in value))


def _metadata(value: Any) -> bool:  # (over OpenAI's limits: the general path says which, schemas/openai.py)
    return (
        type(value) is dict
        and len(value) <= METADATA_PAIRS
        and all(type(v) is str and len(v) <= METADATA_VALUE_CHARS and len(k) <= METADATA_KEY_CHARS for k, v in value.items())
    )


def _stream_options(value: Any) -> bool:
    return type(value) is dict and value.keys() <= {"include_usage"} and _flag(value.get("include_usage"))


_BIG = 2**63
# field -> the check its value must pass (None is always accepted: the model's default for all of these)
FIELDS = {
    "model": lambda v: type(v) is str and v != "",
    "messages": lambda v: type(v) is list and v != [],
    "stream": _flag,
    "stream_options": _stream_options,
    "max_tokens": lambda v: _int(v, 1, _BIG),
    "max_completion_tokens": lambda v: _int(v, 1, _BIG),
    "temperature": lambda v: _number(v, 0, 2),
    "top_p": lambda v: _number(v, 0, 1),
    "n": lambda v: _int(v, 1, 128),
    "stop": _stop,
    "seed": lambda v: _int(v, -_BIG, _BIG - 1),
    "presence_penalty": lambda v: _number(v, -2, 2),
    "frequency_penalty": lambda v: _number(v, -2, 2),
    "logprobs": lambda v: v is False,  # (true asks for logprobs: the general path)
    "user": _text,
    "store": _flag,
    "service_tier": _text,
    "safety_identifier": _text,
    "metadata": _metadata,
}
# OpenAI parameter -> generationConfig key and how its value goes there (a number: as the model's float; a penalty:
# only when not 0; n: only when not 1; stop: a list, when not empty), in `_generation_config`'s order
_GENERATION = (
    ("temperature", "temperature", "number"),
    ("top_p", "topP", "number"),
    ("n", "candidateCount", "n"),
    ("stop", "stopSequences", "stop"),
    ("seed", "seed", "int"),
    ("presence_penalty", "presencePenalty", "penalty"),
    ("frequency_penalty", "frequencyPenalty", "penalty"),
)


@dataclass(slots=True)
class SimpleChat:
    """A recognised simple request: what the endpoint reads before translating, and the translation."""

    model: str
    stream: bool
    max_output: int | None
    messages: list[tuple[str, str]]  # (Gemini role or "system", text)
    data: dict[str, Any]

    def wanted_keys(self) -> list[str]:
        """Store keys of the thought signatures of the assistant's texts (Gemini 3 text parts), as `wanted_keys`."""
        return [signatures.text_key(text) for role, text in self.messages if role == "model"]

    def to_gemini(self, caps: ModelCapabilities, env: TranslationEnv) -> GeminiCall:
        """The same `GeminiCall` as `to_gemini(ChatCompletionRequest.model_validate(data), caps, env)`."""
        system: list[dict[str, Any]] = []
        contents: list[dict[str, Any]] = []
        restored = 0
        found = env.signatures
        last: dict[str, Any] | None = None
        for role, text in self.messages:
            if role == "system":
                system.append({"text": text})
                continue
            part: dict[str, Any] = {"text": text}
            if role == "model" and found:
                sig = found.get(signatures.text_key(text))
                if sig:
                    part["thoughtSignature"] = sig
                    restored += 1
            if last is not None and last["role"] == role:
                last["parts"].append(part)
            else:
                last = {"role": role, "parts": [part]}
                contents.append(last)
        body: dict[str, Any] = {"contents": contents}
        if system:
            body["systemInstruction"] = {"parts": system}
        data = self.data
        gen: dict[str, Any] = {}
        if self.max_output is not None:
            gen["maxOutputTokens"] = self.max_output
        for param, key, kind in _GENERATION:  # (in `_generation_config`'s order: the same JSON, byte for byte)
            value = data.get(param)
            if value is None:
                continue
            if kind == "number":
                gen[key] = float(value)
            elif kind == "penalty":
                if value:
                    gen[key] = float(value)
            elif kind == "n":
                if value != 1:
                    gen[key] = value
            elif kind == "stop":
                if value:
                    gen[key] = [value] if type(value) is str else list(value)
            else:
                gen[key] = value
        finish_body(body, gen, caps, env, data.get("metadata"), data.get("user"))
        options = ResponseOptions(
            model=self.model,
            images=env.images,
            include_usage=self.stream and bool((data.get("stream_options") or {}).get("include_usage")),
        )
        return GeminiCall(body, self.stream, options, 0, 0, restored, [])


def simple_chat(data: dict[str, Any]) -> SimpleChat | None:
    """`data` (a parsed chat request body) as a `SimpleChat`, or None: the general path's to take."""
    for name, value in data.items():
        check = FIELDS.get(name)
        if check is None or (value is not None and not check(value)):
            return None
    model = data.get("model")
    raw = data.get("messages")
    if model is None or raw is None:
        return None
    stream = data.get("stream") is True
    if data.get("stream_options") is not None and not stream:
        return None
    messages = []
    answered = False  # a user or assistant message (a request of system messages alone is a 400)
    for msg in raw:
        if type(msg) is not dict or not msg.keys() <= MESSAGE_FIELDS:
            return None
        asked = msg.get("role")
        role = ROLES.get(asked) if type(asked) is str else None
        text = msg.get("content")
        named = msg.get("name")
        if role is None or type(text) is not str or not text or (named is not None and type(named) is not str):
            return None
        answered = answered or role != "system"
        messages.append((role, text))
    if not answered:
        return None
    max_output = data.get("max_completion_tokens") or data.get("max_tokens")
    return SimpleChat(model, stream, max_output, messages, data)
