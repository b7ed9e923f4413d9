"""No dead air (issue 16): the turn watchdog, pure — events and time in, actions out.

The bridge waits on the model from the end of the caller's turn (the model's `speech_stopped`, or
a keypad digit sent) until its first audio; it waits on a tool from the call until its output is
sent. While it waits and the caller hears nothing:

- after `filler_after_s` of silence the caller hears a filler clip, once per caller turn for a
  slow model (`slow_model`) and once per batch of tool calls for a slow tool (`slow_tool`);
- after `turn_timeout_s` with no audio and no tool running, the response is asked for again,
  once (`Retry`); if that also stays silent the watchdog gives up (`GiveUp`: apology, fallback).

When nothing is awaited — the model's answer has finished and been heard (every mark echoed),
no tool runs, the caller is not speaking — and the caller says nothing for `reprompt_after_s`,
the model is asked to check in (`Reprompt`); after `max_reprompts` of them unanswered, `Goodbye`
(the call ends as `caller_silent`). Caller speech or a keypad digit resets the count.

Nothing fires while the caller speaks (a barge-in, or any speech): their turn is not over.
The session feeds the events and calls `due(now)` by `next_deadline()`; every wait ends.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

OUTCOMES = ("answered", "retried", "failed")  # voice_bridge_turn_watchdog_total{outcome}
FILLER_REASONS = ("slow_model", "slow_tool")  # voice_bridge_fillers_total{reason}


@dataclass(frozen=True, slots=True)
class Budgets:
    """A profile's budgets in seconds; None turns that part off."""

    filler_after_s: float | None = 1.5
    turn_timeout_s: float | None = 8.0
    reprompt_after_s: float | None = 10.0
    max_reprompts: int = 2


class Kind(enum.Enum):
    FILLER = "filler"  # play the filler clip (reason: slow_model / slow_tool)
    RETRY = "retry"  # cancel what is active and ask for the response again
    GIVE_UP = "give_up"  # the model stays silent: apology and fallback
    REPROMPT = "reprompt"  # ask the model to check in with a silent caller
    GOODBYE = "goodbye"  # the caller stayed silent: say goodbye, end as caller_silent


@dataclass(frozen=True, slots=True)
class Action:
    kind: Kind
    reason: str | None = None  # a filler's reason (FILLER_REASONS)
    count: int = 0  # a reprompt's number, from 1


class TurnWatchdog:
    def __init__(self, budgets: Budgets) -> None:
        self.budgets = budgets
        self.waiting_since: float | None = None  # waiting on the model's first audio since
        self.retried = False
        self.turn_filler = False  # a slow_model filler played since the caller's turn ended
        self.tool_responses: set[str] = set()  # responses whose tool calls are still being run
        self.tool_since: float | None = None
        self.tool_filler = False
        self.caller_speaking = False
        self.response_active = False
        self.playing = False  # audio (model or filler) sent, not yet all echoed
        self.idle_since: float | None = 0.0  # when playback last became idle (None while playing)
        self.silence_since: float | None = None  # nothing awaited and nothing heard since
        self.reprompts = 0
        self.finished = False  # gave up or said goodbye: no more actions
        self.filler_at: float | None = None  # when the last filler started (for the turn log)

    # --- events -------------------------------------------------------------------------------

    def caller_speech_started(self, now: float) -> None:
        """The caller speaks (over the model or not): nothing is awaited until their turn ends."""
        self.caller_speaking = True
        self.waiting_since = None
        self.silence_since = None
        self.reprompts = 0

    def caller_turn_ended(self, now: float) -> None:
        """The caller's turn is over (speech stopped, or a keypad digit sent): the model owes an answer."""
        self.caller_speaking = False
        self.reprompts = 0
        self.silence_since = None
        self.waiting_since = now
        self.retried = False
        self.turn_filler = False
        self.filler_at = None

    def keypad(self, now: float) -> None:
        self.caller_turn_ended(now)

    def greeting_requested(self, now: float) -> None:
        """The call is up and the greeting asked for: it is owed like an answer (without a filler)."""
        self.caller_turn_ended(now)
        self.turn_filler = True

    def response_started(self, now: float) -> None:
        self.response_active = True
        self.silence_since = None

    def model_audio(self, now: float) -> str | None:
        """The model's audio reached the caller's line; the wait's outcome if this ended one."""
        self.playing = True
        self.idle_since = None
        self.silence_since = None
        if self.waiting_since is None:
            return None
        self.waiting_since = None
        return "retried" if self.retried else "answered"

    def filler_sent(self, now: float) -> None:
        self.playing = True
        self.idle_since = None
        self.filler_at = now

    def tool_started(self, response_id: str, now: float) -> None:
        if not self.tool_responses:
            self.tool_since = now
            self.tool_filler = False
        self.tool_responses.add(response_id)
        self.silence_since = None

    def tools_answered(self, response_id: str, now: float) -> None:
        """The response's tool outputs were sent and a response asked for: the model owes audio again."""
        self.tool_responses.discard(response_id)
        if not self.tool_responses:
            self.tool_since = None
            if not self.caller_speaking:
                self.waiting_since = now
                self.retried = False

    def response_done(self, now: float) -> None:
        self.response_active = False
        self._maybe_silent(now)

    def playback_idle(self, now: float) -> None:
        """Every mark sent has been echoed (or playback was cleared): the caller hears nothing now."""
        self.playing = False
        self.idle_since = now
        self._maybe_silent(now)

    def _maybe_silent(self, now: float) -> None:
        if (
            self.waiting_since is None
            and not self.tool_responses
            and not self.caller_speaking
            and not self.response_active
            and not self.playing
            and self.silence_since is None
        ):
            self.silence_since = now

    # --- time ---------------------------------------------------------------------------------

    def _quiet_since(self, since: float) -> float | None:
        """When the caller's silence began, counting from `since`; None while audio plays."""
        if self.playing or self.idle_since is None:
            return None
        return max(since, self.idle_since)

    def _deadlines(self) -> list[tuple[float, Kind]]:
        if self.finished or self.caller_speaking:
            return []
        b = self.budgets
        found: list[tuple[float, Kind]] = []
        if self.waiting_since is not None:
            quiet = self._quiet_since(self.waiting_since)
            if b.filler_after_s is not None and not self.turn_filler and not self.tool_responses and quiet is not None:
                found.append((quiet + b.filler_after_s, Kind.FILLER))
            if b.turn_timeout_s is not None and not self.tool_responses:
                found.append((self.waiting_since + b.turn_timeout_s, Kind.GIVE_UP if self.retried else Kind.RETRY))
        if self.tool_responses and self.tool_since is not None and b.filler_after_s is not None and not self.tool_filler:
            quiet = self._quiet_since(self.tool_since)
            if quiet is not None:
                found.append((quiet + b.filler_after_s, Kind.FILLER))
        if self.silence_since is not None and b.reprompt_after_s is not None:
            kind = Kind.REPROMPT if self.reprompts < b.max_reprompts else Kind.GOODBYE
            found.append((self.silence_since + b.reprompt_after_s, kind))
        return found

    def next_deadline(self) -> float | None:
        """When `due` may next have something to do (None: not until an event)."""
        deadlines = self._deadlines()
        return min(at for at, _ in deadlines) if deadlines else None

    def due(self, now: float) -> list[Action]:
        """The actions due by `now`, each once (the watchdog's state moves on as they are returned)."""
        actions: list[Action] = []
        for at, kind in sorted(self._deadlines(), key=lambda d: d[0]):
            if at > now or self.finished:
                continue
            if kind is Kind.FILLER:
                if self.tool_responses:
                    self.tool_filler = True
                    actions.append(Action(Kind.FILLER, reason="slow_tool"))
                else:
                    self.turn_filler = True
                    actions.append(Action(Kind.FILLER, reason="slow_model"))
            elif kind is Kind.RETRY:
                self.retried = True
                self.waiting_since = now
                actions.append(Action(Kind.RETRY))
            elif kind is Kind.GIVE_UP:
                self.waiting_since = None
                self.finished = True
                actions.append(Action(Kind.GIVE_UP))
            elif kind is Kind.REPROMPT:
                self.reprompts += 1
                self.silence_since = None
                # The check-in is a response like any other: it is owed within the turn budget.
                self.waiting_since = now
                self.retried = False
                self.turn_filler = True  # no "one moment" before "are you still there?"
                actions.append(Action(Kind.REPROMPT, count=self.reprompts))
            elif kind is Kind.GOODBYE:
                self.silence_since = None
                self.finished = True
                actions.append(Action(Kind.GOODBYE))
        return actions
