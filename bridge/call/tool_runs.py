"""The model's function calls in one call: running them, answering each finished response's calls,
and what a tool asked the call to do once its words are heard."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from dataclasses import dataclass

from structlog.stdlib import BoundLogger

from .. import dialects
from ..realtime_events import FunctionCallRequested
from ..telemetry import Metrics, bounded_label
from ..tools import ToolRegistry, ToolResult
from ..tools.registry import TOOL_OUTCOMES
from .tool_state import ToolHistory


class PendingAction(enum.Enum):
    HANG_UP = "hang_up"
    TRANSFER = "transfer"


@dataclass(frozen=True, slots=True)
class Pending:
    action: PendingAction
    number: str | None = None


class ToolActions:
    """What tool code may do to its call (`bridge.tools.CallActions`), and nothing more."""

    def __init__(self, call_sid: str, transfer_number: str | None) -> None:
        self.call_sid = call_sid
        self.transfer_number = transfer_number
        self._pending: Pending | None = None

    def hang_up_after_speaking(self) -> None:
        self._pending = Pending(PendingAction.HANG_UP)

    def transfer_after_speaking(self, number: str) -> None:
        self._pending = Pending(PendingAction.TRANSFER, number)

    def take(self) -> Pending | None:
        """The action asked for, once."""
        pending, self._pending = self._pending, None
        return pending


class ToolRuns:
    """Tool tasks by the response that called them; a response's calls are answered when it is done."""

    def __init__(
        self,
        registry: ToolRegistry,
        allowed: tuple[str, ...],
        actions: ToolActions,
        metrics: Metrics,
        log: BoundLogger,
        on_finished: Callable[[str, str], None] | None = None,
    ) -> None:
        self.registry = registry
        self.allowed = allowed
        self.actions = actions
        self.metrics = metrics
        self.log = log
        self.on_finished = on_finished  # (call_id, outcome) when a tool's code returns: its trace span ends
        self._runs: dict[str, list[tuple[str, asyncio.Task[ToolResult]]]] = {}
        self._arguments: dict[str, str] = {}  # call id → its arguments, until answered
        self.history = ToolHistory()  # what a new model session is told (seed.py)

    def start(self, event: FunctionCallRequested) -> None:
        run = self.registry.run(event.name, event.arguments, self.actions, allowed=self.allowed)
        task = asyncio.create_task(run, name=f"tool_{event.name}")
        self._runs.setdefault(event.response_id, []).append((event.call_id, task))
        self._arguments[event.call_id] = event.arguments
        if self.on_finished is not None:
            task.add_done_callback(lambda done: self._finished(event.call_id, done))
        self.log.info("tool.called", tool=event.name, call_id=event.call_id)

    def _finished(self, call_id: str, task: asyncio.Task[ToolResult]) -> None:
        assert self.on_finished is not None
        outcome = "cancelled" if task.cancelled() else "error" if task.exception() is not None else task.result().outcome
        self.on_finished(call_id, outcome)

    def called_in(self, response_id: str) -> bool:
        return response_id in self._runs

    async def answer(self, response_id: str, send: Callable[[dict[str, object]], object]) -> None:
        """Every call of the finished response gets its output, in the order they were made."""
        for call_id, task in self._runs.pop(response_id, []):
            result = await task
            name = task.get_name().removeprefix("tool_")
            # The tool's name is the model's: only the names of registered tools become label values.
            known = result.outcome != "unknown_tool" and name in self.registry.tools
            self.metrics.tool_calls.labels(
                tool=bounded_label(name, self.registry.tools) if known else "unknown",
                outcome=bounded_label(result.outcome, TOOL_OUTCOMES),
            ).inc()
            self.log.info("tool.answered", tool=name, call_id=call_id, outcome=result.outcome)
            send(dialects.function_call_output(call_id, result.output))
            self.history.add(name, self._arguments.pop(call_id, ""), result.output)

    def tasks(self) -> list[asyncio.Task[ToolResult]]:
        return [task for runs in self._runs.values() for _, task in runs]
