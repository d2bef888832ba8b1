"""gunicorn settings for chatapp, read from the environment.

Shipped inside the package so an installed chatapp finds them anywhere:
``gunicorn -c python:chatapp.server.gunicorn_conf 'chatapp:create_app()'`` (what
``chatapp serve`` runs). The repository's ``gunicorn.conf.py`` re-exports this module.
Every value comes from :class:`chatapp.config.ServerSettings`.
One gevent worker holds thousands of open streams; more workers need a broker they can
share (``CHATAPP_REDIS_URL``).
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import socket
import sys
from pathlib import Path
from typing import Any

from chatapp.config import ServerSettings, load_server_settings, load_settings
from chatapp.errors import ConfigError
from chatapp.server.drain import drained, watch_for_stop
from chatapp.server.tuning import tune_worker
from chatapp.web.requestlog import log_to_stderr

__all__ = [
    "bind",
    "child_exit",
    "control_socket_disable",
    "forwarded_allow_ips",
    "graceful_timeout",
    "on_starting",
    "post_fork",
    "post_worker_init",
    "secure_scheme_headers",
    "when_ready",
    "worker_class",
    "worker_connections",
    "worker_exit",
    "workers",
]


def _load() -> ServerSettings:
    try:
        return load_server_settings()
    except ConfigError as exc:
        sys.exit(f"chatapp: {exc}")


def _app_settings_redis() -> bool:
    """Whether the app will share sessions through Redis (checked fully in on_starting)."""
    try:
        return bool(load_settings({}).redis_url)
    except ConfigError:
        return False


def _metrics_dir() -> str | None:
    try:
        return load_settings({}).metrics_dir
    except ConfigError:
        return None


_server = _load()
bind = [_server.address]
worker_class = "gevent"
# Each open stream is one connection; gunicorn's default of 1000 is far too few.
worker_connections = _server.worker_connections
# Streams reconnect with Last-Event-ID, so a restart need not wait long for them.
graceful_timeout = _server.graceful_timeout
# The control socket (gunicorn 24+) has one fixed default path per user, which two
# servers on one machine would fight over; chatapp does not use it.
control_socket_disable = True
# gunicorn itself believes X-Forwarded-Proto (and -Ssl, -Protocol) from 127.0.0.1 by
# default, so any local client could make a request https and its cookie Secure. Forwarded
# headers count only through the app's CHATAPP_TRUSTED_PROXIES (werkzeug's ProxyFix, which
# also takes the client's address and host from them); gunicorn believes none.
forwarded_allow_ips = ""
secure_scheme_headers: dict[str, str] = {}
# gunicorn's own default is WEB_CONCURRENCY or 1, and a command line --workers overrides
# this. With Redis sharing the sessions, default to a worker per core.
workers = _server.workers or (multiprocessing.cpu_count() if _app_settings_redis() else 1)


def on_starting(server: Any) -> None:
    """Refuse a configuration that would split sessions across processes; set up logs
    and the shared metrics directory."""
    try:
        settings = load_settings({})
    except ConfigError as exc:
        sys.exit(f"chatapp: {exc}")
    if server.cfg.workers > 1 and not settings.redis_url:
        sys.exit(
            f"chatapp: {server.cfg.workers} workers were asked for, but the memory broker "
            "lives in one process and each worker would see different chats. Set "
            "CHATAPP_REDIS_URL=redis://... to share sessions between workers, or run one "
            "worker (one gevent worker holds thousands of streams)."
        )
    if server.cfg.workers > 1 and not settings.secret_key:
        sys.exit(
            f"chatapp: {server.cfg.workers} workers need one shared CHATAPP_SECRET_KEY to sign "
            "the owner cookie; without it each worker would make its own and forget the "
            "others' users. Set CHATAPP_SECRET_KEY to a long random string (the same on every host)."
        )
    _refuse_addresses_in_use(server)
    log_to_stderr()
    metrics_dir = settings.metrics_dir
    if metrics_dir:
        # Numbers left by an earlier run would be added to this one's.
        Path(metrics_dir).mkdir(parents=True, exist_ok=True)
        for stale in Path(metrics_dir).glob("*.db"):
            stale.unlink()


def when_ready(server: Any) -> None:
    """Say where the server really listens, once its sockets are bound: ``--bind``,
    ``CHATAPP_BIND``, ``PORT`` and a port of 0 all end up here."""
    try:
        prefix = load_settings({}).url_prefix
    except ConfigError:
        prefix = ""
    scheme = "https" if server.cfg.is_ssl else "http"
    for listener in server.LISTENERS:
        print(f"chatapp: {_where(listener.getsockname(), scheme, prefix)}", file=sys.stderr, flush=True)


def _where(name: Any, scheme: str, prefix: str) -> str:
    """A listening socket's address as the URL to open."""
    if isinstance(name, str):
        return f"listening on unix:{name}"
    host, port = name[0], name[1]
    if host in ("0.0.0.0", "::"):
        return f"open {scheme}://localhost:{port}{prefix}/ (listening on all interfaces, {host}:{port})"
    shown = f"[{host}]" if ":" in host else host
    return f"open {scheme}://{shown}:{port}{prefix}/"


def _refuse_addresses_in_use(server: Any) -> None:
    """Stop at once, saying what to do, when an address cannot be bound: gunicorn itself
    retries for five seconds and then says only "Can't connect"."""
    if server.cfg.reuse_port or os.environ.get("LISTEN_FDS") or os.environ.get("GUNICORN_FD"):
        # Sockets inherited from systemd or an old master (USR2), or shared by design.
        return
    from_command_line = list(server.cfg.bind) != list(bind)
    for address in server.cfg.address:
        if not isinstance(address, tuple) or not address[1]:
            continue  # a Unix socket, an inherited descriptor, or "any free port"
        host, port = address[0], int(address[1])
        failure = _bind_error(host, port)
        if failure is None:
            continue
        if failure.errno != errno.EADDRINUSE:
            sys.exit(f"chatapp: cannot listen on {host}:{port}: {failure.strerror}.")
        spare = next((p for p in range(port + 1, min(port + 50, 65536)) if _bind_error(host, p) is None), port + 1)
        if from_command_line:
            fix = f"pass another port, such as --bind {host}:{spare}"
        elif os.environ.get("CHATAPP_BIND"):
            fix = f"set CHATAPP_BIND={host}:{spare}, or pass --bind {host}:{spare}"
        else:
            fix = f"set PORT={spare}, or pass --bind 127.0.0.1:{spare}"
        sys.exit(f"chatapp: port {port} is in use on {host} (another server listens there, perhaps another chatapp): {fix}.")


def _bind_error(host: str, port: int) -> OSError | None:
    """Why ``host:port`` cannot be bound as gunicorn would bind it, or ``None`` if it can."""
    from gunicorn.util import is_ipv6

    with socket.socket(socket.AF_INET6 if is_ipv6(host) else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc
    return None


def child_exit(server: Any, worker: Any) -> None:
    """A dead worker's open-stream gauge no longer counts."""
    if _metrics_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def _write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's own answer to a request it cannot parse, in chatapp's JSON error shape."""
    import json
    import re

    from gunicorn.util import write_nonblock

    code = re.sub(r"[^a-z0-9]+", "_", reason.lower()).strip("_") or "bad_request"
    # ASCII-only JSON: the status line and body go out as latin-1, like gunicorn's own.
    body = json.dumps({"error": {"code": code, "message": mesg or reason}}).encode("ascii")
    head = f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    write_nonblock(sock, head.encode("latin-1") + body)


def post_fork(server: Any, worker: Any) -> None:
    """Malformed requests (a raw CR or LF or invalid UTF-8 in the request line, an
    over-long URL, a bad Content-Length) never reach the app: gunicorn answers them
    itself, by default with an HTML page. Every answer of this server is JSON instead."""
    from gunicorn import util

    util.write_error = _write_json_error


def post_worker_init(worker: Any) -> None:
    """Tune each worker once the app is loaded (see :mod:`chatapp.server.tuning`), and
    watch for the signal to stop (see :mod:`chatapp.server.drain`)."""
    tune_worker(worker)
    watch_for_stop(worker)


def worker_exit(server: Any, worker: Any) -> None:
    """Let a drain in progress hand its turns over before the worker is gone."""
    drained(worker)

