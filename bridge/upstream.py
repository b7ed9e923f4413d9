"""The WebSocket client to the upstream Realtime service; events come out in the bridge's vocabulary.

Connecting: the target's authentication headers are taken at connect time (so Entra ID tokens come
from the process's token cache), each attempt has an open timeout, and failures that may pass
(refused, reset, timeout, HTTP 429/5xx) are retried with capped exponential backoff while a short
budget lasts. Whatever the cause, a failed connect raises one exception: `UpstreamUnavailable`.
Logs name the upstream by its URL with secret-looking query values masked, never by its headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import ClientConnection, connect

from .auth import HeaderSource, TokenUnavailable
from .dialects import Dialect, parse_server_frame
from .logs import get_logger
from .realtime_events import ServerEvent
from .recording import UpstreamTap
from .transports import reset

log = get_logger("bridge.upstream")

OPEN_TIMEOUT_S = 10.0  # one attempt: TCP + TLS + HTTP upgrade
CONNECT_BUDGET_S = 3.0  # retries start only while this much time since the first attempt has not passed
FIRST_BACKOFF_S = 0.1
MAX_BACKOFF_S = 1.0
PING_INTERVAL_S = 20.0
PING_TIMEOUT_S = 20.0
CLOSE_TIMEOUT_S = 2.0
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # a long response's audio can arrive in large deltas
# The kernel send buffer of each upstream socket (SO_SNDBUF; Linux doubles it). What the bridge
# sends the model is caller audio at ~67 kB/s plus small control events, so 128 KiB is seconds of
# audio and far above any path's bandwidth-delay product; autotuning would let a model that stops
# reading swallow megabytes (a minute of audio) before a send blocks, and the stall (dropped
# frames, then the fallback) would be noticed only then. Tests shrink it further; None = the OS's.
SEND_BUFFER_BYTES: int | None = 128 * 1024
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})

_SECRET_PARAM = re.compile(r"key|token|secret|sig|pass|pwd|auth|credential|session|code", re.IGNORECASE)


def url_secrets(url: str) -> list[str]:
    """The credentials a URL carries: user info, and the values of secret-looking query parameters."""
    try:
        parts = urlsplit(url)
        found = [parts.username or "", parts.password or ""]
    except ValueError:
        return []
    found += [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if _SECRET_PARAM.search(k)]
    for secret in list(found):  # as they may appear in text: raw and percent-encoded
        found.append(quote(secret, safe=""))
    return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """`text` (an exception's message, say) with `url` and the credentials it carries masked."""
    text = text.replace(url, redact_url(url))
    for secret in url_secrets(url):
        text = text.replace(secret, "***")
    return text


def redact_url(url: str) -> str:
    """`url` for logs: no user info, and the values of secret-looking query parameters masked."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparsable url>"
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    query = urlencode(
        [(k, "***" if _SECRET_PARAM.search(k) else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)],
        safe="*",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class UpstreamUnavailable(ConnectionError):
    """The upstream could not be reached (or refused us) within the connect budget."""

    def __init__(self, url: str, attempts: int, cause: BaseException, status: int | None = None) -> None:
        self.url = redact_url(url)
        self.attempts = attempts
        self.status = status
        self.reason = failure_reason(cause, status)  # one of readiness.REASONS, for /readyz
        super().__init__(f"upstream {self.url} unavailable after {attempts} attempt(s): {_describe(cause, status, url)}")


def _status(exc: BaseException) -> int | None:
    if isinstance(exc, websockets.InvalidStatus):
        return exc.response.status_code
    return None


def _describe(exc: BaseException, status: int | None, url: str) -> str:
    """What went wrong, for the log: never the URL's credentials (some exceptions quote the URL)."""
    return scrub(_cause(exc, status), url)


def _cause(exc: BaseException, status: int | None) -> str:
    if isinstance(exc, TokenUnavailable):
        return str(exc)
    if status in (401, 403):
        return f"HTTP {status}: the upstream refused the credentials (check the API key, or the Entra ID role assignment)"
    if status == 404:
        return "HTTP 404: no such endpoint (check the endpoint, the model or deployment name, and the api-version)"
    if status is not None:
        return f"HTTP {status}"
    if isinstance(exc, TimeoutError):
        return "TimeoutError: the opening handshake did not complete in time"
    return f"{type(exc).__name__}: {exc}"


def failure_reason(exc: BaseException, status: int | None = None) -> str:
    """Why a connect failed, as one of a fixed set of words (for /readyz and metric labels)."""
    if isinstance(exc, TokenUnavailable) or status in (401, 403):
        return "auth"
    if status == 404:
        return "not_found"
    if status is not None:
        return "rejected"
    if isinstance(exc, ssl.SSLError):
        return "tls"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError):  # refused, reset, unreachable, DNS
        return "unreachable"
    return "protocol"  # not a WebSocket server, a bad URI, a broken handshake


async def probe_upstream(target: UpstreamTarget, policy: ConnectPolicy | None = None) -> tuple[str | None, str]:
    """Could a call connect now? Headers (an Entra ID token), TCP, TLS and the opening handshake, then
    closed at once, nothing sent: (None, "") or (reason, a log-safe description). One attempt."""
    policy = policy or ConnectPolicy(open_timeout_s=5.0, close_timeout_s=1.0)
    try:
        headers = await target.handshake_headers()
    except TokenUnavailable as exc:
        return "auth", str(exc)
    try:
        ws = await connect(
            target.url,
            additional_headers=headers,
            open_timeout=policy.open_timeout_s,
            ping_interval=None,
            close_timeout=policy.close_timeout_s,
            compression=None,
            proxy=None,
            logger=_WEBSOCKETS_LOG,
        )
    except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
        status = _status(exc)
        return failure_reason(exc, status), _describe(exc, status, target.url)
    try:
        async with asyncio.timeout(policy.close_timeout_s + 1.0):
            await ws.close()
    except (TimeoutError, OSError):
        ws.transport.abort()
    return None, ""


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, websockets.InvalidStatus):
        return exc.response.status_code in RETRYABLE_STATUS
    if isinstance(exc, websockets.InvalidURI):
        return False
    # refused / reset / DNS (OSError), open timeout, connection dropped mid-handshake (InvalidMessage)
    return isinstance(exc, (OSError, TimeoutError, websockets.InvalidMessage))


class _NoDebugLogs(logging.LoggerAdapter):  # type: ignore[type-arg]
    """websockets logs the handshake's headers (and so the api-key) at DEBUG: never let it."""

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)


_WEBSOCKETS_LOG = _NoDebugLogs(logging.getLogger("websockets.client"), {})


@dataclass(frozen=True, slots=True)
class ConnectPolicy:
    """Timeouts, retries and limits of the upstream connection."""

    open_timeout_s: float = OPEN_TIMEOUT_S
    budget_s: float = CONNECT_BUDGET_S
    first_backoff_s: float = FIRST_BACKOFF_S
    max_backoff_s: float = MAX_BACKOFF_S
    ping_interval_s: float | None = PING_INTERVAL_S
    ping_timeout_s: float | None = PING_TIMEOUT_S
    close_timeout_s: float = CLOSE_TIMEOUT_S
    max_message_bytes: int = MAX_MESSAGE_BYTES

    def backoff_s(self, failures: int) -> float:
        """Delay after the `failures`-th failed attempt: doubling, capped, half of it random."""
        ceiling = min(self.max_backoff_s, self.first_backoff_s * 2 ** (failures - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


DEFAULT_POLICY = ConnectPolicy()


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    """Where the upstream is, which dialect it speaks, and how to authenticate to it."""

    url: str
    dialect: Dialect
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # static extra headers
    auth: HeaderSource | None = None  # asked for headers at every connect

    async def handshake_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.auth is not None:
            headers.update(await self.auth.headers())
        return headers


class UpstreamConnection:
    """One Realtime session for one call."""

    def __init__(self, ws: ClientConnection, dialect: Dialect, tap: UpstreamTap | None = None) -> None:
        self._ws = ws
        self.dialect = dialect
        self.tap = tap  # the call recorder's, when recording is on
        self._closing = False
        self.received_at = 0.0  # perf_counter() when the last event arrived (relay latency)

    @classmethod
    async def open(
        cls,
        target: UpstreamTarget,
        policy: ConnectPolicy = DEFAULT_POLICY,
        *,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        tap: UpstreamTap | None = None,
    ) -> UpstreamConnection:
        """Connect, retrying what may pass while `policy.budget_s` lasts; else `UpstreamUnavailable`.

        Retries are logged here (`upstream.connect_retry`); the final failure is raised, with a
        message fit for the log (URL redacted, attempts, cause), for the caller to log once.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        url = redact_url(target.url)
        attempt = 0
        while True:
            attempt += 1
            try:
                headers = await target.handshake_headers()
            except TokenUnavailable as exc:  # the token cache already shares and bounds the fetch
                raise UpstreamUnavailable(target.url, attempt, exc) from exc
            try:
                ws = await connect(
                    target.url,
                    additional_headers=headers,
                    open_timeout=policy.open_timeout_s,
                    ping_interval=policy.ping_interval_s,
                    ping_timeout=policy.ping_timeout_s,
                    close_timeout=policy.close_timeout_s,
                    max_size=policy.max_message_bytes,
                    compression=None,  # audio is incompressible and deflate costs CPU on the hot path
                    proxy=None,
                    logger=_WEBSOCKETS_LOG,
                )
            except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
                status = _status(exc)
                if tap is not None:
                    tap.connect_failed(status, type(exc).__name__)
                delay = policy.backoff_s(attempt)
                if not _retryable(exc) or loop.time() + delay - started >= policy.budget_s:
                    raise UpstreamUnavailable(target.url, attempt, exc, status) from exc  # the caller logs it
                log.warning(
                    "upstream.connect_retry",
                    url=url,
                    attempt=attempt,
                    error=_describe(exc, status, target.url),
                    delay_s=round(delay, 3),
                )
                await sleep(delay)
                continue
            if SEND_BUFFER_BYTES is not None:
                sock = ws.transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
            log.info("upstream.connected", url=url, dialect=target.dialect.name, attempts=attempt)
            if tap is not None:
                tap.opened()
            return cls(ws, target.dialect, tap)

    async def send(self, event: dict[str, Any] | str) -> None:
        """Send a client event: a dict, or its JSON text already assembled (audio appends)."""
        text = event if isinstance(event, str) else json.dumps(event)
        await self._ws.send(text)
        if self.tap is not None:
            self.tap.sent(text)

    async def events(self) -> AsyncIterator[ServerEvent]:
        """Server events until the upstream closes; unreadable ones come out as `BadEvent`."""
        try:
            async for raw in self._ws:
                self.received_at = time.perf_counter()
                if self.tap is not None and isinstance(raw, str):
                    self.tap.received(raw)
                yield parse_server_frame(self.dialect, raw)
        except websockets.ConnectionClosedError as exc:
            log.warning("upstream.dropped", code=exc.rcvd.code if exc.rcvd else None)
        if self.tap is not None and not self._closing:
            self._closing = True  # recorded once: the upstream ended the session (or it dropped)
            self.tap.closed(self._ws.close_code, by="upstream", reason=self._ws.close_reason or "")

    async def close(self) -> None:
        """The closing handshake. What the model still sends meanwhile is read and dropped: its
        close frame comes after it, and websockets stops reading the socket while its queue of
        unread messages is full (as it is when the call stopped consuming events, e.g. while
        Twilio was not taking audio), so without this a healthy model's close would wait out
        the caller's deadline and end in an abort."""
        if self.tap is not None and not self._closing:
            self._closing = True
            self.tap.closed(1000, by="bridge")
        discarding = asyncio.create_task(self._discard_incoming(), name="upstream_discard")
        try:
            await self._ws.close()
        finally:
            discarding.cancel()
            await asyncio.gather(discarding, return_exceptions=True)

    async def _discard_incoming(self) -> None:
        with contextlib.suppress(websockets.WebSocketException):
            async for _ in self._ws:
                pass

    async def close_within(self, seconds: float) -> bool:
        """Close, waiting at most `seconds` for the closing handshake, then cut the connection.

        True when the handshake finished in time. Never raises for a peer that misbehaves.
        """
        try:
            async with asyncio.timeout(seconds):
                await self.close()
            return True
        except (TimeoutError, OSError, websockets.WebSocketException):
            self.abort()
            return False

    def abort(self) -> None:
        """Drop the TCP connection at once, with a reset (when the closing handshake cannot finish)."""
        reset(self._ws.transport)

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    @property
    def latency_s(self) -> float:
        """Round trip of the last keepalive ping (0 until one has been answered)."""
        return self._ws.latency
