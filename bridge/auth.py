"""How the bridge authenticates to the upstream: API-key headers, or Entra ID bearer tokens.

Entra ID tokens come from one `EntraTokens` per process. It caches one token per scope, renews it
in the background ahead of expiry (callers keep getting the cached token meanwhile), and makes
concurrent callers share one fetch. So a call's handshake awaits the credential only when there is
no usable token at all (the first call after start, unless `prefetch` ran, or after a long outage).

Secrets never reach a log line or a `repr`: the header sources hide their key, and the token cache
logs only the scope and the lifetime.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from azure.core.credentials import AccessToken
from azure.core.credentials_async import AsyncTokenCredential

from .logs import get_logger

log = get_logger("bridge.auth")

REFRESH_MARGIN_S = 300.0  # renew 5 minutes before expiry (at half its life for tokens shorter-lived than 10 min)
MIN_VALIDITY_S = 30.0  # a token closer than this to expiry is not handed out: callers wait for a new one
FETCH_TIMEOUT_S = 10.0  # DefaultAzureCredential can hang probing for a managed identity


class TokenUnavailable(Exception):
    """No Entra ID token could be obtained for a scope; the message says which and why."""

    def __init__(self, scope: str, cause: BaseException) -> None:
        reason = str(cause) or "no details"
        if isinstance(cause, TimeoutError):
            reason = "the credential did not answer in time"
        super().__init__(f"no Entra ID token for scope {scope}: {type(cause).__name__}: {reason}")
        self.scope = scope


class HeaderSource(Protocol):
    """Gives the authentication headers for one upstream handshake."""

    async def headers(self) -> Mapping[str, str]: ...


@dataclass(frozen=True, slots=True)
class ApiKeyHeader:
    """Azure's `api-key` header."""

    key: str = field(repr=False)

    async def headers(self) -> Mapping[str, str]:
        return {"api-key": self.key}


@dataclass(frozen=True, slots=True)
class BearerKey:
    """A fixed bearer key (OpenAI's `Authorization: Bearer sk-…`)."""

    key: str = field(repr=False)

    async def headers(self) -> Mapping[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass(frozen=True, slots=True)
class EntraBearer:
    """An Entra ID token for `scope`, from the process's token cache."""

    tokens: EntraTokens
    scope: str

    async def headers(self) -> Mapping[str, str]:
        return {"Authorization": f"Bearer {await self.tokens.token(self.scope)}"}


@dataclass(frozen=True, slots=True)
class _Cached:
    token: str = field(repr=False)
    expires_on: float
    refresh_at: float


def _default_credential() -> AsyncTokenCredential:
    from azure.identity.aio import DefaultAzureCredential  # imported only when Entra ID is used

    return DefaultAzureCredential()


class EntraTokens:
    """Entra ID access tokens, cached per scope and renewed ahead of expiry.

    Owns its credential (`DefaultAzureCredential` unless one is given): `aclose()` closes it.
    Use it from one event loop (the server's).
    """

    def __init__(
        self,
        credential: AsyncTokenCredential | None = None,
        *,
        refresh_margin_s: float = REFRESH_MARGIN_S,
        min_validity_s: float = MIN_VALIDITY_S,
        fetch_timeout_s: float = FETCH_TIMEOUT_S,
        clock: Callable[[], float] = time.time,  # tokens expire in Unix time
    ) -> None:
        self._credential = credential if credential is not None else _default_credential()
        self._refresh_margin_s = refresh_margin_s
        self._min_validity_s = min_validity_s
        self._fetch_timeout_s = fetch_timeout_s
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        self._inflight: dict[str, asyncio.Task[_Cached]] = {}
        self._closed = False

    async def token(self, scope: str) -> str:
        """A valid token for `scope`; raises `TokenUnavailable` when none can be had."""
        if self._closed:
            raise RuntimeError("EntraTokens is closed")
        now = self._clock()
        cached = self._cache.get(scope)
        if cached is not None and now < cached.expires_on - self._min_validity_s:
            if now >= cached.refresh_at:
                self._fetch(scope)  # renew in the background; this caller goes on with the cached one
            return cached.token
        # Shielded: a caller that gives up (e.g. its call hung up) does not cancel the shared fetch.
        return (await asyncio.shield(self._fetch(scope))).token

    async def prefetch(self, *scopes: str) -> None:
        """Fetch tokens now (at start), so the first call does not wait and bad credentials show early."""
        for scope in scopes:
            await self.token(scope)

    async def aclose(self) -> None:
        self._closed = True
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._credential.close()

    def _fetch(self, scope: str) -> asyncio.Task[_Cached]:
        """The one fetch in flight for `scope`, started if there is none."""
        task = self._inflight.get(scope)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._get_token(scope), name=f"entra-token {scope}")
            self._inflight[scope] = task
            task.add_done_callback(lambda done: self._fetch_done(scope, done))
        return task

    def _fetch_done(self, scope: str, task: asyncio.Task[_Cached]) -> None:
        if self._inflight.get(scope) is task:
            del self._inflight[scope]
        if not task.cancelled():
            task.exception()  # retrieved here: a failed background renewal is logged in _get_token

    async def _get_token(self, scope: str) -> _Cached:
        try:
            async with asyncio.timeout(self._fetch_timeout_s):
                access: AccessToken = await self._credential.get_token(scope)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("auth.token_failed", scope=scope, error=type(exc).__name__)
            raise TokenUnavailable(scope, exc) from exc
        now = self._clock()
        lifetime = access.expires_on - now
        cached = _Cached(
            token=access.token,
            expires_on=float(access.expires_on),
            refresh_at=now + max(lifetime - self._refresh_margin_s, lifetime / 2),
        )
        self._cache[scope] = cached
        log.info("auth.token_fetched", scope=scope, expires_in_s=round(lifetime))
        return cached
