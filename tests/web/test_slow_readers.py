"""Clients that stop reading: writes to them are abandoned, and memory stays bounded.

Each reader here is a raw socket with the smallest receive buffer the kernel allows that
sends its request and then never reads, so the server's writes fill the socket buffers
and block, as they would for a stalled phone or a hostile client.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from tests.support.servers import ChatClient, ChatServer, ServerFactory, wait_for

#: Long enough (about 3.5 MB of frames) to fill a loopback socket's buffers.
LONG_REPLY_WORDS = 60_000


@contextmanager
def stalled_reader(server: ChatServer, client: ChatClient, session_id: str) -> Iterator[socket.socket]:
    """A stream request from ``client``'s owner whose response is never read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    sock.sendall(f"GET /api/sessions/{session_id}/stream HTTP/1.1\r\nHost: localhost\r\nCookie: {cookie}\r\n\r\n".encode())
    try:
        yield sock
    finally:
        sock.close()


def read_to_eof(sock: socket.socket, timeout: float = 10.0) -> int:
    """Drain the socket; returns the byte count once the server has closed it."""
    sock.settimeout(timeout)
    total = 0
    while chunk := sock.recv(65536):
        total += len(chunk)
    return total


@pytest.mark.parametrize("kind", ["gevent", "gthread", "flask"])
def test_a_stalled_write_is_abandoned_and_its_slot_freed(start_server: ServerFactory, kind: str) -> None:
    server = start_server(
        {
            "CHATAPP_DEMO_DELAY_MS": "0",
            "CHATAPP_DEMO_REPLY_WORDS": str(LONG_REPLY_WORDS),
            "CHATAPP_SEND_TIMEOUT_SECONDS": "1",
            "CHATAPP_MAX_STREAMS_PER_OWNER": "1",
        },
        kind=kind,
    )
    with server.client() as client:
        session_id = client.new_session()
        client.send_message(session_id, "a very long answer")
        assert wait_for(lambda: not client.history(session_id)["generating"], timeout=60)
        # The whole reply waits in the log, so the first write alone outgrows the buffers.
        with stalled_reader(server, client, session_id) as sock:
            assert wait_for(lambda: server.health()["streams"] == 1, timeout=5)
            # Abandoned after the send timeout while the client still holds its socket.
            assert wait_for(lambda: server.health()["streams"] == 0, timeout=15), "the stalled write was never abandoned"
            # The owner's only slot is free again.
            with client.open_stream(session_id) as stream:
                assert stream.status_code == 200
                assert stream.until_end()[-1].event == "end"
            # The server closed the connection: what was buffered, then end of file.
            received = read_to_eof(sock)
        assert 0 < received < len(client.get(f"/api/sessions/{session_id}/stream").content)


def worker_rss(server: ChatServer) -> int:
    """Resident memory in bytes of the gunicorn worker (the master's only child)."""
    master = server.process.pid
    with open(f"/proc/{master}/task/{master}/children") as children:
        worker = int(children.read().split()[0])
    with open(f"/proc/{worker}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc status")


def test_memory_stays_bounded_while_20_readers_refuse_to_read(start_server: ServerFactory) -> None:
    readers = 20
    server = start_server(
        {
            "CHATAPP_DEMO_DELAY_MS": "0",
            "CHATAPP_DEMO_REPLY_WORDS": "100000",
            # Long enough that nothing is abandoned while we measure.
            "CHATAPP_SEND_TIMEOUT_SECONDS": "300",
            "CHATAPP_MAX_STREAMS_PER_OWNER": str(readers + 1),
        }
    )
    with server.client() as client:
        session_id = client.new_session()
        client.send_message(session_id, "the longest answer you have")
        assert wait_for(lambda: not client.history(session_id)["generating"], timeout=60)
        stream_bytes = len(client.get(f"/api/sessions/{session_id}/stream").content)
        assert stream_bytes > 5_000_000
        # The reply is in the log now; from here on only the readers can cost memory.
        before = worker_rss(server)
        with ExitStack() as readers_open:
            for _ in range(readers):
                readers_open.enter_context(stalled_reader(server, client, session_id))
            assert wait_for(lambda: server.health()["streams"] == readers, timeout=10)
            # Give every reader time to make its writes until they block.
            time.sleep(1)
            grown = worker_rss(server) - before
            assert server.health()["streams"] == readers, "the stalled readers should still be open"
    # Each reader is owed the whole stream. Holding that for every reader would take
    # 20 copies; writes of a bounded size leave each reader with well under one.
    assert grown < readers * stream_bytes / 2, f"the worker grew {grown / 1e6:.0f} MB for {readers} readers of a {stream_bytes / 1e6:.1f} MB stream"
