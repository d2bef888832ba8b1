"""FastAPI's native SSE (``response_class=EventSourceResponse``, ``fastapi.sse``) on uvicorn."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterable

import fastapi.routing
from fastapi import FastAPI
from fastapi.sse import EventSourceResponse, ServerSentEvent

from .common import END_DATA, id_base, token_text

# FastAPI's keep-alive interval is a module constant (15 s); the idle workload's
# heartbeat period is set through it, the way FastAPI's own tests change it.
fastapi.routing._PING_INTERVAL = float(os.environ.get("BENCH_HEARTBEAT_SECONDS", "15"))

app = FastAPI()


@app.get("/healthz")
async def healthz() -> str:
    return "ok"


@app.get("/stream", response_class=EventSourceResponse)
async def stream(n: int = 2000, delay_ms: float = 0, stamp: int = 0) -> AsyncIterable[ServerSentEvent]:
    delay = delay_ms / 1000.0
    base = id_base()
    for i in range(n):
        if delay:
            await asyncio.sleep(delay)
        yield ServerSentEvent(data={"text": token_text(stamp == 1)}, event="token", id=f"{base}{i}")
    yield ServerSentEvent(raw_data=END_DATA, event="end", id=f"{base}{n}")


@app.get("/idle", response_class=EventSourceResponse)
async def idle() -> AsyncIterable[ServerSentEvent]:
    while True:
        await asyncio.sleep(3600)
        yield ServerSentEvent(comment="never")
