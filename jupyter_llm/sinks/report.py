"""Report: the static summary of a finished fit, built to survive saving, nbconvert and nbviewer.

Live widgets need their saved state (and JavaScript) to show anything after the kernel is gone; a static
renderer shows only `text/plain`. So when a fit ends we also display this: final metrics (train, validation,
test), the curves as an SVG image and a run card, with a text version for terminals and static viewers. Its size
does not grow with the number of steps: curves come from bounded series, the table from the last epoch only.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from html import escape
from typing import Iterable, Mapping

from jupyter_llm import events as ev
from jupyter_llm.sinks.html import END_STYLES, end_banner_html, fmt_value, header_html
from jupyter_llm.sinks.position import at_text, corpus_epochs, format_epochs, windowed
from jupyter_llm.sinks.series import Curves
from jupyter_llm.sinks.svg import line_chart_svg, svg_img
from jupyter_llm.sinks.text import format_duration, format_memory

PACKAGES = ("jax", "flax", "optax", "jupyter_llm")
REPORT_POINTS = 256  # points per curve in a report: enough for the shape, small in the saved notebook
CELL = 'style="text-align:right;padding:1px 8px"'
KEY = 'style="text-align:left;padding:1px 8px;color:#555"'


def versions(packages: Iterable[str] = PACKAGES) -> dict[str, str]:
    out = {}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def config_dict(config) -> dict:
    if hasattr(config, "to_dict"):
        return config.to_dict()
    if dataclasses.is_dataclass(config):
        return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    return dict(config) if isinstance(config, Mapping) else {}


def _split_table(row) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    for key, value in row.items():
        if key in ("epoch", "step", "elapsed") or not isinstance(value, (int, float)):
            continue
        split, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
        table.setdefault(name, {})[split] = float(value)
    return table


class Report:
    """Summary of one fit.

    `trace` is the (step, train loss) trace at the reporting cadence, `log` the per-epoch rows
    ({"epoch", "step", "loss", "val_loss", ...}), `evals` the validation `Eval` events (they replace the log's
    val_ values for the curves when given, e.g. for step-based fits with `eval_every`).
    """

    def __init__(self, start: ev.FitStart, end: ev.FitEnd, *, trace: Iterable = (), log: Iterable[Mapping] = (),
                 evals: Iterable[ev.Eval] = (), curves: Curves | None = None, changes: Iterable[Mapping] = ()):
        """`changes`: the numbers set while the fit ran (`run.set`), shown on the card so the run can be replayed."""
        self.start, self.end = start, end
        self.changes = list(changes)
        self.log = list(log)
        self.final = self._final_metrics()
        self.curves = curves or _curves(trace, self.log, evals)
        self.versions = versions()

    def _final_metrics(self) -> dict[str, dict[str, float]]:
        """{metric: {"train": .., "validation": .., "test": ..}} of the weights the model holds: the last epoch's, or
        with --keep-best the best epoch's (the test evaluation is of those weights too)."""
        rows = list(self.log) or [{k: v[-1] for k, v in self.end.history.items() if v}]
        held = self.end.weights_epoch
        kept = next((r for r in rows if r.get("epoch") == held), None) if held is not None else None
        table = _split_table(kept or rows[-1])
        for name, value in (self.end.test_metrics or {}).items():
            table.setdefault(name, {})["test"] = float(value)
        self.last_epoch = _split_table(rows[-1]) if kept is not None and kept is not rows[-1] else None
        self.held_epoch = held if kept is not None else None
        self.held_step = kept.get("step") if kept is not None else None
        return dict(sorted(table.items(), key=lambda kv: kv[0] != "loss"))  # loss first, then in logged order

    def held_note(self) -> str:
        """With --keep-best: whose metrics the table shows, and the last epoch's beside them."""
        if self.held_epoch is None or self.last_epoch is None:  # not --keep-best, or the best was the last
            return ""
        last = ", ".join(f"{'val_' if split == 'validation' else ''}{name} {fmt_value(row[split])}"
                         for name, row in self.last_epoch.items() for split in ("train", "validation") if split in row)
        if windowed(self.start) and self.held_step is not None:
            return (f"metrics of the weights the model holds: the evaluation at step {self.held_step} (the best); "
                    f"the last evaluation's: {last}")
        return (f"metrics of the weights the model holds: epoch {self.held_epoch} (the best); the last epoch's: "
                f"{last}")

    # -- HTML -------------------------------------------------------------------------------------------------
    def metrics_html(self) -> str:
        splits = [s for s in ("train", "validation", "test") if any(s in row for row in self.final.values())]
        if not splits:
            return '<div style="color:#777">no metrics recorded</div>'
        head = f"<th {KEY}>metric</th>" + "".join(f"<th {CELL}>{s}</th>" for s in splits)
        body = "".join(f"<tr><td {KEY}>{escape(name)}</td>"
                       + "".join(f"<td {CELL}>{fmt_value(row[s]) if s in row else ''}</td>" for s in splits)
                       + "</tr>" for name, row in self.final.items())
        note = self.held_note()
        caption = f'<caption style="caption-side:bottom;font-size:11px;color:#555;text-align:left">' \
                  f'{escape(note)}</caption>' if note else ""
        return (f'<table class="jl-summary" style="border-collapse:collapse;font-size:12px;'
                f'font-variant-numeric:tabular-nums">{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
                "</table>")

    def chart_svg(self) -> str:
        return line_chart_svg(self.curves.series(), 560, 300, title="training curves", xlabel="step",
                              secondary=self.curves.secondary())

    def chart_html(self) -> str:
        """The curves as an SVG image (see `svg.svg_img` for why not inline), or nothing before the first step."""
        return svg_img(self.chart_svg(), "training curves") if self.curves.series() else ""

    def card(self) -> dict[str, str]:
        """The run card: what someone needs to reproduce or compare this run."""
        s, e = self.start, self.end
        cfg = config_dict(s.config)
        return {
            "model": f"{s.model_name} ({s.param_count:,} params)",
            "devices": s.devices,
            "data": ", ".join(f"{k} {v:,}" for k, v in s.split_sizes.items() if v),
            "steps": self._steps_text(),
            "seed": str(cfg.get("seed", "?")),
            "config": ", ".join(f"{k}={v}" for k, v in cfg.items() if v is not None),
            "time": f"train {format_duration(e.elapsed)}, compile {e.compile_seconds:.1f} s",
            **({"memory": format_memory(e.memory)} if e.memory else {}),
            **({"changed": "; ".join(f"step {c['step']}: " + ", ".join(f"{k}={v:.4g}" for k, v in c.items()
                                                                      if k != "step") for c in self.changes)}
               if self.changes else {}),
            "end": e.reason + (f" — {e.message}" if e.message else ""),
            "versions": ", ".join(f"{k} {v}" for k, v in self.versions.items()),
        }

    def _steps_text(self) -> str:
        """'90/225 (epoch 2/5, batch 32)'; a text corpus: '500/2000 (0.31 epochs, evaluated every 250 steps, ...)'."""
        s, e = self.start, self.end
        if windowed(s):
            seen = format_epochs(corpus_epochs(s, e.step))
            return f"{e.step}/{s.steps_total} ({seen}, evaluated every {s.steps_per_epoch} steps, batch {s.batch_size})"
        return f"{e.step}/{s.steps_total} (epoch {e.epoch}/{s.epochs}, batch {s.batch_size})"

    def card_html(self) -> str:
        rows = "".join(f"<tr><td {KEY}>{escape(k)}</td><td style=\"text-align:left;padding:1px 8px\">{escape(v)}"
                       f"</td></tr>" for k, v in self.card().items())
        return f'<table class="jl-card" style="border-collapse:collapse;font-size:12px">{rows}</table>'

    def _repr_html_(self) -> str:
        return (f'<div class="jl-report">{header_html(self.start)}{end_banner_html(self.end, self.start)}'
                f'<div style="display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start">'
                f"<div>{self.metrics_html()}</div><div>{self.chart_html()}</div></div>"
                f"{self.card_html()}</div>")

    # -- text -------------------------------------------------------------------------------------------------
    def __repr__(self) -> str:
        s, e = self.start, self.end
        label = END_STYLES.get(e.reason, END_STYLES[ev.FAILED])[0]
        at = at_text(s, e.step, e.epoch, of_total=True)
        lines = [f"{s.model_name}: {label} at step {e.step}/{s.steps_total} {at} in {format_duration(e.elapsed)}"
                 f" (+ {e.compile_seconds:.1f} s compile)"]
        if e.message:
            lines.append(f"  {e.message}")
        splits = [sp for sp in ("train", "validation", "test") if any(sp in r for r in self.final.values())]
        if splits:
            width = max(len(n) for n in self.final) + 2
            lines.append(" " * width + "".join(f"{sp:>12}" for sp in splits))
            for name, row in self.final.items():
                lines.append(f"{name:<{width}}" + "".join(f"{row[sp]:>12.4g}" if sp in row else " " * 12
                                                          for sp in splits))
            if self.held_note():
                lines.append(f"  ({self.held_note()})")
        card = self.card()
        lines += [f"seed {card['seed']} · {card['devices']} · {card['versions']}"]
        return "\n".join(lines)

    def _repr_pretty_(self, p, cycle) -> None:
        p.text(repr(self))


def _curves(trace, log, evals) -> Curves:
    evals = [e for e in evals if e.split == "validation"]
    curves = Curves.from_history(trace, [] if evals else log, capacity=REPORT_POINTS)
    for e in evals:
        curves.add_eval(e.step, e.metrics)
    if evals and not curves.train.count:  # per-epoch train loss when there was no step trace
        for row in log:
            if "loss" in row:
                curves.add_train(row.get("step", 0), row["loss"])
    return curves


class ReportSink:
    """Displays the `Report` when the fit ends, so the cell's output ends with a summary that survives export."""

    def __init__(self):
        self.start: ev.FitStart | None = None
        self.curves = Curves(REPORT_POINTS)
        self.log: list[dict] = []  # one row per epoch: the report's table reads the last
        self.changes: list[dict] = []
        self.report: Report | None = None

    def on(self, event) -> None:
        if isinstance(event, ev.FitStart):
            self.start, self.curves, self.log, self.report = event, Curves(REPORT_POINTS), [], None
            self.changes = []
        elif isinstance(event, ev.Control):
            self.changes.append({"step": event.step, **event.changes})
        elif isinstance(event, ev.Progress) and "loss" in event.metrics:
            self.curves.add_train(event.step, event.metrics["loss"])
        elif isinstance(event, ev.Eval) and event.split == "validation":
            self.curves.add_eval(event.step, event.metrics)
        elif isinstance(event, ev.EpochEnd):
            self.log.append({"epoch": event.epoch, "step": event.step, "elapsed": event.elapsed, **event.logs})
        elif isinstance(event, ev.FitEnd) and self.start is not None:
            from IPython.display import display

            self.report = Report(self.start, event, log=self.log, curves=self.curves, changes=self.changes)
            display(self.report)
