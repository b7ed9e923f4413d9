"""The embedded local agent: its pure parts, and its wire behaviour over a real socket."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from conftest import AUDIO, run
from websockets.asyncio.client import connect

from bridge.devtools.agent import LocalAgent
from bridge.devtools.agent.clips import ClipLibrary
from bridge.devtools.agent.conversation import AgentConversation, RealtimeRequestError
from bridge.devtools.agent.vad import EnergyVad


def test_vad_finds_speech_between_silences() -> None:
    rate = 8000
    silence = np.zeros(rate, dtype=np.int16)
    tone = (3000 * np.sin(2 * np.pi * 300 * np.arange(rate) / rate)).astype(np.int16)
    vad = EnergyVad(sample_rate=rate)
    events = vad.feed(silence) + vad.feed(tone[:1234]) + vad.feed(tone[1234:]) + vad.feed(silence)
    assert [(e.started, e.at_ms) for e in events] == [(True, 1000), (False, 2000)]


def test_conversation_greets_once_then_answers_in_turn() -> None:
    clips = ClipLibrary.load(AUDIO)
    conversation = AgentConversation(clips)
    assert conversation.next_clip() is clips.greeting
    conversation.add_item("user")
    assert [conversation.next_clip() for _ in range(3)] == [clips.answers[0], clips.answers[1], clips.answers[0]]


@pytest.mark.parametrize(
    ("audio_end_ms", "code", "message"),
    [
        (1001, "invalid_value", "Audio content of 1000ms is already shorter than 1001ms"),
        (0, "invalid_value", "Invalid audio_end_ms: 0"),
        (-5, "invalid_value", "Invalid audio_end_ms: -5"),
        ("10", "invalid_value", "Invalid audio_end_ms"),
    ],
)
def test_truncate_enforces_the_real_services_rules(audio_end_ms: object, code: str, message: str) -> None:
    conversation = AgentConversation(ClipLibrary.load(AUDIO))
    item = conversation.add_item("assistant")
    item.audio_ms = 1000.0
    with pytest.raises(RealtimeRequestError) as info:
        conversation.truncate(item.id, 0, audio_end_ms)
    assert info.value.code == code and message in info.value.message
    assert conversation.truncate(item.id, 0, 1000).audio_ms == 1000.0
    assert conversation.truncate(item.id, 0, 400).audio_ms == 400.0


def test_truncate_refuses_unknown_and_user_items() -> None:
    conversation = AgentConversation(ClipLibrary.load(AUDIO))
    user = conversation.add_item("user")
    with pytest.raises(RealtimeRequestError, match="not found"):
        conversation.truncate("item_nope", 0, 10)
    with pytest.raises(RealtimeRequestError, match="Only model output audio"):
        conversation.truncate(user.id, 0, 10)


def test_agent_over_the_wire_greets_cancels_and_truncates() -> None:
    async def scenario() -> list[dict]:
        agent = LocalAgent(pace=1000.0)
        await agent.start()
        seen: list[dict] = []
        try:
            async with connect(agent.url, proxy=None) as ws:

                async def until(kind: str) -> dict:
                    while True:
                        event = json.loads(await ws.recv())
                        seen.append(event)
                        if event["type"] == kind:
                            return event

                await until("session.created")
                await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", "instructions": "hi"}}))
                await until("session.updated")
                await ws.send(json.dumps({"type": "response.create"}))
                done = await until("response.done")
                assert done["response"]["status"] == "completed"
                item_id = done["response"]["output"][0]["id"]
                audio = b"".join(base64.b64decode(e["delta"]) for e in seen if e["type"] == "response.output_audio.delta")
                audio_ms = len(audio) // 48
                await ws.send(json.dumps({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": audio_ms + 10}))
                error = await until("error")
                assert error["error"]["message"] == f"Audio content of {audio_ms}ms is already shorter than {audio_ms + 10}ms"
                await ws.send(json.dumps({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 1500}))
                assert (await until("conversation.item.truncated"))["audio_end_ms"] == 1500
                await ws.send(json.dumps({"type": "response.cancel"}))
                assert (await until("error"))["error"]["code"] == "response_cancel_not_active"
                await ws.send(json.dumps({"type": "no.such.event"}))
                assert (await until("error"))["error"]["param"] == "type"
                await ws.send("{not json")
                assert (await until("error"))["error"]["code"] == "invalid_json"
        finally:
            await agent.stop()
        return seen

    seen = run(scenario())
    kinds = [e["type"] for e in seen]
    for kind in ("response.created", "response.output_item.added", "response.output_audio.delta", "response.output_audio.done", "response.done"):
        assert kind in kinds


def test_agent_detects_speech_and_answers_it() -> None:
    async def scenario() -> list[str]:
        agent = LocalAgent(pace=1000.0)
        await agent.start()
        kinds: list[str] = []
        try:
            async with connect(agent.url, proxy=None) as ws:
                rate = 24000
                tone = (6000 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)).astype("<i2").tobytes()
                silence = bytes(rate * 2)
                for chunk in (silence, tone, silence):
                    await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()}))
                while "response.done" not in kinds:
                    kinds.append(json.loads(await ws.recv())["type"])
        finally:
            await agent.stop()
        return kinds

    kinds = run(scenario())
    order = [k for k in kinds if k in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped", "response.created", "response.done")]
    assert order == ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped", "response.created", "response.done"]
