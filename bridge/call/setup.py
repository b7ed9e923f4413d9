"""What a call needs once its stream has started, built from its profile and the process's services:
its session config, its upstream session (pre-warmed or opened now), its tools and limits.

`prepare_call` accepts a stream's `start` (its single-use token, admission) and looks the profile
up once; `open_session` connects and configures one upstream session.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from structlog.stdlib import BoundLogger

from twiml.rest import CallControl
from twiml.stream_tokens import StreamTokenError, StreamTokens

from .. import dialects, media_streams as ms
from ..admission import Admission, AdmissionRefused
from ..dialects import SessionConfig
from ..filler import default_filler_path, render_filler
from ..model_usage import ModelUsage, UsagePolicy
from ..prewarm import Prewarm
from ..profiles import REPROMPT_INSTRUCTIONS, AgentProfile, ProfileBook, session_config
from ..readiness import ReadinessMonitor
from ..recording import Recorder, TwilioTap, UpstreamTap
from ..settings import Settings
from ..telemetry import Metrics
from ..tools import ToolRegistry
from ..tracing import NoTrace, Tracing
from ..upstream import UpstreamConnection, UpstreamTarget, UpstreamUnavailable
from .rollover import SESSION_CAPS_S, RolloverPolicy
from .state import StartRefused
from .watchdog import Budgets

STREAM_TOKEN_PARAMETER = "StreamToken"
SETUP_CLOSE_S = 0.5  # a session abandoned during setup: the closing handshake, then the transport is cut
# Only a token signed for this CallSid (expired, or used already) says the call is really this one.
_GENUINE_TOKEN_REFUSALS = frozenset({"expired_stream_token", "reused_stream_token"})


@dataclass(frozen=True, slots=True)
class CallSetup:
    """Handed to the call session when its `start` is accepted."""

    session_config: SessionConfig
    upstream: Awaitable[UpstreamConnection]  # configured, greeting asked for (maybe pre-warmed)
    reconnect: Callable[[], Awaitable[UpstreamConnection]]  # a fresh configured session, no greeting
    profile_name: str = "default"
    max_call_s: float | None = None
    tools: ToolRegistry = field(default_factory=ToolRegistry)
    tool_names: tuple[str, ...] = ()  # the tools this call's profile enables
    dtmf: str = "off"  # "off", "forward", "collect"
    transfer_number: str | None = None
    fallback_number: str | None = None  # VOICE_BRIDGE_FALLBACK_NUMBER: dialled after the apology
    call_control: CallControl | None = None  # Twilio REST, when TWILIO_ACCOUNT_SID is configured
    # issue 17 (telemetry): the call's price and rate-limit threshold, its tracer (off: does nothing)
    usage: UsagePolicy = field(default_factory=UsagePolicy)
    tracing: Tracing = field(default_factory=Tracing)
    upstream_name: str = ""  # VOICE_BRIDGE_UPSTREAM, for the call's trace
    rollover: RolloverPolicy = field(default_factory=RolloverPolicy)  # new sessions: planned and unplanned
    # No dead air (issue 16): the profile's turn budgets, its filler (8 kHz μ-law, b"" when off), and
    # the spoken progress clips of tools that declare one.
    budgets: Budgets = field(default_factory=lambda: Budgets(None, None, None, 0))
    filler: bytes = b""
    reprompt_instructions: str = REPROMPT_INSTRUCTIONS
    tool_fillers: Mapping[str, bytes] = field(default_factory=dict)


class CallServices(Protocol):
    """The process-wide services a call draws on (the app's state provides them)."""

    settings: Settings
    tokens: StreamTokens
    admission: Admission
    profiles: ProfileBook
    tools: ToolRegistry
    call_control: CallControl | None
    metrics: Metrics
    prewarm: Prewarm | None
    recorder: Recorder | None
    readiness: ReadinessMonitor | None
    tracing: Tracing

    @property
    def clock(self) -> Callable[[], float]: ...

    @property
    def wall_clock(self) -> Callable[[], float]: ...

    def upstream_target(self) -> UpstreamTarget: ...


async def open_session(
    target: UpstreamTarget, config: SessionConfig, metrics: Metrics, greet: bool, tap: UpstreamTap | None = None
) -> UpstreamConnection:
    """Connect, send `session.update` and (for a new call) ask for the greeting; `tap` records the session."""
    started = time.monotonic()
    connection = await UpstreamConnection.open(target, tap=tap)
    metrics.upstream_connect.observe(time.monotonic() - started)
    try:
        await connection.send(connection.dialect.session_update(config))
        if greet:
            await connection.send(dialects.greeting_response(config))
    except BaseException:
        # Cancelled (the call ended, an unclaimed pre-warm) or failed: never wait out a slow close.
        await connection.close_within(SETUP_CLOSE_S)
        raise
    return connection


def _opener(
    services: CallServices, profile: AgentProfile, call_sid: str, to: str | None, greet: bool
) -> Callable[[], Awaitable[UpstreamConnection]]:
    """Opens one upstream session for the call, recorded when calls are, its outcome told to readiness."""
    config = session_config(profile, services.settings.audio, services.tools.specs())
    target = services.upstream_target()

    async def open_one() -> UpstreamConnection:
        recorder = services.recorder
        tap = recorder.call(call_sid, to, profile).upstream_tap() if recorder is not None else None
        try:
            connection = await open_session(target, config, services.metrics, greet=greet, tap=tap)
        except UpstreamUnavailable as exc:
            if services.readiness is not None:
                services.readiness.connect_failed(exc.reason, str(exc))
            raise
        if services.readiness is not None:
            services.readiness.connect_succeeded()
        return connection

    return open_one


def prewarm_opener(services: CallServices, call_sid: str, to: str | None) -> Callable[[], Awaitable[UpstreamConnection]]:
    """The webhook's early session: connected and configured while Twilio sets up the stream."""
    return _opener(services, services.profiles.for_number(to), call_sid, to, greet=True)


def call_setup(services: CallServices, profile: AgentProfile, call_sid: str, to: str | None) -> CallSetup:
    """What the call needs, from its profile and the services (the pre-warmed session if there is one)."""
    prewarmed = services.prewarm.claim(call_sid) if services.prewarm is not None else None
    return CallSetup(
        session_config=session_config(profile, services.settings.audio, services.tools.specs()),
        upstream=prewarmed or _opener(services, profile, call_sid, to, greet=True)(),
        reconnect=_opener(services, profile, call_sid, to, greet=False),
        profile_name=profile.name,
        max_call_s=profile.max_call_seconds,
        tools=services.tools,
        tool_names=profile.tools,
        dtmf=profile.dtmf,
        transfer_number=profile.transfer_number,
        fallback_number=services.settings.fallback_number,
        call_control=services.call_control,
        usage=usage_policy(services.settings, profile.name),
        tracing=services.tracing,
        upstream_name=services.settings.upstream,
        rollover=rollover_policy(services.settings, profile),
        budgets=turn_budgets(profile),
        filler=render_filler(profile.filler_clip or str(default_filler_path())) if profile.filler_after_ms else b"",
        reprompt_instructions=profile.reprompt_instructions,
        tool_fillers=tool_fillers(services.tools, profile) if profile.filler_after_ms else {},
    )


def rollover_policy(settings: Settings, profile: AgentProfile) -> RolloverPolicy:
    """When this call moves to a new model session: the upstream's cap, the settings, the profile."""
    return RolloverPolicy(
        session_cap_s=SESSION_CAPS_S.get(settings.upstream),
        rollover_after_s=float(settings.rollover_seconds) if settings.rollover_seconds else None,
        input_token_budget=profile.rollover_input_tokens or None,
        max_replacements=settings.max_session_replacements,
    )


def observers(
    setup: CallSetup, start: ms.Start, audio_mode: str, metrics: Metrics, log: BoundLogger
) -> tuple[NoTrace, ModelUsage]:
    """The call's trace (a do-nothing one while tracing is off) and its token/cost accounting."""
    attributes = {
        "call.sid": start.call_sid,
        "stream.sid": start.stream_sid,
        "profile": setup.profile_name,
        "upstream": setup.upstream_name,
        "audio.mode": audio_mode,
    }
    trace = setup.tracing.call(attributes)
    return trace, ModelUsage(metrics, log, setup.usage, trace)


def usage_policy(settings: Settings, profile_name: str) -> UsagePolicy:
    """The call's price (looked up once per call: the model is the process's) and rate-limit threshold."""
    found = settings.prices.lookup(settings.upstream, settings.price_model)
    return UsagePolicy(
        profile=profile_name,
        price_key=found[0] if found is not None else None,
        price=found[1] if found is not None else None,
        rate_limit_warn_percent=settings.rate_limit_warn_percent,
    )


def turn_budgets(profile: AgentProfile) -> Budgets:
    """The profile's budgets for the turn watchdog, in seconds; 0 in the profile is off (None)."""
    return Budgets(
        filler_after_s=profile.filler_after_ms / 1000 if profile.filler_after_ms else None,
        turn_timeout_s=profile.turn_timeout_s or None,
        reprompt_after_s=profile.reprompt_after_s or None,
        max_reprompts=profile.max_reprompts,
    )


def tool_fillers(tools: ToolRegistry, profile: AgentProfile) -> dict[str, bytes]:
    """The progress clips of the profile's tools that declare one (rendered once per process)."""
    found = {}
    for name in profile.tools:
        tool = tools.tools.get(name)
        if tool is not None and tool.progress_clip:
            found[name] = render_filler(tool.progress_clip)
    return found


def _refused_start(services: CallServices, call_sid: str, discard_prewarm: bool) -> None:
    if not discard_prewarm:
        return
    if services.prewarm is not None:
        services.prewarm.discard_soon(call_sid)
    if services.recorder is not None:
        services.recorder.finish(call_sid, "unauthorized")  # the pre-warmed session's recording


def prepare_call(services: CallServices, twilio_tap: TwilioTap | None = None) -> Callable[[ms.Start], CallSetup]:
    """Accept a stream's `start` (its token, admission) and hand the call its setup."""

    def prepare(start: ms.Start) -> CallSetup:
        try:
            reservation_id = services.tokens.redeem(
                start.custom_parameters.get(STREAM_TOKEN_PARAMETER), start.call_sid, services.wall_clock()
            )
        except StreamTokenError as exc:
            # A forged or malformed token naming someone else's CallSid must not discard their
            # pre-warmed session (the unclaimed sweep closes it within 15 s anyway).
            _refused_start(services, start.call_sid, discard_prewarm=exc.reason in _GENUINE_TOKEN_REFUSALS)
            raise StartRefused(exc.reason) from None
        try:
            services.admission.start(start.call_sid, reservation_id, services.clock())
        except AdmissionRefused as exc:
            # A second stream for a live call must not take the live call's pre-warmed session;
            # any other refusal leaves nobody to claim it.
            _refused_start(services, start.call_sid, discard_prewarm=exc.reason != "stream_already_live")
            raise StartRefused(exc.reason) from None
        to = start.custom_parameters.get("To")
        profile = services.profiles.for_number(to)
        if twilio_tap is not None and services.recorder is not None:
            twilio_tap.bind(services.recorder.call(start.call_sid, to, profile))
        return call_setup(services, profile, start.call_sid, to)

    return prepare
