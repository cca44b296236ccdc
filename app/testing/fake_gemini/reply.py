"""What the fake model says: one `ReplyPlan` per request, before any wire shape.

Owns: choosing between function calls and an answer (explicit `tool_calls`,
`tool_steps` loops, mode ANY), the answer text (directive `reply`, echo,
tool-result summary, structured output synthesized from the schema), thought
summaries and thinking tokens, finish reasons and what they leave in the
content, `maxOutputTokens` and `stopSequences`, which parts carry thought
signatures, and the token usage. `render` turns the plan into responses.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from app.testing.fake_gemini import body as rq
from app.testing.fake_gemini import extras
from app.testing.fake_gemini.catalogue import ModelSpec
from app.testing.fake_gemini.directives import Directive, ToolCallSpec
from app.testing.fake_gemini.schema_synth import example_for
from app.testing.fake_gemini.signatures import Signer
from app.testing.fake_gemini.strictness import budget_of, level_of, thinking_enabled

EMPTY_PROMPT_REPLY = "Hello from fake Gemini"
CACHED_TOKENS = 1024
# Finish reasons that leave no answer unless the directive gives a `reply`.
NO_ANSWER = frozenset(
    """MAX_TOKENS MALFORMED_FUNCTION_CALL UNEXPECTED_TOOL_CALL TOO_MANY_TOOL_CALLS
    MISSING_THOUGHT_SIGNATURE MALFORMED_RESPONSE NO_IMAGE""".split()
)
# Finish reasons whose content is `{}` (as Google sends for bad calls) rather than `{"role": "model"}`.
BARE_CONTENT = frozenset({"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL"})
# Finish reasons that cut the output off: text streams, then a last chunk without content.
BLOCKING = frozenset(
    """SAFETY RECITATION BLOCKLIST PROHIBITED_CONTENT SPII IMAGE_SAFETY
    IMAGE_PROHIBITED_CONTENT IMAGE_RECITATION MODEL_ARMOR""".split()
)
_LEVEL_TOKENS = {"MINIMAL": 8, "LOW": 24, "MEDIUM": 48, "HIGH": 96}

Kind = Literal["thought", "text", "call", "raw"]


@dataclass
class Piece:
    """One part of the answer; `raw` pieces are finished wire parts (code, image)."""

    kind: Kind
    text: str = ""
    name: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    call_id: str | None = None
    signature: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class CandidatePlan:
    pieces: list[Piece]
    finish_reason: str = "STOP"
    finish_message: str | None = None
    # Gemini 3 answers without calls: signature for the last part / trailing empty part.
    end_signature: str | None = None
    grounding: dict[str, Any] | None = None

    @property
    def answer_text(self) -> str:
        return "".join(p.text for p in self.pieces if p.kind == "text")


@dataclass
class ReplyPlan:
    model: str
    backend: str
    candidates: list[CandidatePlan]
    usage: dict[str, Any]
    prompt_tokens: int
    cached_tokens: int = 0
    block_reason: str | None = None
    text_chunks: int | None = None
    partial_args: bool = False
    logprobs_top: int | None = None  # None = no logprobs


def _call_id(name: str, step: int, index: int) -> str:
    return "fc-" + hashlib.sha256(f"{name}:{step}:{index}".encode()).hexdigest()[:16]


def _auto_calls(payload: dict[str, Any], count: int, step: int) -> list[ToolCallSpec]:
    declared = rq.declared_functions(payload)
    allowed = rq.get(rq.function_calling_config(payload), "allowedFunctionNames") or []
    if allowed:
        declared = [d for d in declared if d.get("name") in allowed] or declared
    if not declared:
        return []
    picks = [declared[(step * count + j) % len(declared)] for j in range(count)]
    return [ToolCallSpec(str(d.get("name")), example_for(rq.parameters_schema(d))) for d in picks]


def _choose_calls(payload: dict[str, Any], directive: Directive, rounds: int) -> list[ToolCallSpec]:
    mode = str(rq.get(rq.function_calling_config(payload), "mode") or "AUTO").upper()
    if directive.tool_calls:
        steps = directive.tool_steps if directive.tool_steps is not None else 1
        return list(directive.tool_calls) if rounds < steps else []
    if directive.tool_steps is not None:
        if mode == "NONE" or rounds >= directive.tool_steps:
            return []
        return _auto_calls(payload, directive.parallel, rounds)
    if mode == "ANY":
        return _auto_calls(payload, 1, rounds)
    return []


def _answer_text(payload: dict[str, Any], directive: Directive, user_text: str) -> str:
    if directive.reply is not None:
        return directive.reply
    rounds = rq.response_rounds(rq.contents(payload))
    if rounds:
        seen = [f"{r.get('name')}={orjson.dumps(r.get('response')).decode()}" for rnd in rounds for r in rnd]
        return f"Function results after {len(rounds)} round(s): " + "; ".join(seen)
    config = rq.gen_config(payload)
    mime = str(rq.get(config, "responseMimeType") or "")
    schema = rq.get(config, "responseJsonSchema")
    if schema is None:
        schema = rq.get(config, "responseSchema")
    if mime == "application/json":
        value = example_for(schema) if schema is not None else {"echo": user_text}
        return orjson.dumps(value).decode()
    if mime == "text/x.enum" and isinstance(schema, dict) and schema.get("enum"):
        return str(schema["enum"][0])
    return f"Echo: {user_text}" if user_text else EMPTY_PROMPT_REPLY


def _thought_tokens(spec: ModelSpec, thinking: dict[str, Any], thought_text: str) -> int:
    if not thinking_enabled(spec, thinking):
        return 0
    level, budget = level_of(thinking), budget_of(thinking)
    if level is not None:
        base = _LEVEL_TOKENS.get(level, 48)
    elif budget is not None and budget > 0:
        base = min(budget, 64)
    else:
        base = _LEVEL_TOKENS[spec.default_level] if spec.default_level else 48
    return base + rq.estimate_tokens(len(thought_text))


def _apply_stop_sequences(text: str, stops: Any) -> str:
    if not isinstance(stops, list):
        return text
    cut = min((text.find(s) for s in stops if isinstance(s, str) and s and s in text), default=-1)
    return text[:cut] if cut >= 0 else text


def plan_reply(
    payload: dict[str, Any],
    spec: ModelSpec,
    directive: Directive,
    user_text: str,
    *,
    backend: str,
    signer: Signer,
) -> ReplyPlan:
    """Decide the whole answer to one generate request."""
    config = rq.gen_config(payload)
    thinking = rq.thinking_config(payload)
    cached = CACHED_TOKENS if rq.get(payload, "cachedContent") else 0
    prompt = rq.prompt_tokens(payload) + cached
    plan = ReplyPlan(
        model=spec.id,
        backend=backend,
        candidates=[],
        usage={},
        prompt_tokens=prompt,
        cached_tokens=cached,
        text_chunks=directive.chunks,
        partial_args=directive.partial_args
        or bool(rq.get(rq.function_calling_config(payload), "streamFunctionCallArguments")),
        logprobs_top=int(rq.get(config, "logprobs") or 0) if rq.get(config, "responseLogprobs") else None,
    )
    if directive.block_prompt:
        plan.block_reason = directive.block_prompt
        plan.usage = _usage(plan, directive, 0, 0, 0)
        return plan

    rounds = len(rq.response_rounds(rq.contents(payload)))
    calls = _choose_calls(payload, directive, rounds)
    thought_text = directive.thoughts or (
        f"**Considering the request**\n\nThe user wrote: {user_text or '(nothing)'}. "
        "I will answer it directly."
    )
    thoughts = _thought_tokens(spec, thinking, thought_text)
    text = "" if calls else _answer_text(payload, directive, user_text)
    if directive.grounding and directive.reply is None and not calls:
        text = extras.GROUNDING_PREFIX + text
    text, calls, thoughts, finish = _fit_output(config, directive, text, calls, thoughts)

    count = rq.get(config, "candidateCount")
    count = count if isinstance(count, int) and count > 1 else 1
    has_tools = bool(rq.declared_functions(payload))
    for index in range(count):
        cand_text = text
        if index > 0 and text and not text.startswith(("{", "[")):
            cand_text = f"{text} (candidate {index + 1})"
        pieces = _pieces(spec, config, directive, cand_text, calls, rounds, finish)
        if thoughts and rq.get(thinking, "includeThoughts") and finish not in BARE_CONTENT:
            pieces.insert(0, Piece("thought", thought_text))
        cand = CandidatePlan(pieces, finish, _finish_message(directive, finish, payload))
        _sign(cand, spec, signer, has_tools=has_tools, thinking_on=thoughts > 0)
        if directive.grounding and cand.answer_text:
            cand.grounding = extras.grounding_metadata(cand.answer_text, user_text)
        plan.candidates.append(cand)
    first = plan.candidates[0]
    ran_code = any("executableCode" in p.raw for p in first.pieces)
    tool_use = (24 if first.grounding else 0) + (16 if ran_code else 0)  # server-side tool results
    candidates_tokens = sum(_output_tokens(c) for c in plan.candidates)
    plan.usage = _usage(plan, directive, candidates_tokens, thoughts * count, tool_use)
    return plan


def _fit_output(
    config: dict[str, Any], directive: Directive, text: str, calls: list[ToolCallSpec], thoughts: int
) -> tuple[str, list[ToolCallSpec], int, str]:
    """Apply stopSequences, maxOutputTokens (thinking counts) and answer-less finish reasons."""
    finish = directive.finish_reason or "STOP"
    text = _apply_stop_sequences(text, rq.get(config, "stopSequences"))
    max_out = rq.get(config, "maxOutputTokens")
    if isinstance(max_out, int) and max_out > 0 and directive.finish_reason is None:
        if thoughts >= max_out:
            return "", [], max_out, "MAX_TOKENS"
        if not calls and rq.estimate_tokens(len(text)) > max_out - thoughts:
            return text[: (max_out - thoughts) * 4].rstrip(), calls, thoughts, "MAX_TOKENS"
    if finish in NO_ANSWER and directive.reply is None and directive.finish_reason is not None:
        return "", [], thoughts, finish
    return text, calls, thoughts, finish


def _pieces(
    spec: ModelSpec,
    config: dict[str, Any],
    directive: Directive,
    text: str,
    calls: list[ToolCallSpec],
    rounds: int,
    finish: str,
) -> list[Piece]:
    """The answer's parts in order: code execution, calls, text, image."""
    pieces: list[Piece] = []
    if directive.code_execution and not calls and finish not in BARE_CONTENT:
        pieces.extend(Piece("raw", raw=p) for p in extras.code_parts())
    for j, call in enumerate(calls):
        call_id = call.id or (_call_id(call.name, rounds, j) if directive.call_ids else None)
        pieces.append(Piece("call", name=call.name, args=call.args, call_id=call_id))
    if text:
        pieces.append(Piece("text", text))
    wants_image = spec.image_output and not calls and "IMAGE" in _modalities(config) and finish == "STOP"
    if (directive.image and finish not in BARE_CONTENT) or wants_image:
        pieces.append(Piece("raw", raw=_image(config, text)))
    return pieces


def _image(config: dict[str, Any], text: str) -> dict[str, Any]:
    """The image part: as `imageConfig` asks (aspect ratio, size tier, Vertex's output type), else the 2x2 PNG."""
    image_config = rq.get(config, "imageConfig")
    if not isinstance(image_config, dict) or not image_config:
        return extras.image_part()
    options = rq.get(image_config, "imageOutputOptions")
    mime = rq.get(options, "mimeType") if isinstance(options, dict) else None
    return extras.image_part(rq.get(image_config, "aspectRatio"), rq.get(image_config, "imageSize"), text,
                             mime or "image/png")


def _modalities(config: dict[str, Any]) -> list[str]:
    found = rq.get(config, "responseModalities")
    return [str(m).upper() for m in found] if isinstance(found, list) else ["TEXT", "IMAGE"]


def _finish_message(directive: Directive, finish: str, payload: dict[str, Any]) -> str | None:
    if directive.finish_message is not None:
        return directive.finish_message
    if finish == "MALFORMED_FUNCTION_CALL":
        names = [d.get("name") for d in rq.declared_functions(payload)] or ["tool"]
        return f"Malformed function call: print(default_api.{names[0]}(query=))"
    if finish == "UNEXPECTED_TOOL_CALL":
        return "Unexpected tool call: the model called a function that is not available."
    return None


def _sign(cand: CandidatePlan, spec: ModelSpec, signer: Signer, *, has_tools: bool, thinking_on: bool) -> None:
    """Put signatures where the model would (docs/gemini-facts.md#thought-signatures)."""
    answer = [p for p in cand.pieces if p.kind != "thought"]
    first_call = next((p for p in answer if p.kind == "call"), None)
    if spec.is_gemini3:
        if first_call is not None:
            first_call.signature = signer.for_call(spec.id, first_call.name, first_call.args)
        elif answer:
            cand.end_signature = signer.for_text(spec.id, cand.answer_text)
    elif thinking_on and has_tools and answer:
        first = answer[0]
        if first.kind == "call":
            first.signature = signer.for_call(spec.id, first.name, first.args)
        elif first.kind == "text":
            first.signature = signer.for_text(spec.id, first.text)


def _output_tokens(cand: CandidatePlan) -> int:
    total = 0
    for piece in cand.pieces:
        if piece.kind == "text":
            total += rq.estimate_tokens(len(piece.text))
        elif piece.kind == "call":
            total += rq.estimate_tokens(len(piece.name) + len(orjson.dumps(piece.args)))
        elif "inlineData" in piece.raw:
            total += extras.IMAGE_OUTPUT_TOKENS
        elif piece.raw:
            total += rq.estimate_tokens(len(orjson.dumps(piece.raw)))
    return total


def _usage(
    plan: ReplyPlan, directive: Directive, candidates: int, thoughts: int, tool_use: int
) -> dict[str, Any]:
    counts = {
        "promptTokenCount": plan.prompt_tokens,
        "candidatesTokenCount": candidates,
        "totalTokenCount": 0,
        "cachedContentTokenCount": plan.cached_tokens,
        "thoughtsTokenCount": thoughts,
        "toolUsePromptTokenCount": tool_use,
    }
    counts.update(directive.usage)
    if "totalTokenCount" not in directive.usage:
        counts["totalTokenCount"] = (
            counts["promptTokenCount"]
            + counts["candidatesTokenCount"]
            + counts["thoughtsTokenCount"]
            + counts["toolUsePromptTokenCount"]
        )
    usage: dict[str, Any] = {k: v for k, v in counts.items() if v or k == "promptTokenCount"}
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": counts["promptTokenCount"]}]
    images = sum(1 for c in plan.candidates for p in c.pieces if "inlineData" in p.raw) * extras.IMAGE_OUTPUT_TOKENS
    if images and "candidatesTokenCount" not in directive.usage:  # per modality, as Google reports image output
        usage["candidatesTokensDetails"] = [
            {"modality": "TEXT", "tokenCount": counts["candidatesTokenCount"] - images},
            {"modality": "IMAGE", "tokenCount": images},
        ]
    if plan.backend == "vertex":
        usage["trafficType"] = "ON_DEMAND"
    return usage
