"""When to move a call to a new model session (pure): planned rollover and unplanned replacement.

Planned: before the session's end (`expires_at` where the dialect announces it, else the upstream's
known cap; `VOICE_BRIDGE_ROLLOVER_SECONDS` overrides the age) and when the last response re-read
more than the token budget. Once due, the call looks for a quiet moment (model not speaking, no
tool running, caller not speaking) until a hard deadline, then switches anyway. A failed attempt
keeps the old session and is retried after `RETRY_S`.

Unplanned (the session dropped or expired): at most `max_replacements` new sessions per call, the
first at once, the next after a growing backoff.
"""

from __future__ import annotations

from dataclasses import dataclass

# How long each upstream keeps a session (their documented caps); `local` has none.
SESSION_CAPS_S: dict[str, float] = {"azure-openai": 30 * 60.0, "openai": 60 * 60.0, "voicelive": 60 * 60.0}
LOOK_AHEAD_S = 120.0  # start looking for a quiet moment this long before the session's end
HARD_MARGIN_S = 20.0  # switch anyway this long before the end (opening a session takes seconds)
QUIET_WAIT_S = 30.0  # a rollover not forced by the session's end waits at most this for a quiet moment
RETRY_S = 30.0  # after a failed rollover, the next attempt
SUMMARY_DEADLINE_S = 5.0  # the out-of-band summary asked before a planned switch: else the transcript's
REPLACEMENT_BACKOFF_S = (0.0, 0.5, 1.0, 2.0)  # before the 1st, 2nd, 3rd, further replacement
MAX_SESSION_REPLACEMENTS = 3  # default of VOICE_BRIDGE_MAX_SESSION_REPLACEMENTS
ROLLOVER_REASONS = frozenset({"session_age", "expires_at", "input_tokens"})  # Due.reason (a metric label)


@dataclass(frozen=True, slots=True)
class RolloverPolicy:
    session_cap_s: float | None = None  # the upstream's known session cap
    rollover_after_s: float | None = None  # VOICE_BRIDGE_ROLLOVER_SECONDS: the session age that triggers one
    input_token_budget: int | None = None  # rollover_input_tokens: a response re-reading more triggers one
    max_replacements: int = MAX_SESSION_REPLACEMENTS  # unplanned, per call

    @property
    def planned(self) -> bool:
        return self.session_cap_s is not None or self.rollover_after_s is not None or self.input_token_budget is not None


@dataclass(frozen=True, slots=True)
class Due:
    reason: str  # "session_age", "expires_at", "input_tokens"
    deadline: float  # switch by then even without a quiet moment (the call's clock)


def replacement_delay(attempt: int) -> float:
    """The wait before unplanned replacement number `attempt` (0-based) of a call."""
    return REPLACEMENT_BACKOFF_S[min(attempt, len(REPLACEMENT_BACKOFF_S) - 1)]


def is_quiet(model_busy: bool, caller_speaking: bool) -> bool:
    """A moment to switch sessions unheard: nothing plays or is being generated, the caller is silent."""
    return not model_busy and not caller_speaking


class RolloverPlanner:
    """One per call; `session_started` for every new session."""

    def __init__(self, policy: RolloverPolicy, now: float) -> None:
        self.policy = policy
        self._started = now
        self._ends: float | None = None  # when the service ends this session (expires_at or its cap)
        self._ends_reason = "session_age"
        self._over_budget_at: float | None = None
        self._not_before = now
        self.session_started(now)

    def session_started(self, now: float) -> None:
        cap = self.policy.session_cap_s
        self._started = now
        self._ends = now + cap if cap is not None else None
        self._ends_reason = "session_age"
        self._over_budget_at = None
        self._not_before = now

    def expires_at(self, expires_at: float, wall_now: float, now: float) -> None:
        """The service announced its end (Unix time): on the call's clock from now on."""
        ends = now + max(expires_at - wall_now, 0.0)
        if self._ends is None or ends < self._ends:
            self._ends, self._ends_reason = ends, "expires_at"

    def response_finished(self, input_tokens: int | None, now: float) -> None:
        budget = self.policy.input_token_budget
        if budget is not None and input_tokens is not None and input_tokens > budget and self._over_budget_at is None:
            self._over_budget_at = now

    def failed(self, now: float) -> None:
        """A rollover could not be prepared: try again later, the old session goes on meanwhile."""
        self._not_before = now + RETRY_S

    def due(self, now: float) -> Due | None:
        """The rollover to make now, if one is due."""
        if now < self._not_before:
            return None
        hard = self._ends - HARD_MARGIN_S if self._ends is not None else None
        candidates: list[Due] = []
        if self._ends is not None and hard is not None and now >= self._ends - LOOK_AHEAD_S:
            candidates.append(Due(self._ends_reason, hard))
        after = self.policy.rollover_after_s
        if after is not None and now >= self._started + after:
            candidates.append(Due("session_age", self._deadline(self._started + after, hard)))
        if self._over_budget_at is not None:
            candidates.append(Due("input_tokens", self._deadline(self._over_budget_at, hard)))
        return min(candidates, key=lambda due: due.deadline) if candidates else None

    def _deadline(self, since: float, hard: float | None) -> float:
        """A bounded wait for quiet, counted from the trigger or from the retry after a failed attempt."""
        deadline = max(since, self._not_before) + QUIET_WAIT_S
        return min(deadline, hard) if hard is not None else deadline

    def next_check(self, now: float) -> float:
        """When `due` may next change without an event (for a watcher's sleep)."""
        times = [self._not_before]
        if self._ends is not None:
            times.append(self._ends - LOOK_AHEAD_S)
        if self.policy.rollover_after_s is not None:
            times.append(self._started + self.policy.rollover_after_s)
        future = [t for t in times if t > now]
        return min(future) if future else now
