"""gunicorn settings for chatapp, read from the environment.

``gunicorn -c gunicorn.conf.py wsgi:app``. One gevent worker holds thousands of open
streams; more workers need a broker they can share (``CHATAPP_REDIS_URL``).
"""

import multiprocessing
import os
import sys

bind = [os.environ.get("CHATAPP_BIND") or f"0.0.0.0:{os.environ.get('PORT', '8000')}"]
worker_class = "gevent"
# Each open stream is one connection; gunicorn's default of 1000 is far too few.
worker_connections = int(os.environ.get("CHATAPP_WORKER_CONNECTIONS", "10000"))
# Streams reconnect with Last-Event-ID, so a restart need not wait long for them.
graceful_timeout = int(os.environ.get("CHATAPP_GRACEFUL_TIMEOUT", "10"))
# The control socket (gunicorn 24+) has one fixed default path per user, which two
# servers on one machine would fight over; chatapp does not use it.
control_socket_disable = True
# gunicorn reads WEB_CONCURRENCY itself for its default worker count, and a command line
# --workers overrides both. With Redis sharing the sessions, default to a worker per core.
if os.environ.get("CHATAPP_REDIS_URL") and not os.environ.get("WEB_CONCURRENCY"):
    workers = multiprocessing.cpu_count()


def on_starting(server):
    """Refuse a configuration that would split sessions across processes."""
    from chatapp.config import load_settings
    from chatapp.errors import ConfigError

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


def post_worker_init(worker):
    """Tune each worker once the app is loaded (see chatapp.serving)."""
    from chatapp.serving import tune_worker

    tune_worker(worker)
