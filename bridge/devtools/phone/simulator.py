"""Places one simulated call: the webhook, then the media stream, in real (or scaled) time.

Faithful to Twilio where the bridge can tell: form fields and signatures on `POST /voice`, a
signed WebSocket upgrade, `connected`/`start`/`media`/`stop` with string counters, outbound
audio played at 8 kHz, marks echoed only once their audio has played, and every pending mark
echoed at once on `clear`. With a `NetworkProfile` it also puts a network between itself and
the bridge (`bridge.devtools.phone.network`): one-way delay and jitter each way, in order, with stalls that
release messages in bursts, and Twilio's playout start delay for audio arriving into an empty
buffer. "Heard" is then what played until the `clear` reached the phone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import secrets
import time
import urllib.parse
import urllib.request
import wave
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import websockets
from websockets.asyncio.client import ClientConnection, connect

from twiml.signatures import SIGNATURE_HEADER, TwilioSigner
from voice_codecs import ulaw_decode

from ... import media_streams as ms
from ...recording_format import open_private
from .caller import FRAME_MS, Caller, CallerPlan, CallerState
from .network import DelayLine, NetworkProfile
from .playout import PlayoutBuffer

DRAIN_GRACE_S = 2.0  # after hanging up, how long the phone waits for its last messages to cross the network
# Agent audio the caller must hear after finishing an utterance (before saying the next one or
# hanging up) for it to count as answered: more than the tail of a response cut by a barge-in.
ANSWER_MIN_S = 0.2


class SimulatorError(RuntimeError):
    """The bridge did not behave like a Twilio peer expects (bad TwiML, refused stream, ...)."""


@dataclass(slots=True)
class CallReport:
    call_sid: str
    stream_sid: str
    agent_audio_s: float = 0.0  # agent audio the caller heard
    first_agent_audio_s: float | None = None  # from stream start to the first agent audio
    marks_echoed: int = 0
    clears: int = 0
    ended_by: str = ""  # "caller", "bridge", or "webhook" (no stream was offered)
    webhook_verbs: list[str] = field(default_factory=list)  # the TwiML verbs of /voice
    after_stream_verbs: list[str] = field(default_factory=list)  # what Twilio ran after the stream
    dialed: str | None = None
    close_code: int | None = None
    call_s: float = 0.0
    # At each clear: (call time in s, samples of the interrupted playback the caller had heard).
    clear_log: list[tuple[float, int]] = field(default_factory=list)
    caller_audio: bytearray = field(default_factory=bytearray, repr=False)  # μ-law, one frame per tick
    agent_audio: bytearray = field(default_factory=bytearray, repr=False)  # μ-law as played
    utterances_said: int = 0  # caller utterances said to their end
    answers_heard: int = 0  # of those, how many the caller heard the agent answer (ANSWER_MIN_S or more)
    # Agent audio heard since the caller's last utterance ended; None while the caller speaks or before.
    heard_since_utterance_s: float | None = field(default=None, repr=False)

    def note_tick(self, before: CallerState, after: CallerState, agent_heard_s: float) -> None:
        """Account one 20 ms tick: the caller's state around it, and the agent audio heard in it (pure)."""
        if self.heard_since_utterance_s is not None:
            enough = ANSWER_MIN_S - 1e-9  # sums of 20 ms steps in float
            answered = self.heard_since_utterance_s >= enough
            self.heard_since_utterance_s += agent_heard_s
            if not answered and self.heard_since_utterance_s >= enough:
                self.answers_heard += 1
        if before is CallerState.SPEAKING and after is CallerState.LISTENING:
            self.utterances_said += 1
            self.heard_since_utterance_s = 0.0
        elif after is CallerState.SPEAKING and before is not CallerState.SPEAKING:
            self.heard_since_utterance_s = None  # the next utterance begins: the last one's answer window is over

    def summary(self) -> str:
        first = f"{self.first_agent_audio_s:.2f} s" if self.first_agent_audio_s is not None else "never"
        return "\n".join(
            [
                f"call {self.call_sid} (stream {self.stream_sid})",
                f"  call length              {self.call_s:.2f} s, ended by the {self.ended_by}",
                f"  agent audio heard        {self.agent_audio_s:.2f} s",
                f"  first agent audio after  {first}",
                f"  marks echoed             {self.marks_echoed}",
                f"  clears received          {self.clears}",
                f"  TwiML after the stream   {' '.join(self.after_stream_verbs) or '-'}",
                f"  caller utterances        {self.utterances_said} said, {self.answers_heard} answered",
            ]
        )

    def write_wav(self, path: Path) -> None:
        """Two channels at 8 kHz: left the caller, right the agent as heard; a private file (0600),
        as the bridge's recordings are: it holds a call's voices."""
        caller = ulaw_decode(bytes(self.caller_audio))
        agent = ulaw_decode(bytes(self.agent_audio))
        n = max(len(caller), len(agent))
        stereo = np.zeros((n, 2), dtype="<i2")
        stereo[: len(caller), 0] = caller
        stereo[: len(agent), 1] = agent
        with open_private(path, "wb") as file, wave.open(file, "wb") as wav:
            wav.setnchannels(2)
            wav.setsampwidth(2)
            wav.setframerate(8000)
            wav.writeframes(stereo.tobytes())


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _post_form(url: str, form: dict[str, str], headers: dict[str, str]) -> str:
    data = urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return response.read().decode()
    except urllib.error.HTTPError as exc:
        raise SimulatorError(f"POST {url} answered HTTP {exc.code}: {exc.read().decode(errors='replace')}") from None


def _twiml_root(twiml: str) -> ET.Element:
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError as exc:
        raise SimulatorError(f"the webhook answered something that is not TwiML: {exc}") from None
    if root.tag != "Response":
        raise SimulatorError(f"TwiML must be a <Response>, not <{root.tag}>")
    return root


def twiml_verbs(twiml: str) -> list[str]:
    return [child.tag for child in _twiml_root(twiml)]


def parse_stream_twiml(twiml: str) -> tuple[str, dict[str, str]]:
    """The `<Connect><Stream url>` and its `<Parameter>`s, as Twilio reads them."""
    stream = _twiml_root(twiml).find("./Connect/Stream")
    if stream is None or not stream.get("url"):
        raise SimulatorError("the TwiML has no <Connect><Stream url=...>")
    params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return stream.get("url", ""), params


def redirect_after_stream(twiml: str) -> str | None:
    """The `<Redirect>` Twilio follows when the stream's socket closes, if any."""
    redirect = _twiml_root(twiml).find("./Redirect")
    return (redirect.text or "").strip() if redirect is not None else None


class CallerScript(Protocol):
    """What the phone asks its caller every 20 ms: `Caller` (follows a plan), `RecordedCaller` (a recording)."""

    state: CallerState

    def tick(self, agent_audible: bool) -> bytes: ...

    def keys_due(self) -> list[str]: ...


class _Link:
    """One direction of the simulated network: a `DelayLine` and the task that delivers from it on time."""

    def __init__(self, line: DelayLine[Any], deliver: Callable[[Any], Awaitable[None]]) -> None:
        self.line = line
        self.deliver = deliver
        self._wake = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()

    def put(self, message: Any) -> None:
        self.line.send(message, time.monotonic())
        self._empty.clear()
        self._wake.set()

    async def drained(self) -> None:
        await self._empty.wait()

    async def run(self) -> None:
        while True:
            at = self.line.next_due()
            if at is None:
                self._empty.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            # In order: nothing put on the line later can be due before its head.
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            for message in self.line.due(time.monotonic()):
                await self.deliver(message)


class _Phone:
    """The media-stream half of a call: one tick loop (send caller audio, play agent audio)."""

    def __init__(
        self,
        ws: ClientConnection,
        report: CallReport,
        caller: CallerScript,
        account_sid: str,
        speed: float,
        step_ms: int,
        network: NetworkProfile | None = None,
    ):
        self.ws = ws
        self.report = report
        self.caller = caller
        self.account_sid = account_sid
        self.speed = speed
        self.step_ms = step_ms
        self.network = network or NetworkProfile()
        self.playout = PlayoutBuffer(playout_delay_samples=int(self.network.playout_delay_ms * 8))
        # The lines run on the wall clock: a phone `speed` times faster has a network as much faster.
        wall = dataclasses.replace(
            self.network,
            delay_ms=self.network.delay_ms / speed,
            jitter_ms=self.network.jitter_ms / speed,
            burst_ms=self.network.burst_ms / speed,
            burst_every_s=self.network.burst_every_s / speed,
        )
        up, down = random.Random(self.network.seed), random.Random(self.network.seed + 1)
        self._uplink: _Link | None = None if self.network.is_direct else _Link(DelayLine(wall, up), ws.send)
        self._downlink_line: DelayLine[str | None] | None = None if self.network.is_direct else DelayLine(wall, down)
        self._uplink_task: asyncio.Task[None] | None = None
        self._sequence = 0
        self._last_step_at = time.monotonic()
        self._last_step_real = 0
        # Marks reached in the step now playing: echoed when the step is over, as Twilio echoes a
        # mark only once the audio before it has been heard (never before; the network adds more).
        self._step_marks: list[str] = []

    def next_sequence(self) -> int:
        self._sequence += 1
        return self._sequence

    async def _send(self, text: str) -> None:
        """To the bridge: at once, or onto the uplink's delay line."""
        if self._uplink is None:
            await self.ws.send(text)
            return
        if self._uplink_task is None:
            self._uplink_task = asyncio.create_task(self._uplink.run(), name="phone_uplink")
        self._uplink.put(text)

    async def _echo(self, names: list[str]) -> None:
        for name in names:
            await self._send(ms.mark_echo_message(self.report.stream_sid, name, self.next_sequence()))
            self.report.marks_echoed += 1

    async def receive(self) -> None:
        """What the bridge sends, once it has crossed the network (if there is one)."""
        if self._downlink_line is None:
            async for raw in self.ws:
                await self._on_message(raw)
            return
        inbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        downlink = _Link(self._downlink_line, inbox.put)

        async def read() -> None:
            try:
                async for raw in self.ws:
                    downlink.put(raw)  # type: ignore[arg-type]
            finally:
                downlink.put(None)  # the close crosses the network too

        reader = asyncio.create_task(read(), name="phone_read")
        pump = asyncio.create_task(downlink.run(), name="phone_downlink")
        try:
            while (raw := await inbox.get()) is not None:
                await self._on_message(raw)
        finally:
            for task in (reader, pump):
                task.cancel()
            results = await asyncio.gather(reader, pump, return_exceptions=True)
        if isinstance(results[0], Exception) and not isinstance(results[0], websockets.ConnectionClosed):
            raise results[0]

    async def _on_message(self, raw: str | bytes) -> None:
        """Media into the buffer, marks behind it, clear empties it."""
        if isinstance(raw, bytes):
            raise SimulatorError("the bridge sent a binary frame; Twilio accepts text only")
        event = ms.parse_outbound_message(raw, self.report.stream_sid)
        if isinstance(event, ms.OutboundMedia):
            self.playout.add_media(event.payload)
        elif isinstance(event, ms.OutboundMark):
            reached = self.playout.add_mark(event.name)
            if reached and (self._step_marks or self._last_step_real):
                self._step_marks += reached  # behind audio of the step still playing
            else:
                await self._echo(reached)
        else:
            self.report.clears += 1
            # The phone plays continuously: of the current step, only the part whose time has come.
            into_step = int((time.monotonic() - self._last_step_at) * 8000 * self.speed)
            into_real = max(0, into_step - self.playout.last_step_delay)
            # (0 when this segment began after that step: the step's audio was of the one before.)
            heard = max(0, self.playout.segment_played_samples - self._last_step_real + min(into_real, self._last_step_real))
            self.report.clear_log.append((self.report.call_s, heard))
            marks, self._step_marks = self._step_marks + self.playout.clear(), []
            await self._echo(marks)

    async def talk(self) -> None:
        """Play the agent in small steps and send the caller every 20 ms (divided by `speed`), until hangup."""
        step_bytes = 8 * self.step_ms  # 8 kHz μ-law: 8 samples a millisecond
        steps_per_frame = FRAME_MS // self.step_ms
        interval = self.step_ms / 1000.0 / self.speed
        started = time.monotonic()
        step = 0
        heard_in_frame = 0
        while self.caller.state is not CallerState.HUNG_UP:
            marks, self._step_marks = self._step_marks, []
            await self._echo(marks)  # the previous step has played
            self._last_step_at = time.monotonic()
            agent, real, self._step_marks = self.playout.play(step_bytes)
            self._last_step_real = real
            self.report.agent_audio += agent
            if real and self.report.first_agent_audio_s is None:
                self.report.first_agent_audio_s = step * self.step_ms / 1000.0
            self.report.agent_audio_s += real / 8000.0
            heard_in_frame += real
            step += 1
            if step % steps_per_frame == 0:
                before = self.caller.state
                frame = self.caller.tick(agent_audible=heard_in_frame > 0)
                self.report.note_tick(before, self.caller.state, heard_in_frame / 8000.0)
                heard_in_frame = 0
                self.report.caller_audio += frame
                tick = step // steps_per_frame - 1
                message = ms.inbound_media_message(
                    self.report.stream_sid, frame, chunk=tick + 1, timestamp_ms=tick * FRAME_MS, sequence=self.next_sequence()
                )
                await self._send(message)
                for digit in self.caller.keys_due():
                    await self._send(ms.dtmf_message(self.report.stream_sid, digit, self.next_sequence()))
            self.report.call_s = step * self.step_ms / 1000.0
            if self._uplink_task is not None and self._uplink_task.done():
                self._uplink_task.result()  # the socket failed under the uplink: end the call the same way
            await asyncio.sleep(max(0.0, started + step * interval - time.monotonic()))
        await self._send(ms.stop_message(self.report.stream_sid, self.report.call_sid, self.account_sid, self.next_sequence()))
        if self._uplink is not None and self._uplink_task is not None:
            try:
                async with asyncio.timeout(DRAIN_GRACE_S + self.network.delay_ms / 1000 * 4):
                    await self._uplink.drained()
            finally:
                await self.close_network()

    async def close_network(self) -> None:
        if self._uplink_task is not None:
            self._uplink_task.cancel()
            await asyncio.gather(self._uplink_task, return_exceptions=True)


async def place_call(
    url: str = "http://127.0.0.1:8000",
    plan: CallerPlan | None = None,
    auth_token: str | None = None,
    to: str = "+15550100000",
    from_: str = "+15550199999",
    speed: float = 1.0,
    playout_step_ms: int = 5,
    caller: CallerScript | None = None,
    on_start: Callable[[], None] | None = None,
    network: NetworkProfile | None = None,
) -> CallReport:
    """Call the bridge at `url` like Twilio would and return what the caller experienced.

    The phone plays the agent in `playout_step_ms` steps (5 ms: marks echo within 5 ms of the
    moment their audio has played; 20 ms is cheaper for load tests) and sends 20 ms frames.
    `caller` replaces the caller that follows `plan` (a replay plays a recorded one); `on_start`
    is called the moment the stream's `start` has been sent (a replay's upstream keeps time by it).
    `network` puts a simulated network between the phone and the bridge for the media stream,
    from its `connected` on (the webhook is not delayed).
    """
    if playout_step_ms not in (1, 2, 4, 5, 10, 20):
        raise ValueError("playout_step_ms must divide 20 ms")
    plan = plan or CallerPlan()
    signer = TwilioSigner(auth_token) if auth_token else None
    call_sid, account_sid = _sid("CA"), _sid("AC")
    webhook = url.rstrip("/") + "/voice"
    form = {
        "CallSid": call_sid,
        "AccountSid": account_sid,
        "From": from_,
        "To": to,
        "Direction": "inbound",
        "CallStatus": "ringing",
        "ApiVersion": "2010-04-01",
    }
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signer:
        headers[SIGNATURE_HEADER] = signer.sign(webhook, form)
    twiml = await asyncio.to_thread(_post_form, webhook, form, headers)
    report = CallReport(call_sid=call_sid, stream_sid=_sid("MZ"), webhook_verbs=twiml_verbs(twiml))
    if "Connect" not in report.webhook_verbs:
        report.ended_by = "webhook"
        return report
    stream_url, parameters = parse_stream_twiml(twiml)
    upgrade_headers = {SIGNATURE_HEADER: signer.sign(stream_url, {})} if signer else {}
    try:
        ws = await connect(stream_url, additional_headers=upgrade_headers, proxy=None, compression=None, open_timeout=10)
    except websockets.InvalidStatus as exc:
        raise SimulatorError(f"the bridge refused the media stream: HTTP {exc.response.status_code}") from None
    async with ws:
        phone = _Phone(ws, report, caller or Caller(plan), account_sid, speed, playout_step_ms, network)
        await _stream(phone, report, call_sid, account_sid, parameters, on_start)
    report.close_code = ws.close_code
    after = redirect_after_stream(twiml)
    if report.ended_by == "bridge" and after:
        await _after_stream(report, after, {**form, "CallStatus": "in-progress"}, headers, signer)
    return report


async def _after_stream(
    report: CallReport, after: str, form: dict[str, str], headers: dict[str, str], signer: TwilioSigner | None
) -> None:
    """The caller is still on the line: Twilio goes on with the verbs after </Connect>."""
    if signer:
        headers[SIGNATURE_HEADER] = signer.sign(after, form)
    next_twiml = await asyncio.to_thread(_post_form, after, form, headers)
    report.after_stream_verbs = twiml_verbs(next_twiml)
    dial = _twiml_root(next_twiml).find("./Dial")
    report.dialed = (dial.text or "").strip() if dial is not None else None


async def _stream(
    phone: _Phone,
    report: CallReport,
    call_sid: str,
    account_sid: str,
    parameters: dict[str, str],
    on_start: Callable[[], None] | None,
) -> None:
    """The media stream, from `connected` until the caller hangs up or the bridge closes it."""
    await phone._send(ms.connected_message())
    await phone._send(ms.start_message(report.stream_sid, call_sid, account_sid, parameters, phone.next_sequence()))
    if on_start is not None:
        on_start()
    receiving = asyncio.create_task(phone.receive(), name="phone_receive")
    talking = asyncio.create_task(phone.talk(), name="phone_talk")
    try:
        done, _ = await asyncio.wait({receiving, talking}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (receiving, talking):
            task.cancel()
        results = await asyncio.gather(receiving, talking, return_exceptions=True)
        await phone.close_network()
    caller_hung_up = talking in done and not talking.cancelled() and talking.exception() is None
    report.ended_by = "caller" if caller_hung_up else "bridge"
    for result in results:
        if isinstance(result, SimulatorError | ms.ProtocolError):
            raise result
    for task in done:
        if task.exception() is not None and not isinstance(task.exception(), websockets.ConnectionClosed):
            raise task.exception()  # type: ignore[misc]
