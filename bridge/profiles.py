"""Agent profiles: who answers a called number, and how (instructions, voice, turn taking, tools).

The default profile comes from the environment (`VOICE_BRIDGE_INSTRUCTIONS`, `VOICE_BRIDGE_VOICE`).
A TOML file (`VOICE_BRIDGE_PROFILES`) adds profiles for called numbers (Twilio's `To`, E.164):

    [profiles.sales]
    numbers = ["+14155550100"]
    instructions = "You are Contoso's sales assistant."
    voice = { name = "en-US-AvaNeural", type = "azure-standard" }
    greeting = "Greet the caller and ask what they would like to order."

    [profiles.sales.turn_detection]
    type = "semantic"

A field a profile leaves out is taken from the default profile (tables such as `turn_detection`
are taken whole, not merged). A number in no profile gets the default profile. Mistakes are
reported at start as `file:line: what is wrong`, for TOML syntax and for meaning alike (unknown
key, wrong type, bad value, a number in two profiles). See `fixtures/profiles/example.toml`.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

from voice_codecs import AudioMode

from .dialects import (
    SEMANTIC_EAGERNESS,
    TURN_DETECTION_KINDS,
    VOICE_TYPES,
    Dialect,
    InputTranscription,
    SessionConfig,
    ToolSpec,
    TurnDetection,
)
from .settings import ConfigError, Settings
from .tools.registry import TOOL_DATA_NOTICE, Tool

DTMF_MODES = ("off", "forward", "collect")
REPROMPT_INSTRUCTIONS = (  # issue 16: what the model is asked when the caller has been silent
    "The caller has said nothing for a while. Check in with one short question, such as whether they are "
    "still there or need anything else, in the language of the conversation, and say nothing else."
)
DEFAULT_PROFILE_NAME = "default"
# Input transcription is on by default for the cloud upstreams (what the caller said is what a new
# session is told and the post-call record keeps); a profile's `transcription = false` turns it off.
DEFAULT_TRANSCRIPTION = {
    "voicelive": InputTranscription(model="azure-speech"),
    "azure-openai": InputTranscription(model="gpt-4o-mini-transcribe"),
    "openai": InputTranscription(model="gpt-4o-mini-transcribe"),
}

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_AZURE_VOICE_NAME = re.compile(r"[a-z]{2,3}-[A-Za-z]{2,4}-")  # en-US-AvaNeural, zh-CN-Xiaoxiao:DragonHD…
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class ProfileError(ConfigError):
    """The profiles file cannot be used; the message starts with `file:line:`."""


@dataclass(frozen=True, slots=True)
class Voice:
    name: str
    type: str = "openai"  # or "azure-standard" (Voice Live)


@dataclass(frozen=True, slots=True)
class AgentProfile:
    name: str
    instructions: str
    voice: Voice
    turn_detection: TurnDetection | None = None  # None: the upstream dialect's default
    noise_suppression: bool = True
    echo_cancellation: bool = True  # where the upstream offers it (Voice Live)
    transcription: InputTranscription | None = None
    tools: tuple[str, ...] = ()
    greeting: str | None = None  # instruction for the model's first response
    max_call_seconds: int | None = None  # None: no limit of the bridge's own
    dtmf: str = "off"  # "off", "forward" (tell the model), "collect" (gather digits for a tool)
    transfer_number: str | None = None  # where `transfer_call` sends the caller (E.164)
    rollover_input_tokens: int | None = None  # a response re-reading more input tokens rolls the session over
    # No dead air (issue 16): turn budgets (bridge/call/watchdog.py); 0 turns each off.
    filler_after_ms: int = 0  # the filler clip after this much silence while the model or a tool is awaited
    turn_timeout_s: float = 0  # no audio by then, no tool running: ask again once, then apology and fallback
    reprompt_after_s: float = 0  # a silent caller (everything heard) is asked to check in after this long
    max_reprompts: int = 2  # unanswered check-ins before a goodbye (the call ends as caller_silent)
    reprompt_instructions: str = REPROMPT_INSTRUCTIONS
    filler_clip: str | None = None  # a 16-bit mono WAV; None: the shipped "One moment."


def voice_from_name(name: str) -> Voice:
    """A voice from just its name: Azure voices are named like `en-US-AvaNeural`, OpenAI's like `alloy`."""
    return Voice(name=name, type="azure-standard" if _AZURE_VOICE_NAME.match(name) else "openai")


def default_profile(settings: Settings) -> AgentProfile:
    """The profile for numbers the file does not name, from the environment."""
    return AgentProfile(
        name=DEFAULT_PROFILE_NAME,
        instructions=settings.instructions,
        voice=voice_from_name(settings.voice),
        tools=settings.tools,
        dtmf=settings.dtmf,
        transfer_number=settings.transfer_number,
        transcription=DEFAULT_TRANSCRIPTION.get(settings.upstream),
        rollover_input_tokens=settings.rollover_input_tokens or None,
        filler_after_ms=settings.filler_after_ms,
        turn_timeout_s=settings.turn_timeout_s,
        reprompt_after_s=settings.reprompt_after_s,
        max_reprompts=settings.max_reprompts,
    )


def normalize_number(number: str) -> str:
    """`+1 (415) 555-0100` → `+14155550100` (separators people paste are dropped)."""
    return re.sub(r"[\s().-]", "", number)


def session_config(
    profile: AgentProfile, audio_mode: AudioMode | str, tools: Mapping[str, ToolSpec] | None = None
) -> SessionConfig:
    """What to ask of the model for a call answered by `profile`; `tools` are the tools the bridge has."""
    available = tools or {}
    missing = [name for name in profile.tools if name not in available]
    if missing:
        known = ", ".join(sorted(available)) or "none yet"
        raise ProfileError(f"profile {profile.name!r}: unknown tool(s) {', '.join(missing)} (known: {known})")
    instructions = profile.instructions
    if profile.tools:
        # Tool results may carry text a third party chose: the model must read them as data.
        instructions = f"{instructions}\n\n{TOOL_DATA_NOTICE}"
    return SessionConfig(
        instructions=instructions,
        voice=profile.voice.name,
        audio_mode=audio_mode,
        voice_type=profile.voice.type,
        turn_detection=profile.turn_detection,
        noise_suppression=profile.noise_suppression,
        echo_cancellation=profile.echo_cancellation,
        transcription=profile.transcription,
        tools=tuple(available[name] for name in profile.tools),
        greeting=profile.greeting,
    )


@dataclass(frozen=True, slots=True)
class ProfileBook:
    """The profiles by called number, with the default for every other number."""

    default: AgentProfile
    by_number: Mapping[str, AgentProfile]
    source: str | None = None
    lines: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))  # profile → line in `source`

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None, default: AgentProfile) -> ProfileBook:
        """Read the profiles file (no file: only the default profile); `ProfileError` if it is wrong."""
        if path is None:
            return cls(default=default, by_number=MappingProxyType({}))
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ProfileError(f"{source}: VOICE_BRIDGE_PROFILES names a file that does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ProfileError(f"{source}: cannot read the profiles file: {exc}") from None
        return cls.parse(text, default, source)

    @classmethod
    def parse(cls, text: str, default: AgentProfile, source: str = "<profiles>") -> ProfileBook:
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ProfileError(_toml_error(source, exc)) from None
        reader = _Reader(source, _KeyLines(text))
        by_number: dict[str, AgentProfile] = {}
        number_owner: dict[str, str] = {}
        lines: dict[str, int] = {}
        reader.only_keys(document, (), {"profiles"})
        profiles = reader.table(document.get("profiles", {}), ("profiles",))
        for name, body in profiles.items():
            where = ("profiles", name)
            if name == DEFAULT_PROFILE_NAME:
                reader.fail(
                    where,
                    f"the profile name {DEFAULT_PROFILE_NAME!r} is reserved for the environment's default profile",
                )
            profile, numbers = reader.profile(name, reader.table(body, where), default)
            lines[name] = reader.line(where)
            for number in numbers:
                if number in number_owner:
                    reader.fail(
                        (*where, "numbers"),
                        f"{number} is already in profile {number_owner[number]!r}: a number has one profile",
                    )
                number_owner[number] = name
                by_number[number] = profile
        return cls(default=default, by_number=MappingProxyType(by_number), source=source, lines=MappingProxyType(lines))

    def for_number(self, to: str | None) -> AgentProfile:
        """The profile for a called number (Twilio's `To`); the default for any other."""
        if not to:
            return self.default
        return self.by_number.get(normalize_number(to), self.default)

    @property
    def profiles(self) -> tuple[AgentProfile, ...]:
        """Every profile once, the default first."""
        seen = {self.default.name: self.default}
        for profile in self.by_number.values():
            seen.setdefault(profile.name, profile)
        return tuple(seen.values())

    def check(self, dialect: Dialect, audio_mode: AudioMode | str, tools: Mapping[str, ToolSpec] | None = None) -> None:
        """At start: every profile works with this upstream and these tools, or `ProfileError`."""
        for profile in self.profiles:
            where = f"{self.source}:{self.lines[profile.name]}: " if profile.name in self.lines else ""
            try:
                config = session_config(profile, audio_mode, tools)
            except ProfileError as exc:
                raise ProfileError(f"{where}{exc}") from None
            problems = dialect.unsupported(config)
            if problems:
                raise ProfileError(
                    f"{where}profile {profile.name!r} cannot run on this upstream: {'; '.join(problems)}"
                )


def _toml_error(source: str, exc: tomllib.TOMLDecodeError) -> str:
    message = str(exc)
    found = re.search(r"\s*\(at line (\d+), column (\d+)\)", message)
    if found is None:
        return f"{source}: invalid TOML: {message}"
    return f"{source}:{found[1]}:{found[2]}: invalid TOML: {message[: found.start()] + message[found.end() :]}"


# --- checking the parsed document, with line numbers for every complaint ---------------------

_PROFILE_KEYS = {
    "numbers", "instructions", "voice", "turn_detection", "noise_suppression", "echo_cancellation",
    "transcription", "tools", "greeting", "max_call_seconds", "dtmf", "transfer_number",
    "rollover_input_tokens",
    # issue 16
    "filler_after_ms", "turn_timeout_s", "reprompt_after_s", "max_reprompts", "reprompt_instructions", "filler_clip",
}  # fmt: skip
_TURN_KEYS = {
    "type", "threshold", "prefix_padding_ms", "silence_duration_ms", "eagerness", "remove_filler_words", "languages",
}  # fmt: skip


class _Reader:
    def __init__(self, source: str, key_lines: _KeyLines) -> None:
        self._source = source
        self._lines = key_lines

    def line(self, path: tuple[str, ...]) -> int:
        return self._lines.line_of(path)

    def fail(self, path: tuple[str, ...], message: str) -> NoReturn:
        raise ProfileError(f"{self._source}:{self.line(path)}: {_dotted(path)}: {message}")

    def table(self, value: Any, path: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(path, f"must be a table, got {_kind(value)}")
        return value

    def only_keys(self, table: dict[str, Any], path: tuple[str, ...], allowed: set[str]) -> None:
        for key in table:
            if key not in allowed:
                self.fail((*path, key), f"unknown key {key!r} (expected one of {', '.join(sorted(allowed))})")

    def string(self, value: Any, path: tuple[str, ...], choices: tuple[str, ...] = ()) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(path, f"must be a non-empty string, got {_kind(value)}")
        if choices and value not in choices:
            self.fail(path, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def boolean(self, value: Any, path: tuple[str, ...]) -> bool:
        if not isinstance(value, bool):
            self.fail(path, f"must be true or false, got {_kind(value)}")
        return value

    def integer(self, value: Any, path: tuple[str, ...], minimum: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(path, f"must be a whole number, got {_kind(value)}")
        if value < minimum:
            self.fail(path, f"must be at least {minimum}, got {value}")
        return value

    def fraction(self, value: Any, path: tuple[str, ...]) -> float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
            self.fail(path, f"must be a number from 0.0 to 1.0, got {value!r}")
        return float(value)

    def strings(self, value: Any, path: tuple[str, ...]) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
            self.fail(path, f"must be a list of non-empty strings, got {_kind(value)}")
        if len(set(value)) != len(value):
            self.fail(path, "lists an entry twice")
        return tuple(value)

    def profile(self, name: str, body: dict[str, Any], default: AgentProfile) -> tuple[AgentProfile, tuple[str, ...]]:
        where = ("profiles", name)
        self.only_keys(body, where, _PROFILE_KEYS)
        if "numbers" not in body:
            self.fail(where, "has no `numbers`: list the called numbers (E.164, like +14155550100) it answers")
        numbers = tuple(normalize_number(n) for n in self.strings(body["numbers"], (*where, "numbers")))
        if not numbers:
            self.fail((*where, "numbers"), "is empty: list the called numbers it answers")
        for number in numbers:
            if not _E164.fullmatch(number):
                self.fail((*where, "numbers"), f"{number!r} is not an E.164 number like +14155550100")
        fields: dict[str, Any] = {"name": name}
        for key, value in body.items():
            path = (*where, key)
            if key in ("instructions", "greeting"):
                fields[key] = self.string(value, path)
            elif key == "voice":
                fields[key] = self.voice(value, path)
            elif key in ("noise_suppression", "echo_cancellation"):
                fields[key] = self.boolean(value, path)
            elif key == "max_call_seconds":
                fields[key] = self.integer(value, path, minimum=1)
            elif key == "rollover_input_tokens":
                fields[key] = self.integer(value, path, minimum=0) or None
            elif key in ("filler_after_ms", "max_reprompts"):  # issue 16
                fields[key] = self.integer(value, path, minimum=0)
            elif key in ("turn_timeout_s", "reprompt_after_s"):  # issue 16
                fields[key] = float(self.integer(value, path, minimum=0))
            elif key in ("reprompt_instructions", "filler_clip"):  # issue 16
                fields[key] = self.string(value, path)
            elif key == "dtmf":
                fields[key] = self.string(value, path, DTMF_MODES)
            elif key == "transfer_number":
                number = normalize_number(self.string(value, path))
                if not _E164.fullmatch(number):
                    self.fail(path, f"{number!r} is not an E.164 number like +14155550100")
                fields[key] = number
            elif key == "tools":
                fields[key] = self.strings(value, path)
            elif key == "turn_detection":
                fields[key] = self.turn_detection(self.table(value, path), path)
            elif key == "transcription":
                off = value is False  # `transcription = false`: no input transcription
                fields[key] = None if off else self.transcription(self.table(value, path), path)
        return replace(default, **fields), numbers

    def voice(self, value: Any, path: tuple[str, ...]) -> Voice:
        if isinstance(value, str):
            return voice_from_name(self.string(value, path))
        table = self.table(value, path)
        self.only_keys(table, path, {"name", "type"})
        if "name" not in table:
            self.fail(path, "needs a `name`")
        voice_type = self.string(table.get("type", "openai"), (*path, "type"), VOICE_TYPES)
        return Voice(name=self.string(table["name"], (*path, "name")), type=voice_type)

    def turn_detection(self, table: dict[str, Any], path: tuple[str, ...]) -> TurnDetection:
        self.only_keys(table, path, _TURN_KEYS)
        fields: dict[str, Any] = {}
        for key, value in table.items():
            at = (*path, key)
            if key == "type":
                fields["kind"] = self.string(value, at, TURN_DETECTION_KINDS)
            elif key == "threshold":
                fields[key] = self.fraction(value, at)
            elif key in ("prefix_padding_ms", "silence_duration_ms"):
                fields[key] = self.integer(value, at, minimum=0)
            elif key == "eagerness":
                fields[key] = self.string(value, at, SEMANTIC_EAGERNESS)
            elif key == "remove_filler_words":
                fields[key] = self.boolean(value, at)
            elif key == "languages":
                fields[key] = self.strings(value, at)
        if "kind" not in fields:
            self.fail(path, f"needs a `type`: one of {', '.join(TURN_DETECTION_KINDS)}")
        return TurnDetection(**fields)

    def transcription(self, table: dict[str, Any], path: tuple[str, ...]) -> InputTranscription:
        self.only_keys(table, path, {"model", "language"})
        if "model" not in table:
            self.fail(path, "needs a `model` (e.g. whisper-1, gpt-4o-transcribe, or azure-speech on Voice Live)")
        language = table.get("language")
        return InputTranscription(
            model=self.string(table["model"], (*path, "model")),
            language=None if language is None else self.string(language, (*path, "language")),
        )


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(part if _BARE_KEY.fullmatch(part) else f'"{part}"' for part in path)


def _kind(value: Any) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }
    return names.get(type(value), type(value).__name__)


class _KeyLines:
    """Where each key of a (valid) TOML document is written: table headers and `key = value` lines.

    Keys inside inline tables and arrays are not listed; they are reported at the line of the
    nearest enclosing key, which is where the reader will look anyway.
    """

    def __init__(self, text: str) -> None:
        self._lines: dict[tuple[str, ...], int] = {}
        self._scan(text)

    def line_of(self, path: tuple[str, ...]) -> int:
        for end in range(len(path), 0, -1):
            if path[:end] in self._lines:
                return self._lines[path[:end]]
        return 1

    def _scan(self, text: str) -> None:
        table: tuple[str, ...] = ()
        depth = 0  # open [ and { of a value that spans lines
        in_multiline: str | None = None  # the closing delimiter of a multi-line string
        for number, line in enumerate(text.splitlines(), start=1):
            i = 0
            if in_multiline is not None:
                end = line.find(in_multiline)
                if end < 0:
                    continue
                i, in_multiline = end + 3, None
            elif depth == 0:
                stripped = line.lstrip()
                if not stripped or stripped.startswith("#"):
                    continue
                i = len(line) - len(stripped)
                if stripped.startswith("["):
                    i += 2 if stripped.startswith("[[") else 1
                    keys, _ = _read_key(line, i)
                    table = tuple(keys)
                    self._lines.setdefault(table, number)
                    continue
                keys, i = _read_key(line, i)
                self._lines.setdefault((*table, *keys), number)
                i = line.index("=", i) + 1
            depth, in_multiline = _scan_value(line, i, depth)


def _read_key(line: str, i: int) -> tuple[list[str], int]:
    """A bare, quoted or dotted key starting at `line[i]`; returns its parts and where it ends."""
    parts: list[str] = []
    while True:
        while i < len(line) and line[i] in " \t":
            i += 1
        if i < len(line) and line[i] in "\"'":
            quote = line[i]
            end = i + 1
            while end < len(line) and line[end] != quote:
                end += 2 if quote == '"' and line[end] == "\\" else 1
            raw = line[i + 1 : end]
            parts.append(raw if quote == "'" else _unescape(raw))
            i = end + 1
        else:
            match = _BARE_KEY.match(line, i)
            if match is None:
                return parts, i
            parts.append(match.group())
            i = match.end()
        while i < len(line) and line[i] in " \t":
            i += 1
        if i < len(line) and line[i] == ".":
            i += 1
            continue
        return parts, i


def _unescape(raw: str) -> str:
    try:
        return tomllib.loads(f'k = "{raw}"')["k"]
    except tomllib.TOMLDecodeError:
        return raw


def _scan_value(line: str, i: int, depth: int) -> tuple[int, str | None]:
    """Brackets and strings of a value from `line[i]`: the bracket depth after it, and an unclosed multi-line string."""
    for char, j in _value_chars(line, i):
        if char in ('"""', "'''"):
            end = line.find(char, j + 3)
            if end < 0:
                return depth, char
            return _scan_value(line, end + 3, depth)
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
    return depth, None


def _value_chars(line: str, i: int) -> Iterator[tuple[str, int]]:
    """The structural characters of a value (brackets, multi-line string openings), skipping strings and comments."""
    while i < len(line):
        char = line[i]
        if char == "#":
            return
        if line.startswith(('"""', "'''"), i):
            yield line[i : i + 3], i
            return
        if char in "\"'":
            end = i + 1
            while end < len(line) and line[end] != char:
                end += 2 if char == '"' and line[end] == "\\" else 1
            i = end + 1
            continue
        if char in "[]{}":
            yield char, i
        i += 1


# --- No dead air (issue 16): turn budgets, checked when the profiles load ---------------------


def check_turn_budgets(book: ProfileBook, tools: Mapping[str, Tool]) -> None:
    """Every profile's budgets fit together, its filler clip can be played, and each of its tools
    times out before the turn budget (nested timeouts: turn > tool); one line naming the profile."""
    from .filler import default_filler_path, render_filler

    for profile in book.profiles:
        where = f"{book.source}:{book.lines[profile.name]}: " if profile.name in book.lines else ""
        name = f"profile {profile.name!r}"
        budget = profile.turn_timeout_s
        if profile.filler_after_ms and budget and profile.filler_after_ms >= budget * 1000:
            raise ProfileError(
                f"{where}{name}: filler_after_ms={profile.filler_after_ms} must be shorter than turn_timeout_s={budget:g} s"
            )
        if budget:
            for tool_name in profile.tools:
                tool = tools.get(tool_name)
                if tool is not None and tool.timeout_s >= budget:
                    raise ProfileError(
                        f"{where}{name}: tool {tool_name!r} times out after {tool.timeout_s:g} s, "
                        f"which must be shorter than turn_timeout_s={budget:g} s"
                    )
        if profile.filler_after_ms:
            clips = [profile.filler_clip or str(default_filler_path())]
            clips += [t.progress_clip for t in (tools.get(n) for n in profile.tools) if t is not None and t.progress_clip]
            try:
                for clip in clips:
                    render_filler(clip)
            except ConfigError as exc:
                raise ProfileError(f"{where}{name}: {exc}") from None
