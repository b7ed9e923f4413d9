"""The call recorder: a wire tap on both sockets of a call, written to disk off the event loop.

Off unless `VOICE_BRIDGE_RECORD_DIR` is set, and then free: the streams' `tap` is None and nothing
here runs. When on, every call becomes `<dir>/<CallSid>/` in the format of `bridge.recording_format`
(events.jsonl, caller.wav, agent.wav, to_caller.wav, meta.json).

Hook points: `TwilioStream` and `UpstreamConnection` call their tap with each raw text frame in
and out, and when they open or close. A pre-warmed upstream session (opened at `POST /voice`)
records into the call's recording from its first event: recordings are keyed by CallSid, and the
Twilio stream's tap holds its first frames until `start` says which call it is.

On the event loop a tap only reads the clock and puts the frame's text on a queue. One writer
thread per process does everything else: parse, cut the audio out into the WAV files, redact,
append a line. Files are written in small appends and their headers synced every
`SYNC_EVERY_S` while there is something to write, so a crash loses at most that much.
A recording that fails (disk full, no permission, a disk so slow the queue passes `MAX_QUEUED`)
is logged once (`recording.failed`) and stops; the call goes on untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import platform
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from voice_codecs import AudioMode

from .logs import get_logger
from .profiles import AgentProfile
from .recording_format import (
    EVENTS_FILE,
    FORMAT,
    IN,
    MAX_TEXT_CHARS,
    META_FILE,
    OUT,
    TWILIO,
    UPSTREAM,
    Track,
    WavAppender,
    audio_slot,
    decode_audio,
    make_private_dir,
    mask_identifiers,
    open_private,
    profile_record,
    redact_text,
    to_model_track,
    track_for,
)

log = get_logger("bridge.recording")

MAX_QUEUED = 50_000  # frames waiting for the writer (~2 min of one call's traffic) before a recording gives up
SYNC_EVERY_S = 0.25
UNBOUND_S = 60.0  # a recording whose Twilio stream never came (an unclaimed pre-warm) is closed after this
MAX_EARLY_FRAMES = 16  # Twilio frames kept before `start` names the call (normally: connected, start)
LIBRARIES = ("starlette", "uvicorn", "websockets", "twilio", "numpy", "soxr", "structlog")

_FRAME, _LIFE, _FINISH = "frame", "life", "finish"


@dataclass(frozen=True, slots=True)
class RecordOptions:
    directory: Path
    transcripts: bool = True  # False: transcripts and text content become "[redacted]"
    audio: bool = True  # False: no WAV files; audio references keep their lengths only


class WireTap(Protocol):
    """What a socket tells the recorder: each raw text frame, and how the socket closed."""

    def received(self, text: str) -> None: ...

    def sent(self, text: str) -> None: ...

    def closed(self, code: int | None, by: str, reason: str = "") -> None: ...


class UpstreamTap(WireTap, Protocol):
    """An upstream session's tap also hears about its connect attempts."""

    def opened(self) -> None: ...

    def connect_failed(self, status: int | None, error: str) -> None: ...


def versions() -> dict[str, str]:
    found = {"voice-bridge": _version("voice-bridge"), "python": platform.python_version()}
    found.update({name: _version(name) for name in LIBRARIES})
    return found


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


# --- the event-loop side ---------------------------------------------------------------------


class CallRecording:
    """One call's recording as the event loop sees it: taps that enqueue, nothing else."""

    def __init__(self, recorder: Recorder, call_sid: str, meta: dict[str, Any], created_at: float) -> None:
        self.call_sid = call_sid
        self.meta = meta
        self.created_at = created_at
        self.stopped = False  # set on failure (by either side) or when finished
        self.bound = False  # a Twilio stream records into it
        self._recorder = recorder
        self._sessions = 0

    def upstream_tap(self) -> UpstreamTap:
        """The tap of the call's next upstream session (0: the first, 1: after a reconnect, ...)."""
        tap = _UpstreamSessionTap(self, self._sessions, self._recorder.clock)
        self._sessions += 1
        return tap

    def put(self, t: float, op: str, channel: str, session: int | None, direction: str, payload: Any) -> None:
        if self.stopped:
            return
        try:
            if not self._recorder._writer.put((self, t, op, channel, session, direction, payload)):
                self._recorder._overflowed(self)
        except Exception:  # noqa: BLE001 - recording must never break a call
            self.stopped = True


class _UpstreamSessionTap:
    __slots__ = ("_recording", "_session", "_clock")

    def __init__(self, recording: CallRecording, session: int, clock: Callable[[], float]) -> None:
        self._recording = recording
        self._session = session
        self._clock = clock

    def received(self, text: str) -> None:
        self._recording.put(self._clock(), _FRAME, UPSTREAM, self._session, IN, text)

    def sent(self, text: str) -> None:
        self._recording.put(self._clock(), _FRAME, UPSTREAM, self._session, OUT, text)

    def closed(self, code: int | None, by: str, reason: str = "") -> None:
        self._recording.put(self._clock(), _LIFE, UPSTREAM, self._session, "close", {"by": by, "code": code, "reason": reason})

    def opened(self) -> None:
        self._recording.put(self._clock(), _LIFE, UPSTREAM, self._session, "open", {})

    def connect_failed(self, status: int | None, error: str) -> None:
        self._recording.put(self._clock(), _LIFE, UPSTREAM, self._session, "connect_failed", {"status": status, "error": error})


class TwilioTap:
    """The tap of one Twilio stream; until `start` names the call it keeps the frames before it."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._recording: CallRecording | None = None
        self._early: list[tuple[float, str, str, Any]] = []

    @property
    def recording(self) -> CallRecording | None:
        return self._recording

    def bind(self, recording: CallRecording) -> None:
        self._recording = recording
        recording.bound = True
        for t, op, direction, payload in self._early:
            recording.put(t, op, TWILIO, None, direction, payload)
        self._early.clear()

    def _put(self, op: str, direction: str, payload: Any) -> None:
        t = self._clock()
        if self._recording is not None:
            self._recording.put(t, op, TWILIO, None, direction, payload)
        elif len(self._early) < MAX_EARLY_FRAMES:
            self._early.append((t, op, direction, payload))

    def received(self, text: str) -> None:
        self._put(_FRAME, IN, text)

    def sent(self, text: str) -> None:
        self._put(_FRAME, OUT, text)

    def closed(self, code: int | None, by: str, reason: str = "") -> None:
        self._put(_LIFE, "close", {"by": by, "code": code, "reason": reason})


class Recorder:
    """The process's recorder: recordings by CallSid and the writer thread. Lives in the app state."""

    def __init__(
        self,
        options: RecordOptions,
        clock: Callable[[], float] = time.monotonic,
        meta: dict[str, Any] | None = None,
        wall_clock: Callable[[], float] = time.time,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self.options = options
        self.clock = clock
        self.wall_clock = wall_clock
        self._meta = {"format": FORMAT, **(meta or {}), "versions": versions()}
        self._calls: dict[str, CallRecording] = {}
        self._writer = _Writer(options, max_queued)

    def start(self) -> None:
        self._writer.start()

    def __len__(self) -> int:
        return len(self._calls)

    def call(self, call_sid: str, to: str | None, profile: AgentProfile) -> CallRecording:
        """The call's recording, begun now if it has none yet."""
        recording = self._calls.get(call_sid)
        if recording is not None:
            return recording
        now = self.clock()
        self._sweep(now)
        started = datetime.fromtimestamp(self.wall_clock(), UTC).isoformat(timespec="milliseconds")
        meta = {
            **self._meta,
            "call_sid": call_sid,
            "started_at": started.replace("+00:00", "Z"),
            "to": to,
            "profile": profile_record(profile),
            "redaction": {"transcripts": not self.options.transcripts, "audio": not self.options.audio},
            "outcome": None,
        }
        recording = CallRecording(self, call_sid, meta, now)
        self._calls[call_sid] = recording
        return recording

    def get(self, call_sid: str) -> CallRecording | None:
        return self._calls.get(call_sid)

    def twilio_tap(self) -> TwilioTap:
        return TwilioTap(self.clock)

    def finish(self, call_sid: str, end_reason: str) -> None:
        """The call is over: close its files and write its outcome (on the writer thread)."""
        recording = self._calls.pop(call_sid, None)
        if recording is not None:
            self._finish(recording, {"end_reason": end_reason})

    def finish_unstreamed(self, call_sid: str) -> None:
        """The call's stream never came (its pre-warmed session went unclaimed, or Twilio says the
        call is over): close its recording now rather than after UNBOUND_S."""
        recording = self._calls.get(call_sid)
        if recording is not None and not recording.bound:
            self.finish(call_sid, "no_stream")

    def _finish(self, recording: CallRecording, outcome: dict[str, Any]) -> None:
        recording.stopped = True
        self._writer.put((recording, self.clock(), _FINISH, "", None, "", outcome), force=True)

    def _sweep(self, now: float) -> None:
        for call_sid, recording in list(self._calls.items()):
            if not recording.bound and now - recording.created_at > UNBOUND_S:
                del self._calls[call_sid]
                self._finish(recording, {"end_reason": "no_stream"})

    def _overflowed(self, recording: CallRecording) -> None:
        if recording.stopped:
            return
        log.error("recording.failed", call_sid=recording.call_sid, error="queue_full", max_queued=self._writer.max_queued)
        self._calls.pop(recording.call_sid, None)
        recording.stopped = True
        self._writer.put((recording, self.clock(), _FINISH, "", None, "", {"failed": "queue_full"}), force=True)

    async def aclose(self, timeout_s: float = 10.0) -> None:
        """Finish every recording still open and let the writer write them out."""
        for call_sid in list(self._calls):
            recording = self._calls.pop(call_sid)
            self._finish(recording, {"end_reason": "shutdown" if recording.bound else "no_stream"})
        await asyncio.to_thread(self._writer.stop, timeout_s)


# --- the writer thread -----------------------------------------------------------------------

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_-]")


def _directory_for(base: Path, call_sid: str) -> Path:
    name = _SAFE_NAME.sub("_", call_sid)[:64] or "call"
    candidate, n = base / name, 1
    while candidate.exists():
        n += 1
        candidate = base / f"{name}-{n}"
    return candidate


class _CallFiles:
    """The open files of one recording (writer thread only)."""

    def __init__(self, directory: Path, meta: dict[str, Any], t0: float, options: RecordOptions) -> None:
        make_private_dir(directory)  # 0700, files 0600: a recording is the call's audio and words
        self.directory = directory
        self.meta = meta
        self.t0 = t0
        self.last_t = t0
        self.options = options
        self.lines = 0
        self.wavs: dict[str, WavAppender] = {}
        self._events = open_private(directory / EVENTS_FILE, "w")  # closed in close()
        self.write_meta()

    def write_meta(self, **final: Any) -> None:
        meta = {**self.meta, **final}
        tmp = self.directory / (META_FILE + ".tmp")
        with open_private(tmp, "w") as file:
            file.write(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
        tmp.replace(self.directory / META_FILE)

    def write(self, entry: dict[str, Any]) -> None:
        self._events.write(json.dumps(entry, separators=(",", ":"), ensure_ascii=False) + "\n")
        self.lines += 1

    def audio_ref(self, track: Track | None, data: bytes) -> dict[str, Any]:
        if track is None:
            width = to_model_track(self.meta.get("audio_mode", AudioMode.PCM24K)).sample_bytes
            return {"$wav": None, "samples": len(data) // width}
        if not self.options.audio:
            return {"$wav": None, "samples": len(data) // track.sample_bytes}
        wav = self.wavs.get(track.file)
        if wav is None:
            wav = self.wavs[track.file] = WavAppender(self.directory / track.file, track)
        offset, samples = wav.append(data)
        return {"$wav": track.file, "offset": offset, "samples": samples}

    def sync(self) -> None:
        self._events.flush()
        for wav in self.wavs.values():
            wav.sync()

    def close(self) -> None:
        try:
            self._events.close()
        finally:
            for wav in self.wavs.values():
                wav.close()

    def tracks(self) -> dict[str, Any]:
        return {
            name: {"encoding": wav.track.encoding, "rate": wav.track.rate, "samples": wav.samples}
            for name, wav in self.wavs.items()
        }


class _Writer:
    def __init__(self, options: RecordOptions, max_queued: int) -> None:
        self.options = options
        self.max_queued = max_queued
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._files: dict[CallRecording, _CallFiles] = {}
        self._dead: set[CallRecording] = set()
        self._thread = threading.Thread(target=self._run, name="voice-bridge-recorder", daemon=True)
        self._last_sync = 0.0

    def start(self) -> None:
        self._thread.start()

    def put(self, item: tuple[Any, ...], force: bool = False) -> bool:
        if not force and self._queue.qsize() >= self.max_queued:
            return False
        self._queue.put(item)
        return True

    def stop(self, timeout_s: float) -> None:
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=SYNC_EVERY_S)
            except queue.Empty:
                self._sync_all()
                continue
            if item is None:
                break
            self._handle(item)
            if time.monotonic() - self._last_sync >= SYNC_EVERY_S:
                self._sync_all()
        for recording in list(self._files):
            self._close(recording, {"end_reason": "shutdown"})

    def _handle(self, item: tuple[Any, ...]) -> None:
        recording, t, op, channel, session, direction, payload = item
        if recording in self._dead:
            if op == _FINISH:
                self._dead.discard(recording)  # nothing more will come for it
            return
        try:
            files = self._files.get(recording)
            if op == _FINISH:
                if files is not None:
                    self._close(recording, payload)
                return
            if files is None:
                directory = _directory_for(self.options.directory, recording.call_sid)
                files = self._files[recording] = _CallFiles(directory, recording.meta, t, self.options)
                log.info("recording.started", call_sid=recording.call_sid, path=str(directory))
            entry: dict[str, Any] = {"t": round(t - files.t0, 4), "ch": channel}
            if session is not None:
                entry["s"] = session
            entry["dir"] = direction
            files.last_t = max(files.last_t, t)
            if op == _LIFE:
                entry.update(payload)
            else:
                self._frame(files, entry, payload)
            files.write(entry)
        except Exception as exc:  # noqa: BLE001 - a recording's failure is its own, never the call's
            self._fail(recording, exc)

    def _frame(self, files: _CallFiles, entry: dict[str, Any], text: str) -> None:
        channel, direction = entry["ch"], entry["dir"]
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):
            msg = None
        if not isinstance(msg, dict):
            entry["text"] = text[:MAX_TEXT_CHARS]
            return
        slot = audio_slot(channel, direction, msg)
        if slot is not None:
            holder, key = slot
            data = decode_audio(holder[key])
            if data is not None:
                track = track_for(channel, direction, files.meta.get("audio_mode", AudioMode.PCM24K))
                holder[key] = files.audio_ref(track, data)
            elif isinstance(holder[key], str):
                holder[key] = holder[key][:MAX_TEXT_CHARS]  # not base64: kept as the bad input it is
        if not self.options.transcripts:
            redact_text(channel, msg)
        mask_identifiers(channel, msg)
        entry["msg"] = msg

    def _close(self, recording: CallRecording, outcome: dict[str, Any]) -> None:
        files = self._files.pop(recording)
        try:
            files.close()
            failed = outcome.pop("failed", None)
            files.write_meta(
                outcome=outcome,
                duration_s=round(files.last_t - files.t0, 3),
                events=files.lines,
                tracks=files.tracks(),
                failed=failed,
            )
            log.info("recording.finished", call_sid=recording.call_sid, events=files.lines, outcome=outcome.get("end_reason"))
        except Exception as exc:  # noqa: BLE001
            self._fail(recording, exc)

    def _fail(self, recording: CallRecording, exc: BaseException) -> None:
        recording.stopped = True
        self._dead.add(recording)
        log.error("recording.failed", call_sid=recording.call_sid, error=type(exc).__name__, detail=str(exc)[:200])
        files = self._files.pop(recording, None)
        if files is not None:
            with contextlib.suppress(Exception):
                files.close()
            with contextlib.suppress(Exception):
                files.write_meta(failed=f"{type(exc).__name__}: {str(exc)[:200]}")

    def _sync_all(self) -> None:
        self._last_sync = time.monotonic()
        for recording, files in list(self._files.items()):
            try:
                files.sync()
            except Exception as exc:  # noqa: BLE001
                self._fail(recording, exc)
