"""The public URLs Twilio uses to reach us, which is what it signs."""

from __future__ import annotations

from urllib.parse import urlsplit


def public_base_url(configured: str | None, scheme: str, host: str) -> str:
    """`scheme://host` as Twilio sees this service.

    A configured `VOICE_BRIDGE_PUBLIC_URL` wins. Otherwise the request's own scheme and `Host`
    header. Forwarded headers are never read here: uvicorn's proxy-headers middleware applies
    `X-Forwarded-Proto` to the request's scheme, and only for peers in `FORWARDED_ALLOW_IPS`
    (`voice-bridge serve --forwarded-allow-ips`). `X-Forwarded-Host` is not honoured at all:
    behind a proxy that rewrites `Host`, set `VOICE_BRIDGE_PUBLIC_URL`.
    """
    if configured:
        parts = urlsplit(configured)
        return f"{parts.scheme}://{parts.netloc}"
    proto = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    return f"{proto}://{host}"


def websocket_url(base_url: str, path: str) -> str:
    """The ws(s) URL for `path`: `wss` behind `https` (what Twilio requires), `ws` on plain http."""
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{path}"
