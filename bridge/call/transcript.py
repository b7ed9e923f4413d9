"""What was heard on the call, in words (pure): the caller's transcribed turns and the model's turns
cut to the part the caller actually heard.

The model's transcript is the text it generated; when a barge-in truncates an item, the caller
heard only its first `audio_end_ms`. The text is cut there: by word timings when the service sends
them (Voice Live's `response.audio_timestamp.delta`), otherwise by the proportion of the item's
audio heard — an estimate (speech rate is not even within an item), kept to whole words and never
past the proportion. An item the caller heard nothing of is left out. The transcript and the cut
may arrive in either order.

This transcript is what a new model session is told (reconnect, rollover: `seed.py`) and what the
post-call record carries.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from ..realtime_events import AudioDelta, InputTranscriptDone, ItemAdded, OutputTranscriptDone, ServerEvent, WordTiming

MAX_TURNS = 500  # a long call keeps its last turns; the post-call record says how many were dropped
INTERRUPTED_MARK = "…"  # appended to a model turn the caller cut short


@dataclass(frozen=True, slots=True)
class HeardTurn:
    role: str  # "user" or "assistant"
    text: str  # what the caller said / heard
    interrupted: bool = False  # an assistant turn the caller cut short


@dataclass(slots=True)
class _Turn:
    role: str
    text: str | None = None  # None until its transcript arrives
    audio_ms: float = 0.0  # model audio received for the item
    heard_ms: float | None = None  # None: heard whole; set by a truncation
    words: list[tuple[str, float, float]] = field(default_factory=list)  # (word, offset_ms, duration_ms)

    def heard(self) -> HeardTurn | None:
        if self.text is None or not self.text.strip():
            return None
        if self.role != "assistant" or self.heard_ms is None:
            return HeardTurn(self.role, self.text.strip())
        if self.words:
            text = cut_by_words(self.words, self.heard_ms)
        else:
            text = cut_by_proportion(self.text, self.heard_ms, self.audio_ms)
        return HeardTurn(self.role, text, interrupted=True) if text else None


def cut_by_proportion(text: str, heard_ms: float, total_ms: float) -> str:
    """The whole words of `text` within the heard share of its audio (an estimate: even speech rate)."""
    words = text.split()
    if total_ms <= 0 or heard_ms >= total_ms:
        return " ".join(words)
    limit = len(" ".join(words)) * max(heard_ms, 0.0) / total_ms
    kept: list[str] = []
    end = 0
    for word in words:
        end += len(word) + (1 if kept else 0)
        if end > limit:
            break
        kept.append(word)
    return " ".join(kept)


def cut_by_words(words: list[tuple[str, float, float]], heard_ms: float) -> str:
    """The words whose audio had (mostly) played by `heard_ms`, from the service's word timings."""
    return " ".join(w.strip() for w, offset, duration in words if offset + duration / 2 <= heard_ms and w.strip())


class HeardTranscript:
    """The call's turns by conversation item, in the order they were spoken."""

    def __init__(self, max_turns: int = MAX_TURNS) -> None:
        self.max_turns = max_turns
        self._turns: OrderedDict[str, _Turn] = OrderedDict()
        self._anonymous = 0
        self.dropped = 0  # turns forgotten (over max_turns)

    def _turn(self, item_id: str | None, role: str) -> _Turn:
        if item_id is None:
            self._anonymous += 1
            item_id = f"#{self._anonymous}"
        turn = self._turns.get(item_id)
        if turn is None:
            turn = self._turns[item_id] = _Turn(role)
            while len(self._turns) > self.max_turns:
                self._turns.popitem(last=False)
                self.dropped += 1
        return turn

    # --- the caller ---

    def caller_item(self, item_id: str) -> None:
        """A user item was committed: its place in the conversation, before its transcript arrives."""
        self._turn(item_id, "user")

    def caller_said(self, item_id: str | None, text: str) -> None:
        self._turn(item_id, "user").text = text

    # --- the model ---

    def model_audio(self, item_id: str, ms: float) -> None:
        self._turn(item_id, "assistant").audio_ms += ms

    def model_said(self, item_id: str | None, text: str) -> None:
        self._turn(item_id, "assistant").text = text

    def model_word(self, item_id: str, word: str, offset_ms: float, duration_ms: float) -> None:
        self._turn(item_id, "assistant").words.append((word, offset_ms, duration_ms))

    def truncated(self, item_id: str, audio_end_ms: float) -> None:
        """A barge-in: the caller heard the item's first `audio_end_ms`."""
        self._turn(item_id, "assistant").heard_ms = audio_end_ms

    def unheard(self, item_id: str) -> None:
        """The caller heard nothing of the item (deleted on barge-in)."""
        self._turn(item_id, "assistant").heard_ms = 0.0

    # --- reading ---

    def turns(self) -> list[HeardTurn]:
        return [heard for turn in self._turns.values() if (heard := turn.heard()) is not None]

    def __len__(self) -> int:
        return len(self.turns())


def hear(transcript: HeardTranscript, event: ServerEvent, model_ms: Callable[[int], float]) -> None:
    """Book one model event in the transcript (`model_ms`: milliseconds of so many bytes of model audio)."""
    if isinstance(event, AudioDelta):
        transcript.model_audio(event.item_id, model_ms(len(event.audio)))
    elif isinstance(event, OutputTranscriptDone):
        transcript.model_said(event.item_id, event.transcript)
    elif isinstance(event, InputTranscriptDone):
        transcript.caller_said(event.item_id, event.transcript)
    elif isinstance(event, ItemAdded) and event.role == "user" and event.item_type == "message":
        transcript.caller_item(event.item_id)
    elif isinstance(event, WordTiming):
        transcript.model_word(event.item_id, event.word, event.offset_ms, event.duration_ms)
