"""The quick-start notebook in Notebook 7 (`jupyter notebook`), the other front end users open: the repository's
notebooks/quickstart.ipynb, as it is, runs every cell in headless Chromium (a `jupyter notebook` server of its
own, tests/browser_lab.py), and the `%%train` cell's live display is rendered by Notebook 7's widget manager: the bar at
its end, the chart's curves, a row per epoch, the end banner "completed", the static report after it. Skipped, with
the reason, where Chromium, Playwright or the `notebook` package is missing."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

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
)

pytestmark = skip_unless_browser("notebook")

QUICKSTART = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"
WIDGET = ".jp-OutputArea-output .widget-vbox:has(.widget-hprogress)"
BAR = ".widget-hprogress .progress-bar"
STATUS = ".widget-hbox:has(.widget-hprogress) > div.widget-label"
END = ".widget-html-content .jl-end[data-reason]"
REPORT_END = ".jp-OutputArea-output:not(:has(.widget-vbox)) .jl-end[data-reason]"  # the static report's banner


def _epochs() -> int:
    cells = json.loads(QUICKSTART.read_text())["cells"]
    train = next("".join(c["source"]) for c in cells if "".join(c["source"]).startswith("%%train"))
    return int(re.search(r"--epochs (\d+)", train).group(1))


def test_quickstart_display_in_notebook7(notebook7):
    from playwright.sync_api import expect, sync_playwright

    from jupyter_llm.sinks.html import MAX_TABLE_ROWS

    deadline = Deadline(175)
    epochs = _epochs()
    shutil.copyfile(QUICKSTART, notebook7.notebooks / "quickstart.ipynb")
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=deadline.ms(30))
        page = new_page(browser, errors, height=1600)
        try:
            t0 = time.monotonic()
            open_notebook(page, f"{notebook7.url}/notebooks/quickstart.ipynb", deadline)
            assert page.locator("#jp-NotebookPanel, .jp-NotebookPanel").count() >= 1
            assert page.evaluate("() => window.jupyterapp.name") == "Jupyter Notebook"  # Notebook 7, not Lab
            page.evaluate(RUN_ALL_JS)
            page.wait_for_function("() => window.__jlRunDone !== null", timeout=deadline.ms(150))
            ran = page.evaluate("() => window.__jlRunDone")
            outputs = "\n---\n".join(page.locator(".jp-OutputArea-output").all_inner_texts())
            assert ran == "done: true", f"a cell failed ({ran}); outputs:\n{outputs[-4000:]}"
            print(f"Notebook 7: quickstart ran in {time.monotonic() - t0:.1f} s (page load included)")

            widget = page.locator(WIDGET)
            expect(widget).to_have_count(1)
            expect(widget.locator(END)).to_have_attribute("data-reason", "completed", timeout=deadline.ms(10))
            bar = widget.locator(BAR)
            expect(bar).to_have_attribute("style", re.compile(r"width: 100%"))
            expect(bar).to_have_class(re.compile(r"progress-bar-success"))
            status = widget.locator(STATUS).inner_text()
            done = re.search(r"step (\d+)/(\d+)", status)
            assert done and done.group(1) == done.group(2) and int(done.group(2)) > 0, status
            assert f"epoch {epochs}/{epochs}" in status, status
            titles = widget.locator(".widget-html-content svg polyline title").all_text_contents()
            assert {"val loss", "val accuracy"} <= set(titles) and any("train loss" in t for t in titles), titles
            rows = widget.locator(".widget-html-content table.jl-metrics tbody tr")
            assert rows.count() == min(epochs, MAX_TABLE_ROWS), rows.count()
            expect(page.locator(REPORT_END)).to_have_attribute("data-reason", "completed")
            expect(page.get_by_text(re.compile(r"test accuracy 0\.9\d\d"))).to_have_count(1)  # the cells after it
            widget.scroll_into_view_if_needed()
            widget.screenshot(path=str(ARTIFACTS / "notebook7_widget.png"), timeout=deadline.ms(20))
        finally:
            screenshot(page, "notebook7_page.png")
            browser.close()
    wrong = unexpected(errors)
    assert not wrong, "JavaScript errors in the page:\n" + "\n".join(wrong)
