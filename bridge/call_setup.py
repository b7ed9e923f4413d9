"""What a call needs once its stream has started: its session config and its upstream session."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from . import dialects
from .dialects import SessionConfig
from twiml.rest import CallControl

from .recording import UpstreamTap
from .telemetry import Metrics
from .tools import ToolRegistry
from .upstream import UpstreamConnection, UpstreamTarget


@dataclass(frozen=True, slots=True)
class CallSetup:
    """Handed to the call session when its `start` is accepted."""

    session_config: SessionConfig
    upstream: Awaitable[UpstreamConnection]  # configured, greeting asked for (maybe pre-warmed)
    reconnect: Callable[[], Awaitable[UpstreamConnection]]  # a fresh configured session, no greeting
    profile_name: str = "default"
    max_call_s: float | None = None
    tools: ToolRegistry = field(default_factory=ToolRegistry)
    tool_names: tuple[str, ...] = ()  # the tools this call's profile enables
    dtmf: str = "off"  # "off", "forward", "collect"
    transfer_number: str | None = None
    fallback_number: str | None = None  # VOICE_BRIDGE_FALLBACK_NUMBER: dialled after the apology
    call_control: CallControl | None = None  # Twilio REST, when TWILIO_ACCOUNT_SID is configured


SETUP_CLOSE_S = 0.5  # a session abandoned during setup: the closing handshake, then the transport is cut


async def open_session(
    target: UpstreamTarget, config: SessionConfig, metrics: Metrics, greet: bool, tap: UpstreamTap | None = None
) -> UpstreamConnection:
    """Connect, send `session.update` and (for a new call) ask for the greeting; `tap` records the session."""
    started = time.monotonic()
    connection = await UpstreamConnection.open(target, tap=tap)
    metrics.upstream_connect.observe(time.monotonic() - started)
    try:
        await connection.send(connection.dialect.session_update(config))
        if greet:
            await connection.send(dialects.greeting_response(config))
    except BaseException:
        # Cancelled (the call ended, an unclaimed pre-warm) or failed: never wait out a slow close.
        await connection.close_within(SETUP_CLOSE_S)
        raise
    return connection
