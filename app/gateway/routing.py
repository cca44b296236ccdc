"""Model routing: a public model name -> ordered (upstream, Gemini model) targets.

Resolution order for a requested name:
1. a configured route (`models:`), by exact name;
2. an alias (`aliases:`), which points at a route or at a Gemini model;
3. passthrough (when enabled): the name itself, with the prefixes clients use
   for Gemini ids stripped (`models/`, `google/`, `gemini/`), on the first
   upstream (then on the other upstreams as fall-backs).

Targets of one route are tried by `priority` (lower first); targets of equal
priority are shuffled by `weight` for every request, so load spreads as asked.

`for_endpoint` keeps the targets whose model serves an endpoint (`chat`,
`embeddings`, `images`: the capability table says which); a model that serves
none of them there is a 400 naming `model` and the endpoint that serves it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from app.errors import InvalidRequest, ModelNotFound
from app.gateway.upstreams import Upstream
from app.settings import Settings
from app.translate.capabilities import ModelCapabilities, capabilities_for

_PREFIXES = ("models/", "google/", "gemini/", "publishers/google/models/")
_PASSTHROUGH_CACHE = 1024
# What may stand in an upstream URL as a model id: no `/`, so nothing outside `models/` can be reached.
MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,199}")


# Each endpoint's path, and what its models are called, for the wrong-endpoint message.
ENDPOINT_PATHS = {"chat": "/v1/chat/completions", "embeddings": "/v1/embeddings", "images": "/v1/images/generations"}
_KINDS = {"chat": "a chat model", "embeddings": "an embedding model", "images": "an image model"}


def gemini_model_id(name: str) -> str:
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


@dataclass(frozen=True)
class Target:
    upstream: Upstream
    model: str
    capabilities: ModelCapabilities
    priority: int = 0
    weight: int = 1

    @property
    def label(self) -> str:
        return f"{self.upstream.name}/{self.model}"


class Router:
    def __init__(self, settings: Settings, upstreams: list[Upstream], rng: Callable[[], float] = random.random) -> None:
        self.upstreams = {u.name: u for u in upstreams}
        self.order = list(upstreams)
        self.passthrough = settings.passthrough
        self._patterns = settings.capabilities
        self._rng = rng
        self.routes: dict[str, list[Target]] = {}
        for route in settings.models:
            self.routes[route.name] = [
                Target(
                    upstream=self.upstreams[t.upstream] if t.upstream else self.order[0],
                    model=gemini_model_id(t.model),
                    capabilities=capabilities_for(gemini_model_id(t.model), self._patterns, route.capabilities),
                    priority=t.priority,
                    weight=t.weight,
                )
                for t in route.targets
            ]
        for alias, target in settings.aliases.items():
            if alias in self.routes:
                continue
            if target in self.routes:
                self.routes[alias] = self.routes[target]
            elif self.order:
                model = gemini_model_id(target)
                # Like passthrough: the first upstream, the others as fall-backs in configured order.
                self.routes[alias] = [
                    Target(u, model, capabilities_for(model, self._patterns), priority=i)
                    for i, u in enumerate(self.order)
                ]
        self._passthrough: dict[str, list[Target]] = {}

    def public_names(self) -> list[str]:
        return list(self.routes)

    def endpoints_of(self, name: str) -> tuple[str, ...]:
        """The endpoints a public name serves (its route's first target, else the model's own facts)."""
        targets = self.routes.get(name)
        if targets:
            return targets[0].capabilities.endpoints
        return capabilities_for(gemini_model_id(name), self._patterns).endpoints

    def _ordered(self, targets: list[Target]) -> list[Target]:
        if len(targets) < 2:
            return targets
        # Weighted random order inside each priority (Efraimidis-Spirakis keys).
        keyed = [(t.priority, -(self._rng() ** (1.0 / t.weight)), i, t) for i, t in enumerate(targets)]
        keyed.sort()
        return [t for *_, t in keyed]

    def resolve(self, name: str) -> list[Target]:
        targets = self.routes.get(name)
        if targets is not None:
            return self._ordered(targets)
        cached = self._passthrough.get(name)  # by the name as asked: one lookup per request on the hot path
        if cached is not None:
            return cached
        if not self.passthrough or not self.order:
            raise ModelNotFound(name)
        model = gemini_model_id(name)
        if model in self.routes:
            return self._ordered(self.routes[model])
        if MODEL_ID.fullmatch(model) is None:  # a client's text goes into the upstream URL: never a path
            raise InvalidRequest(f"Invalid model name '{name}'.", param="model", code="invalid_value")
        if len(self._passthrough) >= _PASSTHROUGH_CACHE:
            self._passthrough.clear()
        caps = capabilities_for(model, self._patterns)
        cached = self._passthrough[name] = [Target(u, model, caps) for u in self.order]
        return cached


def for_endpoint(targets: list[Target], endpoint: str, name: str, path: str | None = None) -> list[Target]:
    """The targets whose model serves `endpoint`; a 400 naming `model` when none does (`path`: the one asked)."""
    for target in targets:
        if endpoint not in target.capabilities.endpoints:
            break
    else:
        return targets
    kept = [t for t in targets if endpoint in t.capabilities.endpoints]
    if kept:
        return kept
    served = [e for e in targets[0].capabilities.endpoints if e in ENDPOINT_PATHS]
    kind = _KINDS.get(served[0], "a model") if served else "a model"
    use = " or ".join(f"POST {ENDPOINT_PATHS[e]}" for e in served) or "another endpoint"
    raise InvalidRequest(
        f"The model `{name}` is {kind}: use it with {use}, not with POST {path or ENDPOINT_PATHS.get(endpoint, endpoint)}.",
        param="model",
        code="model_not_supported",
    )
