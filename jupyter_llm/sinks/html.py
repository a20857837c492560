"""The live display's content as HTML, and HTMLSink: that content in ONE display handle, for front ends without
widgets (fastprogress's approach: `display(..., display_id=True)` once, then `handle.update`).

`LiveView` is the state both live displays share: it folds events into a header, a phase line, a progress line,
the bounded chart curves, the metrics table and the end banner, and renders each as an HTML fragment. Fragments
are cached by version, so a redraw re-renders only what changed and never more than the bounded series.
"""

from __future__ import annotations

from html import escape

from jupyter_llm import events as ev
from jupyter_llm.sinks.position import at_text, corpus_epochs, format_epochs, position_text, windowed
from jupyter_llm.sinks.series import Curves
from jupyter_llm.sinks.svg import line_chart_svg, svg_img
from jupyter_llm.sinks.text import format_duration, format_memory, format_rate
from jupyter_llm.sinks.throttle import Throttle

REDRAW_INTERVAL = 0.25  # seconds: at most ~4 redraws a second; final events always draw
MAX_TABLE_ROWS = 8  # the newest rows the live table shows; the report and run.history keep them all
MAX_ROWS_KEPT = 1000  # `LiveView.rows` keeps this many (one per epoch or evaluation), so memory stays bounded

# reason -> (label, text colour, background, ipywidgets bar_style)
END_STYLES = {
    ev.COMPLETED: ("Completed", "#1b5e20", "#e8f5e9", "success"),
    ev.EARLY_STOPPED: ("Stopped early", "#0d47a1", "#e3f2fd", "info"),
    ev.INTERRUPTED: ("Interrupted", "#e65100", "#fff3e0", "warning"),
    ev.NAN: ("Stopped: loss is not finite", "#b71c1c", "#ffebee", "danger"),
    ev.FAILED: ("Failed", "#b71c1c", "#ffebee", "danger"),
}
RUNNING_COLOR = "#1976d2"


def fmt_value(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else escape(str(v))


def header_html(start: ev.FitStart) -> str:
    sizes = " · ".join(f"{escape(k)} {v:,}" for k, v in start.split_sizes.items() if v)
    return (f'<div style="font-size:13px"><b>{escape(start.model_name)}</b> · {start.param_count:,} params · '
            f'{escape(start.devices)} · batch {start.batch_size} · {sizes}</div>')


def end_banner_html(end: ev.FitEnd, start: ev.FitStart | None = None) -> str:
    """The coloured end state: what happened, at which step, and the message (e.g. where a NaN appeared)."""
    label, fg, bg, _ = END_STYLES.get(end.reason, END_STYLES[ev.FAILED])
    of = f"/{start.steps_total}" if start is not None and start.steps_total else ""
    at = at_text(start, end.step, end.epoch) if start is not None else f"(epoch {end.epoch})"
    text = (f"<b>{label}</b> at step {end.step}{of} {at} after {format_duration(end.elapsed)}"
            f" (+ {end.compile_seconds:.1f} s compile)")
    if end.message:
        text += f" — {escape(end.message)}"
    return (f'<div class="jl-end jl-{end.reason}" data-reason="{end.reason}" style="color:{fg};background:{bg};'
            f'border-left:4px solid {fg};padding:4px 8px;margin:4px 0;font-size:13px">{text}</div>')


def table_html(rows: list[dict], max_rows: int = MAX_TABLE_ROWS) -> str:
    """Metrics per epoch (or evaluation): train columns, then val_ ones; the newest `max_rows` rows. A text corpus's
    rows are evaluations: their position is the step and the corpus `epochs` it stands for (`sinks/position.py`)."""
    if not rows:
        return ""
    seen = list(dict.fromkeys(k for r in rows for k in r if k != "elapsed"))
    cols = [k for k in seen if not k.startswith("val_")] + [k for k in seen if k.startswith("val_")] + ["elapsed"]
    shown = rows[-max_rows:]
    th = "".join(f'<th style="text-align:right;padding:1px 8px">{escape(c)}</th>' for c in cols)
    body = []
    for r in shown:
        cells = (format_duration(r[c]) if c == "elapsed" and c in r
                 else format_epochs(r[c]).split()[0] if c == "epochs" and c in r
                 else fmt_value(r.get(c, "")) for c in cols)
        body.append("<tr>" + "".join(f'<td style="text-align:right;padding:0 8px;line-height:1.3">{c}</td>'
                                     for c in cells)
                    + "</tr>")
    note = (f'<div style="color:#777;font-size:11px">last {len(shown)} of {len(rows)} rows</div>'
            if len(rows) > len(shown) else "")
    return (f'<table class="jl-metrics" style="border-collapse:collapse;font-size:12px;'
            f'font-variant-numeric:tabular-nums"><thead><tr>{th}</tr></thead><tbody>{"".join(body)}</tbody>'
            f"</table>{note}")


class LiveView:
    """Folds events into the display state; `on` returns True for the final event (draw it whatever the throttle)."""

    def __init__(self, width: int = 560, height: int = 300):
        self.width, self.height = width, height
        self._reset()

    def _reset(self) -> None:
        self.start: ev.FitStart | None = None
        self.phase = ""
        self.progress: ev.Progress | None = None
        self.curves = Curves()
        self.rows: list[dict] = []
        self._row_at: dict[int, dict] = {}
        self.test_metrics: dict | None = None
        self.sample: ev.Sample | None = None
        self.end: ev.FitEnd | None = None
        self.rows_version = 0
        self._svg_cache: tuple[int, str] = (-1, "")
        self._table_cache: tuple[int, str] = (-1, "")

    # -- state ------------------------------------------------------------------------------------------------
    def on(self, event) -> bool:
        if isinstance(event, ev.FitStart):
            self._reset()
            self.start = event
        elif isinstance(event, ev.CompileStart):
            self.phase = "compiling…"
        elif isinstance(event, ev.CompileEnd):
            what = "reused compiled steps" if event.cached else "compiled"
            flops = f" · {event.flops_per_step / 1e9:.3g} GFLOP/step" if event.flops_per_step else ""
            memory = format_memory(event.memory)
            self.phase = f"{what} in {event.seconds:.2f} s{flops}" + (f" · {memory}" if memory else "")
        elif isinstance(event, ev.Progress):
            self.progress = event
            if "loss" in event.metrics:
                self.curves.add_train(event.step, event.metrics["loss"])
        elif isinstance(event, ev.Eval):
            if event.split == "validation":
                self.curves.add_eval(event.step, event.metrics)
                row = self._row(event.epoch, event.step)
                if "loss" not in row and self.progress and "loss" in self.progress.metrics:
                    row["loss"] = self.progress.metrics["loss"]  # train loss near this step, for step-based fits
                row.update({f"val_{k}": v for k, v in event.metrics.items()})
            else:
                self.test_metrics = dict(event.metrics)
        elif isinstance(event, ev.EpochEnd):
            self._row(event.epoch, event.step).update(event.logs, elapsed=event.elapsed)
        elif isinstance(event, ev.Sample):
            self.sample = event
        elif isinstance(event, ev.Control):
            changed = ", ".join(f"{k} → {v:.3g}" for k, v in event.changes.items())
            self.phase = f"{self.phase.split(' · set at step')[0]} · set at step {event.step}: {changed}"
        elif isinstance(event, ev.FitEnd):
            self.end = event
            if event.test_metrics:
                self.test_metrics = dict(event.test_metrics)
            return True
        return False

    def _row(self, epoch: int, step: int) -> dict:
        self.rows_version += 1
        if step not in self._row_at:
            row = ({"step": step, "epochs": corpus_epochs(self.start, step)} if windowed(self.start)
                   else {"epoch": epoch, "step": step})
            if self.progress is not None:
                row["elapsed"] = self.progress.elapsed
            self._row_at[step] = row
            self.rows.append(row)
            if len(self.rows) > MAX_ROWS_KEPT:
                del self._row_at[self.rows.pop(0)["step"]]
        return self._row_at[step]

    # -- fragments --------------------------------------------------------------------------------------------
    @property
    def steps_total(self) -> int:
        return self.start.steps_total if self.start else 0

    @property
    def step(self) -> int:
        if self.end is not None:
            return self.end.step
        return self.progress.step if self.progress else 0

    def header_html(self) -> str:
        return header_html(self.start) if self.start else ""

    def phase_html(self) -> str:
        html = f'<div style="color:#555;font-size:12px">{escape(self.phase)}</div>' if self.phase else ""
        if self.sample is not None:
            text = escape(self.sample.prompt + self.sample.text)
            html += (f'<div style="font-size:12px;color:#555">sample at step {self.sample.step}:</div>'
                     f'<pre style="font-size:12px;max-height:9em;overflow:auto;margin:2px 0">{text}</pre>')
        return html

    def status_text(self) -> str:
        """epoch k/n · step i/N (a text corpus: step i/N (x epochs)) · elapsed · ETA · throughput (compile time
        excluded: these come from Progress)."""
        p, s = self.progress, self.start
        if s is None:
            return ""
        epoch = self.end.epoch if self.end else (p.epoch if p else 0)
        parts = [position_text(s, self.step, epoch)]
        if p is not None:
            parts.append(f"{format_duration(self.end.elapsed if self.end else p.elapsed)} elapsed")
            if self.end is None:
                parts.append(f"ETA {format_duration(p.eta)}")
            parts.append(format_rate(p.units_per_s, s.unit))
            if "loss" in p.metrics:
                parts.append(f"loss {p.metrics['loss']:.4g}")
        return " · ".join(parts)

    def chart_svg(self) -> str:
        if self._svg_cache[0] != self.curves.version:
            svg = line_chart_svg(self.curves.series(), self.width, self.height, title="", xlabel="step",
                                 secondary=self.curves.secondary(), x_range=(0, max(self.steps_total, 1)))
            self._svg_cache = (self.curves.version, svg)
        return self._svg_cache[1]

    def table_html(self) -> str:
        if self._table_cache[0] != self.rows_version:
            self._table_cache = (self.rows_version, table_html(self.rows))
        return self._table_cache[1]

    def test_html(self) -> str:
        if not self.test_metrics:
            return ""
        items = " · ".join(f"{escape(k)} {v:.4g}" for k, v in self.test_metrics.items())
        return f'<div style="font-size:12px"><b>test</b>: {items}</div>'

    def end_html(self) -> str:
        return (end_banner_html(self.end, self.start) if self.end else "") + self.test_html()

    def bar_html(self) -> str:
        frac = min(1.0, self.step / self.steps_total) if self.steps_total else 0.0
        color = END_STYLES.get(self.end.reason, END_STYLES[ev.FAILED])[1] if self.end else RUNNING_COLOR
        return (f'<div style="display:flex;align-items:center;gap:8px;font-size:12px">'
                f'<div style="width:240px;height:10px;background:#e0e0e0;border-radius:3px">'
                f'<div class="jl-bar" style="width:{100 * frac:.1f}%;height:100%;background:{color};'
                f'border-radius:3px"></div></div><span>{escape(self.status_text())}</span></div>')

    def html(self) -> str:
        """Everything, for the HTML tier (the chart as an <img>: this output stays in the saved notebook)."""
        chart = svg_img(self.chart_svg(), "training curves")
        return (f'<div class="jl-live">{self.header_html()}{self.phase_html()}{self.bar_html()}{chart}'
                f"{self.table_html()}{self.end_html()}</div>")


class HTMLSink:
    """The live display through one `display_id` handle: works wherever HTML outputs do, no widgets needed."""

    def __init__(self, interval: float = REDRAW_INTERVAL):
        self.view = LiveView()
        self.throttle = Throttle(interval)
        self.handle = None
        self.redraws = 0

    def on(self, event) -> None:
        final = self.view.on(event)
        if isinstance(event, ev.FitStart):
            from IPython.display import HTML, display

            self.throttle.reset()
            self.throttle.ready()
            self.handle = display(HTML(self.view.html()), display_id=True)
            self.redraws = 1
            return
        rare = isinstance(event, (ev.CompileStart, ev.CompileEnd))
        if self.handle is not None and self.throttle.ready(force=final or rare):
            from IPython.display import HTML

            self.handle.update(HTML(self.view.html()))
            self.redraws += 1
