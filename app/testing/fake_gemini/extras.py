"""Optional pieces of a reply, built deterministically.

Owns: the tiny PNG returned by `image: true`, grounding metadata (web
chunks, supports with UTF-8 *byte* offsets, proto3-style omitted zero start
index), code-execution parts, safety ratings for blocked output or prompts,
and log-probabilities (one token per word, stable ids and values).
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
import zlib
from typing import Any

_TOKEN_RE = re.compile(r"\s*\S+|\s+")
_SENTENCE_RE = re.compile(r"[^.!?]+[.!?]*\s*")
HARM_CATEGORIES = (
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
)
GROUNDING_PREFIX = "Paris has many cafés. "
CODE = 'values = [1, 2, 3, 4]\nprint(f"sum={sum(values)}")\n'
CODE_OUTPUT = "sum=10\n"
CODE_INTRO = "Let me compute that with Python.\n"
IMAGE_OUTPUT_TOKENS = 1290


def _png(width: int = 2, height: int = 2, rgb: tuple[int, int, int] = (66, 133, 244)) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


PNG_BASE64 = base64.b64encode(_png()).decode("ascii")


# Pixels per ratio unit for each size tier: a 16:9 image at 1K is 32x18 (small, real PNGs).
_TIER_SCALE = {"1K": 2, "2K": 4, "4K": 8}
# A JPEG's markers only (SOI, JFIF APP0, EOI): the fake does not encode JPEG; the bytes say the type.
JPEG_STUB = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9"


def image_bytes(aspect: str | None = None, size: str | None = None, seed: str = "", mime: str = "image/png") -> bytes:
    """A deterministic image: a PNG whose pixel size follows the aspect ratio and tier (1:1 at 1K is
    2x2), its colour from `seed`; for `image/jpeg`, `JPEG_STUB`."""
    if mime == "image/jpeg":
        return JPEG_STUB
    if aspect is None and size is None and not seed:
        return _png()
    w, h = (int(x) for x in (aspect or "1:1").split(":"))
    scale = _TIER_SCALE.get(size or "1K", 2)
    digest = hashlib.sha256(seed.encode()).digest()
    return _png(w * scale, h * scale, (digest[0], digest[1], digest[2]))


def image_part(aspect: str | None = None, size: str | None = None, seed: str = "", mime: str = "image/png") -> dict[str, Any]:
    if aspect is None and size is None and not seed and mime == "image/png":
        return {"inlineData": {"mimeType": "image/png", "data": PNG_BASE64}}
    data = base64.b64encode(image_bytes(aspect, size, seed, mime)).decode("ascii")
    return {"inlineData": {"mimeType": mime, "data": data}}


def code_parts() -> list[dict[str, Any]]:
    return [
        {"text": CODE_INTRO},
        {"executableCode": {"language": "PYTHON", "code": CODE}},
        {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": CODE_OUTPUT}},
    ]


def grounding_metadata(text: str, query: str) -> dict[str, Any]:
    """Two web sources; one support per sentence of `text`, offsets in UTF-8 bytes."""
    chunks = [
        {"web": {"uri": "https://example.com/cafes-de-paris", "title": "example.com"}},
        {"web": {"uri": "https://example.org/fake-gemini", "title": "example.org"}},
    ]
    supports = []
    byte_pos = 0
    for index, match in enumerate(_SENTENCE_RE.finditer(text)):
        sentence = match.group(0)
        stripped = sentence.rstrip()
        start = byte_pos
        end = start + len(stripped.encode("utf-8"))
        byte_pos += len(sentence.encode("utf-8"))
        if not stripped:
            continue
        segment: dict[str, Any] = {"endIndex": end, "text": stripped}
        if start:
            segment = {"startIndex": start, **segment}
        supports.append(
            {
                "segment": segment,
                "groundingChunkIndices": [index % len(chunks)],
                "confidenceScores": [0.9],
            }
        )
    return {
        "webSearchQueries": [query or "fake gemini"],
        "searchEntryPoint": {"renderedContent": "<div class=\"fake-search\">fake search</div>"},
        "groundingChunks": chunks,
        "groundingSupports": supports,
    }


def safety_ratings(blocked_category: str | None = None) -> list[dict[str, Any]]:
    ratings = []
    for category in HARM_CATEGORIES:
        rating: dict[str, Any] = {"category": category, "probability": "NEGLIGIBLE"}
        if category == blocked_category:
            rating = {"category": category, "probability": "HIGH", "blocked": True}
        ratings.append(rating)
    return ratings


def tokens(text: str) -> list[str]:
    """The fake's tokenizer for logprobs: one token per word with its leading space."""
    return _TOKEN_RE.findall(text)


def _token_entry(token: str, rank: int) -> dict[str, Any]:
    digest = hashlib.sha256(f"{rank}:{token}".encode()).digest()
    token_id = int.from_bytes(digest[:3], "big")
    logprob = -round(0.05 + (digest[3] % 50) / 100 + rank * 1.5, 4)
    return {"token": token, "tokenId": token_id, "logProbability": logprob}


def logprobs(text: str, top: int) -> tuple[dict[str, Any], float] | None:
    """(`logprobsResult`, `avgLogprobs`) for `text`, `top` alternatives per step; None if empty."""
    steps = tokens(text)
    if not steps:
        return None
    chosen = [_token_entry(t, 0) for t in steps]
    result: dict[str, Any] = {"chosenCandidates": chosen}
    if top > 0:
        result = {
            "topCandidates": [
                {"candidates": [_token_entry(t if r == 0 else f"{t}~{r}", r) for r in range(top)]}
                for t in steps
            ],
            **result,
        }
    total = sum(c["logProbability"] for c in chosen)
    result["logProbabilitySum"] = round(total, 4)
    return result, round(total / len(chosen), 6)
