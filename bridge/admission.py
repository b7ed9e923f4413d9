"""Admission control: how many calls this process carries, counted from webhook to hangup.

A plain ledger (no sockets, no clock of its own: every method takes `now`), one per process. It
answers two questions, and both answers are final for that moment:

- `reserve(call_sid, now)` at `POST /voice`: may this call get a stream? Returns the reservation's
  id, which the stream token carries (see twiml/stream_tokens.py), or raises `AdmissionRefused`.
- `start(call_sid, reservation_id, now)` at the stream's `start`: may this stream run? Raises
  `AdmissionRefused`, or counts the call as streaming.

The rules (issue 13, class 2):

- At most one live stream per CallSid, and never more than `max_calls` calls in progress
  (reserved or streaming), whatever the timing.
- A reservation lapses after `reservation_s` if no stream came (the caller hung up while it rang).
  A stream arriving after that is checked again: it runs only if there is room now.
- A token whose reservation this process does not know (another replica took the webhook, or the
  record was forgotten) is treated like a lapsed one: it runs only if there is room now.
- A duplicate webhook while the first still awaits its stream (Twilio retries on timeout) gets the
  same reservation back: a second token for it, of which only one can ever start a stream.
- A webhook for a CallSid that is streaming, or that ended less than `remember_s` ago (longer
  than a token lives), is refused: a replayed webhook gets no stream. Ended CallSids are
  remembered in a bounded table (`max_remembered`, oldest forgotten first).
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


class AdmissionRefused(Exception):
    """Why a webhook or a stream start was refused; `reason` is a stable name for logs and metrics.

    Webhook reasons: `busy`, `call_in_progress`, `call_ended`.
    Start reasons: `stream_already_live`, `call_ended`, `stale_reservation`, `no_room`.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class _Reservation:
    reservation_id: str
    lapses_at: float  # counted against max_calls until then
    forget_at: float  # remembered (to check the token's reservation id) until then


def new_reservation_id() -> str:
    return secrets.token_hex(8)


class Admission:
    """Reservations, live streams and recently ended calls, by CallSid."""

    def __init__(
        self,
        max_calls: int,
        reservation_s: float = 30.0,
        remember_s: float = 75.0,
        max_remembered: int = 10_000,
        new_id: Callable[[], str] = new_reservation_id,
    ) -> None:
        if max_calls < 1:
            raise ValueError("max_calls must be at least 1")
        self.max_calls = max_calls
        self.reservation_s = reservation_s
        self.remember_s = remember_s  # at least a stream token's lifetime (plus clock slack)
        self.max_remembered = max_remembered
        self._new_id = new_id
        self._reserved: dict[str, _Reservation] = {}
        self._streaming: set[str] = set()
        self._ended: OrderedDict[str, float] = OrderedDict()  # CallSid → forget at; oldest first

    # --- counting ---------------------------------------------------------------------------

    def active(self, now: float) -> int:
        """Calls in progress: reservations not yet lapsed plus live streams."""
        self._forget(now)
        return sum(1 for r in self._reserved.values() if r.lapses_at > now) + len(self._streaming)

    def has_room(self, now: float) -> bool:
        return self.active(now) < self.max_calls

    def is_streaming(self, call_sid: str) -> bool:
        return call_sid in self._streaming

    def remembered(self) -> int:
        """How many ended CallSids are remembered (bounded by `max_remembered`)."""
        return len(self._ended)

    # --- the webhook ------------------------------------------------------------------------

    def reserve(self, call_sid: str, now: float) -> str:
        """A reservation id for this call's stream token, or AdmissionRefused."""
        self._forget(now)
        if call_sid in self._streaming:
            raise AdmissionRefused("call_in_progress")
        if call_sid in self._ended:
            raise AdmissionRefused("call_ended")
        reservation = self._reserved.get(call_sid)
        if reservation is not None and reservation.lapses_at > now:
            return reservation.reservation_id  # a retried webhook: same call, same slot, same reservation
        if not self.has_room(now):
            raise AdmissionRefused("busy")
        if reservation is not None:  # lapsed, and there is room again: the same reservation, renewed
            reservation.lapses_at = now + self.reservation_s
            reservation.forget_at = max(reservation.forget_at, now + self.remember_s)
            return reservation.reservation_id
        reservation_id = self._new_id()
        self._reserved[call_sid] = _Reservation(reservation_id, now + self.reservation_s, now + self.remember_s)
        return reservation_id

    # --- the stream -------------------------------------------------------------------------

    def start(self, call_sid: str, reservation_id: str, now: float) -> None:
        """Count the call as streaming, or raise AdmissionRefused (nothing changes then)."""
        self._forget(now)
        if call_sid in self._streaming:
            raise AdmissionRefused("stream_already_live")
        if call_sid in self._ended:
            raise AdmissionRefused("call_ended")
        reservation = self._reserved.get(call_sid)
        if reservation is not None and reservation.reservation_id != reservation_id:
            raise AdmissionRefused("stale_reservation")
        held = reservation is not None and reservation.lapses_at > now
        if not held and not self.has_room(now):
            raise AdmissionRefused("no_room")  # lapsed or unknown reservation, and the process is full
        self._reserved.pop(call_sid, None)
        self._streaming.add(call_sid)

    def end(self, call_sid: str, now: float) -> None:
        """The call's stream ended, or Twilio says the call is over: free its slot, remember it."""
        self._forget(now)
        self._reserved.pop(call_sid, None)
        self._streaming.discard(call_sid)
        if not call_sid:
            return
        self._ended[call_sid] = now + self.remember_s
        self._ended.move_to_end(call_sid)
        while len(self._ended) > self.max_remembered:
            self._ended.popitem(last=False)

    # --- forgetting -------------------------------------------------------------------------

    def _forget(self, now: float) -> None:
        for call_sid in [sid for sid, r in self._reserved.items() if r.forget_at <= now]:
            del self._reserved[call_sid]
        while self._ended:
            call_sid, forget_at = next(iter(self._ended.items()))
            if forget_at > now:
                break
            del self._ended[call_sid]
