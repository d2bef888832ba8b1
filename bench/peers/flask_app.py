"""The plain-Flask baseline: a generator view under ``gunicorn -k gevent``.

What a Flask developer writes first: frames built with an f-string, one yield per event.
"""

from __future__ import annotations

import json
import time

from flask import Flask, Response, request

from .common import END_DATA, id_base, stream_params, token_text

app = Flask(__name__)
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@app.get("/healthz")
def healthz() -> str:
    return "ok"


@app.get("/stream")
def stream() -> Response:
    n, delay, stamp = stream_params(request.args)

    def generate():
        base = id_base()
        yield b"retry: 3000\n\n"
        for i in range(n):
            if delay:
                time.sleep(delay)  # gevent-patched: a greenlet sleep
            data = json.dumps({"text": token_text(stamp)}, separators=(",", ":"))
            yield f"event: token\nid: {base}{i}\ndata: {data}\n\n".encode()
        yield f"event: end\nid: {base}{n}\ndata: {END_DATA}\n\n".encode()

    return Response(generate(), mimetype="text/event-stream", headers=HEADERS)


@app.get("/idle")
def idle() -> Response:
    beat = float(request.args.get("hb", "15"))

    def generate():
        yield b"retry: 3000\n\n"
        while True:
            time.sleep(beat)
            yield b": ping\n\n"

    return Response(generate(), mimetype="text/event-stream", headers=HEADERS)
