"""`X-Twilio-Signature` checks for the webhook and the media-stream upgrade, via `twilio`."""

from __future__ import annotations

from collections.abc import Mapping

from twilio.request_validator import RequestValidator

SIGNATURE_HEADER = "X-Twilio-Signature"


class TwilioSigner:
    """Signs and checks requests the way Twilio does, with one account's auth token."""

    def __init__(self, auth_token: str) -> None:
        self._validator = RequestValidator(auth_token)

    def sign(self, url: str, params: Mapping[str, str] | None = None) -> str:
        return str(self._validator.compute_signature(url, dict(params or {})))

    def is_valid(self, url: str, params: Mapping[str, str] | None, signature: str | None) -> bool:
        if not signature:
            return False
        return bool(self._validator.validate(url, dict(params or {}), signature))
