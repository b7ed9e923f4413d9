"""How a replayed call differs from its recording (pure: two `Recording`s in, differences out).

What is compared is what the bridge sent, each way:

- to Twilio: the sequence of `media`, `mark`, `clear` and the bridge's close (with its code);
- to each upstream session: its client events (`session.update`, `response.create`,
  `response.cancel`, `conversation.item.truncate`, `conversation.item.create`, ...) and the bridge's
  close. Caller audio (`input_audio_buffer.append`, 50 a second) is compared by how much audio
  it carried, because how many frames reach the model before a call ends depends on timing;
- the upstream connection attempts (consecutive failures count once: the bridge's retries are
  randomised);
- the call's outcome (its end reason).

Sequences are aligned by event type (difflib), so a missing or extra event is reported where it
is, in order. Aligned events are compared field by field after normalising what legitimately
differs from run to run: ids (renamed in order of appearance), event ids, Twilio sids, sequence
numbers and timestamps, stream tokens, the caller's number, and audio (compared separately).
Each `conversation.item.truncate`'s `audio_end_ms` is compared as drift in ms, and the audio the
caller heard (media chunks whose mark came back without a `clear` in between) as an SNR.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from voice_codecs import ulaw_decode

from ...playback import PROBE_PREFIX
from ...recording_format import (
    APPEND_TYPE,
    IN,
    OUT,
    TWILIO,
    UPSTREAM,
    RecordedEvent,
    Recording,
    is_audio_ref,
    redact_text,
    to_model_track,
)

DROPPED_KEYS = frozenset({"event_id", "sequenceNumber", "timestamp", "chunk"})
VARYING_KEYS = frozenset({"streamSid", "callSid", "accountSid", "CallSid", "StreamToken", "From"})
TRUNCATE = "conversation.item.truncate"


@dataclass(frozen=True, slots=True)
class Tolerances:
    max_drift_ms: float = 40.0  # |replayed - recorded| audio_end_ms of each truncate
    min_snr_db: float = 20.0  # of the audio the caller heard
    max_event_diffs: int = 0  # missing + extra events
    max_field_diffs: int = 0  # differing fields of aligned events
    max_caller_audio_diff_ms: float = 200.0  # caller audio sent on to the model, per session


@dataclass(frozen=True, slots=True)
class EventDiff:
    stream: str
    change: str  # "missing" (recorded, not replayed) or "extra" (replayed, not recorded)
    index: int  # position in its sequence
    kind: str
    t: float

    def __str__(self) -> str:
        return f"{self.stream}: {self.change} {self.kind} (#{self.index}, t={self.t:.3f} s)"


@dataclass(frozen=True, slots=True)
class FieldDiff:
    stream: str
    index: int
    kind: str
    path: str
    recorded: Any
    replayed: Any

    def __str__(self) -> str:
        return f"{self.stream} #{self.index} {self.kind}: {self.path}: {_short(self.recorded)} → {_short(self.replayed)}"


@dataclass(frozen=True, slots=True)
class Drift:
    stream: str
    index: int
    recorded_ms: int
    replayed_ms: int

    @property
    def ms(self) -> int:
        return abs(self.replayed_ms - self.recorded_ms)


@dataclass(frozen=True, slots=True)
class StreamCount:
    name: str
    recorded: int
    replayed: int


@dataclass(slots=True)
class Comparison:
    outcome: tuple[str | None, str | None]  # (recorded, replayed) end reasons
    streams: list[StreamCount] = field(default_factory=list)
    event_diffs: list[EventDiff] = field(default_factory=list)
    field_diffs: list[FieldDiff] = field(default_factory=list)
    drifts: list[Drift] = field(default_factory=list)
    snr_db: float | None = None  # None: no heard audio to compare (or no audio recorded)
    heard_ms: float = 0.0
    caller_audio_ms: list[tuple[str, float, float]] = field(default_factory=list)  # (stream, recorded, replayed)

    @property
    def max_drift_ms(self) -> int:
        return max((d.ms for d in self.drifts), default=0)

    def failures(self, tolerances: Tolerances) -> list[str]:
        found = []
        if self.outcome[0] != self.outcome[1]:
            found.append(f"the call ended {self.outcome[1]!r}, recorded {self.outcome[0]!r}")
        if len(self.event_diffs) > tolerances.max_event_diffs:
            found.append(f"{len(self.event_diffs)} missing or extra events (allowed {tolerances.max_event_diffs})")
        if len(self.field_diffs) > tolerances.max_field_diffs:
            found.append(f"{len(self.field_diffs)} differing fields (allowed {tolerances.max_field_diffs})")
        if self.max_drift_ms > tolerances.max_drift_ms:
            found.append(f"truncate audio_end_ms drifted {self.max_drift_ms} ms (allowed {tolerances.max_drift_ms:g})")
        if self.snr_db is not None and self.snr_db < tolerances.min_snr_db:
            found.append(f"heard audio SNR {self.snr_db:.1f} dB (at least {tolerances.min_snr_db:g} wanted)")
        for stream, recorded, replayed in self.caller_audio_ms:
            if abs(recorded - replayed) > tolerances.max_caller_audio_diff_ms:
                found.append(
                    f"{stream}: caller audio {replayed:.0f} ms, recorded {recorded:.0f} ms "
                    f"(allowed ±{tolerances.max_caller_audio_diff_ms:g})"
                )
        return found

    def summary(self, tolerances: Tolerances, limit: int = 20) -> str:
        lines = [f"  outcome                 {self.outcome[1]} (recorded {self.outcome[0]})"]
        for count in self.streams:
            lines.append(f"  {count.name:<23} {count.recorded} recorded, {count.replayed} replayed")
        lines.append(f"  missing/extra events    {len(self.event_diffs)} (allowed {tolerances.max_event_diffs})")
        lines += [f"    {diff}" for diff in self.event_diffs[:limit]]
        lines.append(f"  differing fields        {len(self.field_diffs)} (allowed {tolerances.max_field_diffs})")
        lines += [f"    {diff}" for diff in self.field_diffs[:limit]]
        if self.drifts:
            pairs = ", ".join(f"{d.recorded_ms}→{d.replayed_ms}" for d in self.drifts)
            limit_ms = f"{tolerances.max_drift_ms:g}"
            lines.append(f"  truncate drift          max {self.max_drift_ms} ms (allowed {limit_ms}): audio_end_ms {pairs}")
        else:
            lines.append("  truncate drift          no truncations")
        if self.snr_db is None:
            lines.append("  heard audio SNR         n/a (no heard audio recorded)")
        else:
            snr = "identical" if math.isinf(self.snr_db) else f"{self.snr_db:.1f} dB"
            heard = f"over {self.heard_ms / 1000:.2f} s (at least {tolerances.min_snr_db:g} dB)"
            lines.append(f"  heard audio SNR         {snr} {heard}")
        for stream, recorded, replayed in self.caller_audio_ms:
            lines.append(f"  caller audio to model   {stream}: {replayed / 1000:.2f} s (recorded {recorded / 1000:.2f} s)")
        return "\n".join(lines)

    def to_json(self, tolerances: Tolerances) -> dict[str, Any]:
        return {
            "passed": not self.failures(tolerances),
            "failures": self.failures(tolerances),
            "outcome": {"recorded": self.outcome[0], "replayed": self.outcome[1]},
            "streams": [{"name": c.name, "recorded": c.recorded, "replayed": c.replayed} for c in self.streams],
            "event_diffs": [str(d) for d in self.event_diffs],
            "field_diffs": [str(d) for d in self.field_diffs],
            "truncate_drift_ms": [{"recorded": d.recorded_ms, "replayed": d.replayed_ms} for d in self.drifts],
            "heard_snr_db": None if self.snr_db is None else (None if math.isinf(self.snr_db) else round(self.snr_db, 2)),
            "heard_identical": self.snr_db is not None and math.isinf(self.snr_db),
            "heard_ms": round(self.heard_ms, 1),
            "caller_audio_ms": [{"stream": s, "recorded": r, "replayed": p} for s, r, p in self.caller_audio_ms],
        }


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- what the bridge sent --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Sent:
    kind: str
    event: RecordedEvent
    more: tuple[RecordedEvent, ...] = ()  # the further media frames of a run (see _twilio_sent)


def _is_probe(msg: dict[str, Any]) -> bool:
    mark = msg.get("mark")
    return isinstance(mark, dict) and str(mark.get("name", "")).startswith(PROBE_PREFIX)


def _twilio_sent(recording: Recording) -> tuple[list[_Sent], set[int]]:
    """Bridge → Twilio, and which of its media chunks the caller heard (their mark came back
    before the bridge sent a `clear`).

    Consecutive `media` frames count as one chunk: how the bridge frames its audio (one frame
    per model delta, or 20 ms frames) is not behaviour; the audio and the marks around it are."""
    sent: list[_Sent] = []
    heard: set[int] = set()
    last_media: int | None = None
    pending: dict[str, int | None] = {}  # mark name → the media chunk it follows
    for event in recording.of(TWILIO):
        if event.kind == "mark" and event.msg is not None and _is_probe(event.msg):
            continue  # round-trip probes: when they go depends on timing alone
        if event.direction == OUT and event.msg is not None:
            kind = event.kind
            if kind == "media":
                if sent and sent[-1].kind == "media":
                    sent[-1] = _Sent("media", sent[-1].event, (*sent[-1].more, event))
                    continue
                last_media = len(sent)
            elif kind == "mark":
                pending[str(event.msg.get("mark", {}).get("name"))] = last_media
            elif kind == "clear":
                pending.clear()
            sent.append(_Sent(kind, event))
        elif event.direction == IN and event.kind == "mark" and event.msg is not None:
            chunk = pending.pop(str(event.msg.get("mark", {}).get("name")), None)
            if chunk is not None:
                heard.add(chunk)
        elif event.direction == "close" and event.fields.get("by") == "bridge":
            sent.append(_Sent(f"close {event.fields.get('code')}", event))
    return sent, heard


def _opened_sessions(recording: Recording) -> list[int]:
    return [s for s in recording.sessions if any(e.direction == "open" for e in recording.of(UPSTREAM, s))]


def _upstream_sent(recording: Recording, session: int) -> tuple[list[_Sent], float]:
    """Bridge → one upstream session (caller audio apart), and the caller audio in ms."""
    sent: list[_Sent] = []
    samples = 0
    for event in recording.of(UPSTREAM, session):
        if event.direction == OUT and event.msg is not None:
            if event.kind == APPEND_TYPE:
                audio = event.msg.get("audio")
                samples += int(audio.get("samples", 0)) if is_audio_ref(audio) else 0
                continue
            sent.append(_Sent(event.kind, event))
        elif event.direction == "close" and event.fields.get("by") == "bridge":
            sent.append(_Sent("close", event))
    return sent, samples * 1000.0 / to_model_track(recording.audio_mode).rate


def _connects(recording: Recording) -> list[_Sent]:
    attempts: list[_Sent] = []
    for event in recording.of(UPSTREAM):
        if event.direction == "open":
            attempts.append(_Sent("open", event))
        elif event.direction == "connect_failed":
            kind = f"connect_failed {event.fields.get('status')}"
            if not attempts or attempts[-1].kind != kind:
                attempts.append(_Sent(kind, event))
    return attempts


def heard_chunks(recording: Recording) -> list[tuple[tuple[RecordedEvent, ...], bool]]:
    """The bridge's audio to Twilio as the comparison sees it: runs of `media` frames, each with
    whether the caller heard it (its mark came back before a `clear`). The call inspector uses it."""
    sent, heard = _twilio_sent(recording)
    return [((s.event, *s.more), i in heard) for i, s in enumerate(sent) if s.kind == "media"]


def truncations(recording: Recording) -> list[RecordedEvent]:
    """Every `conversation.item.truncate` the bridge sent, per opened session in order: the
    events whose `audio_end_ms` the comparison checks for drift."""
    return [s.event for n in _opened_sessions(recording) for s in _upstream_sent(recording, n)[0] if s.kind == TRUNCATE]


# --- normalising -----------------------------------------------------------------------------


class _Ids:
    """Ids renamed in order of first appearance: structure kept, values ignored."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}

    def __call__(self, value: str) -> str:
        return self._names.setdefault(value, f"<id {len(self._names) + 1}>")


def normalise(value: Any, ids: _Ids, key: str = "") -> Any:
    if is_audio_ref(value):
        return "<audio>"
    if isinstance(value, dict):
        return {k: normalise(v, ids, k) for k, v in value.items() if k not in DROPPED_KEYS}
    if isinstance(value, list):
        return [normalise(v, ids) for v in value]
    if key in VARYING_KEYS:
        return "<varies>"
    if isinstance(value, str) and (key == "id" or key.endswith("_id")):
        return ids(value)
    return value


def _normalised(event: RecordedEvent, ids: _Ids, redact: bool) -> Any:
    if event.msg is None:
        return {k: v for k, v in event.fields.items() if k != "reason"}
    msg = normalise(event.msg, ids)
    if redact:
        redact_text(event.channel, msg)
    if msg.get("type") == TRUNCATE:
        msg.pop("audio_end_ms", None)  # compared as drift
    return msg


def _field_diffs(recorded: Any, replayed: Any, path: str = "$") -> Iterator[tuple[str, Any, Any]]:
    if isinstance(recorded, dict) and isinstance(replayed, dict):
        for key in sorted(set(recorded) | set(replayed)):
            if key not in replayed:
                yield f"{path}.{key}", recorded[key], "<absent>"
            elif key not in recorded:
                yield f"{path}.{key}", "<absent>", replayed[key]
            else:
                yield from _field_diffs(recorded[key], replayed[key], f"{path}.{key}")
    elif isinstance(recorded, list) and isinstance(replayed, list) and len(recorded) == len(replayed):
        for i, (a, b) in enumerate(zip(recorded, replayed, strict=True)):
            yield from _field_diffs(a, b, f"{path}[{i}]")
    elif recorded != replayed:
        yield path, recorded, replayed


# --- comparing -------------------------------------------------------------------------------


def _align(name: str, recorded: list[_Sent], replayed: list[_Sent], into: Comparison) -> list[tuple[int, int]]:
    into.streams.append(StreamCount(name, len(recorded), len(replayed)))
    matcher = difflib.SequenceMatcher(None, [s.kind for s in recorded], [s.kind for s in replayed], autojunk=False)
    pairs: list[tuple[int, int]] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            pairs += list(zip(range(i1, i2), range(j1, j2), strict=True))
            continue
        into.event_diffs += [EventDiff(name, "missing", i, recorded[i].kind, recorded[i].event.t) for i in range(i1, i2)]
        into.event_diffs += [EventDiff(name, "extra", j, replayed[j].kind, replayed[j].event.t) for j in range(j1, j2)]
    return pairs


def _compare_fields(
    name: str, recorded: list[_Sent], replayed: list[_Sent], pairs: list[tuple[int, int]], into: Comparison, redact: bool
) -> None:
    ids_recorded, ids_replayed = _Ids(), _Ids()
    for i, j in pairs:
        a, b = recorded[i].event, replayed[j].event
        for path, x, y in _field_diffs(_normalised(a, ids_recorded, redact), _normalised(b, ids_replayed, redact)):
            into.field_diffs.append(FieldDiff(name, i, recorded[i].kind, path, x, y))
        if recorded[i].kind == TRUNCATE and a.msg is not None and b.msg is not None:
            into.drifts.append(Drift(name, i, int(a.msg.get("audio_end_ms", 0)), int(b.msg.get("audio_end_ms", 0))))


def _pcm(recording: Recording, chunk: _Sent) -> np.ndarray | None:
    """The audio of a run of media frames, decoded; None if any of it is not in the recording."""
    parts = []
    for event in (chunk.event, *chunk.more):
        payload = (event.msg or {}).get("media", {}).get("payload")
        audio = recording.audio(payload) if is_audio_ref(payload) else None
        if audio is None:
            return None
        parts.append(audio)
    return ulaw_decode(b"".join(parts)).astype(np.float64)


def compare(recorded: Recording, replayed: Recording) -> Comparison:
    """Everything the bridge sent in `replayed` against what it sent in `recorded`."""
    redact = bool(recorded.meta.get("redaction", {}).get("transcripts") or replayed.meta.get("redaction", {}).get("transcripts"))
    result = Comparison(
        outcome=((recorded.meta.get("outcome") or {}).get("end_reason"), (replayed.meta.get("outcome") or {}).get("end_reason"))
    )

    twilio_recorded, heard = _twilio_sent(recorded)
    twilio_replayed, _ = _twilio_sent(replayed)
    pairs = _align("bridge→twilio", twilio_recorded, twilio_replayed, result)
    _compare_fields("bridge→twilio", twilio_recorded, twilio_replayed, pairs, result, redact)
    signal = noise = 0.0
    samples = 0
    for i, j in pairs:
        if twilio_recorded[i].kind != "media" or i not in heard:
            continue
        reference, replica = _pcm(recorded, twilio_recorded[i]), _pcm(replayed, twilio_replayed[j])
        if reference is None or replica is None:
            continue
        n = min(len(reference), len(replica))
        signal += float(np.sum(reference**2))
        noise += float(np.sum((reference[:n] - replica[:n]) ** 2) + np.sum(reference[n:] ** 2) + np.sum(replica[n:] ** 2))
        samples += len(reference)
    if samples:
        result.snr_db = math.inf if noise == 0 else (-math.inf if signal == 0 else 10 * math.log10(signal / noise))
        result.heard_ms = samples / 8.0

    _align("upstream connects", _connects(recorded), _connects(replayed), result)
    sessions_recorded, sessions_replayed = _opened_sessions(recorded), _opened_sessions(replayed)
    for n in range(max(len(sessions_recorded), len(sessions_replayed))):
        name = f"bridge→upstream #{n}"
        mine, mine_ms = _upstream_sent(recorded, sessions_recorded[n]) if n < len(sessions_recorded) else ([], 0.0)
        theirs, theirs_ms = _upstream_sent(replayed, sessions_replayed[n]) if n < len(sessions_replayed) else ([], 0.0)
        pairs = _align(name, mine, theirs, result)
        _compare_fields(name, mine, theirs, pairs, result, redact)
        result.caller_audio_ms.append((name, mine_ms, theirs_ms))
    return result
