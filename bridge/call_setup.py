"""What a call needs once its stream has started: its session config and its upstream session."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from . import dialects
from .dialects import SessionConfig
from .telemetry import Metrics
from .upstream import UpstreamConnection, UpstreamTarget


@dataclass(frozen=True, slots=True)
class CallSetup:
    """Handed to the call session when its `start` is accepted."""

    session_config: SessionConfig
    upstream: Awaitable[UpstreamConnection]  # configured, greeting asked for (maybe pre-warmed)
    reconnect: Callable[[], Awaitable[UpstreamConnection]]  # a fresh configured session, no greeting
    profile_name: str = "default"
    max_call_s: float | None = None


async def open_session(
    target: UpstreamTarget, config: SessionConfig, metrics: Metrics, greet: bool
) -> UpstreamConnection:
    """Connect, send `session.update` and (for a new call) ask for the greeting."""
    started = time.monotonic()
    connection = await UpstreamConnection.open(target)
    metrics.upstream_connect.observe(time.monotonic() - started)
    try:
        await connection.send(connection.dialect.session_update(config))
        if greet:
            await connection.send(dialects.greeting_response(config))
    except BaseException:
        await connection.close()
        raise
    return connection
