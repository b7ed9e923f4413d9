"""`voice-bridge`: serve the bridge, run the local agent, place simulated calls."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import sys
from pathlib import Path

from .logs import configure_logging, get_logger
from .settings import ConfigError, Settings

log = get_logger("bridge.cli")


def _settings_or_exit() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        print(f"voice-bridge: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app
    from .serving import uvicorn_config

    settings = _settings_or_exit()
    configure_logging(settings.log_format, settings.log_level)
    if settings.uses_embedded_agent:
        log.info("voice-bridge.starting", upstream="local", note="using the embedded local agent: no cloud account needed")
    else:
        log.info("voice-bridge.starting", upstream=settings.upstream, upstream_url=settings.upstream_url)
    if settings.twilio_auth_token is None:
        log.warning(
            "voice-bridge.insecure",
            note="VOICE_BRIDGE_INSECURE_DEV=1: Twilio signatures are NOT checked; never expose this server",
        )
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it against the handler it found.
    # SIGTERM is an orchestrator's normal request to stop, so that handler lets us exit 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.Server(uvicorn_config(create_app(settings), args.host, args.port)).run()
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    from .agent import LocalAgent

    configure_logging(os.environ.get("VOICE_BRIDGE_LOG_FORMAT", "console"))

    async def run() -> None:
        agent = LocalAgent(host=args.host, port=args.port, clips=args.clips, pace=args.pace)
        await agent.start()
        print(f"local agent listening on {agent.url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await agent.stop()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    return 0


def _plan(args: argparse.Namespace) -> object:
    from .phone.caller import CallerPlan, load_caller_audio

    return CallerPlan(
        utterances=tuple(load_caller_audio(Path(p)) for p in args.say),
        pause_s=args.pause,
        barge_in_after_s=args.barge_in_after,
        hangup_after_s=args.hangup_after,
        max_call_s=args.max_seconds,
    )


def _finish_call(report: object, record: str | None) -> None:
    from .phone import CallReport

    assert isinstance(report, CallReport)
    print(report.summary())
    if record:
        report.write_wav(Path(record))
        print(f"  recording (L caller, R agent) {record}")


def cmd_call(args: argparse.Namespace) -> int:
    from .phone import place_call
    from .phone.simulator import SimulatorError

    configure_logging("console", "warning")
    token = args.auth_token or os.environ.get("TWILIO_AUTH_TOKEN")
    try:
        report = asyncio.run(
            place_call(args.url, _plan(args), auth_token=token, to=args.to, from_=args.from_, speed=args.speed)  # type: ignore[arg-type]
        )
    except (SimulatorError, OSError) as exc:
        print(f"voice-bridge call: {exc}", file=sys.stderr)
        return 1
    _finish_call(report, args.record)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The bridge (with its embedded agent) and a simulated caller in one process, on loopback."""
    from .app import create_app
    from .phone import place_call
    from .serving import serving

    # A throwaway auth token: the demo signs and checks every request, as production does.
    token = secrets.token_hex(16)
    settings = Settings(twilio_auth_token=token, audio=args.audio, agent_clips_dir=os.environ.get("VOICE_BRIDGE_AGENT_CLIPS"))
    settings.validate()
    configure_logging("console", args.log_level)

    async def run() -> object:
        async with serving(create_app(settings)) as url:
            return await place_call(url, _plan(args), auth_token=token, speed=args.speed)  # type: ignore[arg-type]

    report = asyncio.run(run())
    _finish_call(report, args.record)
    return 0


def _add_call_options(parser: argparse.ArgumentParser, default_say: list[str]) -> None:
    parser.add_argument("--say", action="append", default=None, metavar="WAV",
                        help="what the caller says, in turn, each after the agent goes quiet (repeatable)")
    parser.add_argument("--record", metavar="WAV", help="write the call as a 2-channel WAV (left caller, right agent)")
    parser.add_argument("--pause", type=float, default=0.8, help="seconds of agent silence before the caller speaks")
    parser.add_argument("--barge-in-after", type=float, default=None, metavar="S",
                        help="interrupt the agent S seconds into what it says instead of waiting")
    parser.add_argument("--hangup-after", type=float, default=1.5, help="seconds of silence after the last answer before hanging up")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="hang up after this long whatever happens")
    parser.add_argument("--speed", type=float, default=1.0, help="run the phone's clock this many times faster than real time")
    parser.set_defaults(default_say=default_say)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voice-bridge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the bridge (POST /voice, WS /media-stream, /healthz, /readyz)")
    serve.add_argument("--host", default=os.environ.get("VOICE_BRIDGE_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    serve.set_defaults(func=cmd_serve)

    agent = sub.add_parser("agent", help="run the local Realtime agent on its own")
    agent.add_argument("--host", default="127.0.0.1")
    agent.add_argument("--port", type=int, default=9000)
    agent.add_argument("--clips", default=os.environ.get("VOICE_BRIDGE_AGENT_CLIPS"), help="folder with clips.json")
    agent.add_argument("--pace", type=float, default=4.0, help="how many times faster than real time it streams audio")
    agent.set_defaults(func=cmd_agent)

    fixture = str(Path(__file__).resolve().parents[1] / "fixtures" / "audio" / "caller_question.wav")
    call = sub.add_parser("call", help="place a simulated Twilio call against a running bridge")
    call.add_argument("--url", default="http://127.0.0.1:8000", help="the bridge's base URL (it posts to URL/voice)")
    call.add_argument("--to", default="+15550100000")
    call.add_argument("--from", dest="from_", default="+15550199999")
    call.add_argument("--auth-token", help="sign requests with this Twilio auth token (default: $TWILIO_AUTH_TOKEN)")
    _add_call_options(call, [fixture])
    call.set_defaults(func=cmd_call)

    demo = sub.add_parser("demo", help="a whole simulated call against an in-process bridge and local agent")
    demo.add_argument("--audio", choices=("pcm24k", "g711"), default="pcm24k")
    demo.add_argument("--log-level", default="info")
    _add_call_options(demo, [fixture])
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "say") and args.say is None:
        args.say = [p for p in args.default_say if Path(p).is_file()]
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
