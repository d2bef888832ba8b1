"""gunicorn settings for chatapp: ``gunicorn -c gunicorn.conf.py wsgi:app``.

The settings live in the package (:mod:`chatapp.server.gunicorn_conf`) so an installed
chatapp carries them too; this file lets the repository use the usual command.
"""

from chatapp.server.gunicorn_conf import *  # noqa: F403
