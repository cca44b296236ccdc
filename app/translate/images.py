"""`POST /v1/images/generations` and `/v1/images/edits` <-> Gemini's image calls: pure, no I/O
(docs/parameters.md#images).

Request side:

* `plan_images(fields, images, files)` checks every OpenAI field this endpoint knows (the JSON body
  of a generation, or the form fields and files of an edit) and returns an `ImagePlan`; every refusal
  is a 400 naming the OpenAI parameter. Fields with no Google equivalent are hints (accepted, not
  forwarded) or refused when ignoring them would change the answer (`background: transparent`,
  `mask`, `stream`);
* `size_to_gemini(width, height, api, tiers)` is the one size rule: the nearest aspect ratio the
  model family takes (smallest |log(ratio / (W/H))|) and the size tier from the long side;
* `image_calls(plan, model, caps, vertex)` builds the upstream calls for one target:
  - Imagen (`caps.images_api == "predict"`): `:predict` with `instances[0].prompt` and
    `parameters.sampleCount` (always sent: Google's default is 4), ⌈n/4⌉ calls;
  - Gemini image models: `generateContent` with the prompt (and the edit's images as `inlineData`),
    `responseModalities: [TEXT, IMAGE]` and `imageConfig`; one call per image (these models make one
    image per answer).

Response side:

* `read_answer(call, answer)` takes one answer's images (base64 kept as Google wrote it), text,
  block / filter reasons and usage;
* `to_openai(plan, results, created)` puts the images back in call order into OpenAI's
  `ImagesResponse` (`b64_json`, or `url` as a `data:` URL: the gateway stores no files). No image at
  all is a 400, never an empty `data`: `content_policy_violation` when Google's filters took them,
  `no_image` when the model answered without one.
"""

from __future__ import annotations

import base64
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from app.errors import GatewayError, InvalidRequest
from app.translate.capabilities import ImagesAPI, ModelCapabilities
from app.translate.chat_request import vertex_labels

MAX_PROMPT = 32_000  # OpenAI's limit for GPT image models
MAX_N = 10
MAX_INPUT_IMAGES = 16  # OpenAI: up to 16 images for an edit
IMAGEN_BATCH = 4  # Imagen's sampleCount is 1..4
SIDE_RANGE = (256, 4096)
MAX_RATIO = 3.0  # OpenAI: between 1:3 and 3:1
RATIO_TOLERANCE = 1.3  # a size further than this from every ratio of the model is refused

# The aspect ratios each family takes (docs/gemini-facts.md#images).
ASPECT_RATIOS: Mapping[ImagesAPI, tuple[str, ...]] = {
    "predict": ("1:1", "3:4", "4:3", "9:16", "16:9"),
    "generate_content": ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"),
}
TIERS = ("1K", "2K", "4K")
MIME_FORMATS: Mapping[str, str] = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}
FORMAT_MIMES: Mapping[str, str] = {v: k for k, v in MIME_FORMATS.items()}
# Output formats each call shape can ask Google for (`outputOptions` / `imageOutputOptions`).
_SETTABLE_FORMATS = ("png", "jpeg")

_SIZE = re.compile(r"([1-9][0-9]{1,4})x([1-9][0-9]{1,4})")
_FORM_INTEGER = re.compile(r"-?[0-9]{1,9}")
_QUALITIES = ("auto", "low", "medium", "high", "xhigh", "max", "standard", "hd")
_STYLES = ("vivid", "natural")
_BACKGROUNDS = ("auto", "opaque", "transparent")
_MODERATIONS = ("auto", "low")
_FIDELITIES = ("high", "low")
_RESPONSE_FORMATS = ("b64_json", "url")
_OUTPUT_FORMATS = ("png", "jpeg", "webp", "gif", "svg")
# Google's reasons for taking an image away (finishReason, promptFeedback.blockReason).
_SAFETY = frozenset(
    """SAFETY RECITATION BLOCKLIST PROHIBITED_CONTENT SPII IMAGE_SAFETY IMAGE_PROHIBITED_CONTENT
    IMAGE_RECITATION MODEL_ARMOR""".split()
)

ResponseFormat = Literal["b64_json", "url"]


@dataclass(frozen=True, slots=True)
class InputImage:
    """One image of an edit: its MIME type (from its bytes) and its bytes."""

    mime: str
    data: bytes


@dataclass(frozen=True, slots=True)
class ImagePlan:
    """What one images request asks for, checked."""

    model: str
    prompt: str
    n: int = 1
    size: tuple[int, int] | None = None  # (width, height) asked; None = the model's default
    response_format: ResponseFormat = "b64_json"
    output_format: str | None = None  # png | jpeg | webp
    compression: int | None = None
    moderation: str | None = None
    user: str | None = None
    images: tuple[InputImage, ...] = ()  # an edit's images, in the order sent
    edit: bool = False


@dataclass(frozen=True, slots=True)
class ImageCall:
    """One upstream call: the verb (`predict`, `generateContent`), its body, how many images it asks for."""

    verb: str
    body: dict[str, Any]
    count: int


@dataclass(frozen=True, slots=True)
class Generated:
    data: str  # base64, as Google sent it
    mime: str
    revised_prompt: str | None = None


@dataclass(slots=True)
class ImageResult:
    """What one answer holds."""

    images: list[Generated] = field(default_factory=list)
    text: str = ""
    blocked: list[str] = field(default_factory=list)  # safety reasons (block, finish, RAI filter)
    finish: str | None = None
    usage: dict[str, int] | None = None


@dataclass(frozen=True, slots=True)
class ImagesAnswer:
    body: dict[str, Any]  # OpenAI's ImagesResponse
    input_tokens: int
    output_tokens: int


# -- request ------------------------------------------------------------------------------------


def _invalid(param: str, message: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _choice(fields: Mapping[str, Any], name: str, allowed: Sequence[str]) -> str | None:
    value = fields.get(name)
    if value is None or value == "":
        return None
    if value not in allowed:
        shown = value if isinstance(value, str) else repr(value)
        raise _invalid(name, f"Invalid value for '{name}' = {shown}. Supported values: {list(allowed)}.")
    return str(value)


def _integer(fields: Mapping[str, Any], name: str, low: int, high: int, form: bool) -> int | None:
    value = fields.get(name)
    if value is None or value == "":
        return None
    if form and isinstance(value, str) and _FORM_INTEGER.fullmatch(value):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _invalid(name, f"Invalid type for '{name}': expected an integer.", "invalid_type")
    if not low <= value <= high:
        raise _invalid(name, f"Invalid value for '{name}' = {value}: it must be between {low} and {high}.")
    return value


def _text(fields: Mapping[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(name, f"Invalid type for '{name}': expected a string.", "invalid_type")
    return value


def parse_size(value: Any) -> tuple[int, int] | None:
    """OpenAI's `size` -> (width, height), None for `auto` / absent; a 400 naming `size` otherwise."""
    if value is None or value == "" or value == "auto":
        return None
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        shown = value if isinstance(value, str) else repr(value)
        raise _invalid("size", f"Invalid value for 'size' = {shown}: expected 'auto' or WIDTHxHEIGHT (such as 1024x1024).")
    width, height = int(match.group(1)), int(match.group(2))
    low, high = SIDE_RANGE
    if not (low <= width <= high and low <= height <= high):
        raise _invalid("size", f"Invalid value for 'size' = {value}: each side must be between {low} and {high} pixels.")
    if max(width, height) / min(width, height) > MAX_RATIO:
        raise _invalid("size", f"Invalid value for 'size' = {value}: the aspect ratio must be between 1:3 and 3:1.")
    return width, height


def _ratio(name: str) -> float:
    w, h = name.split(":")
    return int(w) / int(h)


def size_to_gemini(width: int, height: int, api: ImagesAPI, tiers: Sequence[str]) -> tuple[str, str | None]:
    """(aspect ratio, size tier or None) for a WxH on a model family; a 400 naming `size` when no ratio
    of the family is within `RATIO_TOLERANCE`. The tier comes from the long side (<= 1792: 1K,
    <= 2816: 2K, else 4K), lowered to the largest the model takes; None when it takes none."""
    wanted = width / height
    best = min(ASPECT_RATIOS[api], key=lambda r: abs(math.log(_ratio(r) / wanted)))
    if abs(math.log(_ratio(best) / wanted)) > math.log(RATIO_TOLERANCE):
        raise _invalid(
            "size",
            f"Invalid value for 'size' = {width}x{height}: this model makes images in the aspect ratios "
            f"{', '.join(ASPECT_RATIOS[api])}; none is close to {width}x{height}.",
        )
    long_side = max(width, height)
    tier = "1K" if long_side <= 1792 else "2K" if long_side <= 2816 else "4K"
    if not tiers:
        return best, None
    taken = [t for t in TIERS if t in tiers and TIERS.index(t) <= TIERS.index(tier)]
    return best, (taken[-1] if taken else tiers[0])


def plan_images(
    fields: Mapping[str, Any],
    images: Sequence[InputImage] = (),
    *,
    edit: bool = False,
    files: Sequence[str] = (),
) -> ImagePlan:
    """The request's fields (a JSON body, or an edit's form fields: strings) -> an `ImagePlan`.

    `images`: an edit's images; `files`: the names of the other file fields sent (`mask`, `markup`).
    """
    form = edit
    model = fields.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model", "Missing required parameter: 'model'.", "missing_required_parameter")
    prompt = fields.get("prompt")
    if prompt is None or prompt == "":
        raise _invalid("prompt", "Missing required parameter: 'prompt'.", "missing_required_parameter")
    if not isinstance(prompt, str):
        raise _invalid("prompt", "Invalid type for 'prompt': expected a string.", "invalid_type")
    if len(prompt) > MAX_PROMPT:
        raise _invalid("prompt", f"'prompt' is {len(prompt)} characters long; at most {MAX_PROMPT} are allowed.")
    n = _integer(fields, "n", 1, MAX_N, form) or 1
    size = parse_size(fields.get("size"))
    # Absent: base64, as GPT image models always answer; `url` for a name of OpenAI's DALL·E models (an
    # alias such as `dall-e-3`), whose default it is: their clients read `url`.
    default = "url" if model.lower().startswith("dall-e") else "b64_json"
    response_format = _choice(fields, "response_format", _RESPONSE_FORMATS) or default
    output_format = _choice(fields, "output_format", _OUTPUT_FORMATS)
    if output_format in ("gif", "svg"):
        raise _invalid(
            "output_format",
            f"'output_format' = {output_format} is not available: Gemini makes raster images (png, jpeg).",
            "unsupported_value",
        )
    compression = _integer(fields, "output_compression", 0, 100, form)
    if compression is not None and output_format not in ("jpeg", "webp"):
        raise _invalid(
            "output_compression", "'output_compression' applies to 'output_format' jpeg only (or webp).", "unsupported_value"
        )
    _choice(fields, "quality", _QUALITIES)  # hint: the tier follows `size`
    _choice(fields, "style", _STYLES)  # hint: describe the style in the prompt
    if _choice(fields, "background", _BACKGROUNDS) == "transparent":
        raise _invalid(
            "background",
            "'background' = transparent is not available: Gemini's images have no transparency. "
            "Use 'auto' or 'opaque'.",
            "unsupported_value",
        )
    moderation = _choice(fields, "moderation", _MODERATIONS)
    user = _text(fields, "user")
    _text(fields, "safety_identifier")  # hint
    stream = fields.get("stream")
    if stream is True or stream == "true":
        raise _invalid("stream", "Streamed image generation is not available with Gemini; leave 'stream' unset.",
                       "unsupported_value")
    if fields.get("partial_images") not in (None, "", 0, "0"):
        raise _invalid("partial_images", "'partial_images' needs streaming, which Gemini does not offer.",
                       "unsupported_value")
    if edit:
        _choice(fields, "input_fidelity", _FIDELITIES)  # hint
        for name in ("mask", "markup"):
            if name in files:
                raise _invalid(
                    name,
                    f"'{name}' cannot be honoured: Gemini's image models edit from the prompt alone. Describe "
                    "the area to change in the prompt and send the image without a mask.",
                    "unsupported_parameter",
                )
        if not images:
            raise _invalid("image", "Missing required parameter: 'image'.", "missing_required_parameter")
        if len(images) > MAX_INPUT_IMAGES:
            raise _invalid("image", f"{len(images)} images were sent; at most {MAX_INPUT_IMAGES} are allowed.")
    return ImagePlan(
        model=model, prompt=prompt, n=n, size=size, response_format=response_format,  # type: ignore[arg-type]
        output_format=output_format, compression=compression, moderation=moderation, user=user,
        images=tuple(images), edit=edit,
    )


_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
# What Gemini takes as an image part.
INPUT_MIMES = ("image/png", "image/jpeg", "image/webp", "image/heic", "image/heif")


def sniff_image(data: bytes, declared: str | None, where: str) -> InputImage:
    """An uploaded file -> an `InputImage` (MIME type from its bytes, else the declared one); a 400
    naming `image` for an empty file or a type Gemini does not take."""
    if not data:
        raise _invalid("image", f"'{where}' is empty.")
    mime = next((m for magic, m in _MAGIC if data.startswith(magic)), None)
    if mime is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        mime = "image/webp"
    if mime is None and data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1"):
        mime = "image/heic" if data[8:12] != b"mif1" else "image/heif"
    if mime is None and declared in INPUT_MIMES:
        mime = declared
    if mime not in INPUT_MIMES:
        raise _invalid("image", f"'{where}' is not a PNG, JPEG, WEBP or HEIC image.", "invalid_image_format")
    return InputImage(mime, data)


def _labels(plan: ImagePlan) -> dict[str, str]:
    return vertex_labels(None, plan.user) if plan.user else {}


def _imagen_calls(plan: ImagePlan, caps: ModelCapabilities, vertex: bool) -> list[ImageCall]:
    if plan.edit:
        raise _invalid(
            "model",
            f"The model `{plan.model}` is an Imagen model, which this gateway serves for generation only: "
            "edit images with a Gemini image model (such as gemini-2.5-flash-image).",
            "model_not_supported",
        )
    if plan.output_format == "webp":
        raise _invalid("output_format", "Imagen makes png or jpeg images, not webp.", "unsupported_value")
    parameters: dict[str, Any] = {}
    if plan.size is not None:
        aspect, tier = size_to_gemini(*plan.size, "predict", caps.image_sizes)
        parameters["aspectRatio"] = aspect
        if tier is not None:
            parameters["sampleImageSize"] = tier
    if plan.output_format is not None:
        options: dict[str, Any] = {"mimeType": FORMAT_MIMES[plan.output_format]}
        if plan.compression is not None:
            options["compressionQuality"] = plan.compression
        parameters["outputOptions"] = options
    if plan.moderation == "low":
        parameters["safetySetting"] = "BLOCK_ONLY_HIGH"
    if vertex:  # a filtered image says why (documented for Vertex AI; on the Gemini API it is left out)
        parameters["includeRaiReason"] = True
    calls = []
    left = plan.n
    labels = _labels(plan) if vertex else {}
    while left > 0:
        count = min(IMAGEN_BATCH, left)
        body: dict[str, Any] = {"instances": [{"prompt": plan.prompt}], "parameters": {"sampleCount": count, **parameters}}
        if labels:
            body["labels"] = labels
        calls.append(ImageCall("predict", body, count))
        left -= count
    return calls


def _gemini_calls(plan: ImagePlan, caps: ModelCapabilities, vertex: bool) -> list[ImageCall]:
    image_config: dict[str, Any] = {}
    if plan.size is not None:
        aspect, tier = size_to_gemini(*plan.size, "generate_content", caps.image_sizes)
        image_config["aspectRatio"] = aspect
        if tier is not None:
            image_config["imageSize"] = tier
    if plan.output_format not in (None, "png"):
        if not vertex or plan.output_format not in _SETTABLE_FORMATS:
            where = "on Vertex AI" if vertex else "on the Gemini API (Vertex AI can make jpeg)"
            raise _invalid(
                "output_format",
                f"'output_format' = {plan.output_format} is not available {where}: Gemini's image models "
                "return png there.",
                "unsupported_value",
            )
        assert plan.output_format is not None
        options: dict[str, Any] = {"mimeType": FORMAT_MIMES[plan.output_format]}
        if plan.compression is not None:
            options["compressionQuality"] = plan.compression
        image_config["imageOutputOptions"] = options
    parts: list[dict[str, Any]] = [{"text": plan.prompt}]
    parts += [{"inlineData": {"mimeType": i.mime, "data": base64.b64encode(i.data).decode("ascii")}} for i in plan.images]
    config: dict[str, Any] = {"responseModalities": ["TEXT", "IMAGE"]}
    if image_config:
        config["imageConfig"] = image_config
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": parts}], "generationConfig": config}
    labels = _labels(plan) if vertex else {}
    if labels:
        body["labels"] = labels
    call = ImageCall("generateContent", body, 1)
    return [call] * plan.n  # one image per answer: n calls, the same body


def image_calls(plan: ImagePlan, model: str, caps: ModelCapabilities, vertex: bool) -> list[ImageCall]:
    """The calls for one target (`model`: the Gemini model id), in the order their images are returned."""
    if caps.images_api == "predict":
        return _imagen_calls(plan, caps, vertex)
    return _gemini_calls(plan, caps, vertex)


# -- response -----------------------------------------------------------------------------------


def _bad_answer(detail: str) -> GatewayError:
    return GatewayError(f"The upstream sent an images answer the gateway cannot read: {detail}.", status=502,
                        code="upstream_bad_answer")


def _count(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _by_modality(details: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in details if isinstance(details, list) else ():
        if isinstance(item, dict):
            modality = str(item.get("modality", "")).upper()
            out[modality] = out.get(modality, 0) + _count(item.get("tokenCount"))
    return out


def _usage(metadata: Any) -> dict[str, int] | None:
    if not isinstance(metadata, dict):
        return None
    prompt = _by_modality(metadata.get("promptTokensDetails"))
    output = _by_modality(metadata.get("candidatesTokensDetails"))
    return {
        "input": _count(metadata.get("promptTokenCount")),
        "output": _count(metadata.get("candidatesTokenCount")) + _count(metadata.get("thoughtsTokenCount")),
        "input_text": prompt.get("TEXT", 0),
        "input_image": prompt.get("IMAGE", 0),
        "output_text": output.get("TEXT", 0),
        "output_image": output.get("IMAGE", 0),
    }


def _read_predict(call: ImageCall, answer: dict[str, Any]) -> ImageResult:
    result = ImageResult()
    predictions = answer.get("predictions", [])
    if not isinstance(predictions, list):
        raise _bad_answer("`predictions` is not a list")
    for prediction in predictions:
        if not isinstance(prediction, dict):
            raise _bad_answer("a prediction is not an object")
        data = prediction.get("bytesBase64Encoded")
        if isinstance(data, str) and data:
            prompt = prediction.get("prompt")
            result.images.append(Generated(data, str(prediction.get("mimeType") or "image/png"),
                                           prompt if isinstance(prompt, str) and prompt else None))
        elif prediction.get("raiFilteredReason"):
            result.blocked.append(str(prediction["raiFilteredReason"]))
    if not result.images and not result.blocked:
        # Imagen leaves out the samples its filters take, and says why only when asked (includeRaiReason)
        result.blocked.append(f"Imagen returned none of the {call.count} image(s) asked for: its safety filters "
                              "leave out the images they take")
    return result


def _read_generate(answer: dict[str, Any]) -> ImageResult:
    result = ImageResult(usage=_usage(answer.get("usageMetadata")))
    feedback = answer.get("promptFeedback")
    if isinstance(feedback, dict) and feedback.get("blockReason"):
        result.blocked.append(f"prompt blocked: {feedback['blockReason']}")
    candidates = answer.get("candidates") or []
    if not isinstance(candidates, list):
        raise _bad_answer("`candidates` is not a list")
    first = candidates[0] if candidates and isinstance(candidates[0], dict) else {}
    finish = first.get("finishReason")
    result.finish = str(finish) if finish else None
    content = first.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    texts = []
    found: list[tuple[str, str]] = []
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, dict) or part.get("thought"):  # thought images and text are drafts
            continue
        inline = part.get("inlineData")
        if isinstance(inline, dict) and str(inline.get("mimeType", "")).startswith("image/") and inline.get("data"):
            found.append((str(inline["data"]), str(inline["mimeType"])))
        elif isinstance(part.get("text"), str):
            texts.append(part["text"])
    result.text = "".join(texts).strip()
    result.images = [Generated(data, mime, result.text or None) for data, mime in found]
    if result.finish in _SAFETY:
        message = first.get("finishMessage")
        result.blocked.append(f"{result.finish}: {message}" if message else result.finish)
    return result


def read_answer(call: ImageCall, answer: dict[str, Any]) -> ImageResult:
    """One answer -> its images, text, safety reasons and usage."""
    if not isinstance(answer, dict):
        raise _bad_answer("it is not a JSON object")
    return _read_predict(call, answer) if call.verb == "predict" else _read_generate(answer)


def png_size(data: str) -> tuple[int, int] | None:
    """(width, height) from a base64 PNG's header (its first 24 bytes), else None."""
    try:
        head = base64.b64decode(data[:32])
    except ValueError:
        return None
    if len(head) < 24 or not head.startswith(b"\x89PNG\r\n\x1a\n") or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def _no_image(results: Sequence[ImageResult]) -> InvalidRequest:
    blocked = [reason for r in results for reason in r.blocked]
    if blocked:
        reasons = "; ".join(dict.fromkeys(blocked))
        return InvalidRequest(
            f"Your request was rejected by Google's safety filters: no image was generated ({reasons[:300]}).",
            param="prompt", code="content_policy_violation",
        )
    finishes = ", ".join(dict.fromkeys(r.finish for r in results if r.finish))
    text = next((r.text for r in results if r.text), "")
    said = f" The model said: {text[:300]!r}." if text else ""
    why = f" (finish reason {finishes})" if finishes else ""
    return InvalidRequest(
        f"The model returned no image{why}.{said} Try a more explicit prompt.",
        param="prompt", code="no_image",
    )


def to_openai(plan: ImagePlan, results: Sequence[ImageResult], created: int) -> ImagesAnswer:
    """The calls' answers, in call order -> OpenAI's `ImagesResponse` (at most `n` images)."""
    images = [image for result in results for image in result.images][: plan.n]
    if not images:
        raise _no_image(results)
    data = []
    for image in images:
        item: dict[str, Any] = {"revised_prompt": image.revised_prompt}
        if plan.response_format == "url":
            item["url"] = f"data:{image.mime};base64,{image.data}"
        else:
            item["b64_json"] = image.data
        data.append(item)
    body: dict[str, Any] = {"created": created, "data": data}
    output_format = MIME_FORMATS.get(images[0].mime)
    if output_format is not None:
        body["output_format"] = output_format
    size = png_size(images[0].data)
    if size is not None:
        body["size"] = f"{size[0]}x{size[1]}"
    usages = [r.usage for r in results if r.usage is not None]
    input_tokens = output_tokens = 0
    if usages:
        total = {key: sum(u[key] for u in usages) for key in usages[0]}
        input_tokens, output_tokens = total["input"], total["output"]
        body["usage"] = {
            "input_tokens": input_tokens,
            "input_tokens_details": {"text_tokens": total["input_text"], "image_tokens": total["input_image"]},
            "output_tokens": output_tokens,
            "output_tokens_details": {"text_tokens": total["output_text"], "image_tokens": total["output_image"]},
            "total_tokens": input_tokens + output_tokens,
        }
    return ImagesAnswer(body, input_tokens, output_tokens)
