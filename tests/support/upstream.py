"""A real OpenAI-compatible streaming server on a loopback port, scriptable per request.

It speaks ``POST .../chat/completions`` with ``stream: true`` the way OpenAI does: HTTP/1.1
chunked transfer, ``chat.completion.chunk`` events as ``data:`` lines, a role chunk, the
text chunks, a chunk with ``finish_reason``, a usage chunk when the request asked for
it with ``stream_options``, then ``data: [DONE]``. A :class:`Reply` registered for a
user message says how to answer it, including each way an upstream fails. Every request
is recorded as a :class:`Seen`, with whether the client closed the connection early.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.servers import free_port

__all__ = ["Reply", "Seen", "Upstream", "refused_url"]


@dataclass
class Reply:
    """How the upstream answers one request.

    ``fault`` is one of ``None`` (a complete reply), ``"cut"`` (the connection is dropped
    mid-body), ``"eof"`` (the body ends cleanly but without a finish reason or
    ``[DONE]``), ``"malformed"`` (a chunk that is not JSON), ``"not_a_chunk"`` (JSON
    that is not a chunk), ``"error_event"`` (an error object inside the stream); it
    happens after ``fault_after`` pieces of text. ``"cut_after_finish"`` drops the
    connection after the finish chunk, before the usage chunk and ``[DONE]``. ``stall_after`` pieces, the server is
    silent for ``stall`` seconds (0: before the first piece); ``stall_headers`` is a
    silence before even the status line.
    """

    pieces: list[str] | None = None
    status: int = 200
    fault: str | None = None
    fault_after: int = 1
    stall: float = 0.0
    stall_after: int = 0
    stall_headers: float = 0.0
    delay: float = 0.0
    fragment: int | None = None
    finish_reason: str | None = "stop"
    reject_stream_options: bool = False
    #: Thinking streamed before the text, in this delta field.
    reasoning: list[str] | None = None
    reasoning_field: str = "reasoning_content"
    #: Extra usage fields (e.g. ``completion_tokens_details``).
    usage_extra: dict[str, Any] | None = None
    #: The error object of ``fault="error_event"``.
    error: dict[str, Any] | None = None
    #: Exotic shapes: exactly these frames after the headers (a dict is sent as one
    #: ``data:`` frame, a str as raw bytes), then ``ending``.
    frames: list[Any] | None = None
    #: After ``frames``: "done" (``[DONE]`` and the end of the body), "eof" (the end of
    #: the body only), "hold" (the connection stays open and silent).
    ending: str = "done"


@dataclass
class Seen:
    """One request as the upstream received it."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    sent_pieces: int = 0
    client_closed: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def message(self) -> str:
        return self.body["messages"][-1]["content"]


def default_pieces(message: str) -> list[str]:
    return ["You ", "said: ", message]


class Upstream:
    """The server; ``url`` is the base URL to give the SDK (``.../v1``)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.requests: list[Seen] = []
        self._replies: dict[str, Reply] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        upstream = self

        class Handler(_Handler):
            server_state = upstream

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def script(self, message: str, reply: Reply) -> None:
        """Answer every request whose last message is ``message`` with ``reply``."""
        with self._lock:
            self._replies[message] = reply

    def reply_for(self, message: str) -> Reply:
        with self._lock:
            return self._replies.get(message) or Reply()

    def seen(self, message: str) -> list[Seen]:
        """The requests whose last message was ``message``, in order."""
        with self._lock:
            return [s for s in self.requests if s.body.get("messages") and s.message == message]

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.requests.append(seen)

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()


def refused_url() -> str:
    """A base URL where nothing listens: connecting is refused."""
    return f"http://127.0.0.1:{free_port()}/v1"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: Upstream

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        seen = Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        self.server_state.record(seen)
        try:
            self._answer(seen)
        except (BrokenPipeError, ConnectionResetError):
            seen.client_closed.set()
        finally:
            seen.done.set()
            self.close_connection = True

    # -- helpers ----------------------------------------------------------------------

    def _client_gone(self) -> bool:
        """Whether the client closed its side: readable with nothing to read."""
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (ConnectionResetError, OSError):
            return True

    def _wait(self, seconds: float, seen: Seen) -> bool:
        """Stay silent for ``seconds``, watching for the client leaving; False if it left."""
        deadline = time.monotonic() + seconds
        while True:
            if self._client_gone():
                seen.client_closed.set()
                return False
            left = deadline - time.monotonic()
            if left <= 0 or self.server_state._stopping.is_set():
                return True
            time.sleep(min(left, 0.02))

    def _json_error(self, status: int, message: str, kind: str) -> None:
        payload = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if status == 429:
            self.send_header("Retry-After", "1")
        self.end_headers()
        self.wfile.write(payload)

    def _chunk(self, data: bytes, reply: Reply) -> None:
        """One HTTP chunk, written in fragments when asked (splitting UTF-8 sequences)."""
        frame = b"%x\r\n%s\r\n" % (len(data), data)
        if not reply.fragment:
            self.wfile.write(frame)
            return
        for start in range(0, len(frame), reply.fragment):
            self.wfile.write(frame[start : start + reply.fragment])
            self.wfile.flush()
            time.sleep(0.001)

    def _event(self, payload: Any, reply: Reply) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        self._chunk(f"data: {text}\n\n".encode(), reply)

    # -- the answer -------------------------------------------------------------------

    def _answer(self, seen: Seen) -> None:
        body = seen.body
        messages = body.get("messages") or [{"content": ""}]
        message = messages[-1]["content"]
        reply = self.server_state.reply_for(message)
        if reply.stall_headers and not self._wait(reply.stall_headers, seen):
            return
        if reply.reject_stream_options and "stream_options" in body:
            self._json_error(400, "Unrecognized request argument supplied: stream_options", "invalid_request_error")
            return
        if reply.status == 401:
            # Real servers quote a masked key; this one quotes the whole header, so a
            # leak of the SDK's text anywhere would show in the tests.
            self._json_error(401, f"Incorrect API key provided: {self.headers.get('Authorization')}", "invalid_request_error")
            return
        if reply.status != 200:
            self._json_error(reply.status, f"upstream says {reply.status}", "server_error")
            return

        pieces = reply.pieces if reply.pieces is not None else default_pieces(message)
        model = body.get("model", "")
        base = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        extra = {"usage": None} if with_usage else {}

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

        def choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}

        if reply.frames is not None:
            self._frames(reply, seen)
            return
        self._event(choice({"role": "assistant", "content": ""}), reply)
        for thought in reply.reasoning or ():
            if reply.delay and not self._wait(reply.delay, seen):
                return
            self._event(choice({reply.reasoning_field: thought}), reply)
            self.wfile.flush()
        for index, piece in enumerate(pieces):
            if reply.stall and index == reply.stall_after and not self._wait(reply.stall, seen):
                return
            if reply.fault and reply.fault != "cut_after_finish" and index == reply.fault_after:
                self._fault(reply)
                return
            if reply.delay and not self._wait(reply.delay, seen):
                return
            self._event(choice({"content": piece}), reply)
            self.wfile.flush()
            seen.sent_pieces += 1
        if reply.stall and reply.stall_after >= len(pieces) and not self._wait(reply.stall, seen):
            return
        if reply.fault and reply.fault != "cut_after_finish":
            self._fault(reply)
            return
        self._event(choice({}, reply.finish_reason), reply)
        self.wfile.flush()
        if reply.fault == "cut_after_finish":
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if with_usage:
            prompt = sum(len(str(m.get("content", "")).split()) for m in messages)
            usage = {"prompt_tokens": prompt, "completion_tokens": len(pieces), "total_tokens": prompt + len(pieces), **(reply.usage_extra or {})}
            self._event({**base, "choices": [], "usage": usage}, reply)
        self._event("[DONE]", reply)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _frames(self, reply: Reply, seen: Seen) -> None:
        for frame in reply.frames or ():
            if isinstance(frame, str):
                self._chunk(frame.encode(), reply)
            else:
                self._event(frame, reply)
            self.wfile.flush()
            seen.sent_pieces += 1
            if reply.delay and not self._wait(reply.delay, seen):
                return
        if reply.ending == "hold":
            self._wait(SILENCE, seen)
            return
        if reply.ending == "done":
            self._event("[DONE]", reply)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _fault(self, reply: Reply) -> None:
        if reply.fault == "cut":
            # Half a chunk, then the connection drops: an incomplete chunked body.
            self.wfile.write(b"40\r\ndata: {\"id\"")
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        elif reply.fault == "eof":
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        elif reply.fault == "malformed":
            self._event('{"id": "chatcmpl-test", "choices": [{"index": 0, "delta": {"content": "tru', reply)
            self.wfile.flush()
            self._wait(0.5, Seen("", {}, {}))
        elif reply.fault == "not_a_chunk":
            self._event({"id": "chatcmpl-test", "object": "chat.completion.chunk", "choices": "nope"}, reply)
            self.wfile.flush()
            self._wait(0.5, Seen("", {}, {}))
        elif reply.fault == "error_event":
            self._event({"error": reply.error or {"message": "The engine overheated.", "type": "server_error"}}, reply)
            self.wfile.flush()
            self._wait(0.5, Seen("", {}, {}))
        else:
            raise ValueError(f"unknown fault {reply.fault!r}")


# -- the faults of an upstream, shared by the provider and the end-to-end tests ---------

#: The text the scripted replies below stream; most faults strike after its first piece.
PIECES = ["Part", "ial ", "reply."]
#: A silence far longer than any timeout the tests configure; the upstream ends it as
#: soon as the client leaves.
SILENCE = 60.0


@dataclass(frozen=True)
class Fault:
    name: str
    reply: Reply
    code: str
    retryable: bool
    #: The text that reached the client before the fault.
    partial: str


FAULTS = [
    Fault("http_401", Reply(PIECES, status=401), "upstream_auth", False, ""),
    Fault("http_403", Reply(PIECES, status=403), "upstream_auth", False, ""),
    Fault("http_429", Reply(PIECES, status=429), "upstream_rate_limited", True, ""),
    Fault("http_500", Reply(PIECES, status=500), "upstream_unavailable", True, ""),
    Fault("http_503", Reply(PIECES, status=503), "upstream_unavailable", True, ""),
    Fault("http_404", Reply(PIECES, status=404), "upstream_rejected", False, ""),
    Fault("cut_mid_stream", Reply(PIECES, fault="cut"), "upstream_connection", True, "Part"),
    Fault("cut_before_text", Reply(PIECES, fault="cut", fault_after=0), "upstream_connection", True, ""),
    Fault("ends_without_finish", Reply(PIECES, fault="eof", fault_after=2), "upstream_incomplete", True, "Partial "),
    Fault("malformed_chunk", Reply(PIECES, fault="malformed"), "upstream_bad_response", False, "Part"),
    Fault("json_not_a_chunk", Reply(PIECES, fault="not_a_chunk"), "upstream_bad_response", False, "Part"),
    Fault("error_in_stream", Reply(PIECES, fault="error_event"), "upstream_error", True, "Part"),
    Fault("silent_before_headers", Reply(PIECES, stall_headers=SILENCE), "upstream_timeout", True, ""),
    Fault("silent_before_first_token", Reply(PIECES, stall=SILENCE), "upstream_timeout", True, ""),
    Fault("silent_between_tokens", Reply(PIECES, stall=SILENCE, stall_after=1), "upstream_timeout", True, "Part"),
    Fault("error_in_stream_rate_limit", Reply(PIECES, fault="error_event", error={"message": "Rate limit reached for requests", "type": "requests", "code": "rate_limit_exceeded"}), "upstream_rate_limited", True, "Part"),
    Fault("error_in_stream_overloaded", Reply(PIECES, fault="error_event", error={"type": "overloaded_error", "message": "Overloaded"}), "upstream_overloaded", True, "Part"),
    Fault("error_in_stream_context", Reply(PIECES, fault="error_event", error={"message": "This model's maximum context length is 8192 tokens.", "code": "context_length_exceeded"}), "context_length_exceeded", False, "Part"),
]


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, *, usage: dict[str, Any] | None = None, choices: bool = True) -> dict[str, Any]:
    """One ``chat.completion.chunk`` for :attr:`Reply.frames`."""
    body: dict[str, Any] = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1, "model": "test-model"}
    body["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}] if choices else []
    if usage is not None:
        body["usage"] = usage
    return body
