"""The bridge's own vocabulary for what the upstream model says, whatever its dialect.

`bridge.dialects` turns each dialect's wire events into these; nothing past it sees wire names.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SessionReady:
    """`session.created` or `session.updated`."""

    updated: bool
    expires_at: float | None = None  # Unix time the service ends the session (Voice Live >= 1.3), if it says


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    item_id: str
    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class ResponseStarted:
    response_id: str


@dataclass(frozen=True, slots=True)
class OutputItemAdded:
    response_id: str
    item_id: str
    item_type: str


@dataclass(frozen=True, slots=True)
class AudioDelta:
    response_id: str
    item_id: str
    content_index: int
    audio: bytes


@dataclass(frozen=True, slots=True)
class AudioDone:
    response_id: str
    item_id: str
    content_index: int


@dataclass(frozen=True, slots=True)
class OutputTranscriptDone:
    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """A response's `usage`, in the bridge's words (both dialects send the same shape).

    `input_text`/`input_audio` include the cached tokens of their kind (`cached_text`/`cached_audio`),
    as the services count them; a missing count is 0.
    """

    input_text: int = 0
    input_audio: int = 0
    cached_text: int = 0
    cached_audio: int = 0
    output_text: int = 0
    output_audio: int = 0

    @property
    def total(self) -> int:
        return self.input_text + self.input_audio + self.output_text + self.output_audio


@dataclass(frozen=True, slots=True)
class ResponseFinished:
    """`response.done`: its status, why it did not complete, its error when it failed, its usage."""

    response_id: str
    status: str  # completed, cancelled, incomplete, failed (as sent, cut short)
    reason: str = ""  # status_details.reason: turn_detected, client_cancelled, max_output_tokens, content_filter
    error_type: str = ""  # status_details.error.type, when the response failed
    error_code: str = ""  # status_details.error.code
    error_message: str = ""  # status_details.error.message (cut short)
    usage: TokenUsage | None = None

    @property
    def failed(self) -> bool:
        """The caller heard less than the model meant to say: `failed` or `incomplete`."""
        return self.status in ("failed", "incomplete")

    @property
    def input_tokens(self) -> int | None:
        """What this response re-read (uncached and cached input): rollover's token budget."""
        return self.usage.input_text + self.usage.input_audio if self.usage is not None else None


@dataclass(frozen=True, slots=True)
class ItemTruncated:
    item_id: str
    content_index: int
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class UpstreamError:
    code: str
    message: str
    error_type: str


@dataclass(frozen=True, slots=True)
class ItemAdded:
    """A conversation item was added (GA `conversation.item.added`, Voice Live `conversation.item.created`)."""

    item_id: str
    item_type: str  # "message", "function_call", "function_call_output", ...
    role: str  # "user", "assistant", "system", or "" for items without a role
    previous_item_id: str | None


@dataclass(frozen=True, slots=True)
class InputTranscriptDone:
    """The transcript of what the caller said in one user item (when input transcription is on)."""

    item_id: str
    content_index: int
    transcript: str


@dataclass(frozen=True, slots=True)
class FunctionCallRequested:
    """The model finished a function call's arguments (`response.function_call_arguments.done`)."""

    response_id: str
    item_id: str
    call_id: str
    name: str
    arguments: str  # JSON text, exactly as the model wrote it: the tool runner parses and checks it


@dataclass(frozen=True, slots=True)
class WordTiming:
    """When one word of the model's audio plays (Voice Live `response.audio_timestamp.delta`)."""

    item_id: str
    word: str
    offset_ms: int
    duration_ms: int


@dataclass(frozen=True, slots=True)
class UpstreamWarning:
    """Voice Live's `warning`: informational, the session continues."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class RateLimit:
    name: str  # "requests", "tokens" (as sent, cut short)
    limit: int | None
    remaining: int | None
    reset_seconds: float | None


@dataclass(frozen=True, slots=True)
class RateLimitsUpdated:
    """`rate_limits.updated`: the account's limits as of this response's start."""

    limits: tuple[RateLimit, ...]


@dataclass(frozen=True, slots=True)
class OutOfBandStarted:
    """`response.created` of a response the bridge asked for out of band (tagged by its metadata):
    kept out of the conversation, never played, never the call's active response."""

    response_id: str
    purpose: str  # the tag's value, e.g. "rollover_summary"


@dataclass(frozen=True, slots=True)
class OutOfBandFinished:
    """`response.done` of an out-of-band response: its status and usage, and the text it produced."""

    purpose: str
    finished: ResponseFinished
    text: str  # the output text parts, joined ("" when it produced none)


@dataclass(frozen=True, slots=True)
class TextDone:
    """The whole text of one text part (GA `response.output_text.done`, Voice Live `response.text.done`):
    only out-of-band responses produce text; the call's audio responses send transcripts."""

    response_id: str
    text: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """An event the bridge has no use for (kept so it can be counted and logged by type)."""

    wire_type: str


@dataclass(frozen=True, slots=True)
class BadEvent:
    """A server event the bridge cannot read: skipped, logged (`upstream.bad_event`) and counted."""

    reason: str  # one of `bridge.dialects.BAD_EVENT_REASONS`
    wire_type: str | None  # the event's type when it had one (cut short)
    detail: str  # which field and why, in the bridge's words: never the event's content


ServerEvent = (
    SessionReady
    | SpeechStarted
    | SpeechStopped
    | ResponseStarted
    | OutputItemAdded
    | AudioDelta
    | AudioDone
    | OutputTranscriptDone
    | ResponseFinished
    | ItemTruncated
    | UpstreamError
    | ItemAdded
    | InputTranscriptDone
    | FunctionCallRequested
    | UpstreamWarning
    | RateLimitsUpdated
    | WordTiming
    | OutOfBandStarted
    | OutOfBandFinished
    | TextDone
    | Ignored
    | BadEvent
)
