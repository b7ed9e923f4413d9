"""The Starlette application: routes and the process-wide resources they share."""

from __future__ import annotations

import contextlib
from urllib.parse import parse_qsl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from twiml.documents import connect_stream
from twiml.signatures import SIGNATURE_HEADER, TwilioSigner
from twiml.urls import public_base_url, websocket_url

from .agent import LocalAgent
from .call_session import CallSession
from .dialects import SessionConfig, dialect_for
from .logs import get_logger
from .settings import Settings
from .twilio_stream import CLOSE_POLICY, TwilioStream
from .upstream import UpstreamTarget

log = get_logger("bridge.app")

MEDIA_STREAM_PATH = "/media-stream"
MAX_WEBHOOK_BYTES = 64 * 1024


@dataclass(slots=True)
class BridgeState:
    """What the routes share for the life of the process (calls keep their own state)."""

    settings: Settings
    signer: TwilioSigner | None
    upstream: UpstreamTarget | None = None
    agent: LocalAgent | None = None
    active_calls: set[CallSession] = field(default_factory=set)


def _public_base(state: BridgeState, request: Request | WebSocket) -> str:
    return public_base_url(
        state.settings.public_url,
        scheme=request.url.scheme,
        host=request.headers.get("host", request.url.netloc),
        forwarded_proto=request.headers.get("x-forwarded-proto"),
        forwarded_host=request.headers.get("x-forwarded-host"),
    )


async def voice_webhook(request: Request) -> Response:
    """`POST /voice`: Twilio asks what to do with a new call; we connect it to our media stream."""
    state: BridgeState = request.app.state.bridge
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return PlainTextResponse("expected application/x-www-form-urlencoded", status_code=415)
    body = await request.body()
    if len(body) > MAX_WEBHOOK_BYTES:
        return PlainTextResponse("request body too large", status_code=413)
    # Twilio posts urlencoded forms only; the stdlib parses them (no multipart parser needed).
    form = dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
    base = _public_base(state, request)
    if state.signer is not None:
        url = f"{base}{request.url.path}" + (f"?{request.url.query}" if request.url.query else "")
        if not state.signer.is_valid(url, form, request.headers.get(SIGNATURE_HEADER)):
            log.warning("webhook.rejected", reason="bad_signature", url=url)
            return PlainTextResponse("invalid Twilio signature", status_code=403)
    else:
        log.warning("webhook.unsigned", reason="VOICE_BRIDGE_INSECURE_DEV is on: signatures are not checked")
    call_sid = form.get("CallSid", "")
    if not call_sid:
        return PlainTextResponse("CallSid is required", status_code=400)
    parameters = {"CallSid": call_sid, "From": form.get("From", ""), "To": form.get("To", "")}
    twiml = connect_stream(websocket_url(base, MEDIA_STREAM_PATH), parameters)
    log.info("webhook.answered", call_sid=call_sid)
    return Response(twiml, media_type="application/xml")


async def media_stream(websocket: WebSocket) -> None:
    """`WS /media-stream`: one call's audio, both ways."""
    state: BridgeState = websocket.app.state.bridge
    if state.signer is not None:
        url = websocket_url(_public_base(state, websocket), MEDIA_STREAM_PATH)
        if not state.signer.is_valid(url, {}, websocket.headers.get(SIGNATURE_HEADER)):
            log.warning("stream.rejected", reason="bad_signature", url=url)
            await websocket.close(code=CLOSE_POLICY)  # before accept: the upgrade is refused with 403
            return
    await websocket.accept()
    assert state.upstream is not None
    settings = state.settings
    call = CallSession(
        TwilioStream(websocket),
        state.upstream,
        SessionConfig(instructions=settings.instructions, voice=settings.voice, audio_mode=settings.audio),
    )
    state.active_calls.add(call)
    try:
        await call.run()
    finally:
        state.active_calls.discard(call)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    state: BridgeState = request.app.state.bridge
    if state.upstream is None:
        return JSONResponse({"status": "starting"}, status_code=503)
    return JSONResponse({"status": "ready", "active_calls": len(state.active_calls)})


def create_app(settings: Settings, agent_clips: str | None = None) -> Starlette:
    signer = TwilioSigner(settings.twilio_auth_token) if settings.twilio_auth_token else None
    state = BridgeState(settings=settings, signer=signer)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if settings.uses_embedded_agent:
            state.agent = LocalAgent(clips=agent_clips or settings.agent_clips_dir)
            await state.agent.start()
            url = state.agent.url
        else:
            assert settings.upstream_url is not None
            url = settings.upstream_url
        state.upstream = UpstreamTarget(url=url, dialect=dialect_for(settings.upstream))
        log.info("bridge.ready", upstream=settings.upstream, upstream_url=url, audio=settings.audio)
        try:
            yield
        finally:
            if state.agent is not None:
                await state.agent.stop()

    app = Starlette(
        routes=[
            Route("/voice", voice_webhook, methods=["POST"]),
            WebSocketRoute(MEDIA_STREAM_PATH, media_stream),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ],
        lifespan=lifespan,
    )
    app.state.bridge = state
    return app
