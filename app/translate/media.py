"""OpenAI media content parts -> Gemini `inlineData` / `fileData` parts.

Owns: data-URL parsing and base64 checks, MIME types from URLs and file
names, `detail` -> media resolution, and which URLs stay references
(`gs://`, Gemini Files API, YouTube, https with a known type) versus which
must be fetched and inlined (done by the gateway before translation, when the
operator enables it; the fetched bytes arrive here in `fetched`).
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from app.errors import InvalidRequest

# Types Gemini understands that Python's table lacks or spells differently.
_EXTRA_TYPES = {
    ".webp": "image/webp",
    ".heic": "image/heic",
    ".heif": "image/heif",
    ".mp3": "audio/mp3",
    ".wav": "audio/wav",
    ".aiff": "audio/aiff",
    ".aac": "audio/aac",
    ".ogg": "audio/ogg",
    ".flac": "audio/flac",
    ".m4a": "audio/mp4",
    ".opus": "audio/ogg",
    ".pdf": "application/pdf",
    ".md": "text/markdown",
    ".csv": "text/csv",
    ".mp4": "video/mp4",
    ".mov": "video/quicktime",
    ".webm": "video/webm",
    ".txt": "text/plain",
    ".json": "application/json",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
}

AUDIO_FORMATS = {
    "wav": "audio/wav",
    "mp3": "audio/mp3",
    "mpeg": "audio/mp3",
    "aiff": "audio/aiff",
    "aac": "audio/aac",
    "ogg": "audio/ogg",
    "flac": "audio/flac",
    "opus": "audio/ogg",
    "m4a": "audio/mp4",
    "webm": "audio/webm",
    "pcm16": "audio/pcm",
}

DETAIL_TO_RESOLUTION = {"low": "MEDIA_RESOLUTION_LOW", "high": "MEDIA_RESOLUTION_HIGH"}
RESOLUTION_RANK = {"MEDIA_RESOLUTION_LOW": 1, "MEDIA_RESOLUTION_MEDIUM": 2, "MEDIA_RESOLUTION_HIGH": 3}

_YOUTUBE_HOSTS = ("youtube.com", "www.youtube.com", "youtu.be", "m.youtube.com")
_FILES_API_PREFIX = "https://generativelanguage.googleapis.com/"


def mime_from_name(name: str) -> str | None:
    """MIME type from the extension of a path, URL or file name."""
    path = urlsplit(name).path if "://" in name else name
    dot = path.rfind(".")
    if dot < 0:
        return None
    ext = path[dot:].lower()
    return _EXTRA_TYPES.get(ext) or mimetypes.types_map.get(ext)


def check_base64(data: str, param: str) -> None:
    """Refuse what Google would refuse as bytes: standard or URL-safe alphabet, padding optional."""
    if not data:
        raise InvalidRequest(f"Invalid '{param}': the base64 data is empty.", param=param, code="invalid_value")
    candidate = data
    if "-" in candidate or "_" in candidate:
        candidate = candidate.replace("-", "+").replace("_", "/")
    missing = -len(candidate) % 4
    if missing:
        candidate += "=" * missing
    try:
        binascii.a2b_base64(candidate, strict_mode=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(
            f"Invalid '{param}': the data is not valid base64.", param=param, code="invalid_value"
        ) from None


def parse_data_url(url: str, param: str) -> dict[str, str]:
    """`data:<mime>[;base64],<data>` -> Gemini Blob `{mimeType, data}` (data base64)."""
    header, sep, payload = url[5:].partition(",")
    if not sep:
        raise InvalidRequest(f"Invalid '{param}': malformed data URL (no comma).", param=param, code="invalid_value")
    fields = header.split(";")
    mime = fields[0].strip().lower() or "text/plain"
    if "base64" in (f.strip().lower() for f in fields[1:]):
        check_base64(payload, param)
        data = payload
    else:
        data = base64.b64encode(unquote_to_bytes(payload)).decode("ascii")
    if "/" not in mime:
        raise InvalidRequest(f"Invalid '{param}': data URL has no valid MIME type.", param=param, code="invalid_value")
    return {"mimeType": mime, "data": data}


def is_reference_url(url: str) -> bool:
    """URLs Gemini reads itself, with no need to know their type from the URL."""
    if url.startswith((_FILES_API_PREFIX, "files/")):
        return True
    host = urlsplit(url).hostname or ""
    return host in _YOUTUBE_HOSTS


def url_part(url: str, param: str, fetched: Mapping[str, dict[str, str]], mime_hint: str | None = None) -> dict[str, Any]:
    """A media URL -> `inlineData` (data URL or fetched bytes) or `fileData` (reference)."""
    if url.startswith("data:"):
        return {"inlineData": parse_data_url(url, param)}
    if url in fetched:
        return {"inlineData": dict(fetched[url])}
    if url.startswith("files/"):
        return {"fileData": {"fileUri": _FILES_API_PREFIX + "v1beta/" + url}}
    if is_reference_url(url):
        return {"fileData": {"fileUri": url}}
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("gs", "https", "http"):
        raise InvalidRequest(
            f"Invalid '{param}': expected a data: URL, an https:// URL or a gs:// URI.", param=param, code="invalid_value"
        )
    mime = mime_hint or mime_from_name(url)
    if mime is None:
        raise InvalidRequest(
            f"Invalid '{param}': cannot tell the media type of {url!r} from its name; send it as a data: URL "
            "(or ask the operator to enable media.fetch_urls).",
            param=param,
            code="invalid_value",
        )
    return {"fileData": {"mimeType": mime, "fileUri": url}}


def audio_part(data: str, fmt: str, param: str) -> dict[str, Any]:
    """`input_audio {data, format}` -> inlineData (or fileData for a gs:// / https URI, as Vertex allows)."""
    mime = fmt if "/" in fmt else AUDIO_FORMATS.get(fmt.lower())
    if mime is None:
        raise InvalidRequest(
            f"Invalid '{param}.format': unsupported audio format {fmt!r}; use one of {sorted(AUDIO_FORMATS)}.",
            param=f"{param}.format",
            code="invalid_value",
        )
    if data.startswith(("gs://", "https://")):
        return {"fileData": {"mimeType": mime, "fileUri": data}}
    if data.startswith("data:"):
        return {"inlineData": parse_data_url(data, f"{param}.data")}
    check_base64(data, f"{param}.data")
    return {"inlineData": {"mimeType": mime, "data": data}}


def file_part(file_data: str | None, file_id: str | None, filename: str | None, param: str) -> dict[str, Any]:
    """`file {file_data | file_id, filename}` -> inlineData or a Files API reference."""
    if file_data:
        if file_data.startswith("data:"):
            return {"inlineData": parse_data_url(file_data, f"{param}.file_data")}
        mime = mime_from_name(filename or "")
        if mime is None:
            raise InvalidRequest(
                f"Invalid '{param}.file_data': send a data: URL (data:application/pdf;base64,...) or a filename "
                "with an extension, so the media type is known.",
                param=f"{param}.file_data",
                code="invalid_value",
            )
        check_base64(file_data, f"{param}.file_data")
        return {"inlineData": {"mimeType": mime, "data": file_data}}
    if file_id:
        if file_id.startswith(("files/", _FILES_API_PREFIX, "gs://", "https://")):
            return url_part(file_id, f"{param}.file_id", {}, mime_from_name(filename or "") if filename else None)
        raise InvalidRequest(
            f"Invalid '{param}.file_id': OpenAI file ids cannot be used with Gemini; pass a Gemini Files API "
            "name (files/...) or the file's contents in file_data.",
            param=f"{param}.file_id",
            code="invalid_value",
        )
    raise InvalidRequest(
        f"Missing required parameter: '{param}.file_data'.", param=f"{param}.file_data", code="missing_required_parameter"
    )
