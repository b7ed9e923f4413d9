"""Admission control: how many calls this process carries, counted from webhook to hangup."""

from __future__ import annotations


class Admission:
    """A slot is taken when `/voice` accepts a call and given back when its stream ends.

    A call Twilio never streams (the caller hung up while ringing) would hold its slot forever,
    so a reservation without a stream lapses after `reservation_s`.
    """

    def __init__(self, max_calls: int, reservation_s: float = 30.0) -> None:
        if max_calls < 1:
            raise ValueError("max_calls must be at least 1")
        self.max_calls = max_calls
        self.reservation_s = reservation_s
        self._reserved: dict[str, float] = {}  # CallSid → when the reservation lapses
        self._streaming: set[str] = set()

    def active(self, now: float) -> int:
        self._lapse(now)
        return len(self._reserved) + len(self._streaming)

    def has_room(self, now: float) -> bool:
        return self.active(now) < self.max_calls

    def try_reserve(self, call_sid: str, now: float) -> bool:
        if call_sid in self._reserved or call_sid in self._streaming:
            return True  # Twilio retried the webhook: same call, same slot
        if not self.has_room(now):
            return False
        self._reserved[call_sid] = now + self.reservation_s
        return True

    def stream_started(self, call_sid: str) -> None:
        self._reserved.pop(call_sid, None)
        self._streaming.add(call_sid)

    def stream_ended(self, call_sid: str) -> None:
        self._reserved.pop(call_sid, None)
        self._streaming.discard(call_sid)

    def _lapse(self, now: float) -> None:
        for call_sid in [sid for sid, until in self._reserved.items() if until < now]:
            del self._reserved[call_sid]
