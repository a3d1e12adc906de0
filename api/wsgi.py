"""WSGI entry point: gunicorn -k gevent 'api.wsgi:app' (cli.services.api_command)."""

from api import create_app

app = create_app()
