"""Shared base of agent-magic's anywidgets: bundled ES module and CSS, no CDN, no build step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anywidget

STATIC = Path(__file__).parent / "static"


def _asset(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


class Widget(anywidget.AnyWidget):  # type: ignore[misc]
    """An anywidget whose front-end code ships inside the package."""

    _css = _asset("agent-magic.css")

    def on_event(self, handler: Any) -> None:
        """Register ``handler(content: dict)`` for messages from the front end; errors are shown, not lost."""

        def _dispatch(_widget: Any, content: Any, _buffers: Any) -> None:
            if not isinstance(content, dict):
                return
            try:
                handler(content)
            except Exception as e:  # handlers report their own errors in the widget
                self.report_error(f"{type(e).__name__}: {e}")

        self.on_msg(_dispatch)

    def report_error(self, text: str) -> None:
        if "status" in self.trait_names():
            self.set_trait("status", f"Error: {text}")
