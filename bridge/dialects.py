"""Where the upstream dialects differ: session shape and server event names.

Two dialects, so the call session never sees a wire name:

- `GADialect`: the GA Realtime protocol (OpenAI, Azure OpenAI `/openai/v1/realtime`, the local
  agent): nested `session.audio.{input,output}`, `response.output_audio.*` events.
- `VoiceLiveDialect`: Azure AI Voice Live (beta-shaped): flat `session.update`
  (`input_audio_format`, `voice` object, `turn_detection` with Azure semantic VAD, server-side
  noise suppression and echo cancellation), `response.audio.*` events.

`SessionConfig` says what the bridge wants in the bridge's own words (e.g. turn detection kind
"semantic", `noise_suppression=True`); each dialect turns that into its wire shape, and reports
with `unsupported()` what it cannot express so that start-up can refuse it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from voice_codecs import AUDIO_MODES, AudioMode

from .realtime_events import (
    AudioDelta,
    AudioDone,
    BadEvent,
    FunctionCallRequested,
    Ignored,
    InputTranscriptDone,
    ItemAdded,
    ItemTruncated,
    OutOfBandFinished,
    OutOfBandStarted,
    OutputItemAdded,
    OutputTranscriptDone,
    RateLimit,
    RateLimitsUpdated,
    ResponseFinished,
    ResponseStarted,
    ServerEvent,
    SessionReady,
    SpeechStarted,
    SpeechStopped,
    TextDone,
    TokenUsage,
    UpstreamError,
    UpstreamWarning,
    WordTiming,
)
from .wire import MAX_WIRE_INT, WireJSONError, json_uint, loads_bounded


class UpstreamProtocolError(ValueError):
    """A server event that does not have the shape its type promises.

    `reason` is one of `BAD_EVENT_REASONS`; `detail` names the field in the bridge's words and
    never quotes the event's content.
    """

    def __init__(self, detail: str, reason: str = "invalid_field") -> None:
        super().__init__(detail)
        self.detail = detail
        self.reason = reason


# Why a server event was skipped: a fixed set (metric label `reason`, log field `reason`).
BAD_EVENT_REASONS = ("binary_frame", "invalid_json", "not_an_object", "missing_type", "invalid_field", "invalid_base64")
# Error codes the Realtime services send (and the bridge knows of): the values of the metric label
# `voice_bridge_upstream_errors_total{code}`; any other code is counted as `other` (and logged as sent).
KNOWN_ERROR_CODES = frozenset(
    {
        "none",  # an error event without a code
        "session_expired",
        "response_cancel_not_active",
        "conversation_already_has_active_response",
        "invalid_value",
        "invalid_type",
        "invalid_event",
        "invalid_json",
        "item_not_found",
        "missing_required_parameter",
        "unknown_parameter",
        "decimal_below_min_value",
        "decimal_above_max_value",
        "integer_below_min_value",
        "integer_above_max_value",
        "string_above_max_length",
        "input_audio_buffer_commit_empty",
        "rate_limit_exceeded",
        "invalid_api_key",
        "server_error",
    }
)
# How the bridge reads some errors and closes (the call decides what to do about them).
SESSION_EXPIRED = "session_expired"  # the service ended the session (time limit): replace it
# Errors the service sends in normal operation, e.g. when server VAD already cancelled the
# response the bridge also cancels: not worth a warning.
BENIGN_ERROR_CODES = frozenset({"response_cancel_not_active"})
# The service's words when it refuses a `conversation.item.truncate` (no code of its own):
# "Audio content of 1200ms is already shorter than 1500ms", or any message about truncation.
_TRUNCATE_ERROR_PREFIX = "Audio content of"
_TRUNCATE_ERROR_WORD = "truncat"
# WebSocket close codes of a session the service ended on purpose (RFC 6455 §7.4.1: normal
# closure, going away); any other close, or none, is a failure worth one reconnect.
CLEAN_CLOSE_CODES = frozenset({1000, 1001})
MAX_ID_CHARS = 256  # ids the service makes up (item_…, resp_…, call_…) are a few dozen characters
MAX_NAME_CHARS = 128  # function names (the Realtime API allows 64)
MAX_TYPE_CHARS = 128  # an unknown event type kept for logs
MAX_CODE_CHARS = 128  # error and warning codes and types, as logged
MAX_MESSAGE_CHARS = 1000  # error and warning messages, as logged
MAX_RATE_LIMITS = 16  # entries of one rate_limits.updated kept (the services send two: requests, tokens)
MAX_TEXT_CHARS = 20_000  # an out-of-band response's text as read (a summary asks for a few hundred words)
# Out-of-band responses (a rollover's summary): `response.create` tagged with this metadata key (both
# SDKs type `metadata` on the request and on the Response echoed in response.created/done: openai
# RealtimeResponseCreateParams/RealtimeResponse, azure-ai-voicelive 1.3 ResponseCreateParams/Response).
# A response whose metadata carries it is the bridge's own errand, never a turn of the call.
OUT_OF_BAND_KEY = "voice_bridge_purpose"

# Why a response did not complete (`response.done` status `failed`/`incomplete`): the values of the
# metric label `voice_bridge_response_failures_total{reason}`. `incomplete` carries
# `status_details.reason`; `failed` carries `status_details.error` whose code (else type) is the
# reason; anything else is `other`. Checked against the `openai` (RealtimeResponseStatus) and
# `azure-ai-voicelive` (ResponseIncompleteDetails, ResponseFailedDetails) SDK types.
INCOMPLETE_REASONS = frozenset({"max_output_tokens", "content_filter"})
FAILURE_ERROR_TYPES = frozenset({"server_error", "invalid_request_error", "rate_limit_error", "rate_limit_exceeded"})
RESPONSE_FAILURE_REASONS = INCOMPLETE_REASONS | FAILURE_ERROR_TYPES | KNOWN_ERROR_CODES
RESPONSE_FAILURE_STATUSES = ("failed", "incomplete")
RESPONSE_STATUSES = ("completed", "cancelled", *RESPONSE_FAILURE_STATUSES)
# rate_limits.updated `name`s (openai RateLimitsUpdatedEvent.RateLimit.name): gauge label values.
RATE_LIMIT_NAMES = frozenset({"requests", "tokens"})
# Voice Live `warning` codes the bridge knows of (none documented yet in azure-ai-voicelive 1.3:
# ServerEventWarningDetails.code is free text): every other code is counted as `other`, logged as sent.
KNOWN_WARNING_CODES = frozenset({"none"})
# Every server event type of both dialects (openai 2.x RealtimeServerEvent, azure-ai-voicelive 1.3
# ServerEventType): the values of `voice_bridge_upstream_ignored_events_total{event_type}` for the
# events the bridge does not act on; an unknown type is counted as `other` (and logged at debug).
KNOWN_SERVER_EVENT_TYPES = frozenset(
    {
        "conversation.created",
        "conversation.item.added",
        "conversation.item.created",
        "conversation.item.deleted",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.failed",
        "conversation.item.input_audio_transcription.segment",
        "conversation.item.retrieved",
        "conversation.item.truncated",
        "error",
        "input_audio_buffer.cleared",
        "input_audio_buffer.committed",
        "input_audio_buffer.dtmf_event_received",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.timeout_triggered",
        "mcp_list_tools.completed",
        "mcp_list_tools.failed",
        "mcp_list_tools.in_progress",
        "output_audio_buffer.cleared",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "rate_limits.updated",
        "response.animation_blendshapes.delta",
        "response.animation_blendshapes.done",
        "response.animation_viseme.delta",
        "response.animation_viseme.done",
        "response.audio.delta",
        "response.audio.done",
        "response.audio_timestamp.delta",
        "response.audio_timestamp.done",
        "response.audio_transcript.annotation.added",
        "response.audio_transcript.delta",
        "response.audio_transcript.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.created",
        "response.done",
        "response.file_search_call.completed",
        "response.file_search_call.in_progress",
        "response.file_search_call.searching",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.invocation.delta",
        "response.mcp_call.completed",
        "response.mcp_call.failed",
        "response.mcp_call.in_progress",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.done",
        "response.output_item.added",
        "response.output_item.done",
        "response.output_text.delta",
        "response.output_text.done",
        "response.text.delta",
        "response.text.done",
        "response.video.delta",
        "response.web_search_call.completed",
        "response.web_search_call.in_progress",
        "response.web_search_call.searching",
        "session.avatar.connecting",
        "session.avatar.switch_to_idle",
        "session.avatar.switch_to_speaking",
        "session.created",
        "session.updated",
        "warning",
    }
)


VOICE_TYPES = ("openai", "azure-standard")
# The bridge's names for turn detection; each dialect maps them to its own `type`.
TURN_DETECTION_KINDS = ("server_vad", "semantic", "semantic_multilingual")
SEMANTIC_EAGERNESS = ("low", "medium", "high", "auto")


@dataclass(frozen=True, slots=True)
class TurnDetection:
    """How the service decides the caller has started and stopped talking.

    `kind`: "server_vad" (energy VAD, both dialects), "semantic" (GA `semantic_vad`, Voice Live
    `azure_semantic_vad`), "semantic_multilingual" (GA `semantic_vad`, Voice Live
    `azure_semantic_vad_multilingual`). A field a dialect has no place for is left out of its
    `session.update`: `threshold`/`prefix_padding_ms`/`silence_duration_ms` go to server VAD
    (both) and Azure semantic VAD; `eagerness` to GA semantic VAD only; `remove_filler_words`
    and `languages` to Azure semantic VAD only.
    """

    kind: str = "server_vad"
    threshold: float | None = None
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None
    eagerness: str | None = None
    remove_filler_words: bool | None = None
    languages: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class InputTranscription:
    """Transcribe what the caller says (a separate ASR model; the model itself hears audio)."""

    model: str
    language: str | None = None


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the model may call: name, description and a JSON-schema for its arguments."""

    name: str
    description: str
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """What the bridge asks of the model for one call, independent of dialect."""

    instructions: str
    voice: str
    audio_mode: AudioMode | str  # an AudioMode; any other string is refused by `unsupported()`
    voice_type: str = "openai"  # or "azure-standard" (Voice Live only)
    turn_detection: TurnDetection | None = None  # None: the dialect's default
    noise_suppression: bool = False  # where the upstream offers it
    echo_cancellation: bool = False  # where the upstream offers it (Voice Live)
    transcription: InputTranscription | None = None
    tools: tuple[ToolSpec, ...] = ()
    greeting: str | None = None  # instruction for the first response; None: just respond


class Dialect(Protocol):
    name: str

    def session_update(self, config: SessionConfig) -> dict[str, Any]: ...

    def parse(self, message: dict[str, Any]) -> ServerEvent: ...

    def unsupported(self, config: SessionConfig) -> tuple[str, ...]: ...

    def text_item(self, role: str, text: str) -> dict[str, Any]: ...

    def instructions_update(self, instructions: str) -> dict[str, Any]: ...

    def out_of_band_text(self, instructions: str, purpose: str, max_output_tokens: int) -> dict[str, Any]: ...


def _out_of_band_response(kept_out: dict[str, Any], instructions: str, purpose: str, max_output_tokens: int) -> dict[str, Any]:
    """`response.create` of an out-of-band text response: `kept_out`, the dialect's way to keep it
    out of the conversation and make no audio; it calls no tool and is tagged so its events are
    recognised (OUT_OF_BAND_KEY)."""
    response = {
        **kept_out,
        "instructions": instructions,
        "tool_choice": "none",
        "max_output_tokens": max_output_tokens,
        "metadata": {OUT_OF_BAND_KEY: purpose},
    }
    return {"type": "response.create", "response": response}


def _text_item(role: str, text: str, assistant_content_type: str) -> dict[str, Any]:
    """`conversation.item.create` of an earlier turn's words (to seed a new session)."""
    content_type = "input_text" if role == "user" else assistant_content_type
    return {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": role, "content": [{"type": content_type, "text": text}]},
    }


# Client events that have the same shape in every dialect.

APPEND_TYPE = "input_audio_buffer.append"
_APPEND_HEAD = '{"type":"' + APPEND_TYPE + '","audio":"'


def append_audio(audio: bytes) -> str:
    """`input_audio_buffer.append` as wire text: the hot path, so assembled rather than json.dumps'ed."""
    return _APPEND_HEAD + base64.b64encode(audio).decode("ascii") + '"}'


def create_response(instructions: str | None = None) -> dict[str, Any]:
    """`response.create`; `instructions` replace the session's for this one response."""
    if instructions is None:
        return {"type": "response.create"}
    return {"type": "response.create", "response": {"instructions": instructions}}


def greeting_response(config: SessionConfig) -> dict[str, Any]:
    """The first response of a call: the profile's greeting instruction on top of the session's."""
    if not config.greeting:
        return create_response()
    return create_response(f"{config.instructions}\n\n{config.greeting}")


def function_call_output(call_id: str, output: str) -> dict[str, Any]:
    """A tool's result, sent back as a conversation item (follow it with `create_response()`)."""
    item = {"type": "function_call_output", "call_id": call_id, "output": output}
    return {"type": "conversation.item.create", "item": item}


def delete_item(item_id: str) -> dict[str, Any]:
    return {"type": "conversation.item.delete", "item_id": item_id}


def cancel_response() -> dict[str, Any]:
    return {"type": "response.cancel"}


def truncate_item(item_id: str, content_index: int, audio_end_ms: int) -> dict[str, Any]:
    return {
        "type": "conversation.item.truncate",
        "item_id": item_id,
        "content_index": content_index,
        "audio_end_ms": audio_end_ms,
    }


def _str(message: dict[str, Any], name: str, max_chars: int | None = None) -> str:
    value = message.get(name)
    if not isinstance(value, str):
        raise UpstreamProtocolError(f"{name} must be a string")
    if max_chars is not None and len(value) > max_chars:
        raise UpstreamProtocolError(f"{name} is longer than {max_chars} characters")
    return value


def _id(message: dict[str, Any], name: str) -> str:
    return _str(message, name, MAX_ID_CHARS)


def _int(message: dict[str, Any], name: str, default: int | None = None) -> int:
    value = json_uint(message.get(name, default))
    if value is None:
        raise UpstreamProtocolError(f"{name} must be an integer from 0 to {MAX_WIRE_INT}")
    return value


def _audio(message: dict[str, Any]) -> bytes:
    text = _str(message, "delta")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII text
        raise UpstreamProtocolError("delta is not base64", reason="invalid_base64") from None


def _dict(message: dict[str, Any], name: str) -> dict[str, Any]:
    value = message.get(name)
    if not isinstance(value, dict):
        raise UpstreamProtocolError(f"{name} must be an object")
    return value


def _optional_str(message: dict[str, Any], name: str, max_chars: int | None = None) -> str | None:
    value = message.get(name)
    if value is None:
        return None
    return _str(message, name, max_chars)


def _text(message: dict[str, Any], name: str, max_chars: int) -> str:
    """A free-form informational field (error code, message): a string or a number, cut to `max_chars`."""
    value = message.get(name)
    if isinstance(value, str):
        return value[:max_chars]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)[:max_chars]  # JSON numbers are bounded by the decoder (4300 digits at most)
    return ""


@dataclass(frozen=True, slots=True)
class WireNames:
    """The server event names that differ between the dialects (the rest are shared)."""

    audio_delta: str
    audio_done: str
    transcript_delta: str
    transcript_done: str
    item_added: str
    word_timing: str | None = None  # the dialect's word timestamps of the model's audio, if it has them
    text_done: str | None = None  # the whole text of a text part (out-of-band text responses)


class _EventParser:
    """Server events → bridge vocabulary; one table per dialect, built once."""

    def __init__(self, names: WireNames) -> None:
        self._handlers: dict[str, Callable[[dict[str, Any]], ServerEvent]] = {
            "session.created": lambda m: SessionReady(updated=False, expires_at=_expires_at(m)),
            "session.updated": lambda m: SessionReady(updated=True, expires_at=_expires_at(m)),
            "input_audio_buffer.speech_started": lambda m: SpeechStarted(
                item_id=_id(m, "item_id"), audio_start_ms=_int(m, "audio_start_ms", 0)
            ),
            "input_audio_buffer.speech_stopped": lambda m: SpeechStopped(
                item_id=_id(m, "item_id"), audio_end_ms=_int(m, "audio_end_ms", 0)
            ),
            "response.created": _response_created,
            "response.output_item.added": _output_item_added,
            names.audio_delta: lambda m: AudioDelta(
                response_id=_id(m, "response_id"),
                item_id=_id(m, "item_id"),
                content_index=_int(m, "content_index", 0),
                audio=_audio(m),
            ),
            names.audio_done: lambda m: AudioDone(
                response_id=_id(m, "response_id"), item_id=_id(m, "item_id"), content_index=_int(m, "content_index", 0)
            ),
            names.transcript_done: lambda m: OutputTranscriptDone(
                item_id=_id(m, "item_id"), transcript=_optional_str(m, "transcript") or ""
            ),
            names.item_added: _item_added,
            "conversation.item.input_audio_transcription.completed": lambda m: InputTranscriptDone(
                item_id=_id(m, "item_id"), content_index=_int(m, "content_index", 0), transcript=_str(m, "transcript")
            ),
            "response.function_call_arguments.done": lambda m: FunctionCallRequested(
                response_id=_id(m, "response_id"),
                item_id=_id(m, "item_id"),
                call_id=_id(m, "call_id"),
                name=_str(m, "name", MAX_NAME_CHARS),
                arguments=_str(m, "arguments"),
            ),
            "response.done": _response_done_any,
            "conversation.item.truncated": lambda m: ItemTruncated(
                item_id=_id(m, "item_id"), content_index=_int(m, "content_index", 0), audio_end_ms=_int(m, "audio_end_ms")
            ),
            "error": _error,
            "warning": _warning,
            "rate_limits.updated": _rate_limits,
        }
        if names.word_timing is not None:
            self._handlers[names.word_timing] = _word_timing
        if names.text_done is not None:
            self._handlers[names.text_done] = lambda m: TextDone(
                response_id=_id(m, "response_id"), text=_text(m, "text", MAX_TEXT_CHARS)
            )

    def parse(self, message: dict[str, Any]) -> ServerEvent:
        kind = message.get("type")
        if not isinstance(kind, str):
            raise UpstreamProtocolError("event without a type", reason="missing_type")
        handler = self._handlers.get(kind)
        return handler(message) if handler is not None else Ignored(wire_type=kind[:MAX_TYPE_CHARS])


def parse_server_frame(dialect: Dialect, raw: str | bytes) -> ServerEvent:
    """Any frame the upstream can send → an event in the bridge's vocabulary; never raises.

    What cannot be read (not JSON, nested too deep, not an object, a field of the wrong type or
    size) becomes `BadEvent`: the call skips it, logs it and counts it, and goes on.
    """
    if isinstance(raw, bytes):
        return BadEvent("binary_frame", None, f"{len(raw)} bytes")
    try:
        message = loads_bounded(raw)
    except WireJSONError as exc:
        return BadEvent("invalid_json", None, exc.detail)
    if not isinstance(message, dict):
        return BadEvent("not_an_object", None, f"a JSON {type(message).__name__}")
    kind = message.get("type")
    try:
        return dialect.parse(message)
    except UpstreamProtocolError as exc:
        return BadEvent(exc.reason, kind[:MAX_TYPE_CHARS] if isinstance(kind, str) else None, exc.detail)


def _output_item_added(message: dict[str, Any]) -> OutputItemAdded:
    item = _dict(message, "item")
    return OutputItemAdded(
        response_id=_id(message, "response_id"), item_id=_id(item, "id"), item_type=_text(item, "type", MAX_CODE_CHARS)
    )


def _item_added(message: dict[str, Any]) -> ItemAdded:
    item = _dict(message, "item")
    return ItemAdded(
        item_id=_id(item, "id"),
        item_type=_str(item, "type", MAX_CODE_CHARS),
        role=_text(item, "role", MAX_CODE_CHARS),
        previous_item_id=_optional_str(message, "previous_item_id", MAX_ID_CHARS),
    )


def _response_done(message: dict[str, Any]) -> ResponseFinished:
    """`response.done`: `status`, `status_details` {type, reason, error {type, code, message}} and
    `usage` as the openai (RealtimeResponse) and azure-ai-voicelive (Response, TokenUsage) SDKs type
    them. Informational fields of the wrong shape are read as absent: they never cost the event."""
    response = _dict(message, "response")
    details = _object(response, "status_details")
    error = _object(details, "error")
    return ResponseFinished(
        response_id=_id(response, "id"),
        status=_text(response, "status", MAX_CODE_CHARS),
        reason=_text(details, "reason", MAX_CODE_CHARS),
        error_type=_text(error, "type", MAX_CODE_CHARS),
        error_code=_text(error, "code", MAX_CODE_CHARS),
        error_message=_text(error, "message", MAX_MESSAGE_CHARS),
        usage=_usage(response.get("usage")),
    )


def _purpose(response: dict[str, Any]) -> str:
    """The out-of-band tag in a response's `metadata` ("" for the call's own responses)."""
    return _text(_object(response, "metadata"), OUT_OF_BAND_KEY, MAX_CODE_CHARS)


def _response_created(message: dict[str, Any]) -> ResponseStarted | OutOfBandStarted:
    response = _dict(message, "response")
    purpose = _purpose(response)
    if purpose:
        return OutOfBandStarted(response_id=_id(response, "id"), purpose=purpose)
    return ResponseStarted(response_id=_id(response, "id"))


def _response_done_any(message: dict[str, Any]) -> ResponseFinished | OutOfBandFinished:
    finished = _response_done(message)
    response = _dict(message, "response")
    purpose = _purpose(response)
    if purpose:
        return OutOfBandFinished(purpose=purpose, finished=finished, text=_output_text(response))
    return finished


def _output_text(response: dict[str, Any]) -> str:
    """The text parts of a response's output message items (GA `output_text`, Voice Live `text`)."""
    output = response.get("output")
    parts: list[str] = []
    for item in output if isinstance(output, list) else []:
        content = item.get("content") if isinstance(item, dict) else None
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and part.get("type") in ("output_text", "text"):
                parts.append(_text(part, "text", MAX_TEXT_CHARS))
    return "\n".join(p for p in parts if p)[:MAX_TEXT_CHARS]


def _object(message: dict[str, Any], name: str) -> dict[str, Any]:
    """An optional informational object: `{}` when absent or not an object."""
    value = message.get(name)
    return value if isinstance(value, dict) else {}


def _count(message: dict[str, Any], name: str) -> int:
    """A token count: a whole number from 0 to MAX_WIRE_INT, else 0 (informational, never fatal)."""
    value = json_uint(message.get(name))
    return value if value is not None else 0


def _usage(value: Any) -> TokenUsage | None:
    if not isinstance(value, dict):
        return None
    inputs, outputs = _object(value, "input_token_details"), _object(value, "output_token_details")
    cached = _object(inputs, "cached_tokens_details")
    input_text, input_audio = _count(inputs, "text_tokens"), _count(inputs, "audio_tokens")
    if not inputs and not outputs:  # only the totals: count them as text (the cheaper side; an estimate)
        return TokenUsage(input_text=_count(value, "input_tokens"), output_text=_count(value, "output_tokens"))
    if cached:
        cached_text, cached_audio = _count(cached, "text_tokens"), _count(cached, "audio_tokens")
    else:  # only the cached total: attribute it to text first, then audio
        cached_total = _count(inputs, "cached_tokens")
        cached_text = min(cached_total, input_text)
        cached_audio = min(cached_total - cached_text, input_audio)
    return TokenUsage(
        input_text=input_text,
        input_audio=input_audio,
        cached_text=min(cached_text, input_text),
        cached_audio=min(cached_audio, input_audio),
        output_text=_count(outputs, "text_tokens"),
        output_audio=_count(outputs, "audio_tokens"),
    )


def _rate_limits(message: dict[str, Any]) -> RateLimitsUpdated:
    """`rate_limits.updated` {rate_limits: [{name, limit, remaining, reset_seconds}]} (openai
    RateLimitsUpdatedEvent); informational: entries that are not objects, or no array, are skipped."""
    entries = message.get("rate_limits")
    if not isinstance(entries, list):
        entries = []
    limits = []
    for entry in entries[:MAX_RATE_LIMITS]:
        if not isinstance(entry, dict):
            continue
        reset = entry.get("reset_seconds")
        if not (isinstance(reset, int | float) and not isinstance(reset, bool) and 0 <= reset < 1e9):
            reset = None
        limits.append(
            RateLimit(
                name=_text(entry, "name", MAX_CODE_CHARS),
                limit=json_uint(entry.get("limit")),
                remaining=json_uint(entry.get("remaining")),
                reset_seconds=float(reset) if reset is not None else None,
            )
        )
    return RateLimitsUpdated(tuple(limits))


def _expires_at(message: dict[str, Any]) -> float | None:
    """`session.expires_at` (Unix seconds), where the service announces when it ends the session."""
    session = message.get("session")
    value = session.get("expires_at") if isinstance(session, dict) else None
    seconds = json_uint(value)
    return float(seconds) if seconds else None


def _word_timing(message: dict[str, Any]) -> WordTiming:
    return WordTiming(
        item_id=_id(message, "item_id"),
        word=_str(message, "text", MAX_MESSAGE_CHARS),
        offset_ms=_int(message, "audio_offset_ms", 0),
        duration_ms=_int(message, "audio_duration_ms", 0),
    )


def _error(message: dict[str, Any]) -> UpstreamError:
    error = _dict(message, "error")
    return UpstreamError(
        code=_text(error, "code", MAX_CODE_CHARS),
        message=_text(error, "message", MAX_MESSAGE_CHARS),
        error_type=_text(error, "type", MAX_CODE_CHARS),
    )


def is_session_expired(event: ServerEvent) -> bool:
    """The service ended the session on purpose (its time limit): the call opens a new one."""
    return isinstance(event, UpstreamError) and event.code == SESSION_EXPIRED


def is_benign_error(event: ServerEvent) -> bool:
    """An error the service sends in normal operation: logged at info, not as a warning."""
    return isinstance(event, UpstreamError) and event.code in BENIGN_ERROR_CODES


def is_truncate_error(event: ServerEvent) -> bool:
    """The service refused a `conversation.item.truncate` (counted as a truncate error)."""
    if not isinstance(event, UpstreamError):
        return False
    return event.message.startswith(_TRUNCATE_ERROR_PREFIX) or _TRUNCATE_ERROR_WORD in event.message.lower()


def is_clean_close(code: int | None) -> bool:
    """The upstream closed its socket on purpose (normal closure, going away): the call ends,
    with no reconnect. `None` (no close frame: the connection dropped) is not clean."""
    return code in CLEAN_CLOSE_CODES


def _warning(message: dict[str, Any]) -> UpstreamWarning:
    warning = _dict(message, "warning")
    return UpstreamWarning(code=_text(warning, "code", MAX_CODE_CHARS), message=_text(warning, "message", MAX_MESSAGE_CHARS))


def _function_tools(config: SessionConfig) -> dict[str, Any]:
    """`tools` + `tool_choice`: the same flat function-tool shape in both dialects."""
    if not config.tools:
        return {}
    tools = [
        {"type": "function", "name": t.name, "description": t.description, "parameters": dict(t.parameters)}
        for t in config.tools
    ]
    return {"tools": tools, "tool_choice": "auto"}


def _without_none(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _common_unsupported(config: SessionConfig) -> list[str]:
    problems = []
    if config.audio_mode not in AUDIO_MODES:
        problems.append(f"audio mode {config.audio_mode!r}: expected one of {', '.join(AUDIO_MODES)}")
    td = config.turn_detection
    if td is not None:
        if td.kind not in TURN_DETECTION_KINDS:
            problems.append(f"turn detection {td.kind!r}: expected one of {', '.join(TURN_DETECTION_KINDS)}")
        if td.eagerness is not None and td.eagerness not in SEMANTIC_EAGERNESS:
            problems.append(f"turn detection eagerness {td.eagerness!r}: expected one of {', '.join(SEMANTIC_EAGERNESS)}")
    names = [t.name for t in config.tools]
    if len(set(names)) != len(names):
        problems.append("a tool is listed twice")
    return problems


GA_WIRE_NAMES = WireNames(
    audio_delta="response.output_audio.delta",
    audio_done="response.output_audio.done",
    transcript_delta="response.output_audio_transcript.delta",
    transcript_done="response.output_audio_transcript.done",
    item_added="conversation.item.added",
    text_done="response.output_text.done",
)
_GA_EVENTS = _EventParser(GA_WIRE_NAMES)


class GADialect:
    """The GA Realtime protocol (OpenAI, Azure OpenAI `/openai/v1/realtime`, the local agent)."""

    name = "ga"

    def session_update(self, config: SessionConfig) -> dict[str, Any]:
        audio_format: dict[str, Any] = (
            {"type": "audio/pcmu"}
            if config.audio_mode == AudioMode.G711
            else {"type": "audio/pcm", "rate": AudioMode.PCM24K.model_rate}
        )
        audio_input: dict[str, Any] = {"format": audio_format, "turn_detection": self._turn_detection(config.turn_detection)}
        if config.noise_suppression:
            audio_input["noise_reduction"] = {"type": "near_field"}  # a telephone handset is a near-field microphone
        if config.transcription is not None:
            audio_input["transcription"] = _without_none(
                {"model": config.transcription.model, "language": config.transcription.language}
            )
        return {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "instructions": config.instructions,
                "output_modalities": ["audio"],
                "audio": {"input": audio_input, "output": {"format": audio_format, "voice": config.voice}},
                **_function_tools(config),
            },
        }

    @staticmethod
    def _turn_detection(td: TurnDetection | None) -> dict[str, Any]:
        td = td or TurnDetection(kind="server_vad")
        # The bridge runs its own barge-in, but the service must still answer and stop by itself.
        behaviour = {"create_response": True, "interrupt_response": True}
        if td.kind == "server_vad":
            tuning = {
                "threshold": td.threshold,
                "prefix_padding_ms": td.prefix_padding_ms,
                "silence_duration_ms": td.silence_duration_ms,
            }
            return {"type": "server_vad", **_without_none(tuning), **behaviour}
        return {"type": "semantic_vad", **_without_none({"eagerness": td.eagerness}), **behaviour}

    def parse(self, message: dict[str, Any]) -> ServerEvent:
        return _GA_EVENTS.parse(message)

    def text_item(self, role: str, text: str) -> dict[str, Any]:
        return _text_item(role, text, assistant_content_type="output_text")

    def instructions_update(self, instructions: str) -> dict[str, Any]:
        """A `session.update` that changes only the instructions (a new session told the call so far)."""
        return {"type": "session.update", "session": {"type": "realtime", "instructions": instructions}}

    def out_of_band_text(self, instructions: str, purpose: str, max_output_tokens: int) -> dict[str, Any]:
        """A text-only response kept out of the conversation (`conversation: "none"`): it reads the
        conversation, adds nothing to it."""
        kept_out = {"conversation": "none", "output_modalities": ["text"]}
        return _out_of_band_response(kept_out, instructions, purpose, max_output_tokens)

    def unsupported(self, config: SessionConfig) -> tuple[str, ...]:
        problems = _common_unsupported(config)
        if config.voice_type != "openai":
            problems.append(f"voice type {config.voice_type!r} needs Voice Live; GA Realtime voices are type 'openai'")
        return tuple(problems)


VOICELIVE_WIRE_NAMES = WireNames(
    audio_delta="response.audio.delta",
    audio_done="response.audio.done",
    transcript_delta="response.audio_transcript.delta",
    transcript_done="response.audio_transcript.done",
    item_added="conversation.item.created",
    word_timing="response.audio_timestamp.delta",
    text_done="response.text.done",
)
_VOICELIVE_EVENTS = _EventParser(VOICELIVE_WIRE_NAMES)

# The model-audio event of either dialect (a recording reads both without knowing which it has).
AUDIO_DELTA_TYPES = frozenset({GA_WIRE_NAMES.audio_delta, VOICELIVE_WIRE_NAMES.audio_delta})

_VOICELIVE_TURN_TYPES = {
    "server_vad": "server_vad",
    "semantic": "azure_semantic_vad",
    "semantic_multilingual": "azure_semantic_vad_multilingual",
}


class VoiceLiveDialect:
    """Azure AI Voice Live: beta-shaped events and a flat `session.update` with Azure extras."""

    name = "voicelive"

    def session_update(self, config: SessionConfig) -> dict[str, Any]:
        mode = AudioMode.G711 if config.audio_mode == AudioMode.G711 else AudioMode.PCM24K
        audio_format = "g711_ulaw" if mode is AudioMode.G711 else "pcm16"
        session: dict[str, Any] = {
            "modalities": ["text", "audio"],
            "instructions": config.instructions,
            "input_audio_format": audio_format,
            "input_audio_sampling_rate": mode.model_rate,
            "output_audio_format": audio_format,
            "voice": {"type": config.voice_type, "name": config.voice},
            "turn_detection": self._turn_detection(config.turn_detection),
            # word timings of the model's audio: a barge-in cuts the heard transcript at a word
            "output_audio_timestamp_types": ["word"],
        }
        if config.noise_suppression:
            session["input_audio_noise_reduction"] = {"type": "azure_deep_noise_suppression"}
        if config.echo_cancellation:
            session["input_audio_echo_cancellation"] = {"type": "server_echo_cancellation"}
        if config.transcription is not None:
            session["input_audio_transcription"] = _without_none(
                {"model": config.transcription.model, "language": config.transcription.language}
            )
        session.update(_function_tools(config))
        return {"type": "session.update", "session": session}

    @staticmethod
    def _turn_detection(td: TurnDetection | None) -> dict[str, Any]:
        td = td or TurnDetection(kind="semantic")
        wire_type = _VOICELIVE_TURN_TYPES.get(td.kind, "azure_semantic_vad")
        fields: dict[str, Any] = {
            "threshold": td.threshold,
            "prefix_padding_ms": td.prefix_padding_ms,
            "silence_duration_ms": td.silence_duration_ms,
        }
        if wire_type != "server_vad":
            fields["remove_filler_words"] = td.remove_filler_words
            fields["languages"] = list(td.languages) or None
        # Voice Live's defaults for these are all false: the service must answer and stop by
        # itself, and must not truncate on its own guess (the bridge truncates to what was heard).
        behaviour = {"create_response": True, "interrupt_response": True, "auto_truncate": False}
        return {"type": wire_type, **_without_none(fields), **behaviour}

    def parse(self, message: dict[str, Any]) -> ServerEvent:
        return _VOICELIVE_EVENTS.parse(message)

    def text_item(self, role: str, text: str) -> dict[str, Any]:
        return _text_item(role, text, assistant_content_type="text")

    def instructions_update(self, instructions: str) -> dict[str, Any]:
        return {"type": "session.update", "session": {"instructions": instructions}}

    def out_of_band_text(self, instructions: str, purpose: str, max_output_tokens: int) -> dict[str, Any]:
        """Voice Live's out-of-band response (azure-ai-voicelive 1.3 ResponseCreateParams): `commit: false`
        keeps it out of the conversation, `cancel_previous: false` leaves a response under way alone
        (the default would cancel it), `modalities: ["text"]` makes no audio."""
        kept_out = {"commit": False, "cancel_previous": False, "modalities": ["text"]}
        return _out_of_band_response(kept_out, instructions, purpose, max_output_tokens)

    def unsupported(self, config: SessionConfig) -> tuple[str, ...]:
        problems = _common_unsupported(config)
        if config.voice_type not in VOICE_TYPES:
            problems.append(f"voice type {config.voice_type!r}: expected one of {', '.join(VOICE_TYPES)}")
        return tuple(problems)


def dialect_for(upstream: str) -> Dialect:
    if upstream in ("local", "openai", "azure-openai"):
        return GADialect()
    if upstream == "voicelive":
        return VoiceLiveDialect()
    raise ValueError(f"no dialect for upstream {upstream!r}")
