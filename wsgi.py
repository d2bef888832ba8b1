"""The standalone WSGI app: ``gunicorn -c gunicorn.conf.py wsgi:app``."""

from chatapp import create_app

app = create_app()
