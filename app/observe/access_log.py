"""The access log: one line per request, as JSON (default) or text, or off (`server.access_log`).

A line holds figures and names only (docs/design.md#observability): time,
request id, method, path, status, the model asked, the upstream and Gemini
model that served it, attempts, latency and time to first token in ms,
token counts, the principal's name (never a key) and the error code. Prompts
and answers are never logged. Lines go to the `gemini_proxy.access` logger,
whose handler writes the bare line (JSON lines parse as they are).

`current_request_id` is the request id of the request being served (a
context variable set by the pipeline); `RequestIdFilter` puts it into every
log record, so every log line of a request carries it.
"""

from __future__ import annotations

import contextvars
import logging
import time
from typing import Any

import orjson

from app.pipeline.context import RequestContext

current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

access_log = logging.getLogger("gemini_proxy.access")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id.get()
        return True


def _iso(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{int(wall % 1 * 1000):03d}Z"


def access_fields(ctx: RequestContext) -> dict[str, Any]:
    usage = ctx.usage
    ttft = ctx.ttft()
    return {
        "time": _iso(ctx.wall),
        "request_id": ctx.request_id,
        "method": ctx.method,
        "path": ctx.path,
        "status": ctx.status,
        "model": ctx.model,
        "upstream": ctx.upstream,
        "served_model": ctx.served_model,
        "attempts": ctx.attempts,
        "latency_ms": round(ctx.elapsed() * 1000, 2),
        "ttft_ms": None if ttft is None else round(ttft * 1000, 2),
        "prompt_tokens": usage.prompt if usage else None,
        "completion_tokens": usage.completion if usage else None,
        "reasoning_tokens": usage.reasoning if usage else None,
        "cached_tokens": usage.cached if usage else None,
        "principal": ctx.principal.label,
        "error_code": ctx.error_code,
    }


class AccessLog:
    def __init__(self, mode: str) -> None:
        self.mode = mode  # "json" | "text" | "off"
        self.enabled = mode != "off"

    def write(self, ctx: RequestContext) -> None:
        if not self.enabled or not access_log.isEnabledFor(logging.INFO):
            return
        fields = access_fields(ctx)
        if self.mode == "json":
            access_log.info(orjson.dumps(fields).decode())
        else:
            access_log.info(" ".join(f"{k}={'-' if v is None else v}" for k, v in fields.items()))


def configure_access_log(stream: Any = None) -> None:
    """The access logger writes bare lines to its own handler (stderr by default)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_log.handlers = [handler]
    access_log.propagate = False
    access_log.setLevel(logging.INFO)
