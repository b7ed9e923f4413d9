"""The Twilio Media Streams protocol: typed messages, parsed once at the edge.

Both directions live here: what Twilio sends us (`connected`, `start`, `media`, `dtmf`, `mark`,
`stop`) and what we may send Twilio (`media`, `mark`, `clear`). The phone simulator uses the
same module from Twilio's side, so the two can never drift apart.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from voice_codecs import TWILIO_RATE

from .playback import is_mark_name
from .wire import WireJSONError, ascii_uint, json_uint, loads_bounded

TWILIO_MEDIA_FORMAT = {"encoding": "audio/x-mulaw", "sampleRate": TWILIO_RATE, "channels": 1}


class ProtocolError(ValueError):
    """A frame that breaks the protocol; `reason` is a short stable name for logs and metrics."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# --- Twilio → bridge ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class Start:
    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    custom_parameters: dict[str, str]
    media_format: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Media:
    stream_sid: str
    track: str
    chunk: int
    timestamp_ms: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Dtmf:
    stream_sid: str
    digit: str


@dataclass(frozen=True, slots=True)
class MarkEcho:
    stream_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class Stop:
    stream_sid: str


TwilioEvent = Connected | Start | Media | Dtmf | MarkEcho | Stop


def _field(obj: dict[str, Any], name: str, kind: type, where: str) -> Any:
    value = obj.get(name)
    if not isinstance(value, kind):
        raise ProtocolError("invalid_field", f"{where}.{name} must be {kind.__name__}")
    return value


def _optional_str(obj: dict[str, Any], name: str, where: str, default: str = "") -> str:
    value = obj.get(name, default)
    if not isinstance(value, str):
        raise ProtocolError("invalid_field", f"{where}.{name} must be a string")
    return value


def _int_string(obj: dict[str, Any], name: str, where: str) -> int:
    # Twilio sends every counter and timestamp as a decimal string: ASCII digits, bounded length
    # ("²".isdigit() is true, and int() of 5000 digits raises).
    value = obj.get(name)
    number = ascii_uint(value) if isinstance(value, str) else json_uint(value)
    if number is None:
        raise ProtocolError("invalid_field", f"{where}.{name} must be a decimal string of at most 15 ASCII digits")
    return number


DTMF_DIGITS = frozenset("0123456789*#")


def _parse_start(message: dict[str, Any], stream_sid: str) -> Start:
    start = _field(message, "start", dict, "start")
    params = start.get("customParameters") or {}
    if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
        raise ProtocolError("invalid_field", "start.customParameters must map names to strings")
    tracks = start.get("tracks") or []
    if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
        raise ProtocolError("invalid_field", "start.tracks must be a list of strings")
    return Start(
        stream_sid=stream_sid,
        call_sid=_field(start, "callSid", str, "start"),
        account_sid=_optional_str(start, "accountSid", "start"),
        tracks=tuple(tracks),
        custom_parameters=dict(params),
        media_format=dict(_field(start, "mediaFormat", dict, "start")),
    )


def _parse_media(message: dict[str, Any], stream_sid: str) -> Media:
    media = _field(message, "media", dict, "media")
    text = _field(media, "payload", str, "media")
    try:
        payload = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII text
        raise ProtocolError("invalid_base64", "media.payload is not base64") from None
    return Media(
        stream_sid=stream_sid,
        track=_optional_str(media, "track", "media", "inbound"),
        chunk=_int_string(media, "chunk", "media"),
        timestamp_ms=_int_string(media, "timestamp", "media"),
        payload=payload,
    )


def parse_twilio_message(text: str) -> TwilioEvent | None:
    """One inbound text frame → a typed event; None for an event we do not know (to ignore).

    Anything else raises `ProtocolError` (and nothing else, whatever the frame holds).
    """
    try:
        message = loads_bounded(text)
    except WireJSONError as exc:
        raise ProtocolError("invalid_json", exc.detail) from None
    if not isinstance(message, dict):
        raise ProtocolError("invalid_json", "a message must be a JSON object")
    event = message.get("event")
    if not isinstance(event, str):
        raise ProtocolError("invalid_field", "event must be a string")
    if event == "connected":
        return Connected(
            protocol=_optional_str(message, "protocol", event), version=_optional_str(message, "version", event)
        )
    if event not in ("start", "media", "dtmf", "mark", "stop"):
        return None
    stream_sid = _field(message, "streamSid", str, event)
    if event == "start":
        return _parse_start(message, stream_sid)
    if event == "media":
        return _parse_media(message, stream_sid)
    if event == "dtmf":
        digit = _field(_field(message, "dtmf", dict, event), "digit", str, "dtmf")
        if digit not in DTMF_DIGITS:
            raise ProtocolError("invalid_field", "dtmf.digit must be one of 0-9, * and #")
        return Dtmf(stream_sid=stream_sid, digit=digit)
    if event == "mark":
        name = _field(_field(message, "mark", dict, event), "name", str, "mark")
        if not is_mark_name(name):
            # Twilio echoes the names the bridge sent, `<epoch>.<seq>`; nothing else is an echo.
            raise ProtocolError("invalid_field", "mark.name is not a mark the bridge sends")
        return MarkEcho(stream_sid=stream_sid, name=name)
    return Stop(stream_sid=stream_sid)


def connected_message() -> str:
    return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def start_message(
    stream_sid: str, call_sid: str, account_sid: str, custom_parameters: dict[str, str], sequence: int = 1
) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": str(sequence),
            "streamSid": stream_sid,
            "start": {
                "streamSid": stream_sid,
                "accountSid": account_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "customParameters": custom_parameters,
                "mediaFormat": TWILIO_MEDIA_FORMAT,
            },
        }
    )


def inbound_media_message(stream_sid: str, payload: bytes, chunk: int, timestamp_ms: int, sequence: int) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(sequence),
            "streamSid": stream_sid,
            "media": {
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str(timestamp_ms),
                "payload": base64.b64encode(payload).decode("ascii"),
            },
        }
    )


def mark_echo_message(stream_sid: str, name: str, sequence: int) -> str:
    return json.dumps(
        {"event": "mark", "sequenceNumber": str(sequence), "streamSid": stream_sid, "mark": {"name": name}}
    )


def dtmf_message(stream_sid: str, digit: str, sequence: int) -> str:
    return json.dumps(
        {
            "event": "dtmf",
            "sequenceNumber": str(sequence),
            "streamSid": stream_sid,
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
    )


def stop_message(stream_sid: str, call_sid: str, account_sid: str, sequence: int) -> str:
    return json.dumps(
        {
            "event": "stop",
            "sequenceNumber": str(sequence),
            "streamSid": stream_sid,
            "stop": {"accountSid": account_sid, "callSid": call_sid},
        }
    )


# --- bridge → Twilio ---------------------------------------------------------------------------


def media_message(stream_sid: str, mulaw: bytes) -> str:
    """Outbound audio: base64 μ-law 8 kHz, no file headers."""
    # Assembled, not json.dumps'ed: this runs for every chunk, and base64 never needs escaping
    # (json.dumps would scan every character of the payload for it).
    payload = base64.b64encode(mulaw).decode("ascii")
    return f'{{"event":"media","streamSid":{json.dumps(stream_sid)},"media":{{"payload":"{payload}"}}}}'


def mark_message(stream_sid: str, name: str) -> str:
    return f'{{"event":"mark","streamSid":{json.dumps(stream_sid)},"mark":{{"name":{json.dumps(name)}}}}}'


def clear_message(stream_sid: str) -> str:
    return json.dumps({"event": "clear", "streamSid": stream_sid})


@dataclass(frozen=True, slots=True)
class OutboundMedia:
    payload: bytes


@dataclass(frozen=True, slots=True)
class OutboundMark:
    name: str


@dataclass(frozen=True, slots=True)
class OutboundClear:
    pass


OutboundEvent = OutboundMedia | OutboundMark | OutboundClear


def parse_outbound_message(text: str, stream_sid: str) -> OutboundEvent:
    """What Twilio does with a frame from the bridge: the simulator's side of the edge."""
    try:
        message = loads_bounded(text)
    except WireJSONError as exc:
        raise ProtocolError("invalid_json", exc.detail) from None
    if not isinstance(message, dict):
        raise ProtocolError("invalid_json", "a message must be a JSON object")
    if message.get("streamSid") != stream_sid:
        raise ProtocolError("wrong_stream_sid", f"expected {stream_sid}")
    event = message.get("event")
    if event == "media":
        media = _field(message, "media", dict, "media")
        text = _field(media, "payload", str, "media")
        try:
            return OutboundMedia(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):  # ValueError: non-ASCII text
            raise ProtocolError("invalid_base64", "media.payload is not base64") from None
    if event == "mark":
        return OutboundMark(_field(_field(message, "mark", dict, "mark"), "name", str, "mark"))
    if event == "clear":
        return OutboundClear()
    raise ProtocolError("unknown_event", f"Twilio does not accept event {event!r}")
