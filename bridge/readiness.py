"""Whether a call can reach the model now, for `GET /readyz`.

`UpstreamReadiness` is the pure core: a state machine fed by the outcomes of upstream probes and of
the calls' real connects, with the time passed in. `ReadinessMonitor` is its thin shell: it runs
the probes when the core says one is due, logs the changes and sets the metrics.

- At start the bridge is not ready (`probing`) until the first probe answers.
- A failed probe, or a call whose connect fails, makes it not ready (`upstream_unavailable`, with
  the reason); probes then run after 1 s, 2 s, 4 s … (capped at 30 s) until one succeeds.
- A successful probe, or any call that connects, makes it ready again. While ready nothing is
  probed: the calls themselves are the probe.

The probe (`probe_upstream` in upstream.py) is what a call's connect does, minus the session: the
authentication headers (an Entra ID token from the process's cache), TCP, TLS and the WebSocket
opening handshake, then an immediate close. At Realtime services the handshake creates a session
that is closed before anything is sent (no audio, no tokens); it is done once at start and, while
the upstream fails, once per backoff step (at most 120 an hour at the 30 s cap), never while ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

from .logs import get_logger

log = get_logger("bridge.readiness")

# Why the upstream is unavailable: a fixed set (also the probe metric's label values).
REASONS = ("auth", "not_found", "rejected", "unreachable", "timeout", "tls", "protocol")
PROBE_RESULTS = ("ok", *REASONS)  # the values of voice_bridge_upstream_probes_total{result}


class Phase(Enum):
    PROBING = "probing"  # nothing known yet: the first probe is due or under way
    READY = "ready"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class ProbePolicy:
    first_retry_s: float = 1.0
    max_retry_s: float = 30.0
    timeout_s: float = 5.0  # one probe: headers + TCP + TLS + opening handshake

    def retry_after_s(self, failures: int) -> float:
        return min(self.max_retry_s, self.first_retry_s * 2 ** min(failures - 1, 30))


@dataclass(frozen=True, slots=True)
class Change:
    """A change of readiness worth a log line: the new phase and reason."""

    phase: Phase
    reason: str | None


class UpstreamReadiness:
    """Ready / not ready / probing, and when the next probe is due. Pure: times are passed in."""

    def __init__(self, now: float, policy: ProbePolicy = ProbePolicy()) -> None:
        self.policy = policy
        self.phase = Phase.PROBING
        self.reason: str | None = None
        self.failures = 0  # in a row, probes and connects alike
        self.next_probe_at: float | None = now
        self.probing = False  # a probe is under way
        self._last_outcome_at = -math.inf  # when a call's connect last succeeded or failed

    @property
    def ready(self) -> bool:
        return self.phase is Phase.READY

    def seconds_until_probe(self, now: float) -> float | None:
        """0 when a probe should start now; None when none is due (ready, or one is under way)."""
        if self.phase is Phase.READY or self.probing or self.next_probe_at is None:
            return None
        return max(0.0, self.next_probe_at - now)

    def probe_started(self, now: float) -> float:
        self.probing = True
        return now

    def probe_finished(self, started_at: float, reason: str | None, now: float) -> Change | None:
        """A probe's outcome (`reason` None: it connected). A call's connect since its start wins."""
        self.probing = False
        if self._last_outcome_at >= started_at:
            return None
        return self._record(reason, now)

    def connect_succeeded(self, now: float) -> Change | None:
        self._last_outcome_at = now
        return self._record(None, now)

    def connect_failed(self, reason: str, now: float) -> Change | None:
        self._last_outcome_at = now
        return self._record(reason, now)

    def body(self, now: float) -> dict[str, object]:
        """What /readyz says about the upstream when it is not ready."""
        if self.phase is Phase.PROBING:
            return {"status": "upstream_probing"}
        wait = self.seconds_until_probe(now)
        return {
            "status": "upstream_unavailable",
            "reason": self.reason,
            "failures": self.failures,
            "next_probe_in_s": round(wait, 1) if wait is not None else 0.0,
        }

    def _record(self, reason: str | None, now: float) -> Change | None:
        before = (self.phase, self.reason)
        if reason is None:
            self.phase, self.reason, self.failures, self.next_probe_at = Phase.READY, None, 0, None
        else:
            self.failures += 1
            self.phase, self.reason = Phase.UNAVAILABLE, reason if reason in REASONS else "unreachable"
            self.next_probe_at = now + self.policy.retry_after_s(self.failures)
        return Change(self.phase, self.reason) if (self.phase, self.reason) != before else None


Probe = Callable[[], Awaitable[tuple[str | None, str]]]  # → (reason or None, detail for the log)


class ReadinessMonitor:
    """Runs `UpstreamReadiness`: probes when due, logs changes, sets the metrics."""

    def __init__(
        self,
        probe: Probe,
        policy: ProbePolicy = ProbePolicy(),
        *,
        on_probe: Callable[[str], None] = lambda result: None,  # "ok" or the reason
        on_change: Callable[[bool], None] = lambda ready: None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._clock = clock or asyncio.get_running_loop().time
        self.state = UpstreamReadiness(self._clock(), policy)
        self._probe = probe
        self._on_probe = on_probe
        self._on_change = on_change
        self._wake = asyncio.Event()

    @property
    def ready(self) -> bool:
        return self.state.ready

    def body(self) -> dict[str, object]:
        return self.state.body(self._clock())

    def connect_succeeded(self) -> None:
        self._apply(self.state.connect_succeeded(self._clock()), "call")

    def connect_failed(self, reason: str, detail: str) -> None:
        self._apply(self.state.connect_failed(reason, self._clock()), "call", detail)
        self._wake.set()

    async def run_forever(self) -> None:
        while True:
            wait = self.state.seconds_until_probe(self._clock())
            if wait is None or wait > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                continue
            started = self.state.probe_started(self._clock())
            try:
                reason, detail = await self._probe()
            except Exception as exc:  # noqa: BLE001 - a probe bug must not end the probing
                reason, detail = "protocol", f"{type(exc).__name__}"
            self._on_probe(reason or "ok")
            self._apply(self.state.probe_finished(started, reason, self._clock()), "probe", detail)

    def _apply(self, change: Change | None, source: str, detail: str = "") -> None:
        if change is None:
            return
        self._on_change(change.phase is Phase.READY)
        if change.phase is Phase.READY:
            log.info("upstream.ready", source=source)
        else:
            log.warning(
                "upstream.not_ready",
                source=source,
                reason=change.reason,
                detail=detail,
                next_probe_in_s=self.state.body(self._clock()).get("next_probe_in_s"),
            )
