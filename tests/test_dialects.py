"""The two upstream dialects: every client event checked against its protocol's schema, and every
server event turned into the bridge's vocabulary.

GA events are checked with the `openai` package's own pydantic types (`RealtimeClientEvent`), made
strict: those models accept unknown keys, so the check also fails on any key the type does not
declare. Voice Live events are checked with `voicelive_schema`, written from the Voice Live API
reference.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import voicelive_schema
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from pydantic import BaseModel, TypeAdapter

from bridge import dialects
from bridge.dialects import (
    GADialect,
    InputTranscription,
    SessionConfig,
    ToolSpec,
    TurnDetection,
    UpstreamProtocolError,
    VoiceLiveDialect,
    dialect_for,
)
from bridge.realtime_events import (
    AudioDelta,
    AudioDone,
    FunctionCallRequested,
    Ignored,
    InputTranscriptDone,
    ItemAdded,
    ItemTruncated,
    OutputItemAdded,
    OutputTranscriptDone,
    ResponseFinished,
    ResponseStarted,
    SessionReady,
    SpeechStarted,
    SpeechStopped,
    UpstreamError,
    UpstreamWarning,
)

GA_CLIENT_EVENT = TypeAdapter(RealtimeClientEvent)
GA_SERVER_EVENT = TypeAdapter(RealtimeServerEvent)

HANG_UP = ToolSpec(
    name="hang_up",
    description="End the call when the caller says goodbye.",
    parameters={"type": "object", "properties": {"reason": {"type": "string"}}, "required": ["reason"]},
)
LOOKUP = ToolSpec(name="lookup_order", description="Find an order by its number.")

# One entry per kind of profile the bridge can express.
VARIANTS: dict[str, dict[str, Any]] = {
    "minimal": {},
    "server_vad_tuned": {
        "turn_detection": TurnDetection("server_vad", threshold=0.6, prefix_padding_ms=200, silence_duration_ms=400)
    },
    "semantic": {
        "turn_detection": TurnDetection("semantic", eagerness="low", remove_filler_words=True, languages=("en-US",))
    },
    "semantic_multilingual": {
        "turn_detection": TurnDetection("semantic_multilingual", silence_duration_ms=500, languages=("en", "fr"))
    },
    "noise_and_echo": {"noise_suppression": True, "echo_cancellation": True},
    "transcription": {"transcription": InputTranscription(model="whisper-1", language="en")},
    "transcription_no_language": {"transcription": InputTranscription(model="gpt-4o-transcribe")},
    "tools": {"tools": (HANG_UP, LOOKUP)},
    "greeting": {"greeting": "Greet the caller by saying the shop's name."},
    "everything": {
        "turn_detection": TurnDetection("semantic"),
        "noise_suppression": True,
        "echo_cancellation": True,
        "transcription": InputTranscription(model="whisper-1"),
        "tools": (HANG_UP,),
        "greeting": "Say hello.",
    },
}
AUDIO_MODES = ("pcm24k", "g711")


def config(variant: str, audio_mode: str, **overrides: Any) -> SessionConfig:
    fields = {"instructions": "Be brief.", "voice": "marin", "audio_mode": audio_mode, **VARIANTS[variant], **overrides}
    return SessionConfig(**fields)


def extra_keys(value: Any, path: str = "$") -> list[str]:
    """Keys the openai models accepted without declaring them (they allow extras)."""
    found: list[str] = []
    if isinstance(value, BaseModel):
        found += [f"{path}.{key}" for key in (value.model_extra or {})]
        for name in type(value).model_fields:
            found += extra_keys(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found += extra_keys(item, f"{path}[{index}]")
    return found


def assert_ga_client_event(event: dict[str, Any]) -> None:
    model = GA_CLIENT_EVENT.validate_python(event)
    assert extra_keys(model) == [], f"keys the GA types do not declare: {extra_keys(model)}"
    # And nothing was coerced or dropped on the way: the typed event says exactly what we sent.
    assert model.model_dump(mode="json", exclude_unset=True) == event


def assert_voicelive_client_event(event: dict[str, Any]) -> None:
    assert voicelive_schema.problems(event) == []


# --- the checks themselves catch mistakes ------------------------------------------------------


def test_the_ga_check_catches_a_misplaced_key() -> None:
    event = GADialect().session_update(config("minimal", "pcm24k"))
    event["session"]["turn_detection"] = {"type": "server_vad"}  # the beta place, not GA's audio.input
    with pytest.raises(AssertionError, match="turn_detection"):
        assert_ga_client_event(event)


@pytest.mark.parametrize(
    ("mutate", "complaint"),
    [
        (lambda s: s.update(voice="alloy"), "expected object"),
        (lambda s: s.update(input_audio_format="audio/pcmu"), "input_audio_format"),
        (lambda s: s.update(input_audio_noise_reduction={"type": "near_fieldd"}), "near_fieldd"),
        (lambda s: s["turn_detection"].update(type="semantic_vad"), "semantic_vad"),
        (lambda s: s["turn_detection"].update(eagerness="low"), "eagerness"),
        (lambda s: s.update(audio={"input": {}}), "unknown property 'audio'"),
        (lambda s: s.update(input_audio_format="g711_ulaw", input_audio_sampling_rate=24000), "8000 Hz only"),
    ],
)
def test_the_voicelive_check_catches_mistakes(mutate: Any, complaint: str) -> None:
    event = VoiceLiveDialect().session_update(config("minimal", "pcm24k"))
    mutate(event["session"])
    assert any(complaint in problem for problem in voicelive_schema.problems(event)), voicelive_schema.problems(event)


# --- GA client events ----------------------------------------------------------------------------


@pytest.mark.parametrize("audio_mode", AUDIO_MODES)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_ga_session_update_is_a_valid_ga_event(variant: str, audio_mode: str) -> None:
    assert_ga_client_event(GADialect().session_update(config(variant, audio_mode)))


def test_ga_session_update_carries_each_setting_in_its_ga_place() -> None:
    session = GADialect().session_update(config("everything", "g711"))["session"]
    audio_in = session["audio"]["input"]
    assert audio_in["format"] == session["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    assert audio_in["turn_detection"] == {"type": "semantic_vad", "create_response": True, "interrupt_response": True}
    assert audio_in["noise_reduction"] == {"type": "near_field"}
    assert audio_in["transcription"] == {"model": "whisper-1"}
    assert session["tools"] == [
        {
            "type": "function",
            "name": "hang_up",
            "description": HANG_UP.description,
            "parameters": dict(HANG_UP.parameters),
        }
    ]
    assert session["tool_choice"] == "auto"
    assert "echo" not in str(session)  # GA has no server echo cancellation: nothing is sent for it


def test_ga_turn_detection_defaults_to_server_vad_and_keeps_tuning() -> None:
    default = GADialect().session_update(config("minimal", "pcm24k"))["session"]["audio"]["input"]
    assert default["turn_detection"] == {"type": "server_vad", "create_response": True, "interrupt_response": True}
    assert "noise_reduction" not in default and "transcription" not in default
    tuned = GADialect().session_update(config("server_vad_tuned", "pcm24k"))["session"]["audio"]["input"][
        "turn_detection"
    ]
    assert tuned["threshold"] == 0.6 and tuned["prefix_padding_ms"] == 200 and tuned["silence_duration_ms"] == 400


def test_ga_semantic_vad_leaves_out_what_it_has_no_place_for() -> None:
    td = GADialect().session_update(config("semantic_multilingual", "pcm24k"))["session"]["audio"]["input"][
        "turn_detection"
    ]
    assert td == {"type": "semantic_vad", "create_response": True, "interrupt_response": True}


@pytest.mark.parametrize(
    "event",
    [
        json.loads(dialects.append_audio(b"\x00\x01" * 160)),
        dialects.create_response(),
        dialects.create_response("Say goodbye."),
        dialects.greeting_response(config("greeting", "pcm24k")),
        dialects.greeting_response(config("minimal", "pcm24k")),
        dialects.cancel_response(),
        dialects.truncate_item("item_1", 0, 1234),
        dialects.delete_item("item_2"),
        dialects.function_call_output("call_1", '{"ok": true}'),
    ],
    ids=lambda event: event["type"],
)
def test_every_other_client_event_is_valid_in_both_dialects(event: dict[str, Any]) -> None:
    assert_ga_client_event(event)
    assert_voicelive_client_event(event)


def test_the_greeting_adds_to_the_session_instructions() -> None:
    event = dialects.greeting_response(config("greeting", "pcm24k"))
    assert event["response"]["instructions"] == "Be brief.\n\nGreet the caller by saying the shop's name."
    assert dialects.greeting_response(config("minimal", "pcm24k")) == {"type": "response.create"}


# --- Voice Live client events ----------------------------------------------------------------


@pytest.mark.parametrize("audio_mode", AUDIO_MODES)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_voicelive_session_update_is_valid_per_the_reference(variant: str, audio_mode: str) -> None:
    assert_voicelive_client_event(VoiceLiveDialect().session_update(config(variant, audio_mode)))


@pytest.mark.parametrize("voice_type", ["openai", "azure-standard"])
def test_voicelive_voice_is_an_object_with_its_type(voice_type: str) -> None:
    voice = "en-US-AvaNeural" if voice_type == "azure-standard" else "alloy"
    event = VoiceLiveDialect().session_update(config("minimal", "pcm24k", voice=voice, voice_type=voice_type))
    assert event["session"]["voice"] == {"type": voice_type, "name": voice}
    assert_voicelive_client_event(event)


def test_voicelive_session_update_is_flat_with_the_azure_extras() -> None:
    session = VoiceLiveDialect().session_update(config("everything", "pcm24k"))["session"]
    assert session["modalities"] == ["text", "audio"]
    assert (session["input_audio_format"], session["input_audio_sampling_rate"], session["output_audio_format"]) == (
        "pcm16",
        24000,
        "pcm16",
    )
    assert session["voice"] == {"type": "openai", "name": "marin"}
    assert session["turn_detection"] == {
        "type": "azure_semantic_vad",
        "create_response": True,
        "interrupt_response": True,
        "auto_truncate": False,
    }
    assert session["input_audio_noise_reduction"] == {"type": "azure_deep_noise_suppression"}
    assert session["input_audio_echo_cancellation"] == {"type": "server_echo_cancellation"}
    assert session["input_audio_transcription"] == {"model": "whisper-1"}
    assert [tool["name"] for tool in session["tools"]] == ["hang_up"] and session["tool_choice"] == "auto"
    assert "audio" not in session and "type" not in session  # nothing of the GA shape


def test_voicelive_g711_passthrough_is_ulaw_at_8_khz() -> None:
    session = VoiceLiveDialect().session_update(config("minimal", "g711"))["session"]
    assert (session["input_audio_format"], session["input_audio_sampling_rate"], session["output_audio_format"]) == (
        "g711_ulaw",
        8000,
        "g711_ulaw",
    )


@pytest.mark.parametrize(
    ("turn_detection", "expected"),
    [
        (None, {"type": "azure_semantic_vad"}),
        (
            TurnDetection("semantic", remove_filler_words=True, languages=("en-US",)),
            {"type": "azure_semantic_vad", "remove_filler_words": True, "languages": ["en-US"]},
        ),
        (
            TurnDetection("semantic_multilingual", silence_duration_ms=500),
            {"type": "azure_semantic_vad_multilingual", "silence_duration_ms": 500},
        ),
        (TurnDetection("server_vad", threshold=0.5, languages=("en",)), {"type": "server_vad", "threshold": 0.5}),
    ],
)
def test_voicelive_turn_detection(turn_detection: TurnDetection | None, expected: dict[str, Any]) -> None:
    td = VoiceLiveDialect().session_update(config("minimal", "pcm24k", turn_detection=turn_detection))["session"][
        "turn_detection"
    ]
    assert td == {**expected, "create_response": True, "interrupt_response": True, "auto_truncate": False}


def test_voicelive_leaves_out_noise_echo_and_transcription_when_off() -> None:
    session = VoiceLiveDialect().session_update(config("minimal", "pcm24k"))["session"]
    assert not {
        "input_audio_noise_reduction",
        "input_audio_echo_cancellation",
        "input_audio_transcription",
        "tools",
    } & set(session)


# --- what each dialect cannot do ------------------------------------------------------------------


def test_unsupported_settings_are_reported_before_any_call() -> None:
    azure_voice = config("minimal", "pcm24k", voice="en-US-AvaNeural", voice_type="azure-standard")
    assert GADialect().unsupported(azure_voice) == (
        "voice type 'azure-standard' needs Voice Live; GA Realtime voices are type 'openai'",
    )
    assert VoiceLiveDialect().unsupported(azure_voice) == ()
    assert VoiceLiveDialect().unsupported(config("minimal", "pcm24k", voice_type="azure-personal"))
    for dialect in (GADialect(), VoiceLiveDialect()):
        assert dialect.unsupported(config("everything", "g711")) == ()
        assert dialect.unsupported(config("minimal", "mp3"))
        assert dialect.unsupported(config("minimal", "pcm24k", turn_detection=TurnDetection("azure_semantic_vad")))
        assert dialect.unsupported(
            config("minimal", "pcm24k", turn_detection=TurnDetection("semantic", eagerness="eager"))
        )
        assert dialect.unsupported(config("minimal", "pcm24k", tools=(HANG_UP, HANG_UP)))


def test_dialect_for_each_upstream() -> None:
    assert [dialect_for(u).name for u in ("local", "openai", "azure-openai", "voicelive")] == [
        "ga",
        "ga",
        "ga",
        "voicelive",
    ]
    with pytest.raises(ValueError):
        dialect_for("bogus")


# --- server events → bridge vocabulary ---------------------------------------------------------

AUDIO = b"\x01\x02\x03\x04"
B64 = base64.b64encode(AUDIO).decode()
WHERE = {"response_id": "resp_1", "item_id": "item_1", "output_index": 0, "content_index": 0}

# (GA message, Voice Live message, bridge event): the same event in both dialects.
SAME_EVENT_BOTH_DIALECTS: list[tuple[dict[str, Any], dict[str, Any], Any]] = [
    (
        {"type": "response.output_audio.delta", **WHERE, "delta": B64},
        {"type": "response.audio.delta", **WHERE, "delta": B64},
        AudioDelta("resp_1", "item_1", 0, AUDIO),
    ),
    (
        {"type": "response.output_audio.done", **WHERE},
        {"type": "response.audio.done", **WHERE},
        AudioDone("resp_1", "item_1", 0),
    ),
    (
        {"type": "response.output_audio_transcript.done", **WHERE, "transcript": "Hello there."},
        {"type": "response.audio_transcript.done", **WHERE, "transcript": "Hello there."},
        OutputTranscriptDone("item_1", "Hello there."),
    ),
    (
        {
            "type": "conversation.item.added",
            "previous_item_id": "item_0",
            "item": {"id": "item_1", "type": "message", "role": "user", "content": []},
        },
        {
            "type": "conversation.item.created",
            "previous_item_id": "item_0",
            "item": {"id": "item_1", "type": "message", "role": "user", "content": []},
        },
        ItemAdded("item_1", "message", "user", "item_0"),
    ),
]

# Messages with one name in both dialects.
SHARED: list[tuple[dict[str, Any], Any]] = [
    ({"type": "session.created", "session": {}}, SessionReady(updated=False)),
    ({"type": "session.updated", "session": {}}, SessionReady(updated=True)),
    (
        {"type": "input_audio_buffer.speech_started", "item_id": "item_2", "audio_start_ms": 1500},
        SpeechStarted("item_2", 1500),
    ),
    (
        {"type": "input_audio_buffer.speech_stopped", "item_id": "item_2", "audio_end_ms": 2900},
        SpeechStopped("item_2", 2900),
    ),
    ({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}}, ResponseStarted("resp_1")),
    (
        {
            "type": "response.output_item.added",
            "response_id": "resp_1",
            "output_index": 0,
            "item": {"id": "item_1", "type": "message", "role": "assistant", "content": []},
        },
        OutputItemAdded("resp_1", "item_1", "message"),
    ),
    (
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": "item_2",
            "content_index": 0,
            "transcript": "What are your hours?",
        },
        InputTranscriptDone("item_2", 0, "What are your hours?"),
    ),
    (
        {
            "type": "response.function_call_arguments.done",
            **WHERE,
            "call_id": "call_9",
            "name": "hang_up",
            "arguments": '{"reason": "bye"}',
        },
        FunctionCallRequested("resp_1", "item_1", "call_9", "hang_up", '{"reason": "bye"}'),
    ),
    (
        {"type": "response.done", "response": {"id": "resp_1", "status": "cancelled"}},
        ResponseFinished("resp_1", "cancelled"),
    ),
    (
        {"type": "conversation.item.truncated", "item_id": "item_1", "content_index": 0, "audio_end_ms": 640},
        ItemTruncated("item_1", 0, 640),
    ),
    (
        {
            "type": "error",
            "error": {"type": "invalid_request_error", "code": "response_cancel_not_active", "message": "no response"},
        },
        UpstreamError("response_cancel_not_active", "no response", "invalid_request_error"),
    ),
]


@pytest.mark.parametrize(
    ("ga", "voicelive", "expected"),
    SAME_EVENT_BOTH_DIALECTS,
    ids=lambda v: v.get("type") if isinstance(v, dict) else "",
)
def test_renamed_events_mean_the_same_in_both_dialects(
    ga: dict[str, Any], voicelive: dict[str, Any], expected: Any
) -> None:
    assert GADialect().parse({"event_id": "evt_1", **ga}) == expected
    assert VoiceLiveDialect().parse({"event_id": "evt_1", **voicelive}) == expected
    # Each dialect's names mean nothing to the other: no event is taken for another.
    assert GADialect().parse(voicelive) == Ignored(voicelive["type"])
    assert VoiceLiveDialect().parse(ga) == Ignored(ga["type"])


@pytest.mark.parametrize(("message", "expected"), SHARED, ids=lambda v: v.get("type") if isinstance(v, dict) else "")
def test_shared_events_parse_alike(message: dict[str, Any], expected: Any) -> None:
    assert GADialect().parse({"event_id": "evt_1", **message}) == expected
    assert VoiceLiveDialect().parse({"event_id": "evt_1", **message}) == expected


def test_the_ga_samples_are_real_ga_server_events() -> None:
    """The GA messages above have the shape the GA protocol gives them (per the `openai` types)."""
    usage = {"type": "duration", "seconds": 1.0}
    for ga, _, _ in SAME_EVENT_BOTH_DIALECTS:
        GA_SERVER_EVENT.validate_python({"event_id": "evt_1", **ga})
    for message, _ in SHARED:
        if message["type"] in ("session.created", "session.updated"):
            continue  # sessions need the full server-side config
        extra = {"usage": usage} if message["type"].endswith("transcription.completed") else {}
        GA_SERVER_EVENT.validate_python({"event_id": "evt_1", **message, **extra})


def test_voicelive_warning_and_unknown_events() -> None:
    voicelive = VoiceLiveDialect()
    assert voicelive.parse(
        {"type": "warning", "warning": {"message": "param ignored", "code": "ignored"}}
    ) == UpstreamWarning("ignored", "param ignored")
    assert voicelive.parse({"type": "response.animation_viseme.delta", **WHERE}) == Ignored(
        "response.animation_viseme.delta"
    )
    assert voicelive.parse({"type": "response.audio_transcript.delta", **WHERE, "delta": "Hel"}) == Ignored(
        "response.audio_transcript.delta"
    )


@pytest.mark.parametrize("dialect", [GADialect(), VoiceLiveDialect()], ids=lambda d: d.name)
@pytest.mark.parametrize(
    "message",
    [
        {"no": "type"},
        {"type": "response.function_call_arguments.done", **WHERE, "name": "hang_up", "arguments": "{}"},  # no call_id
        {"type": "conversation.item.input_audio_transcription.completed", "item_id": "i", "transcript": 5},
        {"type": "response.created", "response": "resp_1"},
        {"type": "warning", "warning": "text"},
    ],
)
def test_malformed_events_are_protocol_errors(dialect: Any, message: dict[str, Any]) -> None:
    with pytest.raises(UpstreamProtocolError):
        dialect.parse(message)


@pytest.mark.parametrize(
    ("dialect", "kind"), [(GADialect(), "response.output_audio.delta"), (VoiceLiveDialect(), "response.audio.delta")]
)
def test_audio_that_is_not_base64_is_a_protocol_error(dialect: Any, kind: str) -> None:
    with pytest.raises(UpstreamProtocolError, match="base64"):
        dialect.parse({"type": kind, **WHERE, "delta": "%%%"})
