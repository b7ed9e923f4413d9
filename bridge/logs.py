"""Structured logging with structlog: JSON in production, readable console in development.

Per-call fields (`call_sid`, `stream_sid`) are bound through contextvars by the call session, so
every event logged while handling a call carries them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

import structlog


def configure_logging(log_format: str = "console", level: str = "info", redact: Iterable[str] = ()) -> None:
    """structlog for our events; the standard library's loggers (uvicorn, websockets, twilio)
    are rendered the same way, so a JSON deployment gets one line of JSON per event.

    `redact`: secret values (the settings' keys and tokens) masked as `***` in every rendered line,
    whichever logger wrote it and whatever it quoted (an exception's text, a URL), at every level:
    the last line of defence behind not logging them in the first place."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if log_format == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    secrets = sorted({value for value in redact if value and len(value) >= 4}, key=len, reverse=True)
    if secrets:
        renderer = _masking(renderer, secrets)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Library chatter stays at warning and above unless we debug.
    root.setLevel(max(numeric_level, logging.WARNING) if numeric_level > logging.DEBUG else numeric_level)


def _masking(renderer: structlog.types.Processor, secrets: list[str]) -> structlog.types.Processor:
    def render(logger: Any, name: str, event_dict: Any) -> Any:
        line = renderer(logger, name, event_dict)
        if isinstance(line, str):
            for secret in secrets:
                if secret in line:
                    line = line.replace(secret, "***")
        return line

    return render


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
