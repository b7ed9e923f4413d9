"""The recorded-call format: what `bridge.recording` writes and `bridge.replay` reads.

A call is a directory `<dir>/<CallSid>/`:

- `events.jsonl`: one line per event, in the order they happened, e.g.
  `{"t":1.2345,"ch":"twilio","dir":"in","msg":{...}}`. `t` is seconds on the bridge's monotonic
  clock since the call's first event; `ch` is `twilio` or `upstream` (with `s`, the upstream
  session's number: a reconnect opens session 1); `dir` is `in` (to the bridge), `out` (from the
  bridge), `open`, `connect_failed` (with `status`, `error`) or `close` (with `by`, `code`).
  `msg` is the frame's JSON; a frame that is not a JSON object is kept as `text` (first 1 KiB).
- Audio is never inlined: a base64 audio string in `msg` is replaced by a reference
  `{"$wav": "caller.wav", "offset": 1234, "samples": 160}` (sample offset and length in that
  file), or `{"$wav": null, "samples": 160}` when audio is not stored.
- `caller.wav` (Twilio → bridge, 8 kHz μ-law), `agent.wav` (upstream → bridge: 24 kHz PCM16, or
  8 kHz μ-law in G.711 mode) and `to_caller.wav` (bridge → Twilio, 8 kHz μ-law): each exactly the
  bytes that crossed the wire, so a replay sends the very same audio. Caller audio sent on to the
  model is not stored (it is caller.wav transcoded): its references carry lengths only.
- `meta.json`: format, CallSid, dialect, upstream, audio mode, profile, versions, start time,
  outcome, redaction.

Redaction (`VOICE_BRIDGE_RECORD_TRANSCRIPTS=0`) replaces transcripts and text content (message
text, transcript deltas, tool arguments and outputs, keypad digits) by `[redacted]`. The caller's
number and the stream token are always masked.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from voice_codecs import TWILIO_RATE, AudioMode

from .dialects import APPEND_TYPE, AUDIO_DELTA_TYPES
from .profiles import AgentProfile

FORMAT = "voice-bridge-recording/1"
EVENTS_FILE = "events.jsonl"
META_FILE = "meta.json"
REDACTED = "[redacted]"
MASKED = "[masked]"
MAX_TEXT_CHARS = 1024  # of a frame that is not JSON

TWILIO = "twilio"
UPSTREAM = "upstream"
IN, OUT = "in", "out"
# AUDIO_DELTA_TYPES and APPEND_TYPE (the upstream events that carry audio) come from dialects.py.


@dataclass(frozen=True, slots=True)
class Track:
    """One WAV file of a recording: where a direction's audio goes, in its wire format."""

    file: str
    encoding: str  # "mulaw" (8-bit G.711) or "pcm16" (little-endian)
    rate: int

    @property
    def sample_bytes(self) -> int:
        return 1 if self.encoding == "mulaw" else 2

    @property
    def silence_byte(self) -> int:
        return 0xFF if self.encoding == "mulaw" else 0


CALLER = Track("caller.wav", "mulaw", TWILIO_RATE)
TO_CALLER = Track("to_caller.wav", "mulaw", TWILIO_RATE)
AGENT_PCM = Track("agent.wav", "pcm16", AudioMode.PCM24K.model_rate)
AGENT_G711 = Track("agent.wav", "mulaw", AudioMode.G711.model_rate)
_TO_MODEL = {
    AudioMode.G711: Track("", "mulaw", AudioMode.G711.model_rate),
    AudioMode.PCM24K: Track("", "pcm16", AudioMode.PCM24K.model_rate),
}


def recorded_mode(audio_mode: str) -> AudioMode:
    """A recording's `audio_mode` as written in its meta.json: "g711", else (as always) pcm24k."""
    return AudioMode.G711 if audio_mode == AudioMode.G711 else AudioMode.PCM24K


def agent_track(audio_mode: str) -> Track:
    return AGENT_G711 if recorded_mode(audio_mode) is AudioMode.G711 else AGENT_PCM


def to_model_track(audio_mode: str) -> Track:
    """The caller's audio as sent on to the model (lengths only, never stored)."""
    return _TO_MODEL[recorded_mode(audio_mode)]


def audio_slot(channel: str, direction: str, msg: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """Where a message carries base64 audio: (the object holding it, its key), or None."""
    if channel == TWILIO:
        media = msg.get("media")
        if msg.get("event") == "media" and isinstance(media, dict) and "payload" in media:
            return media, "payload"
        return None
    kind = msg.get("type")
    if direction == IN and kind in AUDIO_DELTA_TYPES and "delta" in msg:
        return msg, "delta"
    if direction == OUT and kind == APPEND_TYPE and "audio" in msg:
        return msg, "audio"
    return None


def track_for(channel: str, direction: str, audio_mode: str) -> Track | None:
    """The file a direction's audio goes to; None for audio that is never stored."""
    if channel == TWILIO:
        return CALLER if direction == IN else TO_CALLER
    return agent_track(audio_mode) if direction == IN else None


def decode_audio(value: Any) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def is_audio_ref(value: Any) -> bool:
    return isinstance(value, dict) and "$wav" in value


# --- redaction -------------------------------------------------------------------------------

_TEXT_KEYS = frozenset({"transcript", "text", "arguments", "output"})
_MASKED_PARAMETERS = ("StreamToken", "From")


def redact_text(channel: str, msg: dict[str, Any]) -> None:
    """Transcripts and text content → `[redacted]`, in place (instructions and names stay)."""
    if channel == TWILIO:
        dtmf = msg.get("dtmf")
        if isinstance(dtmf, dict) and "digit" in dtmf:
            dtmf["digit"] = REDACTED
        return
    kind = str(msg.get("type", ""))
    if isinstance(msg.get("delta"), str) and ("transcript" in kind or "text" in kind or "arguments" in kind):
        msg["delta"] = REDACTED
    _redact_keys(msg)


def _redact_keys(value: Any) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            if key in _TEXT_KEYS and isinstance(inner, str):
                value[key] = REDACTED
            else:
                _redact_keys(inner)
    elif isinstance(value, list):
        for inner in value:
            _redact_keys(inner)


def mask_identifiers(channel: str, msg: dict[str, Any]) -> None:
    """The stream token (a credential) and the caller's number (personal data), always."""
    if channel != TWILIO:
        return
    start = msg.get("start")
    params = start.get("customParameters") if isinstance(start, dict) else None
    if isinstance(params, dict):
        for name in _MASKED_PARAMETERS:
            if name in params:
                params[name] = MASKED


# --- private files: recordings hold calls' audio and words ----------------------------------

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def make_private_dir(path: Path, exist_ok: bool = False) -> None:
    """`mkdir` with mode 0700 whatever the umask (the mode is set again after creation); an
    existing folder (exist_ok) is left as it is. Missing parents are made like `mkdir -p` does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=PRIVATE_DIR_MODE)
    except FileExistsError:
        if not exist_ok or not path.is_dir():
            raise
        return
    os.chmod(path, PRIVATE_DIR_MODE)


def open_private(path: Path, mode: str = "w") -> Any:
    """`open(path, mode)` for writing ("w", "wb"), the file created (or truncated) with mode 0600
    whatever the umask, and never through a symlink planted at `path`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
        return os.fdopen(fd, mode) if "b" in mode else os.fdopen(fd, mode, encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise


# --- WAV files (PCM16 and G.711 μ-law, written as they grow) ----------------------------------

_WAVE_PCM = 1
_WAVE_MULAW = 7


class WavAppender:
    """A mono WAV file written by appends; the header's sizes are kept right at every `sync()`."""

    def __init__(self, path: Path, track: Track) -> None:
        self.track = track
        self.samples = 0
        self._bytes = 0
        self._file: BinaryIO = open_private(path, "wb")  # closed in close()
        fmt_tag = _WAVE_MULAW if track.encoding == "mulaw" else _WAVE_PCM
        width = track.sample_bytes
        fmt = struct.pack("<HHIIHH", fmt_tag, 1, track.rate, track.rate * width, width, 8 * width)
        if fmt_tag == _WAVE_MULAW:
            fmt += struct.pack("<H", 0)  # cbSize: non-PCM formats carry it
        header = b"RIFF" + struct.pack("<I", 0) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
        self._fact_at: int | None = None
        if fmt_tag == _WAVE_MULAW:  # non-PCM files carry a sample count ("fact")
            self._fact_at = len(header) + 8
            header += b"fact" + struct.pack("<II", 4, 0)
        self._data_at = len(header) + 4
        header += b"data" + struct.pack("<I", 0)
        self._file.write(header)
        self._header_bytes = len(header)

    def append(self, data: bytes) -> tuple[int, int]:
        """Append wire-format audio; returns (offset, samples) in samples."""
        offset = self.samples
        width = self.track.sample_bytes
        if len(data) % width:
            data += bytes(width - len(data) % width)  # an odd PCM16 byte: padded, never seen in practice
        self._file.write(data)
        self._bytes += len(data)
        self.samples += len(data) // width
        return offset, len(data) // width

    def sync(self) -> None:
        """Write the sizes into the header and hand the data to the OS."""
        end = self._file.tell()
        self._file.seek(4)
        self._file.write(struct.pack("<I", end - 8))
        if self._fact_at is not None:
            self._file.seek(self._fact_at)
            self._file.write(struct.pack("<I", self.samples))
        self._file.seek(self._data_at)
        self._file.write(struct.pack("<I", self._bytes))
        self._file.seek(end)
        self._file.flush()

    def close(self) -> None:
        try:
            self.sync()
        finally:
            self._file.close()


@dataclass(frozen=True, slots=True)
class WavData:
    encoding: str
    rate: int
    data: bytes


def read_wav(path: Path) -> WavData:
    """A mono PCM16 or μ-law WAV (the stdlib `wave` reads PCM only). A size the writer had no
    chance to fix (a crash) is read as "up to the end of the file"."""
    raw = path.read_bytes()
    if raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a WAV file")
    pos = 12
    encoding: str | None = None
    rate = 0
    while pos + 8 <= len(raw):
        chunk, size = raw[pos : pos + 4], struct.unpack("<I", raw[pos + 4 : pos + 8])[0]
        body = pos + 8
        if chunk == b"fmt ":
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", raw[body : body + 16])
            if channels != 1 or (tag, bits) not in ((_WAVE_PCM, 16), (_WAVE_MULAW, 8)):
                raise ValueError(f"{path}: expected mono PCM16 or μ-law, got format {tag}, {channels} ch, {bits} bit")
            encoding = "pcm16" if tag == _WAVE_PCM else "mulaw"
        elif chunk == b"data":
            if encoding is None:
                raise ValueError(f"{path}: data before fmt")
            end = len(raw) if size == 0 or body + size > len(raw) else body + size
            return WavData(encoding, rate, raw[body:end])
        pos = body + size + (size & 1)
    raise ValueError(f"{path}: no data chunk")


# --- profiles, as meta.json keeps them (the shape of a profiles.toml table) -------------------


def profile_record(profile: AgentProfile) -> dict[str, Any]:
    table: dict[str, Any] = {
        "name": profile.name,
        "instructions": profile.instructions,
        "voice": {"name": profile.voice.name, "type": profile.voice.type},
        "noise_suppression": profile.noise_suppression,
        "echo_cancellation": profile.echo_cancellation,
        "tools": list(profile.tools),
        "dtmf": profile.dtmf,
    }
    if profile.greeting is not None:
        table["greeting"] = profile.greeting
    if profile.max_call_seconds is not None:
        table["max_call_seconds"] = profile.max_call_seconds
    if profile.transfer_number is not None:
        table["transfer_number"] = profile.transfer_number
    td = profile.turn_detection
    if td is not None:
        turn: dict[str, Any] = {"type": td.kind}
        for key in ("threshold", "prefix_padding_ms", "silence_duration_ms", "eagerness", "remove_filler_words"):
            if getattr(td, key) is not None:
                turn[key] = getattr(td, key)
        if td.languages:
            turn["languages"] = list(td.languages)
        table["turn_detection"] = turn
    if profile.transcription is not None:
        table["transcription"] = {"model": profile.transcription.model}
        if profile.transcription.language is not None:
            table["transcription"]["language"] = profile.transcription.language
    return table


# --- reading a recording ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    t: float
    channel: str  # "twilio" or "upstream"
    direction: str  # "in", "out", "open", "connect_failed", "close"
    session: int | None = None  # upstream session number
    msg: dict[str, Any] | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # text, by, code, reason, status, error

    @property
    def kind(self) -> str:
        """The message's type (`event` for Twilio, `type` upstream), or the lifecycle direction."""
        if self.msg is None:
            return self.direction if self.direction != IN and self.direction != OUT else "<not json>"
        key = "event" if self.channel == TWILIO else "type"
        return str(self.msg.get(key, "<untyped>"))


class RecordingError(ValueError):
    """A directory that is not a readable recording."""


@dataclass(slots=True)
class Recording:
    path: Path
    meta: dict[str, Any]
    events: list[RecordedEvent]
    tracks: dict[str, WavData]  # by file name; missing when audio was not stored

    @property
    def audio_mode(self) -> str:
        return str(self.meta.get("audio_mode", AudioMode.PCM24K.value))

    def audio(self, ref: dict[str, Any]) -> bytes | None:
        """The bytes a reference points at; None when the recording has no audio for it."""
        name = ref.get("$wav")
        wav = self.tracks.get(name) if isinstance(name, str) else None
        if wav is None or "offset" not in ref:
            return None
        width = 1 if wav.encoding == "mulaw" else 2
        start = int(ref["offset"]) * width
        return wav.data[start : start + int(ref["samples"]) * width]

    def audio_or_silence(self, ref: dict[str, Any], track: Track) -> bytes:
        data = self.audio(ref)
        if data is not None:
            return data
        return bytes([track.silence_byte]) * (int(ref.get("samples", 0)) * track.sample_bytes)

    def inline(self, event: RecordedEvent) -> dict[str, Any]:
        """The event's message as it went over the wire: audio references replaced by base64 again."""
        assert event.msg is not None
        msg = json.loads(json.dumps(event.msg))
        slot = audio_slot(event.channel, event.direction, msg)
        if slot is not None and is_audio_ref(slot[0][slot[1]]):
            track = track_for(event.channel, event.direction, self.audio_mode) or to_model_track(self.audio_mode)
            holder, key = slot
            holder[key] = base64.b64encode(self.audio_or_silence(holder[key], track)).decode("ascii")
        return msg

    def of(self, channel: str, session: int | None = None) -> Iterator[RecordedEvent]:
        for event in self.events:
            if event.channel == channel and (session is None or event.session == session):
                yield event

    @property
    def sessions(self) -> list[int]:
        return sorted({e.session for e in self.events if e.channel == UPSTREAM and e.session is not None})


def load_recording(path: str | Path) -> Recording:
    directory = Path(path)
    events_path, meta_path = directory / EVENTS_FILE, directory / META_FILE
    if not events_path.is_file() or not meta_path.is_file():
        raise RecordingError(f"{directory}: not a recorded call (needs {EVENTS_FILE} and {META_FILE})")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RecordingError(f"{meta_path}: {exc}") from None
    if meta.get("format") != FORMAT:
        raise RecordingError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    events: list[RecordedEvent] = []
    with events_path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                events.append(
                    RecordedEvent(
                        t=float(entry.pop("t")),
                        channel=str(entry.pop("ch")),
                        direction=str(entry.pop("dir")),
                        session=entry.pop("s", None),
                        msg=entry.pop("msg", None),
                        fields=entry,
                    )
                )
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                if number > 1 and not line.endswith("\n"):
                    break  # the last line of a recording cut short (a crash): the rest is whole
                raise RecordingError(f"{events_path}:{number}: {exc}") from None
    events.sort(key=lambda e: e.t)  # stable: equal times keep the order they were written in
    tracks = {}
    for name in (CALLER.file, TO_CALLER.file, AGENT_PCM.file):
        if (directory / name).is_file():
            tracks[name] = read_wav(directory / name)
    return Recording(directory, meta, events, tracks)

