"""Configuration from the environment, and the GA dialect's events both ways."""

from __future__ import annotations

import base64

import pytest

from bridge.dialects import GADialect, SessionConfig, UpstreamProtocolError, dialect_for, truncate_item
from bridge.realtime_events import AudioDelta, Ignored, RateLimitsUpdated, ResponseFinished, SpeechStarted, UpstreamError
from bridge.settings import ConfigError, Settings


def test_defaults_use_the_embedded_agent() -> None:
    settings = Settings.from_env({"TWILIO_AUTH_TOKEN": "t"})
    assert settings.upstream == "local" and settings.uses_embedded_agent and settings.audio == "pcm24k"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({}, "TWILIO_AUTH_TOKEN"),
        ({"TWILIO_AUTH_TOKEN": "t", "VOICE_BRIDGE_UPSTREAM": "bogus"}, "VOICE_BRIDGE_UPSTREAM"),
        ({"TWILIO_AUTH_TOKEN": "t", "VOICE_BRIDGE_AUDIO": "mp3"}, "VOICE_BRIDGE_AUDIO"),
        ({"TWILIO_AUTH_TOKEN": "t", "VOICE_BRIDGE_UPSTREAM_URL": "http://x"}, "VOICE_BRIDGE_UPSTREAM_URL"),
        ({"TWILIO_AUTH_TOKEN": "t", "VOICE_BRIDGE_PUBLIC_URL": "pub.example.com"}, "VOICE_BRIDGE_PUBLIC_URL"),
        ({"TWILIO_AUTH_TOKEN": "t", "VOICE_BRIDGE_APPEND_MS": "50"}, "VOICE_BRIDGE_APPEND_MS=50: must be a multiple of 20"),
        ({"TWILIO_AUTH_TOKEN": "t", "VOICE_BRIDGE_APPEND_MS": "400"}, "VOICE_BRIDGE_APPEND_MS=400"),
        ({"TWILIO_AUTH_TOKEN": "t", "VOICE_BRIDGE_APPEND_MS": "0"}, "VOICE_BRIDGE_APPEND_MS=0"),
    ],
)
def test_bad_configuration_names_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        Settings.from_env(env)


def test_a_cloud_upstream_without_its_endpoint_is_refused_at_start() -> None:
    from bridge.services import prepare_services

    with pytest.raises(ConfigError, match="AZURE_VOICELIVE_ENDPOINT"):
        prepare_services(Settings.from_env({"TWILIO_AUTH_TOKEN": "t", "VOICE_BRIDGE_UPSTREAM": "voicelive"}))


def test_insecure_dev_allows_running_without_a_token() -> None:
    settings = Settings.from_env({"VOICE_BRIDGE_INSECURE_DEV": "1", "VOICE_BRIDGE_UPSTREAM_URL": "ws://127.0.0.1:9000/v1/realtime"})
    assert settings.twilio_auth_token is None and not settings.uses_embedded_agent


def test_ga_session_update_shape() -> None:
    update = GADialect().session_update(SessionConfig(instructions="be brief", voice="marin", audio_mode="pcm24k"))
    session = update["session"]
    assert update["type"] == "session.update" and session["type"] == "realtime"
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["output"] == {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"}
    g711 = GADialect().session_update(SessionConfig("x", "alloy", "g711"))["session"]["audio"]
    assert g711["input"]["format"] == g711["output"]["format"] == {"type": "audio/pcmu"}


def test_ga_server_events_become_the_bridge_vocabulary() -> None:
    dialect = dialect_for("local")
    delta = {"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", "content_index": 0, "delta": base64.b64encode(b"\x00\x01").decode()}
    assert dialect.parse(delta) == AudioDelta("r", "i", 0, b"\x00\x01")
    assert dialect.parse({"type": "input_audio_buffer.speech_started", "item_id": "u", "audio_start_ms": 5}) == SpeechStarted("u", 5)
    assert dialect.parse({"type": "response.done", "response": {"id": "r", "status": "cancelled"}}) == ResponseFinished("r", "cancelled")
    assert dialect.parse({"type": "error", "error": {"type": "invalid_request_error", "code": "x", "message": "m"}}) == UpstreamError("x", "m", "invalid_request_error")
    assert dialect.parse({"type": "rate_limits.updated"}) == RateLimitsUpdated(())  # issue 17: no longer ignored
    assert dialect.parse({"type": "conversation.item.done", "item": {}}) == Ignored("conversation.item.done")
    with pytest.raises(UpstreamProtocolError):
        dialect.parse({"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", "delta": "%%"})
    with pytest.raises(UpstreamProtocolError):
        dialect.parse({"type": "response.done"})


def test_truncate_event() -> None:
    assert truncate_item("i", 0, 1200) == {"type": "conversation.item.truncate", "item_id": "i", "content_index": 0, "audio_end_ms": 1200}
