"""Upstream sessions opened while Twilio is still setting up the stream, keyed by CallSid.

`POST /voice` starts connecting and configuring (and asks for the greeting); the media stream
claims the session when its `start` arrives, so the caller's first second is not spent on a TLS
and WebSocket handshake. Sessions nobody claims are closed after `unclaimed_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .logs import get_logger
from .upstream import UpstreamConnection

log = get_logger("bridge.prewarm")


@dataclass(slots=True)
class _Pending:
    task: asyncio.Task[UpstreamConnection]
    expires_at: float


class Prewarm:
    def __init__(self, clock: Callable[[], float], unclaimed_s: float = 15.0) -> None:
        self.clock = clock
        self.unclaimed_s = unclaimed_s
        self._pending: dict[str, _Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def start(self, call_sid: str, open_session: Callable[[], Awaitable[UpstreamConnection]]) -> None:
        if call_sid in self._pending:
            return  # Twilio retried the webhook: the session is already on its way
        task = asyncio.create_task(_run(open_session), name=f"prewarm_{call_sid}")
        self._pending[call_sid] = _Pending(task, self.clock() + self.unclaimed_s)

    def claim(self, call_sid: str) -> asyncio.Task[UpstreamConnection] | None:
        pending = self._pending.pop(call_sid, None)
        return pending.task if pending is not None else None

    async def discard(self, call_sid: str) -> None:
        pending = self._pending.pop(call_sid, None)
        if pending is not None:
            await _close(pending.task)

    async def close_unclaimed(self) -> int:
        now = self.clock()
        expired = [sid for sid, p in self._pending.items() if p.expires_at <= now]
        for call_sid in expired:
            log.info("prewarm.unclaimed", call_sid=call_sid)
            await _close(self._pending.pop(call_sid).task)
        return len(expired)

    async def sweep_forever(self, every_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(every_s)
            await self.close_unclaimed()

    async def aclose(self) -> None:
        for call_sid in list(self._pending):
            await _close(self._pending.pop(call_sid).task)


async def _run(open_session: Callable[[], Awaitable[UpstreamConnection]]) -> UpstreamConnection:
    return await open_session()


async def _close(task: asyncio.Task[UpstreamConnection]) -> None:
    if not task.done():
        task.cancel()
        await asyncio.wait({task})  # unlike awaiting the task, this does not re-raise its error
    if task.cancelled() or task.exception() is not None:
        return
    with contextlib.suppress(OSError, TimeoutError):
        await task.result().close()
