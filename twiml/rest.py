"""Twilio REST calls the bridge makes: live-call control and number webhook configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twilio.rest import Client

from .documents import TRANSFER_MESSAGE, apology, transfer


class CallControl:
    """Hang up or transfer a live call (used by the model's tools), without blocking the loop."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def hang_up(self, call_sid: str) -> None:
        await self._client.calls(call_sid).update_async(status="completed")

    async def transfer(self, call_sid: str, number: str, handoff: str | None = TRANSFER_MESSAGE) -> None:
        """Replace the call's TwiML: the stream ends and Twilio dials `number`."""
        await self._client.calls(call_sid).update_async(twiml=transfer(number, handoff))

    async def apologise(self, call_sid: str, fallback_number: str | None) -> None:
        """Replace the call's TwiML with the apology (and the fallback `<Dial>`), from any replica."""
        await self._client.calls(call_sid).update_async(twiml=apology(fallback_number))


@dataclass(frozen=True, slots=True)
class NumberWebhooks:
    phone_number: str
    sid: str
    voice_url: str | None
    voice_method: str | None
    status_callback: str | None
    status_callback_method: str | None


class NumberNotFound(LookupError):
    pass


def _find(client: Client, phone_number: str) -> Any:  # twilio's IncomingPhoneNumberInstance (untyped)
    numbers = client.incoming_phone_numbers.list(phone_number=phone_number, limit=2)
    if not numbers:
        raise NumberNotFound(f"{phone_number} is not a number of this Twilio account")
    return numbers[0]


def _webhooks(number: Any) -> NumberWebhooks:
    return NumberWebhooks(
        phone_number=number.phone_number,
        sid=number.sid,
        voice_url=number.voice_url,
        voice_method=number.voice_method,
        status_callback=number.status_callback,
        status_callback_method=number.status_callback_method,
    )


def expected_webhooks(base_url: str) -> dict[str, str]:
    base = base_url.rstrip("/")
    return {
        "voice_url": f"{base}/voice",
        "voice_method": "POST",
        "status_callback": f"{base}/voice/status",
        "status_callback_method": "POST",
    }


def number_webhooks(client: Client, phone_number: str) -> NumberWebhooks:
    return _webhooks(_find(client, phone_number))


def configure_number(client: Client, phone_number: str, base_url: str) -> tuple[NumberWebhooks, NumberWebhooks]:
    """Point the number's voice webhook and status callback at `base_url`; (before, after)."""
    number = _find(client, phone_number)
    before = _webhooks(number)
    after = _webhooks(number.update(**expected_webhooks(base_url)))
    return before, after


def points_here(webhooks: NumberWebhooks, base_url: str) -> list[str]:
    """What differs from the expected configuration (empty when it points here)."""
    differences: list[str] = []
    for name, wanted in expected_webhooks(base_url).items():
        have = getattr(webhooks, name)
        if (have or "").upper() != wanted.upper() if name.endswith("method") else have != wanted:
            differences.append(f"{name} is {have!r}, expected {wanted!r}")
    return differences
