"""Stalled peers and huge model deltas (issue 13, classes 3 and 8), over real sockets.

On loopback a peer that stops reading hides behind megabytes of socket buffer, so the stalls are
made real with small buffers: the Twilio-side client connects with a small SO_RCVBUF and stops
reading (websockets then stops reading its socket too, `max_queue`), the bridge's send buffer to
Twilio is shrunk through `AbortableWebSocketProtocol.send_buffer_bytes`, and a stalled model is a
scripted upstream listening with a small SO_RCVBUF that stops reading. The deadlines are lowered
through `Settings.peer_deadlines`. Assertions are about outcomes (end reason, log event, metric,
slot, close), with generous bounds; never about speed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import AUDIO, AUTH_TOKEN, capture_logs, metrics_text, open_signed_stream, read_wav, run, running_bridge, settle
from scripted_upstream import ScriptedSession, ScriptedUpstream

from bridge import upstream as upstream_module
from bridge.call import caller_output
from bridge.deadlines import PeerDeadlines
from bridge import media_streams as ms
from bridge.devtools.phone import place_call
from bridge.devtools.phone.caller import CallerPlan
from bridge.serving import AbortableWebSocketProtocol

GREETING, _ = read_wav(AUDIO / "agent_greeting.wav")
SMALL_BUFFER = 4096
SILENCE_FRAME = b"\xff" * 160  # 20 ms of μ-law silence
FALLBACK = "+15550100999"






def long_speech(seconds: float) -> bytes:
    """`seconds` of the greeting, repeated: PCM16 24 kHz."""
    repeats = int(seconds * 24000 / len(GREETING)) + 1
    return np.tile(GREETING, repeats)[: int(seconds * 24000)].tobytes()


async def start_stream(url: str, **options: Any) -> tuple[Any, str, str]:
    """A raw Twilio stream up to `start`; returns (websocket, call_sid, stream_sid)."""
    ws, call_sid, params = await open_signed_stream(url, **options)
    stream_sid = "MZ" + call_sid[2:]
    await ws.send(ms.connected_message())
    await ws.send(ms.start_message(stream_sid, call_sid, "AC" + "0" * 32, params))
    return ws, call_sid, stream_sid


def media(stream_sid: str, sequence: int) -> str:
    return ms.inbound_media_message(stream_sid, SILENCE_FRAME, chunk=sequence, timestamp_ms=20 * sequence, sequence=sequence + 2)


def stop_message(stream_sid: str) -> str:
    return json.dumps({"event": "stop", "sequenceNumber": "999", "streamSid": stream_sid, "stop": {"accountSid": "AC", "callSid": "CA"}})


async def wait_closed(ws: Any, timeout: float) -> float:
    """Seconds until the bridge closed `ws` (reading and discarding what it still sends)."""
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        async for _ in ws:
            pass
    return time.monotonic() - started


async def after_stream(url: str, call_sid: str) -> str:
    """What Twilio gets when it asks `/voice/after-stream` about `call_sid` (signed, as Twilio does)."""
    import urllib.parse

    import httpx

    from twiml.signatures import TwilioSigner

    form = {"CallSid": call_sid, "AccountSid": "AC" + "0" * 32}
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": TwilioSigner(AUTH_TOKEN).sign(f"{url}/voice/after-stream", form),
    }
    async with httpx.AsyncClient() as http:
        answer = await http.post(f"{url}/voice/after-stream", content=urllib.parse.urlencode(form), headers=headers)
    answer.raise_for_status()
    return answer.text


def ended(logs: list[dict[str, Any]], call_sid: str) -> list[str]:
    return [e["reason"] for e in logs if e["event"] == "call.ended" and e.get("call_sid") == call_sid]


def no_crash(logs: list[dict[str, Any]]) -> bool:
    return not [e for e in logs if e["event"] in ("call.failed", "call.crashed") or e.get("exc_info")]


@pytest.fixture
def small_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bridge's own send buffers shrunk (test hooks), to both peers."""
    monkeypatch.setattr(AbortableWebSocketProtocol, "send_buffer_bytes", SMALL_BUFFER)
    monkeypatch.setattr(upstream_module, "SEND_BUFFER_BYTES", SMALL_BUFFER)


# Short deadlines, through the settings (`running_bridge(peer_deadlines=...)`).
SHORT = PeerDeadlines(twilio_send_s=0.5, twilio_close_linger_s=0.5, upstream_send_s=1.5)


# --- (a) Twilio stops reading --------------------------------------------------------------------


def test_a_stalled_twilio_is_cut_off_and_frees_its_slot_while_another_call_goes_on(small_buffers: None) -> None:
    async def script(session: ScriptedSession) -> None:
        await session.greet(long_speech(30.0))  # far more than any buffer on the way holds
        await session.drain()

    async def scenario() -> None:
        async with ScriptedUpstream(script) as upstream:
            with capture_logs() as logs:
                async with running_bridge(upstream_url=upstream.url, max_calls=2, prewarm=False, peer_deadlines=SHORT) as (url, app):
                    bridge = app.state.bridge
                    healthy = asyncio.create_task(
                        place_call(url, CallerPlan(hangup_after_s=4.0, max_call_s=30), auth_token=AUTH_TOKEN)
                    )
                    # Twilio that reads nothing: small receive buffer, websockets stops reading too.
                    ws, call_sid, _ = await start_stream(url, receive_buffer=SMALL_BUFFER, max_queue=1)
                    t0 = time.monotonic()
                    stalled = lambda: any(e["event"] == "twilio.stalled" for e in logs)  # noqa: E731
                    assert await settle(stalled, timeout=15), "the bridge never found Twilio stalled"
                    # The call is over and its slot free within the deadline (plus the closes).
                    assert await settle(lambda: bridge.admission.active(bridge.clock()) == 1, timeout=2.0)  # the healthy one
                    freed_after = time.monotonic() - t0
                    ws.transport.abort()  # ... and then Twilio hangs up
                    report = await healthy
                    assert await settle(lambda: not bridge.active_calls, timeout=5)
                    metrics = await metrics_text(url)
        assert ended(logs, call_sid) == ["twilio_stalled"]
        event = next(e for e in logs if e["event"] == "twilio.stalled")
        assert event["call_sid"] == call_sid and event["aborted"] is True and event["log_level"] == "warning"
        assert 'voice_bridge_peer_stalls_total{peer="twilio"} 1.0' in metrics
        assert 'voice_bridge_calls_total{outcome="twilio_stalled"} 1.0' in metrics
        # The healthy call beside it went on undisturbed, start to finish.
        assert report.ended_by == "caller" and report.agent_audio_s > 1.0, report.summary()
        assert ended(logs, report.call_sid) == ["caller_hangup"]
        assert no_crash(logs)
        print(f"stalled Twilio freed {freed_after:.2f} s after its stream started")

    run(scenario(), timeout=60)


def test_a_stop_from_a_twilio_that_stopped_reading_is_honoured_within_a_second(small_buffers: None) -> None:
    deadlines = replace(SHORT, twilio_send_s=30.0)  # the stop, not the send deadline, ends it

    async def script(session: ScriptedSession) -> None:
        await session.greet(long_speech(30.0))
        await session.drain()

    async def scenario() -> None:
        async with ScriptedUpstream(script) as upstream:
            with capture_logs() as logs:
                async with running_bridge(upstream_url=upstream.url, max_calls=1, prewarm=False, peer_deadlines=deadlines) as (url, app):
                    bridge = app.state.bridge
                    ws, call_sid, stream_sid = await start_stream(url, receive_buffer=SMALL_BUFFER, max_queue=1)
                    await asyncio.sleep(1.5)  # the bridge's sends are blocked by now
                    t0 = time.monotonic()
                    await ws.send(stop_message(stream_sid))
                    assert await settle(lambda: ended(logs, call_sid) != [], timeout=1.0), "stop not honoured within 1 s"
                    assert await settle(lambda: bridge.admission.active(bridge.clock()) == 0, timeout=1.0)
                    took = time.monotonic() - t0
                    ws.transport.abort()
        assert ended(logs, call_sid) == ["caller_hangup"]
        # The model was healthy: its session closed cleanly (what it still sent was read and
        # dropped), not by waiting out the close deadline and cutting the connection.
        assert not [e for e in logs if e["event"] == "upstream.close_timeout"]
        # Twilio's close, past its deadline, was an abort, logged for this call.
        closing = [e for e in logs if e["event"] == "twilio.stalled"]
        assert [(e["during"], e.get("call_sid")) for e in closing] == [("close", call_sid)]
        assert no_crash(logs)
        print(f"stop honoured after {took:.3f} s")

    run(scenario(), timeout=60)


def open_connections(port: int) -> int:
    """TCP connections of this host whose local port is `port`, listening sockets aside (Linux)."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for row in rows if int(row.split()[1].split(":")[1], 16) == port and row.split()[3] != "0A")


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="counts connections through /proc/net/tcp")
@pytest.mark.parametrize("hang_up", ["stop", "stop_and_close_frame"])
def test_a_twilio_that_never_takes_the_close_frame_is_cut_off_after_the_linger(small_buffers: None, hang_up: str) -> None:
    """Twilio stops reading after a little audio (the bridge's sends never blocked, so the close
    could be handed over) and hangs up with `stop` (and its own close frame): our close frame, or
    the echo of Twilio's, waits behind audio it never reads. The connection is cut after
    CLOSE_LINGER_S, rather than held by the server for as long as the peer keeps it open."""

    async def script(session: ScriptedSession) -> None:
        await session.greet(long_speech(3.0))  # tens of kB: more than both small buffers hold, less than what blocks a send
        await session.drain()

    async def scenario() -> None:
        async with ScriptedUpstream(script) as upstream:
            with capture_logs() as logs:
                async with running_bridge(upstream_url=upstream.url, max_calls=1, prewarm=False, peer_deadlines=SHORT) as (url, app):
                    port = int(url.rsplit(":", 1)[1])
                    ws, call_sid, stream_sid = await start_stream(url, receive_buffer=SMALL_BUFFER, max_queue=1)
                    await asyncio.sleep(1.5)  # the greeting has been handed over; nothing is read
                    await ws.send(stop_message(stream_sid))
                    if hang_up == "stop_and_close_frame":
                        ws.protocol.send_close(1000)  # the frame only: websockets' close() would wait for the echo
                        ws.send_data()
                    assert await settle(lambda: ended(logs, call_sid) != [], timeout=1.0)
                    assert open_connections(port) == 1  # the close frame is queued, the socket still open
                    assert await settle(lambda: open_connections(port) == 0, timeout=3.0), "the connection was never cut"
                    metrics = await metrics_text(url)
                    ws.transport.abort()
        assert ended(logs, call_sid) == ["caller_hangup"]
        cut = [e for e in logs if e["event"] == "twilio.stalled"]
        assert [(e["during"], e.get("call_sid"), e["aborted"]) for e in cut] == [("linger", call_sid, True)]
        assert 'voice_bridge_peer_stalls_total{peer="twilio"} 1.0' in metrics
        assert no_crash(logs)

    run(scenario(), timeout=30)


# --- (b) the model stops reading -----------------------------------------------------------------


def stalling_model(stalled_sessions: set[int]) -> tuple[Any, list[asyncio.Event]]:
    """Sessions whose index is in `stalled_sessions` greet, then stop reading for good."""
    greeted = [asyncio.Event() for _ in range(8)]

    async def script(session: ScriptedSession) -> None:
        index = len(script.sessions) - 1  # type: ignore[attr-defined]
        await session.greet(GREETING[:12000].tobytes())
        greeted[index].set()
        if index in stalled_sessions:
            await session.ws.wait_closed()  # reads nothing more, until the bridge cuts the connection
        await session.drain()

    return script, greeted


async def talk(ws: Any, stream_sid: str, seconds: float) -> int:
    """Send caller audio in real time; returns the frames sent (stops quietly if the socket closes)."""
    sent = 0
    try:
        for sequence in range(int(seconds * 50)):
            await ws.send(media(stream_sid, sequence))
            sent += 1
            await asyncio.sleep(0.02)
    except Exception:
        pass
    return sent


def test_b_a_stalled_model_costs_dropped_audio_then_the_fallback_and_never_blocks_the_caller(small_buffers: None) -> None:
    stalled_script, greeted = stalling_model({0, 1})

    async def scenario() -> None:
        async with ScriptedUpstream(stalled_script, receive_buffer=SMALL_BUFFER, max_queue=1) as upstream:
            stalled_script.sessions = upstream.sessions  # type: ignore[attr-defined]
            with capture_logs() as logs:
                async with running_bridge(upstream_url=upstream.url, max_calls=3, prewarm=False, peer_deadlines=SHORT, fallback_number=FALLBACK) as (url, app):
                    bridge = app.state.bridge
                    # Call 1: keeps talking into a model that reads nothing: the fallback path.
                    ws1, sid1, stream1 = await start_stream(url)
                    await asyncio.wait_for(greeted[0].wait(), 10)
                    # Call 2: talks into a stalled model too, then hangs up before the deadline.
                    ws2, sid2, stream2 = await start_stream(url)
                    await asyncio.wait_for(greeted[1].wait(), 10)
                    # Call 3: healthy, beside them.
                    healthy = asyncio.create_task(
                        place_call(url, CallerPlan(hangup_after_s=5.0, max_call_s=30), auth_token=AUTH_TOKEN)
                    )
                    talking1 = asyncio.create_task(talk(ws1, stream1, 20.0))
                    talking2 = asyncio.create_task(talk(ws2, stream2, 1.0))
                    await talking2  # 1 s of audio: far more than a 4 KiB receive buffer takes
                    t0 = time.monotonic()
                    await ws2.send(stop_message(stream2))
                    closed_in = await wait_closed(ws2, timeout=5)
                    assert await settle(lambda: ended(logs, sid2) != [], timeout=1.0)
                    stop_s = time.monotonic() - t0
                    # Call 1 ends by the send deadline, as upstream_failed.
                    assert await settle(lambda: ended(logs, sid1) != [], timeout=15)
                    await wait_closed(ws1, timeout=5)
                    frames1 = await talking1
                    report = await healthy
                    assert await settle(lambda: not bridge.active_calls, timeout=5)
                    assert bridge.admission.active(bridge.clock()) == 0
                    metrics = await metrics_text(url)
                    # The fallback path, as for a lost model: the caller still on the line hears the
                    # apology and is put through to the fallback number; the caller who hung up is not.
                    fallback = await after_stream(url, sid1)
                    hung_up = await after_stream(url, sid2)
        assert "<Say" in fallback and f"<Dial>{FALLBACK}</Dial>" in fallback, fallback
        assert "<Dial" not in hung_up and "<Hangup" in hung_up, hung_up
        assert closed_in < 1.0 and stop_s < 1.0, (closed_in, stop_s)
        assert ended(logs, sid2) == ["caller_hangup"]
        assert ended(logs, sid1) == ["upstream_failed"]
        stalls = [e for e in logs if e["event"] == "upstream.stalled"]
        assert [e["call_sid"] for e in stalls] == [sid1] and stalls[0]["log_level"] == "error"
        assert 'voice_bridge_peer_stalls_total{peer="upstream"} 1.0' in metrics
        dropped = float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith('voice_bridge_dropped_frames_total{reason="upstream_stalled"}')))
        assert dropped > 0
        # Twilio was read all along: every frame the caller sent before the end was taken.
        assert frames1 > 50
        assert report.ended_by == "caller" and report.agent_audio_s > 0.2, report.summary()
        assert ended(logs, report.call_sid) == ["caller_hangup"]
        assert no_crash(logs)
        print(f"stop during a model stall: closed after {closed_in:.3f} s; dropped frames {dropped:.0f}")

    run(scenario(), timeout=90)


# --- class 8: one huge model delta ---------------------------------------------------------------


def test_one_huge_delta_goes_out_in_twilio_sized_frames_without_stalling_another_call() -> None:
    huge = long_speech(190.0)  # ~9 MiB of PCM16, in one delta
    assert len(huge) > 9_000_000

    async def script(session: ScriptedSession) -> None:
        index = len(upstream.sessions) - 1
        await session.send("session.created", session={"type": "realtime"})
        await session.expect("session.update")
        await session.send("session.updated", session={"type": "realtime"})
        await session.expect("response.create")
        if index == 0:  # the steady call: ordinary 100 ms deltas, paced a little faster than real time
            where = {"response_id": "resp_1", "item_id": "item_1", "output_index": 0, "content_index": 0}
            await session.send("response.created", response={"id": "resp_1", "status": "in_progress"})
            pcm = long_speech(20.0)
            for offset in range(0, len(pcm), 4800):
                await session.send("response.output_audio.delta", **where, delta=base64.b64encode(pcm[offset : offset + 4800]).decode())
                await asyncio.sleep(0.08)
        else:
            huge_sent.set()
            await session.speak("resp_1", "item_1", huge, delta_bytes=len(huge))
        await session.drain()

    huge_sent = asyncio.Event()
    upstream = ScriptedUpstream(script)

    async def receive(ws: Any, arrivals: list[float], sizes: list[int], until: float) -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(until):
                async for raw in ws:
                    message = json.loads(raw)
                    if message["event"] == "media":
                        arrivals.append(time.monotonic())
                        sizes.append(len(base64.b64decode(message["media"]["payload"])))

    async def scenario() -> tuple[float, list[int], list[int], float]:
        async with upstream:
            with capture_logs() as logs:
                async with running_bridge(upstream_url=upstream.url, max_calls=2, prewarm=False) as (url, app):
                    steady_ws, _, _ = await start_stream(url)
                    steady_times: list[float] = []
                    steady_sizes: list[int] = []
                    steady = asyncio.create_task(receive(steady_ws, steady_times, steady_sizes, 8.0))
                    await asyncio.sleep(1.0)
                    huge_ws, _, _ = await start_stream(url)
                    huge_times: list[float] = []
                    huge_sizes: list[int] = []
                    await asyncio.wait_for(huge_sent.wait(), 10)
                    t_huge = time.monotonic()
                    await receive(huge_ws, huge_times, huge_sizes, 6.0)
                    await steady
        assert no_crash(logs)
        # The steady call's frames while the huge delta was being handled: the longest gap.
        window = [t for t in steady_times if t >= t_huge]
        gaps = [b - a for a, b in zip(window, window[1:])]
        return max(gaps), steady_sizes, huge_sizes, len(huge_times) * 0.02

    max_gap, steady_sizes, huge_sizes, huge_audio_s = run(scenario(), timeout=90)
    print(f"huge delta: {len(huge_sizes)} frames ({huge_audio_s:.1f} s of audio) in 6 s; steady call's longest gap {max_gap * 1000:.0f} ms")
    assert huge_sizes and max(huge_sizes) <= caller_output.TWILIO_FRAME_BYTES
    assert steady_sizes and max(steady_sizes) <= caller_output.TWILIO_FRAME_BYTES
    assert huge_audio_s > 10.0  # the huge delta did flow
    # Tolerant: the steady call's deltas come every 80 ms; the huge delta must not hold it for long.
    assert max_gap < 0.4, f"the steady call stalled for {max_gap * 1000:.0f} ms"


# --- the outbound queue (pure) -------------------------------------------------------------------


def test_the_outbound_queue_bounds_audio_keeps_control_events_and_counts_what_it_clears() -> None:
    from bridge.outbound import OutboundQueue, Outgoing

    queue = OutboundQueue(max_audio=2, max_control=1)
    assert queue.offer(Outgoing("a1", 1, 0.0)) and queue.offer(Outgoing("a2", 3, 0.0))
    assert not queue.offer(Outgoing("a3", 1, 0.0))  # audio full: refused, nothing queued
    assert queue.offer(Outgoing("cancel", 0, None))  # control events have their own bound
    assert not queue.offer(Outgoing("truncate", 0, None))
    assert [queue.pop().event for _ in range(2)] == ["a1", "a2"]  # type: ignore[union-attr]
    assert queue.offer(Outgoing("a4", 2, 0.0))  # room again once sent
    assert queue.clear() == 2 and len(queue) == 0 and queue.pop() is None
    assert queue.offer(Outgoing("truncate", 0, None))


def test_peer_deadlines_are_positive_seconds_and_default_to_the_module_constants() -> None:
    from bridge import deadlines
    from bridge.settings import Settings

    assert Settings().peer_deadlines == PeerDeadlines()
    assert PeerDeadlines().twilio_send_s == deadlines.TWILIO_SEND_S and PeerDeadlines().upstream_send_s == deadlines.UPSTREAM_SEND_S
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="upstream_close_s"):
            PeerDeadlines(upstream_close_s=bad)
