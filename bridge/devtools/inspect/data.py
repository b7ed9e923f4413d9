"""`inspect_data(recording)`: everything the inspector page draws, as one JSON-ready dict (pure).

The events lane is data-driven: every recorded event but the audio stream (media frames, their
marks, audio deltas and appends) and streaming deltas becomes an entry in a row chosen by
`_row`; a kind nobody listed (a filler, a reprompt, a rollover, a new warning) still shows, by
its own name, in the row of its channel and direction. Spans (caller speech, responses, audio
items, tool calls) are paired from their start and end events.
"""

from __future__ import annotations

import json
from typing import Any

from voice_codecs import TWILIO_RATE

from ...recording_format import APPEND_TYPE, IN, OUT, REDACTED, TWILIO, UPSTREAM, RecordedEvent, Recording
from . import lanes as audio_lanes
from .turns import barge_ins, is_audio_delta, transcript, turns

FORMAT = "voice-bridge-inspect/1"
ROWS = ("caller", "model", "tools", "bridge→model", "bridge→twilio", "connection", "problems", "other")
_LIFECYCLE = {"open", "connect_failed", "close"}
_LABELS = {
    "input_audio_buffer.speech_started": "speech started",
    "input_audio_buffer.speech_stopped": "speech stopped",
    "conversation.item.truncate": "truncate",
    "response.cancel": "cancel",
    "clear": "clear (barge-in)",
    "dtmf": "keypad",
    "stop": "stop (hang-up)",
}


def _row(event: RecordedEvent) -> str | None:
    """Which row of the events lane an event goes to; None for the audio stream itself."""
    kind, ch, direction = event.kind, event.channel, event.direction
    if kind in ("media", APPEND_TYPE) or is_audio_delta(event) or kind.endswith(".delta"):
        return None
    if ch == TWILIO and kind == "mark":
        return None
    if "error" in kind or "warning" in kind or direction == "connect_failed":
        return "problems"
    if direction in _LIFECYCLE or kind.startswith("session."):
        return "connection"
    if ch == TWILIO:
        return "caller" if direction == IN else "bridge→twilio"
    if ch == UPSTREAM and direction == OUT:
        return "tools" if "function_call" in json.dumps(event.msg or {})[:400] else "bridge→model"
    if ch == UPSTREAM:
        if kind.startswith("input_audio_buffer.") or "input_audio_transcription" in kind:
            return "caller"
        return "tools" if "function_call" in kind else "model"
    return "other"


def _detail(event: RecordedEvent) -> str:
    """A short description: the fields worth a glance (never audio, which is a reference)."""
    msg = event.msg or {}
    keys = ("audio_end_ms", "item_id", "status", "name", "digit", "code", "message", "reason", "by", "error")
    found = {k: v for k, v in {**event.fields, **msg}.items() if k in keys and not isinstance(v, (dict, list))}
    for nested in ("dtmf", "error", "response", "item"):
        inner = msg.get(nested)
        if isinstance(inner, dict):
            found.update({k: v for k, v in inner.items() if k in keys and not isinstance(v, (dict, list))})
    return ", ".join(f"{k}={v}" for k, v in found.items())[:300]


def events(recording: Recording) -> list[dict[str, Any]]:
    out = []
    for event in recording.events:
        row = _row(event)
        if row is None:
            continue
        where = f"{event.channel}#{event.session}" if event.session is not None else event.channel
        label = _LABELS.get(event.kind, event.kind)
        out.append({"t": round(event.t, 4), "row": row, "kind": event.kind, "label": label,
                    "where": f"{where} {event.direction}", "detail": _detail(event)})
    return out


def _tool_outcome(output: Any) -> str:
    if output == REDACTED or not isinstance(output, str):
        return "[redacted]" if output == REDACTED else "?"
    try:
        parsed = json.loads(output)
    except ValueError:
        return "?"
    return "ok" if isinstance(parsed, dict) and parsed.get("ok") else "failed"


def spans(recording: Recording) -> list[dict[str, Any]]:
    """Intervals: caller speech, responses, model audio items, tool calls."""
    open_: dict[tuple[str, str], tuple[float, str]] = {}
    out: list[dict[str, Any]] = []

    def close(key: tuple[str, str], t: float, row: str, label: str) -> None:
        if key in open_:
            start, name = open_.pop(key)
            out.append({"t": round(start, 4), "end": round(t, 4), "row": row, "label": f"{name} {label}".strip()})

    for event in recording.of(UPSTREAM):
        msg, kind = event.msg or {}, event.kind
        response: dict[str, Any] = msg["response"] if isinstance(msg.get("response"), dict) else {}
        item: dict[str, Any] = msg["item"] if isinstance(msg.get("item"), dict) else {}
        if event.direction == IN and kind.endswith("speech_started"):
            open_[("speech", "")] = (event.t, "caller speaking")
        elif event.direction == IN and kind.endswith("speech_stopped"):
            close(("speech", ""), event.t, "caller", "")
        elif event.direction == IN and kind == "response.created":
            open_[("response", str(response.get("id")))] = (event.t, "response")
        elif event.direction == IN and kind == "response.done":
            close(("response", str(response.get("id"))), event.t, "model", str(response.get("status", "")))
        elif is_audio_delta(event) and ("audio", str(msg.get("item_id"))) not in open_:
            open_[("audio", str(msg.get("item_id")))] = (event.t, "audio item")
        elif event.direction == IN and kind.endswith("audio.done"):
            close(("audio", str(msg.get("item_id"))), event.t, "model", "")
        elif event.direction == IN and kind == "response.function_call_arguments.done":
            open_[("tool", str(msg.get("call_id")))] = (event.t, f"tool {msg.get('name', '')}")
        elif event.direction == OUT and item.get("type") == "function_call_output":
            close(("tool", str(item.get("call_id"))), event.t, "tools", _tool_outcome(item.get("output")))
    return sorted(out, key=lambda s: s["t"])


def _mask(sid: Any) -> str:
    text = str(sid or "")
    return text if len(text) <= 10 else f"{text[:4]}…{text[-4:]}"


def header(recording: Recording, duration_s: float) -> dict[str, Any]:
    meta = recording.meta
    profile = meta.get("profile")
    redaction = meta.get("redaction") or {}
    return {
        "call_sid": _mask(meta.get("call_sid")),
        "profile": profile.get("name") if isinstance(profile, dict) else profile,
        "upstream": meta.get("upstream"),
        "dialect": meta.get("dialect"),
        "audio_mode": recording.audio_mode,
        "started_at": meta.get("started_at"),
        "duration_s": round(duration_s, 3),
        "outcome": (meta.get("outcome") or {}).get("end_reason"),
        "versions": meta.get("versions") or {},
        "transcripts_redacted": bool(redaction.get("transcripts")),
        "audio_recorded": not redaction.get("audio") and bool(recording.tracks),
        "source": recording.path.name,
    }


def inspect_data(recording: Recording, include_audio: bool = True) -> dict[str, Any]:
    """Everything the page shows. `include_audio=False` leaves the playable audio out (waveforms stay)."""
    last = max((e.t for e in recording.events), default=0.0)
    duration = max(float(recording.meta.get("duration_s") or 0.0), last)
    lanes = audio_lanes.build_lanes(recording, duration)
    cuts = barge_ins(recording, lanes.chunks)
    data: dict[str, Any] = {
        "format": FORMAT,
        "header": header(recording, duration),
        "duration_s": round(duration, 4),
        "rows": list(ROWS),
        "events": events(recording),
        "spans": spans(recording),
        "turns": turns(recording),
        "barge_ins": cuts,
        "heard_ms": round(sum(c.samples for c in lanes.chunks if c.heard) / 8.0, 1),
        "transcript": transcript(recording, lanes.chunks, cuts),
        "waveform": None,
        "audio": None,
    }
    if lanes.caller is not None and lanes.heard is not None:
        data["waveform"] = {"bucket_s": audio_lanes.BUCKET_SAMPLES / TWILIO_RATE,
                            "caller": audio_lanes.waveform(lanes.caller), "heard": audio_lanes.waveform(lanes.heard)}
        if include_audio:
            data["audio"] = {"rate": TWILIO_RATE, "encoding": "mulaw",
                             "caller": audio_lanes.audio_b64(lanes.caller), "heard": audio_lanes.audio_b64(lanes.heard)}
    return data
