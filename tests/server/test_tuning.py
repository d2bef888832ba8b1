"""The gunicorn worker tuning: one send per write, the same bytes as gunicorn's own."""

from __future__ import annotations

import gevent
from gevent import socket as gsocket
from gunicorn import util

from chatapp.server.tuning import write


def _written(writer, data: bytes, chunked: bool) -> bytes:
    """What ``writer(sock, data, chunked)`` puts on a real (gevent) socket pair."""
    left, right = gsocket.socketpair()
    received = bytearray()

    def drain() -> None:
        while chunk := right.recv(65536):
            received.extend(chunk)

    reader = gevent.spawn(drain)
    try:
        writer(left, data, chunked)
        left.shutdown(gsocket.SHUT_WR)
        reader.join(10)
    finally:
        left.close()
        right.close()
    return bytes(received)


def test_same_bytes_as_gunicorn_plain_and_chunked() -> None:
    frame = b'event: token\nid: 1-0\ndata: {"text":" \xc3\xa9"}\n\n'
    for chunked in (False, True):
        assert _written(write, frame, chunked) == _written(util.write, frame, chunked)
    assert _written(write, frame, True) == b"%X\r\n" % len(frame) + frame + b"\r\n"


def test_a_write_larger_than_the_socket_buffer_arrives_whole() -> None:
    # The kernel takes part of it; the rest goes out as the reader drains the socket.
    big = bytes(range(256)) * 40_000
    assert _written(write, big, True) == b"%X\r\n" % len(big) + big + b"\r\n"
    assert _written(write, big, False) == big
