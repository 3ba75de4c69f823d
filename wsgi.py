"""The WSGI entry point: ``gunicorn wsgi:app -c gunicorn.conf.py``. The only module that builds
an app at import time."""

from shop import create_app

app = create_app()
