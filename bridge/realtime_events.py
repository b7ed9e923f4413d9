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
class ResponseFinished:
    response_id: str
    status: str
    input_tokens: int | None = None  # `usage.input_tokens`: what this response re-read (rollover's budget)


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
    | WordTiming
    | Ignored
    | BadEvent
)
