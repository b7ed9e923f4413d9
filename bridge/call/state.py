"""Where a call is in its life, and why it ended: the one place transitions are checked."""

from __future__ import annotations

import enum


class CallState(enum.Enum):
    AWAITING_START = "awaiting_start"
    CONNECTING_UPSTREAM = "connecting_upstream"
    IN_CALL = "in_call"
    SAYING_GOODBYE = "saying_goodbye"
    ENDING = "ending"
    ENDED = "ended"


_TRANSITIONS: dict[CallState, frozenset[CallState]] = {
    CallState.AWAITING_START: frozenset({CallState.CONNECTING_UPSTREAM, CallState.ENDING}),
    CallState.CONNECTING_UPSTREAM: frozenset({CallState.IN_CALL, CallState.ENDING}),
    CallState.IN_CALL: frozenset({CallState.SAYING_GOODBYE, CallState.ENDING}),
    CallState.SAYING_GOODBYE: frozenset({CallState.ENDING}),
    CallState.ENDING: frozenset({CallState.ENDED}),
    CallState.ENDED: frozenset(),
}


class EndReason(enum.Enum):
    CALLER_HANGUP = "caller_hangup"
    UPSTREAM_CLOSED = "upstream_closed"  # the model's side ended the session cleanly
    UPSTREAM_FAILED = "upstream_failed"  # dropped mid-call
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"  # never connected
    PROTOCOL_ERROR = "protocol_error"
    UNAUTHORIZED = "unauthorized"
    NO_START = "no_start"
    DRAINED = "drained"  # the process is shutting down
    MAX_DURATION = "max_duration"  # the profile's max_call_seconds
    AGENT_HANGUP = "agent_hangup"  # the model called end_call
    TRANSFERRED = "transferred"  # the model called transfer_call
    INTERNAL_ERROR = "internal_error"
    TWILIO_STALLED = "twilio_stalled"  # Twilio stopped reading: the connection was aborted
    CALLER_SILENT = "caller_silent"  # issue 16: reprompts went unanswered; goodbye, then hung up

    @property
    def upstream_failed(self) -> bool:
        """The model could not be reached or was lost: the caller is owed an apology (and the fallback)."""
        return self in (EndReason.UPSTREAM_UNAVAILABLE, EndReason.UPSTREAM_FAILED)


class StartRefused(Exception):
    """The `start` event is well-formed but not acceptable (bad stream token, ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Lifecycle:
    """A call's state and end reason. The first reason given wins; ending twice is harmless."""

    def __init__(self) -> None:
        self.state = CallState.AWAITING_START
        self.end_reason: EndReason | None = None

    def move_to(self, state: CallState) -> None:
        if state not in _TRANSITIONS[self.state]:
            raise RuntimeError(f"call cannot go from {self.state.value} to {state.value}")
        self.state = state

    def end(self, reason: EndReason) -> None:
        if self.end_reason is None:
            self.end_reason = reason
        if self.state not in (CallState.ENDING, CallState.ENDED):
            self.move_to(CallState.ENDING)

    def finish(self) -> None:
        """The call is over, however it got here."""
        if self.state is not CallState.ENDING:
            self.move_to(CallState.ENDING)
        self.move_to(CallState.ENDED)

    @property
    def in_call(self) -> bool:
        return self.state is CallState.IN_CALL
