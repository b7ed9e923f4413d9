"""Recorded calls (issue #7): every call in fixtures/calls/ replays against the current code within
the tolerances; the recorder's options, audio references and failure isolation; a live call
recorded here replays identically; a doctored recording is caught.

Adding a recording to fixtures/calls/ adds a test case: copy a `VOICE_BRIDGE_RECORD_DIR/<CallSid>/`
folder there (or regenerate them all with fixtures/calls/record_fixtures.py).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import shutil
import subprocess
import sys
import threading
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import AUTH_TOKEN, caller_clip, capture_logs, run, running_bridge, settle

from bridge.devtools.phone import place_call
from bridge.devtools.phone.caller import CallerPlan
from bridge.devtools.replay.compare import Tolerances, compare
from bridge.devtools.replay.run import replay_call
from bridge.profiles import default_profile
from bridge.recording import Recorder, RecordOptions
from bridge.recording_format import MASKED, REDACTED, load_recording, read_wav
from bridge.settings import Settings

CALLS = Path(__file__).resolve().parents[1] / "fixtures" / "calls"
FIXTURES = sorted(p for p in CALLS.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
SPEED = 4.0  # replays run four times faster than the calls did; the bridge gets the same clock




# --- the fixture library -----------------------------------------------------------------------


def test_the_library_covers_both_dialects_and_both_audio_modes() -> None:
    metas = [json.loads((p / "meta.json").read_text()) for p in FIXTURES]
    dialects = [m["dialect"] for m in metas]
    assert len(FIXTURES) >= 8
    assert dialects.count("voicelive") >= 2 and dialects.count("ga") >= 2
    assert {m["audio_mode"] for m in metas} == {"pcm24k", "g711"}
    assert sum(f.stat().st_size for f in CALLS.rglob("*") if f.is_file()) < 5.5 * 1024 * 1024


@pytest.mark.parametrize("call", FIXTURES, ids=lambda p: p.name)
def test_recorded_call_replays_within_tolerances(call: Path) -> None:
    result = run(replay_call(call, speed=SPEED), timeout=120)
    assert result.passed, result.summary()


# --- a live call, recorded here, replays identically -------------------------------------------


def test_a_recorded_live_call_replays_identically(tmp_path: Path) -> None:
    async def record() -> str:
        async with running_bridge(speed=2.0, record_dir=str(tmp_path)) as (url, app):
            plan = CallerPlan(utterances=(caller_clip("caller_question.wav"),), barge_in_after_s=1.0, hangup_after_s=0.6)
            report = await place_call(url, plan, auth_token=AUTH_TOKEN, speed=2.0)
            assert await settle(lambda: not app.state.bridge.active_calls)
        assert report.clears == 1, report.summary()
        return report.call_sid

    call_sid = run(record())
    recording = load_recording(tmp_path / call_sid)
    assert recording.meta["outcome"] == {"end_reason": "caller_hangup"}
    result = run(replay_call(tmp_path / call_sid, speed=2.0), timeout=60)
    comparison = result.comparison
    assert result.passed, result.summary()
    assert not comparison.event_diffs and not comparison.field_diffs
    assert comparison.snr_db is not None and math.isinf(comparison.snr_db)  # bit for bit what the caller heard
    (drift,) = comparison.drifts
    assert drift.ms <= Tolerances().max_drift_ms, result.summary()
    assert [c.name for c in comparison.streams] == ["bridge→twilio", "upstream connects", "bridge→upstream #0"]


def test_a_call_recorded_without_transcripts_or_audio_still_replays(tmp_path: Path) -> None:
    async def record() -> str:
        async with running_bridge(speed=4.0, record_dir=str(tmp_path), record_transcripts=False, record_audio=False) as (url, app):
            report = await place_call(url, CallerPlan(hangup_after_s=0.5), auth_token=AUTH_TOKEN, speed=4.0)
            assert await settle(lambda: not app.state.bridge.active_calls)
        return report.call_sid

    call_sid = run(record())
    assert not list((tmp_path / call_sid).glob("*.wav"))
    result = run(replay_call(tmp_path / call_sid, speed=4.0), timeout=60)  # silence of the recorded lengths
    assert result.passed and result.comparison.snr_db is None, result.summary()
    assert "n/a" in result.summary()


def test_a_doctored_recording_fails_the_replay_with_the_differences_named(tmp_path: Path) -> None:
    call = tmp_path / "doctored"
    shutil.copytree(CALLS / "ga_barge_in", call)
    lines = (call / "events.jsonl").read_text().splitlines()
    doctored = []
    for line in lines:
        entry = json.loads(line)
        msg = entry.get("msg") or {}
        if entry["dir"] == "out" and msg.get("event") == "clear":
            continue  # as if the recorded bridge had never cleared Twilio's buffer
        if msg.get("type") == "conversation.item.truncate":
            msg["audio_end_ms"] += 100
        doctored.append(json.dumps(entry))
    (call / "events.jsonl").write_text("\n".join(doctored) + "\n")
    result = run(replay_call(call, speed=SPEED), timeout=60)
    assert not result.passed
    assert [str(d) for d in result.comparison.event_diffs if d.kind == "clear"] and all(
        d.change == "extra" for d in result.comparison.event_diffs
    ), result.summary()
    assert any("drifted" in f for f in result.failures) and any("missing or extra" in f for f in result.failures)
    assert "extra clear" in result.summary()


def test_voice_bridge_replay_command_line() -> None:
    bin_ = Path(sys.executable).parent / "voice-bridge"
    done = subprocess.run(
        [str(bin_), "replay", str(CALLS / "ga_greeting_only"), "--speed", "4", "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["passed"] and report["heard_identical"] and report["event_diffs"] == []
    refused = subprocess.run([str(bin_), "replay", str(CALLS.parent / "audio")], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "no recorded call" in refused.stderr


# --- the recorder, without sockets -------------------------------------------------------------

PCM = (np.sin(np.arange(2400) / 7.0) * 8000).astype("<i2").tobytes()  # 100 ms at 24 kHz
MULAW = bytes(range(160))  # one Twilio frame


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _start(call_sid: str) -> str:
    params = {"CallSid": call_sid, "From": "+15557654321", "To": "+15550100000", "StreamToken": "secret-token"}
    return json.dumps({"event": "start", "streamSid": "MZ1", "start": {"streamSid": "MZ1", "callSid": call_sid,
                       "customParameters": params, "mediaFormat": {}}})  # fmt: skip


def _record_synthetic_call(directory: Path, **options: Any) -> Path:
    """A call fed straight into the taps: a pre-warmed session, then the Twilio stream."""

    async def go() -> None:
        meta = {"audio_mode": "pcm24k", "dialect": "ga", "upstream": "local"}
        recorder = Recorder(RecordOptions(directory, **options), meta=meta)
        recorder.start()
        profile = default_profile(Settings(insecure_dev=True))
        recording = recorder.call("CA1", "+15550100000", profile)
        upstream = recording.upstream_tap()
        upstream.opened()
        upstream.sent(json.dumps({"type": "session.update", "session": {"instructions": "Be brief."}}))
        twilio = recorder.twilio_tap()
        twilio.received(json.dumps({"event": "connected"}))
        twilio.received(_start("CA1"))
        twilio.bind(recorder.call("CA1", "+15550100000", profile))
        upstream.received(json.dumps({"type": "response.output_audio.delta", "item_id": "i1", "delta": _b64(PCM)}))
        upstream.received(json.dumps({"type": "response.output_audio_transcript.done", "transcript": "Your order shipped."}))
        twilio.received(json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": _b64(MULAW)}}))
        twilio.received(json.dumps({"event": "dtmf", "streamSid": "MZ1", "dtmf": {"digit": "7"}}))
        upstream.sent(json.dumps({"type": "input_audio_buffer.append", "audio": _b64(PCM[:960])}))
        output = {"type": "function_call_output", "output": '{"status": "shipped"}'}
        upstream.sent(json.dumps({"type": "conversation.item.create", "item": output}))
        twilio.sent(json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": _b64(MULAW[:80])}}))
        twilio.received("this is not json")
        twilio.closed(1000, by="bridge")
        upstream.closed(1000, by="bridge")
        recorder.finish("CA1", "caller_hangup")
        await recorder.aclose()

    asyncio.run(go())
    return directory / "CA1"


def test_audio_references_round_trip_to_the_bytes_on_the_wire(tmp_path: Path) -> None:
    recording = load_recording(_record_synthetic_call(tmp_path))
    kinds = [(e.channel, e.direction, e.kind) for e in recording.events]
    assert kinds[0] == ("upstream", "open", "open") and ("twilio", "in", "start") in kinds
    delta = next(e for e in recording.events if e.kind == "response.output_audio.delta")
    assert delta.msg["delta"] == {"$wav": "agent.wav", "offset": 0, "samples": 2400}
    assert recording.audio(delta.msg["delta"]) == PCM
    assert recording.inline(delta)["delta"] == _b64(PCM)  # what a replay sends: the very same bytes
    heard = next(e for e in recording.events if e.kind == "media" and e.direction == "in")
    assert recording.audio(heard.msg["media"]["payload"]) == MULAW
    sent = next(e for e in recording.events if e.kind == "media" and e.direction == "out")
    assert recording.audio(sent.msg["media"]["payload"]) == MULAW[:80]
    append = next(e for e in recording.events if e.kind == "input_audio_buffer.append")
    assert append.msg["audio"] == {"$wav": None, "samples": 480}  # caller audio to the model: length only
    # Standard WAV files: PCM16 for the model's 24 kHz audio, G.711 μ-law (format 7) at 8 kHz for Twilio's.
    with wave.open(str(recording.path / "agent.wav")) as wav:
        assert (wav.getframerate(), wav.getsampwidth(), wav.readframes(10_000)) == (24000, 2, PCM)
    assert read_wav(recording.path / "caller.wav").encoding == "mulaw"
    assert next(e for e in recording.events if e.direction == "in" and "text" in e.fields).fields["text"] == "this is not json"
    meta = recording.meta
    assert meta["outcome"] == {"end_reason": "caller_hangup"} and meta["failed"] is None
    assert meta["tracks"]["caller.wav"] == {"encoding": "mulaw", "rate": 8000, "samples": 160}
    assert meta["profile"]["name"] == "default" and meta["versions"]["python"]
    assert meta["redaction"] == {"transcripts": False, "audio": False}


def test_the_stream_token_and_the_callers_number_are_never_recorded(tmp_path: Path) -> None:
    path = _record_synthetic_call(tmp_path)
    text = (path / "events.jsonl").read_text()
    assert "secret-token" not in text and "+15557654321" not in text and MASKED in text
    assert "Your order shipped." in text and '"digit":"7"' in text  # transcripts are kept by default


def test_redaction_drops_transcripts_and_text_content(tmp_path: Path) -> None:
    path = _record_synthetic_call(tmp_path, transcripts=False)
    text = (path / "events.jsonl").read_text()
    assert "Your order shipped." not in text and "shipped" not in text and '"digit":"7"' not in text
    assert text.count(REDACTED) == 3
    assert "Be brief." in text  # instructions are configuration, not a transcript
    assert json.loads((path / "meta.json").read_text())["redaction"]["transcripts"] is True


def test_without_audio_no_wav_is_written_and_references_keep_their_lengths(tmp_path: Path) -> None:
    path = _record_synthetic_call(tmp_path, audio=False)
    assert not list(path.glob("*.wav"))
    recording = load_recording(path)
    delta = next(e for e in recording.events if e.kind == "response.output_audio.delta")
    assert delta.msg["delta"] == {"$wav": None, "samples": 2400} and recording.audio(delta.msg["delta"]) is None


def test_a_compare_ignores_what_legitimately_varies(tmp_path: Path) -> None:
    one = load_recording(_record_synthetic_call(tmp_path / "a"))
    other = load_recording(_record_synthetic_call(tmp_path / "b"))
    for event in other.events:  # another run: other sids, ids, event ids, timestamps
        if event.msg is not None and event.msg.get("streamSid"):
            event.msg["streamSid"] = "MZ2"
    comparison = compare(one, other)
    assert not comparison.event_diffs and not comparison.field_diffs and not comparison.failures(Tolerances())


# --- failure isolation --------------------------------------------------------------------------


def test_a_failing_disk_stops_the_recording_not_the_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge import recording_format

    def disk_full(self: Any, data: bytes) -> tuple[int, int]:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(recording_format.WavAppender, "append", disk_full)

    async def scenario() -> Any:
        async with running_bridge(speed=2.0, record_dir=str(tmp_path)) as (url, app):
            plan = CallerPlan(utterances=(caller_clip("caller_question.wav"),), pause_s=0.6, hangup_after_s=1.0)
            with capture_logs() as logs:
                report = await place_call(url, plan, auth_token=AUTH_TOKEN, speed=2.0)
                assert await settle(lambda: not app.state.bridge.active_calls)
        return report, logs

    report, logs = run(scenario())
    assert report.ended_by == "caller" and report.agent_audio_s > 5.0, report.summary()
    failures = [e for e in logs if e["event"] == "recording.failed"]
    assert len(failures) == 1 and failures[0]["error"] == "OSError", failures
    ended = [e for e in logs if e["event"] == "call.ended"]
    assert ended and ended[0]["reason"] == "caller_hangup"
    (directory,) = tmp_path.iterdir()
    assert "No space left" in json.loads((directory / "meta.json").read_text())["failed"]


def test_a_writer_that_falls_behind_stops_recording_that_call(tmp_path: Path) -> None:
    async def go() -> list[dict[str, Any]]:
        recorder = Recorder(RecordOptions(tmp_path), meta={"audio_mode": "pcm24k"}, max_queued=5)
        # The writer thread is not started: nothing drains the queue.
        tap = recorder.call("CA9", None, default_profile(Settings(insecure_dev=True))).upstream_tap()
        with capture_logs() as logs:
            for _ in range(50):
                tap.sent(json.dumps({"type": "input_audio_buffer.append", "audio": ""}))
        recorder.start()
        await recorder.aclose()
        return logs

    logs = asyncio.run(go())
    assert [e["error"] for e in logs if e["event"] == "recording.failed"] == ["queue_full"]
    meta = json.loads((tmp_path / "CA9" / "meta.json").read_text())
    assert meta["failed"] == "queue_full" and meta["events"] == 5


def test_recording_is_off_by_default_and_then_costs_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_bridge(speed=2.0) as (url, app):
            assert app.state.bridge.recorder is None
            assert not [t for t in threading.enumerate() if t.name == "voice-bridge-recorder"]
            await place_call(url, CallerPlan(hangup_after_s=0.5), auth_token=AUTH_TOKEN, speed=2.0)

    run(scenario())


def test_an_unusable_record_dir_is_logged_and_calls_go_on(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the folder should be")

    async def scenario() -> Any:
        with capture_logs() as logs:
            async with running_bridge(speed=2.0, record_dir=str(blocker / "calls")) as (url, app):
                assert app.state.bridge.recorder is None
                report = await place_call(url, CallerPlan(hangup_after_s=0.5), auth_token=AUTH_TOKEN, speed=2.0)
        return report, logs

    report, logs = run(scenario())
    assert report.ended_by == "caller"
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["recording.unavailable"]


def test_record_settings_from_the_environment(tmp_path: Path) -> None:
    base = {"VOICE_BRIDGE_INSECURE_DEV": "1"}
    assert Settings.from_env(base).record_dir is None
    on = Settings.from_env({**base, "VOICE_BRIDGE_RECORD_DIR": str(tmp_path)})
    assert (on.record_dir, on.record_transcripts, on.record_audio) == (str(tmp_path), True, True)
    off = {"VOICE_BRIDGE_RECORD_TRANSCRIPTS": "0", "VOICE_BRIDGE_RECORD_AUDIO": "0"}
    redacted = Settings.from_env({**base, "VOICE_BRIDGE_RECORD_DIR": str(tmp_path), **off})
    assert (redacted.record_transcripts, redacted.record_audio) == (False, False)
