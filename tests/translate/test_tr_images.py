"""The images translator's rules outside the goldens: the size table (as documented in
docs/parameters.md#images), reading a PNG's size, and the types read from uploaded bytes."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from app.errors import InvalidRequest
from app.testing.fake_gemini import extras
from app.translate.images import png_size, size_to_gemini, sniff_image

DOCS = Path(__file__).resolve().parents[2] / "docs" / "parameters.md"


def documented_sizes() -> list[tuple[str, str, str]]:
    """(size, Gemini cell, Imagen cell) rows of the size table in docs/parameters.md#images."""
    text = DOCS.read_text(encoding="utf-8").split("## Images", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"`\d+x\d+`(, `\d+x\d+`)*", cells[0]):
            for size in re.findall(r"\d+x\d+", cells[0]):
                rows.append((size, cells[1], cells[2]))
    return rows


def cell(width: int, height: int, api: str, tiers: tuple[str, ...]) -> str:
    try:
        ratio, tier = size_to_gemini(width, height, api, tiers)  # type: ignore[arg-type]
    except InvalidRequest as exc:
        assert exc.param == "size"
        return "400 naming `size`"
    return f"`{ratio}` / `{tier}`"


def test_the_documented_size_table_is_the_rule() -> None:
    rows = documented_sizes()
    assert len(rows) >= 10
    for size, gemini, imagen in rows:
        width, height = (int(x) for x in size.split("x"))
        assert cell(width, height, "generate_content", ("1K", "2K", "4K")) == gemini, size
        assert cell(width, height, "predict", ("1K", "2K")) == imagen, size


@pytest.mark.parametrize(
    ("tiers", "expected"), [((), None), (("1K",), "1K"), (("1K", "2K"), "2K"), (("2K", "4K"), "4K")]
)
def test_the_tier_is_lowered_to_what_the_model_takes(tiers: tuple[str, ...], expected: str | None) -> None:
    assert size_to_gemini(3840, 2160, "generate_content", tiers) == ("16:9", expected)


def test_png_size_reads_the_header() -> None:
    assert png_size(base64.b64encode(extras._png(32, 18)).decode()) == (32, 18)
    assert png_size(base64.b64encode(extras.JPEG_STUB).decode()) is None
    assert png_size("not base64!") is None


@pytest.mark.parametrize(
    ("data", "declared", "mime"),
    [
        (extras._png(), None, "image/png"),
        (extras.JPEG_STUB, "application/octet-stream", "image/jpeg"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", None, "image/webp"),
        (b"\x00\x00\x00\x18ftypheic", None, "image/heic"),
        (b"unknown bytes", "image/webp", "image/webp"),  # the declared type when the bytes say nothing
    ],
)
def test_the_type_of_an_upload_is_read_from_its_bytes(data: bytes, declared: str | None, mime: str) -> None:
    assert sniff_image(data, declared, "image").mime == mime


@pytest.mark.parametrize(("data", "declared"), [(b"", "image/png"), (b"GIF89a...", "image/gif"), (b"text", "text/plain")])
def test_other_uploads_are_a_400_naming_image(data: bytes, declared: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        sniff_image(data, declared, "image")
    assert caught.value.param == "image"
