"""Controls under a running turn: Stop, and a status line."""

from __future__ import annotations

import traitlets

from ._base import Widget, _asset


class TurnControls(Widget):
    """A Stop button while the turn runs; the turn's summary after."""

    _esm = _asset("controls.js")
    running = traitlets.Bool(True, help="The turn is running (Stop is shown).").tag(sync=True)
    status = traitlets.Unicode("Working…", help="One line about the turn.").tag(sync=True)
    stop_requested = traitlets.Bool(False, help="Stop was clicked.")
