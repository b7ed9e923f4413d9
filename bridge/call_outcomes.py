"""How each call's stream ended, kept until Twilio asks what to play next (`/voice/after-stream`)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from .call.state import EndReason


@dataclass(frozen=True, slots=True)
class Outcome:
    reason: EndReason
    transfer_to: str | None = None

    @property
    def upstream_failed(self) -> bool:
        return self.reason.upstream_failed


class CallOutcomes:
    """A small, bounded memory of stream endings by CallSid."""

    def __init__(self, keep_s: float = 300.0, max_entries: int = 10_000) -> None:
        self.keep_s = keep_s
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[Outcome, float]] = OrderedDict()

    def record(self, call_sid: str, outcome: Outcome, now: float) -> None:
        self._entries[call_sid] = (outcome, now + self.keep_s)
        self._entries.move_to_end(call_sid)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def take(self, call_sid: str, now: float) -> Outcome | None:
        entry = self._entries.pop(call_sid, None)
        if entry is None or entry[1] < now:
            return None
        return entry[0]

    def awaiting_redirect(self, since: float, now: float) -> int:
        """Streams ended since `since` with the caller still on the line, not yet asked about by Twilio."""
        return sum(
            1
            for outcome, expires in self._entries.values()
            if expires - self.keep_s >= since and expires >= now and outcome.reason is not EndReason.CALLER_HANGUP
        )
