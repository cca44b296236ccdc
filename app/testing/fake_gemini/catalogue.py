"""The fake's model catalogue: one frozen table of per-model facts.

Owns: which models exist (and on which backend), what each accepts (thinking
budgets or levels, penalties, logprobs, several candidates, image output,
streamed call arguments, thought-signature enforcement, embedding size and
Vertex verb, image sizes, Imagen), and how a model is shown as a
`Model` resource on `GET /v1beta/models`. Everything else in the fake asks
this table instead of testing model names. To add a model, add a row.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from app.testing.google_errors import GoogleError

GENERATE_METHODS = ("generateContent", "countTokens", "createCachedContent", "batchGenerateContent")
EMBED_METHODS = ("embedContent", "countTextTokens", "countTokens", "asyncBatchEmbedContent")


@dataclass(frozen=True)
class ModelSpec:
    """What one model accepts and how it thinks."""

    id: str
    display_name: str
    generation: float  # 2.0, 2.5, 3.0, 3.1 ...
    input_token_limit: int = 1_048_576
    output_token_limit: int = 65_536
    methods: tuple[str, ...] = GENERATE_METHODS
    thinking: bool = False
    # Gemini 2.5: thinkingBudget range; None when budgets are not the model's knob.
    budget_range: tuple[int, int] | None = None
    can_disable_thinking: bool = False
    thinks_by_default: bool = False
    # Gemini 3: allowed thinkingLevel values (upper case) and the default one.
    levels: tuple[str, ...] = ()
    default_level: str | None = None
    penalties: bool = False
    logprobs: bool = True
    multi_candidates: bool = True
    image_output: bool = False
    enforces_signatures: bool = False
    version: str = "001"
    temperature: float = 1.0
    top_p: float = 0.95
    top_k: int = 64
    description: str = field(default="")
    # Embedding models: the vector's full (and default) dimensionality; 0 for models that do not embed.
    embed_dims: int = 0
    # Vertex AI verb family: "embed_content" (`:embedContent` / `:batchEmbedContents`) or "predict".
    vertex_embed: str = "embed_content"
    backends: tuple[str, ...] = ("gemini", "vertex")
    # Image models: the `imageSize` / `sampleImageSize` tiers taken (empty: the field is refused) and,
    # for Imagen, `imagen=True` (`:predict` only).
    image_sizes: tuple[str, ...] = ()
    imagen: bool = False

    @property
    def is_gemini3(self) -> bool:
        return self.generation >= 3

    @property
    def generates(self) -> bool:
        return "generateContent" in self.methods

    @property
    def embeds(self) -> bool:
        return self.embed_dims > 0


def _g25(id_: str, name: str, **kw: Any) -> ModelSpec:
    return ModelSpec(id=id_, display_name=name, generation=2.5, **kw)


def _g3(id_: str, name: str, generation: float = 3.0, **kw: Any) -> ModelSpec:
    defaults: dict[str, Any] = {
        "thinking": True,
        "thinks_by_default": True,
        "logprobs": False,
        "multi_candidates": False,
        "enforces_signatures": True,
        "default_level": "HIGH",
    }
    defaults.update(kw)
    return ModelSpec(id=id_, display_name=name, generation=generation, **defaults)


def _imagen(id_: str, name: str, sizes: tuple[str, ...] = ()) -> ModelSpec:
    """An Imagen model: `:predict` only (docs/fake-gemini.md#imagen), on both backends."""
    return ModelSpec(id_, name, 1.0, input_token_limit=480, output_token_limit=8192, methods=("predict",),
                     imagen=True, image_sizes=sizes)


_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        "gemini-2.0-flash", "Gemini 2.0 Flash", 2.0, output_token_limit=8192, penalties=True, top_k=40
    ),
    _g25(
        "gemini-2.5-flash",
        "Gemini 2.5 Flash",
        thinking=True,
        budget_range=(1, 24576),
        can_disable_thinking=True,
        thinks_by_default=True,
    ),
    _g25(
        "gemini-2.5-flash-lite",
        "Gemini 2.5 Flash-Lite",
        thinking=True,
        budget_range=(512, 24576),
        can_disable_thinking=True,
        thinks_by_default=False,
    ),
    _g25(
        "gemini-2.5-pro",
        "Gemini 2.5 Pro",
        thinking=True,
        budget_range=(128, 32768),
        can_disable_thinking=False,
        thinks_by_default=True,
    ),
    _g25(
        "gemini-2.5-flash-image",
        "Gemini 2.5 Flash Image",
        input_token_limit=32768,
        output_token_limit=32768,
        image_output=True,
        multi_candidates=False,
    ),
    _g3("gemini-3-pro-preview", "Gemini 3 Pro Preview", levels=("LOW", "HIGH")),
    _g3("gemini-3-flash-preview", "Gemini 3 Flash Preview", levels=("MINIMAL", "LOW", "MEDIUM", "HIGH")),
    _g3("gemini-3.1-pro-preview", "Gemini 3.1 Pro Preview", 3.1, levels=("LOW", "MEDIUM", "HIGH")),
    _g3(
        "gemini-3-pro-image-preview",
        "Gemini 3 Pro Image Preview",
        levels=("LOW", "HIGH"),
        input_token_limit=65536,
        output_token_limit=32768,
        image_output=True,
        enforces_signatures=False,
        image_sizes=("1K", "2K", "4K"),
    ),
    ModelSpec(
        "gemini-embedding-001",
        "Gemini Embedding 001",
        1.0,
        input_token_limit=2048,
        output_token_limit=1,
        methods=EMBED_METHODS,
        embed_dims=3072,
    ),
    ModelSpec(
        "text-embedding-005",
        "Text Embedding 005",
        1.0,
        input_token_limit=2048,
        output_token_limit=1,
        methods=("predict",),
        embed_dims=768,
        vertex_embed="predict",
        backends=("vertex",),
    ),
    _imagen("imagen-4.0-generate-001", "Imagen 4", ("1K", "2K")),
    _imagen("imagen-4.0-ultra-generate-001", "Imagen 4 Ultra", ("1K", "2K")),
    _imagen("imagen-4.0-fast-generate-001", "Imagen 4 Fast"),
    _imagen("imagen-3.0-generate-002", "Imagen 3"),
)

MODELS: dict[str, ModelSpec] = {m.id: m for m in _MODELS}


def not_found(model: str, version: str, method: str = "generateContent") -> GoogleError:
    return GoogleError(
        404,
        f"models/{model} is not found for API version {version}, or is not supported for "
        f"{method}. Call ListModels to see the list of available models and their "
        "supported methods.",
    )


def find_model(name: str, version: str, *, for_generate: bool, method: str = "generateContent") -> ModelSpec:
    """The Gemini API model named `name` (with or without `models/`), or Google's 404.

    `method` (`embedContent`, `batchEmbedContents`) asks for a model that embeds instead.
    """
    model_id = name.removeprefix("models/")
    spec = MODELS.get(model_id)
    embedding = method in ("embedContent", "batchEmbedContents")
    predict = method == "predict"
    if spec is None or "gemini" not in spec.backends or (embedding and not spec.embeds):
        raise not_found(model_id, version, method)
    if for_generate and predict != spec.imagen:
        raise not_found(model_id, version, method)
    if predict:
        return spec
    if for_generate and not embedding and not spec.generates:
        raise not_found(model_id, version)
    return spec


def model_resource(spec: ModelSpec) -> dict[str, Any]:
    """The `Model` resource of the Gemini Developer API (docs/gemini-facts.md#model-resource)."""
    resource: dict[str, Any] = {
        "name": f"models/{spec.id}",
        "baseModelId": spec.id,
        "version": spec.version,
        "displayName": spec.display_name,
        "description": spec.description or f"{spec.display_name} (fake)",
        "inputTokenLimit": spec.input_token_limit,
        "outputTokenLimit": spec.output_token_limit,
        "supportedGenerationMethods": list(spec.methods),
    }
    if spec.generates:
        resource.update(
            temperature=spec.temperature, maxTemperature=2.0, topP=spec.top_p, topK=spec.top_k
        )
    if spec.thinking:
        resource["thinking"] = True
    return resource


def list_models(page_size: int | None, page_token: str | None, backend: str = "gemini") -> dict[str, Any]:
    """One page of `ListModels`: `{models, nextPageToken?}`; pageSize default 50, max 1000."""
    size = 50 if not page_size or page_size <= 0 else min(page_size, 1000)
    start = 0
    if page_token:
        try:
            start = int(base64.urlsafe_b64decode(page_token.encode()).decode().removeprefix("offset:"))
        except ValueError:
            raise GoogleError(400, "Invalid page token.") from None
    listed = [m for m in _MODELS if backend in m.backends]
    specs = listed[start : start + size]
    page: dict[str, Any] = {"models": [model_resource(s) for s in specs]}
    if start + size < len(listed):
        page["nextPageToken"] = base64.urlsafe_b64encode(f"offset:{start + size}".encode()).decode()
    return page


def publisher_model(spec: ModelSpec) -> dict[str, Any]:
    """Vertex's `PublisherModel` resource (the few fields the gateway reads)."""
    return {
        "name": f"publishers/google/models/{spec.id}",
        "versionId": spec.version,
        "launchStage": "GA",
        "openSourceCategory": "PROPRIETARY",
    }


def list_publisher_models(page_size: int | None, page_token: str | None) -> dict[str, Any]:
    """One page of Vertex's `publishers.models.list`: `{publisherModels, nextPageToken?}`."""
    page = list_models(page_size, page_token, "vertex")
    out: dict[str, Any] = {"publisherModels": [publisher_model(MODELS[m["baseModelId"]]) for m in page["models"]]}
    if "nextPageToken" in page:
        out["nextPageToken"] = page["nextPageToken"]
    return out
