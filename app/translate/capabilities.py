"""The one place for per-model facts.

Gemini models differ in what they accept (thinking levels or budgets, JSON
Schema support, thought-signature enforcement, per-part media resolution,
image output), in which of the gateway's endpoints can serve them (`chat`,
`embeddings`, `images`) and, for embedding models, in the Vertex AI verb
(`embedContent` for the Gemini family, `:predict` for the older
`text-embedding-*` models); the list changes every few months, so nothing here is
hard-wired into the translator: `capabilities_for(model, overrides)` returns a
frozen `ModelCapabilities` built from the default table below, then from the
operator's config (`capabilities:` patterns, then a route's own
`capabilities:`), first match of each wins.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

ThinkingKind = Literal["none", "budget", "level"]
EmbeddingsAPI = Literal["embed_content", "predict"]
ImagesAPI = Literal["generate_content", "predict"]
LEVELS = ("minimal", "low", "medium", "high")

# Google's budgets for Gemini 2.5 (its compatibility layer and Vertex's use these).
DEFAULT_BUDGETS: Mapping[str, int] = {"minimal": 1024, "low": 1024, "medium": 8192, "high": 24576}


@dataclass(frozen=True)
class ModelCapabilities:
    thinking: ThinkingKind = "none"
    thinking_levels: tuple[str, ...] = ()
    thinking_budget_min: int = 0
    thinking_budget_max: int = 24576
    thinking_can_disable: bool = True
    # Explicit reasoning_effort -> level (str) or budget (int); empty = derived (see effort_to_thinking).
    reasoning_effort: Mapping[str, int | str] = field(default_factory=dict)
    json_schema: bool = True  # parametersJsonSchema / responseJsonSchema accepted
    signatures_required: bool = False  # Gemini 3 rejects tool history without thought signatures
    per_part_media_resolution: bool = False  # Part.mediaResolution (Gemini 3) vs generationConfig
    multimodal_function_response: bool = False  # FunctionResponse.parts (Gemini 3)
    image_output: bool = False
    drop_params: frozenset[str] = frozenset()
    # The gateway endpoints this model serves (`chat`, `embeddings`, `images`): `/v1/models` lists them,
    # and a model sent to an endpoint it does not serve is a 400 naming `model` (docs/design.md#endpoints).
    endpoints: tuple[str, ...] = ("chat",)
    # Embedding models on Vertex AI: `embed_content` (`:embedContent` / `:batchEmbedContents`, the Gemini
    # family) or `predict` (`:predict` with `instances`, the older text-embedding models). The Gemini
    # Developer API always takes `:batchEmbedContents`.
    embeddings_api: EmbeddingsAPI = "embed_content"
    # Image models (`/v1/images/*`, docs/parameters.md#images): `generate_content` (Gemini image models:
    # `generateContent` with the IMAGE modality and `imageConfig`) or `predict` (Imagen: `:predict` with
    # `sampleCount`). `image_sizes`: the size tiers the model takes (`imageSize` / `sampleImageSize`);
    # empty = the field is never sent (gemini-2.5-flash-image refuses `imageSize`; Imagen 3 and Imagen 4
    # Fast have one size).
    images_api: ImagesAPI = "generate_content"
    image_sizes: tuple[str, ...] = ()


_G3 = dict(signatures_required=True, per_part_media_resolution=True, multimodal_function_response=True)
_EMBED = ("embeddings",)
_IMAGEN = dict(endpoints=("images",), images_api="predict")
_IMAGE_MODEL = ("chat", "images")  # Gemini image models also answer chat (images in the message)

# First match wins. Patterns are fnmatch globs on the Gemini model id.
DEFAULTS: Sequence[tuple[str, dict[str, Any]]] = (
    ("gemini-embedding*", dict(endpoints=_EMBED)),
    ("*gemini*embedding*", dict(endpoints=_EMBED)),
    ("*maas*embedding*", dict(endpoints=_EMBED)),
    ("*embedding*", dict(endpoints=_EMBED, embeddings_api="predict")),  # text-embedding-005, text-multilingual-...
    ("*embed*", dict(endpoints=_EMBED, embeddings_api="predict")),  # multimodalembedding, ...
    ("imagen-3*", dict(_IMAGEN)),
    ("imagen-*fast*", dict(_IMAGEN)),
    ("imagen*", dict(_IMAGEN, image_sizes=("1K", "2K"))),
    ("gemini-3*-image*", dict(image_output=True, per_part_media_resolution=True, endpoints=_IMAGE_MODEL,
                              image_sizes=("1K", "2K", "4K"))),
    ("*-image*", dict(image_output=True, endpoints=_IMAGE_MODEL)),
    ("gemini-3.1-pro*", dict(thinking="level", thinking_levels=("low", "medium", "high"), **_G3)),
    ("gemini-3*-pro*", dict(thinking="level", thinking_levels=("low", "high"), **_G3)),
    ("gemini-3*flash*", dict(thinking="level", thinking_levels=LEVELS, **_G3)),
    ("gemini-[3-9]*", dict(thinking="level", thinking_levels=("low", "high"), **_G3)),
    ("gemini-2.5-pro*", dict(thinking="budget", thinking_budget_min=128, thinking_budget_max=32768, thinking_can_disable=False)),
    ("gemini-2.5-flash-lite*", dict(thinking="budget", thinking_budget_min=512, thinking_budget_max=24576)),
    ("gemini-2.5*", dict(thinking="budget", thinking_budget_min=0, thinking_budget_max=24576)),
    ("gemini-2.0*", dict(json_schema=False)),
    ("gemini-1*", dict(json_schema=False)),
    ("gemma*", dict(json_schema=False)),
    ("*", dict()),
)


def _as_fields(overrides: Any) -> dict[str, Any]:
    """A settings `CapabilityOverrides` (or plain dict) -> dataclass fields, skipping unset ones."""
    data = overrides if isinstance(overrides, Mapping) else overrides.model_dump()
    out: dict[str, Any] = {}
    for key, value in data.items():
        if value is None:
            continue
        if key == "thinking_levels":
            value = tuple(value)
        elif key == "drop_params":
            value = frozenset(value)
        elif key in ("endpoints", "image_sizes"):
            value = tuple(value)
        out[key] = value
    return out


def capabilities_for(
    model: str,
    patterns: Mapping[str, Any] | None = None,
    route_overrides: Any | None = None,
) -> ModelCapabilities:
    """Facts for `model`: built-in defaults, then config patterns, then the route's overrides."""
    name = model.lower()
    caps = ModelCapabilities()
    for pattern, fields in DEFAULTS:
        if fnmatch.fnmatchcase(name, pattern):
            caps = replace(caps, **fields)
            break
    for pattern, overrides in (patterns or {}).items():
        if fnmatch.fnmatchcase(name, pattern.lower()):
            caps = replace(caps, **_as_fields(overrides))
            break
    if route_overrides is not None:
        caps = replace(caps, **_as_fields(route_overrides))
    return caps


def effort_to_thinking(effort: str, caps: ModelCapabilities) -> dict[str, Any] | None:
    """OpenAI `reasoning_effort` -> Gemini `thinkingConfig` for this model.

    Returns None when nothing should be sent (the model does not think), raises
    ValueError when the model cannot honour the effort (e.g. `none` on a model
    whose thinking cannot be turned off by budget).
    """
    if caps.thinking == "none":
        return None
    explicit = caps.reasoning_effort.get(effort)
    if caps.thinking == "level":
        if isinstance(explicit, str):
            return {"thinkingLevel": explicit.upper()}
        allowed = caps.thinking_levels or LEVELS
        wanted = {"none": "minimal", "xhigh": "high", "max": "high"}.get(effort, effort)
        if wanted not in allowed:
            # Clamp to the nearest level the model has: down for minimal, up otherwise
            # (Google's own layer sends `high` for `medium` to Gemini 3 Pro).
            order = LEVELS
            idx = order.index(wanted)
            up = [lvl for lvl in order[idx:] if lvl in allowed]
            down = [lvl for lvl in reversed(order[:idx]) if lvl in allowed]
            wanted = (up or down)[0]
        return {"thinkingLevel": wanted.upper()}  # the enum names, as google-genai sends them
    # budget models
    if isinstance(explicit, int):
        budget = explicit
    elif effort == "none":
        if not caps.thinking_can_disable:
            raise ValueError("this model cannot turn thinking off; use `minimal` or `low`")
        return {"thinkingBudget": 0}
    elif effort in ("xhigh", "max"):
        budget = caps.thinking_budget_max
    else:
        budget = DEFAULT_BUDGETS[effort]
    budget = max(caps.thinking_budget_min, min(caps.thinking_budget_max, budget))
    return {"thinkingBudget": budget}
