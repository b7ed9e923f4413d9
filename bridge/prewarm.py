"""Upstream sessions opened while Twilio is still setting up the stream, keyed by CallSid.

`POST /voice` starts connecting and configuring (and asks for the greeting); the media stream
claims the session when its `start` arrives, so the caller's first second is not spent on a TLS
and WebSocket handshake.

Every session nobody claims is closed by a deadline (issue 13, class 5): unclaimed ones after
`unclaimed_s` (checked every `SWEEP_S`), a refused stream's at once (`discard_soon`), all at
shutdown; all of them concurrently, each with a `close_s` closing handshake after which its
transport is cut. So the last unclaimed session is gone `unclaimed_s + SWEEP_S + close_s` after
its webhook at most, however many there are.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .logs import get_logger
from .upstream import UpstreamConnection

log = get_logger("bridge.prewarm")

SWEEP_S = 0.25  # how often unclaimed sessions are looked for
CLOSE_S = 0.5  # a discarded session's closing handshake; then its transport is aborted


@dataclass(slots=True)
class _Pending:
    task: asyncio.Task[UpstreamConnection]
    expires_at: float


class Prewarm:
    def __init__(
        self,
        clock: Callable[[], float],
        unclaimed_s: float = 15.0,
        close_s: float = CLOSE_S,
        on_unclaimed: Callable[[str], None] = lambda call_sid: None,
    ) -> None:
        self.clock = clock
        self.on_unclaimed = on_unclaimed  # told each CallSid whose stream never came (its recording ends)
        self.unclaimed_s = unclaimed_s
        self.close_s = close_s
        self._pending: dict[str, _Pending] = {}
        self._closing: set[asyncio.Task[None]] = set()  # discards under way (kept referenced)

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def closing(self) -> int:
        return len(self._closing)

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
            await _close(pending.task, self.close_s)

    def discard_soon(self, call_sid: str) -> None:
        """Close the call's session in the background (its stream was refused, or the call is over)."""
        pending = self._pending.pop(call_sid, None)
        if pending is None:
            return
        log.info("prewarm.discarded", call_sid=call_sid)
        closing = asyncio.create_task(_close(pending.task, self.close_s), name=f"prewarm_close_{call_sid}")
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    async def close_unclaimed(self) -> int:
        now = self.clock()
        expired = [sid for sid, p in self._pending.items() if p.expires_at <= now]
        for call_sid in expired:
            log.info("prewarm.unclaimed", call_sid=call_sid)
            self.on_unclaimed(call_sid)
        await asyncio.gather(*(_close(self._pending.pop(sid).task, self.close_s) for sid in expired))
        return len(expired)

    async def sweep_forever(self, every_s: float = SWEEP_S) -> None:
        while True:
            await asyncio.sleep(every_s)
            await self.close_unclaimed()

    async def aclose(self) -> None:
        pending = [self._pending.pop(sid).task for sid in list(self._pending)]
        await asyncio.gather(*(_close(task, self.close_s) for task in pending), *self._closing)


async def _run(open_session: Callable[[], Awaitable[UpstreamConnection]]) -> UpstreamConnection:
    return await open_session()


async def _close(task: asyncio.Task[UpstreamConnection], close_s: float) -> None:
    """Cancel the session's setup or close the session: `close_s` for the handshake, then abort."""
    if not task.done():
        task.cancel()  # open_session closes what it opened, within its own short deadline
        await asyncio.wait({task})  # unlike awaiting the task, this does not re-raise its error
    if task.cancelled() or task.exception() is not None:
        return
    if not await task.result().close_within(close_s):
        log.warning("prewarm.close_timeout")
