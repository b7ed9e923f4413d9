"""How long the bridge waits on each peer before it gives up on it (issue 13, class 3: stalled peers).

The defaults are module constants; a `PeerDeadlines` with other values reaches the calls through
`Settings.peer_deadlines` (no environment variable: these are not operator knobs, tests set them).

Twilio reads its socket all the time, so a frame it has not taken within TWILIO_SEND_S means it
stopped reading: the connection is cut (a TCP reset), the call ends `twilio_stalled`, its slot is
freed. A close gets less (TWILIO_CLOSE_S): the call is over either way, it only decides between a
clean close and a cut. Once the close frame is handed over (or the echo of Twilio's), the peer has
TWILIO_CLOSE_LINGER_S to take what is still buffered and finish the closing handshake, then the
connection is cut (uvicorn alone would close politely after 10 s, which never completes while a
peer that reads nothing holds the socket open).

A send to the model not done within UPSTREAM_SEND_S means the model stopped reading: the
connection is cut and the call takes the fallback path (`upstream.stalled`, `upstream_failed`).
A clean close to the model is one round trip; past UPSTREAM_CLOSE_S the connection is cut (the
session ends either way). Short, because a call's admission slot is freed once both sides are
closed, and a caller's `stop` must free it within a second even when the model is not reading.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

TWILIO_SEND_S = 3.0
TWILIO_CLOSE_S = 0.5
TWILIO_CLOSE_LINGER_S = 3.0
UPSTREAM_SEND_S = 5.0
UPSTREAM_CLOSE_S = 0.75


@dataclass(frozen=True, slots=True)
class PeerDeadlines:
    """The deadlines of one call towards Twilio and the model, in seconds."""

    twilio_send_s: float = TWILIO_SEND_S
    twilio_close_s: float = TWILIO_CLOSE_S
    twilio_close_linger_s: float = TWILIO_CLOSE_LINGER_S
    upstream_send_s: float = UPSTREAM_SEND_S
    upstream_close_s: float = UPSTREAM_CLOSE_S

    def __post_init__(self) -> None:
        for name in self.__slots__:  # type: ignore[attr-defined]
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a positive number of seconds")


def _never() -> bool:
    return False


async def poll_until(
    clock: Callable[[], float], deadline: float, done: Callable[[], bool] = _never, poll_s: float = 0.05
) -> bool:
    """Poll `done()` until it holds (True) or `clock()` reaches `deadline` (False), sleeping at most
    `poll_s` at a time and never past the deadline. On the caller's clock, not the loop's: a call's
    may be a replay's scaled clock, which runs faster."""
    while (left := deadline - clock()) > 0:
        if done():
            return True
        await asyncio.sleep(min(left, poll_s))
    return False
