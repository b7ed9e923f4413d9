"""A real `AsyncTokenCredential` whose answers the test controls (and counts)."""

from __future__ import annotations

import asyncio
from typing import Any

from azure.core.credentials import AccessToken
from azure.core.credentials_async import AsyncTokenCredential

T0 = 1_900_000_000.0


class Clock:
    """Unix time that moves only when the test says so."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ControlledCredential(AsyncTokenCredential):
    """Issues `token-<n>-for-<scope>` tokens valid for `lifetime_s`; the test can hold, fail or hang fetches."""

    def __init__(self, clock: Clock | None = None, lifetime_s: float = 3600.0) -> None:
        self.clock = clock or Clock()
        self.lifetime_s = lifetime_s
        self.calls: list[tuple[str, ...]] = []
        self.gate: asyncio.Event | None = None  # when set to an Event: fetches wait for it
        self.fail_with: Exception | None = None
        self.hang = False
        self.closed = False

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        self.calls.append(scopes)
        if self.gate is not None:
            await self.gate.wait()
        if self.hang:
            await asyncio.Event().wait()
        if self.fail_with is not None:
            raise self.fail_with
        return AccessToken(f"token-{len(self.calls)}-for-{scopes[0]}", int(self.clock() + self.lifetime_s))

    async def close(self) -> None:
        self.closed = True

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
