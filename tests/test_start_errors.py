"""Configuration and argument mistakes stop `voice-bridge` at once with one line naming the culprit
(issue 13, class 9): the real console script, as a subprocess, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent / "voice-bridge"
SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "audio" / "caller_question.wav"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICE_BRIDGE_", "TWILIO_", "AZURE_", "OPENAI_", "PORT"))}
    env.update(TWILIO_AUTH_TOKEN="start-errors-token", **extra)
    return env


VOICELIVE = {"VOICE_BRIDGE_UPSTREAM": "voicelive", "AZURE_VOICELIVE_MODEL": "gpt-realtime", "AZURE_VOICELIVE_API_KEY": "k"}

# (variable named in the one line, extra environment)
BAD_ENV = [
    ("PORT", {"PORT": "abc"}),
    ("PORT", {"PORT": "70000"}),
    ("PORT", {"PORT": "8²"}),
    ("VOICE_BRIDGE_LOG_LEVEL", {"VOICE_BRIDGE_LOG_LEVEL": "loud"}),
    ("VOICE_BRIDGE_LOG_FORMAT", {"VOICE_BRIDGE_LOG_FORMAT": "xml"}),
    ("VOICE_BRIDGE_PREWARM", {"VOICE_BRIDGE_PREWARM": "maybe"}),
    ("VOICE_BRIDGE_INSECURE_DEV", {"VOICE_BRIDGE_INSECURE_DEV": "sure"}),
    ("VOICE_BRIDGE_LOG_TRANSCRIPTS", {"VOICE_BRIDGE_LOG_TRANSCRIPTS": "2"}),
    ("VOICE_BRIDGE_RECORD_AUDIO", {"VOICE_BRIDGE_RECORD_AUDIO": "nah"}),
    ("VOICE_BRIDGE_UPSTREAM_URL", {"VOICE_BRIDGE_UPSTREAM_URL": "ws://"}),
    ("VOICE_BRIDGE_UPSTREAM_URL", {"VOICE_BRIDGE_UPSTREAM_URL": "ws://host:99999/x"}),
    ("VOICE_BRIDGE_UPSTREAM_URL", {"VOICE_BRIDGE_UPSTREAM_URL": "https://host/x"}),
    ("VOICE_BRIDGE_PUBLIC_URL", {"VOICE_BRIDGE_PUBLIC_URL": "https://"}),
    ("AZURE_VOICELIVE_ENDPOINT", {**VOICELIVE, "AZURE_VOICELIVE_ENDPOINT": "myresource"}),
    ("AZURE_VOICELIVE_ENDPOINT", {"AZURE_VOICELIVE_ENDPOINT": "myresource"}),
    ("AZURE_VOICELIVE_ENDPOINT", {**VOICELIVE, "AZURE_VOICELIVE_ENDPOINT": "ftp://x.example.com"}),
    ("AZURE_OPENAI_ENDPOINT", {"AZURE_OPENAI_ENDPOINT": "https://res:port"}),
    ("AZURE_VOICELIVE_MODEL", {**VOICELIVE, "AZURE_VOICELIVE_ENDPOINT": "https://r.services.ai.azure.com", "AZURE_VOICELIVE_MODEL": ""}),
    ("VOICE_BRIDGE_AGENT_CLIPS", {"VOICE_BRIDGE_AGENT_CLIPS": "/no/such/clips"}),
    ("VOICE_BRIDGE_ORDERS_FILE", {"VOICE_BRIDGE_ORDERS_FILE": "/no/such/orders.json"}),
    ("VOICE_BRIDGE_PROFILES", {"VOICE_BRIDGE_PROFILES": "/no/such/profiles.toml"}),
    ("VOICE_BRIDGE_MAX_CALLS", {"VOICE_BRIDGE_MAX_CALLS": "²"}),
    ("VOICE_BRIDGE_MAX_CALLS", {"VOICE_BRIDGE_MAX_CALLS": "9" * 5000}),
    ("VOICE_BRIDGE_MAX_CALLS", {"VOICE_BRIDGE_MAX_CALLS": "0"}),
    ("VOICE_BRIDGE_DRAIN_SECONDS", {"VOICE_BRIDGE_DRAIN_SECONDS": "-1"}),
    ("VOICE_BRIDGE_APPEND_MS", {"VOICE_BRIDGE_APPEND_MS": "30"}),
    ("VOICE_BRIDGE_UPSTREAM", {"VOICE_BRIDGE_UPSTREAM": "gemini"}),
    ("VOICE_BRIDGE_AUDIO", {"VOICE_BRIDGE_AUDIO": "opus"}),
    ("VOICE_BRIDGE_DTMF", {"VOICE_BRIDGE_DTMF": "maybe"}),
    ("VOICE_BRIDGE_FALLBACK_NUMBER", {"VOICE_BRIDGE_FALLBACK_NUMBER": "555-1234"}),
    ("TWILIO_ACCOUNT_SID", {"TWILIO_ACCOUNT_SID": "not-a-sid"}),
    ("OPENAI_API_KEY", {"VOICE_BRIDGE_UPSTREAM": "openai"}),
]


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(("variable", "env"), BAD_ENV, ids=[f"{v}-{i}" for i, (v, _) in enumerate(BAD_ENV)])
def test_serve_with_a_bad_variable_stops_with_one_line_naming_it(variable: str, env: dict[str, str]) -> None:
    result = subprocess.run([str(BIN), "serve", "--port", "1"], env=_env(**env), capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    line = _one_line(result)
    assert line.startswith("voice-bridge: configuration error: ") and variable in line, line


def test_help_works_whatever_port_says() -> None:
    for argv in (["--help"], ["serve", "--help"]):
        result = subprocess.run([str(BIN), *argv], env=_env(PORT="abc"), capture_output=True, text=True, timeout=30)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        assert "usage: voice-bridge" in result.stdout


@pytest.mark.parametrize("command", ["call", "demo"])
def test_call_and_demo_check_their_files_before_calling(command: str, tmp_path: Path) -> None:
    not_wav = tmp_path / "notes.txt"
    not_wav.write_text("not audio")
    cases = [
        (["--say", str(tmp_path / "missing.wav")], "--say"),
        (["--say", str(not_wav)], "--say"),
        (["--say", str(tmp_path)], "--say"),  # a folder
        (["--record", str(tmp_path / "no" / "such" / "call.wav")], "--record"),
    ]
    # `call` at a port nobody listens on: a check that came after the network would say so instead.
    url = ["--url", "http://127.0.0.1:9"] if command == "call" else []
    for args, named in cases:
        result = subprocess.run([str(BIN), command, *url, *args], env=_env(), capture_output=True, text=True, timeout=30)
        assert result.returncode == 2, (args, result.stderr)
        line = _one_line(result)
        assert line.startswith(f"voice-bridge {command}: {named} "), line


def test_demo_and_agent_check_the_clips_folder(tmp_path: Path) -> None:
    result = subprocess.run([str(BIN), "demo"], env=_env(VOICE_BRIDGE_AGENT_CLIPS=str(tmp_path)), capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "VOICE_BRIDGE_AGENT_CLIPS" in _one_line(result)
    result = subprocess.run([str(BIN), "agent", "--clips", str(tmp_path / "none")], env=_env(), capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "--clips" in _one_line(result)


def test_broken_clips_are_a_configuration_error_not_a_startup_traceback(tmp_path: Path) -> None:
    (tmp_path / "clips.json").write_text('{"greeting": {"file": "missing.wav", "text": "hi"}}')
    result = subprocess.run([str(BIN), "serve", "--port", "1"], env=_env(VOICE_BRIDGE_AGENT_CLIPS=str(tmp_path)),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "VOICE_BRIDGE_AGENT_CLIPS" in _one_line(result)
