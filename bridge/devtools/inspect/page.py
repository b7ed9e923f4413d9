"""The inspector page: `inspect_data` embedded as one JSON block in a self-contained HTML file.

Nothing is fetched at view time: the styles and the script are inline (`page.html`, package data:
vanilla JavaScript, no library), the audio is inline (8 kHz μ-law, base64, played with WebAudio)
unless left out.

The script reads the one JSON block (`#call-data`), draws the waveforms on canvases from the
precomputed min/max buckets (a pyramid of coarser levels is built once, so a pixel column costs a
few reads at any zoom), the events, spans and transcript as SVG (only what is in view), and plays
both lanes as one stereo WebAudio stream (left: caller, right: agent as heard), decoded from μ-law
20 s at a time.
"""

from __future__ import annotations

import html
import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from ...recording_format import Recording, load_recording, open_private
from .data import inspect_data


@cache
def _template() -> str:
    return resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")


def _json_block(data: dict[str, Any]) -> str:
    """JSON safe inside a <script> element: no "</script>", no "<!--" (escaped "<" is still JSON)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("<", "\\u003c")


def render_html(data: dict[str, Any]) -> str:
    title = f"call {data['header'].get('call_sid') or ''} ({data['header'].get('source', '')})"
    return _template().replace("__TITLE__", html.escape(title)).replace("__DATA__", _json_block(data))


def write_page(recording: Recording | str | Path, out: Path, include_audio: bool = True) -> int:
    """Write the page for a recording (or a recording's folder) to `out`; returns its size in bytes.
    The page holds the call's audio and words: it is written private (0600) like the recording."""
    if not isinstance(recording, Recording):
        recording = load_recording(recording)
    page = render_html(inspect_data(recording, include_audio=include_audio)).encode("utf-8")
    with open_private(out, "wb") as file:
        file.write(page)
    return len(page)
