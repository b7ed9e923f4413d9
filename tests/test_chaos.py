"""Chaos suite (issue 13), part 1: one `voice-bridge serve` process for the module, a healthy call
beside every hostile case, and at the end its file descriptors, threads and RSS back to baseline.

The server runs as production runs it: the installed console script, signatures on, JSON logs,
the model a scripted GA server in this process (`chaos_harness.ChaosUpstream`) reached through
`VOICE_BRIDGE_UPSTREAM_URL` with a key in its query, calls recorded, no `VOICE_BRIDGE_PUBLIC_URL`,
and no trusted proxy (`FORWARDED_ALLOW_IPS` names an address we are not).
Invariants checked after every case: the specific outcome, nothing in the logs that shows an
exception ("Traceback", `call.crashed`, `call.failed`), the server answering, and the healthy
call still receiving model audio without a gap.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from chaos_cases import IGNORED, TwilioCase, issue_twilio_examples, issue_upstream_examples, twilio_cases, upstream_frames
from chaos_harness import (
    NUMBERS,
    UPSTREAM_SECRET,
    ChaosUpstream,
    GoodCall,
    Lab,
    RawWebSocket,
    ServeProcess,
    call_ended,
    metric_series,
    new_stream_sid,
    open_raw_call,
    post_signed,
    profiles_toml,
    start_frame,
    voice_form,
    webhook,
)
from hypothesis import HealthCheck, example, given, settings

from bridge import media_streams as ms

CLOSE_WITHIN_S = 3.0  # a refused frame is answered with its close code within this
HEALTHY_GAP_S = 1.0  # the healthy call's model audio never pauses longer than this during a case
FUZZ_EXAMPLES = int(os.environ.get("CHAOS_EXAMPLES", "40"))
UPSTREAM_FUZZ_EXAMPLES = int(os.environ.get("CHAOS_UPSTREAM_EXAMPLES", "10"))
# After the whole module, compared with the baseline taken after warm-up:
FD_TOLERANCE = 6
THREAD_TOLERANCE = 2
RSS_TOLERANCE_MB = 40.0


@dataclass
class Bed:
    lab: Lab
    upstream: ChaosUpstream
    server: ServeProcess
    healthy: GoodCall
    record_dir: Path
    baseline: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)

    def mark(self) -> tuple[int, float]:
        return self.server.log_size(), time.monotonic()

    def check_beside(self, since: tuple[int, float], what: str) -> None:
        """The invariants every case keeps: no exception logged, server up, healthy call undisturbed."""
        offset, t0 = since
        forbidden = self.server.forbidden_since(offset)
        assert not forbidden, f"{what}: exception in the logs: {forbidden[:3]}"
        assert self.server.healthy(), f"{what}: /healthz does not answer"
        assert self.healthy.alive, f"{what}: the healthy call was closed ({self.healthy.close_code})"
        gap = self.healthy.max_gap(t0)
        self.figures["healthy_max_gap_s"] = max(self.figures.get("healthy_max_gap_s", 0.0), gap)
        assert gap < HEALTHY_GAP_S, f"{what}: the healthy call heard no model audio for {gap:.2f} s"


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    work = tmp_path_factory.mktemp("chaos")
    (work / "profiles.toml").write_text(profiles_toml())
    record_dir = work / "recordings"
    lab = Lab()
    upstream = ChaosUpstream()
    lab.run(upstream.start())
    server = ServeProcess(
        work,
        {
            "VOICE_BRIDGE_UPSTREAM_URL": upstream.url,
            "VOICE_BRIDGE_PROFILES": str(work / "profiles.toml"),
            "VOICE_BRIDGE_MAX_CALLS": "30",
            "VOICE_BRIDGE_RECORD_DIR": str(record_dir),
            "FORWARDED_ALLOW_IPS": "10.9.9.9",  # a proxy that is not us: our forwarded headers are not believed
        },
        name="chaos-main",
    )
    healthy: GoodCall | None = None
    try:
        server.wait_healthy()
        healthy = lab.run(GoodCall(server.url, NUMBERS["talker"]).start())
        b = Bed(lab, upstream, server, healthy, record_dir)
        for _ in range(3):  # warm-up: lazy imports, first-call allocations, the recorder's thread
            lab.run(_one_refused_case(server.url))
        time.sleep(1.0)
        b.baseline = server.resources()
        yield b
        print(f"\nchaos figures: {json.dumps(b.figures)}")
    finally:
        if healthy is not None and healthy.ws is not None:
            code = lab.run(healthy.hang_up())
            print(f"healthy call ended with close {code}, {len(healthy.arrivals)} media frames received")
        server.stop()
        lab.run(upstream.stop())
        lab.close()


async def _one_refused_case(base: str) -> int | None:
    ws, hook, _ = await open_raw_call(base, media=1)
    await ws.send(b"\x00")
    code, _ = await ws.close_code(CLOSE_WITHIN_S)
    ws.abort()
    await call_ended(base, hook.form["CallSid"])
    return code


# --- class 1: fuzzed Media Streams sequences ----------------------------------------------------


def _examples(name: str, values: list[Any]) -> Any:
    def decorate(test: Any) -> Any:
        for value in reversed(values):
            test = example(**{name: value})(test)
        return test

    return decorate


async def _twilio_case(base: str, case: TwilioCase) -> tuple[int | None, float]:
    ws, hook, sid = await open_raw_call(base)
    frame = case.for_stream(sid)
    try:
        for n in range(case.media_before):
            await ws.send(ms.inbound_media_message(sid, b"\xff" * 160, n + 1, n * 20, n + 3))
        sent = time.monotonic()
        if case.invalid_utf8:
            assert isinstance(frame, bytes)
            await ws.send(frame, opcode=0x1)
        else:
            await ws.send(frame)
        if case.expect == IGNORED:
            n = case.media_before
            await ws.send(ms.inbound_media_message(sid, b"\xff" * 160, n + 1, n * 20, n + 3))
            await ws.send(ms.stop_message(sid, hook.form["CallSid"], hook.form["AccountSid"], n + 4))
        code, _ = await ws.close_code(CLOSE_WITHIN_S)
        return code, time.monotonic() - sent
    finally:
        ws.abort()
        await call_ended(base, hook.form["CallSid"])


@settings(max_examples=FUZZ_EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(case=twilio_cases())
@_examples("case", issue_twilio_examples())
def test_fuzzed_media_stream_frames_get_their_close_code_and_nothing_else(bed: Bed, case: TwilioCase) -> None:
    """A valid prefix, then one hostile frame: its specific close code within a bound (or, for a
    harmless unknown event, the call goes on and ends normally), never a traceback, the healthy
    call undisturbed."""
    since = bed.mark()
    code, elapsed = bed.lab.run(_twilio_case(bed.server.url, case))
    bed.figures["twilio_cases"] = bed.figures.get("twilio_cases", 0) + 1
    expected = 1000 if case.expect == IGNORED else case.expect
    assert code == expected, f"{case.describe()}: closed {code} (None: no close frame, -1: none in time), expected {expected}"
    assert elapsed < CLOSE_WITHIN_S
    bed.check_beside(since, case.describe())
    if case.expect != IGNORED:
        events = bed.server.events_since(since[0])
        refusals = [e for e in events if e.get("level") == "warning" and e.get("reason")]
        # (invalid UTF-8 is refused by the WebSocket layer itself, before the app sees a frame)
        assert refusals or case.invalid_utf8, f"{case.describe()}: no warning with a reason was logged"


# --- class 1b: a hostile model mid-call ---------------------------------------------------------


async def _upstream_case(bed: Bed, frames: list[str | bytes]) -> tuple[GoodCall, float | None, int | None]:
    bed.upstream.fuzz_frames.append(frames)
    call = await GoodCall(bed.server.url, NUMBERS["fuzz"]).start()
    session = None
    for _ in range(100):  # the session the bridge opened for this call injects 0.4 s into its audio
        session = next((s for s in reversed(bed.upstream.sessions) if s.mode == "fuzz"), None)
        if session is not None and session.injected_at is not None:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.6)
    injected = session.injected_at if session else None
    code = await call.hang_up()
    await call_ended(bed.server.url, call.hook.form["CallSid"] if call.hook else "")
    return call, injected, code


@settings(max_examples=UPSTREAM_FUZZ_EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(frames=upstream_frames())
@_examples("frames", issue_upstream_examples())
def test_fuzzed_upstream_events_mid_call_are_skipped_and_the_call_goes_on(bed: Bed, frames: list[str | bytes]) -> None:
    since = bed.mark()
    call, injected, code = bed.lab.run(_upstream_case(bed, frames), timeout=30)
    shown = [f[:120] for f in frames]
    bed.figures["upstream_cases"] = bed.figures.get("upstream_cases", 0) + 1
    assert injected is not None, f"{shown}: the model never got to send them"
    assert call.closed_at is None or call.closed_at >= call.stop_sent_at, (  # type: ignore[operator]
        f"{shown}: the bridge ended the call ({call.close_code}) on a bad model event"
    )
    assert call.audio_since(injected + 0.1) > 0, f"{shown}: no model audio reached the caller after the bad events"
    assert code == 1000, f"{shown}: the caller's hang-up ended with close {code}"
    bed.check_beside(since, f"upstream frames {shown}")


def test_bad_model_events_were_logged_as_upstream_bad_event_with_a_reason(bed: Bed) -> None:
    """Runs after the upstream fuzz: the skipped events were logged (the issue names the event)."""
    bad = [e for e in bed.server.events_since(0) if e.get("event") == "upstream.bad_event"]
    assert bad, "no upstream.bad_event logged for any of the fuzzed model events"
    assert all(e.get("reason") for e in bad)
    assert "voice_bridge_upstream_bad_events_total" in bed.server.metrics_text()


# --- class 4: the HTTP edge ---------------------------------------------------------------------


def test_spoofed_forwarded_headers_change_neither_the_signed_url_nor_the_stream_url(bed: Bed) -> None:
    since = bed.mark()
    base = bed.server.url
    spoof = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https", "Forwarded": "host=evil.example;proto=https"}

    async def scenario() -> tuple[int, Any]:
        # Signed for the URL the attacker chose: refused.
        forged = await post_signed(base, "/voice", voice_form(), sign_url="https://evil.example/voice", headers=spoof)
        # Signed for the real URL: accepted, and the Stream URL is still ours.
        honest = await webhook(base, voice_form(), headers=spoof)
        await call_ended(base, honest.form["CallSid"])
        return forged.status_code, honest

    forged, honest = bed.lab.run(scenario())
    assert forged == 403
    assert honest.status == 200 and honest.stream_url is not None
    assert honest.stream_url == f"ws://127.0.0.1:{bed.server.port}/media-stream"
    assert "evil.example" not in honest.text
    bed.check_beside(since, "spoofed forwarded headers")


def _raw_request(port: int, head: bytes, body_chunks: list[bytes], timeout: float) -> tuple[bytes, float]:
    """Send a request head then body chunks (stopping if the server answers); its answer and when."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head)
        s.setblocking(False)
        answer = b""
        for chunk in body_chunks:
            try:
                answer += s.recv(65536)
            except BlockingIOError:
                pass
            if answer:
                break
            try:
                s.setblocking(True)
                s.settimeout(timeout)
                s.sendall(chunk)
            except OSError:
                break
            finally:
                s.setblocking(False)
            if time.monotonic() - started > timeout:
                break
        s.setblocking(True)
        s.settimeout(max(0.1, timeout - (time.monotonic() - started)))
        try:
            while b"\r\n\r\n" not in answer:
                more = s.recv(65536)
                if not more:
                    break
                answer += more
        except OSError:
            pass
    return answer, time.monotonic() - started


@pytest.mark.parametrize("kind", ["declared", "chunked"])
def test_a_huge_body_is_refused_413_quickly_without_growing_memory(bed: Bed, kind: str) -> None:
    since = bed.mark()
    port = bed.server.port
    rss_before = bed.server.rss_mb()
    mib = b"a" * (1 << 20)
    if kind == "declared":
        head = (
            f"POST /voice HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {48 << 20}\r\n\r\n"
        ).encode()
        chunks = [mib] * 48
    else:
        head = (
            f"POST /voice HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
        chunks = [b"100000\r\n" + mib + b"\r\n"] * 48 + [b"0\r\n\r\n"]
    answer, elapsed = _raw_request(port, head, chunks, timeout=10.0)
    rss_after = bed.server.rss_mb()
    bed.figures[f"huge_body_{kind}"] = {"status": answer[:12].decode(errors="replace"), "s": round(elapsed, 2),
                                        "rss_growth_mb": round(rss_after - rss_before, 1)}
    assert answer.startswith(b"HTTP/1.1 413"), f"answered {answer[:60]!r}"
    assert elapsed < 5.0
    assert rss_after - rss_before < 20.0, f"RSS grew {rss_after - rss_before:.1f} MB"
    bed.check_beside(since, f"huge {kind} body")


def test_half_sent_requests_are_closed_within_a_bound_and_others_are_served(bed: Bed) -> None:
    since = bed.mark()
    port = bed.server.port
    socks = []
    for _ in range(150):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(f"POST /voice HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Slow: ".encode())
        socks.append(s)
    try:
        # Served meanwhile.
        assert httpx.get(f"{bed.server.url}/healthz", timeout=5).status_code == 200
        hook = bed.lab.run(webhook(bed.server.url, voice_form()))
        bed.lab.run(call_ended(bed.server.url, hook.form["CallSid"]))
        assert hook.stream_url is not None
        started = time.monotonic()
        deadline = started + 20.0
        open_ = list(socks)
        while open_ and time.monotonic() < deadline:
            still = []
            for s in open_:
                s.setblocking(False)
                try:
                    data = s.recv(4096)
                    if data:
                        still.append(s)  # an answer (408): the close follows
                        s.setblocking(True)
                        s.settimeout(2)
                        while s.recv(4096):
                            pass
                        still.pop()
                except BlockingIOError:
                    still.append(s)
                except OSError:
                    pass
            open_ = still
            time.sleep(0.2)
        bed.figures["slowloris"] = {"left_open": len(open_), "closed_after_s": round(time.monotonic() - started, 1)}
        assert not open_, f"{len(open_)} of 150 half-sent requests still open after 20 s"
    finally:
        for s in socks:
            s.close()
    assert httpx.get(f"{bed.server.url}/healthz", timeout=5).status_code == 200
    bed.check_beside(since, "slowloris")


# --- class 5: a burst of refused streams --------------------------------------------------------


async def _refused_burst(base: str, n: int) -> list[int | None]:
    """`n` calls whose model sessions were opened at the webhook, their streams then refused
    (forged token, missing token) or gone before `start`. The model never answers a close."""

    async def one(i: int) -> int | None:
        hook = await webhook(base, voice_form(to=NUMBERS["stall"]))
        assert hook.stream_url is not None, hook.text[:200]
        ws = await RawWebSocket.open(hook.stream_url)
        assert not isinstance(ws, int)
        sid = new_stream_sid()
        try:
            await ws.send(ms.connected_message())
            if i % 3 == 0:
                await ws.send(start_frame(hook, sid, StreamToken=f"{int(time.time()) + 60}.{'0' * 64}"))
            elif i % 3 == 1:
                params = {k: v for k, v in hook.params.items() if k != "StreamToken"}
                await ws.send(ms.start_message(sid, hook.form["CallSid"], hook.form["AccountSid"], params))
            else:
                await ws.send_close(1000)  # the caller hung up before the stream started
            code, _ = await ws.close_code(CLOSE_WITHIN_S)
            return code
        finally:
            ws.abort()
            await call_ended(base, hook.form["CallSid"])

    return list(await asyncio.gather(*(one(i) for i in range(n))))


def test_a_burst_of_refused_streams_leaves_no_model_socket_open(bed: Bed) -> None:
    since = bed.mark()
    port = bed.upstream.port
    before = bed.server.connections_to(port)
    codes = bed.lab.run(_refused_burst(bed.server.url, 12), timeout=30)
    refused = [c for i, c in enumerate(codes) if i % 3 != 2]
    assert all(c is not None and c not in (1000, -1) for c in refused), f"refused streams closed with {refused}"
    started = time.monotonic()
    peak = left = bed.server.connections_to(port)
    while left > before and time.monotonic() - started < 20.0:
        time.sleep(0.25)
        left = bed.server.connections_to(port)
    closed_after = time.monotonic() - started
    bed.figures["refused_burst"] = {"model_sockets_peak": peak, "left": left - before, "closed_after_s": round(closed_after, 1)}
    assert left <= before, f"{left - before} model sockets still open 20 s after the burst (peak {peak})"
    assert closed_after <= 17.0, f"model sockets closed only after {closed_after:.1f} s (promise: 15 s)"
    bed.check_beside(since, "burst of refused streams")


# --- class 7: unbounded labels ------------------------------------------------------------------


def test_1500_distinct_upstream_error_codes_make_a_bounded_number_of_series(bed: Bed) -> None:
    since = bed.mark()

    async def scenario() -> int | None:
        call = await GoodCall(bed.server.url, NUMBERS["errors"]).start()
        await asyncio.sleep(1.5)
        code = await call.hang_up()
        return code

    code = bed.lab.run(scenario())
    text = bed.server.metrics_text()
    series = metric_series(text, "voice_bridge_upstream_errors_total")
    all_series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    bed.figures["error_code_series"] = series
    bed.figures["metric_lines"] = all_series
    assert code == 1000
    assert 0 < series <= 50, f"{series} series of voice_bridge_upstream_errors_total"
    assert all_series < 1000
    bed.check_beside(since, "1500 upstream error codes")


# --- class 8: one huge model delta --------------------------------------------------------------


def test_one_9_mib_model_delta_goes_out_in_small_frames_and_other_calls_keep_flowing(bed: Bed) -> None:
    since = bed.mark()
    pcm_bytes = (9 << 20) * 3 // 4  # 9 MiB of base64
    bed.upstream.huge_delta = json.dumps({
        "type": "response.output_audio.delta", "event_id": "evt_huge", "response_id": "resp_1", "item_id": "item_1",
        "output_index": 0, "content_index": 0, "delta": base64.b64encode(b"\x10\x00" * (pcm_bytes // 2)).decode(),
    })

    async def scenario() -> tuple[GoodCall, float | None]:
        call = await GoodCall(bed.server.url, NUMBERS["huge"]).start()
        session = None
        for _ in range(200):
            session = next((s for s in reversed(bed.upstream.sessions) if s.mode == "huge"), None)
            if session is not None and session.injected_at is not None:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(4.0)
        await call.hang_up(timeout=10)
        return call, session.injected_at if session else None

    call, injected = bed.lab.run(scenario(), timeout=60)
    bed.upstream.huge_delta = None
    assert injected is not None
    largest_payload = max((p for _, _, p in call.arrivals), default=0)
    gap = bed.healthy.max_gap(injected - 0.2, injected + 3.0)
    bed.figures["huge_delta"] = {
        "largest_frame_chars": call.largest_frame, "largest_payload_bytes": largest_payload,
        "frames": len(call.arrivals), "other_call_max_gap_s": round(gap, 3),
    }
    print(f"\nhuge delta: largest frame to Twilio {call.largest_frame} chars, other call's max audio gap {gap * 1000:.0f} ms")
    assert call.largest_frame <= 16 * 1024, f"a frame of {call.largest_frame} characters was sent to Twilio"
    # Behaviour, not speed: the other call keeps hearing audio while the huge delta is worked off
    # (the old code sent it as one frame; the slicing keeps each loop turn short). The gap also
    # holds this test's own client, which parses the ~4000 frames of the huge call in the same
    # loop as the healthy one: 130-234 ms on a quiet 2-core machine, 441 ms once under load.
    # The 50 ms figure is measured in-process by tests/test_stalled_peers.py and BENCHMARKS.md.
    assert gap < 1.0, f"the other call heard no audio for {gap * 1000:.0f} ms"
    bed.check_beside(since, "9 MiB model delta")


# --- class 6: secrets and files, over everything above ------------------------------------------


def test_the_upstream_key_never_appears_in_any_log_line(bed: Bed) -> None:
    log = bed.server.log_text()
    assert "upstream" in log  # the start line named the upstream
    assert UPSTREAM_SECRET not in log


def test_recordings_are_private(bed: Bed) -> None:
    time.sleep(1.0)  # the recorder's thread writes behind the calls
    paths = [bed.record_dir, *bed.record_dir.rglob("*")]
    assert len(paths) > 3, "nothing was recorded"
    loose = [
        f"{p} {oct(stat.S_IMODE(p.stat().st_mode))}"
        for p in paths
        if stat.S_IMODE(p.stat().st_mode) != (0o700 if p.is_dir() else 0o600)
    ]
    assert not loose, f"not private: {loose[:5]}"


# --- and afterwards: nothing leaked --------------------------------------------------------------


def test_zz_fds_threads_and_rss_back_to_baseline(bed: Bed) -> None:
    """Last in the module: after every case above (the healthy call still on), the server's file
    descriptors, threads and RSS are back near the baseline taken after the warm-up."""
    deadline = time.monotonic() + 20.0
    now = bed.server.resources()
    while time.monotonic() < deadline:
        now = bed.server.resources()
        if now["fds"] <= bed.baseline["fds"] + FD_TOLERANCE and now["threads"] <= bed.baseline["threads"] + THREAD_TOLERANCE:
            break
        time.sleep(0.5)
    bed.figures["resources"] = {"before": bed.baseline, "after": now}
    print(f"\nserver resources: before {bed.baseline}, after {now}")
    assert now["fds"] <= bed.baseline["fds"] + FD_TOLERANCE, f"fds {bed.baseline['fds']} -> {now['fds']}: {bed.server.fd_targets()}"
    assert now["threads"] <= bed.baseline["threads"] + THREAD_TOLERANCE, f"threads {bed.baseline['threads']} -> {now['threads']}"
    assert now["rss_mb"] <= bed.baseline["rss_mb"] + RSS_TOLERANCE_MB, f"RSS {bed.baseline['rss_mb']} -> {now['rss_mb']} MB"
    assert bed.healthy.alive
