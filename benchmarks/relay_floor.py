"""The floor of the Python stack: what one WebSocket message costs in each layer the bridge uses.

    .venv/bin/python benchmarks/relay_floor.py            # ~2.5 min; prints tables, then one JSON line

The load benchmark measures the whole bridge; this one takes the layers apart, each alone on
core 0 with its peer on core 1, at the message rate of 40 calls (2000 a second, spread over 40
connections, so that messages arrive one at a time as in a real deployment, not in bursts):

- receive a Twilio `media` frame: uvicorn (uvloop, httptools) with each of its WebSocket
  implementations, through Starlette's `WebSocket.receive` and through a bare ASGI app;
- send a 20 ms `input_audio_buffer.append`: the `websockets` asyncio client's `send`, and its
  sans-I/O protocol writing straight to the transport (no flow control: a lower bound only),
  one message per connection per 20 ms tick, so that the loop's wake-up is shared as in the
  bridge (where it is paid by the receive that the append answers);
- the pure steps, in a loop: Twilio JSON + base64 parse, the 20 ms transcode, the append built
  with `json.dumps` and assembled;
- below ASGI, for comparison: the `websockets` asyncio server, websockets' sans-I/O protocol
  called from a uvloop protocol's `data_received` (no queue, no task wake-up per message), and a
  protocol that only reads the bytes (what the kernel and the event loop cost per message);
- the caller→model path whole, at 20 and 100 ms appends: every frame received, parsed, gathered,
  transcoded and sent to a sink on core 1, through the bridge's stack (uvicorn, Starlette, the
  websockets client) and through sans-I/O protocols on both sides without ASGI — what a media
  path outside the ASGI app could save, measured rather than summed.

CPU is the measured process's utime+stime (getrusage) over the run divided by the messages it
handled. The last table sums the cheapest variant of each step for the messages of one
call-second (the mix the load benchmark reports) into the floor that any Python bridge built on
these libraries pays, to set against the 4 ms target.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from machine import cpu_model
from ports import free_port, wait_port

ROOT = Path(__file__).resolve().parent.parent

MEASURED_CORE, PEER_CORE = 0, 1
CONNECTIONS = 40
RATE_PER_S = 2000  # 40 calls x 50 frames
SECONDS = 6.0
FRAME_TEXT_BYTES = 160  # μ-law of 20 ms
APPEND_MS = (20, 100)  # the caller→model path measured whole, at VOICE_BRIDGE_APPEND_MS 20 and 100


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def twilio_frame(i: int) -> str:
    payload = base64.b64encode(os.urandom(FRAME_TEXT_BYTES)).decode()
    return json.dumps({
        "event": "media", "sequenceNumber": str(i), "streamSid": "MZ" + "0" * 32,
        "media": {"track": "inbound", "chunk": str(i), "timestamp": str(i * 20), "payload": payload},
    })


# --- roles run in child processes ----------------------------------------------------------------


class CallerPath:
    """The bridge's caller→model work on one frame: parse, gather, transcode, build the append."""

    def __init__(self, append_ms: int) -> None:
        from voice_codecs import CallerToModel

        from bridge import dialects, media_streams
        from bridge.append_batcher import AppendBatcher

        self._parse = media_streams.parse_twilio_message
        self._append = dialects.append_audio
        self._batcher = AppendBatcher(append_ms)
        self._transcode = CallerToModel().process

    def frame(self, text: str) -> str | None:
        """The append to send for this frame, or None while a batch is still gathering."""
        event = self._parse(text)
        batch = self._batcher.add(event.payload, 0.0)
        return None if batch is None else self._append(self._transcode(batch.audio))


class Tally:
    """Frames received and connections open; prints the CPU per frame when the last one closes."""

    def __init__(self) -> None:
        self.frames = 0
        self.open = 0
        self.cpu0: float | None = None

    def opened(self) -> None:
        self.open += 1

    def counted(self) -> None:
        if self.cpu0 is None:
            self.cpu0 = cpu_s()
        self.frames += 1

    def closed(self) -> None:
        self.open -= 1
        if self.open == 0 and self.frames and self.cpu0 is not None:
            print(json.dumps({"us_per_msg": (cpu_s() - self.cpu0) / self.frames * 1e6, "msgs": self.frames}), flush=True)
            os._exit(0)


def serve_receiver(impl: str, app_kind: str, port: int, upstream_port: int = 0, append_ms: int = 20) -> None:
    """A receiver on MEASURED_CORE; prints the CPU per frame once every connection has closed.

    `impl` is one of uvicorn's WebSocket implementations (`app_kind` "starlette" or "asgi"), or
    "none": no ASGI server, a uvloop protocol per connection (`app_kind` "bytes": count reads only,
    the kernel and loop floor; "sansio": websockets' sans-I/O protocol in `data_received`), or
    "websockets-server": the `websockets` asyncio server. With `upstream_port`, every frame also goes
    through the bridge's caller→model work and the appends go to a sink there: the caller→model
    path whole, through uvicorn + Starlette + the websockets client (the bridge's stack) or through
    sans-I/O protocols on both sides called from the loop's callbacks (a media path without ASGI).
    """
    import uvloop

    tally = Tally()

    async def open_upstream():
        from websockets.asyncio.client import connect

        return await connect(f"ws://127.0.0.1:{upstream_port}/", compression=None, max_size=None)

    async def count_frames(next_message) -> None:
        tally.opened()
        upstream = await open_upstream() if upstream_port else None
        path = CallerPath(append_ms)
        while True:
            message = await next_message()
            if message["type"] == "websocket.disconnect":
                break
            tally.counted()
            if upstream is not None:
                append = path.frame(message["text"])
                if append is not None:
                    await upstream.send(append)
        if upstream is not None:
            await upstream.close()
        tally.closed()

    if impl == "none":
        serve_without_asgi(app_kind, port, tally, open_upstream if upstream_port else None, append_ms)
        return
    if impl == "websockets-server":
        async def handler(ws) -> None:
            tally.opened()
            async for _ in ws:
                tally.counted()
            tally.closed()

        async def main() -> None:
            from websockets.asyncio.server import serve

            async with serve(handler, "127.0.0.1", port, compression=None, max_size=None):
                await asyncio.Future()

        uvloop.run(main())
        return

    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute

    async def starlette_endpoint(websocket) -> None:
        await websocket.accept()
        await count_frames(websocket.receive)

    async def bare_asgi(scope, receive, send) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        await count_frames(receive)

    app = bare_asgi if app_kind == "asgi" else Starlette(routes=[WebSocketRoute("/ws", starlette_endpoint)])
    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", ws=impl,
                ws_per_message_deflate=False, log_level="warning")


def serve_without_asgi(app_kind: str, port: int, tally: Tally, open_upstream, append_ms: int) -> None:
    """One uvloop protocol per connection, the WebSocket handled by websockets' sans-I/O protocol.

    Frames are handled in `data_received` itself: no queue, no task wake-up per message. The
    appends are written through the upstream connection's sans-I/O protocol straight to its
    transport (no flow control: a lower bound, like the "sans-I/O send" row).
    """
    import uvloop
    from websockets.frames import Opcode
    from websockets.server import ServerProtocol

    class Connection(asyncio.Protocol):
        def connection_made(self, transport) -> None:
            self.transport = transport
            self.ws = ServerProtocol(max_size=None)
            self.open = False
            self.upstream = None
            self.path = CallerPath(append_ms)

        def data_received(self, data: bytes) -> None:
            ws = self.ws
            ws.receive_data(data)
            if not self.open:
                for request in ws.events_received():
                    ws.send_response(ws.accept(request))
                self.open = True
                tally.opened()
                if open_upstream is not None:
                    self.transport.pause_reading()  # frames wait until the upstream is open
                    asyncio.ensure_future(self.connect_upstream())
            elif app_kind == "bytes":
                tally.counted()
                return
            else:
                for frame in ws.events_received():
                    if frame.opcode is not Opcode.TEXT:
                        continue
                    tally.counted()
                    if self.upstream is not None:
                        append = self.path.frame(frame.data.decode())
                        if append is not None:
                            self.upstream.protocol.send_text(append.encode())
                            self.upstream.send_data()
            for chunk in ws.data_to_send():
                if chunk:
                    self.transport.write(chunk)
                else:
                    self.transport.close()  # the closing handshake is done

        async def connect_upstream(self) -> None:
            self.upstream = await open_upstream()
            self.transport.resume_reading()

        def eof_received(self) -> None:
            self.transport.close()

        def connection_lost(self, exc) -> None:
            if self.upstream is not None:
                self.upstream.transport.close()
            tally.closed()

    async def main() -> None:
        await asyncio.get_running_loop().create_server(Connection, "127.0.0.1", port)
        await asyncio.Future()

    uvloop.run(main())


def run_sender(target: str, port: int, texts: list[str], burst: bool) -> None:
    """CONNECTIONS clients sharing RATE_PER_S; prints its own CPU per message.

    Paced (`burst` False), messages leave one at a time, as frames reach a bridge from many calls.
    In bursts, every connection sends one message per 20 ms tick, in one wake-up of the loop: the
    cost of the wake-up is then shared, as it is in the bridge, where an append is sent in the
    same wake-up that received its Twilio frame (and that cost is in the receive figure).
    """
    import uvloop
    from websockets.asyncio.client import connect

    async def main() -> None:
        sockets = [await connect(f"ws://127.0.0.1:{port}/ws", compression=None) for _ in range(CONNECTIONS)]
        total = int(RATE_PER_S * SECONDS)
        group = CONNECTIONS if burst else 1
        interval = group / RATE_PER_S
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.2
        await asyncio.sleep(0.2)
        cpu0 = cpu_s()
        for i in range(total):
            if i % group == 0:
                delay = start + (i // group) * interval - loop.time()
                if delay > 0.0005:
                    await asyncio.sleep(delay)
            ws = sockets[i % CONNECTIONS]
            text = texts[i % len(texts)]
            if target == "sansio":  # the protocol alone, written straight to the transport
                ws.protocol.send_text(text.encode())
                ws.send_data()
            else:
                await ws.send(text)
        used = cpu_s() - cpu0
        await asyncio.sleep(0.2)
        for ws in sockets:
            await ws.close()
        print(json.dumps({"us_per_msg": used / total * 1e6, "msgs": total}), flush=True)

    uvloop.run(main())


def run_sink(port: int) -> None:
    """A fake Realtime server that reads and discards (the upstream for the send measurements): a
    script on the shared one, bridge/devtools/fake_realtime.py."""
    import uvloop
    from websockets.exceptions import ConnectionClosed

    from bridge.devtools.fake_realtime import FakeRealtime

    async def discard(session) -> None:
        try:
            async for _ in session.ws:
                pass
        except ConnectionClosed:  # the no-ASGI relay drops its upstream without a closing handshake
            pass

    async def main() -> None:
        async with FakeRealtime(discard, port=port, record=False, max_size=None):
            await asyncio.Future()

    uvloop.run(main())


# --- the controller -------------------------------------------------------------------------------


def child(core: int, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["taskset", "-c", str(core), sys.executable, __file__, *args],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )


def receive_cost(impl: str, app_kind: str, append_ms: int = 0) -> float:
    """µs of CPU per Twilio frame received; with `append_ms`, relayed on to a sink as appends."""
    port = free_port()
    sink = None
    relay_args: list[str] = []
    if append_ms:
        upstream_port = free_port()
        sink = child(PEER_CORE, "--sink", str(upstream_port))
        wait_port(upstream_port, 15, sink)
        relay_args = [str(upstream_port), str(append_ms)]
    server = child(MEASURED_CORE, "--serve", impl, app_kind, str(port), *relay_args)
    try:
        wait_port(port, 15, server)
        sender = child(PEER_CORE, "--send", "uvicorn", str(port))
        sender.communicate(timeout=120)
        out, _ = server.communicate(timeout=30)
        return json.loads(out.strip().splitlines()[-1])["us_per_msg"]
    finally:
        server.kill()
        if sink is not None:
            sink.kill()


def send_cost(target: str) -> float:
    port = free_port()
    sink = child(PEER_CORE, "--sink", str(port))
    try:
        wait_port(port, 15, sink)
        sender = child(MEASURED_CORE, "--send", target, str(port), "--append")
        out, _ = sender.communicate(timeout=120)
        return json.loads(out.strip().splitlines()[-1])["us_per_msg"]
    finally:
        sink.kill()


def loop_cost(fn, n: int = 20000) -> float:
    for _ in range(200):
        fn()
    best = float("inf")
    for _ in range(5):
        t0 = cpu_s()
        for _ in range(n):
            fn()
        best = min(best, (cpu_s() - t0) / n * 1e6)
    return best


def pure_costs() -> dict[str, float]:
    from voice_codecs import CallerToModel, ModelToCaller

    from bridge import dialects
    from bridge import media_streams as ms

    os.sched_setaffinity(0, {MEASURED_CORE})
    frame = twilio_frame(7)
    to_model, to_caller = CallerToModel(), ModelToCaller()
    mulaw = os.urandom(160)
    pcm = os.urandom(4800)  # a 100 ms model delta
    audio = to_model.process(mulaw)
    return {
        "parse Twilio media (JSON + base64 + typed)": loop_cost(lambda: ms.parse_twilio_message(frame)),
        "transcode 20 ms caller→model": loop_cost(lambda: to_model.process(mulaw)),
        "transcode 100 ms model→caller": loop_cost(lambda: to_caller.process(pcm)),
        "append built with json.dumps": loop_cost(
            lambda: json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode("ascii")})
        ),
        "append assembled (the bridge)": loop_cost(lambda: dialects.append_audio(audio)),
    }


def main() -> None:
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs 2 cores")
    started = time.monotonic()
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}")
    print(f"{CONNECTIONS} connections, {RATE_PER_S} messages/s in all, {SECONDS:.0f} s per variant; µs of CPU per message\n")
    rows: list[tuple[str, str, float]] = []
    for impl in ("websockets-sansio", "websockets"):
        for app_kind in ("starlette", "asgi"):
            rows.append(("receive a Twilio frame", f"uvicorn ws={impl}, {'Starlette WebSocket' if app_kind == 'starlette' else 'bare ASGI'}",
                         receive_cost(impl, app_kind)))
    for impl, app_kind, label in (
        ("websockets-server", "-", "websockets asyncio server, recv()"),
        ("none", "sansio", "no ASGI: websockets sans-I/O in data_received"),
        ("none", "bytes", "no ASGI: bytes read, nothing parsed (kernel + loop)"),
    ):
        rows.append(("receive a Twilio frame", label, receive_cost(impl, app_kind)))
    for append_ms in APPEND_MS:
        rows.append((f"caller→model, {append_ms} ms", "uvicorn + Starlette + websockets client (the bridge's stack)",
                     receive_cost("websockets-sansio", "starlette", append_ms)))
        rows.append((f"caller→model, {append_ms} ms", "no ASGI: sans-I/O both sides, in data_received",
                     receive_cost("none", "sansio", append_ms)))
    for target, label in (("asyncio", "websockets asyncio client send()"), ("sansio", "sans-I/O protocol + transport.write (no flow control)")):
        rows.append(("send a 20 ms append", label, send_cost(target)))
    for label, us in pure_costs().items():
        rows.append(("pure step", label, us))
    width = max(len(r[1]) for r in rows)
    print(f"{'layer':<24} {'variant':<{width}} {'µs/msg':>7}")
    print("-" * (34 + width))
    for layer, variant, us in rows:
        print(f"{layer:<24} {variant:<{width}} {us:>7.1f}")

    cost = {variant: us for _, variant, us in rows}
    receive = min(us for layer, variant, us in rows if layer == "receive a Twilio frame" and variant.startswith("uvicorn"))
    receive_used = cost["uvicorn ws=websockets-sansio, Starlette WebSocket"]
    send = cost["websockets asyncio client send()"]
    parse = cost["parse Twilio media (JSON + base64 + typed)"]
    transcode = cost["transcode 20 ms caller→model"]
    build = cost["append assembled (the bridge)"]
    per_frame = receive_used + parse + transcode + build + send
    floor = {
        "caller→model, 50 frames": 50 * per_frame,
        # ~12 deltas in (a websockets receive ~ a send), ~23 Twilio sends, ~12 mark echoes in
        "model→caller, ~12 deltas: receive + transcode + media + mark sent, echo received": 12
        * (send + cost["transcode 100 ms model→caller"] + 2 * send + receive_used + parse),
    }
    total = sum(floor.values())
    print("\nthe floor of one call-second (the bridge's stack, every step at its measured cost, nothing else):")
    for name, ms_ in floor.items():
        print(f"  {name:<82} {ms_ / 1000:>5.2f} ms")
    print(f"  {'total':<82} {total / 1000:>5.2f} ms   (target 4 ms; the cheapest receive alone: {50 * receive / 1000:.2f} ms)")
    print("\nthe caller→model path of one call-second measured whole (50 frames received, parsed, gathered,")
    print("transcoded, sent as appends), on the bridge's stack and without ASGI:")
    path: dict[str, float] = {}
    for append_ms in APPEND_MS:
        layer = f"caller→model, {append_ms} ms"
        stack, bare = (50 * us / 1000 for l_, _, us in rows if l_ == layer)
        path[f"{append_ms} ms appends, the bridge's stack"] = stack
        path[f"{append_ms} ms appends, no ASGI"] = bare
        print(f"  {append_ms:>3} ms appends: {stack:5.2f} ms on the bridge's stack, {bare:5.2f} ms without ASGI ({1 - bare / stack:.0%} less)")
    bytes_only = cost["no ASGI: bytes read, nothing parsed (kernel + loop)"]
    print(f"  reading 50 frames and nothing else (kernel + event loop, one wake-up per frame): {50 * bytes_only / 1000:.2f} ms")
    print(f"(ran in {time.monotonic() - started:.0f} s)", file=sys.stderr)
    print(json.dumps({
        "machine": cpu_model(), "python": platform.python_version(),
        "us_per_msg": {f"{layer}: {variant}": round(us, 2) for layer, variant, us in rows},
        "floor_ms_per_call_s": round(total / 1000, 2),
        "caller_path_ms_per_call_s": {name: round(ms_, 2) for name, ms_ in path.items()},
    }, sort_keys=True))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve_receiver(sys.argv[2], sys.argv[3], *(int(arg) for arg in sys.argv[4:7]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--send":
        if "--append" in sys.argv:
            audio = base64.b64encode(os.urandom(960)).decode("ascii")
            messages = ['{"type":"input_audio_buffer.append","audio":"' + audio + '"}']
        else:
            messages = [twilio_frame(i) for i in range(50)]
        run_sender(sys.argv[2], int(sys.argv[3]), messages, burst="--append" in sys.argv)
    elif len(sys.argv) > 1 and sys.argv[1] == "--sink":
        run_sink(int(sys.argv[2]))
    else:
        main()
