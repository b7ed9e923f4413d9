"""No dead air (issue 16), end to end over loopback: the real app, the phone simulator (a silent
caller), and a scripted model that is slow to start, slow in a tool, or never answers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from conftest import AUDIO, AUTH_TOKEN, capture_logs, metrics_text, read_wav, run, running_bridge
from scripted_upstream import ScriptedSession, ScriptedUpstream

from bridge.call.ending import GOODBYE_INSTRUCTIONS
from bridge.devtools.phone import place_call
from bridge.devtools.phone.caller import CallerPlan
from bridge.filler import default_filler_path, render_filler
from bridge.profiles import REPROMPT_INSTRUCTIONS
from bridge.services import prepare_services
from bridge.settings import ConfigError, Settings
from bridge.tools import Tool, default_registry

GREETING, _ = read_wav(AUDIO / "agent_greeting.wav")
ANSWER = GREETING[:24000].tobytes()  # 1 s of speech
FILLER = render_filler(str(default_filler_path()))
SILENT_PHONE = CallerPlan(hangup_after_s=60, max_call_s=30)


def _silent_phone_call(script: Any, **settings: Any) -> Any:
    """A phone that never speaks, against `script` as the model, with these settings: the
    upstream, the phone's report, the call's log events and the metrics text."""

    async def scenario() -> Any:
        async with ScriptedUpstream(script) as upstream:
            async with running_bridge(upstream_url=upstream.url, **settings) as (url, _):
                with capture_logs() as logs:
                    report = await place_call(url, SILENT_PHONE, auth_token=AUTH_TOKEN)
                text = await metrics_text(url)
        return upstream, report, logs, text

    return run(scenario(), timeout=60)


async def _open(session: ScriptedSession) -> None:
    await session.send("session.created", session={})
    await session.expect("session.update")
    await session.expect("response.create")
    await session.speak("resp_greet", "item_greet", ANSWER)


async def _caller_turn(session: ScriptedSession) -> None:
    """The model's VAD hears a turn and its end (the phone itself stays silent)."""
    await session.send("input_audio_buffer.speech_started", audio_start_ms=0, item_id="item_user")
    await session.send("input_audio_buffer.speech_stopped", audio_end_ms=500, item_id="item_user")


def _first_audio_at(agent: bytes, start: int) -> int | None:
    """The first byte from `start` on that is not μ-law silence (0xFF / 0x7F), in 8 kHz samples."""
    for i in range(start, len(agent)):
        if agent[i] not in (0xFF, 0x7F):
            return i
    return None


def test_a_slow_model_gets_the_filler_after_the_budget_and_before_the_answer_never_overlapping() -> None:
    turn_ended = asyncio.Event()

    async def script(session: ScriptedSession) -> None:
        await _open(session)
        await asyncio.sleep(1.5)  # the greeting is heard
        await _caller_turn(session)
        turn_ended.set()
        await asyncio.sleep(2.5)  # a model slow to start
        await session.speak("resp_answer", "item_answer", ANSWER)
        await session.drain()

    async def scenario() -> Any:
        async with ScriptedUpstream(script) as upstream:
            async with running_bridge(upstream_url=upstream.url, filler_after_ms=1000, turn_timeout_s=8) as (url, _):
                with capture_logs() as logs:
                    call = asyncio.ensure_future(place_call(url, CallerPlan(hangup_after_s=2.0, max_call_s=20), auth_token=AUTH_TOKEN))
                    report = await call
                text = await metrics_text(url)
        return report, logs, text

    report, logs, text = run(scenario(), timeout=60)
    agent = bytes(report.agent_audio)
    at = agent.find(FILLER)
    # The filler was played whole and byte for byte: nothing was mixed into it, nothing cut it.
    assert at > 0, report.summary()
    answer_at = _first_audio_at(agent, at + len(FILLER))
    assert answer_at is not None and answer_at >= at + len(FILLER)
    filler = [e for e in logs if e["event"] == "turn.filler"]
    assert [e["reason"] for e in filler] == ["slow_model"]
    (turn,) = [e for e in logs if e["event"] == "turn.timeline"]
    assert turn["filler"] is True and 1000 <= turn["filler_ms"] < 1400 and turn["heard_ms"] > turn["filler_ms"]
    assert 'voice_bridge_fillers_total{reason="slow_model"} 1.0' in text
    assert 'voice_bridge_turn_watchdog_total{outcome="answered"}' in text


def test_a_model_that_never_answers_is_asked_again_once_then_the_caller_gets_the_apology() -> None:
    async def script(session: ScriptedSession) -> None:
        await _open(session)
        await asyncio.sleep(1.2)
        await _caller_turn(session)
        await session.drain()  # says nothing, ever

    upstream, report, logs, text = _silent_phone_call(script, filler_after_ms=500, turn_timeout_s=1)
    creates = [e for e in upstream.sessions[0].received if e["type"] == "response.create"]
    assert len(creates) == 2  # the greeting's, and the one retry
    assert report.ended_by == "bridge" and report.after_stream_verbs[0] == "Say", report.summary()
    assert 2.0 <= report.call_s < 6.0
    events = [e["event"] for e in logs if e["event"].startswith("turn.")]
    assert events == ["turn.filler", "turn.retry", "turn.gave_up"]
    assert 'voice_bridge_turn_watchdog_total{outcome="failed"} 1.0' in text
    assert 'voice_bridge_calls_total{outcome="upstream_failed"} 1.0' in text


async def _slow_lookup(args: dict[str, Any], call: Any) -> dict[str, Any]:
    await asyncio.sleep(2.0)
    return {"status": "shipped"}


def test_a_slow_tool_gets_the_filler_while_it_runs() -> None:
    tools = default_registry()
    tools.add(Tool("slow_lookup", "Takes two seconds.", {"type": "object"}, _slow_lookup, timeout_s=3.0))

    async def script(session: ScriptedSession) -> None:
        await _open(session)
        await asyncio.sleep(1.2)
        await _caller_turn(session)
        await session.send("response.created", response={"id": "resp_tool", "status": "in_progress"})
        item = {"id": "item_call", "type": "function_call", "call_id": "call_1", "name": "slow_lookup"}
        await session.send("response.output_item.added", response_id="resp_tool", output_index=0, item=item)
        await session.send(
            "response.function_call_arguments.done",
            response_id="resp_tool", item_id="item_call", output_index=0, call_id="call_1", name="slow_lookup", arguments="{}",
        )  # fmt: skip
        await session.send("response.done", response={"id": "resp_tool", "status": "completed"})
        await session.expect("conversation.item.create", timeout=10)
        await session.expect("response.create")
        await session.speak("resp_answer", "item_answer", ANSWER)
        await session.drain()

    async def scenario() -> Any:
        async with ScriptedUpstream(script) as upstream:
            async with running_bridge(
                upstream_url=upstream.url, tools=("slow_lookup",), tool_registry=tools, filler_after_ms=800, turn_timeout_s=5
            ) as (url, _):
                with capture_logs() as logs:
                    report = await place_call(url, CallerPlan(hangup_after_s=2.0, max_call_s=20), auth_token=AUTH_TOKEN)
                text = await metrics_text(url)
        return report, logs, text

    report, logs, text = run(scenario(), timeout=60)
    agent = bytes(report.agent_audio)
    at = agent.find(FILLER)
    assert at > 0, report.summary()
    assert _first_audio_at(agent, at + len(FILLER)) is not None  # the answer, after it
    assert [e["reason"] for e in logs if e["event"] == "turn.filler"] == ["slow_tool"]
    assert 'voice_bridge_fillers_total{reason="slow_tool"} 1.0' in text


def test_a_silent_caller_is_asked_twice_then_the_call_ends_as_caller_silent() -> None:
    async def script(session: ScriptedSession) -> None:
        await _open(session)
        for n in range(3):
            await session.expect("response.create", timeout=10)
            await session.speak(f"resp_{n}", f"item_{n}", ANSWER[:24000])  # half a second each
        await session.drain()

    upstream, report, logs, text = _silent_phone_call(script, reprompt_after_s=1, max_reprompts=2)
    creates = [e for e in upstream.sessions[0].received if e["type"] == "response.create"]
    asked = [e["response"]["instructions"] for e in creates[1:]]  # after the greeting's
    assert asked == [REPROMPT_INSTRUCTIONS, REPROMPT_INSTRUCTIONS, GOODBYE_INSTRUCTIONS]
    # greeting 1 s, then three times: 1 s of silence and half a second of speech; the last heard whole.
    assert report.ended_by == "bridge" and 5.0 <= report.call_s < 8.0, report.summary()
    assert report.agent_audio_s >= 1.0 + 3 * 0.5 - 0.1
    assert report.after_stream_verbs == ["Hangup"]
    assert [e["count"] for e in logs if e["event"] == "caller.reprompt"] == [1, 2]
    assert 'voice_bridge_reprompts_total 2.0' in text
    assert 'voice_bridge_calls_total{outcome="caller_silent"} 1.0' in text


# --- settings and profiles ------------------------------------------------------------------


def test_settings_budgets_from_the_environment() -> None:
    env = {"VOICE_BRIDGE_INSECURE_DEV": "1"}
    s = Settings.from_env(env)
    assert (s.filler_after_ms, s.turn_timeout_s, s.reprompt_after_s, s.max_reprompts) == (1500, 8, 10, 2)
    off = Settings.from_env({**env, "VOICE_BRIDGE_FILLER_AFTER_MS": "0", "VOICE_BRIDGE_TURN_TIMEOUT_S": "0", "VOICE_BRIDGE_REPROMPT_AFTER_S": "0"})
    assert (off.filler_after_ms, off.turn_timeout_s, off.reprompt_after_s) == (0, 0, 0)
    assert Settings().filler_after_ms == 0  # built in code: off
    with pytest.raises(ConfigError, match="VOICE_BRIDGE_FILLER_AFTER_MS=9000 must be shorter than VOICE_BRIDGE_TURN_TIMEOUT_S=8"):
        Settings.from_env({**env, "VOICE_BRIDGE_FILLER_AFTER_MS": "9000"})
    with pytest.raises(ConfigError, match="VOICE_BRIDGE_MAX_REPROMPTS"):
        Settings.from_env({**env, "VOICE_BRIDGE_MAX_REPROMPTS": "x"})


def _app(tmp_path: Path, body: str, **settings: Any) -> Any:
    path = tmp_path / "profiles.toml"
    path.write_text('[profiles.sales]\nnumbers = ["+15550100000"]\n' + body)
    slow = Tool("slow_lookup", "Slow.", {"type": "object"}, _slow_lookup, timeout_s=6.0)
    tools = default_registry()
    tools.add(slow)
    return prepare_services(Settings(insecure_dev=True, profiles_path=str(path), **settings), tools=tools)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('tools = ["slow_lookup"]\nturn_timeout_s = 5\n', "profile 'sales': tool 'slow_lookup' times out after 6 s, which must be shorter than turn_timeout_s=5 s"),
        ("filler_after_ms = 5000\nturn_timeout_s = 5\n", "profile 'sales': filler_after_ms=5000 must be shorter than turn_timeout_s=5 s"),
        ('filler_after_ms = 900\nfiller_clip = "/nonexistent.wav"\n', "profile 'sales': filler clip /nonexistent.wav: cannot be read as WAV"),
        ("max_reprompts = -1\n", "max_reprompts: must be at least 0"),
        ("reprompt_after_s = 1.5\n", "reprompt_after_s: must be a whole number"),
    ],
)
def test_profile_budgets_are_checked_at_start_in_one_line(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError) as failure:
        _app(tmp_path, body)
    assert message in str(failure.value) and "\n" not in str(failure.value)


def test_a_profile_with_budgets_and_its_own_clip_loads(tmp_path: Path) -> None:
    clip = AUDIO / "agent_goodbye.wav"
    body = f'tools = ["slow_lookup"]\nturn_timeout_s = 8\nfiller_after_ms = 700\nfiller_clip = "{clip}"\nreprompt_after_s = 0\n'
    plan = _app(tmp_path, body)
    profile = plan.profiles.for_number("+15550100000")
    assert (profile.filler_after_ms, profile.turn_timeout_s, profile.reprompt_after_s, profile.filler_clip) == (700, 8.0, 0.0, str(clip))
