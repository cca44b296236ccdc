"""Imagen's `:predict` (Gemini API `models/{imagen}:predict` with an API key, Vertex AI's publisher
model path with a token): docs/fake-gemini.md#imagen.

Owns: the request shape, checked as strictly as Google (unknown fields anywhere are a 400 in
Google's parse-error shape; `instances` holds one `{prompt}`; `sampleCount` 1..4, 4 when absent;
`aspectRatio` one of the five Imagen ratios; `sampleImageSize` only `1K`/`2K` and only on the models
that take it; the enums of `safetySetting`, `personGeneration`, `language`; `outputOptions`
png/jpeg with a quality 0..100; `seed` not with `addWatermark`; `storageUri` and `labels` on Vertex
only), and the answer: one prediction per sample with real PNG bytes (`extras.image_bytes`, sized by
the ratio and tier, coloured per sample), `prompt` when the prompt was enhanced.

A `#fake {...}` line in the prompt (stripped) or a queued script: `rai_filtered: k` takes the last k
samples away (`raiFilteredReason` entries with `includeRaiReason`, else nothing: Google then
answers `{}` when every sample is taken), `enhanced_prompt`, and the common failure keys (`error`,
`fail_*`, `first_byte_delay_ms`, `reset_before_response`).
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from aiohttp import web

from app.testing.fake_gemini import extras
from app.testing.fake_gemini.catalogue import ModelSpec
from app.testing.fake_gemini.delivery import Delivery, deliver
from app.testing.fake_gemini.directives import parse_directive, split_inline
from app.testing.fake_gemini.failures import pick_failure, to_google_error
from app.testing.fake_gemini.state import FakeState
from app.testing.google_errors import GoogleError, invalid_argument, parse_errors

if TYPE_CHECKING:
    from app.testing.fake_gemini.api import Call

ASPECT_RATIOS = ("1:1", "3:4", "4:3", "9:16", "16:9")
SAFETY_SETTINGS = ("BLOCK_LOW_AND_ABOVE", "BLOCK_MEDIUM_AND_ABOVE", "BLOCK_ONLY_HIGH", "BLOCK_NONE")
PERSON_GENERATION = ("DONT_ALLOW", "ALLOW_ADULT", "ALLOW_ALL", "dont_allow", "allow_adult", "allow_all")
LANGUAGES = ("auto", "en", "ja", "ko", "hi", "zh", "pt", "es")
OUTPUT_MIMES = ("image/png", "image/jpeg")
DEFAULT_SAMPLES = 4
RAI_REASON = (
    "Your current safety filter threshold filtered out the generated image. You will not be charged for "
    "blocked images. Try rephrasing the prompt. Support codes: 58061214"
)

_TOP = {"instances", "parameters"}
_VERTEX_TOP = {"labels"}
_PARAMETERS: dict[str, tuple[type, ...]] = {
    "sampleCount": (int,), "aspectRatio": (str,), "sampleImageSize": (str,), "negativePrompt": (str,),
    "guidanceScale": (int, float), "seed": (int,), "safetySetting": (str,), "personGeneration": (str,),
    "includeRaiReason": (bool,), "includeSafetyAttributes": (bool,), "language": (str,),
    "outputOptions": (dict,), "addWatermark": (bool,), "enhancePrompt": (bool,),
}
_VERTEX_PARAMETERS: dict[str, tuple[type, ...]] = {"storageUri": (str,)}


def _unknown(names: list[str], where: str) -> GoogleError:
    return parse_errors([(where, f'Invalid JSON payload received. Unknown name "{n}" at \'{where}\': Cannot find field.')
                         for n in names])


def _typed(value: Any, kinds: tuple[type, ...]) -> bool:
    return isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))


def check_request(backend: str, spec: ModelSpec, payload: Any) -> tuple[str, dict[str, Any]]:
    """(the prompt, the parameters) of one `:predict` call to an Imagen model, or Google's 400."""
    if not isinstance(payload, dict):
        raise invalid_argument("Invalid JSON payload received. Expected an object.")
    allowed = _TOP | (_VERTEX_TOP if backend == "vertex" else set())
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise _unknown(unknown, "")
    instances = payload.get("instances")
    if not isinstance(instances, list) or len(instances) != 1:
        raise invalid_argument("instances: exactly one instance with a prompt is required.", "instances")
    instance = instances[0]
    if not isinstance(instance, dict):
        raise invalid_argument("instances[0] must be an object.", "instances[0]")
    if set(instance) - {"prompt"}:
        raise _unknown(sorted(set(instance) - {"prompt"}), "instances[0]")
    prompt = instance.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise invalid_argument("instances[0].prompt: the prompt is empty.", "instances[0].prompt")
    parameters = payload.get("parameters", {})
    if not isinstance(parameters, dict):
        raise invalid_argument("parameters must be an object.", "parameters")
    known = _PARAMETERS | (_VERTEX_PARAMETERS if backend == "vertex" else {})
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise _unknown(unknown, "parameters")
    for name, value in parameters.items():
        if not _typed(value, known[name]):
            raise invalid_argument(f"parameters.{name}: invalid type.", f"parameters.{name}")
    _check_values(spec, parameters)
    return prompt, parameters


def _check_values(spec: ModelSpec, parameters: dict[str, Any]) -> None:
    count = parameters.get("sampleCount", DEFAULT_SAMPLES)
    if not 1 <= count <= 4:
        raise invalid_argument(f"sampleCount must be between 1 and 4, got {count}.", "parameters.sampleCount")
    checks = (("aspectRatio", ASPECT_RATIOS), ("safetySetting", SAFETY_SETTINGS),
              ("personGeneration", PERSON_GENERATION), ("language", LANGUAGES))
    for name, values in checks:
        value = parameters.get(name)
        if value is not None and value not in values:
            raise invalid_argument(f"parameters.{name}: unsupported value {value!r}.", f"parameters.{name}")
    size = parameters.get("sampleImageSize")
    if size is not None and size not in spec.image_sizes:
        raise invalid_argument(
            f"sampleImageSize {size!r} is not supported by {spec.id}"
            + (f"; supported: {', '.join(spec.image_sizes)}." if spec.image_sizes else "."),
            "parameters.sampleImageSize",
        )
    if parameters.get("seed") is not None and parameters.get("addWatermark", True):
        raise invalid_argument("Seed is not supported when watermark is enabled.", "parameters.seed")
    options = parameters.get("outputOptions")
    if options is not None:
        unknown = sorted(set(options) - {"mimeType", "compressionQuality"})
        if unknown:
            raise _unknown(unknown, "parameters.outputOptions")
        if options.get("mimeType", "image/png") not in OUTPUT_MIMES:
            raise invalid_argument(f"Unsupported mime type: {options.get('mimeType')}.", "parameters.outputOptions.mimeType")
        quality = options.get("compressionQuality")
        if quality is not None and not (_typed(quality, (int,)) and 0 <= quality <= 100):
            raise invalid_argument("compressionQuality must be between 0 and 100.",
                                   "parameters.outputOptions.compressionQuality")


def predictions(spec: ModelSpec, prompt: str, parameters: dict[str, Any], filtered: int,
                enhanced: str | None) -> list[dict[str, Any]]:
    count = parameters.get("sampleCount", DEFAULT_SAMPLES)
    mime = (parameters.get("outputOptions") or {}).get("mimeType", "image/png")
    if enhanced is None and parameters.get("enhancePrompt"):
        enhanced = f"{prompt}, highly detailed"
    out: list[dict[str, Any]] = []
    for index in range(count):
        if index >= count - filtered:
            if parameters.get("includeRaiReason"):
                out.append({"raiFilteredReason": RAI_REASON})
            continue
        data = extras.image_bytes(parameters.get("aspectRatio", "1:1"), parameters.get("sampleImageSize", "1K"),
                                  f"{spec.id}\x00{prompt}\x00{index}", mime)
        item: dict[str, Any] = {"bytesBase64Encoded": base64.b64encode(data).decode("ascii"), "mimeType": mime}
        if enhanced:
            item["prompt"] = enhanced
        out.append(item)
    return out


async def answer(
    request: web.Request, state: FakeState, call: Call, spec: ModelSpec, payload: Any, entry: dict[str, Any]
) -> web.StreamResponse:
    """Check one Imagen `:predict` call, then answer it, or fail it as its directive says."""
    prompt, parameters = check_request(call.backend, spec, payload)
    state.counters["imagen_requests"] += 1
    found, cleaned = split_inline(prompt)
    script = state.scripts.popleft() if state.scripts else {}
    state.counters["scripts_applied"] += bool(script)
    raw = {**found, **script}
    entry["directive"] = raw or None
    directive = parse_directive(raw)
    failure = pick_failure(directive, credential=call.credential, project=call.project, fail_counts=state.fail_counts)
    error = to_google_error(failure, call.backend, spec.id) if failure is not None else None
    body: dict[str, Any] = {}
    if error is None:
        made = predictions(spec, cleaned or prompt, parameters, directive.rai_filtered, directive.enhanced_prompt)
        state.counters["images_returned"] += sum(1 for p in made if "bytesBase64Encoded" in p)
        if made:
            body["predictions"] = made
    delivery = Delivery(directive, False, False, body, failure, error, entry)
    return await deliver(request, state, delivery)
