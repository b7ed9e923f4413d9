"""Hostile frames for the chaos suite, as hypothesis strategies (shared by tests/ and benchmarks/chaos.py).

A Twilio case is one frame sent after a valid prefix (connected, start, a few media), with the
outcome the issue's contract requires: a close code (1007 for invalid content, 1003 for a binary
frame, 1008 for a policy breach), or "ignored" (an unknown event: the call goes on). An upstream
case is one to three frames a model sends mid-call; the call must go on whatever they are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from hypothesis import strategies as st

IGNORED = 0  # the frame is harmless: the stream stays open and ends normally on `stop`

# Values a counter, timestamp or index can take on a hostile wire (JSON-encoded where raw).
UNICODE_DIGITS = ["²", "0²", "²0", "١٢٣", "１２", "٣", "𝟗", "߀", "෧"]
# Long values are written ("<prefix>", "<digit>", count, "<suffix>") and made when drawn: the strategies'
# reprs (printed by hypothesis) stay short.
Spec = str | tuple[str, str, int, str]


def expand(spec: Spec) -> str:
    return spec if isinstance(spec, str) else spec[0] + spec[1] * spec[2] + spec[3]


BAD_DIGIT_STRINGS: list[Spec] = UNICODE_DIGITS + [
    "-1", "+5", " 7", "7 ", "1e3", "0x10", "", "1_000", ("", "9", 5000, ""), ("", "1", 50, ""), ("", "0", 4301, ""),
]
# Raw JSON text for a number field: wrong types, and integers beyond what int() reads from a string.
BAD_RAW_NUMBERS: list[Spec] = [
    "null", "[]", "{}", "true", "1.5", "-3", "1e400", "NaN", "Infinity", "-Infinity",
    ("", "9", 5000, ""), ("", "1", 4301, ""), ('"', "9", 5000, '"'), '["1"]', '{"n": "1"}',
]
BAD_MARK_NAMES: list[Spec] = ["0.²", "².1", "1.²", "١.٢", "0.0²", ("1.", "9", 5000, ""), ("", "9", 5000, ".1"), "²"]
PLACEHOLDER_SID = "MZ" + "c4a05" * 6 + "00"  # replaced by the stream's real streamSid when sent


@dataclass(frozen=True, repr=False)
class TwilioCase:
    label: str
    frame: str | bytes  # bytes: a binary frame
    expect: int  # close code, or IGNORED
    invalid_utf8: bool = False  # send `frame` (bytes) as a text frame
    media_before: int = 0

    def describe(self) -> str:
        shown = self.frame if isinstance(self.frame, str) else repr(self.frame)
        return f"{self.label} (after {self.media_before} media, {len(self.frame)} chars) {shown[:160]!r}"

    __repr__ = describe

    def for_stream(self, sid: str) -> str | bytes:
        if isinstance(self.frame, bytes):
            return self.frame.replace(PLACEHOLDER_SID.encode(), sid.encode())
        return self.frame.replace(PLACEHOLDER_SID, sid)


def _media_json(sid: str, chunk: str = '"1"', timestamp: str = '"0"', payload: str = '"/w=="',
                track: str = '"inbound"', stream_sid: str | None = None) -> str:
    sid_json = json.dumps(sid) if stream_sid is None else stream_sid
    return (
        f'{{"event":"media","sequenceNumber":"3","streamSid":{sid_json},'
        f'"media":{{"track":{track},"chunk":{chunk},"timestamp":{timestamp},"payload":{payload}}}}}'
    )


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def twilio_cases(sid: str = PLACEHOLDER_SID) -> st.SearchStrategy[TwilioCase]:
    """Every case, naming the stream `sid` (hostile frames still name the right stream: `for_stream`)."""
    js = json.dumps
    bad_str = st.sampled_from(BAD_DIGIT_STRINGS).map(expand)
    raw_num = st.sampled_from(BAD_RAW_NUMBERS).map(expand)
    cases = st.one_of(
        bad_str.map(lambda v: TwilioCase("media.chunk string", _media_json(sid, chunk=js(v)), 1007)),
        bad_str.map(lambda v: TwilioCase("media.timestamp string", _media_json(sid, timestamp=js(v)), 1007)),
        raw_num.map(lambda v: TwilioCase("media.chunk raw", _media_json(sid, chunk=v), 1007)),
        raw_num.map(lambda v: TwilioCase("media.timestamp raw", _media_json(sid, timestamp=v), 1007)),
        st.sampled_from(BAD_MARK_NAMES).map(expand).map(
            lambda v: TwilioCase("mark.name", js({"event": "mark", "streamSid": sid, "mark": {"name": v}}), 1007)
        ),
        st.sampled_from(["²", "١", "10", "", "A", "0 "]).map(
            lambda v: TwilioCase("dtmf.digit", js({"event": "dtmf", "streamSid": sid, "dtmf": {"digit": v}}), 1007)
        ),
        st.sampled_from([200, 5000, 30000]).map(
            lambda d: TwilioCase(f"nested {d}", f'{{"event":"media","streamSid":{js(sid)},"x":{_nested(d)}}}', 1007)
        ),
        st.sampled_from([200, 5000, 30000]).map(lambda d: TwilioCase(f"nested top {d}", _nested(d), 1007)),
        st.sampled_from(["{", "not json", "NaN", '{"event": NaN}', "", "null", "[]", '"media"', "12", '{"event":"media"'])
        .map(lambda v: TwilioCase("not an event object", v, 1007)),
        st.sampled_from(["5", "null", "[]", '{"a":1}', "true"]).map(
            lambda v: TwilioCase("event type", f'{{"event":{v},"streamSid":{js(sid)}}}', 1007)
        ),
        st.sampled_from(["5", "null", "[]", "{}"]).map(
            lambda v: TwilioCase("streamSid type", _media_json(sid, stream_sid=v), 1007)
        ),
        st.sampled_from(['"x"', "[]", "5", "null"]).map(
            lambda v: TwilioCase("media type", f'{{"event":"media","streamSid":{js(sid)},"media":{v}}}', 1007)
        ),
        st.sampled_from(["5", "null", '"%%%"', '"/w="', '"²"', "[]"]).map(
            lambda v: TwilioCase("media.payload", _media_json(sid, payload=v), 1007)
        ),
        st.binary(min_size=0, max_size=64).map(lambda b: TwilioCase("binary frame", b, 1003)),
        st.just(TwilioCase("binary JSON", _media_json(sid).encode(), 1003)),
        st.sampled_from([b"\xff\xfe", b'{"event":"\xc3\x28"}', b"\xed\xa0\x80"]).map(
            lambda b: TwilioCase("invalid UTF-8 text", b, 1007, invalid_utf8=True)
        ),
        st.just(TwilioCase("wrong streamSid", _media_json(sid, stream_sid=js("MZ" + "f" * 32)), 1008)),
        st.text(min_size=1, max_size=40).filter(lambda t: t not in ("connected", "start", "media", "dtmf", "mark", "stop"))
        .map(lambda name: TwilioCase("unknown event", js({"event": name, "streamSid": sid, "x": {"chunk": "²"}}), IGNORED)),
        st.sampled_from(["chaos", "Media", "START", "média", "stop ", "marks"]).map(
            lambda name: TwilioCase("unknown event name", js({"event": name, "streamSid": sid}), IGNORED)
        ),
    )
    return st.builds(
        lambda c, n: TwilioCase(c.label, c.frame, c.expect, c.invalid_utf8, n), cases, st.integers(0, 3)
    )


# --- the model's side --------------------------------------------------------------------------

WHERE = {"response_id": "resp_x", "item_id": "item_x", "output_index": 0}


def _event(kind: str, **fields: object) -> str:
    return json.dumps({"type": kind, "event_id": "evt_chaos", **fields})


def _raw_field_event(kind: str, field: str, raw: str, **fields: object) -> str:
    base = json.dumps({"type": kind, **fields})
    return base[:-1] + f', "{field}": {raw}}}'


def upstream_frames() -> st.SearchStrategy[list[str | bytes]]:
    """One to three frames a hostile (or broken) model sends in the middle of a call."""
    bad_num = st.one_of(
        st.sampled_from(BAD_DIGIT_STRINGS).map(lambda v: json.dumps(expand(v))), st.sampled_from(BAD_RAW_NUMBERS).map(expand)
    )
    delta = "AAAA"
    frame = st.one_of(
        bad_num.map(lambda v: _raw_field_event("response.output_audio.delta", "content_index", v, delta=delta, **WHERE)),
        bad_num.map(lambda v: _raw_field_event("input_audio_buffer.speech_started", "audio_start_ms", v, item_id="item_in")),
        bad_num.map(lambda v: _raw_field_event("input_audio_buffer.speech_stopped", "audio_end_ms", v, item_id="item_in")),
        bad_num.map(lambda v: _raw_field_event("conversation.item.truncated", "audio_end_ms", v, item_id="item_x", content_index=0)),
        bad_num.map(lambda v: _raw_field_event("response.output_audio.done", "content_index", v, **WHERE)),
        st.sampled_from(["5", "null", "[]", '"%%%"', '"²²²²"', json.dumps("A" * 7)]).map(
            lambda v: _raw_field_event("response.output_audio.delta", "delta", v, **WHERE, content_index=0)
        ),
        st.sampled_from(["5", "null", "[]", '"x"', '{"id": 5}', ('{"id": "', "r", 100000, '"}')]).map(
            lambda v: _raw_field_event("response.created", "response", expand(v))
        ),
        st.sampled_from(["5", "null", "[]", '"x"', '{"id": []}']).map(lambda v: _raw_field_event("response.done", "response", v)),
        st.sampled_from(["5", "null", '"x"', '{"code": {"a": 1}}', ('{"code": ', "9", 5000, "}"), '{"message": []}']).map(
            lambda v: _raw_field_event("error", "error", expand(v))
        ),
        st.sampled_from([200, 5000, 200000]).map(lambda d: '{"type":"response.created","response":' + _nested(d) + "}"),
        st.sampled_from(["not json", "{", "NaN", "[]", "12", '"x"', "{}", '{"type": 5}', '{"type": null}', ""]),
        st.binary(max_size=64),
        st.text(max_size=30).map(lambda name: _event(f"chaos.{name}", x={"n": "²"})),
        st.sampled_from(["5", "[]", "null", ('"', "i", 100000, '"')]).map(
            lambda v: _raw_field_event("response.output_item.added", "item", expand(v), response_id="resp_x", output_index=0)
        ),
        st.sampled_from(["5", "[]", "null"]).map(
            lambda v: _raw_field_event("response.function_call_arguments.done", "arguments", v,
                                       response_id="resp_x", item_id="item_f", call_id="call_1", name="lookup_order")
        ),
    )
    return st.lists(frame, min_size=1, max_size=3).map(Frames)


class Frames(list):  # type: ignore[type-arg]
    """A model's hostile frames, shown short."""

    def __repr__(self) -> str:
        return "[" + ", ".join(repr(f[:100]) + (f"...({len(f)})" if len(f) > 100 else "") for f in self) + "]"


# The issue's own members of each family, always run first (hypothesis `@example`s).
def issue_twilio_examples() -> list[TwilioCase]:
    sid = PLACEHOLDER_SID
    return [
        TwilioCase("media.chunk string", _media_json(sid, chunk=json.dumps("²")), 1007),
        TwilioCase("media.timestamp string", _media_json(sid, timestamp=json.dumps("9" * 5000)), 1007),
        TwilioCase("media.chunk raw", _media_json(sid, chunk="9" * 5000), 1007),
        TwilioCase("mark.name", json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "0.²"}}), 1007),
        TwilioCase("nested 30000", f'{{"event":"media","streamSid":{json.dumps(sid)},"x":{_nested(30000)}}}', 1007),
    ]


def issue_upstream_examples() -> list[list[str | bytes]]:
    return [
        Frames([_raw_field_event("response.output_audio.delta", "content_index", json.dumps("²"), delta="AAAA", **WHERE)]),
        Frames([_raw_field_event("input_audio_buffer.speech_stopped", "audio_end_ms", "9" * 5000, item_id="item_in")]),
        Frames(['{"type":"response.created","response":' + _nested(200000) + "}"]),
    ]
