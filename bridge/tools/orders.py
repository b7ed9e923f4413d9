"""An example business tool: look an order up in a JSON file.

This is the shape a team copies to add its own tool: a JSON schema for the arguments the model
fills in, and an async function that returns plain data (it could call an HTTP API instead;
keep it within the tool's timeout). Register it in `bridge.tools.default_registry`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .registry import CallActions, Tool


def lookup_order_tool(orders_file: Path) -> Tool:
    async def lookup_order(args: dict[str, Any], call: CallActions) -> dict[str, Any]:
        orders = json.loads(orders_file.read_text())  # small file: read per call, so edits apply at once
        number = args["order_number"].strip().upper()
        order = orders.get(number)
        if order is None:
            return {"found": False, "order_number": number}
        return {"found": True, "order_number": number, **order}

    return Tool(
        name="lookup_order",
        description="Look up the status and delivery date of a customer's order by its order number.",
        parameters={
            "type": "object",
            "properties": {
                "order_number": {
                    "type": "string",
                    "pattern": "^[A-Za-z]{2}-?[0-9]{4,8}$",
                    "description": "The order number, like CO-12345.",
                }
            },
            "required": ["order_number"],
            "additionalProperties": False,
        },
        handler=lookup_order,
        timeout_s=3.0,
    )
