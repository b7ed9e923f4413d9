"""Files the tools need at run time, shipped in the wheel as package data and found with importlib.resources.

They live in the top-level `fixtures/` folder (the one source of truth); pyproject.toml installs
that folder as the `bridge.fixtures` package with only these files (`fixtures/calls/`, the
recorded calls of the tests, stays out). So `pip install .` works from any directory, not only
a source checkout.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from .settings import ConfigError

PACKAGE = "bridge.fixtures"
AGENT_CLIPS_INDEX = "audio/clips.json"  # the local agent's voice: clips.json and the WAVs beside it
CALLER_QUESTION = "audio/caller_question.wav"  # what the simulated caller says by default
ORDERS = "orders.json"  # the example lookup_order tool's data


class PackageDataMissing(ConfigError):
    """A shipped data file is not where the package says it is (a broken or partial install)."""


def data_path(relative: str) -> Path:
    """The installed file `relative` to fixtures/, as a path; missing: a one-line error naming it."""
    try:
        root = files(PACKAGE)
    except ModuleNotFoundError:
        raise PackageDataMissing(f"the package data {PACKAGE} is not installed (reinstall voice-bridge)") from None
    resource = root.joinpath(*relative.split("/"))
    # Installed wheels are plain folders; a zipped install would need extracting, which nothing here does.
    if not resource.is_file() or not isinstance(resource, Path):
        raise PackageDataMissing(f"{PACKAGE.replace('.', '/')}/{relative} is missing from the installed package (reinstall voice-bridge)")
    return resource
