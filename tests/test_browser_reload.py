"""A background fit's live display survives the page: JupyterLab + headless Chromium (the shared server of
tests/browser_lab.py). With a fit running on the kernel's worker thread and the notebook saved, reloading the page
draws the display again and it keeps counting steps; `run.display()` in a new cell shows a second live view of it;
closing the notebook and opening it again (the kernel lives on) shows both, still live, and Stop from a reopened
view ends the fit. Skipped, with the reason, where Chromium or Playwright is missing."""

from __future__ import annotations

import json
import re
import time

from tests.browser_lab import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    KERNEL_IDLE_JS,
    RUN_ALL_JS,
    SAVE_JS,
    Deadline,
    new_page,
    open_notebook,
    screenshot,
    skip_unless_browser,
    unexpected,
    write_notebook,
)

pytestmark = skip_unless_browser()

NAME = "reload.ipynb"
CELLS = [
    "%load_ext jupyter_llm",
    "model = jl.models.MLP(in_features=64, hidden=[128], num_classes=10, rngs=nnx.Rngs(0))\n"
    'data = jl.datasets.load("digits")',
    "%train --background --steps 10000000 --steps-per-dispatch 1 --batch-size 32 --display widget",
]
WIDGET = ".jp-OutputArea-output .widget-vbox:has(.widget-hprogress)"
STATUS = ".widget-hbox:has(.widget-hprogress) > div.widget-label"
END = ".widget-html-content .jl-end[data-reason]"
# Append a code cell holding `source` and run it; settles when it has run.
RUN_NEW_CELL_JS = """(source) => {
  const app = window.jupyterapp, nb = app.shell.currentWidget.content;
  nb.activeCellIndex = nb.widgets.length - 1;
  return app.commands.execute('notebook:insert-cell-below').then(() => {
    nb.activeCell.model.sharedModel.setSource(source);
    return app.commands.execute('notebook:run-cell');
  }).then((ok) => 'done: ' + ok, (e) => 'failed: ' + e);
}"""
REOPEN_JS = """(path) => window.jupyterapp.commands.execute('application:close-all')
  .then(() => window.jupyterapp.commands.execute('docmanager:open', {path}))
  .then(() => 'opened', (e) => 'failed: ' + e)"""


def _step(view) -> int:
    found = re.search(r"step (\d+)", view.locator(STATUS).inner_text())
    return int(found.group(1)) if found else -1


def _counts_on(view, above: int, deadline: Deadline, seconds: float = 20) -> int:
    """The view's step once it is past `above`: the display is live, drawn from the fit that still runs."""
    limit = time.monotonic() + deadline.ms(seconds) / 1000
    while time.monotonic() < limit:
        if view.locator(STATUS).count() and _step(view) > above:
            return _step(view)
        time.sleep(0.2)
    raise AssertionError(f"the display stood at step {_step(view) if view.locator(STATUS).count() else None}, "
                         f"not past {above}: {view.inner_text()[:500]!r}")


def _saved_widget_outputs(path) -> int:
    saved = json.loads(path.read_text())
    return sum("application/vnd.jupyter.widget-view+json" in out.get("data", {})
               for cell in saved["cells"] for out in cell.get("outputs", []))


def test_reload_and_reopen_show_the_running_fit(lab):
    from playwright.sync_api import expect, sync_playwright

    deadline = Deadline(175)
    write_notebook(lab.notebooks / NAME, CELLS)
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    timings: dict[str, float] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=deadline.ms(30))
        page = new_page(browser, errors)
        try:
            t0 = time.monotonic()
            open_notebook(page, f"{lab.url}/lab/tree/{NAME}", deadline)
            timings["page and kernel"] = time.monotonic() - t0
            page.evaluate(RUN_ALL_JS)
            page.wait_for_function("() => window.__jlRunDone !== null", timeout=deadline.ms(60))
            assert page.evaluate("() => window.__jlRunDone") == "done: true"  # the fit runs on; the cells returned
            views = page.locator(WIDGET)
            expect(views).to_have_count(1, timeout=deadline.ms(30))
            before = _counts_on(views.first, 20, deadline, 60)
            timings["fit counting"] = time.monotonic() - t0
            assert page.evaluate(SAVE_JS) == "saved"
            assert _saved_widget_outputs(lab.notebooks / NAME) == 1

            # 1. reload the page mid-fit: the display is drawn again from the kernel and keeps counting
            t = time.monotonic()
            page.reload(timeout=deadline.ms(60))
            expect(views).to_have_count(1, timeout=deadline.ms(60))
            timings["reload: display drawn"] = time.monotonic() - t
            after_reload = _step(views.first)
            assert after_reload >= before, (before, after_reload)  # the same fit, not a new one
            _counts_on(views.first, after_reload, deadline)
            timings["reload: counting"] = time.monotonic() - t

            # 2. run.display() in a new cell: a second view of the same live model
            page.wait_for_function(KERNEL_IDLE_JS, timeout=deadline.ms(60))
            assert page.evaluate(RUN_NEW_CELL_JS, "run.display()") == "done: true"
            expect(views).to_have_count(2, timeout=deadline.ms(30))
            _counts_on(views.nth(1), _step(views.nth(1)), deadline)
            expect(views.nth(1).get_by_role("button", name="Stop")).to_have_count(1)
            timings["run.display() counting"] = time.monotonic() - t0

            # 3. close the notebook and open it again, the kernel living on: both views, both live
            assert page.evaluate(SAVE_JS) == "saved"
            assert _saved_widget_outputs(lab.notebooks / NAME) == 2
            t = time.monotonic()
            assert page.evaluate(REOPEN_JS, NAME) == "opened"
            expect(views).to_have_count(2, timeout=deadline.ms(60))
            for i in range(2):
                _counts_on(views.nth(i), _step(views.nth(i)), deadline)
            timings["reopen: both counting"] = time.monotonic() - t

            # 4. the reopened view still steers the fit: Stop ends it, and both views show the end
            page.wait_for_function(KERNEL_IDLE_JS, timeout=deadline.ms(60))
            views.nth(1).get_by_role("button", name="Stop").click()
            for i in range(2):
                expect(views.nth(i).locator(END)).to_have_attribute("data-reason", "interrupted",
                                                                    timeout=deadline.ms(30))
            timings["stopped"] = time.monotonic() - t0
            views.nth(1).screenshot(path=str(ARTIFACTS / "reload_widget.png"), timeout=deadline.ms(20))
        finally:
            screenshot(page, "reload_page.png")
            browser.close()
    print("reload test timings (s):", {k: round(v, 1) for k, v in timings.items()})
    wrong = unexpected(errors)
    assert not wrong, "JavaScript errors in the page:\n" + "\n".join(wrong)
