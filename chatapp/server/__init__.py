"""Serving chatapp with gunicorn: its settings (:mod:`.gunicorn_conf`) and worker tuning (:mod:`.tuning`)."""
