"""`POST /v1/embeddings`: validate -> route -> batches sent concurrently -> OpenAI's list.

An endpoint of the request pipeline (pipeline/seam.py), which reads the body,
authenticates, watches for the client leaving, sends the answer and records
the outcome. The translation is pure (translate/embeddings.py): the inputs are
cut into batches of at most 100 (Google refuses bigger `batchEmbedContents`
calls), and each batch goes through the dispatcher on its own (credentials,
retries, fall-back), at most `PARALLEL_BATCHES` at a time. The first batch
that fails cancels the others, and its error is the answer; the vectors come
back in input order whatever order the batches finish in.

A model that does not embed (a chat model) is a 400 naming `model`
(`for_endpoint`); a Google 400 names the OpenAI parameter it is about
(`dimensions`, `input`, `extra_body.google.task_type`, ...).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from app.api.validation import parse_body
from app.errors import GatewayError, UpstreamError
from app.gateway.dispatch import Outcome, UpstreamCall
from app.gateway.routing import Target, for_endpoint
from app.pipeline.context import RequestContext, Usage
from app.pipeline.seam import Answer, Call, Endpoint
from app.schemas.openai import EmbeddingRequest
from app.services import Services
from app.translate.embeddings import (
    PREDICT_TOKENS,
    BatchResult,
    EmbedCall,
    EmbeddingPlan,
    batches,
    embed_call,
    estimate_tokens,
    plan_embeddings,
    read_batch,
)
from app.translate.embeddings import to_openai as embeddings_to_openai
from app.translate.tables import embedding_param_for_google_message

log = logging.getLogger("gemini_proxy.embeddings")

# Batches of one request in flight at once (2048 inputs make 21 batches).
PARALLEL_BATCHES = 8
# Google's `prettyPrint` system parameter (every Google REST API takes it; true by default): its answer
# without indentation or line breaks, 4.2 MB instead of 7 MB for 100 x 3072 values, which the gateway
# then receives, scans and parses (and, for `float`, sends on) with 40 % fewer bytes.
COMPACT_JSON = "?prettyPrint=false"


class Embeddings(Endpoint):
    """The embeddings endpoint."""

    name = "embeddings"

    def __init__(self, services: Services) -> None:
        self.services = services
        self.verbose: set[str] = set()  # upstreams that refused the parameter (a strict proxy, a look-alike)

    async def __call__(self, call: Call) -> Answer:
        req = parse_body(call.body, EmbeddingRequest)
        plan = plan_embeddings(req)
        ctx = call.ctx
        ctx.model = req.model
        await self.services.admit(ctx, req.model, 0)  # 403 model_not_allowed, then limits (429; no output), before Google
        targets = self.services.router.resolve(req.model)
        targets = for_endpoint(targets, "embeddings", req.model)
        completed: list[int] = []  # the tokens of every batch Google answered (and billed), even when another fails
        try:
            done = await self._run(ctx, plan, targets, completed)
        except UpstreamError as exc:
            if exc.status == 400:  # name the parameter of this endpoint (the chat table knows only chat's)
                exc.param = embedding_param_for_google_message(exc.message)
            raise
        finally:
            ctx.usage = Usage(prompt=sum(completed)) if completed else None
        answer = embeddings_to_openai(plan, [result for result, _ in done])
        ctx.usage = Usage(prompt=answer.prompt_tokens)
        outcomes = [outcome for _, outcome in done]
        headers = answer.headers
        headers["x-gemini-proxy-attempts"] = str(sum(o.attempts for o in outcomes))
        headers["x-gemini-proxy-target"] = ",".join(dict.fromkeys(o.target.label for o in outcomes))
        return Answer(body=answer.body, headers=headers)

    async def _batch(
        self, ctx: RequestContext, plan: EmbeddingPlan, texts: list[str], targets: list[Target], completed: list[int]
    ) -> tuple[BatchResult, Outcome]:
        verbose = self.verbose

        def prepare(target: Target) -> UpstreamCall[EmbedCall]:
            vertex = target.upstream.kind == "vertex"
            embed = embed_call(plan, texts, target.model, target.capabilities, vertex)
            compact = "" if target.upstream.name in verbose else COMPACT_JSON
            return UpstreamCall(embed.verb + compact, orjson.dumps(embed.body), embed)

        try:
            data, outcome = await self.services.dispatcher.complete_raw(
                targets, prepare, byok_key=ctx.principal.google_key, ctx=ctx
            )
        except UpstreamError as exc:
            # A 400 is not retried: the last attempt's upstream is the one that answered it.
            refused = ctx.attempt_outcomes[-1][0] if ctx.attempt_outcomes else None
            if refused is None or refused in verbose or exc.status != 400 or "prettyprint" not in exc.message.lower():
                raise
            # Google takes its system parameter everywhere; something in between did not: ask that upstream
            # without it from now on.
            verbose.add(refused)
            log.warning("upstream %s refused the prettyPrint parameter (%s); embeddings are asked there without it",
                        refused, exc.message[:200])
            return await self._batch(ctx, plan, texts, targets, completed)
        try:
            result = read_batch(outcome.call.meta, data)
        except Exception:
            completed.append(sum(estimate_tokens(t) for t in texts))  # billed even though its answer cannot be read
            raise
        completed.append(result.tokens if result.tokens is not None else sum(estimate_tokens(t) for t in texts))
        return result, outcome

    async def _run(
        self, ctx: RequestContext, plan: EmbeddingPlan, targets: list[Target], completed: list[int]
    ) -> list[tuple[BatchResult, Outcome]]:
        predict = any(t.upstream.kind == "vertex" and t.capabilities.embeddings_api == "predict" for t in targets)
        chunks = batches(plan, PREDICT_TOKENS if predict else None)
        if len(chunks) == 1:
            return [await self._batch(ctx, plan, chunks[0], targets, completed)]
        gate = asyncio.Semaphore(PARALLEL_BATCHES)

        async def bounded(texts: list[str]) -> tuple[BatchResult, Outcome]:
            async with gate:
                return await self._batch(ctx, plan, texts, targets, completed)

        try:
            async with asyncio.TaskGroup() as group:  # the first failure cancels the other batches
                tasks = [group.create_task(bounded(texts)) for texts in chunks]
        except BaseExceptionGroup as failed:
            raise _first_error(failed) from None
        return [task.result() for task in tasks]


def _first_error(group: BaseExceptionGroup[Any]) -> BaseException:
    """The error to answer with: the first GatewayError of the group, else its first exception."""
    leaves: list[BaseException] = []

    def walk(g: BaseExceptionGroup[Any]) -> None:
        for exc in g.exceptions:
            if isinstance(exc, BaseExceptionGroup):
                walk(exc)
            else:
                leaves.append(exc)

    walk(group)
    for exc in leaves:
        if isinstance(exc, GatewayError):
            return exc
    return leaves[0]
