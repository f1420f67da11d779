"""Drive the viewer in headless Chromium (Debian's, through Playwright): the helpers the
browser test and ``benchmarks/viewer.py`` share (the server runs in a thread:
:func:`anodiff.serve.server.running`)."""

from __future__ import annotations

import shutil
from typing import Any

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"),
                             shutil.which("google-chrome")) if p), None)


def viewer_stats(page: Any) -> dict[str, Any]:
    """What the page measured (window.anodiffViewer.stats) and its cursor."""
    return page.evaluate("() => ({...window.anodiffViewer.stats, "
                         "cursor: window.anodiffViewer.state.cursor.slice()})")


def set_threshold(page: Any, value: float) -> None:
    """Move the threshold slider as a user's drag does (an input event)."""
    page.locator("#threshold").evaluate(
        "(e, v) => { e.value = v; e.dispatchEvent(new Event('input')); }", value)
