"""Image output, grounding and code execution end to end (issue 3, "Images and grounding")."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import openai
import pytest

from app.testing.fake_gemini.extras import CODE, CODE_OUTPUT, PNG_BASE64

from .feat_support import prompt

IMAGE_MODELS = ["gemini-2.5-flash-image", "gemini-3-pro-image-preview"]
DATA_URL = "data:image/png;base64," + PNG_BASE64


@pytest.mark.parametrize("model", IMAGE_MODELS)
@pytest.mark.parametrize("modalities, sent", [(["image"], ["IMAGE"]), (["text", "image"], ["TEXT", "IMAGE"])])
def test_image_answer_as_audio_like_googles_layer(client, fake, model, modalities, sent):
    completion = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Generate an image of a cat."}], modalities=modalities
    )
    assert fake.last_body()["generationConfig"]["responseModalities"] == sent
    message = completion.choices[0].message
    data, mime = message.audio.data, message.audio.model_extra["extra_content"]["google"]["mime_type"]
    assert mime == "image/png"
    assert data == PNG_BASE64 and base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n")
    assert "images" not in (message.model_extra or {})
    assert completion.choices[0].finish_reason == "stop"
    if model.startswith("gemini-3"):
        assert message.model_extra["extra_content"]["google"]["thought_signature"]


@pytest.mark.parametrize("mode", ["images", "both"])
def test_image_answer_as_data_urls_by_setting(make_gateway, fake, mode):
    gateway = make_gateway(output={"images": mode})
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0) as client:
        completion = client.chat.completions.create(
            model="gemini-2.5-flash-image", messages=[{"role": "user", "content": "A cat"}], modalities=["text", "image"]
        )
        message = completion.choices[0].message
        assert message.model_extra["images"] == [{"type": "image_url", "image_url": {"url": DATA_URL}}]
        assert (message.audio is not None) == (mode == "both")
        chunks = list(client.chat.completions.create(
            model="gemini-2.5-flash-image", messages=[{"role": "user", "content": "A cat"}], modalities=["image"], stream=True
        ))
        images = [img for c in chunks if c.choices for img in (c.choices[0].delta.model_extra or {}).get("images") or ()]
        assert images == [{"type": "image_url", "image_url": {"url": DATA_URL}}]


@pytest.mark.parametrize("model", IMAGE_MODELS)
def test_streamed_image_answer(client, fake, model):
    chunks = list(client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Draw a dog"}], modalities=["text", "image"], stream=True
    ))
    audio = [c.choices[0].delta.audio for c in chunks if c.choices and c.choices[0].delta.audio]
    found = [(a.data, a.model_extra["extra_content"]["google"]["mime_type"]) for a in audio]
    assert found == [(PNG_BASE64, "image/png")]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]


def test_generated_image_goes_back_for_editing(client, fake):
    messages: list[Any] = [{"role": "user", "content": "Draw a cat"}]
    first = client.chat.completions.create(model="gemini-3-pro-image-preview", messages=messages, modalities=["text", "image"])
    messages += [first.choices[0].message, {"role": "user", "content": "Now make it blue"}]
    client.chat.completions.create(model="gemini-3-pro-image-preview", messages=messages, modalities=["text", "image"])
    model_turn = fake.last_body()["contents"][1]
    assert model_turn["role"] == "model"
    assert {"inlineData": {"mimeType": "image/png", "data": PNG_BASE64}} in [
        {k: v for k, v in p.items() if k != "thoughtSignature"} for p in model_turn["parts"]
    ]
    assert fake.stats()["errors_returned"] == 0


def test_image_modalities_on_a_text_model_is_a_400(client, fake):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "x"}], modalities=["image"])
    assert info.value.body["param"] == "modalities"


def test_audio_output_is_a_400_naming_it(client, fake):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="gemini-2.5-flash", messages=[{"role": "user", "content": "x"}], modalities=["text", "audio"],
            audio={"voice": "alloy", "format": "wav"},
        )
    assert info.value.body["param"] in ("audio", "modalities")
    assert fake.stats()["generate_requests"] == 0


# -- grounding -------------------------------------------------------------------------------------


def _fake_supports(fake, model: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Ask the fake directly with the very body the gateway sent: its supports are the oracle."""
    response = httpx.post(
        f"{fake.url}/v1beta/models/{model}:generateContent", json=body, headers={"x-goog-api-key": "test-key"}, timeout=10
    )
    assert response.status_code == 200, response.text
    grounding = response.json()["candidates"][0]["groundingMetadata"]
    chunks = grounding["groundingChunks"]
    return [
        {"text": s["segment"]["text"], "url": chunks[s["groundingChunkIndices"][0]]["web"]["uri"]}
        for s in grounding["groundingSupports"]
    ]


def _check_citations(content: str, annotations: list[Any], supports: list[dict[str, Any]]) -> None:
    assert len(annotations) == len(supports) >= 3
    for annotation, support in zip(annotations, supports, strict=True):
        citation = annotation["url_citation"] if isinstance(annotation, dict) else annotation.url_citation.model_dump()
        kind = annotation["type"] if isinstance(annotation, dict) else annotation.type
        assert kind == "url_citation"
        # Character offsets: the slice of the content is exactly the supported segment.
        assert content[citation["start_index"] : citation["end_index"]] == support["text"]
        assert citation["url"] == support["url"] and citation["title"]


QUESTION = "Où boire un café à Paris? Près du musée d'Orsay. Très bien!"


def test_web_search_and_grounding_annotations(client, fake):
    completion = client.chat.completions.create(
        model="gemini-2.5-flash",
        messages=[{"role": "user", "content": prompt(QUESTION, grounding=True)}],
        web_search_options={"search_context_size": "medium"},
    )
    body = fake.last_body()
    assert {"googleSearch": {}} in body["tools"]
    message = completion.choices[0].message
    content = message.content
    assert content.startswith("Paris has many cafés. Echo: Où")
    supports = _fake_supports(fake, "gemini-2.5-flash", body)
    _check_citations(content, message.annotations, supports)
    # Byte offsets would have been wrong here: the text is not ASCII.
    assert len(content.encode()) != len(content)


def test_streamed_grounding_annotations(client, fake):
    messages = [{"role": "user", "content": prompt(QUESTION, grounding=True)}]
    chunks = list(client.chat.completions.create(model="gemini-3-flash-preview", messages=messages, web_search_options={}, stream=True))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    annotations = [a for c in chunks if c.choices for a in (c.choices[0].delta.model_extra or {}).get("annotations") or ()]
    supports = _fake_supports(fake, "gemini-3-flash-preview", fake.last_body())
    _check_citations(content, annotations, supports)
    # The SDK's stream helper accumulates them into message.annotations.
    with client.chat.completions.stream(model="gemini-3-flash-preview", messages=messages, web_search_options={}) as stream:
        final = stream.get_final_completion()
    _check_citations(final.choices[0].message.content, final.choices[0].message.annotations, supports)


# -- code execution --------------------------------------------------------------------------------


def test_code_execution_parts_rendered_as_text(client, fake):
    messages = [{"role": "user", "content": prompt("Sum 1..4", code_execution=True)}]
    completion = client.chat.completions.create(model="gemini-2.5-flash", messages=messages)
    content = completion.choices[0].message.content
    code_at = content.index("```python\n" + CODE)
    output_at = content.index("```output\n" + CODE_OUTPUT)
    answer_at = content.index("Echo: Sum 1..4")
    assert content.startswith("Let me compute that with Python.")
    assert code_at < output_at < answer_at
    chunks = list(client.chat.completions.create(model="gemini-2.5-flash", messages=messages, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == content
