"""Tools, call control, keypad and call limits, through the real bridge with a scripted upstream."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import AUDIO, AUTH_TOKEN, read_wav, run, running_bridge
from scripted_upstream import ScriptedSession, ScriptedUpstream
from twilio_api import FakeTwilioApi

from bridge.devtools.phone import place_call
from bridge.devtools.phone.caller import CallerPlan
from bridge.tools import Tool, ToolRegistry, default_registry

GREETING, _ = read_wav(AUDIO / "agent_greeting.wav")
GOODBYE, _ = read_wav(AUDIO / "agent_goodbye.wav")
ACCOUNT = "AC" + "b" * 32


class Actions:
    call_sid = "CA1"
    transfer_number: str | None = "+15550123456"

    def __init__(self) -> None:
        self.done: list[str] = []

    def hang_up_after_speaking(self) -> None:
        self.done.append("hang_up")

    def transfer_after_speaking(self, number: str) -> None:
        self.done.append(f"transfer {number}")


async def _slow(args: dict[str, Any], call: Any) -> dict[str, Any]:
    await asyncio.sleep(10)
    return {}


async def _broken(args: dict[str, Any], call: Any) -> dict[str, Any]:
    raise RuntimeError("database is down: password=hunter2")


async def _chatty(args: dict[str, Any], call: Any) -> dict[str, Any]:
    return {"text": "line\x00one\x1b[31m" + "x" * 10_000}


SLOW = Tool("slow_tool", "Never finishes in time.", {"type": "object"}, _slow, timeout_s=0.2)
BROKEN = Tool("broken_tool", "Always fails.", {"type": "object"}, _broken)
CHATTY = Tool("chatty_tool", "Returns too much.", {"type": "object"}, _chatty)


def registry() -> ToolRegistry:
    base = default_registry()
    for tool in (SLOW, BROKEN, CHATTY):
        base.add(tool)
    return base


# --- the registry, without sockets ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "arguments", "outcome", "text"),
    [
        ("lookup_order", '{"order_number": "CO-12345"}', "ok", '"status": "shipped"'),
        ("lookup_order", '{"order_number": "CO-99999"}', "ok", '"found": false'),
        ("lookup_order", '{"order_number": 12345}', "bad_arguments", "is not of type 'string'"),
        ("lookup_order", '{"order_number": "drop table"}', "bad_arguments", "does not match"),
        ("lookup_order", "{not json", "bad_arguments", "not valid JSON"),
        ("lookup_order", "{}", "bad_arguments", "'order_number' is a required property"),
        ("no_such_tool", "{}", "unknown_tool", "no tool named"),
        ("slow_tool", "{}", "timeout", "did not finish within 0.2 s"),
        ("broken_tool", "{}", "error", "failed (RuntimeError)"),
    ],
)
def test_every_tool_call_gets_an_answer(name: str, arguments: str, outcome: str, text: str) -> None:
    allowed = ("lookup_order", "slow_tool", "broken_tool")
    result = run(registry().run(name, arguments, Actions(), allowed=allowed))
    assert result.outcome == outcome and text in result.output
    assert "hunter2" not in result.output  # exception messages are not passed on
    json.loads(result.output)


def test_a_tool_not_enabled_for_the_call_is_unknown_to_it() -> None:
    result = run(registry().run("end_call", "{}", Actions(), allowed=("lookup_order",)))
    assert result.outcome == "unknown_tool"


def test_tool_results_are_untrusted_text_cleaned_and_capped() -> None:
    result = run(registry().run("chatty_tool", "{}", Actions(), allowed=("chatty_tool",)))
    assert "\x00" not in result.output and "\x1b" not in result.output
    assert len(result.output) <= 4000 and json.loads(result.output)["truncated"] is True


def test_registry_refuses_bad_schemas_and_duplicates() -> None:
    with pytest.raises(ValueError, match="invalid parameters schema"):
        ToolRegistry.of([Tool("bad", "x", {"type": "nonsense"}, _slow)])
    with pytest.raises(ValueError, match="twice"):
        ToolRegistry.of([SLOW, SLOW])


# --- through the bridge -------------------------------------------------------------------------


def _function_call(session: ScriptedSession, response_id: str, call_id: str, name: str, arguments: str) -> Any:
    async def send() -> None:
        await session.send("response.created", response={"id": response_id, "status": "in_progress"})
        item = {"id": f"item_{call_id}", "type": "function_call", "call_id": call_id, "name": name}
        await session.send("response.output_item.added", response_id=response_id, output_index=0, item=item)
        await session.send(
            "response.function_call_arguments.done",
            response_id=response_id, item_id=f"item_{call_id}", output_index=0, call_id=call_id, name=name, arguments=arguments,
        )
        await session.send("response.done", response={"id": response_id, "status": "completed"})

    return send()


async def _greet(session: ScriptedSession) -> None:
    await session.send("session.created", session={})
    await session.expect("session.update")
    await session.expect("response.create")
    await session.speak("resp_greet", "item_greet", GREETING[: 24000].tobytes())  # 1 s of greeting


def _outputs(session: ScriptedSession) -> list[dict[str, Any]]:
    return [e for e in session.received if e.get("type") == "conversation.item.create" and e["item"]["type"] == "function_call_output"]


@pytest.mark.parametrize(
    ("tool", "arguments", "expect_ok", "expect_text"),
    [
        ("lookup_order", '{"order_number": "CO-12345"}', True, "Thursday"),
        ("lookup_order", '{"order_number": 7}', False, "bad_arguments"),
        ("broken_tool", "{}", False, '"error"'),
        ("slow_tool", "{}", False, "timeout"),
    ],
)
def test_tool_calls_through_the_bridge(tool: str, arguments: str, expect_ok: bool, expect_text: str) -> None:
    async def script(session: ScriptedSession) -> None:
        await _greet(session)
        await _function_call(session, "resp_tool", "call_1", tool, arguments)
        await session.expect("conversation.item.create")  # the output, checked after the call
        await session.expect("response.create")  # the model is asked to go on after the output
        await session.speak("resp_answer", "item_answer", GREETING[:12000].tobytes())
        await session.drain()

    async def scenario() -> ScriptedUpstream:
        async with ScriptedUpstream(script) as upstream:
            tools = ("lookup_order", "broken_tool", "slow_tool")
            async with running_bridge(speed=2.0, upstream_url=upstream.url, tools=tools, tool_registry=registry()) as (url, app):
                report = await place_call(url, CallerPlan(hangup_after_s=1.0, max_call_s=20), auth_token=AUTH_TOKEN, speed=2.0)
        assert report.ended_by == "caller" and report.agent_audio_s > 1.4
        return upstream

    upstream = run(scenario(), timeout=60)
    (output,) = _outputs(upstream.sessions[0])
    assert output["item"]["call_id"] == "call_1"
    assert (json.loads(output["item"]["output"])["ok"]) is expect_ok
    assert expect_text in output["item"]["output"]


def _hangup_script(tool: str) -> Any:
    async def script(session: ScriptedSession) -> None:
        await _greet(session)
        await _function_call(session, "resp_tool", "call_9", tool, "{}")
        await session.expect("conversation.item.create")
        await session.expect("response.create")
        # The goodbye / handoff line: 2 s of speech the caller must hear in full.
        await session.speak("resp_bye", "item_bye", GOODBYE.tobytes())
        await session.drain()

    return script


@pytest.mark.parametrize("tool", ["end_call", "transfer_call"])
def test_end_call_and_transfer_wait_until_the_last_words_are_heard_then_use_twilio_rest(tool: str) -> None:
    with FakeTwilioApi(ACCOUNT) as api:

        async def scenario() -> Any:
            async with ScriptedUpstream(_hangup_script(tool)) as upstream:
                async with running_bridge(
                    upstream_url=upstream.url, tools=(tool,), transfer_number="+15550123456",
                    twilio_client=api.client(asynchronous=True),
                ) as (url, app):
                    report = await place_call(url, CallerPlan(hangup_after_s=30, max_call_s=30), auth_token=AUTH_TOKEN)
                    await app.state.bridge.call_control._client.http_client.close()
            return report

        report = run(scenario(), timeout=60)
        (request,) = api.requests
    heard_goodbye = len(GOODBYE) / 24000
    assert report.ended_by == "bridge" and report.agent_audio_s >= 1.0 + heard_goodbye - 0.05, report.summary()
    assert request.path.endswith(f"/Calls/{report.call_sid}.json")
    if tool == "end_call":
        assert request.form == {"Status": "completed"}
        assert report.after_stream_verbs == ["Hangup"]
    else:
        assert "<Dial>+15550123456</Dial>" in request.form["Twiml"] and "<Say>" not in request.form["Twiml"]


def test_transfer_without_twilio_credentials_dials_from_the_after_stream_twiml() -> None:
    async def scenario() -> Any:
        async with ScriptedUpstream(_hangup_script("transfer_call")) as upstream:
            async with running_bridge(speed=2.0, upstream_url=upstream.url, tools=("transfer_call",), transfer_number="+15550123456") as (url, _):
                return await place_call(url, CallerPlan(hangup_after_s=30, max_call_s=30), auth_token=AUTH_TOKEN, speed=2.0)

    report = run(scenario(), timeout=60)
    assert report.after_stream_verbs == ["Dial"] and report.dialed == "+15550123456"


@pytest.mark.parametrize(
    ("mode", "keys", "expected"),
    [
        ("off", (), []),
        ("forward", (), ["[The caller pressed 4 on the keypad]", "[The caller pressed 2 on the keypad]"]),
        ("collect", (("#",),), ["[The caller typed 42 on the keypad, ending with #]"]),
    ],
)
def test_keypad_digits_reach_the_model_per_mode(mode: str, keys: tuple, expected: list[str]) -> None:
    keypad = ((1.2, "4"), (1.4, "2")) + (((1.6, "#"),) if keys else ())

    async def script(session: ScriptedSession) -> None:
        await _greet(session)
        await session.drain()

    async def scenario() -> ScriptedUpstream:
        async with ScriptedUpstream(script) as upstream:
            async with running_bridge(speed=2.0, upstream_url=upstream.url, dtmf=mode) as (url, _):
                plan = CallerPlan(keypad=keypad, hangup_after_s=1.5, max_call_s=20)
                await place_call(url, plan, auth_token=AUTH_TOKEN, speed=2.0)
        return upstream

    upstream = run(scenario(), timeout=60)
    texts = [
        e["item"]["content"][0]["text"] for e in upstream.sessions[0].received
        if e.get("type") == "conversation.item.create" and e["item"].get("role") == "user"
    ]
    assert texts == expected


def test_max_call_duration_ends_with_a_spoken_goodbye(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles.toml"
    profiles.write_text('[profiles.short]\nnumbers = ["+15550100000"]\nmax_call_seconds = 3\n')

    async def scenario() -> Any:
        async with running_bridge(speed=2.0, profiles_path=str(profiles)) as (url, _):
            return await place_call(url, CallerPlan(hangup_after_s=30, max_call_s=30), auth_token=AUTH_TOKEN, speed=2.0, to="+15550100000")

    report = run(scenario(), timeout=60)
    assert report.ended_by == "bridge" and 3.0 <= report.call_s < 9.0, report.summary()
    # The local agent's goodbye clip was heard to the end before the stream closed.
    assert report.agent_audio_s >= 3.0 - 0.1 + len(GOODBYE) / 24000 - 0.5
    assert report.after_stream_verbs == ["Hangup"]
