"""Service configuration from the environment (the contract in DESIGN §4)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from .append_batcher import check_append_ms

UPSTREAMS = ("local", "voicelive", "azure-openai", "openai")
AUDIO_MODES = ("pcm24k", "g711")
LOG_FORMATS = ("console", "json")

DEFAULT_INSTRUCTIONS = (
    "You are a friendly phone assistant. Keep answers short and speak naturally; the caller hears you "
    "over a telephone line."
)


class ConfigError(ValueError):
    """The configuration cannot work; the message says which variable and why."""


_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a whole number") from None


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _on_unless_off(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "1").strip().lower() not in ("0", "false", "no", "off")


@dataclass(frozen=True, slots=True)
class Settings:
    upstream: str = "local"
    upstream_url: str | None = field(default=None, repr=False)  # may carry a key (query, user info)
    audio: str = "pcm24k"
    twilio_auth_token: str | None = field(default=None, repr=False)
    twilio_account_sid: str | None = None
    public_url: str | None = None
    insecure_dev: bool = False
    instructions: str = DEFAULT_INSTRUCTIONS
    voice: str = "alloy"
    agent_clips_dir: str | None = None
    profiles_path: str | None = None
    azure_voicelive_endpoint: str | None = None
    azure_voicelive_model: str | None = None
    azure_voicelive_api_key: str | None = field(default=None, repr=False)
    azure_openai_endpoint: str | None = None
    azure_openai_deployment: str | None = None
    azure_openai_api_key: str | None = field(default=None, repr=False)
    openai_api_key: str | None = field(default=None, repr=False)
    openai_realtime_model: str = "gpt-realtime"
    log_format: str = "console"
    log_level: str = "info"
    max_calls: int = 40  # the load benchmark's clean limit for one core (BENCHMARKS.md)
    append_ms: int = 20  # caller audio per input_audio_buffer.append: more is less CPU, later VAD
    stream_token_key: str | None = field(default=None, repr=False)
    fallback_number: str | None = None
    drain_seconds: float = 30.0
    prewarm: bool = True
    tools: tuple[str, ...] = ()  # tools of the default profile
    dtmf: str = "off"  # keypad handling of the default profile
    transfer_number: str | None = None  # transfer_call's number for the default profile
    orders_file: str | None = None  # the example lookup_order tool's data
    log_transcripts: bool = False
    record_dir: str | None = None  # record every call into this folder (off when None)
    record_transcripts: bool = True  # False: recordings keep "[redacted]" instead of transcripts and text
    record_audio: bool = True  # False: recordings keep audio lengths only, no WAV files
    metrics_port: int | None = None  # /metrics and /readyz on this internal port instead of the main one

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        settings = cls(
            upstream=env.get("VOICE_BRIDGE_UPSTREAM", "local").strip() or "local",
            upstream_url=env.get("VOICE_BRIDGE_UPSTREAM_URL") or None,
            audio=env.get("VOICE_BRIDGE_AUDIO", "pcm24k").strip() or "pcm24k",
            twilio_auth_token=env.get("TWILIO_AUTH_TOKEN") or None,
            twilio_account_sid=env.get("TWILIO_ACCOUNT_SID") or None,
            public_url=(env.get("VOICE_BRIDGE_PUBLIC_URL") or "").rstrip("/") or None,
            insecure_dev=_flag(env, "VOICE_BRIDGE_INSECURE_DEV"),
            instructions=env.get("VOICE_BRIDGE_INSTRUCTIONS") or DEFAULT_INSTRUCTIONS,
            voice=env.get("VOICE_BRIDGE_VOICE") or "alloy",
            agent_clips_dir=env.get("VOICE_BRIDGE_AGENT_CLIPS") or None,
            profiles_path=env.get("VOICE_BRIDGE_PROFILES") or None,
            azure_voicelive_endpoint=(env.get("AZURE_VOICELIVE_ENDPOINT") or "").strip() or None,
            azure_voicelive_model=(env.get("AZURE_VOICELIVE_MODEL") or "").strip() or None,
            azure_voicelive_api_key=(env.get("AZURE_VOICELIVE_API_KEY") or "").strip() or None,
            azure_openai_endpoint=(env.get("AZURE_OPENAI_ENDPOINT") or "").strip() or None,
            azure_openai_deployment=(env.get("AZURE_OPENAI_DEPLOYMENT") or "").strip() or None,
            azure_openai_api_key=(env.get("AZURE_OPENAI_API_KEY") or "").strip() or None,
            openai_api_key=(env.get("OPENAI_API_KEY") or "").strip() or None,
            openai_realtime_model=(env.get("OPENAI_REALTIME_MODEL") or "").strip() or "gpt-realtime",
            log_format=(env.get("VOICE_BRIDGE_LOG_FORMAT") or "console").strip(),
            log_level=(env.get("VOICE_BRIDGE_LOG_LEVEL") or "info").strip().lower(),
            max_calls=_int(env, "VOICE_BRIDGE_MAX_CALLS", 40),
            append_ms=_int(env, "VOICE_BRIDGE_APPEND_MS", 20),
            stream_token_key=env.get("VOICE_BRIDGE_STREAM_TOKEN_KEY") or None,
            fallback_number=env.get("VOICE_BRIDGE_FALLBACK_NUMBER") or None,
            drain_seconds=float(_int(env, "VOICE_BRIDGE_DRAIN_SECONDS", 30)),
            prewarm=env.get("VOICE_BRIDGE_PREWARM", "1").strip().lower() not in ("0", "false", "no", "off"),
            log_transcripts=_flag(env, "VOICE_BRIDGE_LOG_TRANSCRIPTS"),
            tools=tuple(t.strip() for t in (env.get("VOICE_BRIDGE_TOOLS") or "").split(",") if t.strip()),
            dtmf=(env.get("VOICE_BRIDGE_DTMF") or "off").strip(),
            transfer_number=env.get("VOICE_BRIDGE_TRANSFER_NUMBER") or None,
            orders_file=env.get("VOICE_BRIDGE_ORDERS_FILE") or None,
            record_dir=(env.get("VOICE_BRIDGE_RECORD_DIR") or "").strip() or None,
            record_transcripts=_on_unless_off(env, "VOICE_BRIDGE_RECORD_TRANSCRIPTS"),
            record_audio=_on_unless_off(env, "VOICE_BRIDGE_RECORD_AUDIO"),
            metrics_port=_int(env, "VOICE_BRIDGE_METRICS_PORT", 0) or None,
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.upstream not in UPSTREAMS:
            raise ConfigError(f"VOICE_BRIDGE_UPSTREAM={self.upstream!r}: expected one of {', '.join(UPSTREAMS)}")
        if self.audio not in AUDIO_MODES:
            raise ConfigError(f"VOICE_BRIDGE_AUDIO={self.audio!r}: expected one of {', '.join(AUDIO_MODES)}")
        if self.upstream_url and not self.upstream_url.startswith(("ws://", "wss://")):
            raise ConfigError("VOICE_BRIDGE_UPSTREAM_URL must be a ws:// or wss:// URL")
        if self.public_url and not self.public_url.startswith(("http://", "https://")):
            raise ConfigError("VOICE_BRIDGE_PUBLIC_URL must look like https://host")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"VOICE_BRIDGE_LOG_FORMAT={self.log_format!r}: expected console or json")
        if self.drain_seconds < 0:
            raise ConfigError("VOICE_BRIDGE_DRAIN_SECONDS must not be negative")
        if self.metrics_port is not None and not 1 <= self.metrics_port <= 65535:
            raise ConfigError(f"VOICE_BRIDGE_METRICS_PORT={self.metrics_port}: expected a TCP port, 1 to 65535")
        if self.max_calls < 1:
            raise ConfigError("VOICE_BRIDGE_MAX_CALLS must be at least 1")
        try:
            check_append_ms(self.append_ms)
        except ValueError as exc:
            raise ConfigError(f"VOICE_BRIDGE_APPEND_MS={self.append_ms}: {exc}") from None
        if self.stream_token_key is not None and len(self.stream_token_key) < 32:
            raise ConfigError("VOICE_BRIDGE_STREAM_TOKEN_KEY must be at least 32 characters (e.g. `openssl rand -hex 32`)")
        if self.fallback_number is not None and not _E164.fullmatch(self.fallback_number):
            raise ConfigError("VOICE_BRIDGE_FALLBACK_NUMBER must be an E.164 number like +15551234567")
        if self.transfer_number is not None and not _E164.fullmatch(self.transfer_number):
            raise ConfigError("VOICE_BRIDGE_TRANSFER_NUMBER must be an E.164 number like +15551234567")
        if self.dtmf not in ("off", "forward", "collect"):
            raise ConfigError(f"VOICE_BRIDGE_DTMF={self.dtmf!r}: expected off, forward or collect")
        if not self.twilio_auth_token and not self.insecure_dev:
            raise ConfigError(
                "TWILIO_AUTH_TOKEN is not set, so Twilio signatures cannot be checked. Set it, or set "
                "VOICE_BRIDGE_INSECURE_DEV=1 to run without signature checks on a development machine."
            )

    def secret_values(self) -> list[str]:
        """Every credential in the settings, for the log masker: tokens, keys, and what the upstream
        URL carries in its user info or secret-looking query parameters."""
        from .upstream import url_secrets

        values = [
            self.twilio_auth_token,
            self.azure_voicelive_api_key,
            self.azure_openai_api_key,
            self.openai_api_key,
            self.stream_token_key,
        ]
        found = [v for v in values if v]
        if self.upstream_url:
            found += url_secrets(self.upstream_url)
        return found

    @property
    def uses_embedded_agent(self) -> bool:
        return self.upstream == "local" and not self.upstream_url
