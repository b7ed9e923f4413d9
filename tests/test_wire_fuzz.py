"""Property tests of the pure parsers of both peers (issue 13, class 1).

Whatever Twilio or the model sends, parsing ends in exactly one of: a typed event, None (an
unknown Twilio event, ignored), a `ProtocolError` with a close reason (Twilio), or a `BadEvent`
with a fixed reason (the model). Nothing else may come out: no `ValueError` from `int()`, no
`RecursionError`, no `TypeError`. Inputs: arbitrary text and bytes, arbitrary JSON values, and
valid messages of every known event type of Twilio and of both upstream dialects, mutated.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_dialects import SAME_EVENT_BOTH_DIALECTS, SHARED

from bridge import media_streams as ms
from bridge.dialects import BAD_EVENT_REASONS, GADialect, VoiceLiveDialect, parse_server_frame
from bridge.playback import PlaybackTracker, parse_mark_name
from bridge.realtime_events import BadEvent, Ignored, ServerEvent
from bridge.twilio_stream import CLOSE_INVALID_PAYLOAD, close_code_for
from bridge.wire import MAX_JSON_DEPTH, WireJSONError, ascii_uint, loads_bounded

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

# Values that have broken parsers: Unicode digits, digit strings over int()'s limit, and JSON text
# that json.dumps cannot produce (integers over the limit, NaN, deep nesting), spliced in raw.
NASTY_STRINGS = ["²", "0.²", "١٢٣", "１２", "1" * 5000, "9" * 16, "-1", " 1", "1 ", "", "0x10", "1e3", "\x00", "\ud800"]
RAW_JSON = [
    "1" * 5000,
    "-" + "9" * 4400,
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-0",
    "1.5",
    "[" * 100_000 + "]" * 100_000,
    "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1),
    '{"a":' * 2000 + "1" + "}" * 2000,
]
RAW = "__raw_json__"

json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(NASTY_STRINGS),
    st.just(RAW),
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def _text_of(value: Any, raw: str) -> str:
    """JSON text of `value`, with every RAW placeholder replaced by the raw JSON `raw`."""
    return json.dumps(value).replace(json.dumps(RAW), raw)


def _mutations(message: dict[str, Any]) -> st.SearchStrategy[Any]:
    """`message` with one field (at any depth) replaced by an arbitrary value, or removed."""
    paths: list[tuple[Any, ...]] = []

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        paths.append(path)
        if isinstance(node, dict):
            for key, child in node.items():
                walk(child, (*path, key))
        elif isinstance(node, list):
            for i, child in enumerate(node):
                walk(child, (*path, i))

    walk(message, ())

    def mutate(path: tuple[Any, ...], value: Any, remove: bool) -> Any:
        copy = json.loads(json.dumps(message))
        if not path:
            return value
        node = copy
        for step in path[:-1]:
            node = node[step]
        if remove and isinstance(node, dict):
            del node[path[-1]]
        else:
            node[path[-1]] = value
        return copy

    return st.builds(mutate, st.sampled_from(paths), json_values, st.booleans())


# --- the shared helpers ----------------------------------------------------------------------


@given(st.one_of(st.text(), st.sampled_from(NASTY_STRINGS)))
@example("²")
@example("1" * 5000)
@FUZZ
def test_ascii_uint_takes_only_bounded_ascii_digits(text: str) -> None:
    value = ascii_uint(text)
    if text.isascii() and text.isdigit() and len(text) <= 15:
        assert value == int(text)
    else:
        assert value is None


@given(st.one_of(st.text(), st.binary(), st.sampled_from(RAW_JSON), json_values.map(lambda v: _text_of(v, "1"))))
@FUZZ
def test_loads_bounded_returns_a_value_or_refuses(text: str | bytes) -> None:
    try:
        loads_bounded(text)
    except WireJSONError as exc:
        assert len(exc.detail) < 100


@pytest.mark.parametrize("raw", [r for r in RAW_JSON if r not in ("-0", "1.5")], ids=lambda r: r[:12])
def test_json_python_cannot_read_safely_is_refused(raw: str) -> None:
    with pytest.raises(WireJSONError):
        loads_bounded(f'{{"n": {raw}}}')


def test_json_as_deep_as_allowed_is_read() -> None:
    depth = MAX_JSON_DEPTH - 1
    assert loads_bounded('{"a": ' + "[" * depth + "]" * depth + "}") == {"a": json.loads("[" * depth + "]" * depth)}


@given(st.text())
@example("0.²")
@example("².1")
@example("0." + "1" * 5000)
@FUZZ
def test_mark_names_are_parsed_or_refused(name: str) -> None:
    parsed = parse_mark_name(name)
    tracker = PlaybackTracker()
    assert tracker.mark_echoed(name, now=0.0) is False  # nothing was sent: no name is an echo
    epoch_text, _, seq_text = name.partition(".")
    if parsed is not None:
        assert epoch_text.isascii() and seq_text.isascii() and parsed == (int(epoch_text), int(seq_text))
    else:
        assert ascii_uint(epoch_text) is None or ascii_uint(seq_text) is None or "." not in name


# --- Twilio ------------------------------------------------------------------------------------

TWILIO_REASONS = {"invalid_json", "invalid_field", "invalid_base64"}
PAYLOAD = base64.b64encode(b"\xff" * 160).decode()
TWILIO_MESSAGES = [
    json.loads(ms.connected_message()),
    json.loads(ms.start_message("MZ1", "CA1", "AC1", {"To": "+15550100000", "stream_token": "1.abc"})),
    json.loads(ms.inbound_media_message("MZ1", b"\xff" * 160, chunk=3, timestamp_ms=40, sequence=4)),
    json.loads(ms.mark_echo_message("MZ1", "0.1", 5)),
    json.loads(ms.dtmf_message("MZ1", "5", 6)),
    json.loads(ms.stop_message("MZ1", "CA1", "AC1", 7)),
]


def _twilio_outcome(text: str) -> str:
    """What parsing `text` comes to; anything but an event, None or a ProtocolError fails the test."""
    try:
        event = ms.parse_twilio_message(text)
    except ms.ProtocolError as exc:
        assert exc.reason in TWILIO_REASONS
        assert close_code_for(exc.reason) == CLOSE_INVALID_PAYLOAD
        return exc.reason
    assert event is None or isinstance(event, ms.Connected | ms.Start | ms.Media | ms.Dtmf | ms.MarkEcho | ms.Stop)
    if isinstance(event, ms.Media):
        assert 0 <= event.chunk < 10**15 and 0 <= event.timestamp_ms < 10**15
    if isinstance(event, ms.MarkEcho):
        assert parse_mark_name(event.name) is not None
    if isinstance(event, ms.Dtmf):
        assert event.digit in ms.DTMF_DIGITS
    return "event"


@pytest.mark.parametrize("message", TWILIO_MESSAGES, ids=lambda m: m["event"])
def test_the_valid_twilio_messages_parse(message: dict[str, Any]) -> None:
    assert _twilio_outcome(json.dumps(message)) == "event"


@given(st.text())
@FUZZ
def test_twilio_arbitrary_text(text: str) -> None:
    _twilio_outcome(text)


@given(json_values, st.sampled_from(RAW_JSON))
@FUZZ
def test_twilio_arbitrary_json(value: Any, raw: str) -> None:
    _twilio_outcome(_text_of(value, raw))


@pytest.mark.parametrize("message", TWILIO_MESSAGES, ids=lambda m: m["event"])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(data=st.data())
def test_twilio_mutated_messages(message: dict[str, Any], data: st.DataObject) -> None:
    mutated = data.draw(_mutations(message))
    raw = data.draw(st.sampled_from(RAW_JSON))
    _twilio_outcome(_text_of(mutated, raw))


@pytest.mark.parametrize(
    ("where", "value"),
    [
        (("media", "chunk"), "²"),
        (("media", "timestamp"), "1" * 5000),
        (("media", "chunk"), 1.5),
        (("media", "chunk"), -3),
        (("media", "timestamp"), True),
        (("media", "payload"), "é" * 8),
        (("mark", "name"), "0.²"),
        (("mark", "name"), "0." + "1" * 5000),
        (("mark", "name"), "hello"),
        (("dtmf", "digit"), "55"),
        (("start", "tracks"), [1]),
    ],
)
def test_twilio_examples_from_the_issue_are_invalid_fields(where: tuple[str, str], value: Any) -> None:
    message = next(m for m in TWILIO_MESSAGES if where[0] in m)
    message = json.loads(json.dumps(message))
    message[where[0]][where[1]] = value
    assert _twilio_outcome(json.dumps(message)) in ("invalid_field", "invalid_base64")


def test_twilio_json_python_cannot_read_is_invalid_json() -> None:
    media = json.dumps(TWILIO_MESSAGES[2]).replace('"3"', "1" * 5000)
    assert _twilio_outcome(media) == "invalid_json"
    assert _twilio_outcome("[" * 100_000) == "invalid_json"
    assert _twilio_outcome('{"event": "media", "x": NaN}') == "invalid_json"


# --- the model, in both dialects ---------------------------------------------------------------

DIALECTS = [GADialect(), VoiceLiveDialect()]
GA_MESSAGES = [ga for ga, _, _ in SAME_EVENT_BOTH_DIALECTS] + [m for m, _ in SHARED]
VOICELIVE_MESSAGES = (
    [vl for _, vl, _ in SAME_EVENT_BOTH_DIALECTS]
    + [m for m, _ in SHARED]
    + [{"type": "warning", "warning": {"message": "param ignored", "code": "ignored"}}]
)
KNOWN = [(GADialect(), m) for m in GA_MESSAGES] + [(VoiceLiveDialect(), m) for m in VOICELIVE_MESSAGES]
SECRET = "caller-said-secret-words"  # content that must never reach a BadEvent's detail


def _upstream_outcome(dialect: Any, raw: str | bytes) -> ServerEvent:
    event = parse_server_frame(dialect, raw)  # must not raise
    assert isinstance(event, ServerEvent)
    if isinstance(event, BadEvent):
        assert event.reason in BAD_EVENT_REASONS
        assert SECRET not in event.detail and len(event.detail) < 100
        assert event.wire_type is None or len(event.wire_type) <= 128
    if isinstance(event, Ignored):
        assert len(event.wire_type) <= 128
    return event


@pytest.mark.parametrize(("dialect", "message"), KNOWN, ids=lambda v: v.get("type") if isinstance(v, dict) else v.name)
def test_every_known_upstream_event_parses(dialect: Any, message: dict[str, Any]) -> None:
    event = _upstream_outcome(dialect, json.dumps(message))
    assert not isinstance(event, BadEvent | Ignored)


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
@given(raw=st.one_of(st.text(), st.binary(), st.sampled_from(RAW_JSON)))
@FUZZ
def test_upstream_arbitrary_frames(dialect: Any, raw: str | bytes) -> None:
    _upstream_outcome(dialect, raw)


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
@given(value=json_values, raw=st.sampled_from(RAW_JSON))
@FUZZ
def test_upstream_arbitrary_json(dialect: Any, value: Any, raw: str) -> None:
    _upstream_outcome(dialect, _text_of(value, raw))


secret_values = json_values | st.just(SECRET) | st.just({"text": SECRET}) | st.just([SECRET, 1])


@pytest.mark.parametrize(("dialect", "message"), KNOWN, ids=lambda v: v.get("type") if isinstance(v, dict) else v.name)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(data=st.data())
def test_upstream_mutated_events(dialect: Any, message: dict[str, Any], data: st.DataObject) -> None:
    mutated = data.draw(_mutations(message))
    raw = data.draw(st.sampled_from(RAW_JSON + [json.dumps(SECRET)]))
    _upstream_outcome(dialect, _text_of(mutated, raw))


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ('{"type": "input_audio_buffer.speech_started", "item_id": "i", "audio_start_ms": ' + "1" * 5000 + "}", "invalid_json"),
        ('{"type": "error", "error": ' + "[" * 5000 + "]" * 5000 + "}", "invalid_json"),
        ('{"type": "error", "error": {"code": NaN}}', "invalid_json"),
        ('{"type": "input_audio_buffer.speech_started", "item_id": "i", "audio_start_ms": 1.5}', "invalid_field"),
        ('{"type": "input_audio_buffer.speech_started", "item_id": "i", "audio_start_ms": 1e300}', "invalid_field"),
        ('{"type": "input_audio_buffer.speech_started", "item_id": "i", "audio_start_ms": -1}', "invalid_field"),
        ('{"type": "input_audio_buffer.speech_started", "item_id": "i", "audio_start_ms": "²"}', "invalid_field"),
        ('{"type": "conversation.item.truncated", "item_id": "' + "i" * 300 + '", "audio_end_ms": 1}', "invalid_field"),
        ('["type", "error"]', "not_an_object"),
        ('{"type": 7}', "missing_type"),
        (b"\x00\x01", "binary_frame"),
    ],
)
def test_upstream_bad_events_have_their_reason(dialect: Any, raw: str | bytes, reason: str) -> None:
    event = _upstream_outcome(dialect, raw)
    assert isinstance(event, BadEvent) and event.reason == reason


def test_a_bad_audio_delta_names_its_type_but_not_its_content() -> None:
    raw = json.dumps({"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", "delta": SECRET + "é"})
    event = _upstream_outcome(GADialect(), raw)
    assert event == BadEvent("invalid_base64", "response.output_audio.delta", "delta is not base64")


def test_error_fields_from_the_model_are_cut_for_logs() -> None:
    raw = json.dumps({"type": "error", "error": {"code": "c" * 10_000, "message": "m" * 100_000, "type": 5}})
    event = _upstream_outcome(GADialect(), raw)
    assert len(event.code) == 128 and len(event.message) == 1000 and event.error_type == "5"



def test_a_missing_payload_is_a_missing_field_not_bad_base64() -> None:
    media = json.loads(json.dumps(TWILIO_MESSAGES[2]))
    del media["media"]["payload"]
    assert _twilio_outcome(json.dumps(media)) == "invalid_field"
    delta = {"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", "delta": 5}
    assert _upstream_outcome(GADialect(), json.dumps(delta)) == BadEvent(
        "invalid_field", "response.output_audio.delta", "delta must be a string"
    )
