"""Wire shapes: a `ReplyPlan` as one `GenerateContentResponse` or as stream chunks.

Owns: part JSON, candidate JSON (index omitted for 0, content shapes when a
finish reason leaves none), where signatures land (last part when whole,
trailing empty text part when streamed), how text is split into chunks,
streamed function-call arguments (`partialArgs` + `willContinue`), usage on
middle vs last chunks, and the envelope (`modelVersion`, `responseId` on
every chunk; `createTime` on Vertex).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

from app.testing.fake_gemini import extras
from app.testing.fake_gemini.reply import BARE_CONTENT, BLOCKING, CandidatePlan, Piece, ReplyPlan

_WORD_RE = re.compile(r"\s*\S+")
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
WORDS_PER_CHUNK = 3


def split_text(text: str, count: int | None) -> list[str]:
    """`text` in `count` non-empty pieces (default: about one per 3 words), at word edges if possible."""
    words = _WORD_RE.findall(text)
    if words:
        words[-1] += text[len("".join(words)) :]  # trailing whitespace stays with the last word
    else:
        return [text] if text else []
    count = count or max(1, math.ceil(len(words) / WORDS_PER_CHUNK))
    if count <= len(words):
        size, extra = divmod(len(words), count)
        pieces, start = [], 0
        for index in range(count):
            end = start + size + (1 if index < extra else 0)
            pieces.append("".join(words[start:end]))
            start = end
        return pieces
    count = min(count, len(text))
    size, extra = divmod(len(text), count)
    pieces, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


def _part(piece: Piece) -> dict[str, Any]:
    if piece.kind == "raw":
        return dict(piece.raw)
    if piece.kind == "call":
        call: dict[str, Any] = {"name": piece.name, "args": piece.args}
        if piece.call_id:
            call["id"] = piece.call_id
        part: dict[str, Any] = {"functionCall": call}
    elif piece.kind == "thought":
        part = {"text": piece.text, "thought": True}
    else:
        part = {"text": piece.text}
    if piece.signature:
        part["thoughtSignature"] = piece.signature
    return part


def _empty_content(cand: CandidatePlan) -> dict[str, Any] | None:
    if cand.finish_reason in BARE_CONTENT:
        return {}
    if cand.finish_reason in BLOCKING:
        return None
    return {"role": "model"}


def _finish(cand: CandidatePlan, chunk: dict[str, Any]) -> None:
    chunk["finishReason"] = cand.finish_reason
    if cand.finish_message:
        chunk["finishMessage"] = cand.finish_message
    if cand.finish_reason in BLOCKING:
        chunk["safetyRatings"] = extras.safety_ratings("HARM_CATEGORY_DANGEROUS_CONTENT")
    if cand.grounding:
        chunk["groundingMetadata"] = cand.grounding


def _add_logprobs(chunk: dict[str, Any], text: str, top: int | None) -> None:
    found = extras.logprobs(text, top) if top is not None else None
    if found:
        chunk["logprobsResult"], chunk["avgLogprobs"] = found


def _envelope(plan: ReplyPlan, response_id: str, create_time: str | None, **fields: Any) -> dict[str, Any]:
    out = {k: v for k, v in fields.items() if v is not None}
    out["modelVersion"] = plan.model
    if create_time is not None:
        out["createTime"] = create_time
    out["responseId"] = response_id
    return out


def _blocked(plan: ReplyPlan, response_id: str, create_time: str | None) -> dict[str, Any]:
    feedback = {"blockReason": plan.block_reason, "safetyRatings": extras.safety_ratings("HARM_CATEGORY_HARASSMENT")}
    return _envelope(plan, response_id, create_time, promptFeedback=feedback, usageMetadata=plan.usage)


def _indexed(chunk: dict[str, Any], index: int) -> dict[str, Any]:
    return {**chunk, "index": index} if index else chunk


def whole_response(plan: ReplyPlan, response_id: str, create_time: str | None = None) -> dict[str, Any]:
    """The non-streaming `GenerateContentResponse`."""
    if plan.block_reason:
        return _blocked(plan, response_id, create_time)
    candidates = []
    for index, cand in enumerate(plan.candidates):
        parts = [_part(p) for p in cand.pieces]
        if cand.end_signature and parts:
            parts[-1]["thoughtSignature"] = cand.end_signature
        content = {"role": "model", "parts": parts} if parts else _empty_content(cand)
        out: dict[str, Any] = {} if content is None else {"content": content}
        _finish(cand, out)
        _add_logprobs(out, cand.answer_text, plan.logprobs_top)
        candidates.append(_indexed(out, index))
    return _envelope(plan, response_id, create_time, candidates=candidates, usageMetadata=plan.usage)


def _json_path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    if _PLAIN_KEY.match(key):
        return f"{parent}.{key}"
    escaped = key.replace("\\", "\\\\").replace("'", "\\'")
    return f"{parent}['{escaped}']"


def _leaves(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, _json_path(path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, _json_path(path, index))
    else:
        yield path, value


def _partial_args(args: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path, value in _leaves(args, "$"):
        if isinstance(value, str):
            size = max(1, math.ceil(len(value) / 3))
            pieces = [value[i : i + size] for i in range(0, len(value), size)] or [""]
            for n, piece in enumerate(pieces):
                arg: dict[str, Any] = {"jsonPath": path, "stringValue": piece}
                if n < len(pieces) - 1:
                    arg["willContinue"] = True
                found.append(arg)
        elif isinstance(value, bool):
            found.append({"jsonPath": path, "boolValue": value})
        elif value is None:
            found.append({"jsonPath": path, "nullValue": "NULL_VALUE"})
        else:
            found.append({"jsonPath": path, "numberValue": value})
    return found


def streamed_call_parts(piece: Piece) -> list[dict[str, Any]]:
    """One function call as a sequence of single-part chunks with `partialArgs`."""
    args = _partial_args(piece.args)
    head: dict[str, Any] = {"name": piece.name}
    if piece.call_id:
        head["id"] = piece.call_id
    if not args:
        parts: list[dict[str, Any]] = [{"functionCall": head}]
    else:
        parts = []
        for n, arg in enumerate(args):
            call = {**(head if n == 0 else {}), "partialArgs": [arg]}
            if n < len(args) - 1:
                call["willContinue"] = True
            parts.append({"functionCall": call})
    if piece.signature:
        parts[0]["thoughtSignature"] = piece.signature
    return parts


def _candidate_chunks(plan: ReplyPlan, cand: CandidatePlan) -> list[dict[str, Any]]:
    groups: list[list[dict[str, Any]]] = []
    texts: list[str] = []  # answer text per group, for logprobs
    previous = ""
    for piece in cand.pieces:
        if piece.kind in ("thought", "text"):
            count = plan.text_chunks if piece.kind == "text" else None
            for n, text in enumerate(split_text(piece.text, count)):
                part = _part(Piece(piece.kind, text, signature=piece.signature if n == 0 else None))
                groups.append([part])
                texts.append(text if piece.kind == "text" else "")
        elif piece.kind == "call" and plan.partial_args:
            for part in streamed_call_parts(piece):
                groups.append([part])
                texts.append("")
        elif piece.kind == "call" and previous == "call":
            groups[-1].append(_part(piece))  # parallel calls arrive together
        else:
            groups.append([_part(piece)])
            texts.append("")
        previous = piece.kind
    chunks: list[dict[str, Any]] = []
    for parts, text in zip(groups, texts, strict=True):
        chunk: dict[str, Any] = {"content": {"role": "model", "parts": parts}}
        _add_logprobs(chunk, text, plan.logprobs_top)
        chunks.append(chunk)
    if cand.end_signature:
        chunks.append({"content": {"role": "model", "parts": [{"text": "", "thoughtSignature": cand.end_signature}]}})
    if cand.finish_reason in BLOCKING or not chunks:
        content = _empty_content(cand)
        chunks.append({} if content is None else {"content": content})
    _finish(cand, chunks[-1])
    return chunks


def stream_responses(plan: ReplyPlan, response_id: str, create_time: str | None = None) -> list[dict[str, Any]]:
    """The chunks of `streamGenerateContent`, each a full `GenerateContentResponse`."""
    if plan.block_reason:
        return [_blocked(plan, response_id, create_time)]
    per_candidate = [_candidate_chunks(plan, cand) for cand in plan.candidates]
    total = max(len(chunks) for chunks in per_candidate)
    middle_usage: dict[str, Any] = {
        "promptTokenCount": plan.usage["promptTokenCount"],
        "totalTokenCount": plan.usage["promptTokenCount"],
    }
    if "trafficType" in plan.usage:
        middle_usage["trafficType"] = plan.usage["trafficType"]
    responses = []
    for n in range(total):
        candidates = [
            _indexed(chunks[n], index) for index, chunks in enumerate(per_candidate) if n < len(chunks)
        ]
        usage = plan.usage if n == total - 1 else middle_usage
        responses.append(_envelope(plan, response_id, create_time, candidates=candidates, usageMetadata=usage))
    return responses
