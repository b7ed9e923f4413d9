"""The tools the model may call (enabled per agent profile by name)."""

from __future__ import annotations

from pathlib import Path

from .call_control import END_CALL, TRANSFER_CALL
from .orders import lookup_order_tool
from .registry import CallActions, Tool, ToolRegistry, ToolResult

DEFAULT_ORDERS_FILE = Path(__file__).resolve().parents[2] / "fixtures" / "orders.json"


def default_registry(orders_file: str | None = None) -> ToolRegistry:
    """Every tool the bridge ships; a profile's `tools` list picks which a call may use."""
    return ToolRegistry.of([END_CALL, TRANSFER_CALL, lookup_order_tool(Path(orders_file) if orders_file else DEFAULT_ORDERS_FILE)])


__all__ = ["CallActions", "Tool", "ToolRegistry", "ToolResult", "default_registry"]
