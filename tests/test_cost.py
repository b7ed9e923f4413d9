"""Token usage, the price table and the per-call cost estimate, without sockets (issue 17)."""

from __future__ import annotations

from pathlib import Path

import pytest
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from bridge.cost import DEFAULT_PRICES, Price, PriceFileError, PriceTable, UsageTotals, cost_estimate, token_counts
from bridge.dialects import GADialect, VoiceLiveDialect, parse_server_frame
from bridge.model_usage import is_low
from bridge.realtime_events import BadEvent, RateLimit, RateLimitsUpdated, ResponseFinished, TokenUsage, UpstreamWarning
from bridge.settings import ConfigError, Settings

GA_SERVER_EVENT = TypeAdapter(RealtimeServerEvent)

USAGE = {
    "total_tokens": 1300,
    "input_tokens": 800,
    "output_tokens": 500,
    "input_token_details": {
        "text_tokens": 300,
        "audio_tokens": 500,
        "image_tokens": 0,
        "cached_tokens": 250,
        "cached_tokens_details": {"text_tokens": 200, "audio_tokens": 50, "image_tokens": 0},
    },
    "output_token_details": {"text_tokens": 100, "audio_tokens": 400},
}
PARSED = TokenUsage(input_text=300, input_audio=500, cached_text=200, cached_audio=50, output_text=100, output_audio=400)


def _done(status: str = "completed", **response: object) -> dict[str, object]:
    return {"type": "response.done", "event_id": "e1", "response": {"id": "resp_1", "object": "realtime.response", "status": status, **response}}


@pytest.mark.parametrize("dialect", [GADialect(), VoiceLiveDialect()], ids=["ga", "voicelive"])
def test_response_done_usage_and_status_details_are_read(dialect: object) -> None:
    failed = _done(
        "failed",
        status_details={"type": "failed", "error": {"type": "server_error", "code": "server_error", "message": "boom"}},
        usage=USAGE,
    )
    incomplete = _done("incomplete", status_details={"type": "incomplete", "reason": "content_filter"})
    for event in (failed, incomplete):
        GA_SERVER_EVENT.validate_python(event)  # the shape the openai SDK types (Voice Live's TokenUsage is the same)
    assert parse_server_frame(dialect, __import__("json").dumps(failed)) == ResponseFinished(  # type: ignore[arg-type]
        "resp_1", "failed", "", "server_error", "server_error", "boom", PARSED
    )
    parsed = dialect.parse(incomplete)  # type: ignore[attr-defined]
    assert (parsed.status, parsed.reason, parsed.usage, parsed.failed) == ("incomplete", "content_filter", None, True)
    assert not dialect.parse(_done("cancelled")).failed  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        # totals only: counted as text (the cheaper side)
        ({"input_tokens": 10, "output_tokens": 5}, TokenUsage(input_text=10, output_text=5)),
        # a cached total without its split: text first, then audio
        (
            {"input_token_details": {"text_tokens": 3, "audio_tokens": 10, "cached_tokens": 8}},
            TokenUsage(input_text=3, input_audio=10, cached_text=3, cached_audio=5),
        ),
        # nonsense counts are read as 0, never fatal; cached never above its input
        (
            {"input_token_details": {"text_tokens": -4, "audio_tokens": "x", "cached_tokens_details": {"text_tokens": 9}}},
            TokenUsage(),
        ),
        ({"output_token_details": {"text_tokens": True, "audio_tokens": 2**60}}, TokenUsage()),
        ("not an object", None),
    ],
)
def test_odd_usage_is_read_as_an_estimate_never_refused(usage: object, expected: TokenUsage | None) -> None:
    parsed = GADialect().parse(_done(usage=usage))
    assert isinstance(parsed, ResponseFinished) and parsed.usage == expected


def test_rate_limits_and_warnings_are_read() -> None:
    event = {
        "type": "rate_limits.updated",
        "event_id": "e2",
        "rate_limits": [
            {"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 0.06},
            {"name": "tokens", "limit": 50000, "remaining": 1200, "reset_seconds": 1.5},
        ],
    }
    GA_SERVER_EVENT.validate_python(event)
    assert GADialect().parse(event) == RateLimitsUpdated(
        (RateLimit("requests", 1000, 999, 0.06), RateLimit("tokens", 50000, 1200, 1.5))
    )
    odd = {"type": "rate_limits.updated", "rate_limits": [7, {"name": "tokens", "remaining": -1, "reset_seconds": float("inf")}]}
    assert GADialect().parse(odd) == RateLimitsUpdated((RateLimit("tokens", None, None, None),))
    # Voice Live's warning (azure-ai-voicelive ServerEventWarning: warning {message, code?, param?})
    warning = {"type": "warning", "event_id": "e3", "warning": {"message": "voice fell back", "code": "voice_fallback"}}
    assert VoiceLiveDialect().parse(warning) == UpstreamWarning("voice_fallback", "voice fell back")
    assert isinstance(parse_server_frame(VoiceLiveDialect(), '{"type": "warning"}'), BadEvent)


def test_token_counts_put_every_token_in_exactly_one_bucket() -> None:
    counts = token_counts(PARSED)
    assert counts == {
        ("input", "text"): 100,
        ("input", "audio"): 450,
        ("cached_input", "text"): 200,
        ("cached_input", "audio"): 50,
        ("output", "text"): 100,
        ("output", "audio"): 400,
    }
    assert sum(counts.values()) == PARSED.total == 1300


@pytest.mark.parametrize(
    ("model", "upstream", "key", "dollars_per_1m"),
    [
        # (100 × 4 + 200 × 0.4 + 450 × 32 + 50 × 0.4 + 100 × 16 + 400 × 64) / 1e6
        ("gpt-realtime", "openai", "gpt-realtime", 400 + 80 + 14400 + 20 + 1600 + 25600),
        ("gpt-realtime-2025-08-28", "openai", "gpt-realtime", 400 + 80 + 14400 + 20 + 1600 + 25600),
        ("gpt-realtime-mini-2025-10-06", "openai", "gpt-realtime-mini", 60 + 12 + 4500 + 15 + 240 + 8000),
        # Voice Live's own (Pro) rates before the model vendor's
        ("gpt-realtime", "voicelive", "voicelive/gpt-realtime", 550 + 550 + 19800 + 137.5 + 2200 + 35200),
        ("gpt-4o-realtime-preview-2025-06-03", "azure-openai", "gpt-4o-realtime-preview", 500 + 500 + 18000 + 125 + 2000 + 32000),
    ],
)
def test_the_price_table_arithmetic(model: str, upstream: str, key: str, dollars_per_1m: float) -> None:
    found = PriceTable.default().lookup(upstream, model)
    assert found is not None and found[0] == key
    totals = UsageTotals(found[1])
    totals.add(PARSED)
    totals.add(PARSED)
    assert totals.cost_estimate == pytest.approx(2 * dollars_per_1m / 1e6)
    assert totals.summary() == {
        "responses": 2,
        "tokens_input": 1600,
        "tokens_cached_input": 500,
        "tokens_output": 1000,
        "tokens_audio": 1800,
        "cost_estimate_usd": round(2 * dollars_per_1m / 1e6, 6),
    }


def test_no_price_means_no_cost_never_a_guess() -> None:
    table = PriceTable.default()
    assert table.lookup("azure-openai", "rt-prod") is None  # a deployment name the table does not know
    assert table.lookup("openai", None) is None
    assert table.lookup("openai", "gpt-realtimex") is None  # a prefix only matches at a dash
    totals = UsageTotals(None)
    totals.add(PARSED)
    assert totals.cost_estimate is None and totals.summary()["cost_estimate_usd"] is None
    assert cost_estimate(token_counts(PARSED), Price()) == 0.0


def test_a_price_file_overrides_and_is_checked(tmp_path: Path) -> None:
    good = tmp_path / "prices.toml"
    good.write_text('["rt-prod"]\naudio_input = 10\naudio_output = 20.5\n["gpt-realtime"]\ntext_input = 5\n')
    table = PriceTable.load(good)
    assert table.prices["rt-prod"] == Price(audio_input=10.0, audio_output=20.5)
    assert table.prices["gpt-realtime"] == Price(5.0, 0.4, 16.0, 32.0, 0.4, 64.0)  # one field changed, the rest kept
    assert table.prices["gpt-realtime-mini"] == DEFAULT_PRICES["gpt-realtime-mini"]
    settings = Settings.from_env({"VOICE_BRIDGE_INSECURE_DEV": "1", "VOICE_BRIDGE_PRICES": str(good)})
    assert settings.prices == table
    for text, message in [
        ('["m"]\naudio_inptu = 1\n', "unknown field 'audio_inptu'"),
        ('["m"]\naudio_input = -1\n', "from 0 to"),
        ('["m"]\naudio_input = "1"\n', "from 0 to"),
        ('["m"]\naudio_input = nan\n', "from 0 to"),
        ("m = 3\n", "must be a table"),
        ("[m\n", "not TOML"),
    ]:
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(PriceFileError, match=message):
            PriceTable.load(bad)
        with pytest.raises(ConfigError, match="VOICE_BRIDGE_PRICES="):
            Settings.from_env({"VOICE_BRIDGE_INSECURE_DEV": "1", "VOICE_BRIDGE_PRICES": str(bad)})
    with pytest.raises(ConfigError, match="no such file"):
        Settings.from_env({"VOICE_BRIDGE_INSECURE_DEV": "1", "VOICE_BRIDGE_PRICES": str(tmp_path / "missing.toml")})


@pytest.mark.parametrize(
    ("remaining", "limit", "percent", "low"),
    [(99, 1000, 10, True), (100, 1000, 10, False), (0, 1000, 0, False), (5, None, 10, False), (None, 10, 10, False), (0, 0, 10, False)],
)
def test_rate_limit_headroom(remaining: int | None, limit: int | None, percent: int, low: bool) -> None:
    assert is_low(remaining, limit, percent) is low


def test_rate_limit_percent_setting() -> None:
    assert Settings.from_env({"VOICE_BRIDGE_INSECURE_DEV": "1"}).rate_limit_warn_percent == 10
    assert Settings.from_env({"VOICE_BRIDGE_INSECURE_DEV": "1", "VOICE_BRIDGE_RATE_LIMIT_WARN_PERCENT": "25"}).rate_limit_warn_percent == 25
    with pytest.raises(ConfigError, match="VOICE_BRIDGE_RATE_LIMIT_WARN_PERCENT"):
        Settings.from_env({"VOICE_BRIDGE_INSECURE_DEV": "1", "VOICE_BRIDGE_RATE_LIMIT_WARN_PERCENT": "101"})
