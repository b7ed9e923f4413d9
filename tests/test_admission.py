"""Issue 13, class 2: webhook replay, tokens bound to their CallSid and reservation, admission races.

First the pure parts (the admission ledger against a table of timings, the stream tokens), then
the same rules over real sockets: the bridge under uvicorn, signed webhooks and signed upgrades.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import secrets
import urllib.parse
from typing import Any

import httpx
import pytest
from conftest import AUTH_TOKEN, capture_logs, run, running_bridge, settle, until_closed as closed
from scripted_upstream import ScriptedSession, ScriptedUpstream
from websockets.asyncio.client import connect

from bridge import media_streams as ms
from bridge.admission import Admission, AdmissionRefused
from bridge.devtools.phone.simulator import parse_stream_twiml
from twiml.signatures import TwilioSigner
from twiml.stream_tokens import StreamTokenError, StreamTokens

# --- the ledger, against a table of timings ------------------------------------------------------

# Each step: (time, action, CallSid, expected). Actions: "reserve" (expected: a reservation label
# or a refusal), "start" (with the label of the reservation the token carries), "end".
# Labels name reservation ids: the same label means the same id.
TIMELINES: dict[str, list[tuple[float, str, str, str]]] = {
    "webhook then stream then hang-up": [
        (0, "reserve", "A", "r1"), (1, "start", "A:r1", "ok"), (60, "end", "A", "ok"),
    ],
    "duplicate webhook while awaiting the stream gets the same reservation": [
        (0, "reserve", "A", "r1"), (5, "reserve", "A", "r1"), (6, "start", "A:r1", "ok"),
    ],
    "two tokens for one CallSid: only the first stream runs": [
        (0, "reserve", "A", "r1"), (0.5, "reserve", "A", "r1"),
        (1, "start", "A:r1", "ok"), (1.2, "start", "A:r1", "stream_already_live"),
    ],
    "replay of the webhook 1 s later, the call streaming": [
        (0, "reserve", "A", "r1"), (0.5, "start", "A:r1", "ok"), (1.5, "reserve", "A", "call_in_progress"),
    ],
    "replay of the webhook after the call ended": [
        (0, "reserve", "A", "r1"), (1, "start", "A:r1", "ok"), (5, "end", "A", "ok"),
        (6, "reserve", "A", "call_ended"), (70, "reserve", "A", "call_ended"),
    ],
    "a stream for a call that ended is refused": [
        (0, "reserve", "A", "r1"), (2, "end", "A", "ok"), (3, "start", "A:r1", "call_ended"),
    ],
    "ended calls are forgotten after remember_s (tokens are long expired)": [
        (0, "reserve", "A", "r1"), (1, "start", "A:r1", "ok"), (2, "end", "A", "ok"), (78, "reserve", "A", "r2"),
    ],
    "full: a third webhook is busy": [
        (0, "reserve", "A", "r1"), (0, "reserve", "B", "r2"), (1, "reserve", "C", "busy"),
    ],
    "a lapsed reservation frees its slot; its late stream is refused when full": [
        (0, "reserve", "A", "r1"), (10, "reserve", "B", "r2"), (31, "reserve", "C", "r3"),
        (32, "start", "A:r1", "no_room"), (33, "start", "B:r2", "ok"),
    ],
    "a lapsed reservation's late stream runs when there is room": [
        (0, "reserve", "A", "r1"), (35, "start", "A:r1", "ok"), (36, "reserve", "B", "r2"),
        (37, "reserve", "C", "busy"),
    ],
    "a token for a reservation this process never made: room is checked": [
        (0, "reserve", "A", "r1"), (0, "reserve", "B", "r2"), (1, "start", "X:r9", "no_room"),
        (2, "end", "A", "ok"), (3, "start", "X:r9", "ok"),
    ],
    "a token with another reservation id than the CallSid's": [
        (0, "reserve", "A", "r1"), (1, "start", "A:r9", "stale_reservation"), (2, "start", "A:r1", "ok"),
    ],
    "a lapsed reservation renewed by a later webhook keeps its id": [
        (0, "reserve", "A", "r1"), (31, "reserve", "A", "r1"), (32, "start", "A:r1", "ok"),
    ],
    "a refused start changes nothing": [
        (0, "reserve", "A", "r1"), (10, "reserve", "B", "r2"), (31, "reserve", "C", "r3"),
        (32, "start", "A:r1", "no_room"), (33, "start", "X:r9", "no_room"), (34, "start", "C:r3", "ok"),
        (35, "reserve", "D", "busy"), (41, "reserve", "D", "r4"), (42, "start", "A:r1", "no_room"),
    ],
}


@pytest.mark.parametrize("name", list(TIMELINES))
def test_admission_timelines(name: str) -> None:
    ids = (f"{n:016x}" for n in itertools.count(1))
    admission = Admission(max_calls=2, reservation_s=30, remember_s=75, new_id=lambda: next(ids))
    labels: dict[str, str] = {}  # label → id, and id → label
    for now, action, who, expected in TIMELINES[name]:
        if action == "reserve":
            try:
                got = admission.reserve(who, now)
            except AdmissionRefused as exc:
                assert exc.reason == expected, (name, now)
                continue
            labels.setdefault(got, expected)
            assert labels[got] == expected, (name, now)
        elif action == "start":
            call_sid, label = who.split(":")
            reservation_id = next((rid for rid, lab in labels.items() if lab == label), "ff" + label)
            try:
                admission.start(call_sid, reservation_id, now)
                got = "ok"
            except AdmissionRefused as exc:
                got = exc.reason
            assert got == expected, (name, now)
        else:
            admission.end(who, now)
        assert admission.active(now) <= admission.max_calls, (name, now)


def test_max_calls_holds_whatever_the_order_of_events() -> None:
    """Random interleavings of webhooks, starts (also late and duplicated) and ends: never over max."""
    rng = __import__("random").Random(13)
    for _ in range(300):
        admission = Admission(max_calls=3, reservation_s=30, remember_s=75)
        tokens: list[tuple[str, str]] = []
        now, streams = 0.0, set()
        for _ in range(60):
            now += rng.choice([0.0, 0.1, 1.0, 10.0, 31.0])
            sid = f"CA{rng.randrange(8)}"
            action = rng.randrange(3)
            if action == 0:
                with contextlib.suppress(AdmissionRefused):
                    tokens.append((sid, admission.reserve(sid, now)))
            elif action == 1 and tokens:
                call_sid, rid = rng.choice(tokens)
                try:
                    admission.start(call_sid, rid, now)
                    assert call_sid not in streams  # at most one live stream per CallSid
                    streams.add(call_sid)
                except AdmissionRefused:
                    pass
            elif streams:
                ended = rng.choice(sorted(streams))
                streams.discard(ended)
                admission.end(ended, now)
            assert len(streams) <= admission.max_calls and admission.active(now) <= admission.max_calls


def test_ended_calls_are_remembered_in_bounded_memory() -> None:
    admission = Admission(max_calls=1, remember_s=75, max_remembered=100)
    for n in range(1000):
        admission.end(f"CA{n}", now=n * 0.01)
    assert admission.remembered() == 100
    with pytest.raises(AdmissionRefused, match="call_ended"):
        admission.reserve("CA999", now=10.0)
    assert admission.remembered() == 100
    admission.reserve("CA999x", now=100.0)
    assert admission.remembered() == 0  # all forgotten once a token could no longer be valid


# --- the stream tokens -------------------------------------------------------------------------

RID = "00000000000000a1"


def test_stream_tokens_are_bound_to_the_call_and_reservation_short_lived_and_single_use() -> None:
    tokens = StreamTokens(key=b"k" * 32, ttl_s=60)
    token = tokens.issue("CA1", RID, now=1000.0)
    with pytest.raises(StreamTokenError, match="invalid_stream_token"):
        tokens.redeem(token, "CA2", now=1001.0)
    expiry, rid, mac = token.split(".")
    with pytest.raises(StreamTokenError, match="invalid_stream_token"):
        tokens.redeem(f"{expiry}.00000000000000a2.{mac}", "CA1", now=1001.0)  # another reservation
    with pytest.raises(StreamTokenError, match="expired_stream_token"):
        StreamTokens(key=b"k" * 32).redeem(token, "CA1", now=1061.0)
    assert tokens.redeem(token, "CA1", now=1001.0) == RID
    with pytest.raises(StreamTokenError, match="reused_stream_token"):
        tokens.redeem(token, "CA1", now=1002.0)
    with pytest.raises(StreamTokenError, match="missing_stream_token"):
        tokens.redeem(None, "CA1", now=1002.0)
    forged = f"{expiry}.{rid}." + "0" * 64
    with pytest.raises(StreamTokenError, match="invalid_stream_token"):
        tokens.redeem(forged, "CA1", now=1002.0)
    # Replicas sharing the key redeem each other's tokens; another key does not.
    assert StreamTokens(key=b"k" * 32).redeem(tokens.issue("CA3", RID, now=1000.0), "CA3", now=1001.0) == RID
    with pytest.raises(StreamTokenError):
        StreamTokens().redeem(tokens.issue("CA4", RID, now=1000.0), "CA4", now=1001.0)


@pytest.mark.parametrize(
    "expiry",
    ["²", "1²", "١٢٣", "-1", "+1", " 1", "1 ", "", "1.5", "0x10", "9" * 13, "9" * 5000, "1_000", "１２"],
)
def test_a_token_expiry_that_is_not_bounded_ascii_digits_is_malformed(expiry: str) -> None:
    tokens = StreamTokens(key=b"k" * 32)
    with pytest.raises(StreamTokenError, match="malformed_stream_token"):
        tokens.redeem(f"{expiry}.{RID}." + "0" * 64, "CA1", now=1000.0)


@pytest.mark.parametrize(
    "token", ["abc", "1.2", "1.2.3.4", f"1000.{RID}", f"1000.XYZ.{'0' * 64}", f"1000.{RID}.{'0' * 63}", "." * 5000, "1." * 3000]
)
def test_malformed_tokens(token: str) -> None:
    with pytest.raises(StreamTokenError, match="malformed_stream_token"):
        StreamTokens(key=b"k" * 32).redeem(token, "CA1", now=1000.0)


# --- over real sockets: the bridge under uvicorn, a scripted upstream that counts its sockets ----

SIGNER = TwilioSigner(AUTH_TOKEN)


class CountingUpstream(ScriptedUpstream):
    """A model server that says nothing, reads everything, and counts the sockets open to it."""

    def __init__(self) -> None:
        self.open = 0
        self.opened = 0
        super().__init__(self._script)

    async def _script(self, session: ScriptedSession) -> None:
        self.open += 1
        self.opened += 1
        try:
            await session.drain()
        finally:
            self.open -= 1




def new_form(call_sid: str | None = None) -> dict[str, str]:
    return {
        "CallSid": call_sid or "CA" + secrets.token_hex(16),
        "AccountSid": "AC" + "0" * 32,
        "From": "+15550199999",
        "To": "+15550100000",
    }


async def post_voice(url: str, form: dict[str, str]) -> httpx.Response:
    """A signed `POST /voice`, as Twilio sends it (and as anyone who captured it can send it again)."""
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": SIGNER.sign(f"{url}/voice", form)}
    async with httpx.AsyncClient() as http:
        return await http.post(f"{url}/voice", content=urllib.parse.urlencode(form), headers=headers)


async def start_stream(answer: httpx.Response, params: dict[str, str] | None = None) -> Any:
    """Open the signed stream the TwiML names and send `connected` and `start` with its parameters."""
    stream_url, twiml_params = parse_stream_twiml(answer.text)
    params = params or twiml_params
    ws = await connect(stream_url, proxy=None, additional_headers={"X-Twilio-Signature": SIGNER.sign(stream_url, {})})
    stream_sid = "MZ" + secrets.token_hex(16)
    await ws.send(ms.connected_message())
    await ws.send(ms.start_message(stream_sid, params["CallSid"], "AC" + "0" * 32, params))
    ws.stream_sid = stream_sid  # type: ignore[attr-defined]
    return ws




async def hang_up(ws: Any, call_sid: str) -> None:
    await ws.send(ms.stop_message(ws.stream_sid, call_sid, "AC", 9))
    await closed(ws)


def rejected(metrics: Any, reason: str) -> float:
    return metrics.rejections.labels(reason=reason)._value.get()


def test_a_replayed_webhook_gets_no_stream_while_the_call_is_live_nor_after_it_ended() -> None:
    async def scenario() -> None:
        async with CountingUpstream() as upstream, running_bridge(upstream_url=upstream.url) as (url, app):
            state = app.state.bridge
            form = new_form()
            call_sid = form["CallSid"]
            with capture_logs() as logs:
                first = await post_voice(url, form)
                assert first.status_code == 200 and "<Stream" in first.text
                ws = await start_stream(first)
                assert await settle(lambda: state.admission.is_streaming(call_sid), 3.0)
                assert await settle(lambda: upstream.open == 1, 3.0)

                await asyncio.sleep(1.0)  # the replay, a second later
                replay = await post_voice(url, form)
                assert replay.status_code == 409 and "<Stream" not in replay.text
                assert {"event": "webhook.rejected", "reason": "call_in_progress"}.items() <= _event(logs, "webhook.rejected").items()
                assert rejected(state.metrics, "call_in_progress") == 1
                await asyncio.sleep(0.3)
                assert upstream.opened == 1  # no second model session was opened for the replay
                assert ws.close_code is None  # the live call goes on

                await hang_up(ws, call_sid)
                assert await settle(lambda: upstream.open == 0, 3.0)
                after = await post_voice(url, form)  # the replay after the call ended
                assert after.status_code == 409 and "<Stream" not in after.text
                assert rejected(state.metrics, "call_ended") == 1
                # And the old token, replayed on a new stream, starts nothing.
                again = await start_stream(first)
                assert await closed(again) == (1008, "reused_stream_token")
                await asyncio.sleep(0.3)
                assert upstream.opened == 1 and state.admission.active(state.clock()) == 0

    run(scenario())


def _event(logs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(e for e in reversed(logs) if e["event"] == name)


def test_two_tokens_for_one_call_sid_start_one_stream() -> None:
    """A duplicate webhook while the first awaits its stream (Twilio's retry) gets the same reservation."""

    async def scenario() -> None:
        async with CountingUpstream() as upstream, running_bridge(upstream_url=upstream.url) as (url, app):
            state = app.state.bridge
            form = new_form()
            first = await post_voice(url, form)
            await asyncio.sleep(1.1)  # a token of another second: two different tokens
            second = await post_voice(url, form)
            assert first.status_code == second.status_code == 200
            token_1 = parse_stream_twiml(first.text)[1]["StreamToken"]
            token_2 = parse_stream_twiml(second.text)[1]["StreamToken"]
            assert token_1 != token_2 and token_1.split(".")[1] == token_2.split(".")[1]  # one reservation
            assert state.admission.active(state.clock()) == 1
            with capture_logs() as logs:
                ws_1 = await start_stream(first)
                assert await settle(lambda: state.admission.is_streaming(form["CallSid"]), 3.0)
                ws_2 = await start_stream(second)
                assert await closed(ws_2) == (1008, "stream_already_live")
                assert _event(logs, "call.rejected")["reason"] == "stream_already_live"
                assert rejected(state.metrics, "stream_already_live") == 1
                await asyncio.sleep(0.3)
                assert ws_1.close_code is None and state.admission.is_streaming(form["CallSid"])
                assert upstream.opened == 1  # one pre-warmed session, claimed by the first stream
                await hang_up(ws_1, form["CallSid"])
            assert await settle(lambda: upstream.open == 0, 3.0)

    run(scenario())


def test_a_stream_after_its_reservation_lapsed_is_refused_when_the_process_is_full() -> None:
    async def scenario() -> None:
        async with CountingUpstream() as upstream, running_bridge(upstream_url=upstream.url, max_calls=1) as (url, app):
            state = app.state.bridge
            state.admission.reservation_s = 0.5  # the app's clock is real time here
            late, other = new_form(), new_form()
            late_answer = await post_voice(url, late)
            await asyncio.sleep(0.7)  # the reservation lapses: the slot is free again
            other_answer = await post_voice(url, other)
            assert "<Stream" in other_answer.text
            ws_other = await start_stream(other_answer)
            assert await settle(lambda: state.admission.is_streaming(other["CallSid"]), 3.0)
            with capture_logs() as logs:
                ws_late = await start_stream(late_answer)  # its token is still valid
                assert await closed(ws_late) == (1013, "no_room")
            assert _event(logs, "call.rejected")["reason"] == "no_room"
            assert rejected(state.metrics, "no_room") == 1
            assert state.admission.active(state.clock()) == 1 and ws_other.close_code is None
            busy = await post_voice(url, new_form())
            assert busy.status_code == 200 and "<Hangup" in busy.text and "<Stream" not in busy.text
            await hang_up(ws_other, other["CallSid"])
            assert await settle(lambda: upstream.open == 0, 3.0)

    run(scenario())


def test_max_calls_is_never_exceeded_under_a_concurrent_burst() -> None:
    max_calls, burst = 3, 10

    async def scenario() -> None:
        async with CountingUpstream() as upstream, running_bridge(upstream_url=upstream.url, max_calls=max_calls) as (url, app):
            state = app.state.bridge
            state.admission.reservation_s = 0.5
            peak = 0
            sampling = True

            async def sample() -> None:
                nonlocal peak
                while sampling:
                    peak = max(peak, state.admission.active(state.clock()), len([c for c in state.active_calls if c.call_sid]))
                    await asyncio.sleep(0.005)

            sampler = asyncio.create_task(sample())
            # Two waves of webhooks at once; the first wave's reservations lapse in between.
            wave_1 = await asyncio.gather(*(post_voice(url, new_form()) for _ in range(burst)))
            await asyncio.sleep(0.7)
            wave_2 = await asyncio.gather(*(post_voice(url, new_form()) for _ in range(burst)))
            streamed = [a for a in (*wave_1, *wave_2) if "<Stream" in a.text]
            assert len([a for a in wave_1 if "<Stream" in a.text]) == max_calls
            assert len([a for a in wave_2 if "<Stream" in a.text]) == max_calls
            # All six tokens are valid; all six streams start at once: only three may run.
            streams = await asyncio.gather(*(start_stream(a) for a in streamed))
            await asyncio.sleep(1.0)
            refused = [ws for ws in streams if ws.close_code is not None]
            live = [ws for ws in streams if ws.close_code is None]
            assert len(live) == max_calls, [(ws.close_code, ws.close_reason) for ws in streams]
            assert {(ws.close_code, ws.close_reason) for ws in refused} == {(1013, "no_room")}
            for ws in live:
                await ws.close()
            sampling = False
            await sampler
            assert peak <= max_calls
            assert await settle(lambda: upstream.open == 0 and not state.active_calls, 5.0)

    run(scenario())


# --- class 5: every pre-warmed model session is closed by a deadline, concurrently ----------------


class StallingUpstream(CountingUpstream):
    """Every `stall_every`-th session stops reading (so the bridge's closing handshake cannot finish)
    for `stall_s`, then reads again; the others read until the bridge closes them."""

    def __init__(self, stall_every: int, stall_s: float) -> None:
        super().__init__()
        self.stall_every, self.stall_s = stall_every, stall_s

    async def _script(self, session: ScriptedSession) -> None:
        self.open += 1
        self.opened += 1
        try:
            if self.opened % self.stall_every == 0:
                session.ws.transport.pause_reading()
                await asyncio.sleep(self.stall_s)
                session.ws.transport.resume_reading()
            await session.drain()
        finally:
            self.open -= 1


def test_prewarmed_sessions_of_a_burst_of_bad_or_missing_streams_all_close_by_the_deadline() -> None:
    from bridge.prewarm import CLOSE_S, SWEEP_S

    n, unclaimed_s, stall_s = 16, 1.0, 4.0
    deadline_s = unclaimed_s + SWEEP_S + CLOSE_S + 0.5  # after the last webhook; the old sequential
    # close took 2 s per stalled session (16 here: over 8 s for those alone).

    async def scenario() -> None:
        async with StallingUpstream(stall_every=4, stall_s=stall_s) as upstream, running_bridge(
            upstream_url=upstream.url, max_calls=40
        ) as (url, app):
            state = app.state.bridge
            state.prewarm.unclaimed_s = unclaimed_s
            with capture_logs() as logs:
                answers = await asyncio.gather(*(post_voice(url, new_form()) for _ in range(n)))
                posted = asyncio.get_running_loop().time()
                assert all("<Stream" in a.text for a in answers)
                assert await settle(lambda: upstream.opened == n, 3.0)
                quarter = n // 4
                # A quarter never stream; a quarter open the stream and leave before `start`;
                # a quarter start with a bad token (refused); a quarter send frames out of order.
                bad_token, early_leave, out_of_order = answers[:quarter], answers[quarter : 2 * quarter], answers[2 * quarter : 3 * quarter]
                refused = []
                for answer in bad_token:
                    params = dict(parse_stream_twiml(answer.text)[1])
                    expiry, rid, mac = params["StreamToken"].split(".")
                    params["StreamToken"] = f"{expiry}.{rid}.{'0' * 64}"
                    refused.append(await start_stream(answer, params))
                for answer in early_leave:
                    stream_url = parse_stream_twiml(answer.text)[0]
                    ws = await connect(stream_url, proxy=None, additional_headers={"X-Twilio-Signature": SIGNER.sign(stream_url, {})})
                    await ws.close()
                for answer in out_of_order:
                    stream_url = parse_stream_twiml(answer.text)[0]
                    ws = await connect(stream_url, proxy=None, additional_headers={"X-Twilio-Signature": SIGNER.sign(stream_url, {})})
                    await ws.send(json.dumps({"event": "media", "streamSid": "MZ1", "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": "//8="}}))
                    assert await closed(ws) == (1008, "event_before_start")
                for ws in refused:
                    assert await closed(ws) == (1008, "invalid_stream_token")
                stalled = n // 4
                # Every session that can still be read from is closed by the deadline ...
                assert await settle(lambda: upstream.open <= stalled, deadline_s - (asyncio.get_running_loop().time() - posted))
                # ... and the stalled ones were given up on (transport aborted) by then too.
                await asyncio.sleep(max(0.0, posted + deadline_s - asyncio.get_running_loop().time()))
                assert len(state.prewarm) == 0 and state.prewarm.closing == 0
                assert len([e for e in logs if e["event"] == "prewarm.close_timeout"]) == stalled
                # A forged token does not prove the call is the one it names: its session is left to
                # the unclaimed sweep (an attacker must not discard someone else's session).
                discarded = {e["call_sid"] for e in logs if e["event"] == "prewarm.discarded"}
                assert discarded == set()
            # Once the stalled server reads again it finds its connections gone.
            assert await settle(lambda: upstream.open == 0, stall_s + 1.0)

    run(scenario())


def test_the_recording_of_a_call_whose_stream_never_came_ends_with_its_unclaimed_session(tmp_path: Any) -> None:
    """Its files are closed when the pre-warmed session goes unclaimed, not a minute later."""

    async def scenario() -> None:
        async with running_bridge(record_dir=str(tmp_path)) as (url, app):
            state = app.state.bridge
            state.prewarm.unclaimed_s = 0.5
            call_sid = "CA" + secrets.token_hex(16)
            answer = await post_voice(url, {"CallSid": call_sid, "From": "+15550100001", "To": "+15550100000"})
            assert "<Stream" in answer.text
            meta = tmp_path / call_sid / "meta.json"
            assert await settle(lambda: state.recorder.get(call_sid) is None, 3.0)
            assert await settle(lambda: meta.exists() and json.loads(meta.read_text()).get("outcome") is not None, 3.0)
            assert json.loads(meta.read_text())["outcome"]["end_reason"] == "no_stream"

    run(scenario())
