"""Responses input items -> Gemini `contents` and `systemInstruction` parts. Pure.

Part of the Responses request translation (translate/responses_request.py):
`ItemsBuilder` walks the items of the stored history and of `input` once.

* `message` items by role: system/developer -> system parts (text only),
  user -> `user` content (`input_text`, `input_image`, `input_file`, leniently
  `input_audio`, through the media policy of `media.py`);
* the model-side items of one answer (`reasoning`, an assistant `message`,
  `function_call`s), read up to the next other item -> one `model` content
  (thought text is never sent back);
* `function_call_output` items -> one `user` content of `functionResponse`
  parts in call order (`chat_request.function_response`, attachments as for
  chat); our own `web_search_call` / `image_generation_call` items are dropped;
* a step's thought signature (docs/design.md#thought-signatures): the item's
  own (`extra_content`), else a reasoning item's `encrypted_content` of the
  same step (on the step's first call, else its text), else the store;
* every function call answered before the conversation goes on (OpenAI's
  "No tool output found for function call ..."), every output for a call.

Also what the gateway looks up before translating (`wanted_keys`) and how it
keeps input items (`stored_items`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from app.errors import InvalidRequest, UnsupportedParameter
from app.schemas.responses import ContentPart, InputItem, ResponsesRequest
from app.translate import media, signatures
from app.translate.capabilities import ModelCapabilities
from app.translate.chat_request import TranslationEnv, attachment, function_arguments, function_response
from app.translate.tools import ToolNames

# Items of our own answers with nothing to send back to Gemini (the search and the image are in the text / parts).
DROPPED_ITEMS = frozenset({"web_search_call", "image_generation_call"})
MODEL_ITEMS = frozenset({"function_call", "reasoning"})  # (and assistant messages)


def missing(param: str) -> InvalidRequest:
    return InvalidRequest(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def _invalid_type(value: str, allowed: Iterable[str], param: str) -> InvalidRequest:
    names = ", ".join(repr(a) for a in allowed)
    return InvalidRequest(f"Invalid value: '{value}'. Supported values are: {names}.", param=param, code="invalid_value")


def _kind(item: InputItem) -> str:
    return item.type or "message"


def _is_model_item(item: InputItem) -> bool:
    kind = _kind(item)
    return kind in MODEL_ITEMS or (kind == "message" and item.role == "assistant")


def _signature_of(item: InputItem) -> str | None:
    return signatures.from_extra_content(item.extra_content)


def _answer_text(item: InputItem, param: str) -> str:
    """The text of a replayed assistant message (`output_text` / `refusal` parts, or a string)."""
    if item.content is None or isinstance(item.content, str):
        return item.content or ""
    texts = []
    for j, part in enumerate(item.content):
        if part.type in ("output_text", "input_text", "text"):
            texts.append(part.text or "")
        elif part.type == "refusal":
            texts.append(part.refusal or "")
        else:
            raise _invalid_type(part.type, ("output_text", "refusal"), f"{param}.content[{j}].type")
    return "".join(texts)


class ItemsBuilder:
    """Walks the items once: contents, system parts, function calls and their results, media settings."""

    def __init__(self, caps: ModelCapabilities, env: TranslationEnv, names: ToolNames) -> None:
        self.caps, self.env, self.names = caps, env, names
        self.system: list[dict[str, Any]] = []
        self.contents: list[dict[str, Any]] = []
        self.resolution: str | None = None
        self.calls: dict[str, tuple[str, int, str | None]] = {}  # call_id -> (name, position in its step, Gemini's id)
        self.open_calls: dict[str, str] = {}  # call_id -> param of its item, still waiting for its output
        self.tool_run: list[tuple[int, dict[str, Any], list[dict[str, Any]]]] = []
        self.step: list[tuple[InputItem, str]] = []  # the model-side items of the answer being read
        self.signatures_passed = 0  # kept by the client
        self.signatures_restored = 0  # from the signature store

    def add(self, item: InputItem, param: str) -> None:
        kind = _kind(item)
        if kind in DROPPED_ITEMS:
            return  # (within an answer: it goes on)
        if kind == "function_call_output":
            self._close_step()
            self._output(item, param)
            return
        if _is_model_item(item):
            if not self.step:
                self._flush_tools()
                self._check_answered()
            self.step.append((item, param))
            return
        self._close_step()
        self._flush_tools()
        self._check_answered()
        if kind != "message":
            raise UnsupportedParameter(
                f"Invalid '{param}.type': input items of type '{kind}' are not supported by this gateway; use "
                "messages, 'function_call', 'function_call_output' and 'reasoning' items.",
                param=f"{param}.type",
            )
        if item.role is None:
            raise missing(f"{param}.role")
        if item.role in ("system", "developer"):
            self.system.extend(self._system_parts(item, param))
        else:
            self._append("user", self._user_parts(item.content, f"{param}.content"))

    def user_text(self, text: str) -> None:
        if text:
            self._append("user", [{"text": text}])

    def finish(self) -> None:
        self._close_step()
        self._flush_tools()
        self._check_answered()

    # -- helpers -------------------------------------------------------------------------------

    def _append(self, role: str, parts: list[dict[str, Any]]) -> None:
        if not parts:
            return
        if self.contents and self.contents[-1]["role"] == role:
            self.contents[-1]["parts"].extend(parts)
        else:
            self.contents.append({"role": role, "parts": parts})

    def _check_answered(self) -> None:
        if self.open_calls:
            call_id = next(iter(self.open_calls))
            raise InvalidRequest(f"No tool output found for function call {call_id}.", param="input")

    def _system_parts(self, item: InputItem, param: str) -> list[dict[str, Any]]:
        if isinstance(item.content, str) or item.content is None:
            return [{"text": item.content}] if item.content else []
        parts = []
        for j, part in enumerate(item.content):
            if part.type not in ("input_text", "text"):
                raise _invalid_type(part.type, ("input_text",), f"{param}.content[{j}].type")
            if part.text:
                parts.append({"text": part.text})
        return parts

    def _user_parts(self, content: str | list[ContentPart] | None, param: str) -> list[dict[str, Any]]:
        if content is None or isinstance(content, str):
            return [{"text": content}] if content else []
        parts = []
        for j, part in enumerate(content):
            p = f"{param}[{j}]"
            if part.type in ("input_text", "text"):
                if part.text is None:
                    raise missing(f"{p}.text")
                if part.text:
                    parts.append({"text": part.text})
            else:
                parts.append(self._media_part(part, p))
        return parts

    def _media_part(self, part: ContentPart, param: str) -> dict[str, Any]:
        if part.type == "input_image":
            if part.image_url:
                out = media.url_part(part.image_url, f"{param}.image_url", self.env.fetched)
            elif part.file_id:
                out = media.file_part(None, part.file_id, None, param)
            else:
                raise missing(f"{param}.image_url")
            level = media.DETAIL_TO_RESOLUTION.get(part.detail or "")
            if level:
                if self.caps.per_part_media_resolution:
                    out["mediaResolution"] = {"level": level}
                elif media.RESOLUTION_RANK[level] > media.RESOLUTION_RANK.get(self.resolution or "", 0):
                    self.resolution = level
            return out
        if part.type == "input_file":
            if part.file_url and not part.file_data:
                hint = media.mime_from_name(part.filename) if part.filename else None
                return media.url_part(part.file_url, f"{param}.file_url", self.env.fetched, hint)
            return media.file_part(part.file_data, part.file_id, part.filename, param)
        if part.type == "input_audio":
            if part.input_audio is None:
                raise missing(f"{param}.input_audio")
            return media.audio_part(part.input_audio.data, part.input_audio.format, f"{param}.input_audio")
        raise _invalid_type(part.type, ("input_text", "input_image", "input_file"), f"{param}.type")

    # -- one answer of the model -----------------------------------------------------------------

    def _close_step(self) -> None:
        """The model-side items read since the last other item -> one `model` content."""
        if not self.step:
            return
        step, self.step = self.step, []
        # A reasoning item's signature belongs to the step's first call, else to its (last) text.
        carried = None
        for item, _ in step:
            if _kind(item) == "reasoning":
                carried = carried or signatures.from_encrypted_content(item.encrypted_content)
        calls = [it for it, _ in step if _kind(it) == "function_call"]
        texts = [(it, p) for it, p in step if _kind(it) == "message"]
        carrier = calls[0] if calls else (texts[-1][0] if texts else None)
        parts: list[dict[str, Any]] = []
        position = 0
        for item, param in step:
            kind = _kind(item)
            if kind == "reasoning":
                continue  # thought text is never sent back
            own = _signature_of(item) or (carried if item is carrier else None)
            if own:
                self.signatures_passed += 1
            if kind == "message":
                text = _answer_text(item, param)
                if not text:
                    continue
                part: dict[str, Any] = {"text": text}
                sig = own or self._stored(signatures.text_key(text))
            else:
                part, sig = self._call(item, param, position, own)
                position += 1
            if sig:
                part["thoughtSignature"] = sig
            parts.append(part)
        self._append("model", parts)

    def _stored(self, key: str) -> str | None:
        sig = self.env.signatures.get(key)
        if sig:
            self.signatures_restored += 1
        return sig

    def _call(self, item: InputItem, param: str, position: int, own: str | None) -> tuple[dict[str, Any], str | None]:
        if not item.call_id:
            raise missing(f"{param}.call_id")
        if not item.name:
            raise missing(f"{param}.name")
        if item.call_id in self.calls:
            raise InvalidRequest(
                f"Invalid '{param}.call_id': the call id '{item.call_id}' is used by an earlier function call.",
                param=f"{param}.call_id", code="invalid_value",
            )  # fmt: skip
        args = function_arguments(item.arguments, f"{param}.arguments")
        part: dict[str, Any] = {"functionCall": {"name": self.names.gemini(item.name), "args": args}}
        gemini_id = self.env.signatures.get(signatures.call_id_key(item.call_id))
        if gemini_id:
            part["functionCall"]["id"] = gemini_id
        self.calls[item.call_id] = (item.name, position, gemini_id)
        self.open_calls[item.call_id] = param
        return part, own or self._stored(item.call_id)

    # -- function results ------------------------------------------------------------------------

    def _output(self, item: InputItem, param: str) -> None:
        if not item.call_id:
            raise missing(f"{param}.call_id")
        known = self.calls.get(item.call_id)
        if known is None or item.call_id not in self.open_calls:
            raise InvalidRequest(
                f"No tool call found for function call output with call_id {item.call_id}"
                + (" (it already has an output)." if known else "."),
                param=f"{param}.call_id",
            )
        del self.open_calls[item.call_id]
        name, position, gemini_id = known
        text, attached = self._output_content(item.output, f"{param}.output")
        fr: dict[str, Any] = {
            "name": self.names.gemini(name),
            "response": function_response(text, attached, self.caps.multimodal_function_response),
        }
        if gemini_id:
            fr["id"] = gemini_id
        siblings: list[dict[str, Any]] = []
        if attached:
            if self.caps.multimodal_function_response:
                fr["parts"] = attached
            else:
                siblings = attached
        self.tool_run.append((position, {"functionResponse": fr}, siblings))

    def _output_content(self, output: str | list[ContentPart] | None, param: str) -> tuple[str, list[dict[str, Any]]]:
        if output is None:
            raise missing(param)
        if isinstance(output, str):
            return output, []
        texts: list[str] = []
        attached: list[dict[str, Any]] = []
        for j, part in enumerate(output):
            if part.type in ("input_text", "output_text", "text"):
                texts.append(part.text or "")
            else:
                attached.append(attachment(self._media_part(part, f"{param}[{j}]"), len(attached) + 1))
        return "\n".join(texts), attached

    def _flush_tools(self) -> None:
        if not self.tool_run:
            return
        run = sorted(self.tool_run, key=lambda entry: entry[0])
        self.tool_run = []
        parts = [fr for _, fr, _ in run]
        for _, _, siblings in run:
            parts.extend(siblings)
        self._append("user", parts)


def text_message(text: str) -> dict[str, Any]:
    """The one user message a string `input` stands for, as plain data."""
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def input_items(req: ResponsesRequest) -> list[InputItem]:
    """`input` as items (a string is one user message)."""
    if req.input is None:
        return []
    if isinstance(req.input, str):
        return [InputItem.model_validate(text_message(req.input))]  # (half the cost of building the models one by one)
    return list(req.input)


def wanted_keys(items: Iterable[InputItem]) -> list[str]:
    """Signature-store keys of what the items' model steps may need: signatures the client did not keep, Gemini ids."""
    keys: list[str] = []
    for item in items:
        kind = _kind(item)
        if kind == "function_call" and item.call_id:
            if _signature_of(item) is None:
                keys.append(item.call_id)
            keys.append(signatures.call_id_key(item.call_id))
        elif kind == "message" and item.role == "assistant" and _signature_of(item) is None:
            try:
                text = _answer_text(item, "")
            except InvalidRequest:
                continue  # (refused during translation, with the right parameter)
            if text:
                keys.append(signatures.text_key(text))
    return keys


_ID_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}


def stored_input(req: ResponsesRequest, items: list[InputItem], new_id: Callable[[str], str]) -> list[dict[str, Any]]:
    """`stored_items(items, new_id)` of the request's own items (`input_items(req)`); a string input's one message as
    data (`items` unused): the same dict, without making its model (~6 us) and dumping it (~5 us)."""
    if isinstance(req.input, str):
        return [{**text_message(req.input), "status": "completed", "id": new_id("msg")}]
    return stored_items(items, new_id)


def stored_items(items: Iterable[InputItem], new_id: Callable[[str], str]) -> list[dict[str, Any]]:
    """Input items as the store keeps them and `input_items` lists them: typed, with ids, message content as parts."""
    out = []
    for item in items:
        data = item.model_dump(by_alias=True, exclude_none=True)
        kind = _kind(item)
        data["type"] = kind
        if kind == "message" and not isinstance(item.content, list):
            part = "output_text" if item.role == "assistant" else "input_text"
            data["content"] = [{"type": part, "text": item.content or ""}]
        if kind in ("message", "function_call_output"):
            data.setdefault("status", "completed")
        data.setdefault("id", new_id(_ID_PREFIX.get(kind, "item")))
        out.append(data)
    return out
