"""`voice-bridge replay`: run a recorded call against the current code and report what changed.

Everything runs in one process on loopback, like `voice-bridge demo`:

- the upstream is a `ReplayUpstream` playing the recorded model, reached through the recorded
  dialect's own settings (Voice Live endpoint and model, Azure OpenAI endpoint and deployment,
  OpenAI key, or the local URL) with a dummy key;
- the bridge runs with the recorded audio mode, pre-warm setting and agent profile (written to a
  profiles file for the recorded called number when it is not the default one), on a clock
  scaled by `speed`, and records this run into a scratch folder;
- the phone simulator plays the recorded caller (`RecordedCaller`) on the same scaled clock.

The two recordings are then compared (`bridge.devtools.replay.compare`).
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...recording_format import IN, TWILIO, Recording, RecordingError, load_recording
from ...settings import DEFAULT_INSTRUCTIONS, Settings
from ...tools import ToolRegistry
from ..clock import scaled_clock
from ..local_bridge import served_bridge
from ..phone import place_call
from ..phone.recorded_caller import RecordedCaller, RecordedCallerScript
from .compare import Comparison, Tolerances, compare
from .upstream import ReplayUpstream, StreamTimeline

DUMMY_KEY = "replay-dummy-key-not-a-secret"
REPLAY_NUMBER = "+15550100000"
SETTLE_S = 5.0  # after the phone hangs up, how long the bridge may take to finish the call
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(slots=True)
class ReplayResult:
    recording: Recording
    replayed: Recording
    comparison: Comparison
    tolerances: Tolerances
    speed: float
    wall_s: float
    missing_triggers: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        return self.comparison.failures(self.tolerances)

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        meta = self.recording.meta
        profile = (meta.get("profile") or {}).get("name", "default")
        head = (
            f"replay {self.recording.path}: {meta.get('dialect')} dialect ({meta.get('upstream')}), audio "
            f"{self.recording.audio_mode}, profile {profile}, speed {self.speed:g}: "
            f"{'PASS' if self.passed else 'FAIL'} in {self.wall_s:.1f} s"
        )
        lines = [head, self.comparison.summary(self.tolerances)]
        if self.missing_triggers:
            lines.append(f"  waited in vain for      {', '.join(self.missing_triggers)}")
        lines += [f"  FAIL: {failure}" for failure in self.failures]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "call": str(self.recording.path),
            "speed": self.speed,
            "wall_s": round(self.wall_s, 2),
            **self.comparison.to_json(self.tolerances),
        }


# --- the bridge's settings, from meta.json ---------------------------------------------------


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml(key)


def profiles_toml(profile: dict[str, Any], number: str) -> str:
    """A profiles file with the recorded profile, for the called number."""
    name = str(profile.get("name", "recorded"))
    lines = [f"[profiles.{_toml_key(name)}]", f"numbers = {_toml([number])}"]
    lines += [f"{_toml_key(k)} = {_toml(v)}" for k, v in profile.items() if k != "name"]
    return "\n".join(lines) + "\n"


def called_number(meta: dict[str, Any]) -> str:
    to = meta.get("to")
    return to if isinstance(to, str) and _E164.fullmatch(to) else REPLAY_NUMBER


def replay_settings(meta: dict[str, Any], upstream: ReplayUpstream, record_dir: Path, workdir: Path, auth_token: str) -> Settings:
    """The bridge's settings for replaying a call recorded with `meta`, against `upstream`."""
    kind = str(meta.get("upstream") or ("voicelive" if meta.get("dialect") == "voicelive" else "local"))
    fields: dict[str, Any] = {
        "twilio_auth_token": auth_token,
        "audio": str(meta.get("audio_mode", "pcm24k")),
        "prewarm": bool(meta.get("prewarm", True)),
        "record_dir": str(record_dir),
    }
    if kind == "voicelive":
        fields.update(upstream="voicelive", azure_voicelive_endpoint=upstream.origin, azure_voicelive_model="replay",
                      azure_voicelive_api_key=DUMMY_KEY)  # fmt: skip
    elif kind == "azure-openai":
        fields.update(upstream="azure-openai", azure_openai_endpoint=upstream.origin, azure_openai_deployment="replay",
                      azure_openai_api_key=DUMMY_KEY)  # fmt: skip
    elif kind == "openai":
        fields.update(upstream="openai", openai_api_key=DUMMY_KEY, upstream_url=upstream.url("/v1/realtime?model=replay"))
    else:
        fields.update(upstream="local", upstream_url=upstream.url())
    profile = dict(meta.get("profile") or {})
    if profile.get("name", "default") == "default":
        # The default profile comes from the environment's settings.
        voice = profile.get("voice") or {}
        fields.update(
            instructions=profile.get("instructions") or DEFAULT_INSTRUCTIONS,
            voice=voice.get("name", "alloy") if isinstance(voice, dict) else str(voice),
            tools=tuple(profile.get("tools", ())),
            dtmf=profile.get("dtmf", "off"),
            transfer_number=profile.get("transfer_number"),
        )
    else:
        path = workdir / "profiles.toml"
        path.write_text(profiles_toml(profile, called_number(meta)), encoding="utf-8")
        fields["profiles_path"] = str(path)
    settings = Settings(**fields)
    settings.validate()
    return settings


# --- running it ------------------------------------------------------------------------------


async def _settle(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


async def replay_call(
    path: str | Path,
    speed: float = 1.0,
    tolerances: Tolerances | None = None,
    tools: ToolRegistry | None = None,
    keep_in: Path | None = None,
) -> ReplayResult:
    """Replay the call recorded in `path`; `keep_in` keeps this run's own recording there."""
    recording = load_recording(path)
    if not any(e.direction == IN and e.kind == "start" for e in recording.of(TWILIO)):
        raise RecordingError(f"{path}: the recording has no Twilio stream to replay (no `start`)")
    started = time.monotonic()
    token = secrets.token_hex(16)
    timeline = StreamTimeline()
    caller = RecordedCaller(RecordedCallerScript.from_recording(recording))
    with tempfile.TemporaryDirectory(prefix="voice-bridge-replay-") as scratch:
        record_dir = keep_in or Path(scratch) / "recordings"
        async with ReplayUpstream(recording, speed, timeline) as upstream:
            settings = replay_settings(recording.meta, upstream, record_dir, Path(scratch), token)
            async with served_bridge(settings, clock=scaled_clock(speed), tools=tools) as bridge:
                assert bridge.url is not None
                app = bridge.app
                report = await place_call(
                    bridge.url, auth_token=token, to=called_number(recording.meta), speed=speed, caller=caller,
                    on_start=timeline.mark_started,
                )  # fmt: skip
                await _settle(lambda: not app.state.bridge.active_calls, SETTLE_S)
            missing = upstream.missing_triggers
        # The bridge's services have shut down: its recorder has written everything out.
        replayed = load_recording(_recording_dir(record_dir, report.call_sid))
    result = ReplayResult(recording, replayed, compare(recording, replayed), tolerances or Tolerances(), speed,
                          time.monotonic() - started, missing)  # fmt: skip
    return result


def _recording_dir(base: Path, call_sid: str) -> Path:
    candidates = sorted(base.glob(f"{call_sid}*"))
    if not candidates:
        raise RecordingError(f"the replayed call {call_sid} left no recording in {base}")
    return candidates[-1]


def recorded_calls(path: str | Path) -> list[Path]:
    """`path` itself if it is a recorded call, else the recorded calls directly inside it."""
    directory = Path(path)
    if (directory / "events.jsonl").is_file():
        return [directory]
    return sorted(p for p in directory.iterdir() if (p / "events.jsonl").is_file()) if directory.is_dir() else []
