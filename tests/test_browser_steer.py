"""A background fit steered from its display in a real browser (JupyterLab + headless Chromium, as test_browser.py):
the cell returns at once, Pause holds the step still, the learning-rate box reaches the fit (the phase line shows
the change), Stop ends it as interrupted. Skipped where test_browser.py is."""

from __future__ import annotations

import re
import time

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

CELLS = [
    "%load_ext jupyter_llm",
    "model = jl.models.MLP(in_features=64, hidden=[128], num_classes=10, rngs=nnx.Rngs(0))\n"
    'data = jl.datasets.load("digits")',
    "%train --background --steps 10000000 --steps-per-dispatch 1 --batch-size 32 --display widget",
]
WIDGET = ".jp-OutputArea-output .widget-vbox:has(.widget-hprogress)"
STATUS = ".widget-hbox:has(.widget-hprogress) > div.widget-label"
END = ".widget-html-content .jl-end[data-reason]"


def _step(widget) -> int:
    found = re.search(r"step (\d+)", widget.locator(STATUS).inner_text())
    return int(found.group(1)) if found else -1


def test_pause_lr_and_stop_from_the_display(lab):
    from playwright.sync_api import expect, sync_playwright

    deadline = Deadline(175)
    write_notebook(lab.notebooks / "steer.ipynb", CELLS)
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=deadline.ms(30))
        page = new_page(browser, errors)
        try:
            open_notebook(page, f"{lab.url}/lab/tree/steer.ipynb", deadline)
            page.evaluate(RUN_ALL_JS)
            page.wait_for_function("() => window.__jlRunDone !== null", timeout=deadline.ms(60))
            assert page.evaluate("() => window.__jlRunDone") == "done: true"  # every cell returned
            widget = page.locator(WIDGET)
            expect(widget).to_have_count(1, timeout=deadline.ms(30))
            limit = time.monotonic() + deadline.ms(60) / 1000
            while _step(widget) < 50 and time.monotonic() < limit:  # training, with the kernel idle
                time.sleep(0.2)
            assert _step(widget) >= 50, widget.locator(STATUS).inner_text()

            widget.get_by_role("button", name="Pause").click()
            expect(widget.get_by_role("button", name="Resume")).to_have_count(1, timeout=deadline.ms(10))
            time.sleep(1.5)  # the last report before the pause lands
            held = _step(widget)
            time.sleep(2.0)
            assert _step(widget) == held, "the step moved while paused"

            lr = widget.locator(".widget-text:has(label:text-is('lr')) input")
            lr.fill("0.0003")
            lr.press("Enter")
            widget.get_by_role("button", name="Resume").click()
            expect(widget.locator(".widget-html-content")).to_contain_text(
                ["lr → 0.0003"], timeout=deadline.ms(20))
            limit = time.monotonic() + deadline.ms(20) / 1000
            while _step(widget) <= held and time.monotonic() < limit:  # the next redraw (they are throttled) moves on
                time.sleep(0.2)
            assert _step(widget) > held, (held, widget.locator(STATUS).inner_text())

            widget.get_by_role("button", name="Stop").click()
            expect(widget.locator(END)).to_have_attribute("data-reason", "interrupted", timeout=deadline.ms(30))
            widget.screenshot(path=str(ARTIFACTS / "steer_widget.png"), timeout=deadline.ms(20))
        finally:
            screenshot(page, "steer_page.png")
            browser.close()
    wrong = unexpected(errors)
    assert not wrong, "JavaScript errors in the page:\n" + "\n".join(wrong)
