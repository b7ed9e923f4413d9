"""The shared fake Realtime server (bridge/devtools/fake_realtime.py): its handshake policy, records,
and shutdown; and that it stays the only one (every fake upstream is a script on it)."""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bridge.devtools.fake_realtime import FakeRealtime, FakeSession

ROOT = Path(__file__).resolve().parent.parent
# The one module that opens a WebSocket server of its own without being a fake Realtime model:
# relay_floor's "websockets-server" receiver is the Twilio side being measured.
MEASURED_SERVERS = {"benchmarks/relay_floor.py": 1}
SERVER_OPENERS = re.compile(r"(?<!def )(?<![.\w])serve\(|asyncio\.start_server\(|websockets\.serve\(")


def on_a_loop(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """The test runs in a fresh event loop (the suite has no async plugin)."""

    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


async def _hold(session: FakeSession) -> None:
    await session.ws.wait_closed()


@on_a_loop
async def test_the_answer_policy_refuses_and_records_each_attempt() -> None:
    async with FakeRealtime(_hold, answer=lambda n: 503 if n == 0 else None, refusal_text="no {attempt}\n") as fake:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(fake.url + "?try=1"):
                pass
        assert refused.value.response.status_code == 503 and refused.value.response.body == b"no 1\n"
        async with connect(fake.url + "?try=2"):
            while not fake.sessions:
                await asyncio.sleep(0.01)
        assert fake.attempts == 2 and fake.accepted == 1
        assert [h.path for h in fake.handshakes] == ["/v1/realtime?try=1", "/v1/realtime?try=2"]
        assert fake.sessions[0].handshake is fake.handshakes[1] and fake.sessions[0].index == 0


@on_a_loop
async def test_the_handshake_delay_holds_the_upgrade() -> None:
    async with FakeRealtime(_hold, handshake_delay_s=0.3) as fake:
        started = time.monotonic()
        async with connect(fake.url):
            assert time.monotonic() - started >= 0.3


@on_a_loop
async def test_without_records_only_counts_are_kept() -> None:
    async with FakeRealtime(_hold, record=False) as fake:
        for _ in range(3):
            async with connect(fake.url):
                pass
        async with asyncio.timeout(5):
            while fake.open_now:
                await asyncio.sleep(0.01)
        assert (fake.attempts, fake.accepted) == (3, 3)
        assert fake.requests == [] and fake.handshakes == [] and fake.sessions == []


@on_a_loop
async def test_abort_on_close_cuts_a_session_the_client_keeps_open() -> None:
    fake = await FakeRealtime(_hold, abort_open_on_close=True).start()
    client = await connect(fake.url)
    # The client reads nothing: a close handshake could not finish. The shell cuts the connection.
    client.transport.pause_reading()
    async with asyncio.timeout(3):
        await fake.aclose()
    client.transport.resume_reading()
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(3):
            await client.recv()
    assert client.close_code == 1006  # no close frame: the TCP connection just went


def test_no_other_module_opens_its_own_server() -> None:
    """Every fake upstream (tests, benchmarks, fixtures, the local agent, replay) is a script on the
    shared shell; a new one should be too."""
    found: dict[str, int] = {}
    for folder in ("bridge", "tests", "benchmarks", "fixtures"):
        for path in (ROOT / folder).rglob("*.py"):
            relative = path.relative_to(ROOT).as_posix()
            if relative == "bridge/devtools/fake_realtime.py" or relative.startswith("tests/test_fake_realtime"):
                continue
            count = len(SERVER_OPENERS.findall(path.read_text()))
            if count:
                found[relative] = count
    allowed = {"tests/handshake_upstream.py": 1, **MEASURED_SERVERS}  # SilentUpstream: TCP that never answers
    assert {path: n for path, n in found.items() if path not in allowed or n > allowed[path]} == {}
