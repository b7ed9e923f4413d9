"""Shared helpers: a real bridge served by uvicorn on loopback, and fixture audio."""

from __future__ import annotations

import asyncio
import contextlib
import wave
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import structlog
import websockets
from starlette.applications import Starlette

from bridge.devtools.clock import scaled_clock
from bridge.devtools.local_bridge import served_bridge
from bridge.devtools.phone.caller import load_caller_audio
from bridge.settings import Settings

AUDIO = Path(__file__).resolve().parents[1] / "fixtures" / "audio"
AUTH_TOKEN = "test-auth-token-0123456789abcdef"


def run(coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
    """Run a coroutine in a fresh event loop, failing (not hanging) after `timeout` seconds."""

    async def bounded() -> Any:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2"), wav.getframerate()


def caller_clip(name: str) -> bytes:
    return load_caller_audio(AUDIO / name)


@contextlib.asynccontextmanager
async def running_bridge(speed: float = 1.0, **overrides: Any) -> AsyncIterator[tuple[str, Starlette]]:
    """The real app under uvicorn on a free loopback port, signatures on, embedded agent by default
    (started here, before the app, as the CLI does; the app's `state.local_agent` names it for tests).

    `speed` must match the phone simulator's: the bridge then keeps the same (scaled) time.
    """
    twilio_client = overrides.pop("twilio_client", None)
    tool_registry = overrides.pop("tool_registry", None)
    credential = overrides.pop("credential", None)
    settings = Settings(**{"twilio_auth_token": AUTH_TOKEN, **overrides})
    settings.validate()
    async with served_bridge(
        settings, clock=scaled_clock(speed), tools=tool_registry, twilio_client=twilio_client, credential=credential
    ) as bridge:
        assert bridge.url is not None
        bridge.app.state.local_agent = bridge.agent
        yield bridge.url, bridge.app


async def settle(condition: Any, timeout: float = 1.0) -> bool:
    """Wait until `condition()` is true, at most `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


@pytest.fixture
def audio_dir() -> Path:
    return AUDIO


async def open_signed_stream(
    url: str, to: str = "+15550100000", receive_buffer: int | None = None, **connect_options: Any
) -> tuple[Any, str, dict[str, str]]:
    """Do what Twilio does up to the open socket: signed webhook, signed upgrade.

    Returns (websocket, call_sid, the Stream's parameters) so a test can send raw frames.
    `receive_buffer` sets the socket's SO_RCVBUF before it connects (a small one makes a client
    that stops reading stall the bridge's sends within kilobytes, not megabytes of loopback
    buffer); `connect_options` go to websockets' `connect` (e.g. `max_queue`).
    """
    import socket
    import secrets
    import urllib.parse

    import httpx
    from websockets.asyncio.client import connect

    from bridge.devtools.phone.simulator import parse_stream_twiml
    from twiml.signatures import TwilioSigner

    signer = TwilioSigner(AUTH_TOKEN)
    call_sid = "CA" + secrets.token_hex(16)
    form = {"CallSid": call_sid, "AccountSid": "AC" + "0" * 32, "From": "+15550199999", "To": to}
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": signer.sign(f"{url}/voice", form),
    }
    async with httpx.AsyncClient() as http:
        answer = await http.post(f"{url}/voice", content=urllib.parse.urlencode(form), headers=headers)
    answer.raise_for_status()
    stream_url, params = parse_stream_twiml(answer.text)
    if receive_buffer is not None:
        parts = urllib.parse.urlsplit(stream_url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
        connect_options["sock"] = sock
    ws = await connect(
        stream_url,
        proxy=None,
        additional_headers={"X-Twilio-Signature": signer.sign(stream_url, {})},
        max_size=None,
        **connect_options,
    )
    return ws, call_sid, params


def capture_logs():  # noqa: ANN201
    """Log events as dicts, with the per-call fields bound through contextvars."""
    return structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars])


async def metrics_text(url: str) -> str:
    async with httpx.AsyncClient() as http:
        answer = await http.get(f"{url}/metrics")
    answer.raise_for_status()
    return answer.text


async def until_closed(ws: Any, timeout: float = 5.0) -> tuple[int | None, str | None]:
    """Read (and drop) what the bridge sends until it closes the socket, as Twilio would; its close code and reason."""
    async with asyncio.timeout(timeout):
        try:
            async for _ in ws:
                pass
        except websockets.ConnectionClosed:
            pass
    return ws.close_code, ws.close_reason
