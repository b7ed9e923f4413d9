"""Prometheus metrics for one bridge process, in its own registry (no global state)."""

from __future__ import annotations

from collections.abc import Collection

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .logs import dropped_log_lines

OTHER = "other"


def bounded_label(value: str, allowed: Collection[str]) -> str:
    """A label value fed from outside (a peer, the model): one of `allowed`, else `other`.

    Every distinct label value is a series held for the life of the process: a peer that can
    choose values could grow `/metrics` and memory without bound.
    """
    return value if value in allowed else OTHER


# Latency buckets for telephony: what matters is tens to hundreds of milliseconds.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_DURATION_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)


class Metrics:
    """Every metric the bridge exports; units are in the names."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        # One builder per concern, registered in this order (the order of GET /metrics). A new
        # concern adds its own builder at the end of the class and one call at the end here.
        self._call_metrics(self.registry)
        self._frame_metrics(self.registry)
        self._wire_edge_metrics(self.registry)
        self._ops_metrics(self.registry)
        self._network_metrics(self.registry)
        self._stall_metrics(self.registry)
        self._model_usage_metrics(self.registry)
        self._rate_limit_metrics(self.registry)
        self._dead_air_metrics(self.registry)
        self._session_switch_metrics(self.registry)

    def _call_metrics(self, r: CollectorRegistry) -> None:
        """Calls, webhooks and what the caller experiences: latencies, barge-ins, tools."""
        self.active_calls = Gauge("voice_bridge_active_calls", "Calls with an open media stream.", registry=r)
        self.calls = Counter("voice_bridge_calls", "Calls ended, by outcome.", ["outcome"], registry=r)
        self.call_duration = Histogram(
            "voice_bridge_call_duration_seconds", "Media stream duration.", buckets=_DURATION_BUCKETS, registry=r
        )
        self.webhooks = Counter(
            "voice_bridge_webhooks", "Twilio webhook requests, by route and result.", ["route", "result"], registry=r
        )
        self.upstream_connect = Histogram(
            "voice_bridge_upstream_connect_seconds",
            "Time to open the upstream Realtime session.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.first_greeting_audio = Histogram(
            "voice_bridge_first_greeting_audio_seconds",
            "From the stream's start event to the first greeting audio sent to Twilio.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.turn_latency = Histogram(
            "voice_bridge_turn_latency_seconds",
            "From the caller's speech_stopped to each stage of the answer "
            "(model_audio: first delta; media_sent: first media to Twilio; heard: first mark echo).",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.barge_ins = Counter("voice_bridge_barge_ins", "Caller interruptions of model audio.", registry=r)
        self.truncations = Counter("voice_bridge_truncations", "conversation.item.truncate sent.", registry=r)
        self.truncate_errors = Counter("voice_bridge_truncate_errors", "Truncations the upstream refused.", registry=r)
        self.tool_calls = Counter("voice_bridge_tool_calls", "Tool calls, by tool and outcome.", ["tool", "outcome"], registry=r)

    def _frame_metrics(self, r: CollectorRegistry) -> None:
        """Media frames and the time they spend inside the bridge; the process draining."""
        self.frames = Counter("voice_bridge_frames", "Twilio media frames, by direction (in, out).", ["direction"], registry=r)
        self.dropped_frames = Counter("voice_bridge_dropped_frames", "Audio frames dropped, by reason.", ["reason"], registry=r)
        self.rejections = Counter("voice_bridge_rejections", "Bad input refused, by reason.", ["reason"], registry=r)
        self.upstream_errors = Counter("voice_bridge_upstream_errors", "Upstream error events, by code.", ["code"], registry=r)
        self.relay = Histogram(
            "voice_bridge_relay_seconds",
            "Time a frame spends inside the bridge: Twilio media in to append sent (caller_to_model; with "
            "VOICE_BRIDGE_APPEND_MS above 20, the frame that completes an append, the earlier ones having waited "
            "for it by design), model audio delta in to media sent (model_to_caller).",
            ["direction"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1),
            registry=r,
        )
        self.loop_lag = Histogram(
            "voice_bridge_event_loop_lag_seconds",
            "How late a 100 ms timer fires on the event loop: the wait every frame has before the bridge "
            "even reads it (an overloaded process shows here, not in voice_bridge_relay_seconds).",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        self.draining = Gauge("voice_bridge_draining", "1 while the process drains before exit.", registry=r)

    def _wire_edge_metrics(self, r: CollectorRegistry) -> None:
        """Input refused at the edges: unreadable upstream events and refused HTTP connections."""
        # issue 13 (wire, class 1): upstream events that could not be read, skipped; reason from BAD_EVENT_REASONS.
        self.upstream_bad_events = Counter(
            "voice_bridge_upstream_bad_events", "Upstream events skipped as unreadable, by reason.", ["reason"], registry=r
        )
        # issue 13 class 4 (HTTP edge): connections closed before a request reached the app
        self.http_refused = Counter(
            "voice_bridge_http_refused",
            "Connections refused by the HTTP edge, by reason (header_timeout, too_many_connections).",
            ["reason"],
            registry=r,
        )

    def _ops_metrics(self, r: CollectorRegistry) -> None:
        """Operations: lost log lines and upstream readiness."""
        # class 9 (ops): log lines lost to a failing stderr (a broken pipe), and upstream readiness.
        self.dropped_log_lines = Gauge(
            "voice_bridge_dropped_log_lines", "Log lines lost because stderr could not be written (since start).", registry=r
        )
        self.dropped_log_lines.set_function(dropped_log_lines)
        self.upstream_ready = Gauge(
            "voice_bridge_upstream_ready",
            "1 while the upstream is believed reachable (probe or last connect), else 0.",
            registry=r,
        )
        self.upstream_probes = Counter(
            "voice_bridge_upstream_probes",
            "Upstream readiness probes, by result (ok, or the failure reason).",
            ["result"],
            registry=r,
        )

    def _network_metrics(self, r: CollectorRegistry) -> None:
        """The network between the bridge and Twilio."""
        # Network-aware barge-in (issue 14): each measured Twilio round trip (probe marks, clear echoes).
        self.twilio_rtt = Histogram(
            "voice_bridge_twilio_rtt_seconds",
            "Round trip bridge -> Twilio -> bridge, measured from mark echoes (a mark sent while nothing "
            "plays, and the marks Twilio returns on clear); barge-in accounting adds it to the echoes.",
            buckets=(0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0),
            registry=r,
        )

    def _stall_metrics(self, r: CollectorRegistry) -> None:
        """Peers that stopped reading."""
        # issue 13 class 3 (stalled peers): a peer that stopped reading, whose connection was aborted
        self.peer_stalls = Counter(
            "voice_bridge_peer_stalls",
            "Peers that stopped reading and were cut off after a send or close deadline, by peer (twilio, upstream).",
            ["peer"],
            registry=r,
        )

    def _model_usage_metrics(self, r: CollectorRegistry) -> None:
        """What the model spends and refuses: tokens, estimated cost, failed responses, warnings, rate limits."""
        # issue 17 (telemetry): usage of every response.done, failures, warnings, rate limits, unhandled events.
        self.tokens = Counter(
            "voice_bridge_tokens",
            "Model tokens of every response, by profile, direction (input: uncached, cached_input, output) and "
            "modality (text, audio).",
            ["profile", "direction", "modality"],
            registry=r,
        )
        self.call_cost_estimate = Histogram(
            "voice_bridge_call_cost_estimate_dollars",
            "ESTIMATED model cost of each call in US dollars, from the price table (calls of a model without a price "
            "are not observed).",
            ["profile"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )
        self.responses = Counter(
            "voice_bridge_responses",
            "Model responses ended (response.done), by status (completed, cancelled, incomplete, failed).",
            ["status"],
            registry=r,
        )
        self.response_failures = Counter(
            "voice_bridge_response_failures",
            "Model responses that ended failed or incomplete, by status and reason (error code or type, or "
            "incomplete reason).",
            ["status", "reason"],
            registry=r,
        )
        self.upstream_warnings = Counter(
            "voice_bridge_upstream_warnings", "Upstream warning events (Voice Live), by code.", ["code"], registry=r
        )
        self.upstream_ignored_events = Counter(
            "voice_bridge_upstream_ignored_events",
            "Upstream events the bridge does not act on, by event type.",
            ["event_type"],
            registry=r,
        )

    def _rate_limit_metrics(self, r: CollectorRegistry) -> None:
        """The upstream account's rate limits, as its rate_limits.updated events say."""
        # issue 17 (telemetry): rate_limits.updated, per limit name (requests, tokens)
        self.rate_limit_remaining = Gauge(
            "voice_bridge_upstream_rate_limit_remaining",
            "Remaining requests or tokens as the last rate_limits.updated said, by limit name.",
            ["name"],
            registry=r,
        )
        self.rate_limit_limit = Gauge(
            "voice_bridge_upstream_rate_limit_limit",
            "The limit of requests or tokens as the last rate_limits.updated said, by limit name.",
            ["name"],
            registry=r,
        )
        self.rate_limit_reset = Gauge(
            "voice_bridge_upstream_rate_limit_reset_seconds",
            "Seconds until the limit resets as the last rate_limits.updated said, by limit name.",
            ["name"],
            registry=r,
        )
        self.rate_limit_low = Counter(
            "voice_bridge_upstream_rate_limit_low",
            "rate_limits.updated events whose remaining fell under VOICE_BRIDGE_RATE_LIMIT_WARN_PERCENT of the limit.",
            ["name"],
            registry=r,
        )

    def _dead_air_metrics(self, r: CollectorRegistry) -> None:
        """Waits the caller would hear as silence."""
        # No dead air (issue 16): fillers played, how each wait for the model's first audio ended,
        # check-ins with a silent caller (calls ended so: voice_bridge_calls_total{outcome="caller_silent"}).
        self.fillers = Counter(
            "voice_bridge_fillers",
            "Filler clips played while the caller waited, by reason (slow_model, slow_tool).",
            ["reason"],
            registry=r,
        )
        self.turn_watchdog = Counter(
            "voice_bridge_turn_watchdog",
            "Waits for the model's first audio, by outcome (answered, retried: answered after one retry, failed: gave up).",
            ["outcome"],
            registry=r,
        )
        self.reprompts = Counter(
            "voice_bridge_reprompts", "Check-ins asked of the model after the caller was silent.", registry=r
        )

    def _session_switch_metrics(self, r: CollectorRegistry) -> None:
        """Calls moved to a new model session: planned rollovers and replacements of lost sessions."""
        # issue 18 (rollover): reason from rollover.ROLLOVER_REASONS, quiet true/false; results are literals
        self.session_rollovers = Counter(
            "voice_bridge_session_rollovers",
            "Planned rollovers to a new model session, by reason (session_age, expires_at, input_tokens) and quiet "
            "(false: no quiet moment came before the hard deadline, switched anyway).",
            ["reason", "quiet"],
            registry=r,
        )
        self.session_rollover_failures = Counter(
            "voice_bridge_session_rollover_failures",
            "Planned rollovers whose next session could not be opened (the old session goes on), by reason.",
            ["reason"],
            registry=r,
        )
        self.session_replacements = Counter(
            "voice_bridge_session_replacements",
            "Attempts to replace a lost model session (dropped or expired), by result (ok; failed: another try may "
            "follow; refused: 401/403/404, no further try).",
            ["result"],
            registry=r,
        )
        # issue 18 (out-of-band summary): source model/transcript, literals (the reason is in the log)
        self.rollover_summaries = Counter(
            "voice_bridge_rollover_summaries",
            "Summaries a new model session was seeded with, by source (model: asked out of band before a "
            "planned rollover; transcript: built from the heard transcript, the fallback).",
            ["source"],
            registry=r,
        )

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition format and its content type, for `GET /metrics`."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
