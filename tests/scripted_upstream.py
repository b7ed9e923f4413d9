"""A scripted GA Realtime server for tests: records what the bridge sends, answers as told.

The names the tests use, over the one fake Realtime server in bridge/devtools/fake_realtime.py."""

from __future__ import annotations

from typing import Any

from bridge.devtools.fake_realtime import FakeRealtime, FakeSession, Script

ScriptedSession = FakeSession

__all__ = ["Script", "ScriptedSession", "ScriptedUpstream"]


class ScriptedUpstream(FakeRealtime):
    """Serves `script` for every connection on a loopback port (the session closes when it returns)."""

    def __init__(self, script: Script, receive_buffer: int | None = None, **serve_options: Any) -> None:
        super().__init__(script, receive_buffer=receive_buffer, **serve_options)
