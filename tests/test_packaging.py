"""The wheel (what the Dockerfile installs) carries every package of the source tree and the data
its tools need, and works installed outside the checkout (issue 15: an install that works anywhere)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMPORT_NAMES = {"codecs": "voice_codecs"}  # folder → import name (see pyproject's package-dir)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("voice_bridge-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed (not editable) into a folder of its own, away from the checkout."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    return target


def test_wheel_contains_every_package(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("bridge", "twiml", "codecs"):
        for source in (ROOT / folder).rglob("*.py"):
            relative = source.relative_to(ROOT)
            installed = Path(IMPORT_NAMES.get(relative.parts[0], relative.parts[0]), *relative.parts[1:])
            assert installed.as_posix() in names, f"{relative} is missing from the wheel"
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "voice-bridge = bridge.cli:main" in entry_points


def test_wheel_ships_the_tools_data_from_fixtures_but_not_the_recorded_calls(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    clips = json.loads((ROOT / "fixtures" / "audio" / "clips.json").read_text())
    voice = [clips["greeting"]["file"], clips["goodbye"]["file"], *(a["file"] for a in clips["answers"])]
    for relative in ["audio/clips.json", "audio/caller_question.wav", "orders.json", *(f"audio/{f}" for f in voice)]:
        shipped = f"bridge/fixtures/{relative}"
        assert shipped in names, f"fixtures/{relative} is missing from the wheel"
        assert zipfile.ZipFile(wheel).read(shipped) == (ROOT / "fixtures" / relative).read_bytes()
    assert not [n for n in names if n.startswith("bridge/fixtures/calls/")], "recorded calls are test data, not package data"
    assert "bridge/fixtures/audio/generate.sh" not in names


def _run_installed(site: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`voice-bridge ARGS` with the package imported from `site` only, run in `cwd`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VOICE_BRIDGE_", "TWILIO_", "AZURE_", "OPENAI_", "PORT"))}
    code = (
        "import sys; sys.path.insert(0, sys.argv.pop(1)); import bridge; "
        "assert bridge.__file__.startswith(sys.path[0]), bridge.__file__; "
        "from bridge.cli import main; raise SystemExit(main(sys.argv[1:]))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(site), *args], cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=60
    )


DEMO = ("demo", "--speed", "8", "--log-level", "warning")


def test_installed_wheel_runs_the_demo_from_an_empty_directory(installed: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _run_installed(installed, empty, *DEMO)
    assert result.returncode == 0, result.stderr
    assert "question heard by agent  yes (the caller said 1 of 1, the agent detected 1 turn)" in result.stdout
    assert "answer heard by caller   yes (1 of 1 answered)" in result.stdout
    # With the agent's voice configured elsewhere, the caller still asks the shipped question.
    voice = tmp_path / "voice"
    shutil.copytree(installed / "bridge" / "fixtures" / "audio", voice)
    result = _run_installed(installed, empty, *DEMO, VOICE_BRIDGE_AGENT_CLIPS=str(voice))
    assert result.returncode == 0, result.stderr
    assert "question heard by agent  yes" in result.stdout and "answer heard by caller   yes" in result.stdout
    assert list(empty.iterdir()) == []


@pytest.mark.parametrize(
    ("missing", "command"),
    [
        ("audio/caller_question.wav", DEMO),  # the caller's default question
        ("audio/clips.json", DEMO),  # the local agent's voice
        ("audio/clips.json", ("serve", "--port", "1")),
        ("orders.json", ("serve", "--port", "1")),  # the example tool's data
        ("audio/clips.json", ("agent", "--port", "1")),
        ("audio/agent_greeting.wav", DEMO),
        ("audio/agent_greeting.wav", ("agent", "--port", "1")),
    ],
)
def test_a_missing_data_file_is_one_line_naming_it(installed: Path, tmp_path: Path, missing: str, command: tuple[str, ...]) -> None:
    broken = tmp_path / "site"
    shutil.copytree(installed, broken)
    (broken / "bridge" / "fixtures" / missing).unlink()
    result = _run_installed(broken, tmp_path, *command, TWILIO_AUTH_TOKEN="packaging-token")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and f"bridge/fixtures/{missing}" in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert "question heard" not in result.stdout
