"""``SHOP_LOG_FORMAT=json``: every log line one JSON object, for a log pipeline to parse.

Each object has ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message`` and ``request_id``
(the request's ``X-Request-ID``: the balancer's when it sent a sane one, else the shop's own; null
outside a request), plus ``exc_info`` with the traceback when there is one. gunicorn's access
lines carry the request's fields as well (``method``, ``path``, ``status``, ``duration_ms``,
...), with the same ``request_id`` the shop's lines have. python-json-logger does the encoding:
it keeps a record's extra fields, turns exceptions and odd values into text, and is maintained;
what is ours is which fields there are.
"""

from __future__ import annotations

import logging
from typing import Any

from pythonjsonlogger.json import JsonFormatter

RENAMED = {"levelname": "level", "name": "logger"}


class ShopJsonFormatter(JsonFormatter):
    """time, level, logger, message, request_id: in that order, on every line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("rename_fields", RENAMED)
        kwargs.setdefault("timestamp", "time")
        super().__init__("{levelname}{name}{message}", *args, style="{", **kwargs)

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        log_data["request_id"] = _request_id(getattr(record, "request_id", None))


class AccessJsonFormatter(ShopJsonFormatter):
    """gunicorn's access log: its line as ``message``, its atoms as fields."""

    ATOMS = {
        "h": "remote_addr",
        "m": "method",
        "U": "path",
        "q": "query",
        "H": "protocol",
        "s": "status",
        "B": "bytes",
        "M": "duration_ms",
        "f": "referer",
        "a": "user_agent",
    }

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        atoms = record.args if isinstance(record.args, dict) else {}
        for atom, field in self.ATOMS.items():
            value = atoms.get(atom)
            if value not in (None, "-"):
                log_data[field] = _number(value) if atom in "sBM" else value
        log_data["request_id"] = _request_id(atoms.get("{x-request-id}o"))


def _request_id(value: object) -> str | None:
    return None if value in (None, "", "-") else str(value)


def _number(value: object) -> object:
    try:
        return int(str(value))
    except ValueError:
        return value


def gunicorn_logconfig() -> dict[str, Any]:
    """gunicorn's ``logconfig_dict``: its error log (stderr), its access log and the root
    logger, where the shop's own records go (stdout), all in JSON."""
    formatter = "shop.log_format.ShopJsonFormatter"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "root": {"level": "INFO", "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            },
            "error_console": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            },
            "access": {
                "class": "logging.StreamHandler",
                "formatter": "access_json",
                "stream": "ext://sys.stdout",
            },
        },
        "formatters": {
            "json": {"()": formatter},
            "access_json": {"()": "shop.log_format.AccessJsonFormatter"},
        },
    }


def json_handler() -> logging.Handler:
    """A stderr handler in JSON, for a process gunicorn did not configure (``flask run``)."""
    handler = logging.StreamHandler()
    handler.setFormatter(ShopJsonFormatter())
    return handler
