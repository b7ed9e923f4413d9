"""The Entra ID token cache, against a real `AsyncTokenCredential` that the test controls.

Time is a manual clock (tokens expire in Unix time); nothing here waits on the wall clock except
the fetch timeout case, which only checks that a credential that never answers is given up on.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ClientAuthenticationError
from conftest import run
from controlled_credential import Clock, ControlledCredential

from bridge.auth import ApiKeyHeader, BearerKey, EntraBearer, EntraTokens, TokenUnavailable

SCOPE = "https://ai.azure.com/.default"
OTHER_SCOPE = "https://cognitiveservices.azure.com/.default"


def make(lifetime_s: float = 3600.0, **kwargs: Any) -> tuple[EntraTokens, ControlledCredential, Clock]:
    clock = Clock()
    credential = ControlledCredential(clock, lifetime_s)
    return EntraTokens(credential, clock=clock, **kwargs), credential, clock


async def drain() -> None:
    """Let background tasks run to completion."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_the_test_credential_is_an_async_token_credential() -> None:
    assert isinstance(ControlledCredential(), AsyncTokenCredential)


def test_a_cached_token_is_reused_without_asking_the_credential() -> None:
    async def scenario() -> None:
        tokens, credential, clock = make()
        first = await tokens.token(SCOPE)
        clock.now += 3000  # 10 minutes before expiry: still fresh
        assert await tokens.token(SCOPE) == first
        await drain()
        assert len(credential.calls) == 1 and credential.calls[0] == (SCOPE,)

    run(scenario())


def test_concurrent_callers_share_one_fetch() -> None:
    async def scenario() -> None:
        tokens, credential, _ = make()
        credential.gate = asyncio.Event()
        waiting = [asyncio.create_task(tokens.token(SCOPE)) for _ in range(20)]
        await drain()
        assert len(credential.calls) == 1  # everyone waits on the one fetch in flight
        credential.gate.set()
        results = await asyncio.gather(*waiting)
        assert len(set(results)) == 1 and len(credential.calls) == 1

    run(scenario())


def test_each_scope_has_its_own_token() -> None:
    async def scenario() -> None:
        tokens, credential, _ = make()
        a, b = await asyncio.gather(tokens.token(SCOPE), tokens.token(OTHER_SCOPE))
        assert a != b and sorted(credential.calls) == sorted([(SCOPE,), (OTHER_SCOPE,)])

    run(scenario())


def test_the_token_is_renewed_in_the_background_ahead_of_expiry() -> None:
    async def scenario() -> None:
        tokens, credential, clock = make(lifetime_s=3600, refresh_margin_s=300)
        old = await tokens.token(SCOPE)
        clock.now += 3600 - 200  # inside the 5-minute margin, still valid
        credential.gate = asyncio.Event()  # hold the renewal
        # Callers are not made to wait for the renewal: they get the still-valid token at once,
        # and however many call meanwhile, one renewal runs.
        assert [await tokens.token(SCOPE) for _ in range(5)] == [old] * 5
        await drain()
        assert len(credential.calls) == 2
        credential.gate.set()
        await drain()
        new = await tokens.token(SCOPE)
        assert new != old and len(credential.calls) == 2

    run(scenario())


def test_a_short_lived_token_is_renewed_at_half_its_life_not_at_once() -> None:
    async def scenario() -> None:
        tokens, credential, clock = make(lifetime_s=120, refresh_margin_s=300)
        await tokens.token(SCOPE)
        clock.now += 30
        await tokens.token(SCOPE)
        await drain()
        assert len(credential.calls) == 1
        clock.now += 40  # 70 s in: past half its life
        await tokens.token(SCOPE)
        await drain()
        assert len(credential.calls) == 2

    run(scenario())


def test_a_token_about_to_expire_is_not_handed_out() -> None:
    async def scenario() -> None:
        tokens, credential, clock = make(lifetime_s=3600, min_validity_s=30)
        old = await tokens.token(SCOPE)
        clock.now += 3600 - 10  # it would expire during the handshake
        new = await tokens.token(SCOPE)
        assert new != old and len(credential.calls) == 2

    run(scenario())


def test_a_failed_fetch_surfaces_clearly_to_every_waiting_caller_and_is_retried_later() -> None:
    async def scenario() -> None:
        tokens, credential, _ = make()
        credential.gate = asyncio.Event()
        credential.fail_with = ClientAuthenticationError("AADSTS700016: application not found")
        waiting = [asyncio.create_task(tokens.token(SCOPE)) for _ in range(3)]
        await drain()
        credential.gate.set()
        results = await asyncio.gather(*waiting, return_exceptions=True)
        assert len(credential.calls) == 1
        for error in results:
            assert isinstance(error, TokenUnavailable)
            assert (
                str(error)
                == f"no Entra ID token for scope {SCOPE}: ClientAuthenticationError: AADSTS700016: application not found"
            )
            assert isinstance(error.__cause__, ClientAuthenticationError)
        credential.gate, credential.fail_with = None, None
        assert (await tokens.token(SCOPE)).startswith("token-2")  # the next call tries again

    run(scenario())


def test_a_failed_background_renewal_keeps_the_valid_token_and_is_logged() -> None:
    async def scenario() -> list[dict[str, Any]]:
        loop_errors: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: loop_errors.append(context))
        tokens, credential, clock = make(lifetime_s=3600)
        old = await tokens.token(SCOPE)
        clock.now += 3500
        credential.fail_with = ClientAuthenticationError("temporarily unavailable")
        with structlog.testing.capture_logs() as logs:
            assert await tokens.token(SCOPE) == old
            await drain()
        assert loop_errors == []  # the failure was handled, not left in an unretrieved task
        return logs

    logs = run(scenario())
    assert [(e["event"], e["error"]) for e in logs if e["log_level"] == "warning"] == [
        ("auth.token_failed", "ClientAuthenticationError")
    ]


def test_a_credential_that_never_answers_is_given_up_on() -> None:
    async def scenario() -> None:
        tokens, credential, _ = make(fetch_timeout_s=0.05)
        credential.hang = True
        with pytest.raises(TokenUnavailable, match="did not answer in time"):
            await tokens.token(SCOPE)

    run(scenario())


def test_a_caller_that_gives_up_does_not_cancel_the_shared_fetch() -> None:
    async def scenario() -> None:
        tokens, credential, _ = make()
        credential.gate = asyncio.Event()
        impatient = asyncio.create_task(tokens.token(SCOPE))
        patient = asyncio.create_task(tokens.token(SCOPE))
        await drain()
        impatient.cancel()
        await drain()
        credential.gate.set()
        assert (await patient).startswith("token-1") and len(credential.calls) == 1

    run(scenario())


def test_prefetch_and_aclose() -> None:
    async def scenario() -> None:
        tokens, credential, _ = make()
        await tokens.prefetch(SCOPE, OTHER_SCOPE)
        assert len(credential.calls) == 2
        await tokens.token(SCOPE)
        assert len(credential.calls) == 2
        await tokens.aclose()
        assert credential.closed
        with pytest.raises(RuntimeError, match="closed"):
            await tokens.token(SCOPE)

    run(scenario())


def test_aclose_stops_a_fetch_in_flight() -> None:
    async def scenario() -> None:
        tokens, credential, _ = make()
        credential.gate = asyncio.Event()
        waiting = asyncio.create_task(tokens.token(SCOPE))
        await drain()
        await tokens.aclose()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert credential.closed

    run(scenario())


def test_no_token_or_key_is_logged_or_shown() -> None:
    async def scenario() -> tuple[list[dict[str, Any]], str, dict[str, str]]:
        tokens, _, _ = make()
        with structlog.testing.capture_logs() as logs:
            token = await tokens.token(SCOPE)
            headers = dict(await EntraBearer(tokens, SCOPE).headers())
        return logs, token, headers

    logs, token, headers = run(scenario())
    assert headers == {"Authorization": f"Bearer {token}"}
    assert [e["event"] for e in logs] == ["auth.token_fetched"] and logs[0]["expires_in_s"] == 3600
    assert token not in str(logs)


def test_key_header_sources() -> None:
    key = "0123456789abcdef-secret"
    assert run(ApiKeyHeader(key).headers()) == {"api-key": key}
    assert run(BearerKey(key).headers()) == {"Authorization": f"Bearer {key}"}
    assert key not in repr(ApiKeyHeader(key)) + repr(BearerKey(key))
