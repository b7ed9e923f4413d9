"""Built-in tools that act on the call: hang up, transfer to a person."""

from __future__ import annotations

from typing import Any

from .registry import CallActions, Tool


async def _end_call(args: dict[str, Any], call: CallActions) -> dict[str, Any]:
    call.hang_up_after_speaking()
    return {"status": "The call will end after your goodbye. Say a short goodbye now."}


async def _transfer_call(args: dict[str, Any], call: CallActions) -> dict[str, Any]:
    if not call.transfer_number:
        return {"status": "No colleague can take this call: tell the caller, and keep helping them yourself."}
    call.transfer_after_speaking(call.transfer_number)
    return {
        "status": "The caller will be transferred after your next sentence. Tell them you are connecting them to a colleague now."
    }


END_CALL = Tool(
    name="end_call",
    description="End the phone call. Use it when the caller says goodbye or the conversation is finished; "
    "the call ends after you say a short goodbye.",
    parameters={
        "type": "object",
        "properties": {"reason": {"type": "string", "description": "Why the call ends, in a few words."}},
        "additionalProperties": False,
    },
    handler=_end_call,
)

TRANSFER_CALL = Tool(
    name="transfer_call",
    description="Transfer the caller to a human colleague, when they ask for a person or you cannot help.",
    parameters={
        "type": "object",
        "properties": {"reason": {"type": "string", "description": "Why the caller needs a person."}},
        "additionalProperties": False,
    },
    handler=_transfer_call,
)
