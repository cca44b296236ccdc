"""Prices of Gemini models and the cost of one request (docs/team.md#usage-and-prices).

The built-in table is Google's Gemini Developer API list prices, standard tier,
in USD per 1M tokens, as of `PRICES_AS_OF` (ai.google.dev/gemini-api/docs/pricing,
cross-checked with LiteLLM's table). `pricing:` in the config overrides a model's
row, or adds one (a model name or an fnmatch glob, e.g. `my-tuned-*`).

What is billed (docs/gemini-facts.md, usageMetadata):

* prompt tokens (`promptTokenCount` + `toolUsePromptTokenCount`) at the input rate,
  except the cached ones (`cachedContentTokenCount`, part of the prompt) at the cached rate;
* output = answer + thinking tokens (`candidatesTokenCount` + `thoughtsTokenCount`),
  thinking billed as output;
* a model with a long-prompt tier (2.5 Pro, 3.x Pro: over 200k prompt tokens) bills every
  token of such a request at the tier's rates.

A request is priced by the model that served it (Gemini's `modelVersion`, else the
routed Gemini model id), never by the name the client asked for. A model the table
does not know costs `None` (shown as null, summed as 0) and is warned about once.
Costs are integer micro-USD; the rates are converted once, at start.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from app.pipeline.context import Usage
from app.settings import PriceSettings

log = logging.getLogger("gemini_proxy.usage")

PRICES_AS_OF = "2026-12-06"

# model: (input, output, cached input, long-prompt threshold, long input, long output, long cached) per 1M tokens
_P = tuple[str, str, str | None, int | None, str | None, str | None, str | None]
DEFAULT_PRICES: dict[str, _P] = {
    "gemini-2.5-pro": ("1.25", "10.00", "0.125", 200_000, "2.50", "15.00", "0.25"),  # retired on the Gemini API 2026-12-01
    "gemini-2.5-flash": ("0.30", "2.50", "0.03", None, None, None, None),  # retired on the Gemini API 2026-12-01
    "gemini-2.5-flash-lite": ("0.10", "0.40", "0.01", None, None, None, None),
    "gemini-3-pro-preview": ("2.00", "12.00", "0.20", 200_000, "4.00", "18.00", "0.40"),  # shut down 2026-03-09
    "gemini-3.1-pro-preview": ("2.00", "12.00", "0.20", 200_000, "4.00", "18.00", "0.40"),
    "gemini-3-flash-preview": ("0.50", "3.00", "0.05", None, None, None, None),
    "gemini-3.1-flash-lite": ("0.25", "1.50", "0.025", None, None, None, None),
    "gemini-3.5-flash-lite": ("0.30", "2.50", "0.03", None, None, None, None),
    "gemini-3.5-flash": ("1.50", "9.00", "0.15", None, None, None, None),
    "gemini-3.8-flash": ("0.75", "3.75", "0.075", None, None, None, None),
    "gemini-embedding-001": ("0.15", "0", None, None, None, None, None),
    "gemini-embedding-2": ("0.20", "0", None, None, None, None, None),
    "gemini-2.5-flash-image": ("0.30", "2.50", "0.03", None, None, None, None),  # text output; image tokens 30.00
    "gemini-3-pro-image-preview": ("2.00", "12.00", None, None, None, None, None),  # text output; image tokens 120.00
    "gemini-3.1-flash-image": ("0.50", "3.00", None, None, None, None, None),  # text output; image tokens 60.00
}


PICO = 10**6  # rates are kept as integer pico-USD per token: exact sums, integer arithmetic on the request path


@dataclass(frozen=True, slots=True)
class Rates:
    """Pico-USD per token (= micro-USD per 1M tokens), from the USD-per-1M figures."""

    input: int
    output: int
    cached: int


@dataclass(frozen=True, slots=True)
class Price:
    base: Rates
    long_threshold: int | None = None
    long: Rates | None = None

    def cost_micro(self, usage: Usage) -> int:
        """Integer micro-USD of one request's usage (OpenAI figures: completion includes reasoning)."""
        rates = self.base
        if self.long is not None and self.long_threshold is not None and usage.prompt > self.long_threshold:
            rates = self.long
        cached = min(usage.cached, usage.prompt)
        pico = (usage.prompt - cached) * rates.input + cached * rates.cached + usage.completion * rates.output
        return (pico + PICO // 2) // PICO  # rounded half up to whole micro-USD


def _d(value: str | float | None, default: int) -> int:
    return default if value is None else int(Decimal(str(value)) * PICO)


def _price(inp: str | float, out: str | float, cached: str | float | None, threshold: int | None,
           long_in: str | float | None, long_out: str | float | None, long_cached: str | float | None) -> Price:
    base = Rates(_d(inp, 0), _d(out, 0), _d(cached, _d(inp, 0)))
    if threshold is None:
        return Price(base)
    long_input = _d(long_in, base.input)
    return Price(base, threshold, Rates(long_input, _d(long_out, base.output), _d(long_cached, long_input)))


def price_of_settings(p: PriceSettings) -> Price:
    return _price(p.input, p.output, p.cached, p.long_prompt_threshold, p.long_input, p.long_output, p.long_cached)


class PriceTable:
    """Model -> price: the config's names, then its globs (in order), then the built-in table; built once at start."""

    def __init__(self, overrides: Mapping[str, PriceSettings] | None = None) -> None:
        self.defaults = {model: _price(*row) for model, row in DEFAULT_PRICES.items()}
        exact: dict[str, Price] = {}
        globs: list[tuple[str, Price]] = []
        for model, settings in (overrides or {}).items():
            if any(c in model for c in "*?["):
                globs.append((model, price_of_settings(settings)))
            else:
                exact[model] = price_of_settings(settings)
        self.exact = exact
        self.globs = globs
        self._found: dict[str, Price | None] = {}  # memo of lookups (bounded: names come from Google or the config)
        self._warned: set[str] = set()  # models warned about (once each)

    def lookup(self, model: str) -> Price | None:
        try:
            return self._found[model]
        except KeyError:
            pass
        bare = model.removeprefix("models/")
        price = self.exact.get(bare)
        if price is None:
            price = next((p for glob, p in self.globs if fnmatch.fnmatchcase(bare, glob)), None)
        if price is None:
            price = self.defaults.get(bare)
        if price is None:
            # `gemini-2.5-flash-001`, `gemini-2.5-flash-preview-09-2025`: the longest known prefix
            known = {**self.defaults, **self.exact}
            for name in sorted(known, key=len, reverse=True):
                if bare.startswith(name + "-") and not bare[len(name) + 1:].startswith(("lite", "image")):
                    price = known[name]
                    break
        if len(self._found) < 10_000:
            self._found[model] = price
        return price

    def cost_micro(self, usage: Usage | None, *models: str | None) -> int | None:
        """The cost of `usage` priced by the first of `models` the table knows; None when none is known."""
        if usage is not None and usage.unpriced:
            return None  # Google billed a call whose answer counted nothing (Imagen): unknown, not free
        if usage is None or not (usage.prompt or usage.completion):
            return 0
        for model in models:
            if model:
                price = self.lookup(model)
                if price is not None:
                    return price.cost_micro(usage)
        name = next((m for m in models if m), "")
        if name not in self._warned and len(self._warned) < 1000:
            self._warned.add(name)
            log.warning("no price for model %r: its usage is recorded with cost null (add it under `pricing:`)", name[:100])
        return None
