"""WidgetSink: the live display from core ipywidgets only (VBox, HBox, HTML, FloatProgress, Label).

Core widgets render in JupyterLab, Notebook 7, VS Code and Colab without a custom-widget opt-in or a CDN, and
nbclient saves their final state into the notebook. Everything runs on the main thread (no Output widget, no
threads: both lose output on some ipykernel versions). Each trait set is a comm message, so redraws are
throttled by wall time, batched with `hold_sync`, and a part is only sent when its text changed.
"""

from __future__ import annotations

import contextlib
import functools

from jupyter_llm import events as ev
from jupyter_llm.sinks.html import END_STYLES, REDRAW_INTERVAL, LiveView
from jupyter_llm.sinks.throttle import Throttle

CHART_INTERVAL = 1.0  # seconds: the curves are most of a redraw's cost (SVG paths); the bar and numbers move faster


@functools.cache
def _root_class():
    import ipywidgets as w

    class Root(w.VBox):
        """A plain VBox (no custom front-end code) whose text fallback is short: static viewers without the saved
        widget state show `text/plain`, and the default repr would dump every child's HTML."""

        def __repr__(self) -> str:
            return "<jupyter_llm live progress: a widget; the summary below holds the results>"

    return Root


class WidgetSink:
    """Live progress as widgets: displayed once at FitStart, redrawn at most every `interval` seconds."""

    def __init__(self, interval: float = REDRAW_INTERVAL):
        import ipywidgets as w

        self.view = LiveView()
        self.throttle = Throttle(interval)
        self.chart_throttle = Throttle(max(interval, CHART_INTERVAL))
        self.redraws = 0
        self.header = w.HTML()
        self.phase = w.HTML()
        self.bar = w.FloatProgress(value=0.0, min=0.0, max=1.0, bar_style="",
                                   layout=w.Layout(width="280px", min_width="120px"))
        self.label = w.Label(layout=w.Layout(width="auto", overflow="visible"))
        self.chart = w.HTML()
        self.table = w.HTML()
        self.end = w.HTML()
        self.controls = w.HTML()  # a note for a foreground fit; `attach` puts a background fit's buttons here
        parts = [self.header, self.phase, w.HBox([self.bar, self.label]), self.controls, self.chart, self.table,
                 self.end]
        self.root = _root_class()(parts)
        self._displayed = False

    def attach(self, run) -> None:
        """Steer `run` (a fit in the background) from this display: Pause, Stop, learning rate."""
        from jupyter_llm.sinks.controls import control_bar

        self.controls = control_bar(run)
        children = list(self.root.children)
        children[3] = self.controls
        self.root.children = children

    def show(self):
        """Display the live widget (again: a new view of the same model, still updating)."""
        from IPython.display import display

        display(self.root)
        self._displayed = True

    def on(self, event) -> None:
        final = self.view.on(event)
        if isinstance(event, ev.FitStart):
            self.throttle.reset()
            self.chart_throttle.reset()
            self.bar.bar_style = ""
            self.bar.max = max(event.steps_total, 1)
        rare = isinstance(event, (ev.FitStart, ev.CompileStart, ev.CompileEnd))
        if self.throttle.ready(force=final or rare):
            self.redraw(chart=self.chart_throttle.ready(force=final or rare))
        if isinstance(event, ev.FitStart) and not hasattr(self.controls, "stop_button"):
            from jupyter_llm.sinks.controls import FOREGROUND_NOTE

            self.controls.value = FOREGROUND_NOTE
        if isinstance(event, ev.FitEnd):  # nothing left to steer
            if hasattr(self.controls, "stop_button"):
                for child in self.controls.children:
                    if hasattr(child, "disabled"):
                        child.disabled = True
            else:
                self.controls.value = ""
        if not self._displayed and isinstance(event, ev.FitStart):
            self.show()

    def redraw(self, chart: bool = True) -> None:
        """Send the parts whose text changed, one message per widget (`hold_sync` batches its traits); the chart
        only when `chart` (it is redrawn at most once a second)."""
        v = self.view
        updates = [
            (self.header, {"value": v.header_html()}),
            (self.phase, {"value": v.phase_html()}),
            (self.bar, self._bar_traits()),
            (self.label, {"value": v.status_text()}),
            *([(self.chart, {"value": v.chart_svg()})] if chart else []),
            (self.table, {"value": v.table_html()}),
            (self.end, {"value": v.end_html()}),
        ]
        with contextlib.ExitStack() as stack:
            for widget, traits in updates:
                changed = {k: x for k, x in traits.items() if getattr(widget, k) != x}
                if changed:
                    stack.enter_context(widget.hold_sync())
                    for k, x in changed.items():
                        setattr(widget, k, x)
        self.redraws += 1

    def _bar_traits(self) -> dict:
        v = self.view
        traits = {"value": float(min(v.step, self.bar.max))}
        if v.end is not None:
            traits["bar_style"] = END_STYLES.get(v.end.reason, END_STYLES[ev.FAILED])[3]
            if v.end.reason == ev.COMPLETED:
                traits["value"] = float(self.bar.max)
        return traits
