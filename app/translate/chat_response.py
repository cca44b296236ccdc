"""Gemini `GenerateContentResponse` -> OpenAI `chat.completion`. Pure.

Also holds the pieces the stream translator shares: usage, logprobs, grounding
annotations, images, tool calls and the response context. Rules:
docs/gemini-facts.md#responses (#finish-reasons, #usage) and docs/design.md#endings,
docs/design.md#thinking.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.errors import ContentFiltered, RetryableAnswer
from app.translate import signatures
from app.translate.chat_request import ResponseOptions
from app.translate.tables import BROKEN_TOOL_CALL_FINISHES, gemini_finish_reason_to_openai


@dataclass
class ResponseContext:
    """One answer's identity (injected, so golden outputs are deterministic) and options."""

    options: ResponseOptions
    id: str
    created: int
    new_call_id: Callable[[], str]
    signatures: dict[str, str] = field(default_factory=dict)  # out: store key -> signature to remember


class BrokenToolCall(RetryableAnswer):
    """Gemini ended with MALFORMED_FUNCTION_CALL / UNEXPECTED_TOOL_CALL (retried before this is raised)."""

    status = 502
    type = "server_error"
    code = "malformed_function_call"

    def __init__(self, reason: str, detail: str | None = None) -> None:
        text = f"The model produced an invalid function call ({reason})"
        super().__init__(f"{text}: {detail}" if detail else f"{text}.")
        self.reason = reason


def broken_finish(response: Mapping[str, Any]) -> BrokenToolCall | None:
    for cand in response.get("candidates") or ():
        reason = cand.get("finishReason")
        if reason in BROKEN_TOOL_CALL_FINISHES:
            return BrokenToolCall(reason, cand.get("finishMessage"))
    return None


def prompt_blocked(response: Mapping[str, Any]) -> ContentFiltered | None:
    feedback = response.get("promptFeedback")
    if response.get("candidates") or not feedback or not feedback.get("blockReason"):
        return None
    reason = feedback["blockReason"]
    detail = feedback.get("blockReasonMessage")
    message = f"The prompt was blocked by Gemini (block reason: {reason})."
    return ContentFiltered(f"{message} {detail}" if detail else message, param="messages")


_MODALITY_DETAILS = (("promptTokensDetails", "prompt_tokens_details"), ("candidatesTokensDetails", "completion_tokens_details"))


def usage_to_openai(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    meta = meta or {}
    prompt = meta.get("promptTokenCount", 0) + meta.get("toolUsePromptTokenCount", 0)
    thoughts = meta.get("thoughtsTokenCount", 0)
    completion = meta.get("candidatesTokenCount", 0) + thoughts
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": meta.get("totalTokenCount") or prompt + completion,
        "prompt_tokens_details": {"cached_tokens": meta.get("cachedContentTokenCount", 0)},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }
    for details, key in _MODALITY_DETAILS:
        by_modality = meta.get(details)
        if by_modality:
            audio = sum(d.get("tokenCount", 0) for d in by_modality if d.get("modality") == "AUDIO")
            if audio:
                usage[key]["audio_tokens"] = audio
    return usage


def _token_logprob(c: Mapping[str, Any]) -> dict[str, Any]:
    token = c.get("token", "")
    return {"token": token, "logprob": c.get("logProbability", 0.0), "bytes": list(token.encode("utf-8"))}


def logprobs_to_openai(result: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not result:
        return None
    tops = result.get("topCandidates") or []
    content = []
    for i, chosen in enumerate(result.get("chosenCandidates") or ()):
        entry = _token_logprob(chosen)
        top = tops[i].get("candidates", []) if i < len(tops) else []
        entry["top_logprobs"] = [_token_logprob(t) for t in top]
        content.append(entry)
    return {"content": content, "refusal": None}


def _byte_to_char(text: str, byte_offset: int) -> int:
    return len(text.encode("utf-8")[:byte_offset].decode("utf-8", errors="ignore"))


def annotations_to_openai(
    grounding: Mapping[str, Any] | None, part_texts: list[str], part_starts: list[int]
) -> list[dict[str, Any]]:
    """groundingSupports (UTF-8 byte offsets per part) -> `url_citation` annotations (character offsets)."""
    if not grounding:
        return []
    chunks = grounding.get("groundingChunks") or []
    out: list[dict[str, Any]] = []
    seen: set[tuple[int, int, str]] = set()
    for support in grounding.get("groundingSupports") or ():
        seg = support.get("segment") or {}
        p = seg.get("partIndex", 0)
        text = part_texts[p] if p < len(part_texts) else "".join(part_texts)
        base = part_starts[p] if p < len(part_starts) else 0
        start = base + _byte_to_char(text, seg.get("startIndex", 0))
        end = base + _byte_to_char(text, seg.get("endIndex", 0))
        for idx in support.get("groundingChunkIndices") or ():
            web = (chunks[idx].get("web") or chunks[idx].get("retrievedContext") or {}) if idx < len(chunks) else {}
            url = web.get("uri")
            if not url or (start, end, url) in seen:
                continue
            seen.add((start, end, url))
            out.append(
                {
                    "type": "url_citation",
                    "url_citation": {"start_index": start, "end_index": end, "url": url, "title": web.get("title", "")},
                }
            )
    return out


def code_part_text(part: Mapping[str, Any]) -> str | None:
    """Code-execution parts rendered as text (fenced code, then its output)."""
    if "executableCode" in part:
        code = part["executableCode"]
        return f"\n```{code.get('language', 'python').lower()}\n{code.get('code', '')}\n```\n"
    if "codeExecutionResult" in part:
        result = part["codeExecutionResult"]
        return f"\n```output\n{result.get('output', '')}\n```\n"
    return None


def image_fields(images: list[Mapping[str, Any]], mode: str) -> dict[str, Any]:
    """Generated images as Google's layer returns them (`audio`) and/or as `images` data URLs."""
    out: dict[str, Any] = {}
    if not images:
        return out
    if mode in ("audio", "both"):
        first = images[0]
        out["audio"] = {"data": first.get("data", ""), "extra_content": {"google": {"mime_type": first.get("mimeType", "")}}}
    if mode in ("images", "both") or len(images) > 1:
        out["images"] = [
            {"type": "image_url", "image_url": {"url": f"data:{img.get('mimeType', '')};base64,{img.get('data', '')}"}}
            for img in images
        ]
    return out


def tool_call_to_openai(part: Mapping[str, Any], ctx: ResponseContext) -> dict[str, Any]:
    fc = part["functionCall"]
    call: dict[str, Any] = {
        "id": ctx.new_call_id(),
        "type": "function",
        "function": {
            "name": ctx.options.tool_names.get(fc.get("name", ""), fc.get("name", "")),
            "arguments": orjson.dumps(fc.get("args") or {}).decode(),
        },
    }
    if fc.get("id"):
        ctx.signatures[signatures.call_id_key(call["id"])] = fc["id"]
    sig = part.get("thoughtSignature")
    if sig:
        call["extra_content"] = signatures.to_extra_content(sig)
        if ctx.options.legacy_functions:
            ctx.signatures[signatures.legacy_call_key(call["function"]["name"], call["function"]["arguments"])] = sig
        else:
            ctx.signatures[call["id"]] = sig
    return call


def wrap_thoughts(thoughts: str, marker: str | None) -> str:
    return f"<{marker}>{thoughts}</{marker}>" if marker and thoughts else ""


def candidate_to_choice(cand: Mapping[str, Any], k: int, ctx: ResponseContext) -> dict[str, Any]:
    opts = ctx.options
    parts = (cand.get("content") or {}).get("parts") or []
    texts: list[str] = []
    text_parts: list[str] = []  # by part index, for grounding offsets
    text_starts: list[int] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    images: list[Mapping[str, Any]] = []
    other_sig: str | None = None
    length = 0
    for part in parts:
        piece = ""
        if "functionCall" in part:
            calls.append(tool_call_to_openai(part, ctx))
        elif "text" in part:
            if part.get("thought"):
                thoughts.append(part["text"])
            else:
                piece = part["text"]
        elif "inlineData" in part:
            images.append(part["inlineData"])
        else:
            piece = code_part_text(part) or ""
        if "functionCall" not in part and part.get("thoughtSignature"):
            other_sig = part["thoughtSignature"]
        text_parts.append(piece)
        text_starts.append(length)
        texts.append(piece)
        length += len(piece)
    content = "".join(texts)
    thought_text = "".join(thoughts) if opts.include_thoughts else ""
    prefix = wrap_thoughts(thought_text, opts.thought_tag_marker)
    if prefix:
        content = prefix + content
        text_starts = [s + len(prefix) for s in text_starts]
    message: dict[str, Any] = {"role": "assistant", "content": content or (None if calls or images else "")}
    message["refusal"] = None
    if thought_text:
        message["reasoning_content"] = thought_text
    if calls:
        if opts.legacy_functions:
            message["function_call"] = calls[0]["function"]
            if "extra_content" in calls[0]:
                message["extra_content"] = calls[0]["extra_content"]
        else:
            message["tool_calls"] = calls
    if images:
        message.update(image_fields(images, opts.images))
    if other_sig and not (calls and opts.legacy_functions):  # (there the message holds the call's)
        message["extra_content"] = signatures.to_extra_content(other_sig)
        if content:
            ctx.signatures[signatures.text_key(content)] = other_sig
    grounding = cand.get("groundingMetadata")
    if grounding:
        annotations = annotations_to_openai(grounding, text_parts, text_starts)
        if annotations:
            message["annotations"] = annotations
    finish = gemini_finish_reason_to_openai(cand.get("finishReason"), bool(calls))
    if calls and opts.legacy_functions and finish == "tool_calls":
        finish = "function_call"
    logprobs = cand.get("logprobsResult")
    return {
        "index": cand.get("index", k),
        "message": message,
        "finish_reason": finish,
        "logprobs": logprobs_to_openai(logprobs) if logprobs else None,
    }


def to_openai(response: Mapping[str, Any], ctx: ResponseContext) -> dict[str, Any]:
    """Translate a whole (non-streamed) Gemini answer. Raises ContentFiltered / BrokenToolCall."""
    blocked = prompt_blocked(response)
    if blocked is not None:
        raise blocked
    broken = broken_finish(response)
    if broken is not None:
        raise broken
    candidates = response.get("candidates") or [{}]
    if len(candidates) == 1:
        cand = candidates[0]
        choices = [candidate_to_choice(cand if isinstance(cand.get("index", 0), int) else {**cand, "index": 0}, 0, ctx)]
    else:
        # proto3 omits `index` when it is 0; a candidate without one takes the lowest index no
        # other candidate claims (so choice indexes stay unique whatever the order).
        taken = {c["index"] for c in candidates if isinstance(c.get("index"), int)}
        choices = []
        for k, cand in enumerate(candidates):
            if not isinstance(cand.get("index"), int):
                index = next(i for i in range(len(candidates) + 1) if i not in taken)
                taken.add(index)
                cand = {**cand, "index": index}
            choices.append(candidate_to_choice(cand, k, ctx))
        choices.sort(key=lambda c: c["index"])
    return {
        "id": ctx.id,
        "object": "chat.completion",
        "created": ctx.created,
        "model": ctx.options.model,
        "choices": choices,
        "usage": usage_to_openai(response.get("usageMetadata")),
        "system_fingerprint": None,
    }
