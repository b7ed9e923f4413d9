"""`voice-bridge`: serve the bridge, run the local agent, place simulated calls."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .logs import configure_logging, get_logger
from .settings import ConfigError, Settings, check_clips_folder

if TYPE_CHECKING:
    from .services import ServicePlan

log = get_logger("bridge.cli")


def _settings_or_exit() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        print(f"voice-bridge: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .serving import default_limit_concurrency
    from .services import prepare_services

    settings = _settings_or_exit()
    host = args.host if args.host is not None else settings.host
    port = args.port if args.port is not None else settings.port
    if settings.metrics_port is not None and settings.metrics_port == port:
        print(f"voice-bridge: configuration error: VOICE_BRIDGE_METRICS_PORT={settings.metrics_port} is the main port too", file=sys.stderr)
        return 2
    # Everything that can be wrong with the configuration is found before the first log line, so a
    # mistake is one line on stderr (and exit 2), never a traceback.
    try:
        plan = prepare_services(settings)
        agent = _embedded_agent_or_none(settings)
    except ConfigError as exc:
        print(f"voice-bridge: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level, redact=settings.secret_values())
    _log_starting(settings)
    edge = {
        "header_timeout_s": args.header_timeout,
        "limit_concurrency": args.limit_concurrency or default_limit_concurrency(settings.max_calls),
        "forwarded_allow_ips": args.forwarded_allow_ips,
    }
    # The event loop uvicorn would pick (uvloop when installed), with the services and the embedded
    # agent (VOICE_BRIDGE_UPSTREAM=local) started in it before the server listens.
    loop_factory = uvicorn.Config(app="bridge.app:create_app", log_config=None).get_loop_factory()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve(settings, plan, agent, host, port, edge))
    return 0


class _Agent(Protocol):
    """The embedded local agent as `serve` uses it (bridge/devtools/agent, imported only when needed)."""

    @property
    def url(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def _embedded_agent_or_none(settings: Settings) -> _Agent | None:
    """The embedded local agent (clips loaded; ConfigError if they cannot be), for VOICE_BRIDGE_UPSTREAM=local."""
    if not settings.uses_embedded_agent:
        return None
    from .devtools.local_bridge import embedded_agent  # dev tooling: only the local upstream needs it

    return embedded_agent(settings)


async def _serve(settings: Settings, plan: ServicePlan, agent: _Agent | None, host: str, port: int, edge: dict[str, Any]) -> None:
    """Start the embedded agent (if any), then the services, then serve until SIGTERM has drained the calls."""
    from .app import create_app, create_internal_app
    from .serving import DrainingServer, uvicorn_config
    async with contextlib.AsyncExitStack() as stack:
        local_url = None
        if agent is not None:
            await agent.start()
            stack.push_async_callback(agent.stop)
            local_url = agent.url
        services = await stack.enter_async_context(plan.open(local_url=local_url))
        app = create_app(settings, services)
        internal = None
        if settings.metrics_port is not None:
            internal = uvicorn_config(create_internal_app(app), host, settings.metrics_port, lifespan="off", **edge)
            log.info("voice-bridge.internal_port", port=settings.metrics_port, routes="/metrics /readyz /healthz")
        # On SIGTERM the server drains the calls first (see DrainingServer), then exits 0.
        server = DrainingServer(
            uvicorn_config(app, host, port, **edge),
            drain=lambda: app.state.bridge.drain(settings.drain_seconds),
            internal=internal,
        )
        await server.serve()


def _log_starting(settings: Settings) -> None:
    from .upstream import redact_url

    if settings.uses_embedded_agent:
        log.info("voice-bridge.starting", upstream="local", note="using the embedded local agent: no cloud account needed")
    else:
        upstream_url = redact_url(settings.upstream_url) if settings.upstream_url else None
        log.info("voice-bridge.starting", upstream=settings.upstream, upstream_url=upstream_url)
    if settings.public_url is None and settings.twilio_auth_token is not None:
        log.info(
            "voice-bridge.public_url_unset",
            note="signatures are checked against the request's Host header (and X-Forwarded-Proto from "
            "FORWARDED_ALLOW_IPS only); set VOICE_BRIDGE_PUBLIC_URL in production",
        )
    if settings.twilio_auth_token is None:
        log.warning(
            "voice-bridge.insecure",
            note="VOICE_BRIDGE_INSECURE_DEV=1: Twilio signatures are NOT checked; never expose this server",
        )


def cmd_agent(args: argparse.Namespace) -> int:
    import wave

    from .devtools.agent import LocalAgent

    from .settings import LOG_FORMATS, env_choice

    try:
        log_format = env_choice(os.environ, "VOICE_BRIDGE_LOG_FORMAT", "console", LOG_FORMATS)
        agent = LocalAgent(host=args.host, port=args.port, clips=check_clips_folder(args.clips) if args.clips else None, pace=args.pace)
    except ConfigError as exc:
        print(f"voice-bridge agent: {str(exc).replace('VOICE_BRIDGE_AGENT_CLIPS', '--clips')}", file=sys.stderr)
        return 2
    except (OSError, EOFError, ValueError, KeyError, TypeError, wave.Error) as exc:
        print(f"voice-bridge agent: the clips cannot be loaded: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    configure_logging(log_format)
    agent.answer_delay_s = args.answer_delay_ms / 1000  # issue 16

    async def run() -> None:
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


class _BadArgument(Exception):
    """A command-line argument that cannot work; printed as one line, exit 2."""


def _plan(args: argparse.Namespace) -> object:
    """The caller's plan; each `--say` file is read now, and `--record`'s folder checked, before any call."""
    import wave

    from .devtools.phone.caller import CallerPlan, load_caller_audio

    utterances = []
    for name in args.say:
        path = Path(name)
        if not path.is_file():
            raise _BadArgument(f"--say {name}: no such file")
        try:
            utterances.append(load_caller_audio(path))
        except (OSError, EOFError, ValueError, wave.Error) as exc:
            raise _BadArgument(f"--say {name}: not a readable 16-bit WAV file ({exc})") from None
    if args.record:
        folder = Path(args.record).resolve().parent
        if not folder.is_dir():
            raise _BadArgument(f"--record {args.record}: no such folder {folder}")
        if not os.access(folder, os.W_OK):
            raise _BadArgument(f"--record {args.record}: the folder {folder} is not writable")
    return CallerPlan(
        utterances=tuple(utterances),
        pause_s=args.pause,
        barge_in_after_s=args.barge_in_after,
        hangup_after_s=args.hangup_after,
        max_call_s=args.max_seconds,
    )


def _network(args: argparse.Namespace) -> object:
    from .devtools.phone.network import NetworkProfile

    try:
        return NetworkProfile(delay_ms=args.net_delay_ms, jitter_ms=args.jitter_ms, playout_delay_ms=args.playout_delay_ms)
    except ValueError as exc:
        print(f"voice-bridge: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _finish_call(report: object, record: str | None) -> None:
    from .devtools.phone import CallReport

    assert isinstance(report, CallReport)
    print(report.summary())
    if record:
        report.write_wav(Path(record))
        print(f"  recording (L caller, R agent) {record}")


def cmd_call(args: argparse.Namespace) -> int:
    from .devtools.phone import place_call
    from .devtools.phone.simulator import SimulatorError

    try:
        plan = _plan(args)
        network = _network(args)
    except _BadArgument as exc:
        print(f"voice-bridge call: {exc}", file=sys.stderr)
        return 2
    configure_logging("console", "warning")
    token = args.auth_token or os.environ.get("TWILIO_AUTH_TOKEN")
    try:
        report = asyncio.run(
            place_call(
                args.url, plan, auth_token=token, to=args.to, from_=args.from_, speed=args.speed,  # type: ignore[arg-type]
                network=network,  # type: ignore[arg-type]
            )
        )
    except (SimulatorError, OSError) as exc:
        print(f"voice-bridge call: {exc}", file=sys.stderr)
        return 1
    _finish_call(report, args.record)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The bridge (with its embedded agent) and a simulated caller in one process, on loopback."""
    from .devtools.clock import scaled_clock
    from .devtools.local_bridge import embedded_agent, served_bridge
    from .devtools.phone import place_call
    from .services import prepare_services

    # A throwaway auth token: the demo signs and checks every request, as production does.
    token = secrets.token_hex(16)
    try:
        plan = _plan(args)
        network = _network(args)
        clips = (os.environ.get("VOICE_BRIDGE_AGENT_CLIPS") or "").strip()
        inspect_dir = _inspect_folder(args.inspect)
        settings = Settings(
            twilio_auth_token=token, audio=args.audio, agent_clips_dir=check_clips_folder(clips) if clips else None,
            record_dir=inspect_dir.name if inspect_dir is not None else None,
            # issue 16: the production budgets (the environment's defaults), so a late answer gets its filler
            filler_after_ms=1500, turn_timeout_s=8,
        )
        settings.validate()
        services = prepare_services(settings)
        agent = embedded_agent(settings)
        agent.answer_delay_s = args.answer_delay_ms / 1000  # issue 16
    except _BadArgument as exc:
        print(f"voice-bridge demo: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"voice-bridge: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging("console", args.log_level)

    async def run() -> object:
        # The bridge keeps time with the phone, so --speed is real time for both of them.
        async with served_bridge(settings, clock=scaled_clock(args.speed), plan=services, agent=agent) as bridge:
            return await place_call(bridge.url, plan, auth_token=token, speed=args.speed, network=network)  # type: ignore[arg-type]

    report = asyncio.run(run())
    _finish_call(report, args.record)
    lines, problems = demo_outcome(report, len(args.say), agent.caller_turns_heard)
    if inspect_dir is not None:
        with inspect_dir:
            problems += _write_inspect_page(Path(inspect_dir.name), Path(args.inspect))
    print("\n".join(lines))
    if problems:
        print(f"voice-bridge demo: {'; '.join(problems)}", file=sys.stderr)
        return 1
    return 0


def _inspect_folder(page: str | None) -> Any:
    """`demo --inspect PAGE`: a private scratch folder the demo call is recorded into."""
    import tempfile

    if page is None:
        return None
    folder = Path(page).resolve().parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise _BadArgument(f"--inspect {page}: the folder {folder} does not exist or is not writable")
    return tempfile.TemporaryDirectory(prefix="voice-bridge-demo-")


def _write_inspect_page(record_dir: Path, page: Path) -> list[str]:
    from .devtools.inspect import write_page

    calls = [d for d in record_dir.iterdir() if (d / "meta.json").is_file()]
    if len(calls) != 1:
        return [f"--inspect: expected one recorded call, found {len(calls)}"]
    size = write_page(calls[0], page)
    print(f"  inspector page           {page} ({size / 1e6:.2f} MB)")
    return []


def demo_outcome(report: object, planned: int, agent_turns: int | None) -> tuple[list[str], list[str]]:
    """The demo's verdict (pure): report lines, and what went wrong (empty: the conversation happened).

    The caller's question was heard by the agent when the caller said every planned utterance to
    its end and the agent detected at least as many turns (`agent_turns`; None: no local agent to
    ask, the phone's side alone decides); the answer was heard when the caller heard the agent
    after each utterance (`CallReport.answers_heard`).
    """
    from .devtools.phone import CallReport

    assert isinstance(report, CallReport)
    said, answered = report.utterances_said, report.answers_heard
    heard = planned > 0 and said == planned and (agent_turns is None or agent_turns >= said)
    got_answer = said > 0 and answered == said
    detected = "" if agent_turns is None else f", the agent detected {agent_turns} turn{'s' * (agent_turns != 1)}"
    lines = [
        f"  question heard by agent  {'yes' if heard else 'NO'} (the caller said {said} of {planned}{detected})",
        f"  answer heard by caller   {'yes' if got_answer else 'NO'} ({answered} of {said} answered)",
    ]
    problems = []
    if not heard:
        problems.append(f"the caller's question was not heard by the agent (said {said} of {planned}{detected})")
    if not got_answer:
        problems.append(f"the caller did not hear the agent's answer ({answered} of {said} utterances answered)")
    return lines, problems


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay recorded calls against the current code; exit 1 if one differs beyond the tolerances."""
    import json

    from .recording_format import RecordingError
    from .devtools.replay.run import recorded_calls, replay_call
    from .devtools.replay.compare import Tolerances

    configure_logging("console", args.log_level)
    tolerances = Tolerances(
        max_drift_ms=args.max_drift_ms,
        min_snr_db=args.min_snr_db,
        max_event_diffs=args.max_event_diffs,
        max_field_diffs=args.max_field_diffs,
        max_caller_audio_diff_ms=args.max_caller_audio_diff_ms,
    )
    calls = [call for path in args.calls for call in recorded_calls(path)]
    if not calls:
        print(f"voice-bridge replay: no recorded call in {', '.join(args.calls)}", file=sys.stderr)
        return 2
    failed = 0
    results = []
    for call in calls:
        keep = Path(args.keep) / call.name if args.keep else None
        try:
            result = asyncio.run(replay_call(call, speed=args.speed, tolerances=tolerances, keep_in=keep))
        except RecordingError as exc:
            print(f"voice-bridge replay: {exc}", file=sys.stderr)
            return 2
        failed += not result.passed
        results.append(result.to_json())
        if not args.json:
            print(result.summary(), flush=True)
    if args.json:
        print(json.dumps(results if len(results) > 1 else results[0], indent=2))
    elif len(calls) > 1:
        print(f"{len(calls) - failed} of {len(calls)} recorded calls replayed within the tolerances")
    return 1 if failed else 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """One self-contained HTML page showing a recorded call (bridge/devtools/inspect)."""
    from .devtools.inspect import write_page
    from .recording_format import RecordingError, load_recording

    try:
        recording = load_recording(args.call)
    except (RecordingError, OSError, ValueError) as exc:
        print(f"voice-bridge inspect: {exc}", file=sys.stderr)
        return 2
    out = Path(args.output) if args.output else Path(f"{recording.path.resolve().name}.html")
    try:
        size = write_page(recording, out, include_audio=not args.no_audio)
    except OSError as exc:
        print(f"voice-bridge inspect: cannot write {out}: {exc}", file=sys.stderr)
        return 2
    print(f"{out} ({size / 1e6:.2f} MB)")
    return 0


TWILIO_TIMEOUT_S = 10.0  # each Twilio REST request: a black-holed API must not hang the command


def twilio_argument_error(args: argparse.Namespace) -> str | None:
    """What is wrong with `--number` / `--url` (checked before Twilio is contacted), or None."""
    from .settings import E164, ConfigError, check_url

    if not E164.fullmatch(args.number):
        return f"--number {args.number!r}: expected an E.164 number like +15551234567"
    try:
        check_url("--url", args.url, ("https",))
    except ConfigError as exc:
        return str(exc)
    if "?" in args.url or "#" in args.url:
        return "--url must be the service's base URL (https://host[/path]), without a query or fragment"
    return None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:300]


def run_twilio_command(args: argparse.Namespace, client: object) -> int:
    """`twilio configure` / `twilio check` against a `twilio.rest.Client` (injected for tests).

    Exit 0: done (check: it points here); 1: Twilio said no, could not be reached, or (check) the
    number points elsewhere; 2: bad arguments, refused before any request. Errors are one line.
    """
    import requests
    from twilio.base.exceptions import TwilioException, TwilioRestException

    from twiml.rest import NumberNotFound, configure_number, expected_webhooks, number_webhooks, points_here

    problem = twilio_argument_error(args)
    if problem is not None:
        print(f"voice-bridge twilio: {problem}", file=sys.stderr)
        return 2
    try:
        if args.twilio_command == "configure":
            before, after = configure_number(client, args.number, args.url)  # type: ignore[arg-type]
            print(f"{after.phone_number} ({after.sid})")
            for name in expected_webhooks(args.url):
                old, new = getattr(before, name), getattr(after, name)
                print(f"  {name:<24} {old or '-'} -> {new or '-'}" if old != new else f"  {name:<24} {new} (unchanged)")
            return 0
        webhooks = number_webhooks(client, args.number)  # type: ignore[arg-type]
    except NumberNotFound as exc:
        print(f"voice-bridge twilio: {exc}", file=sys.stderr)
        return 1
    except TwilioRestException as exc:
        print(f"voice-bridge twilio: Twilio answered HTTP {exc.status}: {_one_line(exc.msg)}", file=sys.stderr)
        return 1
    except requests.Timeout:
        print(f"voice-bridge twilio: the Twilio API did not answer within {TWILIO_TIMEOUT_S:g} s", file=sys.stderr)
        return 1
    except (requests.RequestException, OSError) as exc:
        print(f"voice-bridge twilio: cannot reach the Twilio API ({type(exc).__name__})", file=sys.stderr)
        return 1
    except TwilioException as exc:
        print(f"voice-bridge twilio: Twilio refused: {_one_line(' '.join(map(str, exc.args)))}", file=sys.stderr)
        return 1
    differences = points_here(webhooks, args.url)
    if differences:
        print(f"{webhooks.phone_number} does NOT point at {args.url}:")
        for line in differences:
            print(f"  {line}")
        return 1
    print(f"{webhooks.phone_number} points at {args.url}/voice (POST), status callback {args.url}/voice/status")
    return 0


def cmd_twilio(args: argparse.Namespace) -> int:
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    problem = twilio_argument_error(args)
    if problem is not None:
        print(f"voice-bridge twilio: {problem}", file=sys.stderr)
        return 2
    sid, token = os.environ.get("TWILIO_ACCOUNT_SID"), os.environ.get("TWILIO_AUTH_TOKEN")
    if not sid or not token:
        print("voice-bridge twilio: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN", file=sys.stderr)
        return 2
    return run_twilio_command(args, Client(sid, token, http_client=TwilioHttpClient(timeout=TWILIO_TIMEOUT_S)))


def _port(raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a port number (1-65535)")
    return int(raw)


def _positive(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number") from None
    if not 0 < value < 1e6:
        raise argparse.ArgumentTypeError(f"{raw!r} must be a positive number")
    return value


def _delay_ms(raw: str) -> float:
    """A delay in ms, 0 to 60000 (issue 16: the local agent's late answers)."""
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number of milliseconds") from None
    if not 0 <= value <= 60_000:
        raise argparse.ArgumentTypeError("must be from 0 to 60000 ms")
    return value


def _add_call_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--say", action="append", default=None, metavar="WAV",
                        help="what the caller says, in turn, each after the agent goes quiet (repeatable; "
                        "default: the question shipped with the package, fixtures/audio/caller_question.wav)")
    parser.add_argument("--record", metavar="WAV", help="write the call as a 2-channel WAV (left caller, right agent)")
    parser.add_argument("--pause", type=float, default=0.8, help="seconds of agent silence before the caller speaks")
    parser.add_argument("--barge-in-after", type=float, default=None, metavar="S",
                        help="interrupt the agent S seconds into what it says instead of waiting")
    parser.add_argument("--hangup-after", type=float, default=1.5, help="seconds of silence after the last answer before hanging up")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="hang up after this long whatever happens")
    parser.add_argument("--speed", type=_positive, default=1.0, help="run the phone's clock this many times faster than real time (a bridge started by `serve` keeps "
                        "real time and will see a faster phone as a flood; `demo` scales both)")
    parser.add_argument("--net-delay-ms", type=float, default=0.0, metavar="MS",
                        help="simulated one-way network delay between Twilio and the bridge, each way (default 0)")
    parser.add_argument("--jitter-ms", type=float, default=0.0, metavar="MS",
                        help="each message's delay varies by up to this much either way; messages stay in order (default 0)")
    parser.add_argument("--playout-delay-ms", type=float, default=0.0, metavar="MS",
                        help="Twilio's wait before playing audio that arrives into an empty buffer (default 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voice-bridge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_serve, _add_agent, _add_call, _add_twilio, _add_demo, _add_replay, _add_inspect):
        add(sub)
    return parser


def _add_serve(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="run the bridge (POST /voice, WS /media-stream, /healthz, /readyz)")
    # Defaults come from VOICE_BRIDGE_HOST and PORT, read (and checked) with the other settings:
    # a bad PORT must not break `--help`.
    serve.add_argument("--host", default=None, help="address to listen on (default: $VOICE_BRIDGE_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=None, help="port to listen on (default: $PORT or 8000)")
    serve.add_argument("--forwarded-allow-ips", default=None, metavar="IPS",
                       help="comma-separated addresses/networks of the proxies whose X-Forwarded-Proto/-For are "
                       "believed (uvicorn's; default $FORWARDED_ALLOW_IPS, else 127.0.0.1,::1; '*' trusts every peer)")
    serve.add_argument("--limit-concurrency", type=int, default=None, metavar="N",
                       help="open connections at most (calls' WebSockets included): beyond, 503 and close "
                       "(default 4 x VOICE_BRIDGE_MAX_CALLS + 100)")
    serve.add_argument("--header-timeout", type=float, default=10.0, metavar="S",
                       help="seconds a request's line and headers may take to arrive before 408 and close (default 10)")
    serve.set_defaults(func=cmd_serve)


def _add_agent(sub: argparse._SubParsersAction) -> None:
    agent = sub.add_parser("agent", help="run the local Realtime agent on its own")
    agent.add_argument("--host", default="127.0.0.1")
    agent.add_argument("--port", type=_port, default=9000)
    agent.add_argument("--clips", default=os.environ.get("VOICE_BRIDGE_AGENT_CLIPS"), help="folder with clips.json")
    agent.add_argument("--pace", type=_positive, default=4.0, help="how many times faster than real time it streams audio")
    agent.add_argument("--answer-delay-ms", type=_delay_ms, default=0.0, metavar="MS",
                       help="start each answer this late (not the greeting): a slow model, to show the bridge's filler")
    agent.set_defaults(func=cmd_agent)


def _add_call(sub: argparse._SubParsersAction) -> None:
    call = sub.add_parser("call", help="place a simulated Twilio call against a running bridge")
    call.add_argument("--url", default="http://127.0.0.1:8000", help="the bridge's base URL (it posts to URL/voice)")
    call.add_argument("--to", default="+15550100000")
    call.add_argument("--from", dest="from_", default="+15550199999")
    call.add_argument("--auth-token", help="sign requests with this Twilio auth token (default: $TWILIO_AUTH_TOKEN)")
    _add_call_options(call)
    call.set_defaults(func=cmd_call)


def _add_twilio(sub: argparse._SubParsersAction) -> None:
    twilio = sub.add_parser("twilio", help="point a Twilio number at this service, or check that it does")
    twilio_sub = twilio.add_subparsers(dest="twilio_command", required=True)
    for name, text in (("configure", "set the number's voice webhook and status callback"), ("check", "say whether the number points here")):
        command = twilio_sub.add_parser(name, help=text)
        command.add_argument("--number", required=True, help="the Twilio number, E.164 (+15551234567)")
        command.add_argument("--url", required=True, help="this service's public base URL, https://host")
    twilio.set_defaults(func=cmd_twilio)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="a whole simulated call against an in-process bridge and local agent")
    demo.add_argument("--audio", choices=("pcm24k", "g711"), default="pcm24k")
    demo.add_argument("--answer-delay-ms", type=_delay_ms, default=0.0, metavar="MS",
                      help="the local agent starts each answer this late: past 1500 ms the caller hears the filler "
                      "(raise --hangup-after above the delay)")
    demo.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error", "critical"))
    demo.add_argument("--inspect", metavar="FILE", help="record the call and write its inspector page (HTML) to FILE")
    _add_call_options(demo)
    demo.set_defaults(func=cmd_demo)


def _add_replay(sub: argparse._SubParsersAction) -> None:
    replay = sub.add_parser("replay", help="replay recorded calls against the current code and compare")
    replay.add_argument("calls", nargs="+", metavar="DIR",
                        help="a recorded call's folder (events.jsonl, meta.json, WAVs), or a folder of them")
    replay.add_argument("--speed", type=float, default=1.0, help="run the call this many times faster than recorded")
    replay.add_argument("--max-drift-ms", type=float, default=40.0,
                        help="largest allowed change of a truncate's audio_end_ms (default 40)")
    replay.add_argument("--min-snr-db", type=float, default=20.0,
                        help="lowest allowed SNR of the audio the caller heard against the recording (default 20)")
    replay.add_argument("--max-event-diffs", type=int, default=0, help="missing or extra events allowed (default 0)")
    replay.add_argument("--max-field-diffs", type=int, default=0,
                        help="differing fields of matching events allowed, after normalising ids and the like (default 0)")
    replay.add_argument("--max-caller-audio-diff-ms", type=float, default=200.0,
                        help="allowed difference of the caller audio sent on to the model, per session (default 200)")
    replay.add_argument("--keep", metavar="DIR", help="keep each replay's own recording in DIR/<call>/")
    replay.add_argument("--json", action="store_true", help="print the comparison as JSON")
    replay.add_argument("--log-level", default="warning")
    replay.set_defaults(func=cmd_replay)


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    inspect = sub.add_parser("inspect", help="write one self-contained HTML page showing a recorded call")
    inspect.add_argument("call", metavar="CALL_DIR", help="a recorded call's folder (events.jsonl, meta.json, WAVs)")
    inspect.add_argument("-o", "--output", metavar="FILE", help="the page to write (default: ./<folder name>.html)")
    inspect.add_argument("--no-audio", action="store_true",
                         help="leave the playable audio out (waveforms stay): about 40 KB instead of 1.3 MB per call-minute")
    inspect.set_defaults(func=cmd_inspect)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "say") and args.say is None:
        from .package_data import CALLER_QUESTION, data_path

        try:
            args.say = [str(data_path(CALLER_QUESTION))]
        except ConfigError as exc:
            # Never a call without the caller's question: it would "succeed" with nobody speaking.
            print(f"voice-bridge {args.command}: the caller's question cannot be found: {exc}", file=sys.stderr)
            return 2
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
