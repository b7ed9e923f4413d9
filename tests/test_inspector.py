"""The call inspector (issue 19): its data function on every recorded fixture agrees with the
replay comparison (barge-in points, heard audio) and with the raw events (turns, latencies);
unknown event kinds, redacted and audio-less recordings; `voice-bridge inspect` and
`demo --inspect`. The page in a real browser: tests/test_inspector_browser.py."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bridge.cli import main
from bridge.devtools.inspect import inspect_data, render_html
from bridge.devtools.replay.compare import compare
from bridge.recording_format import REDACTED, load_recording, redact_text

CALLS = Path(__file__).resolve().parents[1] / "fixtures" / "calls"
FIXTURES = sorted(p for p in CALLS.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
BIN = Path(sys.executable).parent / "voice-bridge"


def _raw(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (path / "events.jsonl").read_text().splitlines() if line.strip()]


def _kind(e: dict[str, Any]) -> str:
    msg = e.get("msg") or {}
    return str(msg.get("event") or msg.get("type") or "")


def _expected_turns(events: list[dict[str, Any]]) -> list[tuple[float, dict[str, float]]]:
    """Straight from the events: after each end of speech, the first model audio, the first mark
    sent and that mark's echo (turns cut by a `clear` before their echo are left out)."""
    events = sorted(events, key=lambda e: e["t"])
    found = []
    for i, e in enumerate(events):
        if not (e["ch"] == "upstream" and e["dir"] == "in" and _kind(e) == "input_audio_buffer.speech_stopped"):
            continue
        rest = events[i + 1 :]
        audio = next((x["t"] for x in rest if x["dir"] == "in" and _kind(x).endswith("audio.delta")), None)
        mark = next((x for x in rest if x["ch"] == "twilio" and x["dir"] == "out" and _kind(x) == "mark"
                     and not x["msg"]["mark"]["name"].startswith("rtt.")), None)
        if audio is None or mark is None:
            found.append((e["t"], {}))  # never answered (the model failed)
            continue
        echo = next(x for x in rest if x["ch"] == "twilio" and x["dir"] == "in" and _kind(x) == "mark"
                    and x["msg"]["mark"]["name"] == mark["msg"]["mark"]["name"])
        if any(_kind(x) == "clear" and x["dir"] == "out" and x["t"] < echo["t"] for x in rest):
            continue
        t = e["t"]
        found.append((t, {"model_audio": audio - t, "media_sent": mark["t"] - t, "heard": echo["t"] - t}))
    return found


@pytest.mark.parametrize("call", FIXTURES, ids=lambda p: p.name)
def test_the_data_agrees_with_the_comparison_and_the_events(call: Path) -> None:
    recording = load_recording(call)
    data = inspect_data(recording)
    json.dumps(data)  # JSON-ready as it is
    comparison = compare(recording, recording)

    # Barge-in points: the truncations the comparison checks for drift, in order.
    assert [b["claimed_ms"] for b in data["barge_ins"]] == [d.recorded_ms for d in comparison.drifts]
    # The agent audio the caller heard: the chunks the comparison's SNR is computed over.
    assert data["heard_ms"] == pytest.approx(comparison.heard_ms, abs=0.1)
    for cut in data["barge_ins"]:
        assert 0 < cut["heard_ms"] <= cut["received_ms"]
        assert cut["clear_t"] is not None and cut["clear_t"] <= cut["t"]

    raw = _raw(call)
    turns = [t for t in data["turns"] if t["kind"] == "turn"]
    stops = [e for e in raw if _kind(e) == "input_audio_buffer.speech_stopped" and e["dir"] == "in"]
    assert len(turns) == len(stops)
    assert data["turns"][0]["kind"] == "greeting"
    by_time = {round(t["t"], 4): t for t in turns}
    for at, stages in _expected_turns(raw):
        if stages:
            assert by_time[round(at, 4)]["stages"] == pytest.approx(stages, abs=2e-4)
        else:
            assert "heard" not in by_time[round(at, 4)]["stages"]

    assert data["header"]["outcome"] == recording.meta["outcome"]["end_reason"]
    assert data["header"]["call_sid"] != recording.meta["call_sid"]  # masked
    assert data["header"]["call_sid"][-4:] == recording.meta["call_sid"][-4:]
    assert data["waveform"] is not None and data["audio"] is not None
    assert len(data["events"]) > 5 and {"connection", "model", "caller"} <= {e["row"] for e in data["events"]}


def test_a_barge_in_cuts_the_agent_text_where_the_caller_interrupted() -> None:
    data = inspect_data(load_recording(CALLS / "ga_barge_in"))
    (cut,) = [line for line in data["transcript"] if line["cut"]]
    assert cut["text"].startswith(cut["heard_text"]) and len(cut["heard_text"]) < len(cut["text"]) / 2
    (barge,) = data["barge_ins"]
    assert cut["end"] == pytest.approx(barge["clear_t"], abs=0.01)  # the heard lane stops at the clear
    whole = [line for line in data["transcript"] if not line["cut"]]
    assert whole and all("heard_text" not in line for line in whole)


def test_a_tool_call_and_keypad_digits_show_in_the_events_lane() -> None:
    tool = inspect_data(load_recording(CALLS / "voicelive_tool_call"))
    (span,) = [s for s in tool["spans"] if s["row"] == "tools"]
    assert span["label"] == "tool lookup_order ok" and span["end"] >= span["t"]
    dtmf = inspect_data(load_recording(CALLS / "voicelive_dtmf"))
    keys = [e for e in dtmf["events"] if e["kind"] == "dtmf"]
    assert len(keys) == 3 and all(e["row"] == "caller" and "digit=" in e["detail"] for e in keys)
    failing = inspect_data(load_recording(CALLS / "voicelive_error_fallback"))
    assert any(e["row"] == "problems" and e["kind"] == "error" for e in failing["events"])


def _copy(call: Path, into: Path, audio: bool = True) -> Path:
    target = into / call.name
    shutil.copytree(call, target, ignore=None if audio else shutil.ignore_patterns("*.wav"))
    return target


def test_unknown_event_kinds_show_by_their_own_name(tmp_path: Path) -> None:
    call = _copy(CALLS / "ga_two_turns", tmp_path)
    with (call / "events.jsonl").open("a") as events:
        events.write(json.dumps({"t": 5.0, "ch": "upstream", "s": 0, "dir": "in", "msg": {"type": "session.rollover_warning"}}) + "\n")
        events.write(json.dumps({"t": 6.0, "ch": "bridge", "dir": "out", "msg": {"type": "filler.played", "item_id": "f1"}}) + "\n")
    data = inspect_data(load_recording(call))
    rows = {e["kind"]: e["row"] for e in data["events"]}
    assert rows["session.rollover_warning"] == "problems"
    assert rows["filler.played"] == "other" and "other" in data["rows"]
    page = render_html(data)
    assert "filler.played" in page


def test_a_redacted_recording_shows_redacted_text(tmp_path: Path) -> None:
    call = _copy(CALLS / "voicelive_tool_call", tmp_path)
    lines = []
    for entry in _raw(call):
        if entry.get("msg"):
            redact_text(entry["ch"], entry["msg"])
        lines.append(json.dumps(entry))
    (call / "events.jsonl").write_text("\n".join(lines) + "\n")
    meta = json.loads((call / "meta.json").read_text())
    meta["redaction"]["transcripts"] = True
    (call / "meta.json").write_text(json.dumps(meta))
    data = inspect_data(load_recording(call))
    assert data["header"]["transcripts_redacted"] is True
    assert data["transcript"] and all(line["text"] == REDACTED for line in data["transcript"])
    assert "Thursday" not in render_html(data)
    (span,) = [s for s in data["spans"] if s["row"] == "tools"]
    assert span["label"].endswith("[redacted]")


def test_a_recording_without_audio_has_a_timeline_and_no_waveforms(tmp_path: Path) -> None:
    with_audio = inspect_data(load_recording(CALLS / "ga_barge_in"))
    data = inspect_data(load_recording(_copy(CALLS / "ga_barge_in", tmp_path, audio=False)))
    assert data["waveform"] is None and data["audio"] is None and data["header"]["audio_recorded"] is False
    for key in ("turns", "barge_ins", "events", "spans", "transcript", "heard_ms"):
        assert data[key] == with_audio[key], key


def test_the_page_embeds_one_json_block_that_cannot_close_its_script() -> None:
    data = inspect_data(load_recording(CALLS / "ga_greeting_only"))
    data["transcript"].append({"role": "agent", "t": 1.0, "end": 2.0, "text": "</script><script>alert(1)</script>", "cut": False})
    page = render_html(data)
    assert page.count("</script>") == 2 and "alert(1)" in page
    block = page.split('<script type="application/json" id="call-data">')[1].split("</script>")[0]
    assert json.loads(block) == json.loads(json.dumps(data))
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page
    without = render_html(inspect_data(load_recording(CALLS / "ga_greeting_only"), include_audio=False))
    assert len(without) < len(page) / 3


def test_inspect_writes_a_private_page_and_refuses_what_is_not_a_recording(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "call.html"
    assert main(["inspect", str(CALLS / "voicelive_barge_in"), "-o", str(out)]) == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert '<script type="application/json" id="call-data">' in out.read_text()
    assert main(["inspect", str(CALLS.parent / "audio"), "-o", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("voice-bridge inspect: ") and "not a recorded call" in err[0]
    assert not (tmp_path / "x.html").exists()
    assert main(["inspect", str(CALLS / "voicelive_barge_in"), "-o", str(tmp_path / "missing" / "x.html")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_demo_writes_the_inspector_page_of_its_call(tmp_path: Path) -> None:
    page = tmp_path / "demo.html"
    env = {**os.environ, "VOICE_BRIDGE_LOG_FORMAT": "console"}
    result = subprocess.run([str(BIN), "demo", "--speed", "8", "--log-level", "warning", "--inspect", str(page)],
                            env=env, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    assert f"inspector page           {page}" in result.stdout
    block = page.read_text().split('id="call-data">')[1].split("</script>")[0]
    data = json.loads(block)
    assert data["header"]["outcome"] and len([t for t in data["turns"] if t["kind"] == "turn"]) == 1
    assert data["audio"] is not None and data["transcript"]
    refused = subprocess.run([str(BIN), "demo", "--inspect", str(tmp_path / "nope" / "x.html")],
                             env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--inspect" in refused.stderr
