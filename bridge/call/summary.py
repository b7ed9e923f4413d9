"""A rollover's summary asked of the model out of band (pure): whether it may be asked, which events
are its own, and what comes of it — the model's words, or why the transcript's summary is used.

Before a planned rollover the switcher asks the current session for a short text summary in a
response kept out of the conversation (`Dialect.out_of_band_text`). That response is the bridge's
errand, not a turn: nothing of it is played, booked in the ledger or the transcript. Its answer is
used when it comes within the deadline (`rollover.SUMMARY_DEADLINE_S` of the call's clock), is
complete, not empty and not overlong; otherwise, and wherever it cannot be asked (an upstream
that cannot answer in text, an unplanned replacement, no quiet moment), the summary built from
the heard transcript (`seed.py`) is used, as it always was.
"""

from __future__ import annotations

from dataclasses import dataclass

from .rollover import SUMMARY_DEADLINE_S

PURPOSE = "rollover_summary"  # the out-of-band response's metadata tag
SUMMARY_WORDS = 150  # asked for "under" this many words
MAX_SUMMARY_WORDS = 2 * SUMMARY_WORDS  # an answer longer than this is not used (it would not stay bounded)
MAX_OUTPUT_TOKENS = 600  # the request's cap (about 2 * SUMMARY_WORDS words): a runaway answer stops
# Upstreams whose sessions answer an out-of-band text-only response. The local agent (`local`)
# speaks recorded clips and writes no text: its calls keep the transcript's summary.
MODEL_SUMMARY_UPSTREAMS = frozenset({"openai", "azure-openai", "voicelive"})
# Why the transcript's summary was used (log field `reason`); "ok": the model's was.
REASONS = frozenset(
    {
        "ok",
        "not_supported",  # the upstream cannot answer out of band in text
        "unplanned",  # the session was lost: there is nobody left to ask
        "no_quiet_moment",  # the switch was forced at its deadline: no time to ask
        "busy",  # a response of the call's was under way
        "in_progress",  # an earlier summary has not finished yet (one at a time)
        "not_sent",  # the request could not be queued
        "timeout",  # no answer within the deadline
        "failed",  # the response was cancelled or failed
        "empty",
        "too_long",  # over MAX_SUMMARY_WORDS, or cut at MAX_OUTPUT_TOKENS
    }
)


def summary_instructions(words: int = SUMMARY_WORDS) -> str:
    return (
        "Do not answer the caller. Summarise the phone call so far for a colleague who takes over the "
        "call: the facts learned, the caller's requests, what was promised or done, and open questions. "
        f"Plain text, no greeting, under {words} words."
    )


@dataclass(frozen=True, slots=True)
class SummaryOutcome:
    reason: str  # one of REASONS
    text: str | None = None  # the model's summary when reason == "ok"
    waited_s: float = 0.0

    @property
    def source(self) -> str:
        return "model" if self.text is not None else "transcript"


class ModelSummary:
    """One call's out-of-band summaries: at most one asked at a time; `session_started` forgets
    the old session's (its events are not heard any more)."""

    def __init__(self, upstream: str, deadline_s: float = SUMMARY_DEADLINE_S, max_words: int = MAX_SUMMARY_WORDS) -> None:
        self.supported = upstream in MODEL_SUMMARY_UPSTREAMS
        self.deadline_s = deadline_s
        self.max_words = max_words
        self._asked_at: float | None = None  # a request under way (until its response.done)
        self._waiting = False  # its asker still waits for it (not timed out)
        self._response_id: str | None = None
        self._text = ""  # from its text-done events, if response.done carries none
        self._done: tuple[str, str, str] | None = None  # (status, reason, text) of its response.done

    def ask(self, now: float, model_busy: bool) -> SummaryOutcome | None:
        """None: ask now (send the request); else why not, and the transcript's summary is used."""
        if not self.supported:
            return SummaryOutcome("not_supported")
        if self._asked_at is not None:
            return SummaryOutcome("in_progress")
        if model_busy:
            return SummaryOutcome("busy")
        self._asked_at, self._waiting = now, True
        self._response_id, self._text, self._done = None, "", None
        return None

    def not_sent(self) -> SummaryOutcome:
        self._asked_at = None
        self._waiting = False
        return SummaryOutcome("not_sent")

    # --- its events ------------------------------------------------------------------------------

    def started(self, response_id: str, purpose: str) -> bool:
        """An out-of-band response began; True if it is the summary asked for."""
        if purpose != PURPOSE or self._asked_at is None or self._response_id is not None:
            return False
        self._response_id = response_id
        return True

    def text_done(self, response_id: str, text: str) -> bool:
        if response_id != self._response_id or self._response_id is None:
            return False
        self._text = f"{self._text}\n{text}" if self._text else text
        return True

    def finished(self, response_id: str, purpose: str, status: str, reason: str, text: str) -> bool:
        """Its response.done; True if it is the summary's (a response.created may have gone unseen)."""
        if purpose != PURPOSE or self._asked_at is None or self._response_id not in (None, response_id):
            return False
        self._response_id = response_id
        self._done = (status, reason, text or self._text)
        if not self._waiting:
            self._asked_at = None  # answered after its asker gave up: the next may be asked
        return True

    # --- the asker ---------------------------------------------------------------------------------

    def outcome(self, now: float, until: float | None = None) -> SummaryOutcome | None:
        """What came of the summary asked, or None while it may still come (`until`: the asker's
        own limit, e.g. the rollover's hard deadline, if sooner than the summary's)."""
        if self._asked_at is None or not self._waiting:
            return None
        waited = now - self._asked_at
        if self._done is not None:
            self._asked_at, self._waiting = None, False
            return self._judge(*self._done, waited)
        limit = self._asked_at + self.deadline_s
        if now >= (min(limit, until) if until is not None else limit):
            self._waiting = False  # still under way: no other is asked until it is done or the session goes
            return SummaryOutcome("timeout", waited_s=waited)
        return None

    def _judge(self, status: str, reason: str, text: str, waited: float) -> SummaryOutcome:
        if status != "completed":
            too_long = status == "incomplete" and reason == "max_output_tokens"
            return SummaryOutcome("too_long" if too_long else "failed", waited_s=waited)
        words = len(text.split())
        if not words:
            return SummaryOutcome("empty", waited_s=waited)
        if words > self.max_words:
            return SummaryOutcome("too_long", waited_s=waited)
        return SummaryOutcome("ok", text.strip(), waited)

    def session_started(self) -> None:
        """A new session: whatever the old one still had under way is never heard."""
        self._asked_at, self._waiting, self._response_id, self._done, self._text = None, False, None, None, ""
