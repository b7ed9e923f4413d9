"""The tools the model may call (enabled per agent profile by name)."""

from __future__ import annotations

from pathlib import Path

from ..package_data import ORDERS, data_path
from .call_control import END_CALL, TRANSFER_CALL
from .orders import lookup_order_tool
from .registry import CallActions, Tool, ToolRegistry, ToolResult


def default_registry(orders_file: str | None = None) -> ToolRegistry:
    """Every tool the bridge ships; a profile's `tools` list picks which a call may use.

    The example lookup_order tool reads `orders_file` (`VOICE_BRIDGE_ORDERS_FILE`), else the
    orders.json shipped with the package; a missing one is a `ConfigError` naming it.
    """
    orders = Path(orders_file) if orders_file else data_path(ORDERS)
    return ToolRegistry.of([END_CALL, TRANSFER_CALL, lookup_order_tool(orders)])


__all__ = ["CallActions", "Tool", "ToolRegistry", "ToolResult", "default_registry"]
