"""Structured logging with structlog: JSON in production, readable console in development.

Per-call fields (`call_sid`, `stream_sid`) are bound through contextvars by the call session, so
every event logged while handling a call carries them.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import threading
from collections.abc import Iterable
from typing import Any, TextIO

import structlog


class SafeLineWriter:
    """Writes whole log lines to a stream; a failed write is dropped and counted, never raised.

    Logging must not stop the process from doing its job: a log call before the drain (SIGTERM),
    in an error path or in a call's loop runs whatever the stream does. When the reader of a pipe
    has gone (EPIPE), the stream's descriptor is pointed at /dev/null, as the Python docs advise
    for SIGPIPE, so the bytes left in its buffer do not fail again at exit; later lines are counted
    as dropped. Any other OSError (disk full, EAGAIN) drops that line only.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._broken = False
        self.dropped = 0  # lines not written

    def write_line(self, line: str) -> None:
        with self._lock:
            if self._broken:
                self.dropped += 1
                return
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except (OSError, ValueError) as exc:  # ValueError: the stream was closed
                self.dropped += 1
                if isinstance(exc, BrokenPipeError) or getattr(exc, "errno", None) == errno.EPIPE:
                    self._broken = True
                    self._silence()

    def _silence(self) -> None:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self._stream.fileno())
            finally:
                os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass  # not a real file (a test's capture): it keeps failing, and we keep counting


class _SafePrintLogger:
    """structlog's final logger: hands the rendered line to the process's SafeLineWriter."""

    def __init__(self, writer: SafeLineWriter) -> None:
        self._writer = writer

    def msg(self, message: str) -> None:
        self._writer.write_line(message)

    log = debug = info = warn = warning = error = err = critical = exception = fatal = failure = msg


class _SafeHandler(logging.Handler):
    """The standard library's loggers (uvicorn, websockets, twilio) through the same writer."""

    def __init__(self, writer: SafeLineWriter) -> None:
        super().__init__()
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - a record that cannot be formatted is dropped, not raised
            self._writer.dropped += 1
            return
        self._writer.write_line(line)


_writer: SafeLineWriter | None = None


def dropped_log_lines() -> int:
    """Log lines lost to a failing stderr since logging was configured (exported as a metric)."""
    return _writer.dropped if _writer is not None else 0


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
    global _writer
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    writer = _writer = SafeLineWriter(sys.stderr)
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=lambda *args: _SafePrintLogger(writer),
        cache_logger_on_first_use=False,
    )
    handler = _SafeHandler(writer)
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


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)


def _masking(renderer: structlog.types.Processor, secrets: list[str]) -> structlog.types.Processor:
    def render(logger: Any, name: str, event_dict: Any) -> Any:
        line = renderer(logger, name, event_dict)
        if isinstance(line, str):
            for secret in secrets:
                if secret in line:
                    line = line.replace(secret, "***")
        return line

    return render

