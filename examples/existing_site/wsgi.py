"""The example site's WSGI app: ``gunicorn -c ../../gunicorn.conf.py wsgi:app``."""

from hostsite import create_app

app = create_app()
