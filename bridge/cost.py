"""Token usage and its estimated cost (pure: no I/O but reading a price file at start).

Realtime models bill per token: input (text, audio; cached input cheaper) and output (text, audio).
Every response's `usage` re-counts the conversation so far as input, so a call's cost grows faster
than its length. `UsageTotals` adds a call's responses up; `PriceTable` turns tokens into an
**estimate** in US dollars from a table of prices per 1M tokens.

The shipped prices are ESTIMATES copied from the providers' public price lists as of
`PRICES_AS_OF` (sources in `PRICE_SOURCES`); prices change and contracts differ. Override them with
a TOML file (`VOICE_BRIDGE_PRICES`): one table per model, any of the six fields, e.g.

    ["gpt-realtime"]
    audio_input = 32.0
    cached_audio_input = 0.4
    audio_output = 64.0
    text_input = 4.0
    cached_text_input = 0.4
    text_output = 16.0

A model is looked up as `<upstream>/<model>` first (Voice Live prices differ from the model
vendor's), then `<model>`; a key also matches a model name it is a prefix of (`gpt-realtime`
matches `gpt-realtime-2025-08-28`), the longest key winning. No match: tokens are counted, the
cost is unknown (`None`), never guessed.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from .realtime_events import TokenUsage

PRICES_AS_OF = "2025-10-01"
PRICE_SOURCES = (
    "https://openai.com/api/pricing/ (gpt-realtime, gpt-realtime-mini, gpt-4o(-mini)-realtime-preview)",
    "https://azure.microsoft.com/pricing/details/cognitive-services/speech-services/ (Voice Live Pro/Standard)",
)
# (direction, modality) of every token count: label values of voice_bridge_tokens_total. `input` is
# uncached input, `cached_input` the cached part (billed at the cached price): the three add up to
# what the model read, and every token is in exactly one.
DIRECTIONS = ("input", "cached_input", "output")
MODALITIES = ("text", "audio")
PER_TOKENS = 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    """US dollars per 1M tokens of each kind (an estimate)."""

    text_input: float = 0.0
    cached_text_input: float = 0.0
    text_output: float = 0.0
    audio_input: float = 0.0
    cached_audio_input: float = 0.0
    audio_output: float = 0.0

    def per_token(self, direction: str, modality: str) -> float:
        name = {"input": "{m}_input", "cached_input": "cached_{m}_input", "output": "{m}_output"}[direction]
        return float(getattr(self, name.format(m=modality))) / PER_TOKENS


_PRICE_FIELDS = tuple(f.name for f in fields(Price))

# Estimates, USD per 1M tokens, as of PRICES_AS_OF. Voice Live bills its own rates per tier (Pro:
# gpt-realtime, gpt-4o, gpt-4.1, gpt-5; Standard: the -mini models), about 10 % over the model's.
DEFAULT_PRICES: Mapping[str, Price] = {
    "gpt-realtime": Price(4.0, 0.4, 16.0, 32.0, 0.4, 64.0),
    "gpt-realtime-mini": Price(0.6, 0.06, 2.4, 10.0, 0.3, 20.0),
    "gpt-4o-realtime-preview": Price(5.0, 2.5, 20.0, 40.0, 2.5, 80.0),
    "gpt-4o-mini-realtime-preview": Price(0.6, 0.3, 2.4, 10.0, 0.3, 20.0),
    "voicelive/gpt-realtime": Price(5.5, 2.75, 22.0, 44.0, 2.75, 88.0),
    "voicelive/gpt-4o": Price(5.5, 2.75, 22.0, 44.0, 2.75, 88.0),
    "voicelive/gpt-4.1": Price(5.5, 2.75, 22.0, 44.0, 2.75, 88.0),
    "voicelive/gpt-5": Price(5.5, 2.75, 22.0, 44.0, 2.75, 88.0),
    "voicelive/gpt-realtime-mini": Price(0.66, 0.33, 2.64, 11.0, 0.33, 22.0),
    "voicelive/gpt-4o-mini": Price(0.66, 0.33, 2.64, 11.0, 0.33, 22.0),
    "voicelive/gpt-4.1-mini": Price(0.66, 0.33, 2.64, 11.0, 0.33, 22.0),
    "voicelive/gpt-5-mini": Price(0.66, 0.33, 2.64, 11.0, 0.33, 22.0),
}
MAX_PRICE = 100_000.0  # per 1M tokens: anything above is a typo in the price file


class PriceFileError(ValueError):
    """The price file cannot be used; the message says where and why."""


@dataclass(frozen=True, slots=True)
class PriceTable:
    prices: Mapping[str, Price]

    @classmethod
    def default(cls) -> PriceTable:
        return cls(dict(DEFAULT_PRICES))

    def with_overrides(self, overrides: Mapping[str, Any], where: str = "prices") -> PriceTable:
        """The table with `overrides` ({model: {field: price}}) laid over it, each value checked."""
        prices = dict(self.prices)
        for model, table in overrides.items():
            if not isinstance(table, Mapping):
                raise PriceFileError(f"{where}: [{model}] must be a table of prices per 1M tokens")
            unknown = sorted(set(table) - set(_PRICE_FIELDS))
            if unknown:
                raise PriceFileError(f"{where}: [{model}] unknown field {unknown[0]!r}: expected {', '.join(_PRICE_FIELDS)}")
            checked: dict[str, float] = {}
            for name, value in table.items():
                ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
                if not ok or not 0 <= value <= MAX_PRICE:
                    raise PriceFileError(f"{where}: [{model}] {name} must be a number of dollars from 0 to {MAX_PRICE:g}")
                checked[name] = float(value)
            prices[model] = replace(prices.get(model, Price()), **checked)
        return PriceTable(prices)

    @classmethod
    def load(cls, path: str | Path) -> PriceTable:
        """The defaults overridden by a TOML price file."""
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise PriceFileError(f"{path}: cannot be read ({type(exc).__name__})") from None
        except tomllib.TOMLDecodeError as exc:
            raise PriceFileError(f"{path}: not TOML ({exc})") from None
        return cls.default().with_overrides(data, where=str(path))

    def lookup(self, upstream: str, model: str | None) -> tuple[str, Price] | None:
        """The price key and price of `model` on `upstream`, or None when the table has none."""
        if not model:
            return None
        for name in (f"{upstream}/{model}", model):
            matches = [key for key in self.prices if name == key or name.startswith(key + "-")]
            if matches:
                key = max(matches, key=len)
                return key, self.prices[key]
        return None


def token_counts(usage: TokenUsage) -> dict[tuple[str, str], int]:
    """A response's usage by (direction, modality), every token in exactly one count."""
    return {
        ("input", "text"): usage.input_text - usage.cached_text,
        ("input", "audio"): usage.input_audio - usage.cached_audio,
        ("cached_input", "text"): usage.cached_text,
        ("cached_input", "audio"): usage.cached_audio,
        ("output", "text"): usage.output_text,
        ("output", "audio"): usage.output_audio,
    }


def cost_estimate(counts: Mapping[tuple[str, str], int], price: Price) -> float:
    """US dollars for these token counts at `price` (an estimate)."""
    return sum(tokens * price.per_token(direction, modality) for (direction, modality), tokens in counts.items())


class UsageTotals:
    """One call's tokens, response by response, and their estimated cost (None without a price)."""

    def __init__(self, price: Price | None = None) -> None:
        self.price = price
        self.responses = 0  # every response that ended
        self.with_usage = 0  # of which reported a usage
        self.counts: dict[tuple[str, str], int] = {(d, m): 0 for d in DIRECTIONS for m in MODALITIES}

    def add(self, usage: TokenUsage) -> dict[tuple[str, str], int]:
        """Book one response's usage; returns its counts."""
        counts = token_counts(usage)
        self.responses += 1
        self.with_usage += 1
        for key, tokens in counts.items():
            self.counts[key] += tokens
        return counts

    def add_without_usage(self) -> None:
        """A response ended without a usage (the local agent, an old service): counted, no tokens."""
        self.responses += 1

    @property
    def total_tokens(self) -> int:
        return sum(self.counts.values())

    @property
    def input_tokens(self) -> int:
        return sum(n for (d, _), n in self.counts.items() if d != "output")

    @property
    def output_tokens(self) -> int:
        return sum(n for (d, _), n in self.counts.items() if d == "output")

    @property
    def cost_estimate(self) -> float | None:
        return cost_estimate(self.counts, self.price) if self.price is not None else None

    def summary(self) -> dict[str, int | float | None]:
        """The fields `call.ended` carries."""
        cost = self.cost_estimate
        return {
            "responses": self.responses,
            "tokens_input": self.input_tokens,
            "tokens_cached_input": self.counts["cached_input", "text"] + self.counts["cached_input", "audio"],
            "tokens_output": self.output_tokens,
            "tokens_audio": sum(n for (_, m), n in self.counts.items() if m == "audio"),
            "cost_estimate_usd": round(cost, 6) if cost is not None else None,
        }
