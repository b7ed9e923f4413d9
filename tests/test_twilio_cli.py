"""`voice-bridge twilio configure|check`: inputs checked before Twilio is contacted, and every
failure (bad input, Twilio unreachable, Twilio says no) one line on stderr (issue 13, class 9)."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from twilio_api import FakeTwilioApi

from bridge.cli import run_twilio_command

BIN = Path(sys.executable).parent / "voice-bridge"
ACCOUNT = "AC" + "1" * 32
NUMBER = "+15551234567"

BAD_INPUTS = [
    ("--number", ["--number", "5551234567", "--url", "https://bridge.example.com"]),
    ("--number", ["--number", "+0123", "--url", "https://bridge.example.com"]),
    ("--number", ["--number", "+1555²234567", "--url", "https://bridge.example.com"]),
    ("--url", ["--number", NUMBER, "--url", "http://bridge.example.com"]),
    ("--url", ["--number", NUMBER, "--url", "bridge.example.com"]),
    ("--url", ["--number", NUMBER, "--url", "https://"]),
    ("--url", ["--number", NUMBER, "--url", "https://bridge.example.com:99999"]),
    ("--url", ["--number", NUMBER, "--url", "https://bridge.example.com/?x=1"]),
]


def _one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def _namespace(command: str, argv: list[str]) -> argparse.Namespace:
    values = dict(zip(argv[::2], argv[1::2], strict=True))
    return argparse.Namespace(twilio_command=command, number=values["--number"], url=values["--url"])


@pytest.mark.parametrize("command", ["configure", "check"])
def test_bad_inputs_are_refused_before_twilio_is_asked(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeTwilioApi(ACCOUNT) as api:
        api.add_number(NUMBER)
        for named, argv in BAD_INPUTS:
            assert run_twilio_command(_namespace(command, argv), api.client()) == 2
            assert named in _one_line(capsys.readouterr().err)
        assert api.requests == []


def _env(proxy_port: int) -> dict[str, str]:
    """The real CLI with credentials, its HTTPS going through a local proxy port (no real Twilio)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "VOICE_BRIDGE_")) and "proxy" not in k.lower()}
    env.update(TWILIO_ACCOUNT_SID=ACCOUNT, TWILIO_AUTH_TOKEN="t" * 32, HTTPS_PROXY=f"http://127.0.0.1:{proxy_port}")
    return env


def test_the_command_line_refuses_bad_inputs_without_a_connection() -> None:
    with socket.socket() as listener:  # stands where the network would be: any attempt shows up here
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        for command in ("configure", "check"):
            for named, argv in BAD_INPUTS[::3]:
                result = subprocess.run([str(BIN), "twilio", command, *argv], env=_env(listener.getsockname()[1]),
                                        capture_output=True, text=True, timeout=30)
                assert result.returncode == 2 and named in _one_line(result.stderr)
        with pytest.raises(BlockingIOError):
            listener.accept()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("command", ["configure", "check"])
def test_an_unreachable_twilio_api_is_one_line_and_exit_1(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeTwilioApi(ACCOUNT) as api:
        client = api.client()
    # The fake API has shut down: its port is closed, so every request is refused.
    args = argparse.Namespace(twilio_command=command, number=NUMBER, url="https://bridge.example.com")
    assert run_twilio_command(args, client) == 1
    assert "cannot reach the Twilio API" in _one_line(capsys.readouterr().err)
    result = subprocess.run([str(BIN), "twilio", command, "--number", NUMBER, "--url", "https://bridge.example.com"],
                            env=_env(_closed_port()), capture_output=True, text=True, timeout=30)
    assert result.returncode == 1, result.stderr
    assert "cannot reach the Twilio API" in _one_line(result.stderr)


def test_a_twilio_error_answer_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeTwilioApi("AC" + "2" * 32) as api:  # another account: the number's URL is not found there
        client = FakeTwilioApi.client(api)
        client.username = client.account_sid = ACCOUNT
        args = argparse.Namespace(twilio_command="check", number=NUMBER, url="https://bridge.example.com")
        assert run_twilio_command(args, client) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("voice-bridge twilio: Twilio") and "HTTP 404" in line, line
