"""How the bridge reads the upstream's errors, closes and audio events (bridge/dialects.py), and the
one AudioMode type in the settings, the session shapes and the recordings. Pure: no sockets."""

from __future__ import annotations

import json

import pytest

from bridge import dialects, recording_format
from bridge.append_batcher import AppendBatcher
from bridge.append_limits import MAX_APPEND_MS, check_append_ms
from bridge.dialects import (
    AUDIO_DELTA_TYPES,
    GADialect,
    SessionConfig,
    VoiceLiveDialect,
    is_benign_error,
    is_clean_close,
    is_session_expired,
    is_truncate_error,
    parse_server_frame,
)
from bridge.realtime_events import AudioDelta, SpeechStarted, UpstreamError
from bridge.settings import ConfigError, Settings
from voice_codecs import AudioMode


def _error(code: str = "", message: str = "") -> UpstreamError:
    return UpstreamError(code=code, message=message, error_type="invalid_request_error")


@pytest.mark.parametrize(
    ("event", "expired", "benign", "truncate"),
    [
        (_error("session_expired", "Your session hit the maximum duration of 30 minutes."), True, False, False),
        (_error("response_cancel_not_active", "Cancellation failed: no active response found"), False, True, False),
        (_error("invalid_value", "Audio content of 1200ms is already shorter than 1500ms"), False, False, True),
        (_error("", "Cannot truncate item: audio_end_ms is past the end"), False, False, True),
        (_error("", "TRUNCATION not possible"), False, False, True),
        (_error("item_not_found", "Item 'item_1' not found"), False, False, False),
        (_error("server_error", "The server had an error"), False, False, False),
        (_error("SESSION_EXPIRED", ""), False, False, False),  # codes are matched exactly
        (_error("", "audio content of 1200ms"), False, False, False),  # the prefix is the service's own capitals
        (SpeechStarted(item_id="item_1", audio_start_ms=0), False, False, False),  # not an error at all
    ],
)
def test_upstream_errors_are_classified_in_the_dialect_module(
    event: object, expired: bool, benign: bool, truncate: bool
) -> None:
    assert (is_session_expired(event), is_benign_error(event), is_truncate_error(event)) == (expired, benign, truncate)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "clean"),
    [(1000, True), (1001, True), (1006, False), (1011, False), (4000, False), (1002, False), (None, False)],
)
def test_only_normal_closure_and_going_away_are_clean_closes(code: int | None, clean: bool) -> None:
    assert is_clean_close(code) is clean


@pytest.mark.parametrize(("dialect", "delta_type"), [(GADialect(), "response.output_audio.delta"), (VoiceLiveDialect(), "response.audio.delta")])
def test_each_dialects_audio_delta_is_one_the_recorder_stores(dialect: dialects.Dialect, delta_type: str) -> None:
    frame = json.dumps({"type": delta_type, "response_id": "resp_1", "item_id": "item_1", "delta": "AAA="})
    assert isinstance(parse_server_frame(dialect, frame), AudioDelta)
    assert delta_type in AUDIO_DELTA_TYPES
    msg = {"type": delta_type, "delta": "AAA="}
    assert recording_format.audio_slot(recording_format.UPSTREAM, recording_format.IN, msg) == (msg, "delta")


def test_the_append_event_name_is_the_one_the_bridge_sends() -> None:
    assert json.loads(dialects.append_audio(b"\x00\x01"))["type"] == dialects.APPEND_TYPE == recording_format.APPEND_TYPE


@pytest.mark.parametrize(
    ("raw", "mode"),
    [("", AudioMode.PCM24K), ("pcm24k", AudioMode.PCM24K), ("g711", AudioMode.G711)],
)
def test_voice_bridge_audio_becomes_an_audio_mode(raw: str, mode: AudioMode) -> None:
    settings = Settings.from_env({"TWILIO_AUTH_TOKEN": "t", "VOICE_BRIDGE_AUDIO": raw})
    assert settings.audio is mode and settings.audio == mode.value


def test_a_settings_object_built_with_a_string_holds_the_mode() -> None:
    assert Settings(audio="g711").audio is AudioMode.G711  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", ["G711", "pcm16", "ulaw"])
def test_an_unknown_audio_mode_is_refused_with_the_same_message(raw: str) -> None:
    with pytest.raises(ConfigError, match=f"^VOICE_BRIDGE_AUDIO='{raw}': expected one of pcm24k, g711$"):
        Settings.from_env({"TWILIO_AUTH_TOKEN": "t", "VOICE_BRIDGE_AUDIO": raw})
    with pytest.raises(ConfigError, match=f"^VOICE_BRIDGE_AUDIO='{raw}': expected one of pcm24k, g711$"):
        Settings(audio=raw).validate()  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", [AudioMode.G711, AudioMode.PCM24K, "g711", "pcm24k"])
def test_session_shapes_are_the_same_for_the_mode_and_its_string(mode: str) -> None:
    for dialect in (GADialect(), VoiceLiveDialect()):
        as_mode = dialect.session_update(SessionConfig(instructions="hi", voice="v", audio_mode=AudioMode(mode)))
        as_str = dialect.session_update(SessionConfig(instructions="hi", voice="v", audio_mode=str(mode)))
        assert json.dumps(as_mode) == json.dumps(as_str)
    voicelive = VoiceLiveDialect().session_update(SessionConfig(instructions="hi", voice="v", audio_mode=mode))["session"]
    assert voicelive["input_audio_sampling_rate"] == (8000 if mode == "g711" else 24000)


@pytest.mark.parametrize(
    ("meta_mode", "agent", "to_model"),
    [
        ("g711", ("mulaw", 8000), ("mulaw", 8000)),
        ("pcm24k", ("pcm16", 24000), ("pcm16", 24000)),
        ("something-else", ("pcm16", 24000), ("pcm16", 24000)),  # as before: anything but g711 is pcm24k
    ],
)
def test_recorded_audio_modes_pick_the_tracks(meta_mode: str, agent: tuple[str, int], to_model: tuple[str, int]) -> None:
    track = recording_format.agent_track(meta_mode)
    assert (track.file, track.encoding, track.rate) == ("agent.wav", *agent)
    model = recording_format.to_model_track(meta_mode)
    assert (model.encoding, model.rate) == to_model


@pytest.mark.parametrize(("append_ms", "ok"), [(20, True), (100, True), (MAX_APPEND_MS, True), (0, False), (30, False), (220, False)])
def test_append_ms_limits_are_shared_by_settings_and_the_batcher(append_ms: int, ok: bool) -> None:
    if ok:
        check_append_ms(append_ms)
        assert AppendBatcher(append_ms).append_ms == append_ms
        return
    with pytest.raises(ValueError, match="must be a multiple of 20 ms"):
        check_append_ms(append_ms)
    with pytest.raises(ValueError, match="must be a multiple of 20 ms"):
        AppendBatcher(append_ms)
    with pytest.raises(ConfigError, match=f"^VOICE_BRIDGE_APPEND_MS={append_ms}: must be a multiple of 20 ms"):
        Settings(append_ms=append_ms).validate()


def test_settings_do_not_import_the_hot_path() -> None:
    import ast
    from pathlib import Path

    import bridge.settings

    tree = ast.parse(Path(bridge.settings.__file__).read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"append_batcher", "call_session", "call", "playback"}
