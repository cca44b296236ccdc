"""The access log: one line per request, as JSON (default) or text, or off (`server.access_log`).

A line holds figures and names only (docs/design.md#observability): time,
request id, method, path, status, the model asked, the upstream and Gemini
model that served it, attempts, latency and time to first token in ms,
token counts, the principal's name (never a key) and the error code. Prompts
and answers are never logged. Lines go to stderr, bare (JSON lines parse as
they are). They do not go through `logging`: a log record, its handler lock
and a flush per line cost more than the whole translation of a request
(measured: ~75 us a line). Lines are gathered and written together, at most
`FLUSH_AFTER` seconds after the first one, and at shutdown (`flush`).

`current_request_id` is the request id of the request being served (a
context variable set by the pipeline); `RequestIdFilter` puts it into every
log record, so every log line of a request carries it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
import time
from typing import IO, Any

import orjson

from app.pipeline.context import RequestContext

current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

FLUSH_AFTER = 0.05  # seconds between an access-log line and its write to stderr, at most


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id.get()
        return True


_second: list[Any] = [None, ""]  # the last second formatted, and its text (strftime costs microseconds)


def _iso(wall: float) -> str:
    whole = int(wall)
    if _second[0] != whole:
        _second[0], _second[1] = whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{_second[1]}.{int((wall - whole) * 1000):03d}Z"


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
    def __init__(self, mode: str, stream: IO[str] | None = None) -> None:
        self.mode = mode  # "json" | "text" | "off"
        self.enabled = mode != "off"
        self._stream = stream  # None: sys.stderr at the time of writing
        self._pending: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    def write(self, ctx: RequestContext) -> None:
        if not self.enabled:
            return
        fields = access_fields(ctx)
        if self.mode == "json":
            self._pending.append(orjson.dumps(fields).decode())
        else:
            self._pending.append(" ".join(f"{k}={'-' if v is None else v}" for k, v in fields.items()))
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(FLUSH_AFTER, self.flush)

    def flush(self) -> None:
        """Write the lines gathered so far."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        text = "\n".join(self._pending) + "\n"
        self._pending.clear()
        stream = self._stream or sys.stderr
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):  # stderr closed or gone: the lines are lost, the gateway goes on
            pass
