"""Upstream URL and authentication from the settings: one table per dialect, plus the errors."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from bridge.auth import ApiKeyHeader, BearerKey, EntraBearer, EntraTokens
from bridge.settings import ConfigError, Settings
from bridge.upstream_config import (
    AZURE_OPENAI_SCOPE,
    VOICELIVE_API_VERSION,
    VOICELIVE_SCOPE,
    check_upstream_settings,
    upstream_spec,
)

KEY = "key-0123456789abcdef0123456789abcdef"
VOICELIVE = {
    "upstream": "voicelive",
    "azure_voicelive_endpoint": "https://contoso.services.ai.azure.com",
    "azure_voicelive_model": "gpt-realtime",
}
AZURE_OPENAI = {
    "upstream": "azure-openai",
    "azure_openai_endpoint": "https://contoso.openai.azure.com",
    "azure_openai_deployment": "gpt-realtime-prod",
}


def settings(**fields: Any) -> Settings:
    return Settings(**{"insecure_dev": True, **fields})


def test_the_pinned_voicelive_version_is_the_ga_one() -> None:
    assert VOICELIVE_API_VERSION == "2026-07-15"


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://contoso.services.ai.azure.com",
        "https://contoso.services.ai.azure.com/",
        "wss://contoso.services.ai.azure.com",
        "contoso.services.ai.azure.com",
        "https://contoso.services.ai.azure.com/api/projects/phone-agent",  # a pasted project endpoint
        "  https://CONTOSO.services.ai.azure.com  ",
    ],
)
def test_voicelive_url_from_any_form_of_the_endpoint(endpoint: str) -> None:
    spec = upstream_spec(settings(**{**VOICELIVE, "azure_voicelive_endpoint": endpoint}))
    assert (
        spec.url
        == f"wss://contoso.services.ai.azure.com/voice-live/realtime?api-version={VOICELIVE_API_VERSION}&model=gpt-realtime"
    )


def test_voicelive_url_on_an_older_cognitiveservices_resource() -> None:
    spec = upstream_spec(
        settings(**{**VOICELIVE, "azure_voicelive_endpoint": "https://contoso.cognitiveservices.azure.com/"})
    )
    assert spec.url.startswith("wss://contoso.cognitiveservices.azure.com/voice-live/realtime?api-version=")


def test_voicelive_model_is_url_encoded() -> None:
    spec = upstream_spec(settings(**{**VOICELIVE, "azure_voicelive_model": "gpt 4o/mini"}))
    assert spec.url.endswith("&model=gpt+4o%2Fmini")


def test_azure_openai_url_is_ga_v1_without_api_version() -> None:
    spec = upstream_spec(settings(**AZURE_OPENAI))
    assert spec.url == "wss://contoso.openai.azure.com/openai/v1/realtime?model=gpt-realtime-prod"
    assert "api-version" not in spec.url


@pytest.mark.parametrize(("model", "expected"), [(None, "gpt-realtime"), ("gpt-realtime-2", "gpt-realtime-2")])
def test_openai_url(model: str | None, expected: str) -> None:
    extra = {"openai_realtime_model": model} if model else {}
    spec = upstream_spec(settings(upstream="openai", openai_api_key=KEY, **extra))
    assert spec.url == f"wss://api.openai.com/v1/realtime?model={expected}"


def test_openai_model_from_the_environment_defaults_to_gpt_realtime() -> None:
    base = {"VOICE_BRIDGE_INSECURE_DEV": "1"}
    assert Settings.from_env(base).openai_realtime_model == "gpt-realtime"
    assert (
        Settings.from_env({**base, "OPENAI_REALTIME_MODEL": "gpt-realtime-2"}).openai_realtime_model == "gpt-realtime-2"
    )


@pytest.mark.parametrize(
    "fields",
    [VOICELIVE, AZURE_OPENAI, {"upstream": "openai", "openai_api_key": KEY}, {"upstream": "local"}],
    ids=lambda f: f["upstream"],
)
def test_the_upstream_url_setting_replaces_the_url_of_any_dialect(fields: dict[str, Any]) -> None:
    url = "wss://proxy.example.net/realtime?model=x"
    spec = upstream_spec(settings(**fields, upstream_url=url))
    assert spec.url == url


def test_with_the_url_setting_no_endpoint_is_needed_but_auth_stays() -> None:
    spec = upstream_spec(settings(upstream="voicelive", upstream_url="wss://proxy.example.net/voice-live/realtime"))
    assert spec.auth_kind == "entra_id" and spec.entra_scope == VOICELIVE_SCOPE


@pytest.mark.parametrize(
    ("fields", "auth_kind", "scope"),
    [
        ({**VOICELIVE, "azure_voicelive_api_key": KEY}, "api_key", None),
        (VOICELIVE, "entra_id", VOICELIVE_SCOPE),
        ({**AZURE_OPENAI, "azure_openai_api_key": KEY}, "api_key", None),
        (AZURE_OPENAI, "entra_id", AZURE_OPENAI_SCOPE),
        ({"upstream": "openai", "openai_api_key": KEY}, "bearer_key", None),
        ({"upstream": "local", "upstream_url": "ws://127.0.0.1:9000/v1/realtime"}, "none", None),
    ],
)
def test_authentication_per_dialect(fields: dict[str, Any], auth_kind: str, scope: str | None) -> None:
    spec = upstream_spec(settings(**fields))
    assert (spec.auth_kind, spec.entra_scope) == (auth_kind, scope)


def test_the_local_upstream_is_the_embedded_agent_without_auth() -> None:
    spec = upstream_spec(settings(), local_url="ws://127.0.0.1:45123/v1/realtime")
    assert (spec.url, spec.auth_kind) == ("ws://127.0.0.1:45123/v1/realtime", "none")
    target = spec.target()
    assert target.auth is None and target.dialect.name == "ga"


def test_targets_carry_the_right_header_source() -> None:
    key_target = upstream_spec(settings(**VOICELIVE, azure_voicelive_api_key=KEY)).target()
    assert key_target.auth == ApiKeyHeader(KEY) and key_target.dialect.name == "voicelive"
    assert upstream_spec(settings(upstream="openai", openai_api_key=KEY)).target().auth == BearerKey(KEY)
    with pytest.raises(ValueError, match="EntraTokens"):
        upstream_spec(settings(**AZURE_OPENAI)).target()


def test_entra_targets_use_the_shared_token_cache_with_the_dialects_scope() -> None:
    class NeverUsed:
        async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            raise AssertionError("no token is fetched while building a target")

        async def close(self) -> None:
            pass

    tokens = EntraTokens(NeverUsed())  # type: ignore[arg-type]
    target = upstream_spec(settings(**AZURE_OPENAI)).target(tokens)
    assert target.auth == EntraBearer(tokens, AZURE_OPENAI_SCOPE)


@pytest.mark.parametrize(
    ("fields", "variable"),
    [
        ({"upstream": "voicelive", "azure_voicelive_model": "gpt-realtime"}, "AZURE_VOICELIVE_ENDPOINT"),
        (
            {"upstream": "voicelive", "azure_voicelive_endpoint": "https://contoso.services.ai.azure.com"},
            "AZURE_VOICELIVE_MODEL",
        ),
        ({"upstream": "azure-openai", "azure_openai_deployment": "d"}, "AZURE_OPENAI_ENDPOINT"),
        (
            {"upstream": "azure-openai", "azure_openai_endpoint": "https://contoso.openai.azure.com"},
            "AZURE_OPENAI_DEPLOYMENT",
        ),
        ({"upstream": "openai"}, "OPENAI_API_KEY"),
        ({"upstream": "openai", "upstream_url": "wss://proxy.example.net/v1/realtime"}, "OPENAI_API_KEY"),
        (
            {**VOICELIVE, "azure_voicelive_endpoint": "ftp://contoso.services.ai.azure.com"},
            "AZURE_VOICELIVE_ENDPOINT must be an https://",
        ),
        (
            {**VOICELIVE, "azure_voicelive_endpoint": "http://contoso.services.ai.azure.com"},
            "only allowed for localhost",
        ),
        ({**AZURE_OPENAI, "azure_openai_endpoint": "https://"}, "AZURE_OPENAI_ENDPOINT has no host"),
        (
            {**AZURE_OPENAI, "azure_openai_endpoint": "https://contoso.openai.azure.com:port"},
            "AZURE_OPENAI_ENDPOINT is not a URL",
        ),
        ({**VOICELIVE, "upstream_url": "ws://10.0.0.8:9000/voice-live/realtime"}, "unencrypted"),
        (
            {"upstream": "openai", "openai_api_key": KEY, "upstream_url": "ws://proxy.example.net/v1/realtime"},
            "unencrypted",
        ),
    ],
)
def test_a_missing_or_bad_setting_is_named(fields: dict[str, Any], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        upstream_spec(settings(**fields))


def test_plain_ws_is_fine_for_loopback_and_for_unauthenticated_upstreams() -> None:
    spec = upstream_spec(
        settings(**{**VOICELIVE, "azure_voicelive_endpoint": "http://127.0.0.1:8765", "azure_voicelive_api_key": KEY})
    )
    assert spec.url.startswith("ws://127.0.0.1:8765/voice-live/realtime?")
    assert upstream_spec(settings(**AZURE_OPENAI, upstream_url="ws://localhost:9/openai/v1/realtime")).url.startswith(
        "ws://localhost"
    )
    assert upstream_spec(settings(upstream="local", upstream_url="ws://10.0.0.8:9000/v1/realtime")).auth_kind == "none"


def test_check_upstream_settings_skips_the_embedded_agent() -> None:
    check_upstream_settings(settings())
    with pytest.raises(ConfigError, match="AZURE_OPENAI_ENDPOINT"):
        check_upstream_settings(settings(upstream="azure-openai"))


ENV = {
    "VOICE_BRIDGE_INSECURE_DEV": "1",
    "AZURE_VOICELIVE_ENDPOINT": "https://contoso.services.ai.azure.com",
    "AZURE_VOICELIVE_MODEL": "gpt-realtime",
    "AZURE_VOICELIVE_API_KEY": "vl-secret-11111111111111111111",
    "AZURE_OPENAI_ENDPOINT": "https://contoso.openai.azure.com",
    "AZURE_OPENAI_DEPLOYMENT": "rt",
    "AZURE_OPENAI_API_KEY": "aoai-secret-2222222222222222222",
    "OPENAI_API_KEY": "sk-secret-33333333333333333333",
    "OPENAI_REALTIME_MODEL": "gpt-realtime-2",
    "VOICE_BRIDGE_PROFILES": "/etc/voice-bridge/profiles.toml",
}


def test_settings_read_the_design_variables() -> None:
    s = Settings.from_env(ENV)
    assert (s.azure_voicelive_endpoint, s.azure_voicelive_model, s.azure_voicelive_api_key) == (
        ENV["AZURE_VOICELIVE_ENDPOINT"], "gpt-realtime", ENV["AZURE_VOICELIVE_API_KEY"]
    )  # fmt: skip
    assert (s.azure_openai_endpoint, s.azure_openai_deployment, s.azure_openai_api_key) == (
        ENV["AZURE_OPENAI_ENDPOINT"], "rt", ENV["AZURE_OPENAI_API_KEY"]
    )  # fmt: skip
    assert (s.openai_api_key, s.openai_realtime_model, s.profiles_path) == (
        ENV["OPENAI_API_KEY"],
        "gpt-realtime-2",
        ENV["VOICE_BRIDGE_PROFILES"],
    )


def test_no_secret_in_the_repr_of_settings_specs_or_targets() -> None:
    s = Settings.from_env({**ENV, "TWILIO_AUTH_TOKEN": "twilio-secret-444444444444"})
    secrets = [
        ENV["AZURE_VOICELIVE_API_KEY"],
        ENV["AZURE_OPENAI_API_KEY"],
        ENV["OPENAI_API_KEY"],
        "twilio-secret-444444444444",
    ]
    specs = [upstream_spec(dataclasses.replace(s, upstream=u)) for u in ("voicelive", "azure-openai", "openai")]
    shown = repr(s) + "".join(repr(spec) + repr(spec.target()) for spec in specs)
    for secret in secrets:
        assert secret not in shown
