"""SEQTRAIN_LOG_FORMAT=json: one JSON object a log line, for the API (gunicorn) and the worker
(Celery). `text` (the default) leaves each program's own format alone.

    gunicorn -c python:cli.logformat ...         the API: gunicorn reads `logconfig_dict`
    python -m cli.logformat -A worker.celery_app worker ...   the worker: Celery's command line
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from shared.settings import Settings


def json_logs() -> bool:
    return Settings.from_env().log_format == "json"


class JsonFormatter(logging.Formatter):
    """{"ts", "level", "logger", "message", ["exc"]}: one line, UTC timestamps."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def dict_config(level: str = "INFO") -> dict[str, Any]:
    """A logging.config.dictConfig for JSON lines on stderr, gunicorn's loggers included."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"console": handler},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "gunicorn.error": {"handlers": ["console"], "level": level, "propagate": False},
            "gunicorn.access": {"handlers": ["console"], "level": level, "propagate": False},
        },
    }


# Read by gunicorn when started with `-c python:cli.logformat` (cli.services.api_command).
logconfig_dict = dict_config() if json_logs() else {}


def main() -> None:
    """The Celery command line; with JSON logs, in place of Celery's own logging set-up and
    without its start-up banner."""
    import logging.config

    from celery import signals
    from celery.bin.celery import main as celery_main

    sys.argv[0] = "celery"
    if json_logs():

        @signals.setup_logging.connect
        def _json(loglevel: Any = None, **_: Any) -> None:
            level = loglevel if isinstance(loglevel, str) else logging.getLevelName(loglevel or 20)
            logging.config.dictConfig(dict_config(level))

        sys.argv.insert(1, "--quiet")
    sys.exit(celery_main())


if __name__ == "__main__":
    main()
