"""sse-starlette's ``EventSourceResponse`` on uvicorn."""

from __future__ import annotations

import asyncio
import json

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from .common import END_DATA, id_base, stream_params, token_text


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def stream(request: Request) -> EventSourceResponse:
    n, delay, stamp = stream_params(request.query_params)

    async def generate():
        base = id_base()
        for i in range(n):
            if delay:
                await asyncio.sleep(delay)
            data = json.dumps({"text": token_text(stamp)}, separators=(",", ":"))
            yield ServerSentEvent(data=data, event="token", id=f"{base}{i}", sep="\n")
        yield ServerSentEvent(data=END_DATA, event="end", id=f"{base}{n}", sep="\n")

    # sep="\n": the same frame bytes as the other servers (the default is CRLF).
    return EventSourceResponse(generate(), ping=15, sep="\n", headers={"Cache-Control": "no-cache"})


async def idle(request: Request) -> EventSourceResponse:
    beat = float(request.query_params.get("hb", "15"))

    async def generate():
        while True:
            await asyncio.sleep(3600)
            yield ServerSentEvent(comment="never")

    return EventSourceResponse(generate(), ping=beat, sep="\n")


app = Starlette(routes=[Route("/healthz", healthz), Route("/stream", stream), Route("/idle", idle)])
