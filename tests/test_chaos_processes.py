"""Chaos suite (issue 13), part 2: cases that need a server of their own (a small
`VOICE_BRIDGE_MAX_CALLS`, a model that stops reading, a bad setting, a broken stdout).

Each server is `voice-bridge serve` as a real process, signatures on; the model is a scripted GA
server in this process (`chaos_harness.ChaosUpstream`) unless said otherwise.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from chaos_harness import (
    AUTH_TOKEN,
    BIN,
    NUMBERS,
    ChaosUpstream,
    GoodCall,
    Lab,
    ServeProcess,
    call_ended,
    clean_env,
    free_port,
    metric_value,
    open_raw_call,
    profiles_toml,
    voice_form,
    webhook,
)

from bridge import media_streams as ms


class Rig:
    """A lab, a scripted model and one server; stopped together."""

    def __init__(self, work: Path, name: str, env: dict[str, str], upstream: ChaosUpstream | None = None) -> None:
        self.lab = Lab()
        self.upstream = upstream or ChaosUpstream()
        self.lab.run(self.upstream.start())
        (work / "profiles.toml").write_text(profiles_toml())
        self.server = ServeProcess(
            work,
            {"VOICE_BRIDGE_UPSTREAM_URL": self.upstream.url, "VOICE_BRIDGE_PROFILES": str(work / "profiles.toml"), **env},
            name=name,
        )
        self.server.wait_healthy()

    def close(self) -> None:
        self.server.stop()
        self.lab.run(self.upstream.stop())
        self.lab.close()

    def no_exception_logged(self) -> None:
        forbidden = self.server.forbidden_since(0)
        assert not forbidden, f"exception in the logs: {forbidden[:3]}"


@pytest.fixture
def rig_factory(tmp_path: Path) -> Iterator[Any]:
    rigs: list[Rig] = []

    def make(name: str, upstream: ChaosUpstream | None = None, **env: str) -> Rig:
        work = tmp_path / name
        work.mkdir()
        rig = Rig(work, name, env, upstream)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()


# --- class 2: replay of a signed webhook, admission races ---------------------------------------


async def _stream_outcome(base: str, hook: Any, listen_s: float = 1.5) -> tuple[int | None, int]:
    """Open the stream `hook` offers and start it; (close code or None if still open, model audio frames)."""
    call = GoodCall(base, NUMBERS["talker"])
    try:
        await call.start(hook=hook)
    except Exception as exc:  # the upgrade itself refused: no stream
        return -403 if "403" in str(exc) else -1, 0
    await asyncio.sleep(listen_s)
    frames = len(call.arrivals)
    if call.alive:
        await call.hang_up()
        return None, frames
    await call.hang_up()
    return call.close_code, frames


def test_a_replayed_webhook_gets_no_second_live_stream_during_or_after_the_call(rig_factory: Any) -> None:
    rig = rig_factory("replay", VOICE_BRIDGE_MAX_CALLS="3")
    base = rig.server.url
    form = voice_form(to=NUMBERS["talker"])

    async def scenario() -> dict[str, Any]:
        first = await GoodCall(base, NUMBERS["talker"]).start(hook=await webhook(base, form))
        await asyncio.sleep(1.0)
        replay = await webhook(base, form)  # the same signed request, a second later
        during: tuple[int | None, int] | None = None
        if replay.stream_url is not None:
            during = await _stream_outcome(base, replay)
        first_still_live = first.alive and first.audio_since(time.monotonic() - 0.5) > 0
        first_code = await first.hang_up()
        await call_ended(base, form["CallSid"])
        await asyncio.sleep(0.5)
        after_hook = await webhook(base, form)  # replayed after the call ended
        after = await _stream_outcome(base, after_hook) if after_hook.stream_url is not None else None
        return {"during": during, "first_live": first_still_live, "first_code": first_code,
                "after": after, "after_twiml": after_hook.text[:300]}

    out = rig.lab.run(scenario(), timeout=40)
    print(f"\nreplay outcomes: {out}")
    assert out["first_live"], "the original call was disturbed by the replay"
    assert out["first_code"] == 1000
    if out["during"] is not None:
        code, frames = out["during"]
        assert code is not None and code != 1000, f"a replay during the call got a live second stream ({code})"
        assert frames == 0, "the replayed stream got model audio"
    if out["after"] is not None:
        code, frames = out["after"]
        assert code is not None and code != 1000 and frames == 0, (
            f"a replay after the call ended got a stream (close {code}, {frames} audio frames): {out['after_twiml']}"
        )
    rig.no_exception_logged()


def test_concurrent_replays_of_one_webhook_make_at_most_one_live_stream(rig_factory: Any) -> None:
    rig = rig_factory("replay-burst", VOICE_BRIDGE_MAX_CALLS="5")
    base = rig.server.url
    form = voice_form(to=NUMBERS["talker"])

    async def scenario() -> list[tuple[int | None, int]]:
        hooks = await asyncio.gather(*(webhook(base, form) for _ in range(5)))
        offered = [h for h in hooks if h.stream_url is not None]
        outcomes = await asyncio.gather(*(_stream_outcome(base, h, listen_s=2.0) for h in offered))
        await call_ended(base, form["CallSid"])
        return list(outcomes)

    outcomes = rig.lab.run(scenario(), timeout=40)
    live = [o for o in outcomes if o[0] is None and o[1] > 0]
    print(f"\nconcurrent replays: {outcomes}")
    assert len(live) <= 1, f"{len(live)} live streams for one CallSid: {outcomes}"
    rig.no_exception_logged()


def test_a_burst_of_calls_never_has_more_than_max_calls_in_progress(rig_factory: Any) -> None:
    max_calls = 2
    rig = rig_factory("burst", VOICE_BRIDGE_MAX_CALLS=str(max_calls))
    base = rig.server.url
    peak = {"gauge": 0.0, "live": 0}

    async def watch(stop: asyncio.Event, calls: list[GoodCall]) -> None:
        async with httpx.AsyncClient() as http:
            while not stop.is_set():
                text = (await http.get(f"{base}/metrics")).text
                peak["gauge"] = max(peak["gauge"], metric_value(text, "voice_bridge_active_calls"))
                now = time.monotonic()
                peak["live"] = max(peak["live"], sum(1 for c in calls if c.alive and c.audio_since(now - 0.3) > 0))
                await asyncio.sleep(0.05)

    async def one(calls: list[GoodCall]) -> None:
        hook = await webhook(base, voice_form(to=NUMBERS["talker"]))
        if hook.stream_url is None:
            return
        call = GoodCall(base, NUMBERS["talker"])
        calls.append(call)
        await call.start(hook=hook)

    async def scenario() -> None:
        calls: list[GoodCall] = []
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch(stop, calls))
        await asyncio.gather(*(one(calls) for _ in range(8)), return_exceptions=True)
        await asyncio.sleep(2.0)
        stop.set()
        await watcher
        for call in calls:
            if call.ws is not None:
                await call.hang_up()
            if call.hook is not None:
                await call_ended(base, call.hook.form["CallSid"])

    rig.lab.run(scenario(), timeout=60)
    print(f"\nburst of 8 calls with max {max_calls}: peak gauge {peak['gauge']}, peak live streams {peak['live']}")
    assert peak["gauge"] <= max_calls
    assert peak["live"] <= max_calls
    rig.no_exception_logged()


# --- class 3: stalled peers ---------------------------------------------------------------------


def _admitted_within(rig: Rig, seconds: float) -> float | None:
    """Seconds until a new call is admitted (its stream carries model audio), or None."""
    base = rig.server.url
    started = time.monotonic()

    async def attempt() -> bool:
        hook = await webhook(base, voice_form(to=NUMBERS["talker"]))
        if hook.stream_url is None:
            return False
        call = await GoodCall(base, NUMBERS["talker"]).start(hook=hook)
        await asyncio.sleep(0.8)
        ok = call.alive and len(call.arrivals) > 0
        await call.hang_up()
        await call_ended(base, hook.form["CallSid"])
        return ok

    while time.monotonic() - started < seconds:
        if rig.lab.run(attempt(), timeout=15):
            return time.monotonic() - started
        time.sleep(0.5)
    return None


@pytest.mark.parametrize("hang_up", ["stop_and_close_frame", "tcp_fin"])
def test_a_stalled_twilio_that_hangs_up_frees_its_slot(rig_factory: Any, hang_up: str) -> None:
    """Twilio stops reading (tiny receive buffer, nothing read) while the model talks, then hangs
    up (`stop` and a close frame, or its TCP half closed) and still reads nothing: with
    VOICE_BRIDGE_MAX_CALLS=1 the next caller must be admitted within the send/close deadline."""
    rig = rig_factory("stalled-twilio", VOICE_BRIDGE_MAX_CALLS="1")
    base = rig.server.url

    async def stall() -> Any:
        ws, hook, sid = await open_raw_call(base, to=NUMBERS["talker"], rcvbuf=2048, limit=1024)
        await asyncio.sleep(8.0)  # the model talks; nothing is read
        if hang_up == "tcp_fin":
            ws.sock.shutdown(socket.SHUT_WR)
        else:
            ws.send_nowait(ms.stop_message(sid, hook.form["CallSid"], hook.form["AccountSid"], 9))
            ws.writer.write(ws._frame(0x8, b"\x03\xe8"))
        return ws

    ws = rig.lab.run(stall(), timeout=20)
    try:
        admitted = _admitted_within(rig, 20.0)
    finally:
        ws.abort()
    print(f"\nstalled Twilio: next caller admitted after {admitted} s")
    assert admitted is not None, "the stalled call's slot was not freed within 20 s"
    assert admitted <= 10.0
    rig.no_exception_logged()


def test_a_stalled_model_does_not_stop_the_caller_hanging_up(rig_factory: Any) -> None:
    """The model stops reading (small receive buffer, reading paused) while the caller talks: the
    caller's `stop` is honoured within 1 s, the drop is counted, and the slot comes back."""
    upstream = ChaosUpstream(rcvbuf=4096, max_queue=1)
    rig = rig_factory("stalled-model", upstream=upstream, VOICE_BRIDGE_MAX_CALLS="1")
    base = rig.server.url

    async def scenario() -> tuple[int | None, float | None]:
        call = await GoodCall(base, NUMBERS["stall"]).start()
        await asyncio.sleep(8.0)  # about 0.5 MB of caller audio towards a model that reads nothing
        code = await call.hang_up(timeout=5.0)
        took = call.closed_at - call.stop_sent_at if call.closed_at and call.stop_sent_at else None
        await call_ended(base, call.hook.form["CallSid"] if call.hook else "")
        return code, took

    code, took = rig.lab.run(scenario(), timeout=30)
    dropped = metric_value(rig.server.metrics_text(), "voice_bridge_dropped_frames_total", '{reason="upstream_stalled"}')
    print(f"\nstalled model: stop honoured after {took} s (close {code}); dropped upstream_stalled {dropped}")
    assert took is not None, "the caller's stop was not honoured within 5 s"
    assert took <= 1.0, f"the caller's stop took {took:.2f} s"
    assert dropped > 0, 'no voice_bridge_dropped_frames_total{reason="upstream_stalled"}'
    admitted = _admitted_within(rig, 10.0)
    assert admitted is not None, "the slot of the call with the stalled model was not freed"
    rig.no_exception_logged()


# --- class 9: settings and signals --------------------------------------------------------------

BAD_SETTINGS = [
    ({"PORT": "abc"}, "PORT"),
    ({"VOICE_BRIDGE_LOG_LEVEL": "loud"}, "VOICE_BRIDGE_LOG_LEVEL"),
    ({"VOICE_BRIDGE_PREWARM": "maybe"}, "VOICE_BRIDGE_PREWARM"),
    ({"VOICE_BRIDGE_UPSTREAM_URL": "ws://"}, "VOICE_BRIDGE_UPSTREAM_URL"),
    ({"VOICE_BRIDGE_MAX_CALLS": "²"}, "VOICE_BRIDGE_MAX_CALLS"),
    ({"VOICE_BRIDGE_UPSTREAM": "voicelive", "AZURE_VOICELIVE_ENDPOINT": "myresource", "AZURE_VOICELIVE_MODEL": "gpt-realtime",
      "AZURE_VOICELIVE_API_KEY": "k" * 32}, "AZURE_VOICELIVE_ENDPOINT"),
    ({"VOICE_BRIDGE_AGENT_CLIPS": "/nonexistent/chaos-clips"}, "VOICE_BRIDGE_AGENT_CLIPS"),
]


@pytest.mark.parametrize(("env", "name"), BAD_SETTINGS, ids=[name + "=" + env.get(name, "") for env, name in BAD_SETTINGS])
def test_a_bad_setting_fails_start_with_one_line_naming_it(env: dict[str, str], name: str) -> None:
    full = clean_env(TWILIO_AUTH_TOKEN=AUTH_TOKEN, VOICE_BRIDGE_LOG_FORMAT="json", **env)
    args = [str(BIN), "serve"] + ([] if "PORT" in env else ["--port", str(free_port())])
    try:
        done = subprocess.run(args, env=full, capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{name}={env[name]!r}: serve started anyway ({(exc.stderr or b'')[-300:]!r})")
    output = (done.stdout + done.stderr).strip()
    lines = [line for line in output.splitlines() if line.strip()]
    assert done.returncode != 0
    assert "Traceback" not in output, output[-800:]
    assert len(lines) == 1, f"{len(lines)} lines: {output[-800:]}"
    assert name in lines[0]


def test_help_works_whatever_port_says() -> None:
    done = subprocess.run([str(BIN), "serve", "--help"], env=clean_env(PORT="abc"), capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr[-500:]
    assert "Traceback" not in done.stderr


def test_say_with_a_missing_file_is_one_line() -> None:
    done = subprocess.run([str(BIN), "demo", "--say", "/nonexistent/chaos.wav"], env=clean_env(), capture_output=True,
                          text=True, timeout=30)
    output = (done.stdout + done.stderr).strip()
    assert done.returncode != 0
    assert "Traceback" not in output, output[-800:]
    assert len(output.splitlines()) == 1 and "chaos.wav" in output


def test_sigterm_with_stdout_and_stderr_broken_pipes_still_drains_and_exits() -> None:
    port = free_port()
    env = clean_env(TWILIO_AUTH_TOKEN=AUTH_TOKEN, VOICE_BRIDGE_LOG_FORMAT="json", VOICE_BRIDGE_DRAIN_SECONDS="1")
    proc = subprocess.Popen([str(BIN), "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if b"bridge.ready" in line or not line:
                break
        # Ready; now nobody reads its output any more.
        proc.stdout.close()
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        # Something that logs, so that the pipe is known broken before the signal.
        httpx.post(f"{url}/voice", data={"CallSid": "CA" + "1" * 32}, timeout=5)  # unsigned: a warning is logged
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(15)
        except subprocess.TimeoutExpired:
            pytest.fail("SIGTERM with a broken stdout: still running 15 s later")
        assert code == 0, f"exit {code}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)

