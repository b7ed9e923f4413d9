"""Service configuration from the environment (the contract in DESIGN §4)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from voice_codecs import AUDIO_MODES, AudioMode

from .append_limits import check_append_ms
from .cost import PriceFileError, PriceTable
from .deadlines import PeerDeadlines

UPSTREAMS = ("local", "voicelive", "azure-openai", "openai")
LOG_FORMATS = ("console", "json")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
DTMF_MODES = ("off", "forward", "collect")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")

DEFAULT_INSTRUCTIONS = (
    "You are a friendly phone assistant. Keep answers short and speak naturally; the caller hears you "
    "over a telephone line."
)


class ConfigError(ValueError):
    """The configuration cannot work; the message says which variable and why."""


E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
MAX_CALLS_LIMIT = 10_000
MAX_DRAIN_S = 3600


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """A whole number in [low, high]; ASCII digits only (int() would take "²"-like digits and "1_0")."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not re.fullmatch(r"-?[0-9]{1,9}", raw):
        raise ConfigError(f"{name}={_shown(raw)}: expected a whole number from {low} to {high}")
    value = int(raw)
    if not low <= value <= high:
        raise ConfigError(f"{name}={raw}: expected a whole number from {low} to {high}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """1/true/yes/on or 0/false/no/off (any case); unset or empty is `default`; anything else is an error."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{name}={_shown(env.get(name, ''))}: expected one of 1, 0, true, false, yes, no, on, off")


def env_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...], lower: bool = False) -> str:
    raw = (env.get(name) or "").strip()
    value = (raw.lower() if lower else raw) or default
    if value not in choices:
        raise ConfigError(f"{name}={_shown(raw)}: expected one of {', '.join(choices)}")
    return value


def _shown(raw: str) -> str:
    """A bad value for the one-line error: quoted, escaped, and cut short (it may be long or hostile)."""
    return repr(raw[:60] + ("…" if len(raw) > 60 else ""))


def check_url(name: str, url: str, schemes: tuple[str, ...]) -> None:
    """`url` must have one of `schemes`, a host name and a valid port; `ConfigError` names `name` otherwise."""
    example = f"{schemes[-1]}://host"
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise ConfigError(f"{name} contains whitespace or control characters: expected {example}")
    try:
        parts = urlsplit(url)
        host, _port = parts.hostname, parts.port
    except ValueError:
        raise ConfigError(f"{name} is not a valid URL (bad port or brackets): expected {example}") from None
    if parts.scheme.lower() not in schemes:
        raise ConfigError(f"{name} must be a {' or '.join(s + '://' for s in schemes)} URL, like {example}")
    if not host:
        raise ConfigError(f"{name} has no host name: expected {example}")


def check_endpoint(name: str, endpoint: str) -> None:
    """An Azure resource endpoint: `https://<resource>.<domain>` (wss:// too, or the bare host name).

    A bare word like `myresource` is refused: it is a resource name, not a host, and would only
    fail later at every call's DNS lookup. http:// and ws:// are for localhost only (checked with
    the credentials in upstream_config).
    """
    raw = endpoint if "://" in endpoint else f"https://{endpoint}"
    check_url(name, raw, ("http", "ws", "https", "wss"))
    host = urlsplit(raw).hostname or ""
    if "." not in host and ":" not in host and host != "localhost":
        raise ConfigError(f"{name}={_shown(endpoint)}: expected the full endpoint, like https://<resource>.services.ai.azure.com")


def check_clips_folder(raw: str) -> str:
    folder = Path(raw)
    if not folder.is_dir():
        raise ConfigError(f"VOICE_BRIDGE_AGENT_CLIPS={_shown(raw)}: no such folder")
    if not (folder / "clips.json").is_file():
        raise ConfigError(f"VOICE_BRIDGE_AGENT_CLIPS={_shown(raw)}: the folder has no clips.json")
    return raw


def _prices(raw: str | None) -> PriceTable:
    """VOICE_BRIDGE_PRICES: the shipped price estimates, overridden by this TOML file."""
    if raw is None:
        return PriceTable.default()
    try:
        return PriceTable.load(_existing_file("VOICE_BRIDGE_PRICES", raw))
    except PriceFileError as exc:
        raise ConfigError(f"VOICE_BRIDGE_PRICES={_shown(raw)}: {exc}") from None


def _existing_file(name: str, raw: str) -> str:
    if not Path(raw).is_file():
        raise ConfigError(f"{name}={_shown(raw)}: no such file")
    return raw


@dataclass(frozen=True, slots=True)
class Settings:
    upstream: str = "local"
    upstream_url: str | None = field(default=None, repr=False)  # may carry a key (query, user info)
    audio: AudioMode = AudioMode.PCM24K  # a string naming a mode becomes the mode; another is refused by validate()
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
    # Moving a call to a new model session (bridge/call/rollover.py).
    max_session_replacements: int = 3  # VOICE_BRIDGE_MAX_SESSION_REPLACEMENTS: lost sessions replaced per call
    rollover_seconds: int = 0  # VOICE_BRIDGE_ROLLOVER_SECONDS: session age that triggers a rollover (0: the upstream's cap)
    rollover_input_tokens: int = 0  # VOICE_BRIDGE_ROLLOVER_INPUT_TOKENS: the default profile's token budget (0: none)
    post_call_url: str | None = field(default=None, repr=False)  # VOICE_BRIDGE_POST_CALL_URL (may carry a token)
    metrics_port: int | None = None  # /metrics and /readyz on this internal port instead of the main one
    # VOICE_BRIDGE_UPSTREAM_PROBE: /readyz follows an upstream probe (bridge/readiness.py). On by default
    # in the environment (`serve`); off for Settings() built in code (tests, benchmarks, replay), whose
    # scripted upstreams take every session for a call.
    upstream_probe: bool = False
    port: int = 8000  # PORT: `serve`'s default --port
    host: str = "127.0.0.1"  # VOICE_BRIDGE_HOST: `serve`'s default --host
    # Send/close deadlines towards Twilio and the model (bridge/deadlines.py); not from the environment.
    peer_deadlines: PeerDeadlines = field(default_factory=PeerDeadlines)
    # issue 17 (telemetry): VOICE_BRIDGE_PRICES (a TOML file over the shipped estimates, bridge/cost.py)
    # and VOICE_BRIDGE_RATE_LIMIT_WARN_PERCENT (warn when a rate limit's remaining falls under it).
    prices: PriceTable = field(default_factory=PriceTable.default, repr=False)
    rate_limit_warn_percent: int = 10
    # No dead air (issue 16): the default profile's turn budgets (bridge/call/watchdog.py); 0 turns
    # each off. Like upstream_probe, on by default in the environment (`serve`: 1500 ms, 8 s, 10 s)
    # and off for Settings() built in code (tests, benchmarks), whose scripted models keep their time.
    filler_after_ms: int = 0  # VOICE_BRIDGE_FILLER_AFTER_MS: the filler after this much silence
    turn_timeout_s: int = 0  # VOICE_BRIDGE_TURN_TIMEOUT_S: no audio by then: retry once, then apology
    reprompt_after_s: int = 0  # VOICE_BRIDGE_REPROMPT_AFTER_S: a silent caller is asked to check in
    max_reprompts: int = 2  # VOICE_BRIDGE_MAX_REPROMPTS: unanswered check-ins before goodbye

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Every variable is checked here (type, range, choice, URL shape, files), so a mistake stops
        the start with one `ConfigError` naming the variable, never a call later on."""
        env = os.environ if env is None else env

        def text(name: str) -> str | None:
            return (env.get(name) or "").strip() or None

        clips = text("VOICE_BRIDGE_AGENT_CLIPS")
        orders = text("VOICE_BRIDGE_ORDERS_FILE")
        settings = cls(
            upstream=env_choice(env, "VOICE_BRIDGE_UPSTREAM", "local", UPSTREAMS),
            upstream_url=text("VOICE_BRIDGE_UPSTREAM_URL"),
            audio=AudioMode(env_choice(env, "VOICE_BRIDGE_AUDIO", AudioMode.PCM24K, AUDIO_MODES)),
            twilio_auth_token=env.get("TWILIO_AUTH_TOKEN") or None,
            twilio_account_sid=text("TWILIO_ACCOUNT_SID"),
            public_url=(text("VOICE_BRIDGE_PUBLIC_URL") or "").rstrip("/") or None,
            insecure_dev=_bool(env, "VOICE_BRIDGE_INSECURE_DEV", False),
            instructions=env.get("VOICE_BRIDGE_INSTRUCTIONS") or DEFAULT_INSTRUCTIONS,
            voice=text("VOICE_BRIDGE_VOICE") or "alloy",
            agent_clips_dir=check_clips_folder(clips) if clips else None,
            profiles_path=env.get("VOICE_BRIDGE_PROFILES") or None,  # checked by ProfileBook.load at start
            azure_voicelive_endpoint=text("AZURE_VOICELIVE_ENDPOINT"),
            azure_voicelive_model=text("AZURE_VOICELIVE_MODEL"),
            azure_voicelive_api_key=text("AZURE_VOICELIVE_API_KEY"),
            azure_openai_endpoint=text("AZURE_OPENAI_ENDPOINT"),
            azure_openai_deployment=text("AZURE_OPENAI_DEPLOYMENT"),
            azure_openai_api_key=text("AZURE_OPENAI_API_KEY"),
            openai_api_key=text("OPENAI_API_KEY"),
            openai_realtime_model=text("OPENAI_REALTIME_MODEL") or "gpt-realtime",
            log_format=env_choice(env, "VOICE_BRIDGE_LOG_FORMAT", "console", LOG_FORMATS),
            log_level=env_choice(env, "VOICE_BRIDGE_LOG_LEVEL", "info", LOG_LEVELS, lower=True),
            max_calls=_int(env, "VOICE_BRIDGE_MAX_CALLS", 40, 1, MAX_CALLS_LIMIT),
            append_ms=_int(env, "VOICE_BRIDGE_APPEND_MS", 20, 20, 1000),
            stream_token_key=env.get("VOICE_BRIDGE_STREAM_TOKEN_KEY") or None,
            fallback_number=text("VOICE_BRIDGE_FALLBACK_NUMBER"),
            drain_seconds=float(_int(env, "VOICE_BRIDGE_DRAIN_SECONDS", 30, 0, MAX_DRAIN_S)),
            prewarm=_bool(env, "VOICE_BRIDGE_PREWARM", True),
            log_transcripts=_bool(env, "VOICE_BRIDGE_LOG_TRANSCRIPTS", False),
            tools=tuple(t.strip() for t in (env.get("VOICE_BRIDGE_TOOLS") or "").split(",") if t.strip()),
            dtmf=env_choice(env, "VOICE_BRIDGE_DTMF", "off", DTMF_MODES),
            transfer_number=text("VOICE_BRIDGE_TRANSFER_NUMBER"),
            orders_file=_existing_file("VOICE_BRIDGE_ORDERS_FILE", orders) if orders else None,
            record_dir=text("VOICE_BRIDGE_RECORD_DIR"),
            record_transcripts=_bool(env, "VOICE_BRIDGE_RECORD_TRANSCRIPTS", True),
            record_audio=_bool(env, "VOICE_BRIDGE_RECORD_AUDIO", True),
            upstream_probe=_bool(env, "VOICE_BRIDGE_UPSTREAM_PROBE", True),
            port=_int(env, "PORT", 8000, 1, 65535),
            host=text("VOICE_BRIDGE_HOST") or "127.0.0.1",
            metrics_port=_int(env, "VOICE_BRIDGE_METRICS_PORT", 0, 0, 65535) or None,
            post_call_url=text("VOICE_BRIDGE_POST_CALL_URL"),
            prices=_prices(text("VOICE_BRIDGE_PRICES")),
            **_call_limits(env),
        )
        settings.validate()
        return settings

    def __post_init__(self) -> None:
        if not isinstance(self.audio, AudioMode) and self.audio in AUDIO_MODES:
            object.__setattr__(self, "audio", AudioMode(self.audio))

    def validate(self) -> None:
        if self.upstream not in UPSTREAMS:
            raise ConfigError(f"VOICE_BRIDGE_UPSTREAM={self.upstream!r}: expected one of {', '.join(UPSTREAMS)}")
        if self.audio not in AUDIO_MODES:
            raise ConfigError(f"VOICE_BRIDGE_AUDIO={self.audio!r}: expected one of {', '.join(AUDIO_MODES)}")
        if self.upstream_url:
            check_url("VOICE_BRIDGE_UPSTREAM_URL", self.upstream_url, ("ws", "wss"))
        if self.post_call_url:
            check_url("VOICE_BRIDGE_POST_CALL_URL", self.post_call_url, ("http", "https"))
        if self.public_url:
            check_url("VOICE_BRIDGE_PUBLIC_URL", self.public_url, ("http", "https"))
        for name, endpoint in (
            ("AZURE_VOICELIVE_ENDPOINT", self.azure_voicelive_endpoint),
            ("AZURE_OPENAI_ENDPOINT", self.azure_openai_endpoint),
        ):
            if endpoint:
                check_endpoint(name, endpoint)
        if self.twilio_account_sid is not None and not _ACCOUNT_SID.fullmatch(self.twilio_account_sid):
            raise ConfigError("TWILIO_ACCOUNT_SID must look like AC followed by 32 hex digits")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"VOICE_BRIDGE_LOG_FORMAT={self.log_format!r}: expected console or json")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"VOICE_BRIDGE_LOG_LEVEL={self.log_level!r}: expected one of {', '.join(LOG_LEVELS)}")
        if not 0 <= self.drain_seconds <= MAX_DRAIN_S:
            raise ConfigError(f"VOICE_BRIDGE_DRAIN_SECONDS must be from 0 to {MAX_DRAIN_S}")
        if not 1 <= self.max_calls <= MAX_CALLS_LIMIT:
            raise ConfigError(f"VOICE_BRIDGE_MAX_CALLS must be from 1 to {MAX_CALLS_LIMIT}")
        if self.metrics_port is not None and not 1 <= self.metrics_port <= 65535:
            raise ConfigError(f"VOICE_BRIDGE_METRICS_PORT={self.metrics_port}: expected a TCP port, 1 to 65535")
        try:
            check_append_ms(self.append_ms)
        except ValueError as exc:
            raise ConfigError(f"VOICE_BRIDGE_APPEND_MS={self.append_ms}: {exc}") from None
        if self.stream_token_key is not None and len(self.stream_token_key) < 32:
            raise ConfigError("VOICE_BRIDGE_STREAM_TOKEN_KEY must be at least 32 characters (e.g. `openssl rand -hex 32`)")
        if self.fallback_number is not None and not E164.fullmatch(self.fallback_number):
            raise ConfigError("VOICE_BRIDGE_FALLBACK_NUMBER must be an E.164 number like +15551234567")
        if self.transfer_number is not None and not E164.fullmatch(self.transfer_number):
            raise ConfigError("VOICE_BRIDGE_TRANSFER_NUMBER must be an E.164 number like +15551234567")
        if self.dtmf not in DTMF_MODES:
            raise ConfigError(f"VOICE_BRIDGE_DTMF={self.dtmf!r}: expected off, forward or collect")
        if not 1 <= self.port <= 65535:
            raise ConfigError("PORT must be from 1 to 65535")
        if self.filler_after_ms and self.turn_timeout_s and self.filler_after_ms >= self.turn_timeout_s * 1000:
            # issue 16: the filler is the first thing a slow turn gets; the retry comes after it.
            raise ConfigError(
                f"VOICE_BRIDGE_FILLER_AFTER_MS={self.filler_after_ms} must be shorter than "
                f"VOICE_BRIDGE_TURN_TIMEOUT_S={self.turn_timeout_s} (in ms: {self.turn_timeout_s * 1000})"
            )
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
        if self.post_call_url:
            found += url_secrets(self.post_call_url)
        return found

    @property
    def price_model(self) -> str | None:
        """The model name the price table is looked up with (Azure OpenAI: the deployment's name,
        which a price file can list)."""
        return {
            "voicelive": self.azure_voicelive_model,
            "azure-openai": self.azure_openai_deployment,
            "openai": self.openai_realtime_model,
        }.get(self.upstream)

    @property
    def uses_embedded_agent(self) -> bool:
        return self.upstream == "local" and not self.upstream_url


def _call_limits(env: Mapping[str, str]) -> dict[str, Any]:
    """Per-call budgets and limits from the environment (issues 16-18), each checked for range."""
    return {
        "rate_limit_warn_percent": _int(env, "VOICE_BRIDGE_RATE_LIMIT_WARN_PERCENT", 10, 0, 100),
        "max_session_replacements": _int(env, "VOICE_BRIDGE_MAX_SESSION_REPLACEMENTS", 3, 0, 20),
        "rollover_seconds": _int(env, "VOICE_BRIDGE_ROLLOVER_SECONDS", 0, 0, 86400),
        "rollover_input_tokens": _int(env, "VOICE_BRIDGE_ROLLOVER_INPUT_TOKENS", 0, 0, 10_000_000),
        # the default profile's turn budgets (issue 16)
        "filler_after_ms": _int(env, "VOICE_BRIDGE_FILLER_AFTER_MS", 1500, 0, 60_000),
        "turn_timeout_s": _int(env, "VOICE_BRIDGE_TURN_TIMEOUT_S", 8, 0, 600),
        "reprompt_after_s": _int(env, "VOICE_BRIDGE_REPROMPT_AFTER_S", 10, 0, 3600),
        "max_reprompts": _int(env, "VOICE_BRIDGE_MAX_REPROMPTS", 2, 0, 10),
    }
