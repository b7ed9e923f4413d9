"""Per-turn latency: from the caller's end of speech to the answer being heard (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field

STAGES = ("model_audio", "media_sent", "heard")


@dataclass(slots=True)
class TurnTimeline:
    """Stamps the stages of one answer; `completed()` hands back the finished turn once."""

    speech_stopped_at: float | None = None
    stages: dict[str, float] = field(default_factory=dict)
    _first_mark: str | None = None
    filler_s: float | None = None  # issue 16: when a filler was sent in this turn (from the end of speech)
    last_filler_s: float | None = None  # of the turn `mark_echoed` just completed

    def speech_stopped(self, now: float) -> None:
        self.speech_stopped_at = now
        self.stages = {}
        self._first_mark = None
        self.filler_s = None

    def filler(self, now: float) -> None:
        if self.speech_stopped_at is not None and self.filler_s is None:
            self.filler_s = now - self.speech_stopped_at

    def model_audio(self, now: float) -> None:
        self._stamp("model_audio", now)

    def media_sent(self, mark_name: str, now: float) -> None:
        if self.speech_stopped_at is not None and "media_sent" not in self.stages:
            self._stamp("media_sent", now)
            self._first_mark = mark_name

    def mark_echoed(self, mark_name: str, now: float) -> dict[str, float] | None:
        """The stage durations in seconds once the answer's first chunk has been heard."""
        if self._first_mark is None or mark_name != self._first_mark:
            return None
        self._stamp("heard", now)
        done = dict(self.stages)
        self.last_filler_s, self.filler_s = self.filler_s, None
        self.speech_stopped_at, self._first_mark, self.stages = None, None, {}
        return done

    def abandoned(self) -> None:
        """The answer was interrupted or never came: this turn will not complete."""
        self.speech_stopped_at, self._first_mark, self.stages = None, None, {}
        self.filler_s = None

    def _stamp(self, stage: str, now: float) -> None:
        if self.speech_stopped_at is not None and stage not in self.stages:
            self.stages[stage] = now - self.speech_stopped_at
