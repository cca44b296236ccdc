"""The fake's image generation: Imagen `:predict` on both backends, and Gemini image models' `imageConfig`.

google-genai is the oracle: what its `generate_images` (Vertex AI) and `generate_content` with an
`ImageConfig` send must be accepted, and the fake's answers must parse into its types with real PNG
bytes. Then the refusals (unknown fields, sampleCount, aspect ratios, sizes, output options) and the
directives (`rai_filtered`, `enhanced_prompt`).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import types as genai_types
from google.oauth2 import service_account

from app.testing.credentials import write_service_account_file
from app.testing.fake_gemini import extras
from fake_harness import Harness

IMAGEN = "imagen-4.0-generate-001"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
KEY = {"x-goog-api-key": "test-key"}


def vertex_sdk(fake: Harness, tmp_path: Path) -> genai.Client:
    path = write_service_account_file(tmp_path / "sa.json", f"{fake.url}/token", project_id="proj-i")
    creds = service_account.Credentials.from_service_account_file(str(path), scopes=[CLOUD_PLATFORM])
    return genai.Client(
        vertexai=True, project="proj-i", location="us-central1", credentials=creds,
        http_options=genai_types.HttpOptions(base_url=fake.url),
    )


def png_info(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, decompressed pixel rows) of a PNG, checking every chunk's CRC."""
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    pos, idat, size = 8, b"", (0, 0)
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body)
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return size[0], size[1], zlib.decompress(idat)


def predict(fake: Harness, body: Any, model: str = IMAGEN) -> httpx.Response:
    return fake.http.post(f"/v1beta/models/{model}:predict", json=body, headers=KEY)


def vertex_predict(fake: Harness, body: Any, model: str = IMAGEN) -> httpx.Response:
    path = f"/v1/projects/p/locations/us-central1/publishers/google/models/{model}:predict"
    return fake.http.post(path, json=body, headers={"Authorization": f"Bearer {fake.token()}"})


def refused(response: httpx.Response, status: int = 400) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"code", "message", "status"} and error["code"] == status
    return str(error["message"])


# --- google-genai as the oracle -------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:The generate_images method is deprecated")
def test_generate_images_with_google_genai_on_vertex(fake: Harness, tmp_path: Path) -> None:
    client = vertex_sdk(fake, tmp_path)
    result = client.models.generate_images(
        model=IMAGEN, prompt="a lighthouse",
        config=genai_types.GenerateImagesConfig(
            number_of_images=2, aspect_ratio="16:9", image_size="2K", include_rai_reason=True,
            safety_filter_level="BLOCK_ONLY_HIGH", person_generation="ALLOW_ADULT", output_mime_type="image/png",
        ),
    )
    assert result.generated_images is not None and len(result.generated_images) == 2
    for index, generated in enumerate(result.generated_images):
        assert generated.image is not None and generated.image.image_bytes is not None
        width, height, rows = png_info(generated.image.image_bytes)
        assert (width, height) == (64, 36)  # 16:9 at 2K, in the fake's small scale
        assert len(rows) == height * (1 + 3 * width)
        assert generated.image.image_bytes == extras.image_bytes("16:9", "2K", f"{IMAGEN}\x00a lighthouse\x00{index}")


def test_generate_content_with_an_image_config(fake: Harness) -> None:
    client = genai.Client(api_key="test-key", http_options=genai_types.HttpOptions(base_url=fake.url, api_version="v1beta"))
    result = client.models.generate_content(
        model="gemini-3-pro-image-preview", contents="a cat",
        config=genai_types.GenerateContentConfig(
            response_modalities=["TEXT", "IMAGE"],
            image_config=genai_types.ImageConfig(aspect_ratio="3:2", image_size="1K"),
        ),
    )
    images = [p.inline_data for p in result.candidates[0].content.parts if p.inline_data]  # type: ignore[index,union-attr]
    assert len(images) == 1 and images[0].mime_type == "image/png"
    assert png_info(images[0].data or b"")[:2] == (6, 4)
    details = {d.modality: d.token_count for d in result.usage_metadata.candidates_tokens_details or []}  # type: ignore[union-attr]
    assert details[genai_types.MediaModality.IMAGE] == extras.IMAGE_OUTPUT_TOKENS


# --- Imagen :predict --------------------------------------------------------------------------------------------------


def test_sample_count_defaults_to_four_on_the_gemini_api(fake: Harness) -> None:
    response = predict(fake, {"instances": [{"prompt": "four"}]})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 4 and all(p["mimeType"] == "image/png" for p in predictions)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"instances": [{"prompt": "x"}], "parameters": {"sampleCount": 5}}, "sampleCount"),
        ({"instances": [{"prompt": "x"}], "parameters": {"sampleCount": 0}}, "sampleCount"),
        ({"instances": [{"prompt": "x"}], "parameters": {"aspectRatio": "3:2"}}, "aspectRatio"),
        ({"instances": [{"prompt": "x"}], "parameters": {"sampleImageSize": "4K"}}, "sampleImageSize"),
        ({"instances": [{"prompt": "x"}], "parameters": {"aspect_ratio": "1:1"}}, 'Unknown name "aspect_ratio"'),
        ({"instances": [{"prompt": "x", "image": {}}]}, 'Unknown name "image"'),
        ({"instances": [{"prompt": "x"}], "parameters": {"storageUri": "gs://b"}}, 'Unknown name "storageUri"'),
        ({"instances": [{"prompt": "x"}], "labels": {"a": "b"}}, 'Unknown name "labels"'),
        ({"instances": [{"prompt": "x"}], "parameters": {"seed": 3}}, "watermark"),
        ({"instances": [{"prompt": "x"}], "parameters": {"outputOptions": {"mimeType": "image/webp"}}}, "mime"),
        ({"instances": [{"prompt": "x"}], "parameters": {"outputOptions": {"compressionQuality": 101}}}, "compressionQuality"),
        ({"instances": [{"prompt": "x"}], "parameters": {"safetySetting": "BLOCK_SOME"}}, "safetySetting"),
        ({"instances": [{"prompt": "x"}], "parameters": {"sampleCount": "2"}}, "sampleCount"),
        ({"instances": []}, "instances"),
        ({"instances": [{"prompt": "a"}, {"prompt": "b"}]}, "instances"),
        ({"instances": [{"prompt": " "}]}, "prompt"),
    ],
)
def test_predict_refuses_what_google_refuses(fake: Harness, body: dict[str, Any], needle: str) -> None:
    assert needle in refused(predict(fake, body))
    assert fake.stats().get("images_returned", 0) == 0


def test_sizes_per_model(fake: Harness) -> None:
    body = {"instances": [{"prompt": "x"}], "parameters": {"sampleCount": 1, "sampleImageSize": "2K"}}
    assert predict(fake, body).status_code == 200
    assert "not supported" in refused(predict(fake, body, "imagen-4.0-fast-generate-001"))
    assert "not supported" in refused(predict(fake, body, "imagen-3.0-generate-002"))


def test_vertex_takes_labels_and_storage_uri_and_jpeg(fake: Harness) -> None:
    body = {"instances": [{"prompt": "x"}], "labels": {"team": "a"},
            "parameters": {"sampleCount": 1, "storageUri": "gs://bucket/p",
                           "outputOptions": {"mimeType": "image/jpeg", "compressionQuality": 75}}}
    response = vertex_predict(fake, body)
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    assert prediction["mimeType"] == "image/jpeg"


def test_predict_is_imagens_only(fake: Harness) -> None:
    assert refused(predict(fake, {"instances": [{"prompt": "x"}]}, "gemini-2.5-flash-image"), 404)
    response = fake.http.post(f"/v1beta/models/{IMAGEN}:generateContent", json={"contents": [{"parts": [{"text": "x"}]}]},
                              headers=KEY)
    assert refused(response, 404)


@pytest.mark.parametrize("include", [True, False])
def test_rai_filtered_directive(fake: Harness, include: bool) -> None:
    body = {"instances": [{"prompt": 'boats\n#fake {"rai_filtered": 2}'}],
            "parameters": {"sampleCount": 3, "includeRaiReason": include}}
    predictions = predict(fake, body).json()["predictions"]
    assert [("bytesBase64Encoded" in p) for p in predictions] == ([True, False, False] if include else [True])
    if include:
        assert "58061214" in predictions[1]["raiFilteredReason"]
    everything = predict(fake, {"instances": [{"prompt": 'x\n#fake {"rai_filtered": 4}'}]})
    assert everything.status_code == 200 and everything.json() == {}


def test_enhanced_prompt(fake: Harness) -> None:
    body = {"instances": [{"prompt": "dog"}], "parameters": {"sampleCount": 1, "enhancePrompt": True}}
    assert predict(fake, body).json()["predictions"][0]["prompt"] == "dog, highly detailed"
    body = {"instances": [{"prompt": 'dog\n#fake {"enhanced_prompt": "a dog"}'}], "parameters": {"sampleCount": 1}}
    assert predict(fake, body).json()["predictions"][0]["prompt"] == "a dog"


def test_injected_errors_apply_to_predict(fake: Harness) -> None:
    body = {"instances": [{"prompt": 'x\n#fake {"error": {"status": 429}}'}], "parameters": {"sampleCount": 1}}
    assert refused(predict(fake, body), 429)


# --- imageConfig of Gemini image models ---------------------------------------------------------------------------------


def image_config(fake: Harness, model: str, config: dict[str, Any], vertex: bool = False) -> httpx.Response:
    fields = {"generationConfig": {"responseModalities": ["TEXT", "IMAGE"], "imageConfig": config}}
    if vertex:
        return fake.vertex_post(model, "draw", fake.token(), **fields)
    return fake.post(model, "draw", **fields)


@pytest.mark.parametrize(
    ("model", "config", "status", "needle"),
    [
        ("gemini-3-pro-image-preview", {"aspectRatio": "7:3"}, 400, "aspect ratio"),
        ("gemini-3-pro-image-preview", {"imageSize": "1k"}, 400, "image size"),
        ("gemini-3-pro-image-preview", {"imageSize": "8K"}, 400, "image size"),
        ("gemini-2.5-flash-image", {"imageSize": "1K"}, 500, "internal error"),  # Google's answer to this model
        ("gemini-2.5-flash", {"aspectRatio": "1:1"}, 400, "modalities"),
    ],
)
def test_image_config_is_checked(fake: Harness, model: str, config: dict[str, Any], status: int, needle: str) -> None:
    assert needle in refused(image_config(fake, model, config), status)


def test_image_output_options_are_vertex_only_and_checked(fake: Harness) -> None:
    options = {"imageOutputOptions": {"mimeType": "image/jpeg", "compressionQuality": 50}}
    assert refused(image_config(fake, "gemini-2.5-flash-image", options))  # the Gemini API has no such field
    response = image_config(fake, "gemini-2.5-flash-image", options, vertex=True)
    assert response.status_code == 200, response.text
    parts = response.json()["candidates"][0]["content"]["parts"]
    assert parts[-1]["inlineData"]["mimeType"] == "image/jpeg"
    bad = {"imageOutputOptions": {"mimeType": "image/gif"}}
    assert "mime" in refused(image_config(fake, "gemini-2.5-flash-image", bad, vertex=True))
