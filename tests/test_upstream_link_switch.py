"""A planned switch that closes the old session under a send in flight (bridge/call/upstream_link.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
import websockets
from websockets.frames import Close

from bridge.call.upstream_link import UpstreamLink
from bridge.deadlines import PeerDeadlines
from bridge.telemetry import Metrics


class _Port:
    """A model session: records what it was sent; `closing` makes the next send fail as the switcher's close would."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.closing = False

    async def send(self, event: Any) -> None:
        if self.closing:
            self.entered.set()
            await self.release.wait()
            raise websockets.ConnectionClosedOK(Close(1000, ""), Close(1000, ""), True)
        self.sent.append(event)


def test_audio_in_flight_to_a_session_closed_by_a_planned_switch_reaches_the_new_one_and_is_not_held() -> None:
    async def scenario() -> tuple[_Port, _Port, UpstreamLink]:
        link = UpstreamLink(Metrics(), PeerDeadlines(), structlog.get_logger())
        old, new = _Port(), _Port()
        link.connection = old  # type: ignore[assignment]
        sender = asyncio.create_task(link.run_sender())
        link.send({"type": "a", "n": 1}, frames=5)
        await asyncio.sleep(0.01)
        old.closing = True
        link.send({"type": "a", "n": 2}, frames=5)  # in flight when the old session is closed
        await old.entered.wait()
        link.switch(new, [{"type": "seed"}])  # type: ignore[arg-type]
        old.release.set()
        link.send({"type": "a", "n": 3}, frames=5)
        for _ in range(100):
            if len(new.sent) >= 4:
                break
            await asyncio.sleep(0.01)
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        return old, new, link

    old, new, link = asyncio.run(scenario())
    assert old.sent == [{"type": "a", "n": 1}]
    # the seed, the lead-in (what the old session was last sent), the frame it never got, then the rest
    assert new.sent == [{"type": "seed"}, {"type": "a", "n": 1}, {"type": "a", "n": 2}, {"type": "a", "n": 3}]
    assert not link._held  # nothing stale left for a later replacement
