"""Issue 13, class 2: webhook replay, tokens bound to their CallSid and reservation, admission races.

First the pure parts (the admission ledger against a table of timings, the stream tokens), then
the same rules over real sockets: the bridge under uvicorn, signed webhooks and signed upgrades.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import urllib.parse
from typing import Any

import httpx
import pytest
import structlog
import websockets
from conftest import AUTH_TOKEN, open_signed_stream, run, running_bridge, settle
from scripted_upstream import ScriptedSession, ScriptedUpstream
from websockets.asyncio.client import connect

from bridge import media_streams as ms
from bridge.admission import Admission, AdmissionRefused
from bridge.phone.simulator import parse_stream_twiml
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
                with_suppressed(lambda: tokens.append((sid, admission.reserve(sid, now))))
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


def with_suppressed(action: Any) -> None:
    try:
        action()
    except AdmissionRefused:
        pass


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
