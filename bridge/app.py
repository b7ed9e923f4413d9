"""The Starlette application: the routes, over the process-wide services (`bridge.services`)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from twiml import documents
from twiml.signatures import SIGNATURE_HEADER
from twiml.urls import public_base_url, websocket_url

from .admission import AdmissionRefused
from .call import CallSession, EndReason, prepare_call, prewarm_opener
from .call.setup import STREAM_TOKEN_PARAMETER
from .deadlines import poll_until
from .call_outcomes import Outcome
from .post_call import call_record
from .logs import get_logger
from .services import Services
from .settings import Settings
from .telemetry import bounded_label
from .twilio_stream import CLOSE_INTERNAL, CLOSE_POLICY, TwilioStream
from .upstream import UpstreamTarget

log = get_logger("bridge.app")

VOICE_PATH = "/voice"
AFTER_STREAM_PATH = "/voice/after-stream"
STATUS_PATH = "/voice/status"
MEDIA_STREAM_PATH = "/media-stream"
MAX_WEBHOOK_BYTES = 64 * 1024
WEBHOOK_BODY_TIMEOUT_S = 10.0  # Twilio sends its few hundred bytes at once; a body that dribbles is not Twilio
GOODBYE_GRACE_S = 15.0  # after the drain deadline: time for goodbyes to be said and heard
# After the last call: Twilio asks /voice/after-stream right after a stream closes; a refused
# request would make it speak an application error to the caller who just heard our goodbye.
AFTER_STREAM_GRACE_S = 2.0
# Twilio's CallSids are "CA" + 32 hex; anything long or odd would be kept (ledger, logs) for nothing.
_CALL_SID = re.compile(r"[A-Za-z0-9]{1,64}")


@dataclass(slots=True)
class BridgeState(Services):
    """The process-wide services (built and ready, see `bridge.services`) and the routes' own state."""

    settings: Settings
    active_calls: set[CallSession] = field(default_factory=set)
    draining: bool = False

    @classmethod
    def of(cls, settings: Settings, services: Services) -> BridgeState:
        return cls(settings=settings, **{f.name: getattr(services, f.name) for f in fields(Services)})

    def upstream_target(self) -> UpstreamTarget:
        return self.upstream

    async def drain(self, drain_s: float, goodbye_s: float = GOODBYE_GRACE_S) -> None:
        """Take no new calls; let active ones finish for `drain_s`, then end them with a goodbye."""
        self.draining = True
        self.metrics.draining.set(1)
        log.info("bridge.draining", active_calls=len(self.active_calls), drain_s=drain_s)
        started = self.clock()
        await self._wait_while(lambda: bool(self.active_calls), drain_s)
        if self.active_calls:
            log.info("bridge.drain_deadline", active_calls=len(self.active_calls))
            for call in list(self.active_calls):
                call.request_goodbye(EndReason.DRAINED)
            await self._wait_while(lambda: bool(self.active_calls), goodbye_s)
        await self._wait_while(lambda: self.outcomes.awaiting_redirect(started, self.clock()) > 0, AFTER_STREAM_GRACE_S)
        log.info(
            "bridge.drained",
            calls_left=len(self.active_calls),
            redirects_unanswered=self.outcomes.awaiting_redirect(started, self.clock()),
        )

    async def _wait_while(self, condition: Callable[[], bool], seconds: float) -> None:
        """Poll `condition` until it is false or `seconds` (on the bridge's clock) have passed."""
        await poll_until(self.clock, self.clock() + seconds, lambda: not condition())


def _public_base(state: BridgeState, request: Request | WebSocket) -> str:
    # The scheme is the request's as uvicorn set it: X-Forwarded-Proto is applied by its
    # proxy-headers middleware, and only for peers in FORWARDED_ALLOW_IPS. No forwarded header is
    # read here (any client could send one).
    return public_base_url(
        state.settings.public_url, scheme=request.url.scheme, host=request.headers.get("host", request.url.netloc)
    )


def _xml(twiml: str) -> Response:
    return Response(twiml, media_type="application/xml")


def _refuse_body(state: BridgeState, request: Request, reason: str, status: int, text: str) -> Response:
    """Refuse a webhook for its body, and close the connection (whatever is still coming is not read)."""
    log.warning("webhook.rejected", reason=reason, path=request.url.path)
    state.metrics.rejections.labels(reason=reason).inc()
    return PlainTextResponse(text, status_code=status, headers={"Connection": "close"})


async def _limited_body(request: Request, state: BridgeState) -> bytes | Response:
    """The request body, read while counting: at most MAX_WEBHOOK_BYTES, within WEBHOOK_BODY_TIMEOUT_S.

    A declared Content-Length over the limit is refused before a byte of the body is read; a
    chunked (or lying) body is refused as soon as the bytes received pass the limit. Either way
    nothing bigger than the limit is ever held, and no signature work is done for it.
    """
    declared = request.headers.get("content-length")
    if declared is not None and not _fits(declared, MAX_WEBHOOK_BYTES):
        return _refuse_body(state, request, "body_too_large", 413, "request body too large")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(WEBHOOK_BODY_TIMEOUT_S):
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_WEBHOOK_BYTES:
                    return _refuse_body(state, request, "body_too_large", 413, "request body too large")
                chunks.append(chunk)
    except TimeoutError:
        return _refuse_body(state, request, "body_timeout", 408, "request body not received in time")
    except ClientDisconnect:
        log.info("webhook.abandoned", path=request.url.path, reason="client_disconnected")
        return Response(status_code=400)  # nobody is there to read it
    return b"".join(chunks)


def _fits(declared: str, limit: int) -> bool:
    """A Content-Length value is ASCII digits of bounded length, and at most `limit`."""
    return declared.isascii() and declared.isdigit() and len(declared) <= 12 and int(declared) <= limit


async def _signed_form(request: Request) -> dict[str, str] | Response:
    """The webhook's form fields, or the error response when the request is not Twilio's."""
    state: BridgeState = request.app.state.bridge
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return PlainTextResponse("expected application/x-www-form-urlencoded", status_code=415)
    body = await _limited_body(request, state)
    if isinstance(body, Response):
        return body
    # Twilio posts urlencoded forms only; the stdlib parses them (no multipart parser needed).
    form = dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
    if state.signer is None:
        log.warning("webhook.unsigned", path=request.url.path, note="VOICE_BRIDGE_INSECURE_DEV: signature NOT checked")
        return form
    url = f"{_public_base(state, request)}{request.url.path}" + (f"?{request.url.query}" if request.url.query else "")
    if not state.signer.is_valid(url, form, request.headers.get(SIGNATURE_HEADER)):
        log.warning("webhook.rejected", reason="bad_signature", url=url)
        state.metrics.rejections.labels(reason="bad_signature").inc()
        routes = (VOICE_PATH, AFTER_STREAM_PATH, STATUS_PATH)
        state.metrics.webhooks.labels(route=bounded_label(request.url.path, routes), result="forbidden").inc()
        return PlainTextResponse("invalid Twilio signature", status_code=403)
    return form


async def voice_webhook(request: Request) -> Response:
    """`POST /voice`: a new call; connect it to our media stream, or say we are busy."""
    state: BridgeState = request.app.state.bridge
    form = await _signed_form(request)
    if isinstance(form, Response):
        return form
    call_sid = form.get("CallSid", "")
    if not _CALL_SID.fullmatch(call_sid):
        # Twilio's are "CA" + 32 hex; anything long or odd would be kept (ledger, logs) for nothing.
        return PlainTextResponse("CallSid is required (up to 64 letters and digits)", status_code=400)
    if state.draining:
        return _busy(state, call_sid)
    try:
        reservation_id = state.admission.reserve(call_sid, state.clock())
    except AdmissionRefused as exc:
        if exc.reason == "busy":
            return _busy(state, call_sid)
        # A replayed webhook (the call is streaming, or ended): no stream, no model session. The
        # answer goes to whoever sent it, not to a live call (Twilio never posts /voice twice for
        # a call it has already connected), so it is a plain 409.
        log.warning("webhook.rejected", reason=exc.reason, call_sid=call_sid)
        if exc.reason == "call_in_progress":
            state.metrics.rejections.labels(reason="call_in_progress").inc()
        else:
            state.metrics.rejections.labels(reason="call_ended").inc()
        state.metrics.webhooks.labels(route=VOICE_PATH, result="replay").inc()
        return PlainTextResponse(f"no stream: {exc.reason}", status_code=409)
    base = _public_base(state, request)
    if state.prewarm is not None:
        # Connect and configure the model while Twilio sets up the stream.
        state.prewarm.start(call_sid, prewarm_opener(state, call_sid, form.get("To")))
    parameters = {
        "CallSid": call_sid,
        "From": form.get("From", ""),
        "To": form.get("To", ""),
        STREAM_TOKEN_PARAMETER: state.tokens.issue(call_sid, reservation_id, state.wall_clock()),
    }
    twiml = documents.connect_stream(
        websocket_url(base, MEDIA_STREAM_PATH), parameters, after_stream_url=f"{base}{AFTER_STREAM_PATH}"
    )
    log.info("webhook.answered", call_sid=call_sid)
    state.metrics.webhooks.labels(route=VOICE_PATH, result="stream").inc()
    return _xml(twiml)


def _busy(state: BridgeState, call_sid: str) -> Response:
    log.warning("webhook.busy", call_sid=call_sid, max_calls=state.admission.max_calls, draining=state.draining)
    state.metrics.webhooks.labels(route=VOICE_PATH, result="busy").inc()
    return _xml(documents.busy())


async def after_stream(request: Request) -> Response:
    """`POST /voice/after-stream`: the stream ended with the caller still on the line."""
    state: BridgeState = request.app.state.bridge
    form = await _signed_form(request)
    if isinstance(form, Response):
        return form
    call_sid = form.get("CallSid", "")
    outcome = state.outcomes.take(call_sid, state.clock())
    if outcome is not None and outcome.upstream_failed:
        log.warning("call.fallback", call_sid=call_sid, via="after_stream", dial=bool(state.settings.fallback_number))
        return _xml(documents.apology(state.settings.fallback_number))
    if outcome is not None and outcome.reason is EndReason.TRANSFERRED and outcome.transfer_to:
        # No REST credentials: the transfer happens here (the model already said the handoff line).
        return _xml(documents.transfer(outcome.transfer_to, handoff=None))
    return _xml(documents.hang_up())


async def call_status(request: Request) -> Response:
    """`POST /voice/status`: Twilio's status callback; logged, and frees a slot of a call that never streamed."""
    state: BridgeState = request.app.state.bridge
    form = await _signed_form(request)
    if isinstance(form, Response):
        return form
    status = form.get("CallStatus", "")
    log.info("call.status", call_sid=form.get("CallSid", ""), status=status, duration_s=form.get("CallDuration"))
    if status in ("completed", "busy", "failed", "no-answer", "canceled"):
        call_sid = form.get("CallSid", "")
        if not state.admission.is_streaming(call_sid):  # a live stream's end is its own to report
            state.admission.end(call_sid, state.clock())
            if state.prewarm is not None:
                state.prewarm.discard_soon(call_sid)
            if state.recorder is not None:
                state.recorder.finish_unstreamed(call_sid)
    return Response(status_code=204)


async def media_stream(websocket: WebSocket) -> None:
    """`WS /media-stream`: one call's audio, both ways."""
    state: BridgeState = websocket.app.state.bridge
    if state.signer is not None:
        url = websocket_url(_public_base(state, websocket), MEDIA_STREAM_PATH)
        if not state.signer.is_valid(url, {}, websocket.headers.get(SIGNATURE_HEADER)):
            log.warning("stream.rejected", reason="bad_signature", url=url)
            state.metrics.rejections.labels(reason="bad_signature").inc()
            await websocket.close(code=CLOSE_POLICY)  # before accept: the upgrade is refused with 403
            return
    else:
        log.warning("stream.unsigned", note="VOICE_BRIDGE_INSECURE_DEV: signature NOT checked")
    await websocket.accept()
    assert state.upstream is not None
    twilio_tap = state.recorder.twilio_tap() if state.recorder is not None else None
    twilio = TwilioStream(websocket, tap=twilio_tap, deadlines=state.settings.peer_deadlines)
    call = CallSession(
        twilio,
        prepare_call(state, twilio_tap),
        audio_mode=state.settings.audio,
        metrics=state.metrics,
        clock=state.clock,
        log_transcripts=state.settings.log_transcripts,
        append_ms=state.settings.append_ms,
        deadlines=state.settings.peer_deadlines,
    )
    state.active_calls.add(call)
    try:
        reason = await call.run()
        if call.call_sid is not None:
            state.outcomes.record(call.call_sid, Outcome(reason, call.transfer_to), state.clock())
    except Exception:
        # A bug in one call must not take the process, or any other call, with it.
        log.exception("call.crashed")
        await twilio.close(CLOSE_INTERNAL, "internal_error")
    finally:
        state.active_calls.discard(call)
        if call.call_sid is not None:
            state.admission.end(call.call_sid, state.clock())
            if state.recorder is not None:
                state.recorder.finish(call.call_sid, (call.end_reason or EndReason.INTERNAL_ERROR).value)
            if state.post_call is not None:
                state.post_call.submit(call_record(call, state.wall_clock(), redact=not state.settings.record_transcripts))


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    state: BridgeState = request.app.state.bridge
    if state.draining:
        return JSONResponse({"status": "draining", "active_calls": len(state.active_calls)}, status_code=503)
    if state.readiness is not None and not state.readiness.ready:
        return JSONResponse({**state.readiness.body(), "active_calls": len(state.active_calls)}, status_code=503)
    if not state.admission.has_room(state.clock()):
        return JSONResponse({"status": "full", "active_calls": len(state.active_calls)}, status_code=503)
    return JSONResponse({"status": "ready", "active_calls": len(state.active_calls)})


async def metrics(request: Request) -> Response:
    body, content_type = request.app.state.bridge.metrics.exposition()
    return Response(body, media_type=content_type)


def create_app(settings: Settings, services: Services) -> Starlette:
    """The app, serving `services` (built by `bridge.services`, ready; whoever built them closes them).

    `/readyz` and `/metrics` are on this app unless VOICE_BRIDGE_METRICS_PORT moves them to
    `create_internal_app`."""
    routes = [
        Route(VOICE_PATH, voice_webhook, methods=["POST"]),
        Route(AFTER_STREAM_PATH, after_stream, methods=["POST"]),
        Route(STATUS_PATH, call_status, methods=["POST"]),
        WebSocketRoute(MEDIA_STREAM_PATH, media_stream),
        Route("/healthz", healthz),
    ]
    if settings.metrics_port is None:
        routes += [Route("/readyz", readyz), Route("/metrics", metrics)]
    app = Starlette(routes=routes)
    app.state.bridge = BridgeState.of(settings, services)
    return app


def create_internal_app(app: Starlette) -> Starlette:
    """The internal port's app (VOICE_BRIDGE_METRICS_PORT): `/metrics`, `/readyz` and `/healthz` of
    the bridge `app`, which then serves only `/healthz` of the three. Nothing here on the public port
    tells an outsider how many calls are in progress or anything a metric says. Serve it in the same
    event loop as `app`; it has no lifespan of its own."""
    internal = Starlette(routes=[Route("/metrics", metrics), Route("/readyz", readyz), Route("/healthz", healthz)])
    internal.state.bridge = app.state.bridge
    return internal
