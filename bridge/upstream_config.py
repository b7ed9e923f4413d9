"""Where the upstream is and how to authenticate to it, from the settings (DESIGN §3, §4).

- `voicelive`: `wss://<resource>/voice-live/realtime?api-version=<VOICELIVE_API_VERSION>&model=<AZURE_VOICELIVE_MODEL>`;
  `api-key: <AZURE_VOICELIVE_API_KEY>`, else an Entra ID token for `https://ai.azure.com/.default`.
- `azure-openai`: `wss://<resource>/openai/v1/realtime?model=<AZURE_OPENAI_DEPLOYMENT>` (GA: no api-version);
  `api-key: <AZURE_OPENAI_API_KEY>`, else an Entra ID token for `https://cognitiveservices.azure.com/.default`.
- `openai`: `wss://api.openai.com/v1/realtime?model=<OPENAI_REALTIME_MODEL>`; `Authorization: Bearer <OPENAI_API_KEY>`.
- `local`: the embedded agent, or `VOICE_BRIDGE_UPSTREAM_URL`; no authentication.

`VOICE_BRIDGE_UPSTREAM_URL` replaces the URL of any upstream; the authentication stays. Endpoints
may be given as `https://…` or `wss://…` (or a bare host); only their host is used, so a pasted
Foundry project endpoint works too. Keys go in headers only, never in the URL.

This module does no I/O: `upstream_spec()` checks and describes, `UpstreamSpec.target()` builds the
`UpstreamTarget` the call sessions connect with.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from .auth import ApiKeyHeader, BearerKey, EntraBearer, EntraTokens, HeaderSource
from .dialects import dialect_for
from .settings import ConfigError, Settings
from .upstream import UpstreamTarget, redact_url

# The Voice Live GA API version this bridge speaks (beta-shaped protocol). 2026-07-15 is the
# newest stable version in Azure/azure-rest-api-specs (specification/ai/data-plane/VoiceLive/
# stable/2026-07-15, the readme's default tag) and the default of the Azure.AI.VoiceLive 1.2.0 SDK.
VOICELIVE_API_VERSION = "2026-07-15"
VOICELIVE_SCOPE = "https://ai.azure.com/.default"
AZURE_OPENAI_SCOPE = "https://cognitiveservices.azure.com/.default"
OPENAI_REALTIME_URL = "wss://api.openai.com/v1/realtime"

_WS_SCHEMES = {"https": "wss", "wss": "wss", "http": "ws", "ws": "ws"}


@dataclass(frozen=True, slots=True)
class UpstreamSpec:
    """The checked upstream configuration: URL, dialect name and how to authenticate."""

    upstream: str  # "local", "voicelive", "azure-openai", "openai"
    url: str
    key_auth: HeaderSource | None = field(default=None, repr=False)  # api-key / bearer key
    entra_scope: str | None = None  # set when Entra ID tokens are to be used

    @property
    def auth_kind(self) -> str:
        if self.entra_scope is not None:
            return "entra_id"
        if isinstance(self.key_auth, ApiKeyHeader):
            return "api_key"
        if isinstance(self.key_auth, BearerKey):
            return "bearer_key"
        return "none"

    @property
    def log_url(self) -> str:
        return redact_url(self.url)

    def target(self, tokens: EntraTokens | None = None) -> UpstreamTarget:
        """The target call sessions connect to; `tokens` is required when `entra_scope` is set."""
        auth: HeaderSource | None = self.key_auth
        if self.entra_scope is not None:
            if tokens is None:
                raise ValueError(
                    f"upstream {self.upstream} authenticates with Entra ID: pass the process's EntraTokens"
                )
            auth = EntraBearer(tokens, self.entra_scope)
        return UpstreamTarget(url=self.url, dialect=dialect_for(self.upstream), auth=auth)


def upstream_spec(settings: Settings, local_url: str | None = None) -> UpstreamSpec:
    """Check the upstream settings and describe the upstream; `ConfigError` names what is missing.

    `local_url` is the embedded agent's URL (known once it runs) for `VOICE_BRIDGE_UPSTREAM=local`.
    """
    upstream = settings.upstream
    if upstream == "voicelive":
        key = settings.azure_voicelive_api_key
        url = settings.upstream_url or _voicelive_url(settings)
        spec = UpstreamSpec(upstream, url, ApiKeyHeader(key) if key else None, None if key else VOICELIVE_SCOPE)
    elif upstream == "azure-openai":
        key = settings.azure_openai_api_key
        url = settings.upstream_url or _azure_openai_url(settings)
        spec = UpstreamSpec(upstream, url, ApiKeyHeader(key) if key else None, None if key else AZURE_OPENAI_SCOPE)
    elif upstream == "openai":
        if not settings.openai_api_key:
            raise ConfigError("OPENAI_API_KEY is not set: VOICE_BRIDGE_UPSTREAM=openai needs an OpenAI API key")
        url = settings.upstream_url or _with_query(OPENAI_REALTIME_URL, model=settings.openai_realtime_model)
        spec = UpstreamSpec(upstream, url, BearerKey(settings.openai_api_key))
    elif upstream == "local":
        agent_url = settings.upstream_url or local_url
        if agent_url is None:
            raise ValueError(
                "the local upstream needs the embedded agent's URL (local_url) or VOICE_BRIDGE_UPSTREAM_URL"
            )
        spec = UpstreamSpec(upstream, agent_url)
    else:
        raise ConfigError(f"VOICE_BRIDGE_UPSTREAM={upstream!r}: no such upstream")
    if spec.auth_kind != "none":
        _refuse_cleartext_credentials(spec)
    return spec


def check_upstream_settings(settings: Settings) -> None:
    """`upstream_spec` without building anything: for start-up checks (the embedded agent needs none)."""
    if not settings.uses_embedded_agent:
        upstream_spec(settings)


def _voicelive_url(settings: Settings) -> str:
    if not settings.azure_voicelive_endpoint:
        raise ConfigError(
            "AZURE_VOICELIVE_ENDPOINT is not set: VOICE_BRIDGE_UPSTREAM=voicelive needs the Foundry resource endpoint, "
            "e.g. https://<resource>.services.ai.azure.com (or set VOICE_BRIDGE_UPSTREAM_URL)"
        )
    if not settings.azure_voicelive_model:
        raise ConfigError(
            "AZURE_VOICELIVE_MODEL is not set: VOICE_BRIDGE_UPSTREAM=voicelive needs a model, e.g. gpt-realtime"
        )
    origin = _ws_origin(settings.azure_voicelive_endpoint, "AZURE_VOICELIVE_ENDPOINT")
    return _with_query(
        f"{origin}/voice-live/realtime",
        **{"api-version": VOICELIVE_API_VERSION, "model": settings.azure_voicelive_model},
    )


def _azure_openai_url(settings: Settings) -> str:
    if not settings.azure_openai_endpoint:
        raise ConfigError(
            "AZURE_OPENAI_ENDPOINT is not set: VOICE_BRIDGE_UPSTREAM=azure-openai needs the resource endpoint, "
            "e.g. https://<resource>.openai.azure.com (or set VOICE_BRIDGE_UPSTREAM_URL)"
        )
    if not settings.azure_openai_deployment:
        raise ConfigError(
            "AZURE_OPENAI_DEPLOYMENT is not set: VOICE_BRIDGE_UPSTREAM=azure-openai needs the deployment name "
            "of the realtime model"
        )
    origin = _ws_origin(settings.azure_openai_endpoint, "AZURE_OPENAI_ENDPOINT")
    return _with_query(f"{origin}/openai/v1/realtime", model=settings.azure_openai_deployment)


def _with_query(base: str, **params: str) -> str:
    return f"{base}?{urlencode(params)}"


def _ws_origin(endpoint: str, variable: str) -> str:
    """`https://host[:port]/anything` (or wss://, or a bare host) → `wss://host[:port]`."""
    raw = endpoint.strip()
    if "://" not in raw:
        raw = f"https://{raw}"
    try:
        parts = urlsplit(raw)
        host, port = parts.hostname, parts.port
    except ValueError:
        raise ConfigError(f"{variable} is not a URL: expected https://<resource>.<domain>") from None
    scheme = _WS_SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise ConfigError(f"{variable} must be an https:// (or wss://) endpoint, not {parts.scheme}://")
    if not host:
        raise ConfigError(f"{variable} has no host name: expected https://<resource>.<domain>")
    if scheme == "ws" and not _is_loopback(host):
        raise ConfigError(f"{variable}: plain http:// or ws:// is only allowed for localhost; use https://")
    netloc = f"[{host}]" if ":" in host else host
    return f"{scheme}://{netloc}" + (f":{port}" if port is not None else "")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _refuse_cleartext_credentials(spec: UpstreamSpec) -> None:
    parts = urlsplit(spec.url)
    if parts.scheme == "ws" and not _is_loopback(parts.hostname or ""):
        raise ConfigError(
            "VOICE_BRIDGE_UPSTREAM_URL is a plain ws:// URL to another host: the upstream credentials would travel "
            "unencrypted. Use wss:// (ws:// is only allowed for localhost)."
        )
