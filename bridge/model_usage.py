"""What one call's model spends and reports beyond its audio: token usage and its estimated cost,
failed and incomplete responses, warnings, rate limits, and the events the bridge does not act on.

One object per call (`ModelUsage`), fed the typed events by the call's model-event handler; it
counts (bridge.telemetry), logs (bound to the call) and adds to the call's trace. Every label value
that comes from the model is from a fixed set plus `other`.
"""

from __future__ import annotations

from dataclasses import dataclass

from structlog.stdlib import BoundLogger

from . import dialects
from .cost import DIRECTIONS, MODALITIES, Price, UsageTotals
from .realtime_events import Ignored, RateLimitsUpdated, ResponseFinished, ServerEvent, UpstreamWarning
from .telemetry import Metrics, bounded_label
from .tracing import NO_TRACE, NoTrace

DEFAULT_RATE_LIMIT_WARN_PERCENT = 10


@dataclass(frozen=True, slots=True)
class UsagePolicy:
    """Per call: who pays (profile), at what price (an estimate), and when a rate limit is low."""

    profile: str = "default"  # a profile name from the operator's profile file: a bounded label
    price_key: str | None = None  # the price table's key that matched the model, for the logs
    price: Price | None = None  # None: no price for this model; tokens counted, no cost estimate
    rate_limit_warn_percent: int = DEFAULT_RATE_LIMIT_WARN_PERCENT


class ModelUsage:
    def __init__(self, metrics: Metrics, log: BoundLogger, policy: UsagePolicy, trace: NoTrace = NO_TRACE) -> None:
        self.metrics = metrics
        self.log = log
        self.policy = policy
        self.trace = trace
        self.totals = UsageTotals(policy.price)
        self.failures = 0
        self.warnings = 0
        self._ignored: dict[str, object] = {}  # event type → its counter child (one lookup per type)

    def response_finished(self, event: ResponseFinished) -> None:
        counts = None if event.usage is None else self.totals.add(event.usage)
        if counts is None:
            self.totals.add_without_usage()
        else:
            profile = self.policy.profile
            for (direction, modality), tokens in counts.items():
                if tokens:
                    self.metrics.tokens.labels(
                        profile=profile,
                        direction=bounded_label(direction, DIRECTIONS),
                        modality=bounded_label(modality, MODALITIES),
                    ).inc(tokens)
        self.trace.response_finished(event.status, counts)
        self.metrics.responses.labels(status=bounded_label(event.status, dialects.RESPONSE_STATUSES)).inc()
        if event.failed:
            self.failures += 1
            reason = event.reason or event.error_code or event.error_type or "none"
            self.metrics.response_failures.labels(
                status=bounded_label(event.status, dialects.RESPONSE_FAILURE_STATUSES),
                reason=bounded_label(reason, dialects.RESPONSE_FAILURE_REASONS | {"none"}),
            ).inc()
            # The caller heard less than the model meant to say (or nothing): say why.
            self.log.warning(
                "model.response_failed",
                response_id=event.response_id,
                status=event.status,
                reason=event.reason or None,
                error_type=event.error_type or None,
                code=event.error_code or None,
                message=event.error_message or None,
            )

    def note(self, event: ServerEvent) -> None:
        """Events that only inform: warnings, rate limits, and those the bridge does not act on."""
        if isinstance(event, Ignored):
            self._ignored_event(event.wire_type)
        elif isinstance(event, UpstreamWarning):
            self.warnings += 1
            self.metrics.upstream_warnings.labels(code=bounded_label(event.code or "none", dialects.KNOWN_WARNING_CODES)).inc()
            self.log.warning("upstream.warning", code=event.code or None, message=event.message)
        elif isinstance(event, RateLimitsUpdated):
            self._rate_limits(event)

    def _ignored_event(self, wire_type: str) -> None:
        counter = self._ignored.get(wire_type)
        if counter is None:
            if len(self._ignored) >= 256:  # a model inventing types: stop remembering, keep counting
                self.metrics.upstream_ignored_events.labels(event_type="other").inc()
                return
            known = wire_type in dialects.KNOWN_SERVER_EVENT_TYPES
            if not known:
                self.log.debug("upstream.unknown_event", event_type=wire_type)
            counter = self._ignored[wire_type] = self.metrics.upstream_ignored_events.labels(
                event_type=bounded_label(wire_type, dialects.KNOWN_SERVER_EVENT_TYPES)
            )
        counter.inc()  # type: ignore[attr-defined]

    def _rate_limits(self, event: RateLimitsUpdated) -> None:
        metrics = self.metrics
        for limit in event.limits:
            readings = (
                (metrics.rate_limit_remaining, limit.remaining),
                (metrics.rate_limit_limit, limit.limit),
                (metrics.rate_limit_reset, limit.reset_seconds),
            )
            for gauge, reading in readings:
                if reading is not None:
                    gauge.labels(name=bounded_label(limit.name, dialects.RATE_LIMIT_NAMES)).set(reading)
            if is_low(limit.remaining, limit.limit, self.policy.rate_limit_warn_percent):
                metrics.rate_limit_low.labels(name=bounded_label(limit.name, dialects.RATE_LIMIT_NAMES)).inc()
                self.log.warning(
                    "upstream.rate_limit_low",
                    name=limit.name,
                    remaining=limit.remaining,
                    limit=limit.limit,
                    reset_seconds=limit.reset_seconds,
                    warn_percent=self.policy.rate_limit_warn_percent,
                )

    def summary(self) -> dict[str, int | float | str | None]:
        """What `call.ended` carries: tokens, the estimated cost (None without a price), failures."""
        return {
            **self.totals.summary(),
            "price": self.policy.price_key,
            "response_failures": self.failures,
            "upstream_warnings": self.warnings,
        }

    def call_ended(self) -> dict[str, int | float | str | None]:
        """The call's estimated cost into the per-profile histogram (only calls that had a price and a
        response); returns the summary for `call.ended`."""
        cost = self.totals.cost_estimate
        if cost is not None and self.totals.with_usage:
            self.metrics.call_cost_estimate.labels(profile=self.policy.profile).observe(cost)
        return self.summary()


def is_low(remaining: int | None, limit: int | None, warn_percent: int) -> bool:
    """Remaining under `warn_percent` % of the limit (0 % never warns)."""
    if remaining is None or not limit or warn_percent <= 0:
        return False
    return remaining * 100 < limit * warn_percent
