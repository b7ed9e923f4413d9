"""The console script as a user runs it: `voice-bridge serve` in one process, `call` in another."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import wave
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent / "voice-bridge"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICE_BRIDGE_", "TWILIO_"))}
    env.update(extra)
    return env


@pytest.fixture
def served_bridge():  # noqa: ANN201
    port = _free_port()
    env = _env(TWILIO_AUTH_TOKEN="cli-test-token")
    server = subprocess.Popen(
        [str(BIN), "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as response:
                if response.status == 200:
                    break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise AssertionError(f"serve did not start: {server.stdout.read() if server.stdout else ''}")
            time.sleep(0.1)
    yield url, server
    server.terminate()
    server.wait(timeout=10)


def test_serve_and_call_from_the_command_line(served_bridge, tmp_path: Path) -> None:  # noqa: ANN001
    url, server = served_bridge
    record = tmp_path / "call.wav"
    result = subprocess.run(
        [str(BIN), "call", "--url", url, "--record", str(record)],
        env=_env(TWILIO_AUTH_TOKEN="cli-test-token"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "ended by the caller" in result.stdout
    assert "agent audio heard" in result.stdout
    with wave.open(str(record), "rb") as wav:
        assert wav.getnchannels() == 2 and wav.getframerate() == 8000
        assert wav.getnframes() > 8000 * 5
    assert record.stat().st_mode & 0o777 == 0o600  # a call's voices: private, as the bridge's recordings
    server.terminate()
    output = server.communicate(timeout=10)[0]
    first_line = output.splitlines()[0]
    assert "embedded local agent" in first_line, first_line
    assert server.returncode == 0


def test_call_with_the_wrong_token_is_refused(served_bridge) -> None:  # noqa: ANN001
    url, _ = served_bridge
    result = subprocess.run(
        [str(BIN), "call", "--url", url, "--auth-token", "not-the-token"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "HTTP 403" in result.stderr


def test_serve_refuses_to_start_without_a_twilio_token() -> None:
    result = subprocess.run([str(BIN), "serve"], env=_env(), capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "TWILIO_AUTH_TOKEN" in result.stderr and "VOICE_BRIDGE_INSECURE_DEV" in result.stderr
