"""Loopback upstreams for connect tests: one that records every opening handshake (and can refuse
the first ones with an HTTP status), and one that accepts TCP but never answers the upgrade.
The first is the shared fake Realtime server (bridge/devtools/fake_realtime.py) with those options."""

from __future__ import annotations

import asyncio
import socket

from bridge.devtools.fake_realtime import FakeRealtime, Script, wait_for_close

__all__ = ["HandshakeUpstream", "SilentUpstream", "free_port", "wait_for_close"]


def free_port() -> int:
    """A loopback port nothing listens on (connecting to it is refused until someone does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class HandshakeUpstream(FakeRealtime):
    """Records each handshake's path and headers; refuses the first ones with `refuse_with` statuses;
    each session is held until the bridge closes it (its close code recorded)."""

    def __init__(self, script: Script = wait_for_close, refuse_with: list[int] | None = None, port: int = 0) -> None:
        super().__init__(script, port=port, refuse_with=refuse_with, hold_until_client_closes=True)


class SilentUpstream:
    """Accepts TCP connections and never answers: an opening handshake that never completes."""

    def __init__(self) -> None:
        self.port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> SilentUpstream:
        self._server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        for writer in self._writers:
            writer.close()
        self._server.close()
        await self._server.wait_closed()

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)
        await reader.read()  # until the client gives up
