"""Per-model request checks: the 400s Google sends when a model rejects a field.

Owns: thinking (budget vs level, ranges, models that cannot think or cannot
stop thinking), penalties, logprobs, several candidates, image output, and
streamed function-call arguments — docs/gemini-facts.md#model-limits. The facts
come from `catalogue.ModelSpec`; the texts are the ones seen from Google.
Field shape (unknown names, wrong types, ranges, budget together with level)
is `gemini_schema`'s job and runs first.
"""

from __future__ import annotations

from typing import Any, Literal

from app.testing.fake_gemini import body as rq
from app.testing.fake_gemini.catalogue import ModelSpec
from app.testing.google_errors import GoogleError

Backend = Literal["gemini", "vertex"]


def _bad(message: str) -> GoogleError:
    return GoogleError(400, message)


def level_of(thinking: dict[str, Any]) -> str | None:
    level = rq.get(thinking, "thinkingLevel")
    if level is None or level == "THINKING_LEVEL_UNSPECIFIED":
        return None
    return str(level).upper()


def budget_of(thinking: dict[str, Any]) -> int | None:
    budget = rq.get(thinking, "thinkingBudget")
    return int(budget) if isinstance(budget, (int, float)) and not isinstance(budget, bool) else None


def thinking_enabled(spec: ModelSpec, thinking: dict[str, Any]) -> bool:
    """Whether this request makes the model think (after the checks passed)."""
    if not spec.thinking:
        return False
    budget = budget_of(thinking)
    if budget is not None:
        return budget != 0
    return spec.thinks_by_default or level_of(thinking) is not None


def _check_thinking(spec: ModelSpec, thinking: dict[str, Any], backend: Backend) -> None:
    if not thinking or all(v is None for v in thinking.values()):
        return
    if not spec.thinking:
        raise _bad(f"Thinking is not enabled for models/{spec.id}")
    level, budget = level_of(thinking), budget_of(thinking)  # not both: gemini_schema's check
    if level is not None:
        if not spec.levels:
            raise _bad("Thinking level is not supported for this model.")
        if level not in spec.levels:
            raise _bad(f"Thinking level {level} is not supported for this model.")
    if budget is not None:
        _check_budget(spec, budget)
    include = rq.get(thinking, "includeThoughts")
    if backend == "vertex" and include and not thinking_enabled(spec, thinking):
        raise _bad(
            "Unable to submit request because Thinking_config.include_thoughts is only enabled "
            "when thinking is enabled.. Learn more: "
            "https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/gemini"
        )


def _check_budget(spec: ModelSpec, budget: int) -> None:
    if budget == -1:
        return
    if budget == 0:
        if not spec.can_disable_thinking and spec.budget_range is not None:
            raise _bad("Budget 0 is invalid. This model only works in thinking mode.")
        return
    low, high = spec.budget_range or (0, 32768)
    if not low <= budget <= high:
        raise _bad(f"The thinking budget ({budget}) is invalid.")


def _nonzero(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value != 0


# imageConfig.aspectRatio values Gemini image models take (google-genai's ImageConfig, and 4:5 / 5:4).
ASPECT_RATIOS = frozenset({"1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"})
IMAGE_SIZES = ("1K", "2K", "4K")
OUTPUT_MIMES = ("image/png", "image/jpeg")


def _check_image_config(spec: ModelSpec, image_config: Any, modalities: list[str]) -> None:
    """imageConfig: only for image models asked for images; aspectRatio and imageSize from Google's lists
    (imageSize upper case: "1k" is not "1K"); gemini-2.5-flash-image fails on any imageSize with
    Google's 500; Vertex's imageOutputOptions png or jpeg, quality 0..100."""
    if not image_config:
        return
    if not spec.image_output:
        raise _bad(f"Image config is not supported for models/{spec.id}")
    aspect = rq.get(image_config, "aspectRatio")
    if aspect is not None and aspect not in ASPECT_RATIOS:
        raise _bad(f"Unsupported aspect ratio: {aspect}. Supported: {', '.join(sorted(ASPECT_RATIOS))}")
    size = rq.get(image_config, "imageSize")
    if size is not None:
        if not spec.image_sizes:
            raise GoogleError(500, "An internal error has occurred. Please retry or report in "
                                   "https://developers.generativeai.google/guide/troubleshooting")
        if size not in IMAGE_SIZES or size not in spec.image_sizes:
            raise _bad(f"Unsupported image size: {size}. Supported: {', '.join(spec.image_sizes)}")
    options = rq.get(image_config, "imageOutputOptions")
    if options is not None:
        if not isinstance(options, dict) or set(options) - {"mimeType", "compressionQuality"}:
            raise _bad("imageOutputOptions takes mimeType and compressionQuality.")
        mime = options.get("mimeType")
        if mime is not None and mime not in OUTPUT_MIMES:
            raise _bad(f"Unsupported output mime type: {mime}")
        quality = options.get("compressionQuality")
        if quality is not None and not (isinstance(quality, int) and 0 <= quality <= 100):
            raise _bad("compressionQuality must be between 0 and 100.")


def check_model_rules(spec: ModelSpec, payload: dict[str, Any], backend: Backend) -> None:
    """Raise the 400 Google answers when `spec` does not accept what `payload` asks."""
    config = rq.gen_config(payload)
    _check_thinking(spec, rq.thinking_config(payload), backend)
    penalties = (rq.get(config, "presencePenalty"), rq.get(config, "frequencyPenalty"))
    if not spec.penalties and any(_nonzero(p) for p in penalties):
        raise _bad(f"Penalty is not enabled for models/{spec.id}")
    if rq.get(config, "responseLogprobs") and not spec.logprobs:
        raise _bad(f"Logprobs is not enabled for models/{spec.id}")
    count = rq.get(config, "candidateCount")
    if isinstance(count, int) and count > 1 and not spec.multi_candidates:
        raise _bad("Multiple candidates is not enabled for this model")
    modalities = [str(m).upper() for m in rq.get(config, "responseModalities") or []]
    if "IMAGE" in modalities and not spec.image_output:
        shown = ",".join(sorted(m.lower() for m in modalities))
        raise _bad(f"Model does not support the requested response modalities: {shown}")
    _check_image_config(spec, rq.get(config, "imageConfig"), modalities)
    if rq.get(rq.function_calling_config(payload), "streamFunctionCallArguments") and not spec.is_gemini3:
        raise _bad(f"Function call argument streaming is not enabled for models/{spec.id}")
