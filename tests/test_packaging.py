"""The wheel (what the Dockerfile installs) carries every package of the source tree."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPORT_NAMES = {"codecs": "voice_codecs"}  # folder → import name (see pyproject's package-dir)


def test_wheel_contains_every_package(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("voice_bridge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("bridge", "twiml", "codecs"):
        for source in (ROOT / folder).rglob("*.py"):
            relative = source.relative_to(ROOT)
            installed = Path(IMPORT_NAMES.get(relative.parts[0], relative.parts[0]), *relative.parts[1:])
            assert installed.as_posix() in names, f"{relative} is missing from the wheel"
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "voice-bridge = bridge.cli:main" in entry_points
