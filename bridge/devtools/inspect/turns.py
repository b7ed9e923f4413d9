"""Turns, barge-ins and the transcript of a recorded call (pure).

Latencies are the bridge's own: the recorded events are fed, in order, to the `TurnTimeline` the
call uses (`bridge.turn_timeline`, logged per turn as `turn.timeline`): the caller's end of speech
(`input_audio_buffer.speech_stopped`) → the model's first audio → the first audio sent to Twilio
(its mark) → that mark's echo, the first audio heard. A `clear` (a barge-in) abandons the turn in
progress. The greeting is the turn before the caller's first end of speech, timed from `start`.

Barge-in points come from the comparison (`compare.truncations`, `compare.heard_chunks`): what the
bridge claimed was heard (`audio_end_ms` of its truncate) and what the recording shows was heard
(the item's audio whose marks came back).
"""

from __future__ import annotations

from typing import Any

from ...playback import PROBE_PREFIX
from ...recording_format import IN, OUT, REDACTED, TWILIO, UPSTREAM, RecordedEvent, Recording, agent_track
from ...turn_timeline import STAGES, TurnTimeline
from ..replay.compare import truncations
from .lanes import PlacedChunk

SPEECH_STOPPED = "input_audio_buffer.speech_stopped"


def _mark_name(event: RecordedEvent) -> str:
    return str(((event.msg or {}).get("mark") or {}).get("name", ""))


def is_audio_delta(event: RecordedEvent) -> bool:
    return event.channel == UPSTREAM and event.direction == IN and "audio" in event.kind and event.kind.endswith(".delta") \
        and "transcript" not in event.kind


def turns(recording: Recording) -> list[dict[str, Any]]:
    """One row per turn: when the caller stopped, each stage's delay in seconds, interrupted."""
    timeline = TurnTimeline()
    rows: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for event in recording.events:
        if event.channel == TWILIO and event.kind == "start" and event.direction == IN and not rows:
            timeline.speech_stopped(event.t)
            current = {"n": 0, "kind": "greeting", "t": event.t, "stages": {}, "interrupted": False}
            rows.append(current)
        elif event.channel == UPSTREAM and event.direction == IN and event.kind == SPEECH_STOPPED:
            timeline.speech_stopped(event.t)
            current = {"n": len(rows), "kind": "turn", "t": event.t, "stages": {}, "interrupted": False}
            rows.append(current)
        elif is_audio_delta(event):
            timeline.model_audio(event.t)
        elif event.channel == TWILIO and event.kind == "mark" and not _mark_name(event).startswith(PROBE_PREFIX):
            if event.direction == OUT:
                timeline.media_sent(_mark_name(event), event.t)
            elif event.direction == IN and current is not None:
                done = timeline.mark_echoed(_mark_name(event), event.t)
                if done is not None:
                    current["stages"] = {k: round(done[k], 4) for k in STAGES if k in done}
                    current = None
        elif event.channel == TWILIO and event.kind == "clear" and event.direction == OUT:
            if current is not None:
                current["stages"] = {k: round(v, 4) for k, v in timeline.stages.items()}
                current["interrupted"] = True
                current = None
            timeline.abandoned()
    if current is not None:
        current["stages"] = {k: round(v, 4) for k, v in timeline.stages.items()}
    return rows


def _chunk_items(recording: Recording) -> dict[int, str]:
    """Which model audio item each media frame to Twilio carried: the item of the last audio delta
    received before it (the bridge relays each delta as it arrives)."""
    item = ""
    owner: dict[int, str] = {}
    for event in recording.events:
        if is_audio_delta(event):
            item = str((event.msg or {}).get("item_id", ""))
        elif event.channel == TWILIO and event.direction == OUT and event.kind == "media":
            owner[id(event)] = item
    return owner


def item_audio_ms(recording: Recording) -> dict[str, float]:
    """The model audio received per item, in ms."""
    rate = agent_track(recording.audio_mode).rate
    samples: dict[str, int] = {}
    for event in recording.events:
        if is_audio_delta(event) and event.msg is not None:
            delta = event.msg.get("delta")
            n = int(delta.get("samples", 0)) if isinstance(delta, dict) else 0
            key = str(event.msg.get("item_id", ""))
            samples[key] = samples.get(key, 0) + n
    return {key: n * 1000.0 / rate for key, n in samples.items()}


def barge_ins(recording: Recording, chunks: list[PlacedChunk]) -> list[dict[str, Any]]:
    owner = _chunk_items(recording)
    clears = [e.t for e in recording.of(TWILIO) if e.direction == OUT and e.kind == "clear"]
    received = item_audio_ms(recording)
    found = []
    for event in truncations(recording):
        msg = event.msg or {}
        item = str(msg.get("item_id", ""))
        heard = sum(c.samples for c in chunks if c.heard and owner.get(id(c.first)) == item and c.first.t <= event.t)
        found.append({
            "t": event.t,
            "clear_t": max((c for c in clears if c <= event.t), default=None),
            "item_id": item,
            "claimed_ms": int(msg.get("audio_end_ms", 0)),
            "heard_ms": round(heard / 8.0, 1),
            "received_ms": round(received.get(item, 0.0), 1),
        })
    return found


def _item_spans(recording: Recording, chunks: list[PlacedChunk]) -> dict[str, tuple[float, float]]:
    owner = _chunk_items(recording)
    spans: dict[str, tuple[float, float]] = {}
    for chunk in chunks:
        item = owner.get(id(chunk.first), "")
        start, end = spans.get(item, (chunk.start, chunk.end))
        spans[item] = (min(start, chunk.start), max(end, chunk.end))
    return spans


def _cut(text: str, fraction: float) -> str:
    if text == REDACTED:
        return text
    at = int(len(text) * max(0.0, min(1.0, fraction)))
    space = text.rfind(" ", 0, at + 1)
    return text[: space if space > 0 else at].rstrip()


def _said(recording: Recording) -> tuple[dict[str, str], dict[str, str], dict[str, tuple[float, float]]]:
    """Agent and caller text per item (a `*transcript.done`, else the deltas joined), and when the
    caller spoke each item (speech_started → speech_stopped)."""
    agent: dict[str, str] = {}
    caller: dict[str, str] = {}
    spoke: dict[str, tuple[float, float]] = {}
    for event in recording.of(UPSTREAM):
        msg, kind = event.msg or {}, event.kind
        item = str(msg.get("item_id", ""))
        if event.direction != IN or not item:
            continue
        if kind.endswith("speech_started"):
            spoke[item] = (event.t, event.t)
        elif kind == SPEECH_STOPPED:
            spoke[item] = (spoke.get(item, (event.t, event.t))[0], event.t)
        elif "transcript" in kind and kind.endswith(".done") and isinstance(msg.get("transcript"), str):
            (caller if "input_audio" in kind else agent)[item] = msg["transcript"]
        elif "transcript" in kind and kind.endswith(".delta") and isinstance(msg.get("delta"), str):
            text = agent.get(item, "")
            agent[item] = REDACTED if msg["delta"] == REDACTED else text + msg["delta"]
    return agent, caller, spoke


def transcript(recording: Recording, chunks: list[PlacedChunk], cuts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What each side said, placed on the timeline; the agent's text cut where the caller interrupted."""
    agent, caller, spoke = _said(recording)
    spans = _item_spans(recording, chunks)
    received = item_audio_ms(recording)
    claimed = {c["item_id"]: c["claimed_ms"] for c in cuts}
    lines = []
    for item, text in agent.items():
        start, end = spans.get(item, (0.0, 0.0))
        line = {"role": "agent", "t": round(start, 4), "end": round(end, 4), "text": text, "cut": item in claimed}
        if item in claimed and received.get(item):
            line["heard_text"] = _cut(text, claimed[item] / received[item])
        lines.append(line)
    for item, text in caller.items():
        start, end = spoke.get(item, (0.0, 0.0))
        lines.append({"role": "caller", "t": round(start, 4), "end": round(end, 4), "text": text, "cut": False})
    return sorted(lines, key=lambda line: line["t"])
