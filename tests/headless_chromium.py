"""Headless Chromium driven over its DevTools protocol (a WebSocket, the `websockets` package).

Used by tests/test_inspector_browser.py to load a page from disk with the network off, collect
console messages, exceptions and requests, read the DOM and take a screenshot. No selenium, no
playwright: Debian's `chromium` and a few protocol commands.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets

STARTUP_S = 30.0
COMMAND_S = 30.0


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageLog:
    console: list[dict[str, Any]] = field(default_factory=list)  # {"level", "text"}
    exceptions: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


class Tab:
    """One page target, attached through the browser's WebSocket (flat sessions)."""

    def __init__(self, ws: Any, session: str, log: PageLog) -> None:
        self._ws, self._session, self.log = ws, session, log
        self._ids = itertools.count(1000)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._events: dict[str, asyncio.Event] = {}
        self.pump: asyncio.Future[None] | None = None  # reads the socket (set by _attach)

    def dispatch(self, message: dict[str, Any]) -> None:
        if "id" in message and message["id"] in self._pending:
            self._pending.pop(message["id"]).set_result(message)
            return
        method, params = message.get("method", ""), message.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.log.console.append({"level": params.get("type"), "text": text})
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            self.log.console.append({"level": entry.get("level"), "text": entry.get("text", "")})
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.log.exceptions.append(str(details.get("exception", {}).get("description") or details.get("text")))
        elif method == "Network.requestWillBeSent":
            self.log.requests.append(params.get("request", {}).get("url", ""))
        if method in self._events:
            self._events[method].set()

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        await self._ws.send(json.dumps({"id": ident, "method": method, "params": params, "sessionId": self._session}))
        reply = await asyncio.wait_for(future, COMMAND_S)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return dict(reply.get("result", {}))

    def expect(self, method: str) -> asyncio.Event:
        self._events[method] = asyncio.Event()
        return self._events[method]

    async def evaluate(self, expression: str, user_gesture: bool = False) -> Any:
        """The expression's value; `user_gesture` runs it as if the user clicked (audio may start)."""
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, userGesture=user_gesture)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def open_offline(self, url: str) -> None:
        """Navigate with the network emulated offline; returns once the load event fired."""
        for domain in ("Page", "Runtime", "Log", "Network"):
            await self.send(f"{domain}.enable")
        await self.send("Network.emulateNetworkConditions", offline=True, latency=0, downloadThroughput=-1, uploadThroughput=-1)
        loaded = self.expect("Page.loadEventFired")
        await self.send("Page.navigate", url=url)
        await asyncio.wait_for(loaded.wait(), COMMAND_S)

    async def screenshot(self, path: Path, width: int = 1200, height: int = 900) -> None:
        await self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        shot = await self.send("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))


@contextlib.asynccontextmanager
async def headless_tab(binary: str, width: int = 1200, height: int = 900) -> AsyncIterator[Tab]:
    """A fresh headless Chromium (own profile, every proxy and DNS lookup refused) and one tab."""
    # Chromium's helper processes may still be writing to the profile as it is removed.
    with tempfile.TemporaryDirectory(prefix="inspector-chromium-", ignore_cleanup_errors=True) as profile:
        args = [binary, "--headless=new", "--remote-debugging-port=0", f"--user-data-dir={profile}", "--no-first-run",
                "--no-default-browser-check", "--disable-gpu", "--disable-extensions", "--mute-audio",
                "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND", f"--window-size={width},{height}",
                "about:blank"]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run its sandbox as root (CI containers)
        # Its own process group: the browser and every helper it forks end together.
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            ws_url = await _browser_url(Path(profile) / "DevToolsActivePort", process)
            async with websockets.connect(ws_url, max_size=64 * 2**20) as ws:
                tab = await _attach(ws)
                try:
                    yield tab
                finally:
                    if tab.pump is not None:
                        tab.pump.cancel()
        finally:
            _end(process)


def _end(process: subprocess.Popen[bytes]) -> None:
    """Stop the browser's process group (the one started above, by its id) and reap it."""
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


async def _browser_url(port_file: Path, process: subprocess.Popen[bytes]) -> str:
    deadline = asyncio.get_running_loop().time() + STARTUP_S
    while asyncio.get_running_loop().time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with {process.returncode} at start")
        lines = port_file.read_text().splitlines() if port_file.is_file() else []
        if len(lines) >= 2:
            return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        await asyncio.sleep(0.1)
    raise RuntimeError(f"chromium did not open its DevTools port within {STARTUP_S:g} s")


async def _attach(ws: Any) -> Tab:
    await ws.send(json.dumps({"id": 1, "method": "Target.createTarget", "params": {"url": "about:blank"}}))
    target = await _reply(ws, 1)
    await ws.send(json.dumps({"id": 2, "method": "Target.attachToTarget",
                              "params": {"targetId": target["targetId"], "flatten": True}}))
    session = (await _reply(ws, 2))["sessionId"]
    tab = Tab(ws, session, PageLog())

    async def pump() -> None:
        async for raw in ws:
            message = json.loads(raw)
            if message.get("sessionId") == session:
                tab.dispatch(message)

    tab.pump = asyncio.ensure_future(pump())
    return tab


async def _reply(ws: Any, ident: int) -> dict[str, Any]:
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), COMMAND_S))
        if message.get("id") == ident:
            if "error" in message:
                raise RuntimeError(str(message["error"]))
            return dict(message["result"])
