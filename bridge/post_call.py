"""The post-call record: what happened on a call, as JSON, written next to its recording and POSTed
to `VOICE_BRIDGE_POST_CALL_URL`.

`build_record` is pure. `PostCallDelivery` sends each record in the background, retried with
backoff on a failure worth retrying (no answer, 408, 429, 5xx) within a bounded time, with an
`Idempotency-Key` header per call so a receiver that saw an attempt whose answer was lost processes
the call once. Teardown never waits for it; on shutdown `aclose()` waits at most `CLOSE_WAIT_S` for
deliveries still under way, then gives them up (logged).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from .call.session import CallSession
from .call.transcript import HeardTurn
from .cost import UsageTotals
from .logs import get_logger

log = get_logger("bridge.post_call")

RECORD_VERSION = 1
RECORD_FILE = "post_call.json"
ATTEMPT_TIMEOUT_S = 5.0  # one POST, connect to answer
BACKOFF_S = (0.5, 1.0, 2.0, 4.0)  # before the 2nd, 3rd, 4th, 5th attempt
DELIVERY_BUDGET_S = 20.0  # a record not delivered by then is given up (logged)
CLOSE_WAIT_S = 5.0  # on shutdown, how long deliveries under way may finish
RETRY_STATUSES = frozenset({408, 425, 429})
REDACTED = "[redacted]"


def build_record(
    call_sid: str,
    *,
    started_at: float,
    duration_s: float,
    outcome: str,
    profile: str,
    turns: Sequence[HeardTurn],
    counts: dict[str, int],
    usage: dict[str, Any],
    redact_transcript: bool,
) -> dict[str, Any]:
    """One call's record (`started_at`: Unix time); `usage` from `usage_fields` (null when unknown)."""
    return {
        "version": RECORD_VERSION,
        "idempotency_key": idempotency_key(call_sid),
        "call_sid": call_sid,
        "started_at": round(started_at, 3),
        "duration_s": round(duration_s, 3),
        "outcome": outcome,
        "profile": profile,
        **counts,
        **usage,
        "transcript": [
            {"role": t.role, "text": REDACTED if redact_transcript else t.text, "interrupted": t.interrupted} for t in turns
        ],
    }


def usage_fields(totals: UsageTotals, price_key: str | None) -> dict[str, Any]:
    """The call's tokens and ESTIMATED cost from its telemetry (bridge.model_usage): tokens null when
    the service reported no usage, the cost null also when the model has no price (never guessed)."""
    reported = totals.with_usage > 0
    summary = totals.summary()
    cost = summary["cost_estimate_usd"] if reported else None
    return {
        "responses_with_usage": totals.with_usage,
        "input_tokens": summary["tokens_input"] if reported else None,  # uncached + cached, as billed
        "cached_input_tokens": summary["tokens_cached_input"] if reported else None,
        "output_tokens": summary["tokens_output"] if reported else None,
        "estimated_cost_usd": cost,
        "price": price_key if cost is not None else None,  # the price table's key that priced it
    }


def idempotency_key(call_sid: str) -> str:
    return f"voice-bridge-call-{call_sid}"


def write_record(record_dir: str, record: dict[str, Any]) -> Path:
    """`<record_dir>/<CallSid>/post_call.json`, private to the service's user."""
    folder = Path(record_dir) / str(record["call_sid"])
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / RECORD_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(record, out, ensure_ascii=False, indent=1)
    return path


class PostCallDelivery:
    """Writes and POSTs records in the background; one per process."""

    def __init__(self, url: str | None, record_dir: str | None, backoff_s: Sequence[float] = BACKOFF_S) -> None:
        self.url = url
        self.record_dir = record_dir
        self.backoff_s = tuple(backoff_s)
        self.delivered = 0
        self.failed = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    def submit(self, record: dict[str, Any]) -> None:
        """Never waits: the record is written and sent by a background task."""
        task = asyncio.create_task(self._deliver(record), name="post_call")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, record: dict[str, Any]) -> None:
        call_sid = record["call_sid"]
        if self.record_dir is not None:
            try:
                await asyncio.to_thread(write_record, self.record_dir, record)
            except OSError as exc:
                log.error("post_call.write_failed", call_sid=call_sid, error=type(exc).__name__)
        if self.url is None:
            return
        try:
            async with asyncio.timeout(DELIVERY_BUDGET_S):
                outcome = await self._post(record)
        except TimeoutError:
            outcome = "timeout"
        if outcome == "delivered":
            self.delivered += 1
            log.info("post_call.delivered", call_sid=call_sid)
        else:
            self.failed += 1
            log.error("post_call.failed", call_sid=call_sid, reason=outcome)

    async def _post(self, record: dict[str, Any]) -> str:
        """'delivered', or why not: the last status or error."""
        assert self.url is not None
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=ATTEMPT_TIMEOUT_S))
        headers = {"Idempotency-Key": str(record["idempotency_key"]), "Content-Type": "application/json"}
        body = json.dumps(record, ensure_ascii=False).encode()
        reason = "not_tried"
        for attempt in range(len(self.backoff_s) + 1):
            if attempt:
                await asyncio.sleep(self.backoff_s[attempt - 1])
            try:
                async with self._session.post(self.url, data=body, headers=headers) as response:
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = type(exc).__name__
                continue
            if 200 <= status < 300:
                return "delivered"
            reason = f"http_{status}"
            if status < 500 and status not in RETRY_STATUSES:
                return reason  # the receiver refuses this record: another try would be refused too
        return reason

    async def aclose(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Let deliveries under way finish for at most `wait_s`, then give them up."""
        pending = set(self._tasks)
        if pending:
            _, late = await asyncio.wait(pending, timeout=wait_s)
            for task in late:
                task.cancel()
            if late:
                log.warning("post_call.abandoned", records=len(late))
            await asyncio.gather(*pending, return_exceptions=True)
        if self._session is not None:
            await self._session.close()


def call_record(call: CallSession, wall_now: float, redact: bool) -> dict[str, Any]:
    """The record of an ended call (`redact`: VOICE_BRIDGE_RECORD_TRANSCRIPTS=0)."""
    assert call.call_sid is not None
    duration = call.duration_s
    switcher = call.switcher
    turns = call.transcript.turns()
    return build_record(
        call.call_sid,
        started_at=wall_now - duration,
        duration_s=duration,
        outcome=(call.end_reason.value if call.end_reason else "internal_error"),
        profile=call.setup.profile_name if call.setup else "",
        turns=turns,
        counts={
            "turns": len(turns),
            "barge_ins": call.events.barge_ins,
            "fillers": call.turns.fillers,
            "rollovers": switcher.rollovers,
            "forced_rollovers": switcher.forced,
            "replacements": switcher.replacements,
        },
        usage=usage_fields(call.usage.totals, call.usage.policy.price_key),
        redact_transcript=redact,
    )
