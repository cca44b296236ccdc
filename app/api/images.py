"""`POST /v1/images/generations` and `POST /v1/images/edits`: validate -> route -> calls sent
concurrently -> OpenAI's `ImagesResponse` (docs/parameters.md#images).

Endpoints of the request pipeline (pipeline/seam.py), which reads the body within
`server.max_request_bytes` (a 413 beyond), authenticates, watches for the client leaving, sends the
answer and records the outcome. The translation is pure (translate/images.py); this module reads
the request (a JSON body, or for an edit the SDK's `multipart/form-data`, parsed by python-multipart),
checks the model (`check_model`, then `for_endpoint`: a chat model is a 400 naming `model`) and
admits it against the key's limits (`Services.admit`) before anything reaches Google, and sends
each call of the plan through the dispatcher on its own (credentials, retries, fall-back): `n` images
of a Gemini image model are `n` calls, Imagen's are ⌈n/4⌉. The first call that fails cancels the
others and its error is the answer; the images come back in call order.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from python_multipart.multipart import MultipartParser, parse_options_header

from app.api.embeddings import _first_error
from app.api.validation import parse_body_dict
from app.errors import InvalidRequest, UpstreamError
from app.gateway.dispatch import Outcome, UpstreamCall
from app.gateway.ratelimit import IMAGE_OUTPUT_TOKENS, MEDIA_TOKENS
from app.gateway.routing import Target, for_endpoint
from app.pipeline.context import RequestContext, Usage
from app.pipeline.seam import Answer, Call, Endpoint
from app.services import Services
from app.translate.images import ImageCall, ImagePlan, ImageResult, InputImage, image_calls, plan_images, read_answer, sniff_image
from app.translate.images import to_openai as images_to_openai
from app.translate.tables import images_param_for_google_message

GENERATIONS_PATHS = ("/v1/images/generations", "/images/generations")
EDITS_PATHS = ("/v1/images/edits", "/images/edits")
# Calls of one request in flight at once (n = 10 on a Gemini image model is 10 calls).
PARALLEL_CALLS = 4
_IMAGE_FIELDS = ("image", "image[]")


@dataclass
class Form:
    """An edit's form: text fields (the last value of each), and files by field name, in order."""

    fields: dict[str, str] = field(default_factory=dict)
    files: list[tuple[str, str | None, bytes]] = field(default_factory=list)  # (field, content type, bytes)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes:
    for key, value in headers:
        if key.lower() == name:
            return value
    return b""


def read_form(body: bytes, content_type: bytes) -> Form:
    """A `multipart/form-data` body -> its fields and files (python-multipart's parser); a 400 otherwise."""
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise InvalidRequest(
            "POST /v1/images/edits takes multipart/form-data (the image files and the fields), as the OpenAI "
            "SDKs send it.", code="invalid_content_type",
        )
    form = Form()
    state: dict[bytes, bytes] = {}
    header_field: list[bytes] = []
    header_value: list[bytes] = []
    data: list[bytes] = []
    ended: list[bool] = []

    def on_part_begin() -> None:
        state.clear()
        data.clear()
        header_field.clear()
        header_value.clear()

    def on_header_field(buf: bytes, start: int, end: int) -> None:
        header_field.append(buf[start:end])

    def on_header_value(buf: bytes, start: int, end: int) -> None:
        header_value.append(buf[start:end])

    def on_header_end() -> None:
        state[b"".join(header_field).lower()] = b"".join(header_value)
        header_field.clear()
        header_value.clear()

    def on_end() -> None:
        ended.append(True)

    def on_part_data(buf: bytes, start: int, end: int) -> None:
        data.append(buf[start:end])

    def on_part_end() -> None:
        _, disposition = parse_options_header(state.get(b"content-disposition", b""))
        name = disposition.get(b"name")
        if name is None:
            raise InvalidRequest("A part of the multipart body has no name.", code="invalid_multipart")
        key = name.decode("utf-8", "replace")
        value = b"".join(data)
        if b"filename" in disposition:
            declared = state.get(b"content-type")
            form.files.append((key, declared.decode("latin-1").strip().lower() if declared else None, value))
        else:
            try:
                form.fields[key] = value.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidRequest(f"The field '{key}' is not UTF-8 text.", param=key) from None

    callbacks: Any = {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_part_data": on_part_data, "on_part_end": on_part_end, "on_end": on_end,
    }
    parser = MultipartParser(boundary, callbacks, max_size=max(len(body), 1))
    try:
        parser.write(body)
        parser.finalize()
    except InvalidRequest:
        raise
    except ValueError as exc:  # python-multipart's FormParserError family
        raise InvalidRequest(f"The multipart body could not be read: {exc}", code="invalid_multipart") from None
    if not ended:
        raise InvalidRequest("The multipart body is incomplete: its closing boundary is missing.", code="invalid_multipart")
    return form


def plan_edit(form: Form) -> ImagePlan:
    uploads = [(declared, data) for name, declared, data in form.files if name in _IMAGE_FIELDS]
    images: list[InputImage] = [
        sniff_image(data, declared, "image" if len(uploads) == 1 else f"image[{i}]")
        for i, (declared, data) in enumerate(uploads)
    ]
    others = [name for name, _, _ in form.files if name not in _IMAGE_FIELDS]
    # A file sent where a text field is expected (or the reverse) is named by plan_images' checks.
    return plan_images(form.fields, images, edit=True, files=others)


class Images(Endpoint):
    """The images endpoints: generations (JSON) and edits (multipart)."""

    name = "images"

    def __init__(self, services: Services, *, edit: bool = False) -> None:
        self.services = services
        self.edit = edit

    async def __call__(self, call: Call) -> Answer:
        if self.edit:
            plan = plan_edit(read_form(call.body, _header(call.headers, b"content-type")))
        else:
            plan = plan_images(parse_body_dict(call.body))
        ctx = call.ctx
        ctx.model = plan.model
        ctx.principal.check_model(plan.model)  # 403 model_not_allowed, before anything reaches Google
        path = "/v1/images/edits" if self.edit else "/v1/images/generations"
        targets = for_endpoint(self.services.router.resolve(plan.model), "images", plan.model, path)
        # limits (429) before Google; the estimate is the prompt's text and a fixed count per image, never the
        # body's bytes (an edit uploads megabytes) (docs/team.md#limits)
        prompt = len(plan.prompt) // 4 + MEDIA_TOKENS * len(plan.images)
        await self.services.admit(ctx, plan.model, IMAGE_OUTPUT_TOKENS * plan.n, prompt_tokens=prompt)
        completed: list[ImageResult] = []  # every answer Google gave (and billed), even when another call fails
        try:
            done = await self._run(ctx, plan, targets, completed)
            answer = images_to_openai(plan, [result for result, _ in done], int(time.time()))
        finally:
            ctx.usage = images_usage(completed)
        outcomes = [outcome for _, outcome in done]
        headers = {
            "x-gemini-proxy-attempts": str(sum(o.attempts for o in outcomes)),
            "x-gemini-proxy-target": ",".join(dict.fromkeys(o.target.label for o in outcomes)),
        }
        return Answer(body=orjson.dumps(answer.body), headers=headers)

    async def _one(
        self, ctx: RequestContext, index: int, targets: list[Target], built: Built, completed: list[ImageResult]
    ) -> tuple[ImageResult, Outcome]:
        def prepare(target: Target) -> UpstreamCall[ImageCall]:
            calls = built.calls(target)
            chosen, body = calls[min(index, len(calls) - 1)]  # a fall-back of another family may make fewer calls
            return UpstreamCall(chosen.verb, body, chosen)

        try:
            answer, outcome = await self.services.dispatcher.complete(
                targets, prepare, byok_key=ctx.principal.google_key, ctx=ctx
            )
        except UpstreamError as exc:
            if exc.status == 400:  # name the parameter of this endpoint (the chat table knows only chat's)
                exc.param = images_param_for_google_message(exc.message)
            raise
        result = read_answer(outcome.call.meta, answer)
        completed.append(result)
        return result, outcome

    async def _run(
        self, ctx: RequestContext, plan: ImagePlan, targets: list[Target], completed: list[ImageResult]
    ) -> list[tuple[ImageResult, Outcome]]:
        built = Built(plan)
        count = len(built.calls(targets[0]))
        if count == 1:
            return [await self._one(ctx, 0, targets, built, completed)]
        gate = asyncio.Semaphore(PARALLEL_CALLS)

        async def bounded(index: int) -> tuple[ImageResult, Outcome]:
            async with gate:
                return await self._one(ctx, index, targets, built, completed)

        try:
            async with asyncio.TaskGroup() as group:  # the first failure cancels the other calls
                tasks = [group.create_task(bounded(i)) for i in range(count)]
        except BaseExceptionGroup as failed:
            raise _first_error(failed) from None
        return [task.result() for task in tasks]


def images_usage(completed: list[ImageResult]) -> Usage | None:
    """The usage of the calls that were answered (billed by Google), whether or not the request succeeded.

    An answer without a usage count (Imagen `:predict`) makes the cost unknown (`unpriced`, recorded as null):
    the price table has no per-image prices (docs/team.md#usage-and-prices).
    """
    if not completed:
        return None
    usage = Usage()
    for result in completed:
        if result.usage is None:
            usage.unpriced = True
        else:
            usage.prompt += result.usage.get("input", 0)
            usage.completion += result.usage.get("output", 0)
    return usage


class Built:
    """The calls of one request per target, with their JSON bodies, each built and encoded once
    (an edit's images are base64-encoded once however many calls carry them)."""

    def __init__(self, plan: ImagePlan) -> None:
        self.plan = plan
        self._by_target: dict[str, list[tuple[ImageCall, bytes]]] = {}

    def calls(self, target: Target) -> list[tuple[ImageCall, bytes]]:
        found = self._by_target.get(target.label)
        if found is None:
            calls = image_calls(self.plan, target.model, target.capabilities, target.upstream.kind == "vertex")
            bodies: dict[int, bytes] = {}
            found = [(c, bodies.setdefault(id(c), orjson.dumps(c.body))) for c in calls]
            self._by_target[target.label] = found
        return found


