"""Twilio Media Streams messages: parsed once, typed, bad frames named."""

from __future__ import annotations

import base64
import json

import pytest

from bridge import media_streams as ms


def test_round_trip_of_what_twilio_sends() -> None:
    start = ms.parse_twilio_message(ms.start_message("MZ1", "CA1", "AC1", {"To": "+1"}))
    assert isinstance(start, ms.Start)
    assert (start.stream_sid, start.call_sid, start.custom_parameters) == ("MZ1", "CA1", {"To": "+1"})
    assert start.media_format == ms.TWILIO_MEDIA_FORMAT
    media = ms.parse_twilio_message(ms.inbound_media_message("MZ1", b"\x01\x02", chunk=3, timestamp_ms=40, sequence=4))
    assert media == ms.Media(stream_sid="MZ1", track="inbound", chunk=3, timestamp_ms=40, payload=b"\x01\x02")
    assert ms.parse_twilio_message(ms.mark_echo_message("MZ1", "0.1", 5)) == ms.MarkEcho("MZ1", "0.1")
    assert ms.parse_twilio_message(ms.stop_message("MZ1", "CA1", "AC1", 6)) == ms.Stop("MZ1")
    assert isinstance(ms.parse_twilio_message(ms.connected_message()), ms.Connected)
    dtmf = json.dumps({"event": "dtmf", "streamSid": "MZ1", "dtmf": {"track": "inbound_track", "digit": "5"}})
    assert ms.parse_twilio_message(dtmf) == ms.Dtmf("MZ1", "5")


def test_unknown_events_are_skipped_not_fatal() -> None:
    assert ms.parse_twilio_message(json.dumps({"event": "something-new", "streamSid": "MZ1"})) is None


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        (json.dumps({"streamSid": "MZ1"}), "invalid_field"),
        (json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": "%%%", "chunk": "1", "timestamp": "0"}}), "invalid_base64"),
        (json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": "AA==", "chunk": "x", "timestamp": "0"}}), "invalid_field"),
        (json.dumps({"event": "media", "media": {"payload": "AA==", "chunk": "1", "timestamp": "0"}}), "invalid_field"),
        (json.dumps({"event": "start", "streamSid": "MZ1", "start": {"callSid": 5, "mediaFormat": {}}}), "invalid_field"),
        (json.dumps({"event": "mark", "streamSid": "MZ1", "mark": {}}), "invalid_field"),
    ],
)
def test_bad_frames_raise_a_named_protocol_error(frame: str, reason: str) -> None:
    with pytest.raises(ms.ProtocolError) as info:
        ms.parse_twilio_message(frame)
    assert info.value.reason == reason


def test_what_we_send_twilio() -> None:
    media = json.loads(ms.media_message("MZ1", b"\xff\x7f"))
    assert media == {"event": "media", "streamSid": "MZ1", "media": {"payload": base64.b64encode(b"\xff\x7f").decode()}}
    assert json.loads(ms.mark_message("MZ1", "0.1")) == {"event": "mark", "streamSid": "MZ1", "mark": {"name": "0.1"}}
    assert json.loads(ms.clear_message("MZ1")) == {"event": "clear", "streamSid": "MZ1"}
    assert ms.parse_outbound_message(ms.media_message("MZ1", b"ab"), "MZ1") == ms.OutboundMedia(b"ab")
    assert ms.parse_outbound_message(ms.clear_message("MZ1"), "MZ1") == ms.OutboundClear()
    with pytest.raises(ms.ProtocolError):
        ms.parse_outbound_message(ms.clear_message("MZ2"), "MZ1")
