"""A reference client of chatapp's HTTP API and event stream, for the terminal tools.

:class:`SSEParser` follows the WHATWG "interpreting an event stream" rules (lines end in
CR LF, CR or LF; ``data`` lines join with LF; comments start with ``:``), and every item
it returns carries the time its bytes arrived, which ``chatapp doctor`` compares with the
server's pace. :class:`ChatAPI` speaks the JSON API with one cookie jar, so one
``ChatAPI`` is one owner.
"""

from __future__ import annotations

import codecs
import contextlib
import socket
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["APIError", "ChatAPI", "SSEParser", "StreamItem", "StreamReader"]


@dataclass
class StreamItem:
    """An event (``kind == "event"``) or a comment (``kind == "comment"``) as received."""

    kind: str
    event: str = "message"
    data: str = ""
    id: str = ""
    #: ``time.monotonic()`` when the read that completed this item returned.
    at: float = 0.0
    #: Which network read completed it (0, 1, ...): items of one read arrived together.
    read: int = 0

    def json(self) -> Any:
        import json

        return json.loads(self.data)


class SSEParser:
    """Feed bytes, get :class:`StreamItem` objects back, as a browser would parse them."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._first = True
        self._data: list[str] = []
        self._event = ""
        self.last_event_id = ""
        self.retry: int | None = None

    def feed(self, chunk: bytes, *, at: float = 0.0, read: int = 0) -> list[StreamItem]:
        text = self._decoder.decode(chunk)
        if self._first and text:
            text = text.removeprefix("\ufeff")
            self._first = False
        self._buffer += text
        items: list[StreamItem] = []
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                return items
            line, self._buffer = self._buffer[: cut[0]], self._buffer[cut[1] :]
            item = self._line(line)
            if item is not None:
                item.at, item.read = at, read
                items.append(item)

    def _line(self, line: str) -> StreamItem | None:
        if line == "":
            data, event = self._data, self._event
            self._data, self._event = [], ""
            if not data:
                return None
            return StreamItem("event", event=event or "message", data="\n".join(data), id=self.last_event_id)
        if line.startswith(":"):
            return StreamItem("comment", data=line[1:].removeprefix(" "))
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None


def _line_end(buffer: str) -> tuple[int, int] | None:
    """Where the first line ends and the next begins; a CR at the very end waits for more."""
    for index, char in enumerate(buffer):
        if char == "\n":
            return index, index + 1
        if char == "\r":
            if index + 1 == len(buffer):
                return None
            return index, index + (2 if buffer[index + 1] == "\n" else 1)
    return None


class APIError(Exception):
    """The server answered with an error (or not with chatapp's API at all)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def _raise_for_error(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", f"{response.reason_phrase or 'error'} from {response.request.url}"
    raise APIError(response.status_code, code, message)


class StreamReader:
    """One open stream: items as they arrive, whatever the transfer or content coding."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.parser = SSEParser()
        self.opened = time.monotonic()
        self.stopped = False
        self.closed_by_server = False
        self.error: str | None = None
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        # gzip and zlib both decode with wbits=47; raw deflate (wbits=-15) is what some
        # servers send as "deflate"; anything else is reported, not decoded.
        self._inflate = zlib.decompressobj(47) if encoding in ("gzip", "x-gzip", "deflate") else None
        self.decodable = encoding in ("identity", "", "gzip", "x-gzip", "deflate")

    def items(self) -> Iterator[StreamItem]:
        """Events and comments until the server closes the stream (or :meth:`stop`)."""
        reads = 0
        try:
            for chunk in self.response.iter_raw():
                at = time.monotonic()
                if self._inflate is not None:
                    chunk = self._inflate.decompress(chunk)
                if not self.decodable:
                    continue
                yield from self.parser.feed(chunk, at=at, read=reads)
                reads += 1
            self.closed_by_server = not self.stopped
        except (httpx.HTTPError, OSError, zlib.error) as exc:
            if not self.stopped:
                self.closed_by_server = True
                self.error = type(exc).__name__

    def stop_after(self, seconds: float) -> threading.Timer:
        """Cut the connection after ``seconds`` even if the server sends nothing."""
        timer = threading.Timer(seconds, self.stop)
        timer.daemon = True
        timer.start()
        return timer

    def stop(self) -> None:
        """End the stream from our side; a read blocked on the socket returns at once."""
        self.stopped = True
        stream = self.response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class ChatAPI:
    """chatapp's JSON API at ``base_url`` (which includes any mount prefix)."""

    def __init__(self, base_url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(headers=dict(headers or {}), timeout=httpx.Timeout(timeout), follow_redirects=False)

    def url(self, path: str) -> str:
        # Paths are built from the base rather than taken from the server's answers
        # (``stream_url``), which a proxy that strips a path prefix would get wrong.
        return self.base_url + path

    def health(self) -> httpx.Response:
        return self.http.get(self.url("/healthz"))

    def create_session(self) -> dict[str, Any]:
        response = self.http.post(self.url("/api/sessions"), json={})
        _raise_for_error(response)
        return response.json()

    def send(self, session_id: str, text: str) -> dict[str, Any]:
        response = self.http.post(self.url(f"/api/sessions/{session_id}/messages"), json={"message": text})
        _raise_for_error(response)
        return response.json()

    @contextlib.contextmanager
    def chat(self, text: str, *, session_id: str | None = None, read_timeout: float | None = 120.0) -> Iterator[StreamReader]:
        """Post ``text`` and read its reply from the same request (the one-step stream).

        To ``session_id`` through ``POST .../messages``, or to a new session through
        ``POST /api/chat``, whose ``start`` event then carries the new ``session_id``. A
        dropped stream resumes with :meth:`stream` and the last event's id.
        """
        if session_id is None:
            path, body = "/api/chat", {"message": text}
        else:
            path, body = f"/api/sessions/{session_id}/messages", {"message": text}
        headers = {"Accept": "text/event-stream", "Accept-Encoding": "identity"}
        timeout = httpx.Timeout(30.0, read=read_timeout)
        with self.http.stream("POST", self.url(path), json=body, headers=headers, timeout=timeout) as response:
            if response.status_code != 200:
                response.read()
                _raise_for_error(response)
            yield StreamReader(response)

    def cancel(self, session_id: str) -> None:
        self.http.post(self.url(f"/api/sessions/{session_id}/cancel"))

    def delete(self, session_id: str) -> None:
        self.http.delete(self.url(f"/api/sessions/{session_id}"))

    @contextlib.contextmanager
    def stream(
        self,
        session_id: str,
        *,
        follow: bool = False,
        last_event_id: str | None = None,
        accept_encoding: str = "identity",
        read_timeout: float | None = 120.0,
    ) -> Iterator[StreamReader]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache", "Accept-Encoding": accept_encoding}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        params = {"follow": "1"} if follow else None
        timeout = httpx.Timeout(30.0, read=read_timeout)
        url = self.url(f"/api/sessions/{session_id}/stream")
        with self.http.stream("GET", url, headers=headers, params=params, timeout=timeout) as response:
            if response.status_code != 200:
                response.read()
                _raise_for_error(response)
            yield StreamReader(response)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ChatAPI:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
