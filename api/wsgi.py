"""WSGI entry point: gunicorn -k gthread --threads 16 'api.wsgi:app'."""

from api import create_app

app = create_app()
