"""gunicorn settings for chatapp: ``gunicorn -c gunicorn.conf.py wsgi:app``.

The settings live in the package (:mod:`chatapp.gunicorn_config`) so an installed
chatapp carries them too; this file lets the repository use the usual command.
"""

from chatapp.gunicorn_config import *  # noqa: F401,F403
