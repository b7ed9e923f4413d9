"""The call inspector: one self-contained HTML page for a recorded call (`voice-bridge inspect`)."""

from .data import inspect_data
from .page import render_html, write_page

__all__ = ["inspect_data", "render_html", "write_page"]
