"""`POST /v1/images/generations` and `/v1/images/edits` end to end: the openai SDK -> the gateway ->
the fake Gemini (Gemini API and Vertex AI upstreams).

Gemini image models answer through `generateContent` (IMAGE modality, `imageConfig`), Imagen through
`:predict` (`sampleCount`); the images the SDK decodes are exactly the fake's bytes, in order; sizes
map to the aspect ratio and tier; safety blocks and answers without an image are OpenAI 400s; edits
send the uploaded files as `inlineData` parts; bad input is a 400 naming the field, and the gateway
keeps serving.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from app.testing.credentials import write_service_account_file
from app.testing.fake_gemini import extras
from gateway_harness import GatewayServer, gateway_settings

from .api_helpers import assert_openai_error

GEMINI_IMAGE = "gemini-2.5-flash-image"
GEMINI3_IMAGE = "gemini-3-pro-image-preview"
IMAGEN = "imagen-4.0-generate-001"
PNG_1 = extras._png(3, 2, (255, 0, 0))
PNG_2 = extras._png(2, 3, (0, 255, 0))


def directive(text: str, **keys: Any) -> str:
    return f"{text}\n#fake {json.dumps(keys)}"


@dataclass
class Side:
    kind: str  # "gemini" | "vertex"
    server: GatewayServer

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.server.url + "/v1", api_key="unused", max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def vertex_gateway(fake_gemini: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    sa = write_service_account_file(tmp_path_factory.mktemp("images") / "sa.json", fake_gemini.url + "/token", "proj-a")
    server = GatewayServer(gateway_settings(fake_gemini.url, upstreams=[{
        "name": "vx", "type": "vertex", "project": "proj-a", "location": "us-central1", "base_url": fake_gemini.url,
        "credentials_file": str(sa),
    }]))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["gemini", "vertex"])
def side(request: pytest.FixtureRequest, fake: Any) -> Iterator[Side]:
    server = request.getfixturevalue("gateway" if request.param == "gemini" else "vertex_gateway")
    yield Side(request.param, server)


@pytest.fixture
def oai(side: Side) -> Iterator[openai.OpenAI]:
    with side.client() as c:
        yield c


def upstream_calls(fake: Any, verb: str) -> list[dict[str, Any]]:
    return [r for r in fake.requests() if r["path"].endswith(":" + verb)]


def still_serving(client: openai.OpenAI) -> None:
    result = client.images.generate(model=GEMINI_IMAGE, prompt="still serving")
    assert result.data and base64.b64decode(result.data[0].b64_json or "") == extras._png()


# --- generation: Gemini image models -----------------------------------------------------------------------------


def test_gemini_image_model_returns_the_fakes_png_with_the_text_as_revised_prompt(oai, side, fake) -> None:
    result = oai.images.generate(model=GEMINI_IMAGE, prompt="a red fox in the snow")
    assert len(result.data) == 1
    assert base64.b64decode(result.data[0].b64_json or "") == extras._png()  # the fake's bytes, untouched
    assert result.data[0].url is None
    assert result.data[0].revised_prompt == "Echo: a red fox in the snow"
    assert result.output_format == "png" and result.size == "2x2"  # read from the PNG header
    assert result.usage is not None
    assert result.usage.output_tokens_details is not None and result.usage.output_tokens_details.image_tokens == 1290
    assert result.usage.input_tokens > 0
    assert result.usage.total_tokens == result.usage.input_tokens + result.usage.output_tokens
    (call,) = upstream_calls(fake, "generateContent")
    assert call["backend"] == side.kind
    assert call["body"] == {
        "contents": [{"role": "user", "parts": [{"text": "a red fox in the snow"}]}],
        "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]},
    }


def test_n_images_from_a_gemini_model_are_n_concurrent_calls(oai, fake) -> None:
    result = oai.images.generate(model=GEMINI3_IMAGE, prompt="three cats", n=3, size="1024x1024")
    assert len(result.data) == 3
    expected = extras.image_bytes("1:1", "1K", "Echo: three cats")
    assert [base64.b64decode(d.b64_json or "") for d in result.data] == [expected] * 3
    calls = upstream_calls(fake, "generateContent")
    assert len(calls) == 3
    assert all(c["body"]["generationConfig"]["imageConfig"] == {"aspectRatio": "1:1", "imageSize": "1K"} for c in calls)
    assert result.usage is not None and result.usage.output_tokens_details is not None
    assert result.usage.output_tokens_details.image_tokens == 3 * 1290


@pytest.mark.parametrize(
    ("model", "size", "image_config", "pixels"),
    [
        (GEMINI3_IMAGE, "1792x1024", {"aspectRatio": "16:9", "imageSize": "1K"}, "32x18"),
        (GEMINI3_IMAGE, "1024x1536", {"aspectRatio": "2:3", "imageSize": "1K"}, "4x6"),
        (GEMINI3_IMAGE, "2048x2048", {"aspectRatio": "1:1", "imageSize": "2K"}, "4x4"),
        (GEMINI3_IMAGE, "3840x2160", {"aspectRatio": "16:9", "imageSize": "4K"}, "128x72"),
        # gemini-2.5-flash-image refuses imageSize (a 500 from Google): only the aspect ratio goes
        (GEMINI_IMAGE, "1536x1024", {"aspectRatio": "3:2"}, "6x4"),
        (GEMINI_IMAGE, "auto", None, "2x2"),
    ],
)
def test_sizes_map_to_the_aspect_ratio_and_tier(oai, fake, model, size, image_config, pixels) -> None:
    result = oai.images.generate(model=model, prompt="a lighthouse", size=size)
    assert result.size == pixels
    (call,) = upstream_calls(fake, "generateContent")
    assert call["body"]["generationConfig"].get("imageConfig") == image_config


def test_url_is_a_data_url(oai, fake) -> None:
    result = oai.images.generate(model=GEMINI_IMAGE, prompt="as a url", response_format="url")
    url = result.data[0].url or ""
    assert url.startswith("data:image/png;base64,") and result.data[0].b64_json is None
    assert base64.b64decode(url.split(",", 1)[1]) == extras._png()


def test_jpeg_on_vertex_goes_in_image_output_options_and_is_refused_on_the_gemini_api(oai, side, fake) -> None:
    if side.kind == "gemini":
        with pytest.raises(openai.BadRequestError) as caught:
            oai.images.generate(model=GEMINI_IMAGE, prompt="jpeg please", output_format="jpeg")
        assert caught.value.body["param"] == "output_format"  # type: ignore[index]
        assert upstream_calls(fake, "generateContent") == []
        return
    result = oai.images.generate(model=GEMINI_IMAGE, prompt="jpeg please", output_format="jpeg", output_compression=70)
    assert result.output_format == "jpeg" and base64.b64decode(result.data[0].b64_json or "") == extras.JPEG_STUB
    (call,) = upstream_calls(fake, "generateContent")
    assert call["body"]["generationConfig"]["imageConfig"] == {
        "imageOutputOptions": {"mimeType": "image/jpeg", "compressionQuality": 70}
    }


# --- generation: Imagen --------------------------------------------------------------------------------------------


def imagen_png(prompt: str, index: int, aspect: str = "1:1", tier: str = "1K") -> bytes:
    return extras.image_bytes(aspect, tier, f"{IMAGEN}\x00{prompt}\x00{index}")


def test_imagen_n6_is_two_predict_calls_reassembled_in_order(oai, side, fake) -> None:
    result = oai.images.generate(model=IMAGEN, prompt="mountains", n=6)
    got = [base64.b64decode(d.b64_json or "") for d in result.data]
    assert got == [imagen_png("mountains", i) for i in (0, 1, 2, 3, 0, 1)]
    assert result.usage is None  # Imagen reports no tokens
    calls = upstream_calls(fake, "predict")
    assert sorted(c["body"]["parameters"]["sampleCount"] for c in calls) == [2, 4]  # always sent (Google's default is 4)
    for call in calls:
        assert call["body"]["instances"] == [{"prompt": "mountains"}]
        assert call["backend"] == side.kind
        if side.kind == "vertex":
            assert call["path"] == f"/v1/projects/proj-a/locations/us-central1/publishers/google/models/{IMAGEN}:predict"
        else:
            assert call["path"] == f"/v1beta/models/{IMAGEN}:predict"


@pytest.mark.parametrize(
    ("model", "size", "parameters", "pixels"),
    [
        (IMAGEN, "1536x1024", {"aspectRatio": "4:3", "sampleImageSize": "1K"}, "8x6"),
        (IMAGEN, "1024x1792", {"aspectRatio": "9:16", "sampleImageSize": "1K"}, "18x32"),
        (IMAGEN, "2048x2048", {"aspectRatio": "1:1", "sampleImageSize": "2K"}, "4x4"),
        ("imagen-3.0-generate-002", "2048x2048", {"aspectRatio": "1:1"}, "2x2"),  # one size: no sampleImageSize
    ],
)
def test_imagen_sizes(oai, side, fake, model, size, parameters, pixels) -> None:
    result = oai.images.generate(model=model, prompt="a bridge", size=size)
    assert result.size == pixels
    (call,) = upstream_calls(fake, "predict")
    rai = {"includeRaiReason": True} if side.kind == "vertex" else {}  # documented on Vertex only
    assert call["body"]["parameters"] == {"sampleCount": 1, **rai, **parameters}


def test_imagen_jpeg_moderation_and_enhanced_prompt(oai, side, fake) -> None:
    prompt = directive("a harbour", enhanced_prompt="a harbour at dawn, oil painting")
    result = oai.images.generate(model=IMAGEN, prompt=prompt, output_format="jpeg", output_compression=80,
                                 moderation="low")
    assert result.output_format == "jpeg" and base64.b64decode(result.data[0].b64_json or "") == extras.JPEG_STUB
    assert result.data[0].revised_prompt == "a harbour at dawn, oil painting"
    (call,) = upstream_calls(fake, "predict")
    rai = {"includeRaiReason": True} if side.kind == "vertex" else {}
    assert call["body"]["parameters"] == {
        "sampleCount": 1, **rai, "safetySetting": "BLOCK_ONLY_HIGH",
        "outputOptions": {"mimeType": "image/jpeg", "compressionQuality": 80},
    }


def test_imagen_filtered_samples_give_fewer_images_and_all_filtered_is_a_400(oai, side, fake) -> None:
    result = oai.images.generate(model=IMAGEN, prompt=directive("two boats", rai_filtered=1), n=2)
    assert len(result.data) == 1
    with pytest.raises(openai.BadRequestError) as caught:
        oai.images.generate(model=IMAGEN, prompt=directive("two boats", rai_filtered=2), n=2)
    err = caught.value.body
    assert err["code"] == "content_policy_violation" and err["param"] == "prompt"  # type: ignore[index]
    assert "safety" in err["message"]  # type: ignore[index]
    # Vertex: Google's reason (includeRaiReason); the Gemini API leaves filtered images out silently
    assert ("58061214" in err["message"]) == (side.kind == "vertex")  # type: ignore[index]
    still_serving(oai)


def test_user_becomes_vertex_labels(oai, side, fake) -> None:
    oai.images.generate(model=IMAGEN, prompt="labelled", user="Team-A")
    (call,) = upstream_calls(fake, "predict")
    if side.kind == "vertex":
        assert call["body"]["labels"] == {"user": "team-a"}
    else:
        assert "labels" not in call["body"]


# --- safety and no image ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "keys",
    [{"finish_reason": "IMAGE_SAFETY"}, {"finish_reason": "SAFETY"}, {"block_prompt": "SAFETY"},
     {"finish_reason": "IMAGE_PROHIBITED_CONTENT"}],
)
def test_gemini_safety_blocks_are_content_policy_400s(oai, fake, keys) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oai.images.generate(model=GEMINI_IMAGE, prompt=directive("something", **keys))
    err = caught.value.body
    assert err["code"] == "content_policy_violation" and err["param"] == "prompt"  # type: ignore[index]
    assert next(iter(keys.values())) in err["message"]  # type: ignore[index]
    still_serving(oai)


def test_an_answer_without_an_image_is_a_400_with_the_models_text(oai, fake) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oai.images.generate(model=GEMINI_IMAGE, prompt=directive("hm", finish_reason="NO_IMAGE", reply="I would rather describe it."))
    err = caught.value.body
    assert err["code"] == "no_image" and "NO_IMAGE" in err["message"]  # type: ignore[index]
    assert "I would rather describe it." in err["message"]  # type: ignore[index]


# --- edits -----------------------------------------------------------------------------------------------------------


def inline_parts(call: dict[str, Any]) -> list[dict[str, Any]]:
    return [p["inlineData"] for p in call["body"]["contents"][0]["parts"] if "inlineData" in p]


def test_edit_with_one_image(oai, side, fake) -> None:
    result = oai.images.edit(model=GEMINI_IMAGE, image=("in.png", PNG_1, "image/png"), prompt="make it blue")
    assert base64.b64decode(result.data[0].b64_json or "") == extras._png()
    (call,) = upstream_calls(fake, "generateContent")
    assert call["body"]["contents"][0]["parts"][0] == {"text": "make it blue"}
    assert inline_parts(call) == [{"mimeType": "image/png", "data": base64.b64encode(PNG_1).decode()}]


def test_edit_with_several_images_keeps_their_order(oai, side, fake) -> None:
    jpeg = extras.JPEG_STUB
    result = oai.images.edit(
        model=GEMINI3_IMAGE, image=[("a.png", PNG_1), ("b.png", PNG_2), ("c.bin", jpeg)], prompt="combine them",
        n=2, size="1024x1024",
    )
    assert len(result.data) == 2
    calls = upstream_calls(fake, "generateContent")
    assert len(calls) == 2
    for call in calls:
        assert inline_parts(call) == [
            {"mimeType": "image/png", "data": base64.b64encode(PNG_1).decode()},
            {"mimeType": "image/png", "data": base64.b64encode(PNG_2).decode()},
            {"mimeType": "image/jpeg", "data": base64.b64encode(jpeg).decode()},  # the type read from the bytes
        ]


def test_repeated_image_fields_as_curl_sends_them(side, fake) -> None:
    files = [("image", ("a.png", PNG_1, "image/png")), ("image", ("b.png", PNG_2, "image/png"))]
    r = httpx.post(side.server.url + "/v1/images/edits", files=files,
                   data={"model": GEMINI_IMAGE, "prompt": "both", "response_format": "url"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["url"].startswith("data:image/png;base64,")
    (call,) = upstream_calls(fake, "generateContent")
    assert [p["data"] for p in inline_parts(call)] == [base64.b64encode(p).decode() for p in (PNG_1, PNG_2)]


def test_mask_is_refused_naming_mask(oai, fake) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oai.images.edit(model=GEMINI_IMAGE, image=("in.png", PNG_1), mask=("mask.png", PNG_2), prompt="only the sky")
    assert caught.value.body["param"] == "mask"  # type: ignore[index]
    assert fake.requests() == []


def test_imagen_cannot_edit(oai, fake) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oai.images.edit(model=IMAGEN, image=("in.png", PNG_1), prompt="edit")
    assert caught.value.body["param"] == "model" and "Gemini image model" in caught.value.body["message"]  # type: ignore[index]
    assert fake.requests() == []


@pytest.mark.parametrize(
    ("files", "data", "param"),
    [
        ([("image", ("x.txt", b"hello", "text/plain"))], {}, "image"),
        ([("image", ("x.png", b"", "image/png"))], {}, "image"),
        ([], {}, "image"),
        ([("image", ("x.png", PNG_1, "image/png"))], {"n": "two"}, "n"),
        ([("image", ("x.png", PNG_1, "image/png"))], {"size": "12x12"}, "size"),
        ([("image", ("x.png", PNG_1, "image/png"))], {"input_fidelity": "max"}, "input_fidelity"),
        ([("image", ("x.png", PNG_1, "image/png")), ("markup", ("m.png", PNG_2, "image/png"))], {}, "markup"),
    ],
)
def test_bad_edit_input_is_a_400_naming_it(side, fake, files, data, param) -> None:
    r = httpx.post(side.server.url + "/v1/images/edits", files=files or {"other": ("o.bin", b"x")},
                   data={"model": GEMINI_IMAGE, "prompt": "p", **data}, timeout=30)
    assert_openai_error(r, 400, param=param)
    assert fake.requests() == []


def test_edit_needs_multipart(side, fake) -> None:
    r = httpx.post(side.server.url + "/v1/images/edits", json={"model": GEMINI_IMAGE, "prompt": "p"}, timeout=30)
    assert_openai_error(r, 400, code="invalid_content_type")


def test_an_upload_over_max_request_bytes_is_a_413(strict_gateway, fake) -> None:
    big = PNG_1 + b"\x00" * (80 * 1024)
    r = httpx.post(strict_gateway.url + "/v1/images/edits", files={"image": ("big.png", big, "image/png")},
                   data={"model": GEMINI_IMAGE, "prompt": "p"}, timeout=30)
    assert r.status_code == 413, r.text
    assert fake.requests() == []


# --- models and endpoints ---------------------------------------------------------------------------------------------


def test_a_chat_model_sent_to_images_and_imagen_sent_to_chat_are_400s_naming_model(oai, fake) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oai.images.generate(model="gemini-2.5-flash", prompt="a cat")
    err = caught.value.body
    assert err["param"] == "model" and "/v1/chat/completions" in err["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model=IMAGEN, messages=[{"role": "user", "content": "hi"}])
    err = caught.value.body
    assert err["param"] == "model" and "/v1/images/generations" in err["message"]  # type: ignore[index]
    assert fake.requests() == []


def test_models_list_says_which_models_serve_images(client, fake) -> None:
    models = {m.id: m.model_extra for m in client.models.list()}
    assert models[IMAGEN]["endpoints"] == ["images"]  # type: ignore[index]
    assert models[GEMINI_IMAGE]["endpoints"] == ["chat", "images"]  # type: ignore[index]
    assert models["gemini-2.5-flash"]["endpoints"] == ["chat"]  # type: ignore[index]


# --- bad input --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"prompt": None}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": "x" * 32_001}, "prompt"),
        ({"model": None}, "model"),
        ({"n": 0}, "n"),
        ({"n": 11}, "n"),
        ({"n": "2"}, "n"),
        ({"size": "huge"}, "size"),
        ({"size": "1024x100"}, "size"),
        ({"size": "8192x8192"}, "size"),
        ({"quality": "ultra"}, "quality"),
        ({"style": "pastel"}, "style"),
        ({"response_format": "png"}, "response_format"),
        ({"output_format": "gif"}, "output_format"),
        ({"output_format": "bmp"}, "output_format"),
        ({"output_format": "webp"}, "output_format"),  # the Gemini API makes png only
        ({"output_compression": 50}, "output_compression"),  # png has no compression
        ({"output_format": "jpeg", "output_compression": 101}, "output_compression"),
        ({"background": "transparent"}, "background"),
        ({"background": "pink"}, "background"),
        ({"moderation": "none"}, "moderation"),
        ({"stream": True}, "stream"),
        ({"partial_images": 2}, "partial_images"),
        ({"user": 7}, "user"),
    ],
)
def test_bad_generation_input_is_a_400_naming_it(raw, client, fake, fields, param) -> None:
    body = {"model": GEMINI_IMAGE, "prompt": "p", **fields}
    body = {k: v for k, v in body.items() if v is not None}
    assert_openai_error(raw.post("/v1/images/generations", json=body), 400, param=param)
    assert fake.requests() == []
    still_serving(client)


def test_a_size_no_imagen_ratio_fits_is_a_400_naming_size(raw, fake) -> None:
    r = raw.post("/v1/images/generations", json={"model": IMAGEN, "prompt": "p", "size": "1500x600"})
    err = assert_openai_error(r, 400, param="size")
    assert "16:9" in err["message"]
    # the same size fits a Gemini image model (21:9)
    ok = raw.post("/v1/images/generations", json={"model": GEMINI_IMAGE, "prompt": "p", "size": "1500x600"})
    assert ok.status_code == 200, ok.text


def test_hints_are_accepted_and_not_forwarded(raw, fake) -> None:
    r = raw.post("/v1/images/generations", json={
        "model": GEMINI_IMAGE, "prompt": "hinted", "quality": "hd", "style": "vivid", "background": "opaque",
        "moderation": "auto", "user": "u1", "output_format": "png", "some_future_field": 1,
    })
    assert r.status_code == 200, r.text
    (call,) = upstream_calls(fake, "generateContent")
    assert call["body"]["generationConfig"] == {"responseModalities": ["TEXT", "IMAGE"]}


def test_a_google_error_passes_as_its_openai_class(oai, fake) -> None:
    with pytest.raises(openai.RateLimitError):
        oai.images.generate(model=GEMINI_IMAGE, prompt=directive("busy", error={"status": 429}, fail_times=9))


def test_a_google_400_names_the_images_parameter(make_gateway, fake) -> None:
    # Configured as if Imagen 3 took 2K: Google's 400 about sampleImageSize names `size`.
    server = make_gateway(capabilities={"imagen-3*": {"image_sizes": ["1K", "2K"]}}, retry={"max_attempts": 1})
    r = httpx.post(server.url + "/v1/images/generations", timeout=30,
                   json={"model": "imagen-3.0-generate-002", "prompt": "p", "size": "2048x2048"})
    err = assert_openai_error(r, 400, param="size")
    assert "sampleImageSize" in err["message"]
    (call,) = upstream_calls(fake, "predict")
    assert call["body"]["parameters"]["sampleImageSize"] == "2K"


def test_a_dall_e_alias_answers_url_by_default_and_the_short_path_works(make_gateway, fake) -> None:
    server = make_gateway(aliases={"dall-e-3": GEMINI_IMAGE})
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0) as dalle:
        result = dalle.images.generate(model="dall-e-3", prompt="a fox")  # DALL·E's default: url
    assert (result.data[0].url or "").startswith("data:image/png;base64,") and result.data[0].b64_json is None
    r = httpx.post(server.url + "/images/generations", json={"model": GEMINI_IMAGE, "prompt": "short"}, timeout=30)
    assert r.status_code == 200 and base64.b64decode(r.json()["data"][0]["b64_json"]) == extras._png()
    assert [c["path"] for c in upstream_calls(fake, "generateContent")] == [
        f"/v1beta/models/{GEMINI_IMAGE}:generateContent"
    ] * 2


@pytest.mark.parametrize(
    "body",
    [b"", b"garbage", b'--x\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nunterminated',
     b"--x\r\nbad header line\r\n\r\nv\r\n--x--\r\n"],
)
def test_a_broken_multipart_body_is_a_400(strict_raw, fake, body) -> None:
    r = strict_raw.post("/v1/images/edits", content=body, headers={"content-type": "multipart/form-data; boundary=x"})
    assert_openai_error(r, 400, code="invalid_multipart")
