"""Logging set-up: one format, and no secret ever reaches a log line.

`configure_logging(level, secrets)` installs a filter on the root handlers
that replaces every configured secret (upstream API keys, client keys) found
in a message or its arguments with `[REDACTED]`, as a last line of defence:
the code itself logs keys only by label (`<upstream>#<n>`). Every line carries
the request id of the request it was written for (`[req_...]`, `-` outside
requests). The access log is written apart (observe/access_log.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from app.observe.access_log import RequestIdFilter

REDACTED = "[REDACTED]"


class RedactingFilter(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            scrubbed = self.scrub(message)
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = self.scrub(record.exc_text)
            if scrubbed != message:
                record.msg, record.args = scrubbed, None
        return True


def configure_logging(level: str, secrets: Iterable[str] = ()) -> None:
    redacting = RedactingFilter(secrets)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"))
    handler.addFilter(RequestIdFilter())
    handler.addFilter(redacting)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    # Recent Alembic says which of its autogenerate plugins it set up, one line each, at every start:
    # nothing an operator acts on. Its migration lines ("Running upgrade ...") stay.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
