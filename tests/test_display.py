"""Display sinks fed with fabricated event streams: no JAX, no training, no kernel."""

import subprocess
import sys
from unittest import mock

import pytest

from jupyter_llm import events as ev
from jupyter_llm.config import FitConfig
from jupyter_llm.errors import ConfigError
from jupyter_llm.sinks import select
from jupyter_llm.sinks.html import END_STYLES, HTMLSink, LiveView
from jupyter_llm.sinks.report import Report, ReportSink
from jupyter_llm.sinks.series import Curves, Ema, Series
from jupyter_llm.sinks.svg import line_chart_svg, nice_ticks
from jupyter_llm.sinks.throttle import Throttle


def fake_events(epochs=3, steps_per_epoch=10, reason="completed", progress_every=1, eval_every=None, test=True,
                steps_per_pass=None):
    """The events of a fit, as the loop sends them: Progress, validation Eval, EpochEnd per epoch, then FitEnd.

    Self-contained (its imports inside) so the nbconvert test can paste its source into a notebook cell.
    """
    import math  # noqa: F401,F811 - local on purpose: the nbconvert test pastes this function alone

    from jupyter_llm import events as ev
    from jupyter_llm.config import FitConfig

    total = epochs * steps_per_epoch
    yield ev.FitStart(config=FitConfig(epochs=epochs, seed=7, eval_every=eval_every), model_name="MLP",
                      param_count=12_345, devices="cpu x 1", batch_size=32, steps_total=total,
                      steps_per_epoch=steps_per_epoch, epochs=epochs,
                      split_sizes={"train": 320, "validation": 80, "test": 0}, units_per_step=32,
                      steps_per_pass=steps_per_pass)
    yield ev.CompileStart()
    yield ev.CompileEnd(seconds=1.25, flops_per_step=2e6)
    history, elapsed, step = {}, 0.0, 0
    for epoch in range(1, epochs + 1):
        for _ in range(steps_per_epoch):
            step += 1
            elapsed += 0.01
            loss = 2.0 * math.exp(-step / total) + 0.1
            if step % progress_every == 0:
                yield ev.Progress(step=step, steps_total=total, epoch=epoch, metrics={"loss": loss, "accuracy": 0.5},
                                  elapsed=elapsed, units_per_s=3200.0, eta=(total - step) * 0.01)
            if eval_every and step % eval_every == 0:
                yield ev.Eval(step, epoch, "validation", {"loss": loss + 0.1, "accuracy": 1 - loss / 3})
        logs = {"loss": loss, "accuracy": 1 - loss / 3}
        if not eval_every:
            val = {"loss": loss + 0.1, "accuracy": 1 - loss / 2.5}
            yield ev.Eval(step, epoch, "validation", val)
            logs.update({f"val_{k}": v for k, v in val.items()})
        for k, v in logs.items():
            history.setdefault(k, []).append(v)
        yield ev.EpochEnd(epoch, step, logs, elapsed)
    test_metrics = {"loss": 0.3, "accuracy": 0.91} if test else None
    if test_metrics:
        yield ev.Eval(step, epochs, "test", test_metrics)
    yield ev.FitEnd(reason=reason, step=step, epoch=epochs, elapsed=elapsed, compile_seconds=1.25,
                    history=history, test_metrics=test_metrics, message="" if reason == "completed" else "why")


def charts_in(html: str) -> str:
    """The SVG documents embedded as `<img src="data:image/svg+xml;base64,...">` in `html`, concatenated."""
    import base64
    import re

    found = re.findall(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)", html)
    return "".join(base64.b64decode(m).decode() for m in found)


def feed(sinks, events):
    for event in events:
        for sink in sinks:
            sink.on(event)


@pytest.fixture
def fake_clock(monkeypatch):
    """A monotonic clock that advances 1 ms per reading: 'wall time' that does not depend on the machine."""
    t = [0.0]

    def monotonic():
        t[0] += 0.001
        return t[0]

    monkeypatch.setattr("jupyter_llm.sinks.throttle.time.monotonic", monotonic)
    return t


@pytest.fixture
def displayed(monkeypatch):
    """Capture IPython.display.display calls; each returns a mock handle."""
    import IPython.display

    calls = []

    def display(obj, display_id=None, **kw):
        handle = mock.Mock()
        calls.append((obj, display_id, handle))
        return handle if display_id else None

    monkeypatch.setattr(IPython.display, "display", display)
    return calls


# -- throttle, series, svg -------------------------------------------------------------------------------------
def test_throttle_by_wall_time():
    t = Throttle(0.25)
    assert t.ready(now=0.0)
    assert not t.ready(now=0.1)
    assert t.ready(now=0.26)
    assert not t.ready(now=0.3)
    assert t.ready(now=0.3, force=True)


def test_series_stays_bounded_and_keeps_the_shape():
    s = Series(capacity=64)
    for i in range(100_000):
        s.append(i, i * 2.0)
    pts = s.points()
    assert len(pts) <= 64 and s.count == 100_000
    assert all(abs(y - 2 * x) < 1e-6 for x, y in pts)  # averaging a line keeps it on the line
    assert pts[0][0] < 2_500 and pts[-1][0] > 97_500  # spans the whole run
    assert s.last == (99_999, 199_998.0)


def test_series_skips_non_finite_values():
    s = Series()
    for y in (1.0, float("nan"), float("inf"), 2.0):
        s.append(0, y)
    assert s.count == 2


def test_ema_smooths_with_bias_correction():
    e = Ema(0.9)
    assert e.update(5.0) == 5.0  # no pull towards 0 at the start
    assert 5.0 < e.update(10.0) < 10.0


def test_nice_ticks_are_round_and_cover_the_range():
    ticks = nice_ticks(0.13, 2.4)
    assert ticks[0] <= 0.13 and ticks[-1] >= 2.4 and 3 <= len(ticks) <= 8


def test_chart_has_a_polyline_per_series_legend_and_panels():
    svg = line_chart_svg({"train loss (smoothed)": [(0, 2.0), (5, 1.0)], "val loss": [(5, 1.2)],
                          "val accuracy": [(5, 0.7)]}, title="t", secondary=["val accuracy"])
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count("<polyline") == 3 and "val accuracy" in svg
    assert len({c for c in ("#1f77b4", "#ff7f0e", "#2ca02c") if c in svg}) == 3  # distinct colours


def test_chart_log_scale_and_bad_values():
    svg = line_chart_svg({"loss": [(0, 100.0), (1, 1.0), (2, float("nan")), (3, 0.01)]}, log_y=True)
    assert "nan" not in svg and "<polyline" in svg
    assert "waiting" in line_chart_svg({})  # an empty chart still renders


def test_curves_from_history_use_steps_and_find_the_metric():
    log = [{"epoch": 1, "step": 10, "loss": 1.0, "val_loss": 1.1, "val_accuracy": 0.5},
           {"epoch": 2, "step": 20, "loss": 0.5, "val_loss": 0.7, "val_accuracy": 0.8}]
    c = Curves.from_history([], log)
    series = c.series()
    assert series["val loss"] == [(10, 1.1), (20, 0.7)]
    assert c.secondary() == ("val accuracy",) and len(series["train loss (smoothed)"]) == 2


# -- live displays ---------------------------------------------------------------------------------------------
def test_widget_redraws_are_throttled_and_the_end_is_drawn(fake_clock, displayed):
    from jupyter_llm.sinks.widget import WidgetSink

    sink = WidgetSink()
    feed([sink], fake_events(epochs=5, steps_per_epoch=1000))  # ~5,000 Progress events over ~5 s of fake time
    assert len(displayed) == 1 and displayed[0][0] is sink.root  # one display of the root widget
    assert 10 <= sink.redraws <= 5 / 0.25 + 10
    assert sink.bar.value == sink.bar.max == 5000
    assert "Completed" in sink.end.value


@pytest.mark.parametrize("reason", ev.END_REASONS)
def test_widget_end_state_per_reason(reason, displayed):
    from jupyter_llm.sinks.widget import WidgetSink

    sink = WidgetSink()
    feed([sink], fake_events(epochs=4, steps_per_epoch=25, reason=reason))
    label, color, _, bar_style = END_STYLES[reason]
    assert sink.bar.bar_style == bar_style
    assert label in sink.end.value and color in sink.end.value and f'data-reason="{reason}"' in sink.end.value
    assert "at step 100/100" in sink.end.value
    if reason == ev.COMPLETED:
        assert sink.bar.value == sink.bar.max
    else:
        assert "why" in sink.end.value  # the message is shown
    assert len(sink.view.rows) == 4 and sink.table.value.count("<tr>") == 4 + 1  # header + one row per epoch
    assert "<polyline" in sink.chart.value and 'points="' in sink.chart.value
    assert "MLP" in sink.header.value and "12,345 params" in sink.header.value and "cpu x 1" in sink.header.value
    assert "compiled in 1.25 s" in sink.phase.value
    assert "epoch 4/4" in sink.label.value and "step 100/100" in sink.label.value
    assert "test" in sink.end.value  # test metrics shown with the end state


def test_widget_shows_compiling_phase_before_any_progress(displayed):
    from jupyter_llm.sinks.widget import WidgetSink

    sink = WidgetSink()
    events = fake_events()
    sink.on(next(events))
    sink.on(next(events))  # CompileStart: drawn at once, whatever the throttle
    assert "compiling" in sink.phase.value
    sink.on(next(events))
    assert "compiled in 1.25 s" in sink.phase.value


def test_step_based_fit_gets_a_row_per_evaluation(displayed):
    view = LiveView()
    for event in fake_events(epochs=1, steps_per_epoch=100, eval_every=20):
        view.on(event)
    steps = [r["step"] for r in view.rows]
    assert steps == [20, 40, 60, 80, 100]
    assert all("val_loss" in r and "loss" in r for r in view.rows)


def test_html_sink_updates_one_handle(fake_clock, displayed):
    sink = HTMLSink()
    feed([sink], fake_events(epochs=5, steps_per_epoch=1000))
    assert len(displayed) == 1
    _, display_id, handle = displayed[0]
    assert display_id is True
    assert 5 <= handle.update.call_count <= 5 / 0.25 + 10
    final = handle.update.call_args[0][0].data
    assert "Completed" in final and "jl-metrics" in final and "<polyline" in charts_in(final)


def test_live_chart_cost_is_bounded():
    view = LiveView()
    for event in fake_events(epochs=2, steps_per_epoch=20_000, test=False):
        view.on(event)
    assert len(view.curves.train.points()) <= 512
    assert len(view.chart_svg()) < 40_000


# -- report ----------------------------------------------------------------------------------------------------
def _report(**kw) -> Report:
    sink = ReportSink()
    with mock.patch("IPython.display.display") as display:
        feed([sink], fake_events(**kw))
    display.assert_called_once_with(sink.report)
    return sink.report


def test_report_html_has_table_curves_and_run_card():
    html = _report()._repr_html_()
    assert 'class="jl-summary"' in html and "<polyline" in charts_in(html)
    assert "<svg" not in html  # JupyterLab's sanitizer (untrusted notebooks) drops <svg> but keeps <img>
    for text in ("validation", "test", "0.91", "seed", "jax", "flax", "optax", "jupyter_llm", "cpu x 1",
                 "compile 1.2 s", "completed"):
        assert text in html, text


def test_report_text_version():
    report = _report(reason="nan")
    text = repr(report)
    assert "Stopped: loss is not finite at step 30/30" in text and "why" in text
    assert "accuracy" in text and "test" in text and "seed 7" in text

    from IPython.lib.pretty import pretty

    assert pretty(report) == text


def test_report_size_does_not_grow_with_steps():
    small = len(_report(epochs=5, steps_per_epoch=10)._repr_html_())
    large = len(_report(epochs=5, steps_per_epoch=1000)._repr_html_())
    huge = len(_report(epochs=5, steps_per_epoch=20_000, progress_every=10)._repr_html_())
    assert large < 1.5 * small and huge < 1.5 * small


def test_report_from_run_history_without_log_or_trace():
    events = list(fake_events(epochs=3))
    report = Report(events[0], events[-1])  # what Run can build from FitStart/FitEnd alone
    html = report._repr_html_()
    assert "jl-summary" in html and "<polyline" not in charts_in(html)  # no curves, but a table and card
    assert report.final["accuracy"]["validation"] == events[-1].history["val_accuracy"][-1]


def test_a_fit_that_fails_while_compiling_still_ends_visibly(displayed):
    from jupyter_llm.sinks.widget import WidgetSink

    start, compile_start = list(fake_events())[:2]
    end = ev.FitEnd(reason="failed", step=0, epoch=0, elapsed=0.0, compile_seconds=0.0, message="XlaRuntimeError: oom")
    sinks = [WidgetSink(), HTMLSink(), ReportSink()]
    feed(sinks, [start, compile_start, end])
    widget, html, report = sinks
    assert widget.bar.bar_style == "danger" and "<b>Failed</b> at step 0/30" in widget.end.value
    assert "oom" in widget.end.value
    assert "Failed" in displayed[1][2].update.call_args[0][0].data  # the HTML handle got the end too
    assert "no metrics recorded" in report.report._repr_html_() and "<img" not in report.report._repr_html_()
    assert "Failed at step 0/30" in repr(report.report)


def test_report_tolerates_missing_packages(monkeypatch):
    import importlib.metadata

    def version(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    assert "optax not installed" in _report()._repr_html_()


# -- tier selection --------------------------------------------------------------------------------------------
class _Shell:
    config: dict = {}


def _shell(name, config=None):
    return type(name, (_Shell,), {"config": config or {}})()


@pytest.mark.parametrize("shell, expected", [
    (None, "text"),
    (_shell("TerminalInteractiveShell"), "text"),
    (_shell("ZMQInteractiveShell"), "widget"),
    (_shell("Shell", {"IPKernelApp": {}}), "widget"),
])
def test_auto_tier(monkeypatch, shell, expected):
    import IPython

    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    assert select.choose_display("auto") == expected


def test_colab_counts_as_a_kernel(monkeypatch):
    import IPython

    monkeypatch.setattr(IPython, "get_ipython", lambda: _shell("Shell"))
    monkeypatch.setitem(sys.modules, "google.colab", mock.Mock())
    assert select.choose_display() == "widget"


def test_kernel_without_ipywidgets_gets_html(monkeypatch):
    import IPython

    monkeypatch.setattr(IPython, "get_ipython", lambda: _shell("ZMQInteractiveShell"))
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # makes `import ipywidgets` fail
    assert select.choose_display() == "html"
    with pytest.raises(ConfigError, match="needs ipywidgets"):
        select.make_display_sinks("widget")


@pytest.mark.parametrize("mode", ["widget", "html", "text", "none", " Widget "])
def test_explicit_mode_wins(mode):
    assert select.choose_display(mode) == mode.strip().lower()


@pytest.mark.parametrize("mode", ["fancy", "", None, 3])
def test_unknown_mode_is_a_config_error(mode):
    with pytest.raises(ConfigError, match="auto, widget, html, text, none"):
        select.choose_display(mode)


def test_sinks_per_tier():
    from jupyter_llm.sinks.widget import WidgetSink

    def kinds(mode):
        return [type(s) for s in select.make_display_sinks(mode)]

    assert kinds("widget") == [WidgetSink, ReportSink]
    assert kinds("html") == [HTMLSink, ReportSink]
    assert kinds("none") == []
    text = pytest.importorskip("jupyter_llm.sinks.text")
    assert kinds("text") == [text.TextSink]
    assert all(isinstance(s, ev.Sink) for mode in ("widget", "html", "text") for s in select.make_display_sinks(mode))


def test_selecting_in_a_plain_process_imports_no_ipython_or_widgets():
    code = ("import sys; from jupyter_llm.sinks import select; "
            "assert select.choose_display() == 'text'; select.make_display_sinks('auto'); "
            "print(sorted(m for m in ('IPython', 'ipywidgets', 'jax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_config_is_a_frozen_dataclass_the_report_reads():
    report = _report()
    assert isinstance(report.start.config, FitConfig)
    assert "lr=0.001" in report.card()["config"]


@pytest.mark.parametrize("module", ["throttle", "series", "svg"])
def test_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"jupyter_llm.sinks.{module}"))
    assert result.attempted and not result.failed


# -------------------------------------------------------------- a text corpus: steps, not epochs


def test_a_text_corpus_fit_is_labelled_by_steps_and_corpus_epochs(displayed):
    """Two evaluation intervals of 10 steps over a corpus of 64 steps' tokens: no display may say "epoch 1/2"."""
    import io

    from jupyter_llm.sinks.text import TextSink

    events = list(fake_events(epochs=2, steps_per_epoch=10, steps_per_pass=64.0, test=False))
    view, report_sink, out = LiveView(), ReportSink(), io.StringIO()
    text = TextSink(out)
    feed([view, report_sink, text], events)
    report = report_sink.report
    shown = {"status": view.status_text(), "table": view.table_html(), "end": view.end_html(), "text": out.getvalue(),
             "report": repr(report), "report html": report._repr_html_()}
    for where, content in shown.items():
        assert "epoch 1/2" not in content and "epoch 2/2" not in content and "(epoch" not in content, where
    assert view.status_text().startswith("step 20/20 (0.31 epochs)")
    assert "at step 20/20 (0.31 epochs)" in view.end_html() and "(0.31 epochs)" in repr(report)
    assert "step 10/20 (0.16 epochs) |" in out.getvalue() and "evaluated every 10 steps" in out.getvalue()
    assert report.card()["steps"] == "20/20 (0.31 epochs, evaluated every 10 steps, batch 32)"
    assert ">epochs</th>" in view.table_html() and ">epoch</th>" not in view.table_html()
    assert ">0.16</td>" in view.table_html()
    array_fit = LiveView()
    feed([array_fit], fake_events(epochs=2, steps_per_epoch=10, test=False))
    assert array_fit.status_text().startswith("epoch 2/2 · step 20/20") and ">epoch</th>" in array_fit.table_html()


def test_corpus_epochs_read_well_small_and_large():
    from jupyter_llm.sinks.position import format_epochs

    assert [format_epochs(v) for v in (0.0, 0.0042, 0.3125, 2.5, 12.4)] == [
        "0 epochs", "0.004 epochs", "0.31 epochs", "2.50 epochs", "12 epochs"]


# ------------------------------------------------------------------------------ the lr_find chart


def test_lr_find_chart_clips_the_divergence_and_marks_the_suggestion():
    import math
    import re

    from jupyter_llm.fitting.lr_find import LRFinderResult, suggest

    lrs = [10 ** (-6 + 7 * i / 59) for i in range(60)]
    losses = [2.3 - 1.8 / (1 + math.exp(-2 * (math.log10(lr) + 3))) for lr in lrs]
    losses[-4:] = [3.0, 8.0, 15.0, 15.0]  # the divergence that ends a sweep
    result = LRFinderResult(lrs, losses, suggest(lrs, losses))
    assert 1e-4 < result.suggestion < 1e-2
    low, high = result.y_range()
    assert low < min(losses) and max(losses[:50]) < high < 3.0  # from the minimum to a little above the start
    svg = result.chart_svg()
    ticks = [float(t) for t in re.findall(r'text-anchor="end" fill="#555">([^<]+)<', svg)]
    assert ticks and max(ticks) <= high and min(ticks) >= low  # the spike to 15 sets nothing
    mark = re.search(r'<line class="jl-mark" x1="([\d.]+)"', svg)
    assert mark and "suggested" in svg
    polyline = re.search(r'<polyline[^>]*points="([^"]+)"', svg).group(1).split()
    at = lrs.index(result.suggestion)
    assert float(mark.group(1)) == pytest.approx(float(polyline[at].split(",")[0]), abs=0.11)
    assert "data:image/svg+xml;base64," in result._repr_html_()  # an <img>: survives the HTML sanitizer
