"""Secrets never reach a log line, at any level; recordings are private files whatever the umask."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import structlog
from conftest import AUTH_TOKEN, caller_clip, run

from bridge.devtools.agent import LocalAgent
from bridge.devtools.phone import place_call
from bridge.devtools.phone.caller import CallerPlan
from bridge.logs import configure_logging, get_logger
from bridge.recording_format import make_private_dir, open_private
from bridge.settings import Settings
from bridge.upstream import UpstreamUnavailable, redact_url, scrub

BIN = Path(sys.executable).parent / "voice-bridge"

USER, PASSWORD = "s3cr3t-USER", "s3cr3t-PASSWORD"
API_KEY, KEY, SIG = "s3cr3t-API-KEY-value", "s3cr3t-KEY-value", "s3cr3t-SIG-value"
STREAM_KEY = "s3cr3t-stream-token-key-0123456789abcdef"
SECRETS = (USER, PASSWORD, API_KEY, KEY, SIG, STREAM_KEY, AUTH_TOKEN)


def _url(port: int) -> str:
    return f"ws://{USER}:{PASSWORD}@127.0.0.1:{port}/v1/realtime?model=m&api-key={API_KEY}&key={KEY}&sig={SIG}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _private(mode: int, want: int) -> bool:
    return stat.S_IMODE(mode) == want


def test_no_secret_in_any_log_line_at_debug_through_calls_and_a_failed_connect(tmp_path: Path) -> None:
    """`voice-bridge serve` at debug with the secrets in VOICE_BRIDGE_UPSTREAM_URL (user info and
    query), recording on, umask 000: one good call, then the upstream goes away and a call fails."""
    port = _free_port()
    record_dir = tmp_path / "recordings"
    log_path = tmp_path / "serve.log"  # a file, not a pipe: debug logging would fill a pipe and block

    async def scenario() -> str:
        agent = LocalAgent()
        await agent.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICE_BRIDGE_", "TWILIO_"))}
        env.update(
            TWILIO_AUTH_TOKEN=AUTH_TOKEN,
            VOICE_BRIDGE_UPSTREAM_URL=_url(agent.port),
            VOICE_BRIDGE_STREAM_TOKEN_KEY=STREAM_KEY,
            VOICE_BRIDGE_LOG_LEVEL="debug",
            VOICE_BRIDGE_LOG_FORMAT="json",
            VOICE_BRIDGE_RECORD_DIR=str(record_dir),
            VOICE_BRIDGE_DRAIN_SECONDS="0",
        )
        log_file = log_path.open("w")
        server = subprocess.Popen(
            [str(BIN), "serve", "--port", str(port)],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=lambda: os.umask(0),  # noqa: PLW1509 - the files must be private whatever the umask
        )
        url = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient() as http:
                deadline = time.monotonic() + 20
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        if (await http.get(f"{url}/readyz")).status_code == 200:
                            break
                    assert time.monotonic() < deadline and server.poll() is None, "serve did not start"
                    await asyncio.sleep(0.1)
            plan = CallerPlan(utterances=(caller_clip("caller_question.wav"),), pause_s=0.6, hangup_after_s=0.5)
            good = await place_call(url, plan, auth_token=AUTH_TOKEN)
            assert good.agent_audio_s > 0.5, good.summary()
            await agent.stop()  # the upstream is gone: the next call's connect fails
            failed = await place_call(url, CallerPlan(hangup_after_s=0.5, max_call_s=15), auth_token=AUTH_TOKEN)
            assert failed.ended_by in ("bridge", "webhook"), failed.summary()
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=25)
            finally:
                if server.poll() is None:
                    server.kill()
                log_file.close()
        return log_path.read_text()

    output = run(scenario(), timeout=90)
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    events = {line.get("event") for line in lines}
    assert {"voice-bridge.starting", "bridge.ready", "upstream.connected"} <= events, events
    assert any(line.get("level") == "debug" for line in lines)  # debug really was on
    assert "call.upstream_failed" in events or any("unavailable" in json.dumps(line) for line in lines), events
    for secret in SECRETS:
        assert secret not in output, f"{secret} is in the log"
    ready = next(line for line in lines if line["event"] == "bridge.ready")
    assert ready["upstream_url"] == "ws://127.0.0.1:{}/v1/realtime?model=m&api-key=***&key=***&sig=***".format(
        ready["upstream_url"].split(":")[2].split("/")[0]
    )
    # The recordings: folders 0700, files 0600 (the process ran with umask 000), no secret inside.
    calls = [p for p in record_dir.iterdir() if p.is_dir()]
    assert len(calls) == 2
    assert _private(record_dir.stat().st_mode, 0o700)
    for path in [*calls, *(f for c in calls for f in c.iterdir())]:
        want = 0o700 if path.is_dir() else 0o600
        assert _private(path.stat().st_mode, want), f"{path}: {oct(stat.S_IMODE(path.stat().st_mode))}"
    for meta in record_dir.glob("*/meta.json"):
        text = meta.read_text()
        assert "api-key=***" in text and not any(secret in text for secret in SECRETS)


def test_private_files_and_folders_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        make_private_dir(tmp_path / "a" / "b")
        with open_private(tmp_path / "a" / "b" / "f.txt", "w") as f:
            f.write("x")
        make_private_dir(tmp_path / "a" / "b", exist_ok=True)  # already there: fine
        with pytest.raises(FileExistsError):
            make_private_dir(tmp_path / "a" / "b")
        (tmp_path / "link").symlink_to(tmp_path / "target")
        with pytest.raises(OSError):  # a planted symlink is not followed
            open_private(tmp_path / "link", "wb")
        assert not (tmp_path / "target").exists()
    finally:
        os.umask(old)
    assert _private((tmp_path / "a" / "b").stat().st_mode, 0o700)
    assert _private((tmp_path / "a" / "b" / "f.txt").stat().st_mode, 0o600)


@pytest.mark.parametrize(
    "url",
    [
        "wss://user:pa%3Ass@host.example/rt?api-key=abcd1234&model=m",
        "wss://host.example/rt?code=abcd1234&session=efgh5678&x-credential=ijkl9012",
    ],
)
def test_exception_text_that_quotes_the_url_is_scrubbed(url: str) -> None:
    for cause in (ValueError(f"{url} isn't a valid URI"), OSError(f"connect to {url} failed")):
        text = str(UpstreamUnavailable(url, 1, cause))
        for secret in ("pa%3Ass", "pa:ss", "abcd1234", "efgh5678", "ijkl9012"):
            assert secret not in text, text
        assert redact_url(url) in text
    assert scrub("nothing to hide", url) == "nothing to hide"


def test_the_log_masker_covers_every_logger_and_level() -> None:
    settings = Settings(twilio_auth_token=AUTH_TOKEN, upstream_url=_url(9000), stream_token_key=STREAM_KEY)
    assert USER not in repr(settings) and API_KEY not in repr(settings)
    buffer = io.StringIO()
    stderr, sys.stderr = sys.stderr, buffer
    try:
        configure_logging("json", "debug", redact=settings.secret_values())
        get_logger("test").debug("ours", url=_url(9000), token=AUTH_TOKEN)
        logging.getLogger("websockets.server").debug("theirs %s", f"Authorization: {PASSWORD} {STREAM_KEY}")
        try:
            raise RuntimeError(f"failed on {_url(9000)}")
        except RuntimeError:
            get_logger("test").exception("crashed")
    finally:
        sys.stderr = stderr
        configure_logging()
        structlog.reset_defaults()
    text = buffer.getvalue()
    assert text.count("\n") >= 3 and "***" in text
    for secret in SECRETS:
        assert secret not in text, text
