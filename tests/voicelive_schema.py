"""The Voice Live client events the bridge sends, as a small JSON-schema-like check.

Written from the Voice Live API reference, version 2026-07-15 (the stable swagger in
Azure/azure-rest-api-specs, specification/ai/data-plane/VoiceLive/stable/2026-07-15/VoiceLive.json:
RequestSession, TurnDetection and its ServerVad / AzureSemanticVad* variants, OpenAIVoice,
AzureStandardVoice, AudioNoiseReduction, AudioEchoCancellation, AudioInputTranscriptionOptions,
FunctionTool, ResponseCreateParams, and the ClientEvent* types). It is stricter than the service
in one way on purpose: objects admit only the properties the reference lists, so a misspelt or
misplaced key fails here instead of being silently ignored by the service.

`problems(event)` returns a list of `path: message` strings; empty means valid.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
BOOL: Schema = {"type": "boolean"}
INT: Schema = {"type": "integer"}
UNIT: Schema = {"type": "number", "minimum": 0, "maximum": 1}
STRINGS: Schema = {"type": "array", "items": STRING}

OAI_VOICES = ["alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"]
_TTS_TUNING: dict[str, Schema] = {
    "temperature": UNIT,
    "custom_lexicon_url": STRING,
    "custom_text_normalization_url": STRING,
    "prefer_locales": STRINGS,
    "locale": STRING,
    "style": STRING,
    "pitch": STRING,
    "rate": STRING,
    "volume": STRING,
}

VOICE: Schema = {
    "type": "object",
    "discriminator": "type",
    "mapping": {
        "openai": {"properties": {"type": STRING, "name": {"enum": OAI_VOICES}}, "required": ["type", "name"]},
        "azure-standard": {
            "properties": {"type": STRING, "name": {"type": "string", "minLength": 1}, **_TTS_TUNING},
            "required": ["type", "name"],
        },
        "azure-custom": {
            "properties": {
                "type": STRING,
                "name": {"type": "string", "minLength": 1},
                "endpoint_id": {"type": "string", "minLength": 1},
                **_TTS_TUNING,
            },
            "required": ["type", "name", "endpoint_id"],
        },
    },
}

EOU_DETECTION: Schema = {
    "type": "object",
    "properties": {
        "model": {"enum": ["semantic_detection_v1", "semantic_detection_v1_en", "semantic_detection_v1_multilingual"]},
        "threshold_level": {"enum": ["low", "medium", "high", "default"]},
        "timeout_ms": {"type": "integer", "minimum": 0},
    },
    "required": ["model"],
}

_VAD_COMMON: dict[str, Schema] = {
    "type": STRING,
    "threshold": UNIT,
    "prefix_padding_ms": INT,
    "silence_duration_ms": INT,
    "end_of_utterance_detection": EOU_DETECTION,
    "auto_truncate": BOOL,
    "create_response": BOOL,
    "interrupt_response": BOOL,
}
_SEMANTIC: dict[str, Schema] = {**_VAD_COMMON, "speech_duration_ms": INT, "remove_filler_words": BOOL}

TURN_DETECTION: Schema = {
    "type": "object",
    "discriminator": "type",
    "mapping": {
        "server_vad": {"properties": _VAD_COMMON, "required": ["type"]},
        "azure_semantic_vad": {"properties": {**_SEMANTIC, "languages": STRINGS}, "required": ["type"]},
        "azure_semantic_vad_en": {"properties": _SEMANTIC, "required": ["type"]},
        "azure_semantic_vad_multilingual": {"properties": {**_SEMANTIC, "languages": STRINGS}, "required": ["type"]},
    },
}

TOOL: Schema = {
    "type": "object",
    "discriminator": "type",
    "mapping": {
        "function": {
            "properties": {"type": STRING, "name": STRING, "description": STRING, "parameters": {"type": "object"}},
            "required": ["type", "name"],
        },
    },
}

MODALITIES: Schema = {"type": "array", "items": {"enum": ["text", "audio", "animation", "avatar"]}}
OUTPUT_AUDIO_FORMAT: Schema = {"enum": ["pcm16", "pcm16_8000hz", "pcm16_16000hz", "g711_ulaw", "g711_alaw"]}

REQUEST_SESSION: Schema = {
    "type": "object",
    "properties": {
        "model": STRING,
        "modalities": MODALITIES,
        "voice": VOICE,
        "instructions": STRING,
        "input_audio_sampling_rate": {"enum": [8000, 16000, 24000]},
        "input_audio_format": {"enum": ["pcm16", "g711_ulaw", "g711_alaw"]},
        "output_audio_format": OUTPUT_AUDIO_FORMAT,
        "turn_detection": TURN_DETECTION,
        "input_audio_noise_reduction": {
            "type": "object",
            "properties": {"type": {"enum": ["azure_deep_noise_suppression", "near_field", "far_field"]}},
            "required": ["type"],
        },
        "input_audio_echo_cancellation": {
            "type": "object",
            "properties": {"type": {"enum": ["server_echo_cancellation"]}},
            "required": ["type"],
        },
        "input_audio_transcription": {
            "type": "object",
            # `model` is an extensible enum (modelAsString): whisper-1, gpt-4o-transcribe,
            # gpt-4o-mini-transcribe, gpt-4o-transcribe-diarize, mai-transcribe-1, azure-speech, …
            "properties": {
                "model": STRING,
                "language": STRING,
                "custom_speech": {"type": "object"},
                "phrase_list": STRINGS,
            },
            "required": ["model"],
        },
        "output_audio_timestamp_types": {"type": "array", "items": {"enum": ["word"]}},
        "tools": {"type": "array", "items": TOOL},
        "tool_choice": {
            "anyOf": [
                {"enum": ["auto", "none", "required"]},
                {
                    "type": "object",
                    "properties": {"type": {"enum": ["function"]}, "name": STRING},
                    "required": ["type", "name"],
                },
            ]
        },
        "parallel_tool_calls": BOOL,
        "temperature": {"type": "number"},
        "max_response_output_tokens": {"anyOf": [INT, {"enum": ["inf"]}]},
    },
}

RESPONSE_CREATE_PARAMS: Schema = {
    "type": "object",
    "properties": {
        "commit": BOOL,
        "cancel_previous": BOOL,
        "modalities": MODALITIES,
        "instructions": STRING,
        "voice": VOICE,
        "output_audio_format": OUTPUT_AUDIO_FORMAT,
        "tools": {"type": "array", "items": TOOL},
        "tool_choice": STRING,
        "temperature": {"type": "number"},
        "max_output_tokens": {"anyOf": [INT, {"enum": ["inf"]}]},
        "metadata": {"type": "object"},  # azure-ai-voicelive 1.3 ResponseCreateParams.metadata (dict[str, str])
    },
}

CONVERSATION_ITEM: Schema = {
    "type": "object",
    "discriminator": "type",
    "mapping": {
        "function_call_output": {
            "properties": {
                "type": STRING,
                "id": STRING,
                "call_id": STRING,
                "output": STRING,
                "status": {"enum": ["completed", "incomplete"]},
            },
            "required": ["type", "call_id", "output"],
        },
    },
}

CLIENT_EVENT: Schema = {
    "type": "object",
    "discriminator": "type",
    "mapping": {
        "session.update": {
            "properties": {"type": STRING, "event_id": STRING, "session": REQUEST_SESSION},
            "required": ["type", "session"],
        },
        "input_audio_buffer.append": {
            "properties": {"type": STRING, "event_id": STRING, "audio": STRING},
            "required": ["type", "audio"],
        },
        "response.create": {
            "properties": {
                "type": STRING,
                "event_id": STRING,
                "response": RESPONSE_CREATE_PARAMS,
                "additional_instructions": STRING,
            },
            "required": ["type"],
        },
        "response.cancel": {
            "properties": {"type": STRING, "event_id": STRING, "response_id": STRING},
            "required": ["type"],
        },
        "conversation.item.truncate": {
            "properties": {
                "type": STRING,
                "event_id": STRING,
                "item_id": STRING,
                "content_index": INT,
                "audio_end_ms": INT,
            },
            "required": ["type", "item_id", "content_index", "audio_end_ms"],
        },
        "conversation.item.delete": {
            "properties": {"type": STRING, "event_id": STRING, "item_id": STRING},
            "required": ["type", "item_id"],
        },
        "conversation.item.create": {
            "properties": {"type": STRING, "event_id": STRING, "previous_item_id": STRING, "item": CONVERSATION_ITEM},
            "required": ["type", "item"],
        },
    },
}

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
}


def problems(event: Any) -> list[str]:
    found = _check(event, CLIENT_EVENT, "$")
    if not found and event.get("type") == "session.update":
        found = _session_rules(event["session"])
    return found


def _session_rules(session: dict[str, Any]) -> list[str]:
    """What the reference says in prose rather than in the schema."""
    rate, fmt = session.get("input_audio_sampling_rate"), session.get("input_audio_format", "pcm16")
    if rate is not None and fmt in ("g711_ulaw", "g711_alaw") and rate != 8000:
        return [f"$.session.input_audio_sampling_rate: {fmt} is 8000 Hz only, got {rate}"]
    return []


def _check(value: Any, schema: Schema, path: str) -> list[str]:
    if "anyOf" in schema:
        if any(not _check(value, option, path) for option in schema["anyOf"]):
            return []
        return [f"{path}: matches none of the allowed shapes: {value!r}"]
    if "enum" in schema:
        return (
            []
            if value in schema["enum"] and type(value) is not bool
            else [f"{path}: {value!r} not in {schema['enum']}"]
        )
    kind = schema.get("type")
    if kind is not None:
        wanted = _TYPES[kind]
        if not isinstance(value, wanted) or (kind in ("integer", "number") and isinstance(value, bool)):
            return [f"{path}: expected {kind}, got {type(value).__name__}"]
    found: list[str] = []
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            found.append(f"{path}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            found.append(f"{path}: {value} > {schema['maximum']}")
    if isinstance(value, str) and len(value) < schema.get("minLength", 0):
        found.append(f"{path}: shorter than {schema['minLength']}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            found += _check(item, schema["items"], f"{path}[{index}]")
    if isinstance(value, dict):
        if "discriminator" in schema:
            tag = value.get(schema["discriminator"])
            variant = schema["mapping"].get(tag)
            if variant is None:
                return [f"{path}.{schema['discriminator']}: {tag!r} not in {sorted(schema['mapping'])}"]
            schema = variant
        properties = schema.get("properties")
        for name in schema.get("required", []):
            if name not in value:
                found.append(f"{path}: missing required {name!r}")
        for name, item in value.items():
            if properties is not None and name not in properties:
                found.append(f"{path}: unknown property {name!r}")
            elif properties is not None:
                found += _check(item, properties[name], f"{path}.{name}")
    return found
