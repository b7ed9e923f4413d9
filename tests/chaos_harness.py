"""The chaos suite's harness (issue 13): `voice-bridge serve` as a real process, and hostile peers.

Nothing here comes from the fixing side. What it provides:

- `ServeProcess`: the installed console script started with a given environment (signatures on,
  JSON logs into a file), waited for on `/healthz`; its `/metrics`, open file descriptors,
  threads and RSS read from outside (`/proc/<pid>`), its log lines parsed.
- `Lab`: an asyncio loop in a background thread. The scripted model, the healthy calls and the
  hostile peers live there, so a synchronous (hypothesis) test can drive them case by case while
  the healthy call keeps running.
- `ChaosUpstream`: a scripted GA Realtime server (a script on bridge/devtools/fake_realtime.py). What each session does is chosen by the call's
  profile: the bridge sends the profile's instructions in `session.update`, and each test number
  (`To`) maps to `chaos-mode:<mode>` (see `PROFILES`). Modes: quiet, talker (audio forever, paced
  at real time), fuzz (talk, inject the queued hostile frames, talk on), huge (one 9 MiB delta),
  errors (1500 distinct error codes), stall (stops reading after session.update).
- `TwilioPeer` helpers: signed `POST /voice`, the TwiML's Stream URL and parameters, a signed
  WebSocket upgrade either through `websockets` (well-behaved calls) or through `RawWebSocket`, a
  hand-written client that can send anything (binary frames, invalid UTF-8, a stop without
  reading) and can stop reading with a tiny receive buffer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection

from bridge import media_streams as ms
from bridge.devtools.fake_realtime import FakeRealtime, FakeSession
from bridge.devtools.phone.simulator import SimulatorError, parse_stream_twiml
from twiml.signatures import TwilioSigner

BIN = Path(sys.executable).parent / "voice-bridge"
AUTH_TOKEN = "chaos-auth-token-5f1d0c9a7b3e2d41"
UPSTREAM_SECRET = "chaosUpstreamKey7f3a91c2d4e6b8"  # put in VOICE_BRIDGE_UPSTREAM_URL's query: never logged
ACCOUNT_SID = "AC" + "0" * 32

# Called numbers → the scripted model's behaviour for that call.
NUMBERS = {
    "quiet": "+15557000001",
    "talker": "+15557000002",
    "fuzz": "+15557000003",
    "huge": "+15557000004",
    "errors": "+15557000005",
    "stall": "+15557000006",
}
OTHER_NUMBER = "+15557009999"  # no profile: the default instructions, which the model treats as quiet

PCM_RATE = 24000
DELTA_MS = 100
DELTA_BYTES = PCM_RATE * 2 * DELTA_MS // 1000  # 4800 bytes of PCM16 per 100 ms
FORBIDDEN_LOG = ("Traceback", "call.crashed", "call.failed")


def profiles_toml() -> str:
    blocks = []
    for mode, number in NUMBERS.items():
        blocks.append(f'[profiles.{mode}]\nnumbers = ["{number}"]\ninstructions = "chaos-mode:{mode}"\n')
    return "\n".join(blocks)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tone_pcm(ms_: int, freq: float = 440.0) -> bytes:
    n = PCM_RATE * ms_ // 1000
    return b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * freq * i / PCM_RATE))) for i in range(n))


TONE_DELTA = base64.b64encode(tone_pcm(DELTA_MS)).decode()


# --- the server process --------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICE_BRIDGE_", "TWILIO_", "AZURE_", "OPENAI_"))}
    env.pop("PORT", None)
    env.pop("FORWARDED_ALLOW_IPS", None)
    env.update(extra)
    return env


class ServeProcess:
    """`voice-bridge serve` in its own process, logs (JSON) to a file."""

    def __init__(self, workdir: Path, env: dict[str, str], name: str = "serve") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"{name}.log"
        self._log_file = self.log_path.open("wb")
        full = clean_env(TWILIO_AUTH_TOKEN=AUTH_TOKEN, VOICE_BRIDGE_LOG_FORMAT="json", **env)
        self.env = full
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "--port", str(self.port)], env=full, stdout=self._log_file, stderr=subprocess.STDOUT
        )
        self.pid = self.proc.pid

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited {self.proc.returncode}: {self.log_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"serve not healthy within {timeout} s: {self.log_text()[-2000:]}")

    def healthy(self, timeout: float = 3.0) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, timeout: float = 25.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log_file.close()
        return self.proc.returncode

    # --- what can be read from outside ---

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        with self.log_path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def events_since(self, offset: int = 0) -> list[dict[str, Any]]:
        events = []
        for line in self.log_since(offset).splitlines():
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if isinstance(obj, dict):
                    events.append(obj)
        return events

    def forbidden_since(self, offset: int = 0) -> list[str]:
        """Log lines that show an exception reaching the session or the server."""
        return [line for line in self.log_since(offset).splitlines() if any(word in line for word in FORBIDDEN_LOG)]

    def metrics_text(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=5.0).text

    def metric(self, name: str, labels: str = "") -> float:
        return metric_value(self.metrics_text(), name, labels)

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def sockets(self) -> int:
        count = 0
        for fd in os.listdir(f"/proc/{self.pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{self.pid}/fd/{fd}").startswith("socket:"):
                    count += 1
        return count

    def connections_to(self, port: int) -> int:
        """TCP connections of this process whose remote port is `port` (the model's sockets), any state."""
        inodes = set()
        for fd in os.listdir(f"/proc/{self.pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{self.pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        count = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError):
                for line in Path(table).read_text().splitlines()[1:]:
                    cols = line.split()
                    if int(cols[2].rsplit(":", 1)[1], 16) == port and cols[9] in inodes:
                        count += 1
        return count

    def status(self, key: str) -> int:
        text = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(rf"^{key}:\s+(\d+)", text, re.MULTILINE)
        return int(match.group(1)) if match else -1

    def rss_mb(self) -> float:
        return self.status("VmRSS") / 1024.0

    def threads(self) -> int:
        return self.status("Threads")

    def fd_targets(self) -> list[str]:
        """What each open descriptor is (socket:[inode], a file, a pipe): for a failure message."""
        targets = []
        for fd in Path(f"/proc/{self.proc.pid}/fd").iterdir():
            try:
                targets.append(os.readlink(fd))
            except OSError:
                pass
        return sorted(targets)

    def resources(self) -> dict[str, float]:
        return {"fds": self.fds(), "threads": self.threads(), "rss_mb": round(self.rss_mb(), 1)}


def metric_value(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def metric_series(text: str, name: str) -> int:
    return len(re.findall(rf"^{re.escape(name)}\{{", text, re.MULTILINE))


# --- the lab: an event loop in a thread -----------------------------------------------------------


class Lab:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="chaos-lab", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
        async def bounded() -> Any:
            async with asyncio.timeout(timeout):
                return await coro

        return asyncio.run_coroutine_threadsafe(bounded(), self.loop).result(timeout + 10)

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


# --- the scripted model ----------------------------------------------------------------------------


@dataclass
class UpstreamSession:
    mode: str
    opened_at: float
    injected_at: float | None = None
    received: int = 0
    closed_at: float | None = None


class ChaosUpstream:
    """A GA Realtime server whose sessions behave as their call's profile says (see module doc)."""

    def __init__(self, rcvbuf: int | None = None, max_queue: int = 16) -> None:
        self.rcvbuf = rcvbuf
        self.max_queue = max_queue
        self.url = ""
        self.sessions: list[UpstreamSession] = []
        self.open_now = 0
        self.fuzz_frames: deque[list[str | bytes]] = deque()
        self.huge_delta: str | None = None
        self.error_codes = 1500
        self._fake: FakeRealtime | None = None
        self.port = 0

    async def start(self) -> None:
        self._fake = FakeRealtime(
            self._handle,
            receive_buffer=self.rcvbuf,
            max_size=None,
            max_queue=self.max_queue,
            ping_interval=None,
        )
        await self._fake.start()
        port = self.port = self._fake.port
        self.url = f"ws://127.0.0.1:{port}/v1/realtime?api-key={UPSTREAM_SECRET}"

    async def stop(self) -> None:
        if self._fake is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self._fake.aclose()

    async def _send(self, ws: ServerConnection, kind: str, **fields: Any) -> None:
        await ws.send(json.dumps({"type": kind, "event_id": "evt_" + secrets.token_hex(4), **fields}))

    async def _handle(self, fake: FakeSession) -> None:
        ws = fake.ws
        self.open_now += 1
        session = UpstreamSession(mode="quiet", opened_at=time.monotonic())
        self.sessions.append(session)
        try:
            await self._send(ws, "session.created", session={"type": "realtime"})
            async with asyncio.timeout(10):
                while True:
                    event = json.loads(await ws.recv())
                    session.received += 1
                    if event.get("type") == "session.update":
                        break
            found = re.search(r"chaos-mode:(\w+)", json.dumps(event))
            session.mode = found.group(1) if found else "quiet"
            await self._send(ws, "session.updated", session={"type": "realtime"})
            if session.mode == "stall":
                # A model that stops reading: nothing more is read, not even a close frame.
                ws.transport.pause_reading()
                await asyncio.sleep(3600)
            reader = asyncio.create_task(self._drain(ws, session))
            try:
                if session.mode == "quiet":
                    await reader
                else:
                    await self._talk(ws, session)
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
        except (websockets.ConnectionClosed, TimeoutError, OSError, ValueError):
            pass
        finally:
            self.open_now -= 1
            session.closed_at = time.monotonic()

    async def _drain(self, ws: ServerConnection, session: UpstreamSession) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for _ in ws:
                session.received += 1

    async def _talk(self, ws: ServerConnection, session: UpstreamSession) -> None:
        """Audio at real time, in responses of 3 s, forever; the mode's hostile part after 0.4 s."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        sent = 0
        n_response = 0
        hostile_done = False
        while True:
            n_response += 1
            rid, iid = f"resp_{n_response}", f"item_{n_response}"
            await self._send(ws, "response.created", response={"id": rid, "status": "in_progress"})
            await self._send(
                ws, "response.output_item.added", response_id=rid, output_index=0,
                item={"id": iid, "type": "message", "role": "assistant"},
            )
            where = {"response_id": rid, "item_id": iid, "output_index": 0, "content_index": 0}
            for _ in range(30):
                if not hostile_done and loop.time() - started > 0.4:
                    hostile_done = True
                    await self._hostile(ws, session, where)
                    if session.mode == "fuzz":
                        break  # a new response: a hostile event read as a barge-in cannot silence the rest
                await self._send(ws, "response.output_audio.delta", **where, delta=TONE_DELTA)
                sent += 1
                await asyncio.sleep(max(0.0, started + sent * DELTA_MS / 1000 - loop.time()))
            await self._send(ws, "response.output_audio.done", **where)
            await self._send(ws, "response.done", response={"id": rid, "status": "completed"})

    async def _hostile(self, ws: ServerConnection, session: UpstreamSession, where: dict[str, Any]) -> None:
        if session.mode == "fuzz" and self.fuzz_frames:
            for frame in self.fuzz_frames.popleft():
                await ws.send(frame)
        elif session.mode == "huge" and self.huge_delta is not None:
            await ws.send(self.huge_delta)
        elif session.mode == "errors":
            for i in range(self.error_codes):
                await self._send(
                    ws, "error", error={"type": "invalid_request_error", "code": f"chaos_code_{i}", "message": "chaos"}
                )
        else:
            return
        session.injected_at = time.monotonic()


# --- Twilio, from the outside -------------------------------------------------------------------


SIGNER = TwilioSigner(AUTH_TOKEN)


def new_call_sid() -> str:
    return "CA" + secrets.token_hex(16)


def new_stream_sid() -> str:
    return "MZ" + secrets.token_hex(16)


@dataclass
class Webhook:
    status: int
    text: str
    form: dict[str, str]
    stream_url: str | None = None
    params: dict[str, str] = field(default_factory=dict)


def voice_form(call_sid: str | None = None, to: str = OTHER_NUMBER) -> dict[str, str]:
    return {
        "CallSid": call_sid or new_call_sid(), "AccountSid": ACCOUNT_SID, "From": "+15550199999",
        "To": to, "Direction": "inbound", "CallStatus": "ringing",
    }


async def post_signed(base: str, path: str, form: dict[str, str], sign_url: str | None = None,
                      headers: dict[str, str] | None = None) -> httpx.Response:
    body = urllib.parse.urlencode(form)
    h = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": SIGNER.sign(sign_url or f"{base}{path}", form),
        **(headers or {}),
    }
    async with httpx.AsyncClient(timeout=10.0) as http:
        return await http.post(f"{base}{path}", content=body, headers=h)


async def webhook(base: str, form: dict[str, str], **kw: Any) -> Webhook:
    response = await post_signed(base, "/voice", form, **kw)
    hook = Webhook(response.status_code, response.text, form)
    if response.status_code == 200:
        with contextlib.suppress(SimulatorError):
            hook.stream_url, hook.params = parse_stream_twiml(response.text)
    return hook


async def call_ended(base: str, call_sid: str) -> None:
    """Twilio's status callback at the end of a call (frees a slot a refused stream left reserved)."""
    with contextlib.suppress(httpx.HTTPError):
        await post_signed(base, "/voice/status", {"CallSid": call_sid, "AccountSid": ACCOUNT_SID, "CallStatus": "completed"})


def start_frame(hook: Webhook, stream_sid: str, **param_overrides: str) -> str:
    params = {**hook.params, **param_overrides}
    return ms.start_message(stream_sid, hook.form["CallSid"], ACCOUNT_SID, params)


SILENCE_FRAME = b"\xff" * 160


def media_frame(stream_sid: str, n: int, payload: bytes = SILENCE_FRAME) -> str:
    return ms.inbound_media_message(stream_sid, payload, chunk=n + 1, timestamp_ms=n * 20, sequence=n + 3)


class RawWebSocket:
    """A WebSocket client written by hand: any frame, any bytes, and it can stop reading."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sock: socket.socket) -> None:
        self.reader = reader
        self.writer = writer
        self.sock = sock

    @classmethod
    async def open(cls, stream_url: str, rcvbuf: int | None = None, limit: int = 2**16,
                   signature: str | None = None) -> RawWebSocket | int:
        """The open socket, or the HTTP status when the upgrade is refused."""
        parts = urllib.parse.urlsplit(stream_url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=limit)
        key = base64.b64encode(os.urandom(16)).decode()
        sig = signature if signature is not None else SIGNER.sign(stream_url, {})
        writer.write(
            (
                f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nX-Twilio-Signature: {sig}\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status != 101:
            writer.close()
            return status
        return cls(reader, writer, sock)

    def _frame(self, opcode: int, payload: bytes, fin: bool = True) -> bytes:
        first = (0x80 if fin else 0) | opcode
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", first, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", first, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", first, 0x80 | 127, n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if n < 4096 else _mask_fast(payload, mask)
        return head + mask + masked

    async def send(self, data: str | bytes, opcode: int | None = None) -> None:
        if opcode is None:
            opcode = 0x2 if isinstance(data, bytes) else 0x1
        payload = data if isinstance(data, bytes) else data.encode("utf-8", errors="surrogatepass")
        self.writer.write(self._frame(opcode, payload))
        await self.writer.drain()

    def send_nowait(self, data: str | bytes) -> None:
        opcode = 0x2 if isinstance(data, bytes) else 0x1
        payload = data if isinstance(data, bytes) else data.encode()
        self.writer.write(self._frame(opcode, payload))

    async def send_close(self, code: int = 1000) -> None:
        self.writer.write(self._frame(0x8, struct.pack("!H", code)))
        await self.writer.drain()

    async def read_frame(self) -> tuple[int, bytes]:
        b1, b2 = await self.reader.readexactly(2)
        n = b2 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return b1 & 0x0F, await self.reader.readexactly(n)

    async def close_code(self, timeout: float) -> tuple[int | None, list[str]]:
        """Read until the server's close frame: (its code, or None if the TCP connection just ended
        or nothing came within `timeout`; the text frames seen before)."""
        texts: list[str] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    opcode, payload = await self.read_frame()
                    if opcode == 0x8:
                        return (struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005), texts
                    if opcode == 0x1:
                        texts.append(payload.decode(errors="replace"))
        except (asyncio.IncompleteReadError, ConnectionError):
            return None, texts
        except TimeoutError:
            return -1, texts

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.transport.abort()


def _mask_fast(payload: bytes, mask: bytes) -> bytes:
    import numpy as np

    data = np.frombuffer(payload, dtype=np.uint8)
    key = np.resize(np.frombuffer(mask, dtype=np.uint8), len(data))
    return (data ^ key).tobytes()


async def open_raw_call(base: str, to: str = OTHER_NUMBER, rcvbuf: int | None = None, limit: int = 2**16,
                        media: int = 0) -> tuple[RawWebSocket, Webhook, str]:
    """Webhook, signed upgrade, connected and a valid start (and `media` valid frames)."""
    hook = await webhook(base, voice_form(to=to))
    if hook.stream_url is None:
        raise AssertionError(f"/voice gave no stream: {hook.status} {hook.text[:300]}")
    ws = await RawWebSocket.open(hook.stream_url, rcvbuf=rcvbuf, limit=limit)
    if isinstance(ws, int):
        raise AssertionError(f"the signed upgrade was refused: HTTP {ws}")
    sid = new_stream_sid()
    await ws.send(ms.connected_message())
    await ws.send(start_frame(hook, sid))
    for n in range(media):
        await ws.send(media_frame(sid, n))
    return ws, hook, sid


class GoodCall:
    """A well-behaved Twilio call: media every 20 ms on a real clock, marks echoed, audio timed."""

    def __init__(self, base: str, to: str) -> None:
        self.base = base
        self.to = to
        self.ws: ClientConnection | None = None
        self.hook: Webhook | None = None
        self.stream_sid = new_stream_sid()
        self.arrivals: list[tuple[float, int, int]] = []  # (monotonic time, frame chars, payload bytes)
        self.close_code: int | None = None
        self.closed_at: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.largest_frame = 0
        self.stop_sent_at: float | None = None

    async def start(self, call_sid: str | None = None, hook: Webhook | None = None) -> GoodCall:
        self.hook = hook or await webhook(self.base, voice_form(call_sid, to=self.to))
        if self.hook.stream_url is None:
            raise AssertionError(f"/voice gave no stream: {self.hook.status} {self.hook.text[:300]}")
        self.ws = await connect(
            self.hook.stream_url, proxy=None, max_size=None, compression=None,
            additional_headers={"X-Twilio-Signature": SIGNER.sign(self.hook.stream_url, {})},
        )
        await self.ws.send(ms.connected_message())
        await self.ws.send(start_frame(self.hook, self.stream_sid))
        self._tasks = [asyncio.create_task(self._send_audio()), asyncio.create_task(self._receive())]
        return self

    async def _send_audio(self) -> None:
        assert self.ws is not None
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        n = 0
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await self.ws.send(media_frame(self.stream_sid, n))
                n += 1
                await asyncio.sleep(max(0.0, t0 + n * 0.02 - loop.time()))

    async def _receive(self) -> None:
        assert self.ws is not None
        seq = 10_000
        try:
            async for raw in self.ws:
                now = time.monotonic()
                if isinstance(raw, bytes):
                    continue
                self.largest_frame = max(self.largest_frame, len(raw))
                message = json.loads(raw)
                if message.get("event") == "media":
                    self.arrivals.append((now, len(raw), len(base64.b64decode(message["media"]["payload"]))))
                elif message.get("event") == "mark":
                    seq += 1
                    await self.ws.send(ms.mark_echo_message(self.stream_sid, message["mark"]["name"], seq))
        except websockets.ConnectionClosed:
            pass
        self.close_code = self.ws.close_code
        self.closed_at = time.monotonic()

    @property
    def alive(self) -> bool:
        return self.closed_at is None

    def audio_since(self, t: float) -> int:
        return sum(1 for at, _, _ in self.arrivals if at >= t)

    def max_gap(self, since: float, until: float | None = None) -> float:
        """The longest time without model audio in [since, until] (until: now)."""
        end = until if until is not None else time.monotonic()
        times = [since] + [at for at, _, _ in self.arrivals if since <= at <= end] + [end]
        return max(b - a for a, b in zip(times, times[1:]))

    async def hang_up(self, timeout: float = 5.0) -> int | None:
        """`stop`, as Twilio sends it when the caller hangs up; the bridge's close code (None: not closed)."""
        assert self.ws is not None and self.hook is not None
        self._tasks[0].cancel()
        self.stop_sent_at = time.monotonic()
        with contextlib.suppress(websockets.ConnectionClosed, TimeoutError):
            async with asyncio.timeout(timeout):
                await self.ws.send(ms.stop_message(self.stream_sid, self.hook.form["CallSid"], ACCOUNT_SID, 99_999))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.1, self.stop_sent_at + timeout - time.monotonic())):
                await asyncio.gather(self._tasks[1], return_exceptions=True)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.closed_at is None:
            self.ws.transport.abort()
            return None
        return self.close_code
