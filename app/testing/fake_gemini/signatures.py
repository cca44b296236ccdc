"""Thought signatures: issuing them, and Gemini 3's checks on the way back.

Owns: the `Signer` (HMAC-SHA256 under a per-server secret, over model +
function name + canonical args, or model + text for answer signatures),
the bypass values, and `check_history`, which applies the signature rule of
docs/gemini-facts.md#thought-signatures to a request's `contents`: for models with
`enforces_signatures` (Gemini 3 except the image model), in the current turn,
the first `functionCall` part of every `model` Content carries a signature
this server issued for that very call, or a bypass value. (Turn order and
response counts are `gemini_schema`'s.)

Signatures are base64 (standard alphabet) and always contain `+`, `/` and `=`.
Like Google's proto-JSON parser, the check compares *bytes* (either alphabet,
padding optional), so the google-genai SDK's URL-safe re-encoding passes; a
signature whose text differs from the issued one is counted as re-encoded,
which lets a test prove byte-for-byte pass-through.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from app.testing.fake_gemini import body as rq
from app.testing.fake_gemini.catalogue import ModelSpec
from app.testing.google_errors import GoogleError

Backend = Literal["gemini", "vertex"]

# Encodes to "++++////", so every signature holds both non-alphanumeric characters.
_MAGIC = b"\xfb\xef\xbe\xff\xff\xff"
SKIP_VALIDATOR = "skip_thought_signature_validator"
CONTEXT_ENGINEERING = "context_engineering_is_the_way_to_go"
BYPASS_VALUES: dict[str, frozenset[str]] = {
    "gemini": frozenset({SKIP_VALIDATOR, CONTEXT_ENGINEERING}),
    "vertex": frozenset({SKIP_VALIDATOR}),
}
CORRUPTED = "Corrupted thought signature."


def decode(signature: str) -> bytes | None:
    """The bytes proto-JSON reads from a base64 field (standard or URL-safe, padding optional)."""
    text = signature.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


_BYPASS_BYTES = {backend: frozenset(decode(v) for v in values) for backend, values in BYPASS_VALUES.items()}


def _canonical(value: Any) -> Any:
    """Args as the gateway may round-trip them: integral floats compare equal to ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


class Signer:
    """Issues and verifies this server's signatures."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _sign(self, kind: bytes, *fields: bytes) -> str:
        mac = hmac.new(self._secret, b"\x00".join((kind, *fields)), hashlib.sha256).digest()
        # 6 + 32 + 32 + 1 = 71 bytes: not a multiple of 3, so the text ends in "=".
        raw = _MAGIC + mac + hashlib.sha256(mac).digest() + kind[:1]
        return base64.b64encode(raw).decode("ascii")

    def for_call(self, model: str, name: str, args: Any) -> str:
        canonical = orjson.dumps(_canonical(args or {}), option=orjson.OPT_SORT_KEYS)
        return self._sign(b"call", model.encode(), name.encode(), canonical)

    def for_text(self, model: str, text: str) -> str:
        return self._sign(b"text", model.encode(), text.encode())

    def verify_call(self, model: str, name: str, args: Any, sig: str) -> Literal["exact", "reencoded", "invalid"]:
        issued = self.for_call(model, name, args)
        if hmac.compare_digest(issued, sig):
            return "exact"
        received = decode(sig)
        if received is not None and hmac.compare_digest(received, base64.b64decode(issued)):
            return "reencoded"
        return "invalid"


@dataclass
class SignatureReport:
    bypasses: int = 0  # bypass values accepted
    reencoded: int = 0  # valid signatures whose text was not the issued text


def check_history(payload: dict[str, Any], spec: ModelSpec, backend: Backend, signer: Signer) -> SignatureReport:
    """Raise Google's 400 for a missing or corrupted signature; report what was accepted."""
    report = SignatureReport()
    if not spec.enforces_signatures:
        return report
    items = rq.contents(payload)
    for index in range(rq.current_turn_start(items), len(items)):
        content = items[index]
        if rq.role(content) != "model":
            continue
        first = next((p for p in rq.parts(content) if rq.function_call(p) is not None), None)
        if first is None:
            continue
        call = rq.function_call(first) or {}
        name = str(call.get("name", ""))
        sig = rq.signature(first)
        if sig is None or sig == "":
            raise GoogleError(
                400,
                f"Function call `{name}` in the `{index}.` content block is missing a "
                "`thought_signature`.",
            )
        if decode(sig) in _BYPASS_BYTES[backend]:
            report.bypasses += 1
            continue
        verdict = signer.verify_call(spec.id, name, call.get("args"), sig)
        if verdict == "invalid":
            raise GoogleError(400, CORRUPTED)
        report.reencoded += verdict == "reencoded"
    return report
