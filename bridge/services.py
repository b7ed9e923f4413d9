"""The composition root: the process-wide services, built in order and torn down in reverse.

`prepare_services(settings)` checks the configuration (upstream settings, the profiles file, the
tools) and raises ConfigError before anything starts; `ServicePlan.open(...)` then builds the
services inside the running event loop (Entra ID tokens, the recorder, pre-warm, the Twilio REST
client, the loop-lag watcher, the upstream readiness probe) with an AsyncExitStack, and tears them
down in reverse order when the block ends. `create_app(settings, services)` receives them ready.

The embedded local agent (VOICE_BRIDGE_UPSTREAM=local) is not a service of the bridge: whoever
starts the process (the CLI, the tests) runs it and passes its URL as `local_url`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client as TwilioClient

from twiml.rest import CallControl
from twiml.signatures import TwilioSigner
from twiml.stream_tokens import StreamTokens

from .admission import Admission
from .auth import EntraTokens, TokenUnavailable
from .call_outcomes import CallOutcomes
from .dialects import dialect_for
from .logs import get_logger
from .post_call import PostCallDelivery
from .prewarm import Prewarm
from .profiles import ProfileBook, check_turn_budgets, default_profile
from .readiness import PROBE_RESULTS, ReadinessMonitor
from .recording import Recorder, RecordOptions
from .recording_format import make_private_dir
from .settings import Settings
from .telemetry import Metrics, bounded_label
from .tools import ToolRegistry, default_registry
from .tracing import Tracing
from .upstream import UpstreamTarget, probe_upstream
from .upstream_config import UpstreamSpec, check_upstream_settings, upstream_spec

log = get_logger("bridge.app")

STREAM_TOKEN_TTL_S = 60.0


@dataclass(slots=True)
class Services:
    """What the routes share for the life of the process, built and ready (each call keeps its own state)."""

    signer: TwilioSigner | None
    tokens: StreamTokens
    admission: Admission
    profiles: ProfileBook
    tools: ToolRegistry
    upstream: UpstreamTarget
    metrics: Metrics
    outcomes: CallOutcomes
    call_control: CallControl | None
    prewarm: Prewarm | None
    recorder: Recorder | None  # VOICE_BRIDGE_RECORD_DIR
    readiness: ReadinessMonitor | None  # the upstream probe; None: not probed (embedded agent, or off)
    clock: Callable[[], float]
    wall_clock: Callable[[], float]
    tracing: Tracing  # OpenTelemetry: off (no SDK at all) unless OTEL_EXPORTER_OTLP_ENDPOINT (issue 17)
    post_call: PostCallDelivery | None  # VOICE_BRIDGE_POST_CALL_URL, or records next to recordings


@dataclass(frozen=True, slots=True)
class ServicePlan:
    """The checked configuration: what `open` builds the services from."""

    settings: Settings
    profiles: ProfileBook
    tools: ToolRegistry

    @contextlib.asynccontextmanager
    async def open(
        self,
        local_url: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        twilio_client: TwilioClient | None = None,
        credential: AsyncTokenCredential | None = None,
    ) -> AsyncIterator[Services]:
        """The services, started; stopped in reverse order when the block ends.

        `local_url`: the embedded agent's URL (VOICE_BRIDGE_UPSTREAM=local); `clock` drives playback
        estimates, flood limits and timeouts (the dev tools' scaled clock in scaled-time runs);
        `twilio_client` replaces the REST client built from TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN (the
        caller then closes it); `credential` replaces DefaultAzureCredential for Entra ID (closed here).
        """
        settings = self.settings
        spec = upstream_spec(settings, local_url=local_url)
        metrics = Metrics()
        async with contextlib.AsyncExitStack() as stack:
            tracing = _tracing(stack)
            upstream = spec.target(await _entra_tokens(stack, spec, credential))
            recorder = await _recorder(stack, settings, spec, upstream, clock)
            prewarm = await _prewarm(stack, settings, clock, recorder)
            call_control = await _call_control(stack, settings, twilio_client)
            post_call = _post_call(stack, settings, recording=recorder is not None)
            _background(stack, _watch_loop_lag(metrics), "loop_lag")
            readiness = _readiness(stack, settings, metrics, upstream)
            if prewarm is not None:
                _background(stack, prewarm.sweep_forever(), "prewarm_sweeper")
            key = settings.stream_token_key.encode() if settings.stream_token_key else None
            services = Services(
                signer=TwilioSigner(settings.twilio_auth_token) if settings.twilio_auth_token else None,
                tokens=StreamTokens(key=key, ttl_s=STREAM_TOKEN_TTL_S),
                # Ended calls are remembered longer than a stream token lives: a replay gets no stream.
                admission=Admission(settings.max_calls, remember_s=STREAM_TOKEN_TTL_S + 15.0),
                profiles=self.profiles,
                tools=self.tools,
                upstream=upstream,
                metrics=metrics,
                outcomes=CallOutcomes(),
                call_control=call_control,
                prewarm=prewarm,
                recorder=recorder,
                readiness=readiness,
                clock=clock,
                wall_clock=time.time,
                tracing=tracing,
                post_call=post_call,
            )
            log.info(
                "bridge.ready",
                upstream=settings.upstream,
                upstream_url=spec.log_url,
                auth=spec.auth_kind,
                audio=settings.audio,
                profiles=len(self.profiles.profiles),
                prewarm=settings.prewarm,
                tracing=tracing.exporter,
            )
            yield services


def prepare_services(settings: Settings, tools: ToolRegistry | None = None) -> ServicePlan:
    """Check the configuration; ConfigError (one line) before anything starts or listens.
    `tools` replaces the built-in tool registry (how a team ships its own tools)."""
    check_upstream_settings(settings)
    tools = tools or default_registry(settings.orders_file)
    profiles = ProfileBook.load(settings.profiles_path, default_profile(settings))
    profiles.check(dialect_for(settings.upstream), settings.audio, tools.specs())
    check_turn_budgets(profiles, tools.tools)  # issue 16: tool timeouts and fillers within the turn budget
    return ServicePlan(settings, profiles, tools)


async def _entra_tokens(
    stack: contextlib.AsyncExitStack, spec: UpstreamSpec, credential: AsyncTokenCredential | None
) -> EntraTokens | None:
    """One credential for the process; tokens are cached and renewed ahead of expiry."""
    if not spec.entra_scope:
        return None
    tokens = EntraTokens(credential)
    stack.push_async_callback(tokens.aclose)
    try:
        await tokens.prefetch(spec.entra_scope)
    except TokenUnavailable as exc:
        log.error("upstream.auth_unavailable", scope=spec.entra_scope, error=str(exc))
    return tokens


async def _recorder(
    stack: contextlib.AsyncExitStack,
    settings: Settings,
    spec: UpstreamSpec,
    upstream: UpstreamTarget,
    clock: Callable[[], float],
) -> Recorder | None:
    """The call recorder, started; None when off, or (an error logged) if its folder cannot be made."""
    if not settings.record_dir:
        return None
    directory = Path(settings.record_dir)
    try:
        make_private_dir(directory, exist_ok=True)  # each call's folder inside is 0700 in any case
    except OSError as exc:
        log.error("recording.unavailable", dir=str(directory), error=type(exc).__name__, detail=str(exc))
        return None
    recorder = Recorder(
        RecordOptions(directory, transcripts=settings.record_transcripts, audio=settings.record_audio),
        clock=clock,
        wall_clock=time.time,
        meta={
            "upstream": settings.upstream,
            "dialect": upstream.dialect.name,
            "upstream_url": spec.log_url,
            "audio_mode": settings.audio,
            "prewarm": settings.prewarm,
        },
    )
    recorder.start()
    stack.push_async_callback(recorder.aclose)
    log.info("recording.on", dir=str(directory), transcripts=settings.record_transcripts, audio=settings.record_audio)
    return recorder


def _post_call(stack: contextlib.AsyncExitStack, settings: Settings, recording: bool) -> PostCallDelivery | None:
    """Post-call records: POSTed when a URL is set, written next to recordings when they are on."""
    record_dir = settings.record_dir if recording else None  # an unusable folder is logged once, by the recorder
    if settings.post_call_url is None and record_dir is None:
        return None
    delivery = PostCallDelivery(settings.post_call_url, record_dir)
    stack.push_async_callback(delivery.aclose)  # bounded: CLOSE_WAIT_S at most
    return delivery


async def _prewarm(
    stack: contextlib.AsyncExitStack, settings: Settings, clock: Callable[[], float], recorder: Recorder | None
) -> Prewarm | None:
    if not settings.prewarm:
        return None
    prewarm = Prewarm(clock, on_unclaimed=recorder.finish_unstreamed if recorder is not None else lambda _: None)
    stack.push_async_callback(prewarm.aclose)  # before the recorder closes: it finishes their recordings
    return prewarm


async def _call_control(
    stack: contextlib.AsyncExitStack, settings: Settings, twilio_client: TwilioClient | None
) -> CallControl | None:
    """Hang up and transfer go through Twilio's REST API, with its async HTTP client."""
    if twilio_client is not None:
        return CallControl(twilio_client)
    if not (settings.twilio_account_sid and settings.twilio_auth_token):
        return None
    client = TwilioClient(settings.twilio_account_sid, settings.twilio_auth_token, http_client=AsyncTwilioHttpClient())
    stack.push_async_callback(client.http_client.close)
    return CallControl(client)


def _readiness(
    stack: contextlib.AsyncExitStack, settings: Settings, metrics: Metrics, upstream: UpstreamTarget
) -> ReadinessMonitor | None:
    if not settings.upstream_probe or settings.uses_embedded_agent:
        metrics.upstream_ready.set(1)  # the embedded agent runs beside the bridge
        return None
    readiness = ReadinessMonitor(
        lambda: probe_upstream(upstream),
        on_probe=lambda result: metrics.upstream_probes.labels(result=bounded_label(result, PROBE_RESULTS)).inc(),
        on_change=metrics.upstream_ready.set,
    )
    _background(stack, readiness.run_forever(), "upstream_probe")
    return readiness


def _tracing(stack: contextlib.AsyncExitStack) -> Tracing:
    """OpenTelemetry from the OTEL_* variables; closed last, so the last spans (the calls') are
    flushed, bounded by the exporter's timeout."""
    tracing = Tracing.from_env(os.environ)
    stack.push_async_callback(asyncio.to_thread, tracing.shutdown)
    return tracing


def _background(stack: contextlib.AsyncExitStack, work: Coroutine[Any, Any, None], name: str) -> None:
    """Run `work` (a coroutine) as a task until the stack closes; then cancel it and wait for it."""
    task = asyncio.create_task(work, name=name)

    async def stop() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    stack.push_async_callback(stop)


async def _watch_loop_lag(metrics: Metrics, every_s: float = 0.1) -> None:
    """Measure how late the event loop runs a timer: frames wait that long before being read."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + every_s
        await asyncio.sleep(every_s)
        metrics.loop_lag.observe(max(0.0, loop.time() - due))
