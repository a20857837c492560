"""The live widget in a real browser: JupyterLab + headless Chromium (Playwright) run a `%%train` cell on digits.

What no other test can see: that the front end renders what the kernel sends — the progress bar reaches its end,
the live chart has its curves, the metrics table its rows, the end banner says "completed" — and that no
JavaScript error is logged on the way. The screenshot of the widget lands in `tests/artifacts/live_widget.png`;
with `JL_UPDATE_SCREENSHOT=1` it also refreshes `notebooks/images/live_widget.png`, the README's picture.

The server is the session's (the `lab` fixture, tests/browser_lab.py); without Chromium, Playwright or JupyterLab
the test is skipped with the reason (`.ci/install-browser` installs them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest

from tests.browser_lab import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    RUN_ALL_JS,
    Deadline,
    new_page,
    open_notebook,
    screenshot,
    skip_unless_browser,
    unexpected,
    write_notebook,
)

pytestmark = skip_unless_browser()

ROOT = Path(__file__).resolve().parents[1]
README_IMAGE = ROOT / "notebooks" / "images" / "live_widget.png"
TOTAL_SECONDS = 175  # the whole test, page load to the last check, stays under 3 minutes

EPOCHS = 30
CELLS = [
    "import sys\nprint(sys.executable)",
    "%load_ext jupyter_llm",
    f"%%train --epochs {EPOCHS} --batch-size 32 --val-split 0.2 --display widget\n"
    "model = jl.models.MLP(in_features=64, hidden=[128], num_classes=10, rngs=nnx.Rngs(0))\n"
    'data = jl.datasets.load("digits")',
]

# Selectors, read off the DOM that JupyterLab 4 / ipywidgets 8 render for the WidgetSink (a VBox of HTML widgets
# and an HBox holding the FloatProgress and its Label). Everything is looked up inside the widget's VBox, so the
# static Report that follows it (which has its own .jl-end banner) cannot satisfy an assertion by accident.
WIDGET = ".jp-OutputArea-output .widget-vbox:has(.widget-hprogress)"
BAR = ".widget-hprogress .progress-bar"  # ipywidgets draws value/max as the inner bar's width
STATUS = ".widget-hbox > div.widget-label"  # the Label beside the bar (not the progress widget's own <label>)
CHART_LINE = ".widget-html-content svg polyline"
TABLE_ROWS = ".widget-html-content table.jl-metrics tbody tr"
END = ".widget-html-content .jl-end[data-reason]"
# Records every width the progress bar is drawn with (a MutationObserver sees each comm update as it lands), so the
# test can tell a live display from one that only appeared once the fit was over.
WATCH_BAR_JS = """() => {
  window.__jlBarWidths = [];
  window.__jlBarAt = null;
  const record = (el) => {
    const seen = window.__jlBarWidths, w = el.style.width;
    if (window.__jlBarAt === null) window.__jlBarAt = performance.now();
    if (seen[seen.length - 1] !== w) seen.push(w);
  };
  new MutationObserver((mutations) => {
    for (const m of mutations) {
      for (const n of (m.type === 'attributes' ? [m.target] : m.addedNodes)) {
        if (!(n instanceof Element)) continue;
        if (n.matches('.widget-hprogress .progress-bar')) record(n);
        n.querySelectorAll('.widget-hprogress .progress-bar').forEach(record);
      }
    }
  }).observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ['style']});
}"""
ENDED_JS = """(end) => !!document.querySelector(end) || window.__jlRunDone !== null"""
LIVE_IF_COMPILE_OVER = 2.0  # seconds: a compile at least this long leaves the browser ample time to draw the bar early


def test_live_widget_renders_in_jupyterlab(lab):
    from playwright.sync_api import expect, sync_playwright

    t0 = time.monotonic()
    deadline = Deadline(TOTAL_SECONDS)
    write_notebook(lab.notebooks / "live.ipynb", CELLS)
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    timings: dict[str, float] = {}

    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=deadline.ms(30))
            page = None
            try:
                page = new_page(browser, errors, height=1600)
                open_notebook(page, f"{lab.url}/lab/tree/live.ipynb", deadline)
                timings["page and kernel"] = time.monotonic() - t0
                page.evaluate(WATCH_BAR_JS)
                page.evaluate(RUN_ALL_JS)
                page.wait_for_function(ENDED_JS, arg=f"{WIDGET} {END}", timeout=deadline.ms(150))
                timings["fit ended"] = time.monotonic() - t0
                bar_at = page.evaluate(
                    "() => window.__jlBarAt === null ? null : window.__jlBarAt - window.__jlRunStart")
                if bar_at is not None:
                    timings["widget shown"] = timings["page and kernel"] + bar_at / 1000
                widget = page.locator(WIDGET)
                end = widget.locator(END)
                if end.count() != 1:
                    outputs = "\n---\n".join(page.locator(".jp-OutputArea-output").all_inner_texts())
                    pytest.fail(f"the fit did not end in the widget ({page.evaluate('() => window.__jlRunDone')}); "
                                f"cell outputs:\n{outputs[-4000:]}")
                expect(widget).to_have_count(1)

                # the kernel is this environment's Python
                first_output = page.locator(".jp-Cell").nth(0).locator(".jp-OutputArea-output")
                expect(first_output).to_have_text(re.compile(re.escape(sys.executable)), timeout=deadline.ms(10))
                # the end state
                expect(end).to_have_attribute("data-reason", "completed", timeout=deadline.ms(10))
                expect(end).to_contain_text("Completed")
                # the progress bar at its max: ipywidgets sets the inner bar's width to (value - min) / (max - min)
                bar = widget.locator(BAR)
                expect(bar).to_have_attribute("style", re.compile(r"width: 100%"), timeout=deadline.ms(10))
                expect(bar).to_have_class(re.compile(r"progress-bar-success"))
                # live: drawn while the fit ran, not only at its end (asserted when the compile gave it time)
                widths = page.evaluate("() => window.__jlBarWidths")
                timings["bar_widths_seen"] = len(widths)  # a count, not seconds
                compile_s = float(re.search(r"\+ ([\d.]+) s compile", end.inner_text()).group(1))
                if compile_s >= LIVE_IF_COMPILE_OVER:
                    assert widths and widths[0] != "100%" and widths[-1] == "100%", widths
                status = widget.locator(STATUS).inner_text()
                done = re.search(r"step (\d+)/(\d+)", status)
                assert done and done.group(1) == done.group(2) and int(done.group(2)) > 0, status
                assert f"epoch {EPOCHS}/{EPOCHS}" in status, status
                # the live chart: train loss, val loss and val accuracy curves with many points
                lines = widget.locator(CHART_LINE)
                titles = [lines.nth(i).locator("title").text_content() for i in range(lines.count())]
                assert {"val loss", "val accuracy"} <= set(titles) and any("train loss" in t for t in titles), titles
                points = [len((lines.nth(i).get_attribute("points") or "").split()) for i in range(lines.count())]
                assert min(points) >= 10, dict(zip(titles, points))
                # the metrics table: one row per epoch, the newest MAX_TABLE_ROWS shown
                from jupyter_llm.sinks.html import MAX_TABLE_ROWS

                rows = widget.locator(TABLE_ROWS)
                assert rows.count() == min(EPOCHS, MAX_TABLE_ROWS), rows.count()
                assert rows.last.locator("td").first.inner_text().strip() == str(EPOCHS)  # the epoch column

                widget.scroll_into_view_if_needed()
                shot = ARTIFACTS / "live_widget.png"
                widget.screenshot(path=str(shot), timeout=deadline.ms(20))
                assert shot.stat().st_size > 10_000
                if os.environ.get("JL_UPDATE_SCREENSHOT") == "1":
                    README_IMAGE.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(shot, README_IMAGE)
            finally:
                if page is not None:
                    screenshot(page, "live_widget_page.png")
                browser.close()
    finally:
        timings["total"] = time.monotonic() - t0
        (ARTIFACTS / "browser_timings.json").write_text(json.dumps(timings, indent=1))
        (ARTIFACTS / "browser_console.txt").write_text("\n".join(errors) + "\n")
        print("browser test timings (s from start):", {k: round(v, 1) for k, v in timings.items()})

    wrong = unexpected(errors)
    assert not wrong, "JavaScript errors in the page:\n" + "\n".join(wrong)
